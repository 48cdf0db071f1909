// End-to-end tests of the hub server's pages in Debian's headless Chromium,
// driven by playwright-core. The tests start and stop the server themselves
// (on 127.0.0.1, random port) and every wait is bounded.
//
//   cargo build -p sabai-hub
//   cd tests/browser && npm install && npm test
//
// HUB_SERVER overrides the server binary; CHROMIUM the browser. The hub
// server has permessage-deflate on by default, and Chromium offers it, so
// every test here runs compressed; the last one checks that it is.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const serverBin = process.env.HUB_SERVER || join(root, "target/debug/sabai-hub");
const docs = join(root, "docs");
mkdirSync(docs, { recursive: true });

// Starts the hub server; resolves once it printed its URL.
function startServer(args = []) {
  const child = spawn(serverBin, ["--addr", "127.0.0.1:0", ...args], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start in 10 s")), 10000);
    const started = { child, out: "" };
    child.stdout.on("data", (chunk) => {
      started.out += chunk;
      const match = started.out.match(/listening on (http:\/\/127\.0\.0\.1:(\d+))\//);
      if (match && !started.url) {
        clearTimeout(timer);
        Object.assign(started, { url: match[1], port: Number(match[2]) });
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
    ],
  });
  context.setDefaultTimeout(15000);
});

after(async () => {
  await context?.close();
  for (const server of servers) await stopServer(server, "SIGKILL");
  rmSync(profile, { recursive: true, force: true });
});

async function server(args) {
  const started = await startServer(args);
  servers.push(started);
  return started;
}

test("two chat pages see each other join and exchange a message", async () => {
  const { url } = await server(["--no-simulator"]);
  const ann = await context.newPage();
  await ann.goto(`${url}/chat?name=ann&room=lobby`);
  await ann.click("#join button");
  await ann.locator("#state[data-state=open]").waitFor();
  await ann.locator("#online li", { hasText: "ann" }).waitFor();

  const bob = await context.newPage();
  await bob.goto(`${url}/chat`);
  await bob.fill("#name", "bob");
  await bob.fill("#room", "lobby");
  await bob.click("#join button");
  await bob.locator("#state[data-state=open]").waitFor();

  // ann sees bob join and in the online list.
  await ann.locator("#log li.system", { hasText: "bob joined" }).waitFor();
  await ann.locator("#online li", { hasText: "bob" }).waitFor();
  assert.deepEqual(await ann.locator("#online li").allTextContents(), ["ann", "bob"]);

  // bob types (ann sees it), then sends.
  await bob.locator("#text").pressSequentially("hello from bob");
  await ann.locator("#typing", { hasText: "bob typing" }).waitFor();
  await bob.press("#text", "Enter");
  await ann.locator("#log li", { hasText: "hello from bob" }).waitFor();
  await bob.locator("#log li", { hasText: "hello from bob" }).waitFor();
  await ann.locator("#text").fill("hi bob");
  await ann.press("#text", "Enter");
  await bob.locator("#log li", { hasText: "hi bob" }).waitFor();
  await ann.screenshot({ path: join(docs, "chat.png") });

  // bob leaves: ann sees it and the list shrinks.
  await bob.close();
  await ann.locator("#log li.system", { hasText: "bob left" }).waitFor();
  await ann.waitForFunction(() => [...document.querySelectorAll("#online li")].map((l) => l.textContent).join() === "ann");
  await ann.close();
});

// The temperature texts of all tiles, by device.
const readings = (page) =>
  page.evaluate(() =>
    Object.fromEntries([...document.querySelectorAll(".tile")].map((t) => [t.dataset.device, t.querySelector(".temperature").textContent])),
  );

test("the dashboard shows telemetry values changing, and alerts", async () => {
  const { url } = await server([]);
  const page = await context.newPage();
  await page.goto(`${url}/dashboard`);
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
  const first = await readings(page);
  assert.ok(Object.values(first).every((v) => /^-?\d+\.\d$/.test(v)), JSON.stringify(first));
  // Values move: within a few seconds some tile shows another value.
  await page.waitForFunction(
    (before) => [...document.querySelectorAll(".tile")].some((t) => t.querySelector(".temperature").textContent !== before[t.dataset.device]),
    first,
  );
  // A backend's POST /publish reaches the page as an alert.
  const response = await fetch(`${url}/publish`, {
    method: "POST",
    body: JSON.stringify({ room: "global", type: "alert", payload: { device: "office", message: "Office: door open" } }),
  });
  assert.equal(response.status, 200);
  assert.equal((await response.json()).delivered, 1);
  await page.locator("#alerts li", { hasText: "Office: door open" }).waitFor();
  await page.screenshot({ path: join(docs, "dashboard.png") });
  await page.close();
});

test("after the server is killed and restarted the page reconnects and resumes", async () => {
  const first = await server([]);
  const page = await context.newPage();
  await page.goto(`${first.url}/dashboard`);
  await page.locator("#state[data-state=open]").waitFor();
  await page.waitForFunction(() => document.querySelectorAll(".tile").length >= 5);

  await stopServer(first, "SIGKILL");
  await page.locator("#state[data-state=reconnecting]").waitFor();
  const frozen = await readings(page);

  // Same port, new process: the page's backoff (1 s, 2 s, 4 s…) finds it.
  const second = await server(["--addr", `127.0.0.1:${first.port}`]);
  assert.equal(second.port, first.port);
  await page.locator("#state[data-state=open]").waitFor({ timeout: 30000 });
  // Telemetry flows again, so the page subscribed anew.
  await page.waitForFunction(
    (before) => [...document.querySelectorAll(".tile")].some((t) => t.querySelector(".temperature").textContent !== before[t.dataset.device]),
    frozen,
  );
  const rooms = await (await fetch(`${second.url}/rooms`)).json();
  assert.deepEqual(rooms.rooms, [{ room: "global", members: 1 }]);

  // SIGTERM is a graceful shutdown: the page gets its Close and the server
  // exits cleanly after saying goodbye to its one connection.
  await stopServer(second, "SIGTERM");
  assert.equal(second.child.exitCode, 0);
  assert.match(second.out, /shutting down: closing 1 connections\nshut down\n/);
  await page.locator("#state[data-state=reconnecting]").waitFor();
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
    window.socks.every((ws) => ws.inbox.some((m) => m.type === "telemetry" && typeof m.payload.temperature === "number")),
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
  await page.waitForFunction(() =>
    window.socks.every((ws) => ws.inbox.some((m) => m.type === "message" && m.payload.text === window.big)),
  );

  // And a large backend event, POST /publish to `global`, to both sockets.
  const readings = Array.from({ length: 1200 }, (_, i) => ({ device: `greenhouse-${i % 4}`, temperature: 20 + (i % 90) / 10 }));
  const response = await fetch(`${url}/publish`, {
    method: "POST",
    body: JSON.stringify({ room: "global", type: "telemetry", payload: { batch: readings } }),
  });
  assert.equal((await response.json()).delivered, 2);
  const received = await page.waitForFunction(() => {
    const batches = window.socks.map((ws) => ws.inbox.find((m) => m.type === "telemetry" && m.payload.batch));
    return batches.every(Boolean) && batches.map((m) => JSON.stringify(m.payload.batch));
  });
  for (const batch of await received.jsonValue()) assert.equal(batch, JSON.stringify(readings));

  // What went out was compressed: far less than the plain frames' bytes.
  const plain = 2 * (size + JSON.stringify(readings).length);
  const sent = (await stats()).bytes_out - before;
  assert.ok(sent < plain / 4, `${sent} bytes out for ${plain} bytes of messages`);
  await page.close();
});

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
