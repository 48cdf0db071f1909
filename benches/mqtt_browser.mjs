// End-to-end latency of the MQTT pipeline as a dashboard sees it:
// mosquitto_pub → mosquitto → the hub's bridge → hub → WebSocket → a page
// in headless Chromium. Run by benches/mqtt_browser.sh, which starts the
// broker and the hub server and gives their addresses:
//
//   node benches/mqtt_browser.mjs --hub http://127.0.0.1:P --mqtt-port Q \
//       [--readings 2000] [--rates 200,1000] [--rounds 3]
//
// One `mosquitto_pub -l` process per step reads readings from stdin, one a
// line, paced by this script at a fixed rate; each carries the wall-clock
// time (µs) at which its line was handed to mosquitto_pub. The page (one
// raw WebSocket, protocol v1, in device:D, group:G and global) notes
// `performance.timeOrigin + performance.now()` when each frame arrives,
// before parsing it. Both clocks are this machine's wall clock. Every wait
// is bounded; the browser and mosquitto_pub are ended by their handles.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
// playwright-core as the browser tests pin it (tests/browser, npm ci).
const { chromium } = createRequire(join(root, "tests/browser/package.json"))("playwright-core");

const args = { readings: 2000, rates: [200, 1000], rounds: 3, device: "bench-1", group: "bench" };
for (let i = 2; i < process.argv.length; i += 2) {
  const [flag, value] = [process.argv[i], process.argv[i + 1]];
  if (value === undefined) throw new Error(`${flag} needs a value`);
  if (flag === "--hub") args.hub = value;
  else if (flag === "--mqtt-port") args.mqttPort = value;
  else if (flag === "--readings") args.readings = Number(value);
  else if (flag === "--rates") args.rates = value.split(",").map(Number);
  else if (flag === "--rounds") args.rounds = Number(value);
  else throw new Error(`unknown flag ${flag}`);
}
if (!args.hub || !args.mqttPort) throw new Error("needs --hub URL and --mqtt-port PORT");
if (!(args.readings > 0 && args.readings <= 100000)) throw new Error("--readings: 1 to 100000");
if (!args.rates.every((r) => r > 0 && r <= 10000)) throw new Error("--rates: 1 to 10000 a second");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

async function hubStats() {
  const response = await fetch(`${args.hub}/stats`, { signal: AbortSignal.timeout(5000) });
  return (await response.json()).mqtt;
}

// The page: one WebSocket in the device's three rooms; `window.bench`
// holds [seq, latency ms] pairs and every seq seen, duplicates included.
async function openPage(browser) {
  const page = await browser.newPage();
  // A page of the hub itself, so its Origin is one the hub accepts.
  await page.goto(`${args.hub}/healthz`, { timeout: 10000 });
  const rooms = [`device:${args.device}`, `group:${args.group}`, "global"];
  await page.evaluate(
    (rooms) =>
      new Promise((subscribed, failed) => {
        const bench = { latencies: [], seqs: [], other: 0 };
        window.bench = bench;
        const ws = new WebSocket(`ws://${location.host}/ws`);
        const timer = setTimeout(() => failed(new Error("not subscribed within 10 s")), 10000);
        ws.onopen = () => ws.send(JSON.stringify({ v: 1, type: "subscribe", payload: { rooms } }));
        ws.onerror = () => failed(new Error("WebSocket error"));
        ws.onmessage = (event) => {
          const at = performance.timeOrigin + performance.now();
          const envelope = JSON.parse(event.data);
          if (envelope.type === "subscribed") {
            clearTimeout(timer);
            subscribed();
          } else if (envelope.type === "telemetry") {
            const { seq, fields } = envelope.payload;
            bench.seqs.push(seq);
            bench.latencies.push(at - fields.sent / 1000);
          } else {
            bench.other += 1;
          }
        };
      }),
    rooms,
  );
  return page;
}

