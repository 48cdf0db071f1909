// TypeScript declarations of /client.js: the hub's wire protocol, version 1
// (docs/protocol.md), and the browser client that speaks it.

/** The protocol version this client speaks. */
export declare const PROTOCOL_VERSION: 1;

// ---- envelopes ---------------------------------------------------------

/** A request id: any string or number; the reply carries it back. */
export type RequestId = string | number;

/** Where a client stands in a room with history. */
export interface Position {
  /** The offset of the last publication seen; offsets count from 1 in each epoch. */
  offset: number;
  /** Opaque; changes when the room's history is lost. */
  epoch: string;
}

/** Every message, in both directions, is one envelope. */
export interface Envelope<T extends string = string, P = unknown> {
  /** Protocol version: always there from a server; a client may omit it. */
  v?: number;
  type: T;
  room?: string;
  payload: P;
  /** RFC 3339, UTC, milliseconds (for example "2026-12-03T15:33:57.123Z"). */
  timestamp?: string;
  request_id?: RequestId;
  /** A publication's offset in `room` (rooms with history only). */
  offset?: number;
  /** A publication's offset in every room with history it went to. */
  offsets?: Record<string, number>;
}

/** An envelope as the server sends it: version and timestamp always there. */
export type ServerEnvelope<T extends string = string, P = unknown> = Envelope<T, P> & {
  v: number;
  timestamp: string;
};

// ---- payloads of the server's messages ---------------------------------

export interface ConnectedPayload {
  connection_id: number;
  user: string;
  /** The server's node id. */
  node: string;
  /** SSE only: the key for POST /send (header X-Sabai-Session). */
  session?: string;
  server_time?: string;
}

/** A room's entry in `subscribed.positions`. */
export interface SubscribedPosition {
  /** Where the replay ends (absent if the history could not be read). */
  offset?: number;
  epoch?: string;
  /** Only for a room asked with `since`: whether everything after it was replayed. */
  recovered?: boolean;
}

export interface SubscribedPayload {
  /** Every room the connection is in now. */
  rooms: string[];
  /** The rooms of the request that keep history. */
  positions: Record<string, SubscribedPosition>;
  /** Whether every room asked with `since` was recovered; absent if none asked. */
  recovered?: boolean;
  /**
   * The ids of the request's `device:` rooms that name no device the server
   * knows (see GET /devices): joined all the same; absent when none.
   */
  unknown_devices?: string[];
}

export interface UnsubscribedPayload {
  rooms: string[];
}

export interface PublishedPayload {
  /** The publication's offsets (empty for a room without history). */
  offsets: Record<string, number>;
}

export interface PresenceUser {
  user: string;
  /** Connections of this user in the room, every node counted. */
  connections: number;
}

export interface PresencePayload {
  users: PresenceUser[];
}

export interface PongPayload {
  server_time: string;
}

/** The answer to `refresh`: the connection now lasts until the new token's expiry. */
export interface RefreshedPayload {
  /** RFC 3339; null for a token without `exp`. */
  expires_at: string | null;
}

export interface ErrorPayload {
  message: string;
}

/** A chat message (it has an offset in a room with history). */
export interface ChatMessagePayload {
  text: string;
  user: string;
  connection_id: number;
}

export interface TypingPayload {
  user: string;
  typing: boolean;
}

/** `user_joined` and `user_left` (no offset, never replayed). */
export interface PresenceChangePayload {
  user: string;
  connection_id: number;
}

/** Sent to a client when it joins a chat room: who is there now. */
export interface OnlineUsersPayload {
  users: string[];
}

export interface TelemetryFields {
  temperature?: number;
  humidity?: number;
  battery?: number;
  [field: string]: number | undefined;
}

export interface TelemetryTags {
  group?: string;
  name?: string;
  [tag: string]: string | undefined;
}

export interface TelemetryPayload {
  device_id: string;
  /** When the reading was taken, RFC 3339. */
  timestamp: string;
  fields: TelemetryFields;
  tags: TelemetryTags;
  /**
   * Counts the device's readings: a client sees a gap as a jump. The
   * simulator's readings always have it; a device over MQTT may not.
   */
  seq?: number;
}

export interface DeviceStatusPayload {
  device_id: string;
  status: "online" | "offline";
  timestamp: string;
}

export interface AlertPayload {
  alert_id: string;
  device_id: string;
  rule_name: string;
  severity: "info" | "warning" | "critical" | (string & {});
  field: string;
  value: number;
  threshold: number;
  timestamp: string;
  /** The seq of the reading that raised it (alerts of --alert-rule). */
  seq?: number;
}

