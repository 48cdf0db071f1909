// End-to-end tests of the hub server's pages in Debian's headless Chromium,
// driven by playwright-core. The tests start and stop the server themselves
// (on 127.0.0.1, random port) and every wait is bounded.
//
//   cargo build -p sabai-hub
//   cd tests/browser && npm install && npm run typecheck && npm test
//
// HUB_SERVER overrides the server binary; CHROMIUM the browser. The hub
// server has permessage-deflate on by default, and Chromium offers it, so
// every WebSocket here runs compressed; one test checks that it is.
//
// More nodes: `server([...flags])` starts one with any flags (for example
// a shared engine's), and the pages take `?urls=ws://a/ws,ws://b/ws` (the
// nodes to move between) and `?transport=sse`; `restart(node)` brings a
// stopped node back on its port with its flags. `twoNodes(t)` starts a
// redis-server of the test's own (REDIS_SERVER overrides the binary) and
// two nodes on it, all stopped when the test ends. `jwt(claims)` signs an
// HS256 token with SECRET, the secret of the servers started with
// `--jwt-secret`.
import { test as nodeTest, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

// Each test is bounded (2 min at most; most take seconds); the whole file
// by package.json's --test-timeout and run.sh's 10 min.
const test = (name, fn) => nodeTest(name, { timeout: 120000 }, fn);

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const serverBin = process.env.HUB_SERVER || join(root, "target/debug/sabai-hub");
const docs = join(root, "docs");
mkdirSync(docs, { recursive: true });

// Starts the hub server with these flags; resolves once it printed its URL.
// `--addr` defaults to a free port of 127.0.0.1.
function startServer(args = []) {
  const flags = args.includes("--addr") ? args : ["--addr", "127.0.0.1:0", ...args];
  const child = spawn(serverBin, flags, { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start in 10 s")), 10000);
    const started = { child, args, out: "" };
    child.stdout.on("data", (chunk) => {
      started.out += chunk;
      const match = started.out.match(/listening on ((https?):\/\/127\.0\.0\.1:(\d+))\//);
      if (match && !started.url) {
        clearTimeout(timer);
        const ws = match[2] === "https" ? "wss" : "ws";
        Object.assign(started, { url: match[1], port: Number(match[3]), ws: `${ws}://127.0.0.1:${match[3]}/ws` });
        resolvePromise(started);
      }
    });
    child.on("exit", (code) => reject(new Error(`server exited early with ${code}`)));
  });
}

// Stops a server we started (by its own handle), waiting at most 8 s.
function stopServer(server, signal = "SIGTERM") {
  return new Promise((resolvePromise) => {
    if (server.child.exitCode !== null || server.child.signalCode !== null) return resolvePromise();
    const timer = setTimeout(() => server.child.kill("SIGKILL"), 8000);
    server.child.once("exit", () => {
      clearTimeout(timer);
      resolvePromise();
    });
    server.child.kill(signal);
  });
}

let context;
let profile;
const servers = [];

before(async () => {
  profile = mkdtempSync(join(tmpdir(), "sabai-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1100, height: 720 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-quic",
      "--no-first-run",
      // A name the servers do not know as theirs (the Origin test).
      "--host-resolver-rules=MAP hub.example 127.0.0.1",
    ],
  });
  context.setDefaultTimeout(15000);
});

after(async () => {
  await context?.close();
  for (const server of servers) await stopServer(server, "SIGKILL");
  rmSync(profile, { recursive: true, force: true });
});

// A server for one test, stopped at the end of the run at the latest.
async function server(args = []) {
  const started = await startServer(args);
  servers.push(started);
  return started;
}

// The same node again, after it was stopped: same port, same flags.
async function restart(node) {
  const args = node.args.filter((arg, i) => arg !== "--addr" && node.args[i - 1] !== "--addr");
  const again = await server(["--addr", `127.0.0.1:${node.port}`, ...args]);
  assert.equal(again.port, node.port);
  return again;
}

// A loopback port nothing listens on now (for nodes that must know each
// other's address before they start).
function freePort() {
  return new Promise((resolvePromise, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolvePromise(port));
    });
  });
}

// A redis-server of one test (persistence off, a free port); `stop()`
// ends it by its own PID. Fails, never skips, without a redis-server.
async function redisServer() {
  const bin = process.env.REDIS_SERVER || "/usr/bin/redis-server";
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "sabai-redis-"));
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", dir];
  const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  const redis = { child, port, url: `redis://127.0.0.1:${port}/` };
  redis.stop = async () => {
    await stopServer(redis, "SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  };
  await new Promise((resolvePromise, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`redis-server did not start in 10 s:\n${out}`)), 10000);
    const read = (chunk) => {
      out += chunk;
      if (/Ready to accept connections/.test(out)) {
        clearTimeout(timer);
        resolvePromise();
      }
    };
    child.stdout.on("data", read);
    child.stderr.on("data", read);
    child.on("error", (e) => reject(new Error(`cannot run ${bin}: ${e.message} (install redis-server, or set REDIS_SERVER)`)));
    child.on("exit", (code) => reject(new Error(`redis-server exited with ${code}:\n${out}`)));
  });
  return redis;
}

// HS256 tokens (RFC 7519) for the servers started with --jwt-secret SECRET.
const SECRET = "browser-tests-secret-at-least-32-bytes";
const nowSecs = () => Math.floor(Date.now() / 1000);
function jwt(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const signed = `${part({ alg: "HS256", typ: "JWT" })}.${part({ exp: nowSecs() + 600, ...claims })}`;
  return `${signed}.${createHmac("sha256", SECRET).update(signed).digest("base64url")}`;
}

// A chat page joined to a room, its client connected and in the room.
async function openChat(url, name, room = "lobby", query = "") {
  const page = await context.newPage();
  await page.goto(`${url}/chat?name=${name}&room=${room}${query}`);
  await page.click("#join button");
  await page.locator("#state[data-state=open]").waitFor();
  await page.locator("#online li", { hasText: name }).waitFor();
  return page;
}

// Types a line into a chat page and sends it.
async function say(page, text) {
  await page.locator("#text").fill(text);
  await page.press("#text", "Enter");
}

// A dashboard page, connected, with a reading on every one of the five tiles.
async function openDashboard(url, query = "") {
  const page = await context.newPage();
  await page.goto(`${url}/dashboard${query}`);
  await page.locator("#state[data-state=open]").waitFor();
  // A device that the simulator takes offline (5-14 s) gets its tile, showing
  // "–", from the status message before its first reading: wait for all five.
  await page.waitForFunction(
    () => {
      const tiles = [...document.querySelectorAll(".tile")];
      return tiles.length >= 5 && tiles.every((t) => t.querySelector(".temperature").textContent !== "–");
    },
    null,
    { timeout: 30000 },
  );
  return page;
}

// Starts recording the client's own events in the page (window.seen).
const watch = (page) =>
  page.evaluate(() => {
    window.seen = { recovery: [], gap: [], duplicate: [] };
    for (const kind of Object.keys(window.seen)) window.hub.on(kind, (e) => window.seen[kind].push({ ...e, envelope: undefined }));
  });

// What the page's client saw: its counters and recorded events.
const clientView = (page) => page.evaluate(() => ({ stats: { ...window.hub.stats }, seen: window.seen, transport: window.hub.transport }));

// The temperature texts of all tiles, by device.
const readings = (page) =>
  page.evaluate(() =>
    Object.fromEntries([...document.querySelectorAll(".tile")].map((t) => [t.dataset.device, t.querySelector(".temperature").textContent])),
  );

// The last seq of every tile, by device.
const seqs = (page) =>
  page.evaluate(() => Object.fromEntries([...document.querySelectorAll(".tile")].map((t) => [t.dataset.device, Number(t.dataset.seq || 0)])));

// Waits until every device's seq is past `floor[device] + by`.
const seqsPast = (page, floor, by, timeout = 30000) =>
  page.waitForFunction(
    ({ floor, by }) =>
      Object.entries(floor).every(([device, seq]) => Number(document.querySelector(`.tile[data-device="${device}"]`)?.dataset.seq || 0) >= seq + by),
    { floor, by },
    { timeout },
  );

