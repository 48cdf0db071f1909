// sabai hub client: the hub's wire protocol, version 1 (docs/protocol.md),
// over a WebSocket, or over Server-Sent Events with POST /send where a
// WebSocket cannot pass. An ES module with no dependencies; its types are
// in /client.d.ts.
//
//   import { HubClient } from "/client.js";
//   const hub = new HubClient({ token });             // or { user: "ann" } without JWT
//   hub.on("message", (m) => console.log(m.payload.user, m.payload.text));
//   hub.on("recovery", (r) => { if (!r.recovered) reload(r.room); });
//   hub.on("state", (state, detail) => { if (detail.auth) askForToken(detail.reason); });
//   await hub.subscribe(["chat:lobby"]);
//   await hub.publish("chat:lobby", { text: "hello" }); // the `published` ack
//   await hub.setToken(freshToken);                     // before the old one expires
//
// What it does for you:
// - Reconnects with exponential backoff and jitter (1 s doubling to 30 s),
//   moving to the next of `urls` each time; at once on close codes 1012
//   (a node draining), 4002 (heartbeat timeout) and 4008 (slow consumer);
//   not blindly after 1008, 1009 or 4029, nor after a handshake refused
//   with 403 (state "error").
// - Authentication: the token goes as the subprotocol `bearer.<token>`
//   beside `sabai.v1` on a WebSocket (never in its URL), as `?token=` on
//   the event stream (EventSource can send nothing else) and as
//   `Authorization: Bearer` on POST /send. A token refused at the
//   handshake (401) or expired while connected (close 4001) puts the
//   client in state "error" with `detail.auth`; it waits, keeping what is
//   queued, until `setToken()` gives a fresh one. `setToken()` while
//   connected sends `refresh`, so the connection outlives the old token.
// - Keeps each room's position {offset, epoch} and resubscribes with
//   `since` after every reconnect, so the server replays what was missed;
//   tells the page through "recovery" events whether it could.
// - Drops a publication it already has (an offset at or below its position
//   in a room it tracks) and reports a gap (an offset past position + 1):
//   events "duplicate" and "gap", counters in `stats`.
// - Queues what is sent while disconnected (up to `sendQueueLimit`) and
//   sends it, in order, once the rooms are subscribed again; every publish
//   and request settles its Promise: the reply, or a HubError saying why not.
// - Pings every 30 s; no pong within 10 s is a dead link: the client drops
//   it as the server would (4002, with `detail.local`) and goes to the next node.
// - Falls back to EventSource on /events and POST /send when a WebSocket
//   cannot connect to a server that answers HTTP (transport "auto").

export const PROTOCOL_VERSION = 1;

const DEFAULTS = {
  transport: "auto",
  sendQueueLimit: 100,
  requestTimeoutMs: 10000,
  connectTimeoutMs: 10000,
  heartbeatMs: 30000,
  pongTimeoutMs: 10000,
  backoffStartMs: 1000,
  backoffMaxMs: 30000,
  webSocketAttempts: 2,
};

// Close codes (docs/protocol.md, "Closing").
const AUTH_FAILED = 4001; // the token expired while connected: wait for setToken()
const HEARTBEAT_TIMEOUT = 4002; // the server's, and ours for a link found dead (detail.local)
const AT_ONCE = new Set([1012, HEARTBEAT_TIMEOUT, 4008]); // reconnect now, to the next node, and recover
const NO_RETRY = new Set([1008]); // policy violation: not again as is
const RETRY_SLOWLY = new Set([1009, 4029]); // error state; try again after the longest backoff
const SUBPROTOCOL = "sabai.v1";
const CLOSE_REASONS = {
  1000: "closed",
  1001: "the server is shutting down",
  1006: "the connection was lost",
  1008: "the server closed the connection: policy violation (for example its rate limit)",
  1009: "the server closed the connection: a message was too big",
  1011: "the server had an internal error",
  1012: "the server is restarting (draining)",
  1013: "an operator disconnected this connection: trying again later",
  4000: "idle timeout",
  4001: "your session expired: sign in again",
  4002: "heartbeat timeout",
  4008: "the client read too slowly (slow consumer)",
  4029: "too many connections for this user",
};
const HTTP_REASONS = {
  401: "not signed in",
  403: "this page's origin is not allowed",
  503: "the server is full or draining",
};

/** A publish or request that did not get its reply, and why (`code`). */
export class HubError extends Error {
  constructor(code, message, extra = {}) {
    super(message);
    this.name = "HubError";
    this.code = code;
    Object.assign(this, extra);
  }
}

export class HubClient {
  #options;
  #handlers = new Map();
  #positions = new Map(); // room -> {offset, epoch}
  #replayUntil = new Map(); // room -> last offset of the replay under way
  #confirmed = new Set(); // rooms a server accepted at least once
  #queue = []; // requests waiting for a connection
  #inflight = new Map(); // request_id -> entry waiting for its reply
  #waiters = new Set(); // subscribe() calls waiting for their `subscribed`
  #sseOut = []; // entries waiting for their POST /send
  #posting = 0; // the link whose posts are under way
  #nextId = 1;
  #link = 0; // bumped for every connection attempt and every drop
  #ready = false; // rooms subscribed again: requests go out now
  #stopped = false;
  #urlIndex = 0;
  #url = null;
  #backoff;
  #retryTimer = null;
  #readyTimer = null;
  #connectTimer = null;
  #heartbeat = null;
  #openedAt = 0;
  #everOpen = false;
  #webSocketFailures = 0;
  #useSse = false;
  #sseId = null;
  #sseRooms = [];
  #user = null;
  #onOnline = null;
  #linkToken = undefined; // the token the current link was opened with