// Publishes `count` readings at `rate` a second through one mosquitto_pub
// -l; resolves, once it has exited, with the seconds the writing took.
async function publish(count, rate, firstSeq) {
  const topic = `devices/${args.device}/telemetry`;
  const pub = spawn("mosquitto_pub", ["-h", "127.0.0.1", "-p", args.mqttPort, "-q", "1", "-t", topic, "-l"], {
    stdio: ["pipe", "ignore", "inherit"],
  });
  const exited = new Promise((done) => pub.once("exit", (code) => done(code)));
  // Connected before the clock starts: mosquitto_pub reads stdin only then.
  await sleep(300);
  const period = 1000 / rate;
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const due = start + i * period;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait - 1);
    while (performance.now() < due); // the last millisecond, spun
    const seq = firstSeq + i;
    pub.stdin.write(`{"fields":{"v":${seq % 100},"sent":${nowUs()}},"tags":{"group":"${args.group}"},"seq":${seq}}\n`);
  }
  const seconds = (performance.now() - start) / 1000;
  pub.stdin.end();
  const killer = setTimeout(() => pub.kill("SIGKILL"), 30000);
  const code = await exited;
  clearTimeout(killer);
  if (code !== 0) throw new Error(`mosquitto_pub exited with ${code}`);
  return { seconds };
}

// How far `timeOrigin + now()` is from Date.now() (the system clock, in
// whole ms), in ms: the mean over 30 ms of readings, less the half
// millisecond Date.now() truncates on average. Run here and in the page,
// the difference is the skew between the two clocks the latency is
// taken from (a process's timeOrigin is fixed when it starts).
function clockOffset() {
  let [sum, n] = [0, 0];
  const end = Date.now() + 30;
  while (Date.now() < end) {
    sum += performance.timeOrigin + performance.now() - Date.now();
    n += 1;
  }
  return sum / n - 0.5;
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

// The bridge connected and subscribed (20 s at most).
for (let waited = 0; !(await hubStats()).connected; waited += 100) {
  if (waited > 20000) throw new Error("the hub's bridge did not connect to the broker within 20 s");
  await sleep(100);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu"],
  timeout: 30000,
});
const rows = [];
let seq = 0;
try {
  for (let round = 1; round <= args.rounds; round++) {
    for (const rate of args.rates) {
      const page = await openPage(browser);
      const before = await hubStats();
      const firstSeq = seq + 1;
      const { seconds } = await publish(args.readings, rate, firstSeq);
      seq += args.readings;
      // Until every reading arrived, or none for 3 s (30 s at most).
      let got = 0;
      let quietSince = Date.now();
      const deadline = Date.now() + 30000;
      while (got < args.readings && Date.now() - quietSince < 3000 && Date.now() < deadline) {
        await sleep(50);
        const now = await page.evaluate(() => window.bench.seqs.length);
        if (now !== got) [got, quietSince] = [now, Date.now()];
      }
      const { latencies, seqs } = await page.evaluate(() => window.bench);
      const after = await hubStats();
      const skew = clockOffset() - (await page.evaluate(clockOffset));
      await page.close();
      const unique = new Set(seqs).size;
      if (latencies.length === 0) throw new Error(`no reading reached the page (rate ${rate}/s)`);
      const sorted = latencies.slice().sort((a, b) => a - b);
      const row = {
        round,
        rate,
        sent: args.readings,
        sent_rate: Math.round((args.readings - 1) / seconds),
        received: seqs.length,
        unique,
        bridge_received: after.received - before.received,
        in_order: seqs.every((s, i) => i === 0 || s > seqs[i - 1]),
        p50_ms: +percentile(sorted, 50).toFixed(2),
        p99_ms: +percentile(sorted, 99).toFixed(2),
        max_ms: +sorted[sorted.length - 1].toFixed(2),
        min_ms: +sorted[0].toFixed(2),
        clock_skew_ms: +skew.toFixed(3),
      };
      rows.push(row);
      console.log(JSON.stringify(row));
    }
  }
} finally {
  await browser.close();
}
const lost = rows.filter((r) => r.unique !== r.sent || r.received !== r.sent);
console.log(lost.length === 0 ? "every reading arrived, once" : `LOST or repeated readings in ${lost.length} steps`);
process.exitCode = lost.length === 0 ? 0 : 1;