// An alert as the simulator shapes it (docs/protocol.md).
const alert = (rule, device = "office") => ({
  alert_id: `test-${Date.now()}`,
  device_id: device,
  rule_name: rule,
  severity: "warning",
  field: "temperature",
  value: 31.5,
  threshold: 30,
  timestamp: new Date().toISOString(),
});

async function publish(url, body) {
  const response = await fetch(`${url}/publish`, { method: "POST", body: JSON.stringify(body) });
  assert.equal(response.status, 200, await response.clone().text());
  return response.json();
}

test("two chat pages see each other join and exchange a message", async () => {
  const { url } = await server(["--no-simulator"]);
  const ann = await openChat(url, "ann");

  const bob = await context.newPage();
  await bob.goto(`${url}/chat`);
  await bob.fill("#name", "bob");
  await bob.fill("#room", "lobby");
  await bob.click("#join button");
  await bob.locator("#state[data-state=open]").waitFor();
  // bob's list is the whole one, sent on joining (online_users).
  await bob.waitForFunction(() => [...document.querySelectorAll("#online li")].map((l) => l.textContent).join() === "ann,bob");

  // ann's list follows the deltas: bob joins.
  await ann.locator("#log li.system", { hasText: "bob joined" }).waitFor();
  await ann.locator("#online li", { hasText: "bob" }).waitFor();
  assert.deepEqual(await ann.locator("#online li").allTextContents(), ["ann", "bob"]);

  // bob types (ann sees it), then sends.
  await bob.locator("#text").pressSequentially("hello from bob");
  await ann.locator("#typing", { hasText: "bob typing" }).waitFor();
  await bob.press("#text", "Enter");
  await ann.locator("#log li", { hasText: "hello from bob" }).waitFor();
  // bob's own line is acknowledged and shown once.
  await bob.locator("#log li.mine[data-status=sent]", { hasText: "hello from bob" }).waitFor();
  assert.equal(await bob.locator("#log li", { hasText: "hello from bob" }).count(), 1);
  await say(ann, "hi bob");
  await bob.locator("#log li", { hasText: "hi bob" }).waitFor();
  await ann.locator("#log li.mine[data-status=sent]", { hasText: "hi bob" }).waitFor();
  // Offsets: the room's history numbers them 1 and 2, on both pages.
  assert.deepEqual(await ann.locator("#log li[data-offset]").evaluateAll((l) => l.map((li) => li.dataset.offset)), ["1", "2"]);
  await ann.screenshot({ path: join(docs, "chat.png") });

  // bob leaves: ann sees it and the list shrinks.
  await bob.close();
  await ann.locator("#log li.system", { hasText: "bob left" }).waitFor();
  await ann.waitForFunction(() => [...document.querySelectorAll("#online li")].map((l) => l.textContent).join() === "ann");
  await ann.close();
});

test("the dashboard shows telemetry values changing, their seq, and alerts", async () => {
  const { url } = await server([]);
  const page = await openDashboard(url);
  const first = await readings(page);
  assert.ok(Object.values(first).every((v) => /^-?\d+\.\d$/.test(v)), JSON.stringify(first));
  // Names from the readings' tags.
  assert.ok((await page.locator(".tile h3").allTextContents()).includes("Greenhouse north"));
  // Values move: within a few seconds some tile shows another value.
  await page.waitForFunction(
    (before) => [...document.querySelectorAll(".tile")].some((t) => t.querySelector(".temperature").textContent !== before[t.dataset.device]),
    first,
  );
  // Every tile shows its last seq, and none was missed. A device can be
  // offline (5-14 s) with only history's reading on its tile, which has no
  // live seq yet: its first reading after coming back sets it.
  await page.waitForFunction(() => [...document.querySelectorAll(".tile")].every((t) => Number(t.dataset.seq || 0) >= 1), null, {
    timeout: 30000,
  });
  assert.match(await page.locator(".tile .seq").first().textContent(), /^seq \d+$/);
  assert.equal(await page.locator("#tiles").getAttribute("data-gaps"), "0");
  // A backend's POST /publish reaches the page as an alert.
  const { offsets } = await publish(url, { room: "global", type: "alert", payload: alert("door open") });
  assert.equal(typeof offsets.global, "number");
  await page.locator("#alerts li", { hasText: "Office: door open (temperature 31.5, threshold 30)" }).waitFor();
  await page.screenshot({ path: join(docs, "dashboard.png") });
  await page.close();
});

test("a dashboard whose connection drops recovers what it missed: seq goes on with no gap", async () => {
  const { url } = await server([]);
  const page = await openDashboard(url);
  await watch(page);
  const before = await seqs(page);

  // The page loses its WebSocket; the server keeps publishing, and a
  // backend publishes while the page is away.
  await page.evaluate(() => window.hub.socket.close());
  await page.locator("#state[data-state=reconnecting]").waitFor();
  await publish(url, { room: "global", type: "alert", payload: alert("while away") });
  await page.locator("#state[data-state=open]").waitFor({ timeout: 10000 });

  // The alert came in the replay, once; readings go on past the outage.
  await page.locator("#alerts li", { hasText: "while away" }).waitFor();
  await seqsPast(page, before, 3);
  assert.equal(await page.locator("#alerts li", { hasText: "while away" }).count(), 1);
  assert.equal(await page.locator("#tiles").getAttribute("data-gaps"), "0");
  assert.deepEqual(await page.locator(".tile").evaluateAll((t) => t.map((el) => el.dataset.gaps)), ["0", "0", "0", "0", "0"]);
  const { stats, seen } = await clientView(page);
  assert.deepEqual(
    seen.recovery.map((r) => [r.room, r.recovered]),
    [["global", true]],
  );
  assert.equal(seen.recovery[0].since.epoch, seen.recovery[0].position.epoch);
  assert.ok(stats.replayed >= 1, `replayed ${stats.replayed}`);
  assert.deepEqual([stats.gaps, stats.duplicates, stats.reconnects], [0, 0, 1]);
  assert.equal(await page.locator("#notice").isHidden(), true);
  await page.close();
});

test("after the server is killed and restarted the page reconnects, says what was lost, and resumes", async () => {
  const first = await server([]);
  const page = await openDashboard(first.url);
  await watch(page);

  await stopServer(first, "SIGKILL");
  await page.locator("#state[data-state=reconnecting]").waitFor();
  const frozen = await readings(page);

  // Same port, new process: the page's backoff (1 s, 2 s, 4 s…) finds it.
  const second = await restart(first);
  await page.locator("#state[data-state=open]").waitFor({ timeout: 30000 });
  // The memory engine's history died with the process (a new epoch): the
  // client is told recovered: false, and the page says so.
  await page.locator("#notice", { hasText: "could not be recovered" }).waitFor();
  const { stats, seen } = await clientView(page);
  assert.deepEqual(
    seen.recovery.map((r) => [r.room, r.recovered]),
    [["global", false]],
  );
  assert.notEqual(seen.recovery[0].position.epoch, seen.recovery[0].since.epoch);
  // Telemetry flows again, so the page subscribed anew.
  await page.waitForFunction(
    (before) => [...document.querySelectorAll(".tile")].some((t) => t.querySelector(".temperature").textContent !== before[t.dataset.device]),
    frozen,
  );
  // The restarted simulator counts seq from 1 again: not a gap, not a duplicate.
  assert.equal(await page.locator("#tiles").getAttribute("data-gaps"), "0");
  assert.deepEqual([stats.gaps, stats.duplicates], [0, 0]);
  const rooms = await (await fetch(`${second.url}/rooms`)).json();
  assert.deepEqual(rooms.rooms, [{ room: "global", members: 1, cluster: { users: 1, connections: 1 } }]);

  // SIGTERM: the server drains (1012) and exits cleanly; the page tries
  // again at once (no backoff), finds nobody, and goes on trying.
  await page.evaluate(() => {
    window.states = [];
    window.hub.on("state", (state, detail) => window.states.push([state, detail.code ?? null, detail.retryInMs ?? null]));
  });
  await stopServer(second, "SIGTERM");
  assert.equal(second.child.exitCode, 0);
  assert.match(second.out, /draining: closing 1 connections with 1012\n/);
  await page.locator("#state[data-state=reconnecting]").waitFor();
  const [drained] = await page.evaluate(() => window.states);
  assert.deepEqual(drained.slice(0, 2), ["reconnecting", 1012]);
  assert.ok(drained[2] < 200, `retry in ${drained[2]} ms after 1012`);
  await page.close();
});

