// Uses /client.js the way a page does, against /client.d.ts; run by
// `npm run typecheck` (tsc --noEmit --strict) before the browser tests.
// The @ts-expect-error lines are misuses: tsc fails if one of them
// type-checks, so the declarations cannot go slack unnoticed.
import {
  HubClient,
  HubError,
  type AlertEnvelope,
  type AuthProblem,
  type ConnectionState,
  type RefreshedEnvelope,
  type Position,
  type RecoveryEvent,
  type ServerEnvelope,
  type StateDetail,
  type TelemetryPayload,
} from "../../hub/src/static/client.js";

const hub = new HubClient({
  urls: ["ws://127.0.0.1:8090/ws", "ws://127.0.0.1:8091/ws"],
  user: "ann",
  token: "s3cret",
  transport: "auto",
  sendQueueLimit: 50,
});
new HubClient({ user: "bob" });
new HubClient();

const show = (state: ConnectionState, detail: StateDetail): string =>
  state === "error" ? `error: ${detail.reason ?? "refused"}${detail.fatal ? "" : ` (retry in ${detail.retryInMs} ms)`}` : state;
const off: () => void = hub.on("state", (state, detail) => console.log(show(state, detail)));
off();

// Signed out (401 at the handshake, or 4001 while connected): a fresh token.
const signIn = async (fresh: string): Promise<string> => {
  const problem: AuthProblem | undefined = hub.detail.auth;
  const refreshed: RefreshedEnvelope | null = await hub.setToken(fresh);
  return `${problem ?? "ok"} ${refreshed?.payload.expires_at ?? "reconnecting"} ${hub.detail.local ?? false}`;
};
hub.on("state", (state, detail) => {
  if (state === "error" && detail.auth === "expired" && detail.code === 4001) void signIn("eyJ...");
});
hub.on("refreshed", (m) => m.payload.expires_at?.length);

hub.on("message", (m) => {
  const line: string = `${m.payload.user}: ${m.payload.text} @${m.offset ?? "-"} ${m.timestamp}`;
  console.log(line, m.payload.connection_id === hub.connectionId);
});
hub.on("online_users", (m) => m.payload.users.map((u: string) => u.toUpperCase()));
hub.on("user_left", (m) => m.payload.user.length + m.payload.connection_id);
hub.on("typing", (m) => (m.payload.typing ? m.payload.user : null));

const lastSeq = new Map<string, number>();
const onReading = (p: TelemetryPayload): number => {
  if (p.seq === undefined) return 0;
  const gap = p.seq - (lastSeq.get(p.device_id) ?? p.seq - 1) - 1;
  lastSeq.set(p.device_id, p.seq);
  const celsius: number | undefined = p.fields.temperature;
  console.log(p.tags.name ?? p.device_id, celsius?.toFixed(1), new Date(p.timestamp));
  return gap;
};
hub.on("telemetry", (m) => onReading(m.payload));
hub.on("device_status", (m) => (m.payload.status === "offline" ? m.payload.device_id : ""));
hub.on("alert", (m: AlertEnvelope) => `${m.payload.rule_name}: ${m.payload.field} ${m.payload.value} > ${m.payload.threshold}`);
hub.on("recovery", (r: RecoveryEvent) => {
  if (!r.recovered) console.log(`reload ${r.room} from ${r.position?.offset} (was ${r.since?.offset})`);
});
hub.on("gap", (g) => console.warn(`${g.room}: ${g.missed} missed before ${g.offset}`));
hub.on("duplicate", (d) => d.position.offset >= d.offset);
hub.on("*", (e: ServerEnvelope) => e.type.length + e.timestamp.length);
hub.on("door_opened", (e) => e.payload);

async function chat(): Promise<void> {
  const subscribed = await hub.subscribe(["chat:lobby", "global"]);
  const where: Position | undefined = hub.position("chat:lobby");
  console.log(subscribed.payload.rooms, subscribed.payload.positions["chat:lobby"]?.recovered, where?.epoch);
  try {
    const ack = await hub.publish("chat:lobby", { text: "hello" });
    const offset: number | undefined = ack.payload.offsets["chat:lobby"];
    console.log(offset);
  } catch (e) {
    if (e instanceof HubError && (e.code === "queue_full" || e.code === "disconnected")) console.log(e.message);
    else if (e instanceof HubError && e.code === "server") console.log(e.reply?.payload.message);
  }
  const typed: boolean = hub.typing("chat:lobby", true);
  const who = await hub.presence("chat:lobby");
  console.log(typed, who.payload.users.map((u) => `${u.user} x${u.connections}`));
  const pong = await hub.ping();
  console.log(pong.payload.server_time, hub.stats.gaps + hub.stats.duplicates, hub.queued, hub.transport);
  const left = await hub.unsubscribe("global");
  console.log(left?.payload.rooms, [...hub.rooms], hub.positions());
  const published = await hub.request("publish", { room: "chat:lobby", payload: { text: "again" } });
  console.log(published.payload.offsets);
  const seeded = await hub.request("history", { room: "device:x", payload: { limit: 60 } });
  console.log(seeded.payload.publications.length, seeded.payload.position.offset);
  const sent = await hub.request("command", { payload: { device_id: "x", name: "reboot", args: { delay: 5 } } });
  console.log(sent.payload.command_id, sent.payload.topic);
  hub.reconnect();
  hub.close();
}
void chat();

// Misuses tsc must refuse:
// @ts-expect-error a chat message is { text }, not a string
void hub.publish("chat:lobby", "hello");
// @ts-expect-error no such transport
new HubClient({ transport: "carrier-pigeon" });
// @ts-expect-error telemetry values are under payload.fields
hub.on("telemetry", (m) => m.payload.temperature);
// @ts-expect-error stats are read-only
hub.stats.gaps = 0;
// @ts-expect-error setToken takes the token
void hub.setToken();
// @ts-expect-error an AuthProblem is one of three
const problem: AuthProblem = "forgotten";
// @ts-expect-error a command is answered with command_sent, which has no offsets
void hub.request("command", { payload: { device_id: "x", name: "reboot" } }).then((r) => r.payload.offsets);
// @ts-expect-error refresh answers refreshed, not pong
void hub.request("refresh", { payload: { token: "eyJ..." } }).then((r) => r.payload.server_time);