/** `history`: the last publications of a room, oldest first, and its position. */
export interface HistoryPayload {
  publications: ServerEnvelope[];
  /** Subscribe with `since` at this position to miss nothing after them. */
  position: Position;
}

/** `command_sent`: the command went to the broker (QoS 1). */
export interface CommandSentPayload {
  command_id: string;
  device_id: string;
  name: string;
  /** The MQTT topic it was published to. */
  topic: string;
}

/** Every message type a server of version 1 sends, and its payload. */
export interface ServerPayloads {
  connected: ConnectedPayload;
  subscribed: SubscribedPayload;
  unsubscribed: UnsubscribedPayload;
  published: PublishedPayload;
  presence: PresencePayload;
  pong: PongPayload;
  refreshed: RefreshedPayload;
  error: ErrorPayload;
  message: ChatMessagePayload;
  typing: TypingPayload;
  user_joined: PresenceChangePayload;
  user_left: PresenceChangePayload;
  online_users: OnlineUsersPayload;
  telemetry: TelemetryPayload;
  device_status: DeviceStatusPayload;
  alert: AlertPayload;
  history: HistoryPayload;
  command_sent: CommandSentPayload;
}

export type ServerMessageType = keyof ServerPayloads;

/** The envelope of one server message type. */
export type ServerMessage<T extends ServerMessageType = ServerMessageType> = {
  [K in T]: ServerEnvelope<K, ServerPayloads[K]>;
}[T];

export type ConnectedEnvelope = ServerMessage<"connected">;
export type SubscribedEnvelope = ServerMessage<"subscribed">;
export type UnsubscribedEnvelope = ServerMessage<"unsubscribed">;
export type PublishedEnvelope = ServerMessage<"published">;
export type PresenceEnvelope = ServerMessage<"presence">;
export type PongEnvelope = ServerMessage<"pong">;
export type RefreshedEnvelope = ServerMessage<"refreshed">;
export type ErrorEnvelope = ServerMessage<"error">;
export type ChatMessageEnvelope = ServerMessage<"message">;
export type TelemetryEnvelope = ServerMessage<"telemetry">;
export type DeviceStatusEnvelope = ServerMessage<"device_status">;
export type AlertEnvelope = ServerMessage<"alert">;
export type HistoryEnvelope = ServerMessage<"history">;
export type CommandSentEnvelope = ServerMessage<"command_sent">;

// ---- what a client sends -----------------------------------------------

export interface SubscribePayload {
  /** 1 to 64 room names. */
  rooms: string[];
  /** Recover from these positions: the publications after each are replayed. */
  since?: Record<string, Position>;
}

/** Every message type a client sends, and its payload. */
export interface ClientPayloads {
  subscribe: SubscribePayload;
  unsubscribe: { rooms: string[] };
  publish: { text: string };
  typing: { typing: boolean };
  presence: Record<string, never>;
  ping: Record<string, never>;
  /** A fresh JWT for the same user (`sub`); see `HubClient.setToken`. */
  refresh: { token: string };
  /** The room's last `limit` publications (1 to 500, default 100); needs `room`. */
  history: { limit?: number };
  /** A command to a device, published to its command topic over MQTT. */
  command: { device_id: string; name: string; args?: unknown };
}

/** The reply each request type gets (or an `error`). */
export interface Replies {
  subscribe: SubscribedEnvelope;
  unsubscribe: UnsubscribedEnvelope | null;
  publish: PublishedEnvelope;
  presence: PresenceEnvelope;
  ping: PongEnvelope;
  refresh: RefreshedEnvelope;
  history: HistoryEnvelope;
  command: CommandSentEnvelope;
}

// ---- the client --------------------------------------------------------

export type Transport = "websocket" | "sse";