test("chat lines typed while the server is down wait as pending, then go once each, in order", async () => {
  const first = await server(["--no-simulator"]);
  const ann = await openChat(first.url, "ann");
  await say(ann, "before the outage");
  await ann.locator("#log li.mine[data-status=sent]", { hasText: "before the outage" }).waitFor();
  await watch(ann);

  await stopServer(first, "SIGKILL");
  await ann.locator("#state[data-state=reconnecting]").waitFor();
  const texts = ["first while down", "second while down", "third while down"];
  for (const text of texts) await say(ann, text);
  assert.deepEqual(
    await ann.locator("#log li.mine[data-status=pending]").evaluateAll((l) => l.map((li) => li.childNodes[1].textContent)),
    texts,
  );
  assert.equal(await ann.evaluate(() => window.hub.queued), 3);

  const second = await restart(first);
  await ann.locator("#state[data-state=open]").waitFor({ timeout: 30000 });
  // Acknowledged: every line is sent, none failed, each shown once.
  await ann.waitForFunction(() => document.querySelectorAll("#log li.mine[data-status=sent]").length === 4, null, { timeout: 10000 });
  const mine = await ann.locator("#log li.mine").evaluateAll((l) => l.map((li) => [li.childNodes[1].textContent, li.dataset.status]));
  assert.deepEqual(mine, [["before the outage", "sent"], ...texts.map((t) => [t, "sent"])]);
  for (const text of texts) assert.equal(await ann.locator("#log li", { hasText: text }).count(), 1, text);
  // A new process lost the room's history: the page says so (recovered: false).
  await ann.locator("#notice", { hasText: "could not be recovered" }).waitFor();
  const { stats, seen } = await clientView(ann);
  assert.deepEqual(
    seen.recovery.map((r) => [r.room, r.recovered]),
    [["chat:lobby", false]],
  );
  assert.deepEqual([stats.gaps, stats.duplicates, await ann.evaluate(() => window.hub.queued)], [0, 0, 0]);

  // The server got each once, in order: the room's new history, replayed
  // from its start to a raw socket, holds exactly these three.
  const { epoch, offset } = await ann.evaluate(() => window.hub.position("chat:lobby"));
  assert.equal(offset, 3);
  const probe = await context.newPage();
  await probe.goto(`${second.url}/`);
  const history = await probe.evaluate(
    ({ wsUrl, epoch, count }) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`${wsUrl}?user=auditor`);
        const got = [];
        const timer = setTimeout(() => reject(new Error(`history: ${JSON.stringify(got)}`)), 10000);
        ws.onopen = () =>
          ws.send(JSON.stringify({ type: "subscribe", request_id: "h", payload: { rooms: ["chat:lobby"], since: { "chat:lobby": { offset: 0, epoch } } } }));
        ws.onmessage = (event) => {
          const m = JSON.parse(event.data);
          if (m.type === "subscribed") got.push(`recovered: ${m.payload.recovered}`);
          if (m.type === "message") got.push(`${m.offset} ${m.payload.user}: ${m.payload.text}`);
          if (got.length === count + 1) {
            clearTimeout(timer);
            ws.close();
            resolve(got);
          }
        };
      }),
    { wsUrl: second.ws, epoch, count: 3 },
  );
  assert.deepEqual(history, ["recovered: true", ...texts.map((t, i) => `${i + 1} ann: ${t}`)]);
  await probe.close();
  await ann.close();
});

test("a room the server refuses leaves the chat usable", async () => {
  const { url } = await server(["--no-simulator"]);
  const page = await context.newPage();
  // The form's maxlength stops typing it, not a link: the server refuses it.
  await page.goto(`${url}/chat?name=ann&room=${"x".repeat(65)}`);
  await page.click("#join button");
  await page.locator("#join-error", { hasText: "Could not join" }).waitFor();
  assert.match(await page.locator("#join-error").textContent(), /bad room id/);
  assert.equal(await page.locator("#chat").isHidden(), true);
  assert.deepEqual(await page.evaluate(() => [...window.hub.rooms]), []);
  assert.equal(await page.locator("#state").getAttribute("data-state"), "open");

  // Another room works, on the same connection.
  await page.fill("#room", "lobby");
  await page.click("#join button");
  await page.locator("#online li", { hasText: "ann" }).waitFor();
  await say(page, "still here");
  await page.locator("#log li.mine[data-status=sent]", { hasText: "still here" }).waitFor();
  // And after a lost connection only that room is joined again.
  await watch(page);
  await page.evaluate(() => window.hub.socket.close());
  await page.locator("#state[data-state=reconnecting]").waitFor();
  await page.locator("#state[data-state=open]").waitFor({ timeout: 10000 });
  await say(page, "and still");
  await page.locator("#log li.mine[data-status=sent]", { hasText: "and still" }).waitFor();
  const { seen } = await clientView(page);
  assert.deepEqual(
    seen.recovery.map((r) => [r.room, r.recovered]),
    [["chat:lobby", true]],
  );
  assert.equal(await page.locator("#log li.system", { hasText: "error" }).count(), 0);
  await page.close();
});

test("every publish settles: a bounded queue while offline, the server's refusals, the ack", async () => {
  const node = await server(["--no-simulator"]);
  const page = await context.newPage();
  await page.goto(`${node.url}/`);
  const result = await page.evaluate(
    async ({ dead, live }) => {
      const { HubClient } = await import("/client.js");
      // Nothing listens there: what is sent waits, up to sendQueueLimit.
      const offline = new HubClient({ urls: [dead], sendQueueLimit: 2 });
      const settled = [];
      const track = (p) => p.then((r) => settled.push(`ok ${r.type}`), (e) => settled.push(`${e.name} ${e.code}`));
      const waiting = [track(offline.publish("chat:q", { text: "a" })), track(offline.publish("chat:q", { text: "b" }))];
      await track(offline.publish("chat:q", { text: "c" })); // refused at once
      const queued = offline.queued;
      const typing = offline.typing("chat:q", true); // best effort: not queued
      offline.close();
      await Promise.all(waiting);
      // Connected: a refusal rejects with the server's words; an ack resolves.
      const online = new HubClient({ urls: [live], user: "zed" });
      const refused = await online.publish("chat:elsewhere", { text: "x" }).then(
        () => "sent",
        (e) => `${e.code}: ${e.message}`,
      );
      await online.subscribe("chat:q");
      const ack = await online.publish("chat:q", { text: "y" });
      online.close();
      return { settled, queued, typing, refused, offsets: ack.payload.offsets, requestId: typeof ack.request_id };
    },
    { dead: "ws://127.0.0.1:1/ws", live: node.ws },
  );
  assert.deepEqual(result.settled, ["HubError queue_full", "HubError closed", "HubError closed"]);
  assert.deepEqual([result.queued, result.typing], [2, false]);
  assert.match(result.refused, /^server: publish refused: subscribe to "chat:elsewhere" first/);
  assert.deepEqual([result.offsets, result.requestId], [{ "chat:q": 1 }, "string"]);
  await page.close();
});

test("a tab over the per-user limit (close 4029) shows why and does not retry at once", async () => {
  // The limit counts verified users only: ann is the sub of a token.
  const { url } = await server(["--no-simulator", "--max-per-user", "1", "--jwt-secret", SECRET]);
  const token = jwt({ sub: "ann" });
  const ann = await openChat(url, "ann", "lobby", `&token=${token}`);
  const again = await context.newPage();
  await again.goto(`${url}/chat?room=lobby&token=${token}`);
  await again.click("#join button");
  await again.locator("#state[data-state=error]").waitFor();
  assert.match(await again.locator("#state").textContent(), /too many connections/i);
  const detail = await again.evaluate(() => window.hub.detail);
  assert.deepEqual([detail.code, detail.retryInMs], [4029, 30000]);
  assert.equal(await ann.locator("#state").getAttribute("data-state"), "open");
  await again.close();
  await ann.close();
});