  /** @param {import("./client").HubClientOptions} [options] */
  constructor(options = {}) {
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
    this.#options = { ...DEFAULTS, ...given };
    if (!["auto", "websocket", "sse"].includes(this.#options.transport)) {
      throw new TypeError(`transport must be "auto", "websocket" or "sse", not ${JSON.stringify(this.#options.transport)}`);
    }
    const urls = options.urls ?? (options.url ? [options.url] : [defaultUrl()]);
    if (!Array.isArray(urls) || urls.length === 0) throw new TypeError("urls must list at least one WebSocket URL");
    this.urls = urls.map(webSocketUrl);
    this.#backoff = this.#options.backoffStartMs;
    this.rooms = new Set();
    this.state = "connecting";
    this.detail = {};
    this.transport = null;
    this.connectionId = null;
    this.node = null;
    this.session = null;
    this.ws = null;
    this.eventSource = null;
    this.stats = { gaps: 0, missed: 0, duplicates: 0, replayed: 0, reconnects: 0 };
    if (typeof addEventListener === "function") {
      // Back online: no need to wait for the backoff.
      this.#onOnline = () => {
        if (this.#retryTimer && !this.#stopped && this.state === "reconnecting") this.#connect();
      };
      addEventListener("online", this.#onOnline);
    }
    this.#connect();
  }

  /** The user the server knows this client as (once connected), else the one asked for. */
  get user() {
    return this.#user ?? this.#options.user ?? null;
  }

  /** The URL of the node this client is connected or connecting to. */
  get url() {
    return this.#url;
  }

  /** Requests waiting for a connection. */
  get queued() {
    return this.#queue.length;
  }

  /** The current WebSocket, if any. Closing it acts as a lost connection. */
  get socket() {
    return this.ws;
  }

  /** Where this client stands in a room with history: {offset, epoch}. */
  position(room) {
    const at = this.#positions.get(room);
    return at ? { ...at } : undefined;
  }

  /** Every room's position. */
  positions() {
    return Object.fromEntries([...this.#positions].map(([room, at]) => [room, { ...at }]));
  }

  // Calls handler for every envelope of this type ("*" for all), or for
  // the client's own events: "state" (state, detail), "recovery", "gap",
  // "duplicate". Returns a function that removes the handler.
  on(type, handler) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(handler);
    return () => this.#handlers.get(type)?.delete(handler);
  }

  // Joins rooms (kept across reconnects). Resolves with the `subscribed`
  // reply that covers them (after a reconnect if disconnected now); rejects
  // with the server's refusal, and the rooms refused are forgotten.
  subscribe(rooms) {
    const list = roomList(rooms);
    if (this.#stopped) return Promise.reject(new HubError("closed", "the client is closed"));
    if (!list.length) return Promise.reject(new TypeError("subscribe needs at least one room"));
    return new Promise((resolve, reject) => {
      const fresh = list.filter((room) => !this.rooms.has(room));
      for (const room of list) this.rooms.add(room);
      const waiter = { rooms: list, fresh, resolve, reject, requestId: null };
      this.#waiters.add(waiter);
      if (this.#ready) this.#sendSubscribe(waiter);
    });
  }

  // Leaves rooms: they are not joined again on reconnect. Resolves with
  // the `unsubscribed` reply, or null when not connected.
  unsubscribe(rooms) {
    const list = roomList(rooms);
    for (const room of list) this.#forget(room);
    for (const waiter of this.#waiters) {
      if (waiter.rooms.some((room) => list.includes(room))) {
        this.#waiters.delete(waiter);
        waiter.reject(new HubError("unsubscribed", `unsubscribed from ${list.join(", ")} before the subscribe was answered`));
      }
    }
    const linked = this.#ready || (this.transport === "websocket" && this.ws) || (this.transport === "sse" && this.session);
    if (!linked || !list.length) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.#transmit(this.#entry("unsubscribe", { payload: { rooms: list } }, resolve, reject));
    });
  }

  // Publishes a chat message; resolves with the `published` ack (its
  // offsets). Queued while disconnected.
  publish(room, payload) {
    if (typeof room !== "string" || !room) return Promise.reject(new TypeError("publish needs a room"));
    return this.request("publish", { room, payload });
  }

  // Best effort, never queued: false when not connected.
  typing(room, typing = true) {
    if (!this.#ready) return false;
    this.#transmit({ envelope: { v: PROTOCOL_VERSION, type: "typing", room, payload: { typing: Boolean(typing) } } });
    return true;
  }

  presence(room) {
    return this.request("presence", { room });
  }

  ping() {
    return this.request("ping");
  }

  // Sends an envelope with a request_id; resolves with the reply that
  // carries it back, rejects with a HubError: "server" (an error reply),
  // "queue_full", "disconnected" (the connection was lost before the
  // reply: it may or may not have been done), "timeout", "refused" (not
  // connected and not trying), "closed".
  request(type, fields = {}) {
    if (type === "subscribe") return this.subscribe(fields.payload?.rooms ?? []);
    if (type === "unsubscribe") return this.unsubscribe(fields.payload?.rooms ?? []);
    return new Promise((resolve, reject) => {
      const entry = this.#entry(type, fields, resolve, reject);
      if (this.#stopped) return reject(new HubError("closed", `${type} not sent: the client is closed`));
      if (this.#ready) return this.#transmit(entry);
      if (this.state === "error" && !this.#retryTimer && !this.detail.auth) {
        return reject(new HubError("refused", `${type} not sent: not connected (${this.detail.reason || "refused"})`));
      }
      if (this.#queue.length >= this.#options.sendQueueLimit) {
        return reject(
          new HubError("queue_full", `${type} not sent: ${this.#queue.length} messages already wait for the connection (sendQueueLimit)`),
        );
      }
      this.#queue.push(entry);
    });
  }

  // Connects again now: after an "error" state, or to move to the next URL.
  reconnect() {
    if (this.#stopped) throw new HubError("closed", "the client is closed");
    this.#backoff = this.#options.backoffStartMs;
    this.#webSocketFailures = 0;
    if (this.ws || this.eventSource) {
      this.#drop(1000, "reconnect asked for", { next: true, delay: 0 });
    } else {
      this.#connect();
    }
  }

  // A fresh token (same user). While connected it goes to the server as
  // `refresh` (resolves with `refreshed`, so the connection outlives the
  // old token); after a 401 or a 4001 the client connects again with it at
  // once (resolves with null); else the next connection uses it.
  setToken(token) {
    if (this.#stopped) return Promise.reject(new HubError("closed", "the client is closed"));
    if (typeof token !== "string" || !token) return Promise.reject(new TypeError("setToken needs a token"));
    this.#options.token = token;
    if (this.state === "error" && this.detail.auth) {
      this.reconnect();
      return Promise.resolve(null);
    }
    // A link up, or being opened with the old token: refresh it (queued
    // until the rooms are subscribed again).
    if (this.ws || this.eventSource) return this.request("refresh", { payload: { token } });
    return Promise.resolve(null);
  }

  // Closes for good: what is queued or waiting is rejected ("closed").
  close() {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    if (this.#onOnline) removeEventListener("online", this.#onOnline);
    this.#detach(1000, "bye");
    const closed = () => new HubError("closed", "the client was closed");
    for (const entry of this.#queue.splice(0)) entry.reject?.(closed());
    for (const entry of this.#inflight.values()) entry.reject?.(closed());
    this.#inflight.clear();
    for (const waiter of this.#waiters) waiter.reject(closed());
    this.#waiters.clear();
    this.#setState("closed", {});
  }

  // ---- connecting -------------------------------------------------------

  #connect() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    if (this.#stopped) return;
    const url = this.urls[this.#urlIndex % this.urls.length];
    this.#url = url;
    const link = ++this.#link;
    const sse = this.#wantSse();
    // A handshake that hangs (a frozen node, packets dropped) counts as failed.
    this.#connectTimer = setTimeout(() => {
      if (link !== this.#link || this.transport) return;
      this.#detach();
      this.#attemptFailed(url, sse ? "sse" : "websocket", null, "no answer to the handshake");
    }, this.#options.connectTimeoutMs);
    if (sse) this.#openEventSource(url, link);
    else this.#openWebSocket(url, link);
  }

  #wantSse() {
    return this.#options.transport === "sse" || (this.#options.transport === "auto" && this.#useSse);
  }

  #openWebSocket(url, link) {
    let ws;
    // The token as a subprotocol beside the real one, never in the URL
    // (URLs end up in logs); the server answers `sabai.v1` only.
    const token = this.#options.token;
    this.#linkToken = token;
    try {
      ws = new WebSocket(withParams(url, this.#authParams(false)), token ? [SUBPROTOCOL, `bearer.${token}`] : [SUBPROTOCOL]);
    } catch (e) {
      return this.#fail({ reason: `cannot open ${url}: ${e.message}`, url });
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (link !== this.#link) return;
      opened = true;
      this.#linkUp("websocket");
    };
    ws.onmessage = (event) => {
      if (link === this.#link) this.#receive(event.data);
    };
    ws.onclose = (event) => {
      if (link !== this.#link) return;
      this.#linkDown({ opened, code: event.code, reason: event.reason });
    };
  }

  #openEventSource(url, link) {
    // EventSource sends no headers of ours: the token goes as ?token=.
    this.#linkToken = this.#options.token;
    const params = this.#authParams(true);
    const rooms = [...this.rooms];
    if (rooms.length) params.set("rooms", rooms.join(","));
    // The stream's own last id while we stayed on SSE; else where our
    // positions say we stand, in the id's documented encoding.
    const token = covers(this.#sseId, this.#positions) ? this.#sseId : sseToken(this.#positions);
    if (token) params.set("last_event_id", token);
    let es;
    try {
      es = new EventSource(withParams(endpoint(url, "events"), params));
    } catch (e) {
      return this.#fail({ reason: `cannot open the event stream of ${url}: ${e.message}`, url });
    }
    this.eventSource = es;
    this.#sseRooms = rooms;
    let opened = false;
    es.onopen = () => {
      if (link !== this.#link || opened) return;
      opened = true;
      this.#linkUp("sse");
    };
    es.onmessage = (event) => {
      if (link !== this.#link) return;
      if (event.lastEventId) this.#sseId = event.lastEventId;
      this.#receive(event.data);
    };
    es.onerror = () => {
      if (link !== this.#link) return;
      // We reconnect ourselves (backoff, next URL, every room in the URL).
      es.close();
      this.#linkDown({
        opened,
        code: null,
        reason: opened ? "the event stream ended" : "the event stream could not be opened",
      });
    };
  }

  #linkUp(transport) {
    clearTimeout(this.#connectTimer);
    if (this.#everOpen) this.stats.reconnects++;
    this.#everOpen = true;
    this.transport = transport;
    this.#openedAt = Date.now();
    this.#backoff = this.#options.backoffStartMs;
    if (transport === "websocket") {
      this.#webSocketFailures = 0;
      // Our positions are newer than any id of an earlier event stream.
      this.#sseId = null;
    }
    this.#setState("open", { url: this.#url, transport });
    this.#startHeartbeat();
    const link = this.#link;
    // A link that never gets ready (no reply to the subscribe, no
    // `connected` on a stream) is dropped.
    this.#readyTimer = setTimeout(() => {
      if (link === this.#link && !this.#ready) this.#drop(HEARTBEAT_TIMEOUT, "the server did not answer the subscribe", { next: true });
    }, this.#options.requestTimeoutMs);
    // On a WebSocket, subscribe again; on SSE the server joins the rooms
    // of the URL and says `connected` and `subscribed` (see #receive).
    if (transport === "websocket") this.#resubscribe();
  }

  // The link ended (or an attempt failed): reject what cannot be known,
  // keep what was not sent, and try again as the close code says.
  #linkDown({ opened, code, reason }) {
    const transport = this.transport ?? (this.#wantSse() ? "sse" : "websocket");
    const upFor = opened ? Date.now() - this.#openedAt : 0;
    const linkToken = this.#linkToken;
    this.#detach();
    if (this.#stopped) return;
    const url = this.#url;
    if (!opened) return this.#attemptFailed(url, transport, code, reason);
    const detail = { code: code ?? undefined, reason: reason || CLOSE_REASONS[code] || "the connection was lost", url, transport };
    this.#urlIndex++;
    if (code === AUTH_FAILED) {
      // A token given since this link opened: try it now.
      if (this.#options.token && this.#options.token !== linkToken) return this.#retry(0, "reconnecting", detail);
      const said = reason ? ` (${reason})` : "";
      return this.#needToken({ ...detail, reason: `${CLOSE_REASONS[AUTH_FAILED]}${said}`, auth: "expired" });
    }
    if (NO_RETRY.has(code)) return this.#fail(detail);
    if (RETRY_SLOWLY.has(code)) return this.#retry(this.#options.backoffMaxMs, "error", detail);
    // A stream the server ended after a while is SSE's 1012/4008: recover at once.
    if (AT_ONCE.has(code) || (transport === "sse" && upFor >= 1000)) return this.#retry(Math.random() * 100, "reconnecting", detail);
    this.#retry(this.#nextBackoff(), "reconnecting", detail);
  }

  // A connection that never opened: ask the server over plain HTTP why
  // (browsers hide a refused handshake's status), then decide.
  async #attemptFailed(url, transport, code, reason) {
    const link = this.#link;
    this.#setState(this.#everOpen ? "reconnecting" : "connecting", { url, transport, reason: "connecting…" });
    const probe = await this.#probe(url, transport);
    if (this.#stopped || link !== this.#link) return;
    const { status, text } = probe;
    const said = text ? `: ${text}` : "";
    const detail = { url, transport, status: status || undefined, code: code ?? undefined };
    if (status === 401) {
      // A token given since this attempt began: try it now.
      if (this.#options.token !== this.#linkToken) return this.#retry(0, "reconnecting", detail);
      return this.#needToken({ ...detail, ...unauthorized(this.#options.token, text) });
    }
    if (status === 403) {
      return this.#fail({ ...detail, reason: `refused (403 ${HTTP_REASONS[403]})${said}` });
    }
    this.#urlIndex++;
    if (status === 0) {
      // A node of another origin cannot be read from here (no CORS): it
      // may be down, or refuse this page's origin or token.
      const foreign = typeof location !== "undefined" && new URL(endpoint(url, "events")).origin !== location.origin;
      const why = foreign ? `cannot connect to ${url} (down, or refusing this page's origin or token: another origin cannot tell)` : `cannot reach ${url}`;
      return this.#retry(this.#nextBackoff(), "reconnecting", { ...detail, reason: why });
    }
    if (status === 503) {
      return this.#retry(this.#nextBackoff(), "reconnecting", { ...detail, reason: `${HTTP_REASONS[503]}${said}` });
    }
    if (transport === "websocket") {
      if (status >= 200 && status < 300 && this.#options.transport === "auto") {
        // HTTP passes and the event stream is there, WebSocket does not:
        // a proxy that drops upgrades, for example.
        if (++this.#webSocketFailures >= this.#options.webSocketAttempts) {
          this.#useSse = true;
          this.#urlIndex--; // same node, other transport
          return this.#retry(0, "reconnecting", { ...detail, reason: "WebSocket cannot connect: trying Server-Sent Events" });
        }
      }
      return this.#retry(this.#nextBackoff(), "reconnecting", {
        ...detail,
        reason: `the WebSocket handshake failed; the server is up (GET /events: ${status})`,
      });
    }
    // The event stream.
    if (status === 404 || status === 405) {
      if (this.#options.transport === "sse") return this.#fail({ ...detail, reason: `${url} has no event stream (/events)` });
      this.#useSse = false;
      this.#webSocketFailures = 0;
      return this.#retry(this.#nextBackoff(), "reconnecting", { ...detail, reason: "no event stream there: back to WebSocket" });
    }
    if (status === 400) {
      // A room the server refuses (it checks the rooms of the URL):
      // the rooms it never accepted go, and their subscribe is rejected.
      const unconfirmed = this.#sseRooms.filter((room) => !this.#confirmed.has(room));
      if (unconfirmed.length) {
        const refusal = new HubError("server", `subscribe to ${unconfirmed.join(", ")} refused${said}`);
        for (const room of unconfirmed) this.#forget(room);
        for (const waiter of this.#waiters) {
          if (waiter.rooms.some((room) => unconfirmed.includes(room))) {
            this.#waiters.delete(waiter);
            waiter.reject(refusal);
          }
        }
        this.#urlIndex--;
        return this.#retry(0, "reconnecting", { ...detail, reason: refusal.message });
      }
    }
    this.#retry(this.#nextBackoff(), "reconnecting", { ...detail, reason: `the event stream failed (HTTP ${status})${said}` });
  }

  // Why a handshake failed, over plain HTTP (browsers hide a refused
  // handshake's status). First POST /send without a session: it has the
  // handshake's checks, and a browser sends its Origin on a POST (not on a
  // same-origin GET), so 401 (token) and 403 (Origin) show there; past
  // them it is 404 (no such session). Then GET /events with our
  // credentials: whether the event stream passes where a WebSocket did
  // not. 0: no answer (or another origin's, which a page cannot read).
  async #probe(url, transport) {
    const headers = this.#options.token ? { Authorization: `Bearer ${this.#options.token}` } : {};
    const checked = await fetchStatus(endpoint(url, "send"), { method: "POST", headers, body: "{}" });
    if ([0, 401, 403].includes(checked.status)) return checked;
    const params = this.#authParams(true);
    if (transport === "sse" && this.#sseRooms.length) params.set("rooms", this.#sseRooms.join(","));
    return fetchStatus(withParams(endpoint(url, "events"), params), { headers: { Accept: "text/event-stream" } });
  }

  #retry(delay, state, detail) {
    clearTimeout(this.#retryTimer);
    this.#setState(state, { ...detail, retryInMs: Math.round(delay) });
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  #nextBackoff() {
    const delay = this.#backoff * (1 + Math.random() * 0.3);
    this.#backoff = Math.min(this.#backoff * 2, this.#options.backoffMaxMs);
    return delay;
  }

  // Not trying again by itself: queued requests fail now; subscribe()
  // calls wait (a reconnect() may still satisfy them).
  #fail(detail) {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    const why = detail.reason || "refused";
    for (const entry of this.#queue.splice(0)) {
      entry.reject?.(new HubError("refused", `${entry.envelope.type} not sent: ${why}`));
    }
    this.#setState("error", { ...detail, fatal: true });
  }

  // Not trying again until setToken() (or reconnect()): what is queued
  // stays queued, to go once signed in again.
  #needToken(detail) {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#setState("error", { ...detail, fatal: true });
  }

  // Drops the current link as if it was lost (a dead heartbeat, reconnect()):
  // `detail.local` says the client decided it, not the server.
  #drop(code, reason, { next = false, delay } = {}) {
    const hadLink = Boolean(this.ws || this.eventSource);
    const transport = this.transport;
    this.#detach(code, reason);
    if (this.#stopped) return;
    if (next) this.#urlIndex++;
    const detail = { code, reason, url: this.#url, transport: transport ?? undefined, local: true };
    if (!hadLink) return this.#connect();
    this.#retry(delay ?? Math.random() * 100, "reconnecting", detail);
  }

  // Forgets the link: pending replies are rejected (or wait for the next
  // subscribe), unsent SSE posts go back to the queue.
  #detach(code = 1000, reason = "") {
    this.#link++;
    this.#ready = false;
    clearInterval(this.#heartbeat);
    clearTimeout(this.#readyTimer);
    clearTimeout(this.#connectTimer);
    if (this.ws) {
      try {
        this.ws.close(code >= 3000 || code === 1000 ? code : 1000, reason.slice(0, 100));
      } catch {
        /* already closed */
      }
    }
    this.eventSource?.close();
    this.ws = null;
    this.eventSource = null;
    this.transport = null;
    this.session = null;
    const unsent = new Set(this.#sseOut.filter((entry) => !entry.posting));
    this.#sseOut = [];
    const again = [];
    for (const entry of this.#inflight.values()) {
      clearTimeout(entry.timer);
      if (entry.kind === "request" && unsent.has(entry)) again.push(entry);
      else if (entry.kind === "request" || entry.kind === "each") {
        entry.reject(
          new HubError("disconnected", `the connection was lost before the reply to ${entry.envelope.type}: it may or may not have been done`),
        );
      }
    }
    this.#inflight.clear();
    // Never posted: first in line again, in their order.
    this.#queue.unshift(...again);
    for (const waiter of this.#waiters) waiter.requestId = null;
  }

  // ---- subscribing again, and the queue ----------------------------------

  #resubscribe() {
    const rooms = [...this.rooms];
    if (!rooms.length) return this.#becomeReady();
    const entry = this.#entry("subscribe", { payload: this.#subscribePayload(rooms) });
    entry.kind = "resubscribe";
    entry.rooms = rooms;
    for (const waiter of this.#waiters) if (waiter.requestId === null) waiter.requestId = entry.envelope.request_id;
    this.#transmit(entry);
  }

  #sendSubscribe(waiter) {
    const entry = this.#entry("subscribe", { payload: this.#subscribePayload(waiter.rooms) });
    entry.kind = "subscribe";
    entry.rooms = waiter.rooms;
    waiter.requestId = entry.envelope.request_id;
    this.#transmit(entry);
  }

  #subscribePayload(rooms) {
    const since = {};
    for (const room of rooms) {
      const at = this.#positions.get(room);
      if (at) since[room] = { offset: at.offset, epoch: at.epoch };
    }
    return Object.keys(since).length ? { rooms, since } : { rooms };
  }

  // The answer to a subscribe: its waiters settle; a refused resubscribe
  // (all or nothing) is retried room by room to find the room refused.
  #subscribeAnswered(entry, reply) {
    const id = entry.envelope.request_id;
    const waiters = [...this.#waiters].filter((w) => w.requestId === id);
    if (reply.type !== "error") {
      for (const room of entry.rooms) this.#confirmed.add(room);
      for (const waiter of waiters) {
        this.#waiters.delete(waiter);
        waiter.resolve(reply);
      }
      if (entry.kind === "resubscribe") this.#becomeReady();
      return;
    }
    const why = reply.payload?.message || "refused";
    if (entry.kind === "resubscribe" && entry.rooms.length > 1) return this.#resubscribeEach(entry.rooms, waiters);
    for (const waiter of waiters) {
      this.#waiters.delete(waiter);
      for (const room of waiter.fresh) if (!this.#confirmed.has(room)) this.#forget(room);
      waiter.reject(new HubError("server", `subscribe to ${waiter.rooms.join(", ")} refused: ${why}`, { reply }));
    }
    if (entry.kind === "resubscribe") {
      for (const room of entry.rooms) this.#forget(room);
      this.#becomeReady();
    }
  }

  async #resubscribeEach(rooms, waiters) {
    const link = this.#link;
    const refused = new Map();
    let last = null;
    for (const room of rooms) {
      try {
        last = await new Promise((resolve, reject) => {
          const entry = this.#entry("subscribe", { payload: this.#subscribePayload([room]) }, resolve, reject);
          entry.kind = "each";
          this.#transmit(entry);
        });
        if (link !== this.#link) return;
        this.#confirmed.add(room);
      } catch (error) {
        if (link !== this.#link) return; // lost again: the next link tries
        if (error.code === "server") refused.set(room, error);
      }
    }
    for (const room of refused.keys()) this.#forget(room);
    for (const waiter of waiters) {
      this.#waiters.delete(waiter);
      const bad = waiter.rooms.find((room) => refused.has(room));
      if (bad || !last) waiter.reject(refused.get(bad) ?? new HubError("server", "subscribe refused"));
      else waiter.resolve(last);
    }
    this.#becomeReady();
  }

  // Subscribed again: subscribe() calls made meanwhile go, then the queue.
  #becomeReady() {
    if (this.#ready) return;
    this.#ready = true;
    clearTimeout(this.#readyTimer);
    for (const waiter of this.#waiters) if (waiter.requestId === null) this.#sendSubscribe(waiter);
    for (const entry of this.#queue.splice(0)) this.#transmit(entry);
  }

  // ---- sending ----------------------------------------------------------

  #entry(type, fields = {}, resolve, reject) {
    const envelope = { v: PROTOCOL_VERSION, type };
    if (fields.room !== undefined) envelope.room = fields.room;
    if (fields.payload !== undefined) envelope.payload = fields.payload;
    envelope.request_id = `r${this.#nextId++}`;
    return { envelope, kind: "request", resolve, reject };
  }

  // Sends on the link that is ready; an entry with a request_id waits for
  // its reply (tracked before sending: on SSE it may beat the 202).
  #transmit(entry) {
    const id = entry.envelope.request_id;
    if (id !== undefined) {
      this.#inflight.set(id, entry);
      const link = this.#link;
      const wait = entry.kind === "heartbeat" ? this.#options.pongTimeoutMs : this.#options.requestTimeoutMs;
      entry.timer = setTimeout(() => {
        if (!this.#inflight.has(id) || link !== this.#link) return;
        this.#inflight.delete(id);
        this.#timedOut(entry);
      }, wait);
    }
    if (this.transport === "sse") {
      this.#sseOut.push(entry);
      this.#postAll();
      return;
    }
    try {
      this.ws.send(JSON.stringify(entry.envelope));
    } catch (e) {
      // Closing under us: onclose follows and settles it.
      console.warn("sabai hub: send failed", e);
    }
  }

  #timedOut(entry) {
    const type = entry.envelope.type;
    const secs = Math.round((entry.kind === "heartbeat" ? this.#options.pongTimeoutMs : this.#options.requestTimeoutMs) / 1000);
    if (entry.kind === "heartbeat" || entry.kind === "resubscribe") {
      // A dead link: go to the next node and recover.
      return this.#drop(HEARTBEAT_TIMEOUT, `no reply to ${type} in ${secs} s`, { next: true });
    }
    const error = new HubError("timeout", `no reply to ${type} in ${secs} s: it may or may not have been done`);
    if (entry.kind === "subscribe") {
      for (const waiter of [...this.#waiters].filter((w) => w.requestId === entry.envelope.request_id)) {
        this.#waiters.delete(waiter);
        waiter.reject(error);
      }
      return;
    }
    entry.reject?.(error);
  }

  // POST /send, one at a time so the server gets them in order.
  async #postAll() {
    const link = this.#link;
    if (this.#posting === link) return;
    this.#posting = link;
    const url = endpoint(this.#url, "send");
    try {
      while (this.#sseOut.length && link === this.#link) {
        const entry = this.#sseOut[0];
        entry.posting = true;
        let response = null;
        try {
          const headers = { "Content-Type": "application/json", "X-Sabai-Session": this.session ?? "" };
          if (this.#options.token) headers.Authorization = `Bearer ${this.#options.token}`;
          response = await fetch(url, { method: "POST", headers, body: JSON.stringify(entry.envelope) });
        } catch {
          response = null;
        }
        if (link !== this.#link) return; // #detach settled it
        const status = response ? response.status : 0;
        if (status === 202) {
          this.#sseOut.shift();
          continue;
        }
        if (status === 401) {
          // The token expired (or was refused): this one goes back to
          // the queue with what follows it, until setToken().
          const text = (await response.text().catch(() => "")).trim().slice(0, 200);
          if (link !== this.#link) return;
          entry.posting = false;
          const linkToken = this.#linkToken;
          this.#detach();
          if (this.#options.token !== linkToken) return this.#retry(0, "reconnecting", { url: this.#url, transport: "sse" });
          return this.#needToken({ url: this.#url, transport: "sse", status, ...unauthorized(this.#options.token, text) });
        }
        if (status === 404 || status === 503) {
          // Not taken (the session ended, the node is going): it goes
          // back to the queue with what follows it, and we reconnect.
          entry.posting = false;
          return this.#drop(HEARTBEAT_TIMEOUT, `POST /send answered ${status}`, { next: status === 503 });
        }
        this.#sseOut.shift();
        const id = entry.envelope.request_id;
        const tracked = id !== undefined && this.#inflight.delete(id);
        clearTimeout(entry.timer);
        if (status === 0) {
          // No answer: it may or may not have arrived. (A subscribe's
          // callers wait for the next connection's subscribe.)
          if (tracked && (entry.kind === "request" || entry.kind === "each")) {
            entry.reject(new HubError("disconnected", `POST /send failed: ${entry.envelope.type} may or may not have been done`));
          }
          return this.#drop(HEARTBEAT_TIMEOUT, "POST /send got no answer", { next: true });
        }
        const text = (await response.text().catch(() => "")).trim().slice(0, 200);
        if (link !== this.#link) return;
        const error = new HubError("server", `${entry.envelope.type} refused (HTTP ${status})${text ? `: ${text}` : ""}`);
        if (status === 403) {
          entry.reject?.(error);
          this.#detach();
          return this.#fail({ reason: error.message, status, url: this.#url, transport: "sse" });
        }
        if (entry.kind === "subscribe" || entry.kind === "resubscribe") {
          this.#subscribeAnswered(entry, { type: "error", payload: { message: error.message } });
        } else if (tracked) {
          entry.reject?.(error);
        }
      }
    } finally {
      if (this.#posting === link) this.#posting = 0;
    }
  }

  #startHeartbeat() {
    clearInterval(this.#heartbeat);
    this.#heartbeat = setInterval(() => {
      if (!this.#ready) return;
      const entry = this.#entry("ping");
      entry.kind = "heartbeat";
      this.#transmit(entry);
    }, this.#options.heartbeatMs);
  }

  // ---- receiving --------------------------------------------------------

  #receive(text) {
    let envelope;
    try {
      envelope = JSON.parse(text);
    } catch {
      return;
    }
    if (!envelope || typeof envelope !== "object" || typeof envelope.type !== "string") return;
    const payload = envelope.payload ?? {};
    if (envelope.type === "connected") {
      this.connectionId = payload.connection_id ?? null;
      this.node = payload.node ?? null;
      this.session = payload.session ?? null;
      if (typeof payload.user === "string") this.#user = payload.user;
    } else if (envelope.type === "subscribed") {
      this.#applySubscribed(envelope);
    }
    if ((envelope.offsets || typeof envelope.offset === "number") && !this.#accept(envelope)) return;
    const id = envelope.request_id;
    const entry = id !== undefined && id !== null ? this.#inflight.get(id) : undefined;
    if (entry) {
      this.#inflight.delete(id);
      clearTimeout(entry.timer);
      if (entry.kind === "subscribe" || entry.kind === "resubscribe") this.#subscribeAnswered(entry, envelope);
      else if (envelope.type === "error") {
        entry.reject?.(new HubError("server", `${entry.envelope.type} refused: ${payload.message || "error"}`, { reply: envelope }));
      } else entry.resolve?.(envelope);
    }
    this.#emit(envelope.type, envelope);
    this.#emit("*", envelope);
    if (this.transport === "sse" && !this.#ready) this.#sseProgress(envelope);
  }

  // On SSE the server greets (`connected`, with the session to post
  // with) and joins the rooms of the URL by itself (`subscribed`).
  #sseProgress(envelope) {
    if (!this.session) return;
    if (this.#sseRooms.length) {
      if (envelope.type !== "subscribed" || envelope.request_id !== undefined) return;
      const joined = new Set(envelope.payload?.rooms ?? []);
      for (const room of this.#sseRooms) if (joined.has(room)) this.#confirmed.add(room);
      for (const waiter of [...this.#waiters]) {
        if (waiter.requestId === null && waiter.rooms.every((room) => joined.has(room))) {
          this.#waiters.delete(waiter);
          waiter.resolve(envelope);
        }
      }
    }
    this.#becomeReady();
  }

  // `subscribed`: where each room stands now, and whether it recovered.
  #applySubscribed(envelope) {
    const positions = envelope.payload?.positions ?? {};
    const unsolicited = envelope.request_id === undefined || envelope.request_id === null;
    for (const [room, at] of Object.entries(positions)) {
      if (!this.rooms.has(room) || !at || typeof at !== "object") continue;
      const mine = this.#positions.get(room);
      const given = typeof at.offset === "number" && typeof at.epoch === "string" ? { offset: at.offset, epoch: at.epoch } : null;
      if (at.recovered === true) {
        // The replay of what we missed follows: our position stands.
        if (given && mine && given.epoch === mine.epoch && given.offset > mine.offset) this.#replayUntil.set(room, given.offset);
        if (given && !mine) this.#positions.set(room, given);
        this.#emit("recovery", { room, recovered: true, position: given, since: mine ? { ...mine } : null, unsolicited });
      } else if (at.recovered === false) {
        this.#replayUntil.delete(room);
        if (given) this.#positions.set(room, given);
        else this.#positions.delete(room);
        this.#emit("recovery", { room, recovered: false, position: given, since: mine ? { ...mine } : null, unsolicited });
      } else if (given && (!mine || mine.epoch !== given.epoch || mine.offset < given.offset)) {
        this.#positions.set(room, given);
      }
    }
  }

  // A publication: false if already had (a duplicate); gaps are reported.
  #accept(envelope) {
    const offsets =
      envelope.offsets && typeof envelope.offsets === "object" ? envelope.offsets : { [envelope.room]: envelope.offset };
    const fresh = [];
    for (const [room, offset] of Object.entries(offsets)) {
      const at = this.#positions.get(room);
      if (!at || typeof offset !== "number") continue;
      if (offset <= at.offset) {
        this.stats.duplicates++;
        this.#emit("duplicate", { room, offset, position: { ...at }, envelope });
        return false;
      }
      fresh.push([room, offset, at]);
    }
    let replayed = false;
    for (const [room, offset, at] of fresh) {
      if (offset > at.offset + 1) {
        const missed = offset - at.offset - 1;
        this.stats.gaps++;
        this.stats.missed += missed;
        this.#emit("gap", { room, expected: at.offset + 1, offset, missed, envelope });
      }
      at.offset = offset;
      const until = this.#replayUntil.get(room);
      if (until !== undefined) {
        if (offset <= until) replayed = true;
        if (offset >= until) this.#replayUntil.delete(room);
      }
    }
    if (replayed) this.stats.replayed++;
    return true;
  }

  #forget(room) {
    this.rooms.delete(room);
    this.#positions.delete(room);
    this.#replayUntil.delete(room);
    this.#confirmed.delete(room);
  }

  #emit(type, ...args) {
    for (const handler of this.#handlers.get(type) || []) {
      try {
        handler(...args);
      } catch (e) {
        console.error(e);
      }
    }
  }

  #setState(state, detail) {
    this.state = state;
    this.detail = detail;
    this.#emit("state", state, detail);
  }

  #authParams(withToken) {
    const params = new URLSearchParams();
    if (this.#options.user) params.set("user", this.#options.user);
    if (withToken && this.#options.token) params.set("token", this.#options.token);
    return params;
  }
}

// ---- helpers ------------------------------------------------------------

// A request's status and, when refused, the server's words (a JSON
// `error` or the text); within 5 s, and a stream that opened is not kept.
async function fetchStatus(url, init) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 5000);
  try {
    const response = await fetch(url, { ...init, signal: controller.signal, cache: "no-store" });
    let text = response.ok ? "" : (await response.text()).trim().slice(0, 200);
    try {
      text = JSON.parse(text).error ?? text;
    } catch {
      /* plain text */
    }
    return { status: response.status, text: String(text) };
  } catch {
    return { status: 0, text: "" };
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}

// What a 401 means for the page (detail.auth and reason): no token given,
// the token expired, or the token refused. `text`: the server's reason.
function unauthorized(token, text) {
  const said = `401${text ? `: ${text}` : ""}`;
  if (!token) return { auth: "required", reason: `sign in: the server wants a token (${said})` };
  if (/expired/i.test(text)) return { auth: "expired", reason: `your session expired: sign in again (${said})` };
  return { auth: "refused", reason: `your token was refused: sign in again (${said})` };
}

function defaultUrl() {
  if (typeof location === "undefined") throw new TypeError("no page to take the URL from: give options.urls");
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
}

// ws:, wss:, http:, https: or a path of this page's host: a WebSocket URL.
function webSocketUrl(url) {
  const base = typeof location === "undefined" ? undefined : location.href;
  const parsed = new URL(url, base);
  if (parsed.protocol === "http:") parsed.protocol = "ws:";
  if (parsed.protocol === "https:") parsed.protocol = "wss:";
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") throw new TypeError(`not a WebSocket URL: ${url}`);
  return parsed.toString();
}

// The HTTP endpoint beside a node's /ws: ws://h/ws -> http://h/events.
function endpoint(url, name) {
  const parsed = new URL(url);
  parsed.protocol = parsed.protocol === "wss:" ? "https:" : "http:";
  const dir = parsed.pathname.replace(/\/ws\/?$/, "").replace(/\/+$/, "");
  parsed.pathname = `${dir}/${name}`;
  parsed.search = "";
  parsed.hash = "";
  return parsed.toString();
}

function withParams(url, params) {
  const query = params.toString();
  if (!query) return url;
  return `${url}${url.includes("?") ? "&" : "?"}${query}`;
}

function roomList(rooms) {
  const list = typeof rooms === "string" ? [rooms] : Array.isArray(rooms) ? rooms : [];
  return [...new Set(list.filter((room) => typeof room === "string" && room))];
}

// Whether an SSE id names every room we have a position in.
function covers(id, positions) {
  if (!id) return false;
  try {
    const base64 = id.slice(3).replace(/-/g, "+").replace(/_/g, "/");
    const rooms = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))));
    return id.startsWith("v1.") && [...positions.keys()].every((room) => Array.isArray(rooms[room]));
  } catch {
    return false;
  }
}

// The SSE id's documented encoding (docs/protocol.md): "v1." and the
// base64url of {"room": [offset, "epoch"]}; none if over 1 KiB.
function sseToken(positions) {
  if (!positions.size) return null;
  const json = JSON.stringify(Object.fromEntries([...positions].map(([room, at]) => [room, [at.offset, at.epoch]])));
  const bytes = new TextEncoder().encode(json);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  const token = `v1.${btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")}`;
  return token.length <= 1024 ? token : null;
}