export interface HubClientOptions {
  /**
   * WebSocket URLs of the hub's nodes (ws:, wss:, http:, https: or a path
   * of the page's host); the client moves to the next after a failure.
   * Default: the page's own `/ws`.
   */
  urls?: string[];
  /** One URL (same as `urls: [url]`). */
  url?: string;
  /**
   * Sent as `?user=`; the server may clean it up (see `HubClient.user`).
   * A server with JWT ignores it: the token's `sub` is the user.
   */
  user?: string;
  /**
   * A JWT (or the server's shared `--token`). Sent as the subprotocol
   * `bearer.<token>` beside `sabai.v1` on a WebSocket (never in its URL),
   * as `?token=` on the event stream (EventSource cannot send headers),
   * and as `Authorization: Bearer` on POST /send. Replace it with
   * `setToken()`.
   */
  token?: string;
  /**
   * "auto" (default): WebSocket, and Server-Sent Events when a WebSocket
   * cannot connect to a node that answers HTTP; "websocket" or "sse" only.
   */
  transport?: "auto" | Transport;
  /** Requests kept while disconnected; one more is refused ("queue_full"). Default 100. */
  sendQueueLimit?: number;
  /** How long a request waits for its reply once sent. Default 10000. */
  requestTimeoutMs?: number;
  /** A handshake not done in this time has failed. Default 10000. */
  connectTimeoutMs?: number;
  /** Ping interval. Default 30000. */
  heartbeatMs?: number;
  /** No pong this long after a ping: the link is dead. Default 10000. */
  pongTimeoutMs?: number;
  /** First reconnect delay, doubled after each failure. Default 1000. */
  backoffStartMs?: number;
  /** Longest reconnect delay. Default 30000. */
  backoffMaxMs?: number;
  /** ("auto") WebSocket failures, with the node answering HTTP, before trying SSE. Default 2. */
  webSocketAttempts?: number;
}

/**
 * - "connecting": the first connection is being made;
 * - "open": connected (requests go out once the rooms are subscribed again);
 * - "reconnecting": lost; trying again (`detail.retryInMs`, `detail.reason`);
 * - "error": refused or told not to retry blindly: `detail.reason` says why;
 *   with `detail.auth` the client waits for `setToken()` (what is queued
 *   stays queued); else with `detail.fatal` it waits for `reconnect()`,
 *   and without it tries again after `detail.retryInMs`;
 * - "closed": `close()` was called.
 */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "error" | "closed";

/**
 * Why the client needs a token (state "error"; it waits for `setToken()`):
 * - "required": the server wants a token and none was given (401);
 * - "expired": the token expired: at the handshake (401), or while
 *   connected with no accepted `refresh` before it did (close 4001);
 * - "refused": the token was refused at the handshake (401): a bad
 *   signature, another audience... (`reason` has the server's words).
 */
export type AuthProblem = "required" | "expired" | "refused";

export interface StateDetail {
  /**
   * The WebSocket close code, if there was one (docs/protocol.md,
   * "Closing"): 1012 (a node draining), 4002 (heartbeat timeout) and 4008
   * (slow consumer) reconnect at once to the next node; 4001 (the token
   * expired) waits for `setToken()`; 1008, 1009 and 4029 are "error"s.
   * The client uses 4002 too when it finds a link dead itself (no pong,
   * no reply to its subscribe, POST /send failing): then `local` is true.
   * It never uses 4001.
   */
  code?: number;
  /** The client, not the server, ended the link (with `code`). */
  local?: boolean;
  /** The HTTP status of a refused handshake, if known (401, 403, 503...). */
  status?: number;
  /** Set when a token is needed: call `setToken()` with a fresh one. */
  auth?: AuthProblem;
  /** In words, for the page to show. */
  reason?: string;
  url?: string;
  transport?: Transport;
  /** When the next attempt is due. */
  retryInMs?: number;
  /** Not retrying by itself: call `reconnect()`. */
  fatal?: boolean;
}

/**
 * A room's recovery after a (re)subscribe, or the server's notice that a
 * room's history was lost. With `recovered: false` publications were
 * missed and cannot be replayed: reload the room's state.
 */
export interface RecoveryEvent {
  room: string;
  recovered: boolean;
  /** Where the room stands now (the end of the replay when recovered). */
  position: Position | null;
  /** Where the client stood before. */
  since: Position | null;
  /** True when the server sent it by itself (a room's history was lost while connected). */
  unsolicited: boolean;
}

/** A publication past position + 1 in a room: some were missed. The server should never cause one. */
export interface GapEvent {
  room: string;
  expected: number;
  offset: number;
  missed: number;
  envelope: Envelope;
}

/** A publication at or below the client's position: dropped. */
export interface DuplicateEvent {
  room: string;
  offset: number;
  position: Position;
  envelope: Envelope;
}

export interface ClientStats {
  /** Gaps seen (see GapEvent); 0 unless the server lost publications. */
  gaps: number;
  /** Publications missed in those gaps. */
  missed: number;
  /** Duplicates dropped. */
  duplicates: number;
  /** Publications received as the replay of a recovery. */
  replayed: number;
  /** Connections made after the first. */
  reconnects: number;
}

/** The handlers `on()` takes, by event name. */
export type HubClientEvents = {
  [K in ServerMessageType]: (envelope: ServerMessage<K>) => void;
} & {
  /** Every envelope received. */
  "*": (envelope: ServerEnvelope) => void;
  state: (state: ConnectionState, detail: StateDetail) => void;
  recovery: (event: RecoveryEvent) => void;
  gap: (event: GapEvent) => void;
  duplicate: (event: DuplicateEvent) => void;
};