test("a frozen server is found out by the heartbeat; the client reconnects and recovers", async () => {
  const node = await server([]);
  const page = await context.newPage();
  await page.goto(`${node.url}/`);
  await page.evaluate(async (wsUrl) => {
    const { HubClient } = await import("/client.js");
    window.hub = new HubClient({ urls: [wsUrl], heartbeatMs: 500, pongTimeoutMs: 1000, connectTimeoutMs: 3000 });
    window.states = [];
    window.hub.on("state", (state, detail) => window.states.push([state, detail.code ?? null, detail.local ?? false]));
    await window.hub.subscribe("global");
  }, node.ws);
  await watch(page);
  await page.waitForFunction(() => (window.hub.position("global")?.offset ?? 0) >= 5, null, { timeout: 10000 });
  // SIGSTOP: the TCP connection stays up, nothing answers.
  node.child.kill("SIGSTOP");
  try {
    // The client's own verdict: 4002 as the server's heartbeat timeout, marked local.
    await page.waitForFunction(() => window.states.some(([state, code, local]) => state === "reconnecting" && code === 4002 && local), null, {
      timeout: 5000,
    });
  } finally {
    node.child.kill("SIGCONT");
  }
  await page.waitForFunction(() => window.hub.state === "open" && window.seen.recovery.length > 0, null, { timeout: 20000 });
  const offset = await page.evaluate(() => window.hub.position("global").offset);
  await page.waitForFunction((at) => window.hub.position("global").offset >= at + 5, offset, { timeout: 10000 });
  const { stats, seen } = await clientView(page);
  assert.deepEqual(
    seen.recovery.map((r) => [r.room, r.recovered]),
    [["global", true]],
  );
  assert.deepEqual([stats.gaps, stats.duplicates], [0, 0]);
  await page.evaluate(() => window.hub.close());
  await page.close();
});

test("Chromium agrees to permessage-deflate; large messages arrive intact both ways", async () => {
  const { url } = await server(["--max-message", "262144"]);
  const page = await context.newPage();
  await page.goto(`${url}/`);
  const stats = async () => (await fetch(`${url}/stats`)).json();

  // Two raw sockets from the page: ann publishes, both are in the room.
  const agreed = await page.evaluate(async (wsUrl) => {
    const open = (user) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`${wsUrl}?user=${user}`);
        ws.inbox = [];
        ws.onmessage = (event) => ws.inbox.push(JSON.parse(event.data));
        ws.onopen = () => resolve(ws);
        ws.onerror = () => reject(new Error(`${user} could not connect`));
        setTimeout(() => reject(new Error(`${user}: no open in 10 s`)), 10000);
      });
    window.socks = [await open("ann"), await open("bob")];
    for (const ws of window.socks) {
      ws.send(JSON.stringify({ type: "subscribe", payload: { rooms: ["chat:big", "global"] } }));
    }
    return window.socks.map((ws) => ws.extensions);
  }, `${url.replace("http://", "ws://")}/ws`);
  // RFC 7692 §7.1.1.1: the hub names server_no_context_takeover unasked.
  for (const extensions of agreed) {
    assert.match(extensions, /^permessage-deflate\b/, `extensions: ${extensions}`);
    assert.match(extensions, /server_no_context_takeover/);
  }
  await page.waitForFunction(() => window.socks.every((ws) => ws.inbox.some((m) => m.type === "subscribed")));

  // Fan-out telemetry from the simulator, compressed once for both sockets.
  await page.waitForFunction(() =>
    window.socks.every((ws) => ws.inbox.some((m) => m.type === "telemetry" && typeof m.payload.fields?.temperature === "number")),
  );

  const before = (await stats()).bytes_out;
  // 64 KiB of JSON from the browser (compressed by Chromium, inflated by
  // sabai), fanned out to both sockets (compressed by sabai, inflated by Chromium).
  const size = await page.evaluate(() => {
    const rows = JSON.stringify(Array.from({ length: 1500 }, (_, i) => ({ i, sensor: `s${i % 7}`, t: 20 + (i % 50) / 10 })));
    window.big = rows.repeat(Math.ceil(65536 / rows.length));
    window.socks[0].send(JSON.stringify({ type: "publish", room: "chat:big", payload: { text: window.big } }));
    return window.big.length;
  });
  assert.ok(size >= 65536);
  await page
    .waitForFunction(() => window.socks.every((ws) => ws.inbox.some((m) => m.type === "message" && m.payload.text === window.big)))
    .catch(async (error) => {
      // What each socket got, and what the server counted, to tell a lost
      // message from a slow one.
      const view = await page.evaluate(() =>
        window.socks.map((ws) => ({
          readyState: ws.readyState,
          bufferedAmount: ws.bufferedAmount,
          got: ws.inbox.filter((m) => m.type !== "telemetry").map((m) => `${m.type} ${JSON.stringify(m).length} B`),
        })),
      );
      error.message += `\nsockets: ${JSON.stringify(view)}\nserver: ${JSON.stringify(await stats())}`;
      throw error;
    });

  // And a large backend event, POST /publish to `global`, to both sockets.
  const batch = Array.from({ length: 1200 }, (_, i) => ({ device: `greenhouse-${i % 4}`, temperature: 20 + (i % 90) / 10 }));
  const { offsets } = await publish(url, { room: "global", type: "telemetry", payload: { batch } });
  assert.equal(typeof offsets.global, "number");
  const received = await page.waitForFunction(() => {
    const batches = window.socks.map((ws) => ws.inbox.find((m) => m.type === "telemetry" && m.payload.batch));
    return batches.every(Boolean) && batches.map((m) => JSON.stringify(m.payload.batch));
  });
  for (const got of await received.jsonValue()) assert.equal(got, JSON.stringify(batch));

  // What went out was compressed: far less than the plain frames' bytes.
  const plain = 2 * (size + JSON.stringify(batch).length);
  const sent = (await stats()).bytes_out - before;
  assert.ok(sent < plain / 4, `${sent} bytes out for ${plain} bytes of messages`);
  await page.close();
});

// ---- Server-Sent Events ---------------------------------------------------

test("over SSE the dashboard and the chat work, and a dropped stream recovers", async () => {
  const { url } = await server([]);
  const dash = await openDashboard(url, "?transport=sse");
  assert.equal(await dash.locator("#state").textContent(), "open (SSE)");
  await watch(dash);
  const before = await seqs(dash);
  // The stream ends under the page: it reconnects with its last event id.
  await dash.evaluate(() => {
    window.hub.eventSource.close();
    window.hub.eventSource.dispatchEvent(new Event("error"));
  });
  await seqsPast(dash, before, 3);
  const view = await clientView(dash);
  assert.equal(view.transport, "sse");
  assert.deepEqual(
    view.seen.recovery.map((r) => [r.room, r.recovered]),
    [["global", true]],
  );
  assert.deepEqual([view.stats.gaps, view.stats.duplicates], [0, 0]);
  assert.equal(await dash.locator("#tiles").getAttribute("data-gaps"), "0");
  await dash.close();

  // ann on SSE (POST /send), bob on a WebSocket: each sees the other.
  const ann = await openChat(url, "ann", "lobby", "&transport=sse");
  const bob = await openChat(url, "bob");
  await ann.locator("#online li", { hasText: "bob" }).waitFor();
  await say(ann, "from the event stream");
  await bob.locator("#log li", { hasText: "from the event stream" }).waitFor();
  await ann.locator("#log li.mine[data-status=sent]", { hasText: "from the event stream" }).waitFor();
  await say(bob, "from a websocket");
  await ann.locator("#log li", { hasText: "from a websocket" }).waitFor();
  assert.equal(await ann.evaluate(() => window.hub.transport), "sse");
  await ann.close();
  await bob.close();
});

test("with WebSocket blocked the client falls back to SSE by itself", async () => {
  const { url } = await server([]);
  const page = await context.newPage();
  // As behind a proxy that drops upgrades: every handshake gets a 404.
  await page.addInitScript(() => {
    const Real = window.WebSocket;
    window.WebSocket = class extends Real {
      constructor(url, protocols) {
        super(String(url).replace("/ws", "/no-websocket-here"), protocols);
      }
    };
  });
  await openDashboardOn(page, url);
  assert.equal(await page.evaluate(() => window.hub.transport), "sse");
  assert.equal(await page.locator("#tiles").getAttribute("data-gaps"), "0");
  await page.close();
});

