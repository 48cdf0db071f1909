// sabai hub client: the JSON room protocol over one WebSocket, with
// reconnection (1 s doubling to 30 s, plus jitter), a 30 s heartbeat ping,
// and re-subscription of its rooms after every reconnect.
//
//   import { HubClient } from "/client.js";
//   const hub = new HubClient({ user: "ann" });
//   const off = hub.on("message", (m) => console.log(m.payload.text));
//   await hub.subscribe(["chat:lobby"]);
//   hub.publish("chat:lobby", { text: "hello" });

const BACKOFF_START_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const HEARTBEAT_MS = 30000;
// A pong later than this after our ping means the link is dead.
const PONG_WAIT_MS = 10000;

export class HubClient {
  constructor(options = {}) {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    this.url = options.url || `${proto}//${location.host}/ws`;
    this.params = new URLSearchParams();
    if (options.user) this.params.set("user", options.user);
    if (options.token) this.params.set("token", options.token);
    this.rooms = new Set();
    this.handlers = new Map();
    this.pending = new Map();
    this.nextId = 1;
    this.backoff = BACKOFF_START_MS;
    this.stopped = false;
    this.state = "connecting";
    this.connectionId = null;
    this.connect();
  }

  // Calls handler(envelope) for every envelope of this type ("*" for all;
  // "state" gets "connecting" | "open" | "reconnecting" | "closed").
  // Returns a function that removes the handler.
  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(handler);
    return () => this.handlers.get(type)?.delete(handler);
  }

  subscribe(rooms) {
    rooms.forEach((r) => this.rooms.add(r));
    return this.request("subscribe", { payload: { rooms } });
  }

  unsubscribe(rooms) {
    rooms.forEach((r) => this.rooms.delete(r));
    return this.request("unsubscribe", { payload: { rooms } });
  }

  publish(room, payload) {
    return this.send({ type: "publish", room, payload });
  }

  typing(room, typing) {
    return this.send({ type: "typing", room, payload: { typing } });
  }

  ping() {
    return this.request("ping", {});
  }

  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.stopHeartbeat();
    if (this.ws) this.ws.close(1000, "bye");
    this.setState("closed");
  }

  // Sends an envelope; false when not connected (nothing is queued).
  send(envelope) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ timestamp: Date.now(), ...envelope }));
    return true;
  }

  // Sends with a request_id; resolves with the reply carrying it (or
  // rejects on an error reply or after 10 s).
  request(type, fields) {
    const request_id = `r${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(request_id);
        reject(new Error(`${type}: no reply`));
      }, PONG_WAIT_MS);
      this.pending.set(request_id, { resolve, reject, timer });
      if (!this.send({ type, request_id, ...fields })) {
        clearTimeout(timer);
        this.pending.delete(request_id);
        // Not connected: subscriptions are sent again on (re)connect.
        resolve(null);
      }
    });
  }

  connect() {
    const query = this.params.toString();
    const ws = new WebSocket(query ? `${this.url}?${query}` : this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = BACKOFF_START_MS;
      this.setState("open");
      this.startHeartbeat();
      if (this.rooms.size) this.request("subscribe", { payload: { rooms: [...this.rooms] } }).catch(() => {});
    };
    ws.onmessage = (event) => this.dispatch(event.data);
    ws.onclose = () => {
      this.stopHeartbeat();
      if (this.ws !== ws || this.stopped) return;
      this.setState("reconnecting");
      // Exponential backoff with up to 30% jitter, so a restarted server
      // is not hit by every client in the same instant.
      const delay = this.backoff * (1 + Math.random() * 0.3);
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
      this.retryTimer = setTimeout(() => this.connect(), delay);
    };
  }

  dispatch(text) {
    let envelope;
    try {
      envelope = JSON.parse(text);
    } catch {
      return;
    }
    if (envelope.type === "connected") this.connectionId = envelope.payload?.connection_id;
    const waiting = envelope.request_id && this.pending.get(envelope.request_id);
    if (waiting) {
      clearTimeout(waiting.timer);
      this.pending.delete(envelope.request_id);
      if (envelope.type === "error") waiting.reject(new Error(envelope.payload?.message));
      else waiting.resolve(envelope);
    }
    this.emit(envelope.type, envelope);
    this.emit("*", envelope);
  }

  emit(type, value) {
    for (const handler of this.handlers.get(type) || []) {
      try {
        handler(value);
      } catch (e) {
        console.error(e);
      }
    }
  }

  setState(state) {
    this.state = state;
    this.emit("state", state);
  }

  startHeartbeat() {
    this.stopHeartbeat();
    this.heartbeat = setInterval(() => {
      const ws = this.ws;
      this.ping().catch(() => ws.close(4001, "no pong"));
    }, HEARTBEAT_MS);
  }

  stopHeartbeat() {
    clearInterval(this.heartbeat);
  }
}