export type HubErrorCode =
  /** The server answered with an `error` (`reply` has it). */
  | "server"
  /** `sendQueueLimit` requests already wait for the connection. */
  | "queue_full"
  /** The connection was lost after sending, before the reply: it may or may not have been done. */
  | "disconnected"
  /** No reply within `requestTimeoutMs`: it may or may not have been done. */
  | "timeout"
  /** Not connected and not trying (state "error", not one that waits for a token). */
  | "refused"
  /** `unsubscribe()` came before the subscribe was answered. */
  | "unsubscribed"
  /** `close()` was called. */
  | "closed";

export declare class HubError extends Error {
  readonly name: "HubError";
  readonly code: HubErrorCode;
  /** The server's `error` envelope, for code "server" when it came as one. */
  readonly reply?: ErrorEnvelope;
  constructor(code: HubErrorCode, message: string, extra?: { reply?: ErrorEnvelope });
}

export declare class HubClient {
  /** Connects at once (see HubClientOptions). */
  constructor(options?: HubClientOptions);

  /** The nodes, as WebSocket URLs. */
  readonly urls: readonly string[];
  readonly state: ConnectionState;
  /** Why the state is what it is (for an "error", what to show). */
  readonly detail: StateDetail;
  /** The transport of the link that is up, or null. */
  readonly transport: Transport | null;
  /** The node connected or being connected to. */
  readonly url: string | null;
  /** The rooms joined, kept across reconnects. */
  readonly rooms: ReadonlySet<string>;
  /** From the server's `connected` greeting. */
  readonly connectionId: number | null;
  /** The user the server knows this client as (after `connected`), else the one asked for. */
  readonly user: string | null;
  readonly node: string | null;
  /** SSE only: the session key for POST /send. */
  readonly session: string | null;
  /** Requests waiting for a connection. */
  readonly queued: number;
  readonly stats: Readonly<ClientStats>;
  /** The current WebSocket, if any; closing it acts as a lost connection. */
  readonly socket: WebSocket | null;
  /** The current event stream, in SSE mode. */
  readonly eventSource: EventSource | null;

  /** Where this client stands in a room with history. */
  position(room: string): Position | undefined;
  /** Every room's position. */
  positions(): Record<string, Position>;

  /** Adds a handler; returns a function that removes it. */
  on<K extends keyof HubClientEvents>(type: K, handler: HubClientEvents[K]): () => void;
  /** Envelopes of a type this declaration does not know (a backend's, from POST /publish). */
  on(type: string, handler: (envelope: ServerEnvelope) => void): () => void;

  /**
   * Joins rooms, kept across reconnects (resubscribed with `since`).
   * Resolves with the `subscribed` that covers them, after a reconnect if
   * disconnected now; rejects with the server's refusal (code "server"),
   * and the rooms refused are forgotten.
   */
  subscribe(rooms: string | readonly string[]): Promise<SubscribedEnvelope>;
  /** Leaves rooms; resolves with `unsubscribed`, or null when not connected. */
  unsubscribe(rooms: string | readonly string[]): Promise<UnsubscribedEnvelope | null>;
  /**
   * Publishes a chat message (the sender gets it too, as a `message`).
   * Queued while disconnected; resolves with the `published` ack.
   */
  publish(room: string, payload: ClientPayloads["publish"]): Promise<PublishedEnvelope>;
  /** Best effort, never queued: false when not connected. */
  typing(room: string, typing?: boolean): boolean;
  presence(room: string): Promise<PresenceEnvelope>;
  ping(): Promise<PongEnvelope>;
  /** Any request; resolves with the reply carrying its request_id. */
  request<K extends keyof Replies>(
    type: K,
    fields?: { room?: string; payload?: K extends keyof ClientPayloads ? ClientPayloads[K] : never },
  ): Promise<Replies[K]>;
  request(type: string, fields?: { room?: string; payload?: unknown }): Promise<ServerEnvelope>;

  /**
   * A fresh token for the same user. While connected it is sent as
   * `refresh`: resolves with `refreshed` (the connection then outlives the
   * old token), rejects with the server's refusal (code "server"). In an
   * "error" state with `detail.auth` the client connects again with it at
   * once (resolves with null). Otherwise the next connection uses it
   * (null). For another user, make a new client.
   */
  setToken(token: string): Promise<RefreshedEnvelope | null>;
  /** Connects again now: after an "error" state, or to move to the next URL. */
  reconnect(): void;
  /** Closes for good; what waits is rejected with code "closed". */
  close(): void;
}