test("a refused handshake shows as an error state the page can display; the shared --token goes as a subprotocol", async () => {
  const { url } = await server(["--token", "s3cret", "--no-simulator"]);
  const page = await context.newPage();
  await page.goto(`${url}/dashboard`);
  await page.locator("#state[data-state=error]").waitFor();
  // The client learns the status over plain HTTP (GET /events), with the server's words.
  assert.match(await page.locator("#state").textContent(), /401: missing or wrong token/);
  assert.equal(await page.evaluate(() => window.hub.detail.auth), "required");
  await page.locator("#auth-notice", { hasText: "?token=" }).waitFor();
  // Waiting for a token, a request waits too (it is not refused).
  const pinging = page.evaluate(() => window.hub.ping().then((r) => r.type, (e) => e.code));
  assert.equal(await page.evaluate(() => window.hub.queued), 1);
  await page.evaluate(() => window.hub.setToken("s3cret"));
  assert.equal(await pinging, "pong");
  await page.locator("#state[data-state=open]").waitFor();
  await page.locator("#auth-notice").waitFor({ state: "hidden" });
  // From the URL, on a WebSocket: not in the socket's URL, but offered as a subprotocol.
  await page.goto(`${url}/dashboard?token=s3cret`);
  await page.locator("#state[data-state=open]").waitFor();
  const socket = await page.evaluate(() => ({ url: window.hub.socket.url, protocol: window.hub.socket.protocol }));
  assert.doesNotMatch(socket.url, /token|s3cret/);
  assert.equal(socket.protocol, "sabai.v1");
  // A wrong one: refused, saying so.
  await page.goto(`${url}/dashboard?token=wrong`);
  await page.locator("#state[data-state=error]").waitFor();
  assert.equal(await page.evaluate(() => window.hub.detail.auth), "refused");
  await page.close();
});

test("a page on an origin the server does not accept shows the 403; --public-origin admits it", async () => {
  // hub.example resolves to 127.0.0.1 in this browser (--host-resolver-rules):
  // the page is the server's own, reached by a name the server does not know.
  const port = await freePort();
  const first = await server(["--no-simulator", "--addr", `127.0.0.1:${port}`]);
  const page = await context.newPage();
  await page.goto(`http://hub.example:${port}/dashboard`);
  await page.locator("#state[data-state=error]").waitFor();
  assert.match(await page.locator("#state").textContent(), /refused \(403 this page's origin is not allowed\): origin not allowed/);
  assert.deepEqual(await page.evaluate(() => [window.hub.detail.status, window.hub.detail.fatal, window.hub.detail.auth]), [403, true, undefined]);
  await stopServer(first);
  await server(["--no-simulator", "--addr", `127.0.0.1:${port}`, "--public-origin", `http://hub.example:${port}`]);
  await page.reload();
  await page.locator("#state[data-state=open]").waitFor();
  await page.close();
});

test("the chat's room field refuses what the server would (its pattern is valid under the v flag)", async () => {
  const { url } = await server(["--no-simulator"]);
  const page = await context.newPage();
  await page.goto(`${url}/chat?name=ann`);
  // Chromium compiles `pattern` with the v flag; an invalid one checks nothing.
  const pattern = await page.locator("#room").getAttribute("pattern");
  assert.doesNotThrow(() => new RegExp(`^(?:${pattern})$`, "v"), pattern);
  const validity = (room) =>
    page.evaluate((room) => {
      const input = document.getElementById("room");
      input.value = room;
      return input.validity.valid;
    }, room);
  assert.deepEqual(
    [await validity("my room"), await validity("a/b"), await validity("ห้อง"), await validity("team-1_b"), await validity("lobby")],
    [false, false, false, true, true],
  );
  // The form itself refuses "my room": no join, no subscribe.
  await page.fill("#room", "my room");
  await page.click("#join button");
  assert.equal(await page.locator("#room").evaluate((input) => input.matches(":invalid")), true);
  assert.equal(await page.locator("#chat").isHidden(), true);
  assert.equal(await page.evaluate(() => window.hub === undefined), true);
  await page.fill("#room", "team-1_b");
  await page.click("#join button");
  await page.locator("#online li", { hasText: "ann" }).waitFor();
  assert.equal(await page.locator("#title").textContent(), "#team-1_b");
  await page.close();
});

// ---- JWT ----------------------------------------------------------------

test("with JWT a page is its token's sub (a Thai name intact); without a token it shows the 401 and signs in from the box", async () => {
  const { url } = await server(["--no-simulator", "--jwt-secret", SECRET]);
  const thai = "\u0e25\u0e39\u0e01\u0e04\u0e49\u0e32"; // ลูกค้า: vowel U+0E39 and tone mark U+0E49
  // ?name= is not who this is: the token's sub is.
  const customer = await context.newPage();
  await customer.goto(`${url}/chat?name=mallory&room=lobby&token=${jwt({ sub: thai })}`);
  assert.deepEqual([await customer.inputValue("#name"), await customer.locator("#name").evaluate((i) => i.readOnly)], [thai, true]);
  await customer.click("#join button");
  await customer.locator("#state[data-state=open]").waitFor();
  await customer.locator("#online li", { hasText: thai }).waitFor();
  assert.deepEqual(await customer.locator("#online li").allTextContents(), [thai]);
  // Nor is ?user=: a client asking to be mallory with ann's token is ann.
  const who = await customer.evaluate(async (token) => {
    const { HubClient } = await import("/client.js");
    const other = new HubClient({ user: "mallory", token });
    await other.ping();
    const user = other.user;
    other.close();
    return user;
  }, jwt({ sub: "ann" }));
  assert.equal(who, "ann");
  assert.equal(await customer.evaluate(() => window.hub.user), thai);
  assert.equal(await customer.locator("#signin-summary").textContent(), `Signed in as ${thai}`);
  // The token rode as a subprotocol, not in the socket's URL.
  const socket = await customer.evaluate(() => ({ url: window.hub.socket.url, protocol: window.hub.socket.protocol }));
  assert.doesNotMatch(socket.url, /token=|eyJ/);
  assert.equal(socket.protocol, "sabai.v1");

  // No token: the 401 and the server's reason, and the sign-in box opens.
  const ann = await context.newPage();
  await ann.goto(`${url}/chat?name=ann&room=lobby`);
  await ann.click("#join button");
  await ann.locator("#state[data-state=error]").waitFor();
  assert.match(await ann.locator("#state").textContent(), /401: a token is required/);
  await ann.locator("#signin-why", { hasText: "a token is required" }).waitFor();
  assert.equal(await ann.locator("#signin-box").evaluate((box) => box.open), true);
  // A token pasted there: ann joins the room she asked for, as the token says.
  await ann.fill("#token", jwt({ sub: "ann" }));
  await ann.click("#signin button");
  await ann.locator("#state[data-state=open]").waitFor();
  await ann.waitForFunction((names) => [...document.querySelectorAll("#online li")].map((l) => l.textContent).join() === names, `ann,${thai}`);
  await customer.locator("#online li", { hasText: "ann" }).waitFor();
  await say(ann, "สวัสดีค่ะ");
  await customer.locator("#log li", { hasText: "สวัสดีค่ะ" }).waitFor();
  assert.equal(await customer.locator("#log li b").first().textContent(), "ann");

  // Over SSE the token goes as ?token= (EventSource) and Authorization (POST /send).
  const bob = await openChat(url, "bob", "lobby", `&transport=sse&token=${jwt({ sub: "bob" })}`);
  assert.equal(await bob.evaluate(() => window.hub.transport), "sse");
  await say(bob, "from the event stream, signed");
  await customer.locator("#log li", { hasText: "from the event stream, signed" }).waitFor();
  await bob.locator("#log li.mine[data-status=sent]", { hasText: "from the event stream, signed" }).waitFor();
  await customer.waitForFunction((names) => [...document.querySelectorAll("#online li")].map((l) => l.textContent).join() === names, `ann,bob,${thai}`);
  for (const page of [customer, ann, bob]) await page.close();
});

test("a token's rooms claim: a room it does not allow is refused on the page, which stays usable", async () => {
  const { url } = await server(["--no-simulator", "--jwt-secret", SECRET]);
  const page = await context.newPage();
  await page.goto(`${url}/chat?room=secret&token=${jwt({ sub: "ann", rooms: ["chat:lobby"] })}`);
  await page.click("#join button");
  await page.locator("#join-error", { hasText: "Could not join #secret" }).waitFor();
  assert.match(await page.locator("#join-error").textContent(), /your token does not allow "chat:secret"/);
  assert.equal(await page.locator("#chat").isHidden(), true);
  assert.equal(await page.locator("#state").getAttribute("data-state"), "open");
  // The room it allows works, on the same connection.
  const connection = await page.evaluate(() => window.hub.connectionId);
  await page.fill("#room", "lobby");
  await page.click("#join button");
  await page.locator("#online li", { hasText: "ann" }).waitFor();
  await say(page, "allowed here");
  await page.locator("#log li.mine[data-status=sent]", { hasText: "allowed here" }).waitFor();
  assert.equal(await page.evaluate(() => window.hub.connectionId), connection);
  // Asking about the other room is refused too, with the same words.
  const presence = await page.evaluate(() => window.hub.presence("chat:secret").then(() => "answered", (e) => `${e.code}: ${e.message}`));
  assert.match(presence, /^server: presence refused: your token does not allow "chat:secret"/);
  await page.close();
});

test("an expired token: the page says so, keeps what is typed, and signs in again; a refresh in time keeps the connection", async () => {
  const { url } = await server(["--no-simulator", "--jwt-secret", SECRET, "--jwt-leeway", "0.001"]);
  // Both tokens end within seconds; bob gives a fresh one in time, ann does not.
  const ann = await openChat(url, "ann", "lobby", `&token=${jwt({ sub: "ann", exp: nowSecs() + 5 })}`);
  await say(ann, "before it expires");
  await ann.locator("#log li.mine[data-status=sent]", { hasText: "before it expires" }).waitFor();
  await watch(ann);
  // carol is on the event stream: her token is on its URL, so she learns of
  // the expiry when the stream ends and its reconnect is refused (401).
  const carol = await openChat(url, "carol", "lobby", `&transport=sse&token=${jwt({ sub: "carol", exp: nowSecs() + 5 })}`);
  const bobExpires = nowSecs() + 8;
  const bob = await openChat(url, "bob", "lobby", `&token=${jwt({ sub: "bob", exp: bobExpires })}`);
  const bobBefore = await bob.evaluate(() => {
    window.states = [];
    window.refreshed = [];
    window.hub.on("state", (state) => window.states.push(state));
    window.hub.on("refreshed", (m) => window.refreshed.push(m.payload.expires_at));
    return window.hub.connectionId;
  });
  await bob.click("#signin-summary");
  await bob.fill("#token", jwt({ sub: "bob" }));
  await bob.click("#signin button");
  await bob.waitForFunction(() => window.refreshed.length === 1);
  assert.equal(await bob.locator("#signin-summary").textContent(), "Signed in as bob");

  // The server closes ann's connection with 4001: no blind retry, a clear state.
  await ann.locator("#state[data-state=error]").waitFor({ timeout: 10000 });
  assert.match(await ann.locator("#state").textContent(), /your session expired: sign in again/);
  const detail = await ann.evaluate(() => window.hub.detail);
  assert.deepEqual([detail.code, detail.auth, detail.fatal, detail.retryInMs], [4001, "expired", true, undefined]);
  await ann.locator("#signin-why", { hasText: "Your session expired" }).waitFor();
  assert.equal(await ann.locator("#signin-summary").textContent(), "Session expired: sign in again");
  // Typed while signed out: pending, not failed.
  await say(ann, "typed while signed out");
  await ann.locator("#log li.mine[data-status=pending]", { hasText: "typed while signed out" }).waitFor();
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(await ann.evaluate(() => window.hub.state), "error", "no retry without a token");

  // A fresh token from the box: connects again, recovers the room, sends what waited.
  await ann.fill("#token", jwt({ sub: "ann" }));
  await ann.click("#signin button");
  await ann.locator("#state[data-state=open]").waitFor();
  await ann.locator("#log li.mine[data-status=sent]", { hasText: "typed while signed out" }).waitFor();
  await bob.locator("#log li", { hasText: "typed while signed out" }).waitFor();
  assert.equal(await bob.locator("#log li", { hasText: "typed while signed out" }).count(), 1);
  const { stats, seen } = await clientView(ann);
  assert.deepEqual(
    seen.recovery.map((r) => [r.room, r.recovered]),
    [["chat:lobby", true]],
  );
  assert.deepEqual([stats.gaps, stats.duplicates, stats.reconnects], [0, 0, 1]);

  // carol: expired too, then back on the event stream with a fresh token.
  await carol.locator("#state[data-state=error]").waitFor({ timeout: 10000 });
  assert.match(await carol.locator("#state").textContent(), /your session expired: sign in again \(401: the token has expired\)/);
  assert.deepEqual(await carol.evaluate(() => [window.hub.detail.auth, window.hub.detail.status]), ["expired", 401]);
  await carol.fill("#token", jwt({ sub: "carol" }));
  await carol.click("#signin button");
  await carol.locator("#state[data-state=open]").waitFor();
  assert.equal(await carol.locator("#state").textContent(), "open (SSE)");
  await say(carol, "carol signed in again");
  await ann.locator("#log li", { hasText: "carol signed in again" }).waitFor();

  // bob refreshed in time: the same connection, never dropped, past the old expiry.
  const past = bobExpires * 1000 + 2000 - Date.now();
  if (past > 0) await new Promise((r) => setTimeout(r, past));
  const bobAfter = await bob.evaluate(() => ({ id: window.hub.connectionId, states: window.states, refreshed: window.refreshed, reconnects: window.hub.stats.reconnects }));
  assert.deepEqual([bobAfter.id, bobAfter.states, bobAfter.reconnects], [bobBefore, [], 0]);
  assert.ok(Date.parse(bobAfter.refreshed[0]) > Date.now() + 500000, bobAfter.refreshed[0]);
  for (const page of [ann, bob, carol]) await page.close();
});

// ---- Two nodes on one Redis ----------------------------------------------

// A redis-server of the test's own and two nodes on it: A runs the device
// simulator, B does not (--no-simulator), so every reading a page on B
// sees crossed from A through Redis. Each node accepts the other's pages
// (--allow-origin), as nodes behind one public origin would
// (--public-origin). All stopped when the test ends: the nodes (restarted
// ones too), then Redis.
async function twoNodes(t) {
  const redis = await redisServer();
  const [portA, portB] = [await freePort(), await freePort()];
  const common = ["--redis", redis.url];
  t.after(async () => {
    for (const node of servers.filter((s) => s.args.includes(redis.url))) await stopServer(node, "SIGKILL");
    await redis.stop();
  });
  const a = await server(["--addr", `127.0.0.1:${portA}`, "--node-id", "node-a", "--allow-origin", `http://127.0.0.1:${portB}`, ...common]);
  const b = await server(["--addr", `127.0.0.1:${portB}`, "--node-id", "node-b", "--allow-origin", `http://127.0.0.1:${portA}`, "--no-simulator", ...common]);
  return { redis, a, b };
}

// Records the page's client's states: [state, code, retryInMs, url].
const recordStates = (page) =>
  page.evaluate(() => {
    window.states = [];
    window.hub.on("state", (state, detail) => window.states.push([state, detail.code ?? null, detail.retryInMs ?? null, window.hub.url]));
  });

// No gap anywhere: the page's seq per device, the client's offsets.
async function assertNoGap(page) {
  assert.equal(await page.locator("#tiles").getAttribute("data-gaps"), "0");
  assert.deepEqual(await page.locator(".tile").evaluateAll((t) => t.map((el) => el.dataset.gaps)), ["0", "0", "0", "0", "0"]);
  const { stats } = await clientView(page);
  assert.deepEqual([stats.gaps, stats.missed, stats.duplicates], [0, 0, 0]);
}

test("two nodes on Redis: chat pages on each see the other; the dashboard on B keeps every reading across B's drain (SIGTERM, 1012) and restart", async (t) => {
  const { a, b } = await twoNodes(t);
  const ann = await openChat(a.url, "ann");
  const bob = await openChat(b.url, "bob");
  // Presence crosses nodes: each list is both.
  await ann.waitForFunction(() => [...document.querySelectorAll("#online li")].map((l) => l.textContent).join() === "ann,bob");
  await bob.waitForFunction(() => [...document.querySelectorAll("#online li")].map((l) => l.textContent).join() === "ann,bob");
  await say(ann, "from node A");
  await bob.locator("#log li", { hasText: "from node A" }).waitFor();
  await say(bob, "from node B");
  await ann.locator("#log li", { hasText: "from node B" }).waitFor();
  await ann.locator("#log li.mine[data-status=sent]", { hasText: "from node A" }).waitFor();
  await bob.locator("#log li.mine[data-status=sent]", { hasText: "from node B" }).waitFor();
  // One history in Redis: the same offsets on both nodes.
  const offsets = (page) => page.locator("#log li[data-offset]").evaluateAll((l) => l.map((li) => `${li.dataset.offset} ${li.textContent}`));
  assert.deepEqual(await ann.evaluate(() => window.hub.node), "node-a");
  assert.deepEqual(await bob.evaluate(() => window.hub.node), "node-b");
  assert.deepEqual(await offsets(ann), await offsets(bob));
  assert.deepEqual((await offsets(ann)).map((line) => line.split(" ")[0]), ["1", "2"]);
  await ann.close();
  await bob.close();

  // The dashboard on B, told of both nodes.
  const dash = await openDashboard(b.url, `?urls=${b.ws},${a.ws}`);
  assert.equal(await dash.evaluate(() => window.hub.node), "node-b");
  await watch(dash);
  await recordStates(dash);
  await seqsPast(dash, await seqs(dash), 2);

  // B drains: 1012, and the page goes to A at once and recovers there.
  await stopServer(b, "SIGTERM");
  assert.equal(b.child.exitCode, 0);
  assert.match(b.out, /draining: closing 1 connections with 1012\n/);
  await dash.waitForFunction((ws) => window.hub.state === "open" && window.hub.url === ws, a.ws, { timeout: 10000 });
  const states = await dash.evaluate(() => window.states);
  assert.deepEqual(states[0].slice(0, 2), ["reconnecting", 1012]);
  assert.ok(states[0][2] < 200, `retry in ${states[0][2]} ms after 1012`);
  assert.deepEqual(states.at(-1)[0], "open");
  assert.equal(await dash.evaluate(() => window.hub.node), "node-a");
  await seqsPast(dash, await seqs(dash), 3);
  await assertNoGap(dash);

  // B back on its port; the page moves to it (the next URL) and still misses nothing.
  await restart(b);
  await dash.evaluate(() => window.hub.reconnect());
  await dash.waitForFunction((ws) => window.hub.state === "open" && window.hub.url === ws, b.ws, { timeout: 10000 });
  assert.equal(await dash.evaluate(() => window.hub.node), "node-b");
  await seqsPast(dash, await seqs(dash), 3);
  await assertNoGap(dash);
  const { stats, seen } = await clientView(dash);
  assert.deepEqual(
    seen.recovery.map((r) => [r.room, r.recovered]),
    [["global", true], ["global", true]],
  );
  assert.equal(await dash.locator("#notice").isHidden(), true);
  await dash.close();
});

test("two nodes on Redis: B killed (SIGKILL), its pages move to A with every reading, and a chat line typed meanwhile goes once", async (t) => {
  const { a, b } = await twoNodes(t);
  const ann = await openChat(a.url, "ann");
  const bob = await openChat(b.url, "bob", "lobby", `&urls=${b.ws},${a.ws}`);
  await say(bob, "before the crash");
  await ann.locator("#log li", { hasText: "before the crash" }).waitFor();
  await watch(bob);
  const dash = await openDashboard(b.url, `?urls=${b.ws},${a.ws}`);
  await watch(dash);
  await recordStates(dash);
  await seqsPast(dash, await seqs(dash), 2);

  await stopServer(b, "SIGKILL");
  await say(bob, "while B is dead");
  await dash.waitForFunction((ws) => window.hub.state === "open" && window.hub.url === ws, a.ws, { timeout: 15000 });
  const [lost] = await dash.evaluate(() => window.states);
  assert.deepEqual(lost.slice(0, 2), ["reconnecting", 1006]);
  await seqsPast(dash, await seqs(dash), 3);
  await assertNoGap(dash);
  const { seen, stats } = await clientView(dash);
  assert.deepEqual(
    seen.recovery.map((r) => [r.room, r.recovered]),
    [["global", true]],
  );
  // Away for the backoff (1 s at least): readings published meanwhile came in A's replay.
  assert.ok(stats.replayed >= 1, `replayed ${stats.replayed}`);

  // bob's line went through A once, and his room recovered there.
  await bob.locator("#log li.mine[data-status=sent]", { hasText: "while B is dead" }).waitFor({ timeout: 15000 });
  await ann.locator("#log li", { hasText: "while B is dead" }).waitFor();
  assert.equal(await ann.locator("#log li", { hasText: "while B is dead" }).count(), 1);
  assert.equal(await bob.evaluate(() => window.hub.url), a.ws);
  const view = await clientView(bob);
  assert.deepEqual(
    view.seen.recovery.map((r) => [r.room, r.recovered]),
    [["chat:lobby", true]],
  );
  assert.deepEqual([view.stats.gaps, view.stats.duplicates], [0, 0]);
  for (const page of [ann, bob, dash]) await page.close();
});

// openDashboard for a page prepared beforehand (init scripts).
async function openDashboardOn(page, url) {
  await page.goto(`${url}/dashboard`);
  await page.locator("#state[data-state=open]").waitFor({ timeout: 20000 });
  await page.waitForFunction(() => document.querySelectorAll(".tile[data-seq]").length >= 4, null, { timeout: 30000 });
}

// ----- The admin page (--admin-key): its own block, kept at the end. -----

test("the admin page takes its key, lists a chat page's connection, and disconnects it", async () => {
  const key = "browser-admin-k3y";
  const { url } = await server(["--no-simulator", "--admin-key", key]);
  const chat = await context.newPage();
  await chat.goto(`${url}/chat?name=carol&room=ops`);
  await chat.click("#join button");
  await chat.locator("#state[data-state=open]").waitFor();

  const admin = await context.newPage();
  await admin.goto(`${url}/admin`);
  await admin.locator("#login").waitFor();
  // A wrong key is refused (401) and asked for again.
  await admin.fill("#key", "not-the-key");
  await admin.click("#login button");
  await admin.locator("#error", { hasText: "not accepted" }).waitFor();
  await admin.fill("#key", key);
  await admin.click("#login button");
  const carol = admin.locator("#connections tr[data-user=carol]");
  await carol.waitFor();
  const firstId = await carol.getAttribute("data-id");
  assert.match(await carol.textContent(), /chat:ops/);
  assert.match(await carol.locator("td.queued").textContent(), /^\d+$/);
  await admin.locator("#rooms tr[data-room='chat:ops']", { hasText: "carol" }).waitFor();
  // The key is kept for this tab: a reload does not ask again.
  await admin.reload();
  await carol.waitFor();
  assert.equal(await admin.locator("#login").isHidden(), true);

  // Disconnect: the chat page sees its connection end and reconnects.
  await carol.locator("button.disconnect").click();
  await chat.locator("#state[data-state=reconnecting]").waitFor();
  await chat.locator("#state[data-state=open]").waitFor({ timeout: 20000 });
  // The admin page (refreshing every 2 s) shows the new connection only.
  await admin.waitForFunction(
    (old) => {
      const rows = [...document.querySelectorAll("#connections tr[data-user=carol]")];
      return rows.length === 1 && rows[0].dataset.id !== old;
    },
    firstId,
  );
  const stats = await (await fetch(`${url}/stats`)).json();
  assert.equal(stats.admin_refused, 1);
  assert.equal(stats.close_codes["1013"], 1, "try again later: the page reconnects");
  await admin.close();
  await chat.close();
});

// ----- TLS (--tls-cert, --tls-key): its own block. -----

// A self-signed certificate for 127.0.0.1, made with openssl; and the
// base64 SHA-256 of its public key, which Chromium is told to trust
// (--ignore-certificate-errors-spki-list: this key and no other).
function selfSignedCertificate(dir) {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
    "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
  ], { stdio: "ignore" });
  const publicKey = execFileSync("openssl", ["x509", "-pubkey", "-noout", "-in", cert]);
  const der = execFileSync("openssl", ["pkey", "-pubin", "-outform", "der"], { input: publicKey });
  const spki = execFileSync("openssl", ["dgst", "-sha256", "-binary"], { input: der }).toString("base64");
  return { cert, key, spki };
}

test("over TLS the chat page connects with wss://, Chromium trusting only the test certificate's key", async () => {
  const dir = mkdtempSync(join(tmpdir(), "sabai-tls-"));
  const tls = selfSignedCertificate(dir);
  const { url } = await server(["--no-simulator", "--tls-cert", tls.cert, "--tls-key", tls.key]);
  assert.match(url, /^https:/);
  const trusted = mkdtempSync(join(tmpdir(), "sabai-chromium-tls-"));
  const browser = await chromium.launchPersistentContext(trusted, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
      `--ignore-certificate-errors-spki-list=${tls.spki}`,
    ],
  });
  try {
    browser.setDefaultTimeout(15000);
    const page = await browser.newPage();
    await page.goto(`${url}/chat?name=tess&room=secure`);
    await page.click("#join button");
    await page.locator("#state[data-state=open]").waitFor();
    assert.match(await page.evaluate(() => window.hub.url), /^wss:\/\/127\.0\.0\.1:\d+\/ws$/);
    await page.locator("#online li", { hasText: "tess" }).waitFor();
    await say(page, "over wss");
    await page.locator("#log li", { hasText: "over wss" }).waitFor();
  } finally {
    await browser.close();
    rmSync(trusted, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
});

// ----- MQTT (--mqtt): its own block. -----

// A mosquitto of one test (127.0.0.1 only, anonymous, no persistence, a
// free port); `stop()` ends it by its own PID. Fails, never skips,
// without mosquitto (tests/run-all.sh installs it).
async function mosquitto() {
  const bin = process.env.MOSQUITTO || "/usr/sbin/mosquitto";
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "sabai-mosquitto-"));
  const config = join(dir, "mosquitto.conf");
  writeFileSync(config, `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
  const child = spawn(bin, ["-c", config], { stdio: ["ignore", "ignore", "pipe"] });
  const broker = { child, port, url: `mqtt://127.0.0.1:${port}` };
  broker.stop = async () => {
    await stopServer(broker, "SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  };
  const started = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mosquitto (${bin}) exited at start with ${child.exitCode}: install mosquitto`);
    const up = await new Promise((done) => {
      const socket = connect(port, "127.0.0.1", () => done(socket.end() && true));
      socket.once("error", () => done(false));
    });
    if (up) return broker;
    if (Date.now() - started > 10000) throw new Error("mosquitto did not listen within 10 s");
    await new Promise((r) => setTimeout(r, 50));
  }
}

// mosquitto_pub of one message, QoS 1.
function mqttPublish(broker, topic, payload) {
  execFileSync("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(broker.port), "-q", "1", "-t", topic, "-m", JSON.stringify(payload)]);
}

// A mosquitto_sub on `filter`, once subscribed (it also follows a probe
// topic, published to until a probe comes back). `next()` resolves with the
// next message's payload; `stop()` ends it by its own PID.
async function mqttSubscribe(broker, filter) {
  const probe = `sabai-test/probe/${Date.now()}`;
  const child = spawn("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(broker.port), "-q", "1", "-t", filter, "-t", probe, "-F", "%t %p"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const sub = { messages: [], waiting: [], stop: () => child.kill("SIGTERM") };
  let buffer = "";
  child.stdout.on("data", (chunk) => {
    buffer += chunk;
    let at;
    while ((at = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, at);
      buffer = buffer.slice(at + 1);
      const space = line.indexOf(" ");
      sub.messages.push({ topic: line.slice(0, space), payload: line.slice(space + 1) });
    }
  });
  sub.next = async () => {
    const started = Date.now();
    for (;;) {
      const i = sub.messages.findIndex((m) => m.topic !== probe);
      if (i >= 0) return sub.messages.splice(i, 1)[0];
      if (Date.now() - started > 10000) throw new Error(`no MQTT message on ${filter} within 10 s`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const started = Date.now();
  while (!sub.messages.some((m) => m.topic === probe)) {
    if (Date.now() - started > 10000) throw new Error("mosquitto_sub was not subscribed within 10 s");
    execFileSync("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(broker.port), "-t", probe, "-m", "probe"]);
    await new Promise((r) => setTimeout(r, 100));
  }
  return sub;
}

// Until the server's bridge is connected and subscribed.
async function bridged(url) {
  const started = Date.now();
  while (!(await (await fetch(`${url}/stats`)).json()).mqtt?.connected) {
    if (Date.now() - started > 15000) throw new Error("the MQTT bridge did not connect");
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("MQTT: a value published to the broker appears on its device's tile and as its chart's last point; an alert marks its reading; a command from the tile reaches the device", async () => {
  const broker = await mosquitto();
  try {
    const { url } = await server(["--mqtt", broker.url, "--alert-rule", "temperature>30:critical"]);
    await bridged(url);
    // Readings before the page opens: its tile comes from /devices, its
    // chart from the device room's history.
    const reading = (seq, temperature) => ({ fields: { temperature, humidity: 40 + seq }, tags: { group: "lab", name: "Bench 7" }, seq });
    for (const [seq, t] of [[1, 21.0], [2, 21.5], [3, 22.0]]) mqttPublish(broker, "devices/bench-7/telemetry", reading(seq, t));
    await waitFor(async () => (await (await fetch(`${url}/devices`)).json()).devices.some((d) => d.device_id === "bench-7" && d.last_seq === 3));
    const page = await context.newPage();
    await page.goto(`${url}/dashboard`);
    await page.locator("#state[data-state=open]").waitFor();
    const tile = page.locator('.tile[data-device="bench-7"]');
    await tile.locator("h3", { hasText: "Bench 7" }).waitFor();
    assert.equal(await tile.getAttribute("data-group"), "lab");
    const chart = tile.locator(".chart");
    await page.waitForFunction(() => document.querySelector('.tile[data-device="bench-7"] .chart')?.dataset.points === "3");
    assert.equal(await chart.getAttribute("data-last"), "22");
    assert.equal(await tile.locator(".temperature").textContent(), "22.0", "seeded from history");

    mqttPublish(broker, "devices/bench-7/telemetry", reading(4, 23.4));
    await tile.locator(".temperature", { hasText: "23.4" }).waitFor();
    await page.waitForFunction(() => document.querySelector('.tile[data-device="bench-7"] .chart')?.dataset.last === "23.4");
    assert.equal(await chart.getAttribute("data-last-seq"), "4");
    assert.equal(await chart.getAttribute("data-points"), "4", "each reading drawn once");
    assert.equal(await tile.getAttribute("data-seq"), "4");

    mqttPublish(broker, "devices/bench-7/telemetry", reading(5, 31.5));
    await page.locator('#alerts li[data-device="bench-7"][data-seq="5"]', { hasText: "temperature > 30" }).waitFor();
    const mark = tile.locator(".chart circle.alert");
    await mark.waitFor();
    assert.equal(await mark.getAttribute("data-seq"), "5", "the alert points at the reading that raised it");
    assert.equal(await mark.getAttribute("data-value"), "31.5");

    // A command from the tile reaches the device's command topic.
    const commands = await mqttSubscribe(broker, "devices/+/command");
    try {
      await tile.locator(".command summary").click();
      await tile.locator('.command input[name="name"]').fill("set_fan");
      await tile.locator('.command input[name="args"]').fill('{"speed": 3}');
      await tile.locator(".command button").click();
      await tile.locator('.command .result[data-state="sent"]', { hasText: "devices/bench-7/command" }).waitFor();
      const { topic, payload } = await commands.next();
      assert.equal(topic, "devices/bench-7/command");
      const command = JSON.parse(payload);
      assert.deepEqual([command.device_id, command.name, command.args], ["bench-7", "set_fan", { speed: 3 }]);
    } finally {
      commands.stop();
    }
    await page.close();
  } finally {
    await broker.stop();
  }
});

// Polls `check` (async) until it holds, at most 15 s.
async function waitFor(check) {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > 15000) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 50));
  }
}
