// Node's side of benches/deflate_vs_node.sh: permessage-deflate compression
// on the sender in `ws` (the version pinned in package.json), on the
// workload benches/deflate_vs_node.rs wrote, and the markdown table of both
// sides' results.
//
//   node bench.js round DIR [LEVEL] [MS]   # one round over DIR/{readings,batches}.txt, JSON lines
//   node bench.js table RESULTS.jsonl       # the markdown table of every round in the file
//
// Two implementations, each measured per cell (workload x context takeover
// or not), a pass being the whole workload through a fresh compressor:
//
// - "ws": ws's own PerMessageDeflate (ws/lib/permessage-deflate), created as
//   a server and agreed to a client offer with no parameters, so its
//   compressor is zlib's deflateRaw with ws's defaults (level 6 unless LEVEL
//   says otherwise, memLevel 8, 15-bit window), `serverNoContextTakeover`
//   for "no context takeover". Each message goes through
//   `compress(data, true, callback)` and the next starts in the callback,
//   as ws's Sender does on one connection: zlib runs on libuv's threadpool
//   (a write and a Z_SYNC_FLUSH), the main thread waits.
// - "node-zlib-sync": a zlib deflateRaw stream with the same options,
//   driven synchronously on the main thread through its handle (as
//   zlib.deflateRawSync does inside, but keeping the stream open), reset
//   after each message without context takeover. Not a path ws takes: it
//   shows how much of ws's time is zlib itself and how much the trip
//   through the stream machinery and the threadpool.
//
// ws's `threshold` (default 1024 bytes) is not consulted by compress(): its
// Sender applies it only when the sender's no_context_takeover was agreed.
// So under ws's defaults a 200-byte reading is sent uncompressed without
// context takeover and compressed with it; what is timed here is compress()
// itself, i.e. threshold 0 (every message compressed), on both sides.
//
// The messages are Buffers made before the clock starts. The first pass of
// each cell is not timed; its output is inflated with zlib and compared
// with the input, and every timed pass must give the same bytes.
'use strict';

const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
// ws's package.json exports only its entry point; its own file, by path.
const PerMessageDeflate = require(path.join(path.dirname(require.resolve('ws')), 'lib', 'permessage-deflate.js'));

const WORKLOADS = ['readings', 'batches'];

function readWorkload(dir, name) {
  const text = fs.readFileSync(path.join(dir, `${name}.txt`), 'latin1');
  const lines = text.split('\n');
  if (lines.pop() !== '') throw new Error(`${name}: no final newline`);
  return lines.map((l) => Buffer.from(l, 'latin1'));
}

function zlibOptions(level) {
  // ws's default is {}: zlib's Z_DEFAULT_COMPRESSION, which is level 6.
  return level === 6 ? {} : { level };
}

// One pass through ws's PerMessageDeflate; calls done(seconds, outputs).
function wsPass(messages, level, takeover, done) {
  const pmd = new PerMessageDeflate({
    isServer: true,
    serverNoContextTakeover: !takeover,
    threshold: 0,
    zlibDeflateOptions: zlibOptions(level),
  });
  pmd.accept([{}]);
  const out = new Array(messages.length);
  let i = 0;
  const t0 = process.hrtime.bigint();
  const next = () => {
    if (i === messages.length) {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      pmd.cleanup();
      done(seconds, out);
      return;
    }
    const j = i++;
    pmd.compress(messages[j], true, (err, data) => {
      if (err) throw err;
      out[j] = data;
      next();
    });
  };
  next();
}

// One pass through a zlib stream driven synchronously, through its handle
// (zlib's deflate() on the main thread): what _processChunk does inside
// zlib.deflateRawSync, but without closing the stream after one call, so
// the window can be kept from one message to the next. The handle and
// _writeState are Node internals; this is a yardstick, not ws's path.
const OUT = Buffer.allocUnsafe(64 * 1024);

function deflateSync(deflate, data) {
  const handle = deflate._handle;
  const state = deflate._writeState; // [avail_out, avail_in] after a call
  const parts = [];
  let offset = 0;
  let availIn = data.length;
  for (;;) {
    handle.writeSync(zlib.constants.Z_SYNC_FLUSH, data, offset, availIn, OUT, 0, OUT.length);
    const [availOut, availInAfter] = state;
    parts.push(Buffer.from(OUT.subarray(0, OUT.length - availOut)));
    offset += availIn - availInAfter;
    availIn = availInAfter;
    if (availOut !== 0) break; // room left over: the flush is complete
  }
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

function syncPass(messages, level, takeover, done) {
  const deflate = zlib.createDeflateRaw({ ...zlibOptions(level), windowBits: 15 });
  const out = new Array(messages.length);
  const t0 = process.hrtime.bigint();
  for (let j = 0; j < messages.length; j++) {
    const data = deflateSync(deflate, messages[j]);
    out[j] = data.subarray(0, data.length - 4); // RFC 7692 §7.2.1: the tail off
    if (!takeover) deflate.reset();
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  deflate.close();
  // Asynchronous like wsPass, so the two run in the same loop.
  setImmediate(() => done(seconds, out));
}

// Inflates the outputs as one stream (each with its 00 00 ff ff put back,
// RFC 7692 §7.2.2) and compares with the messages.
function check(name, messages, outputs) {
  const tail = Buffer.from([0, 0, 0xff, 0xff]);
  const stream = Buffer.concat(outputs.flatMap((o) => [o, tail]));
  const inflated = zlib.inflateRawSync(stream, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  if (!inflated.equals(Buffer.concat(messages))) throw new Error(`${name}: inflates to something else`);
}

function runCell(impl, name, messages, level, takeover, ms) {
  const pass = impl === 'ws' ? wsPass : syncPass;
  return new Promise((resolve) => {
    pass(messages, level, takeover, (_, first) => {
      check(`${impl} ${name}`, messages, first);
      const expected = Buffer.concat(first);
      let passes = 0;
      let seconds = 0;
      const start = process.hrtime.bigint();
      const cpu0 = process.cpuUsage();
      const again = () =>
        pass(messages, level, takeover, (s, out) => {
          seconds += s;
          passes += 1;
          if (!Buffer.concat(out).equals(expected)) throw new Error(`${impl} ${name}: a pass gave other bytes`);
          if (passes < 2 || Number(process.hrtime.bigint() - start) / 1e6 < ms) return again();
          const cpu = process.cpuUsage(cpu0);
          const wall = Number(process.hrtime.bigint() - start) / 1e9;
          resolve({
            impl,
            workload: name,
            takeover,
            level,
            passes,
            seconds: Number(seconds.toFixed(6)),
            messages: messages.length,
            input: messages.reduce((n, m) => n + m.length, 0),
            compressed: expected.length,
            compressed_messages: messages.length,
            // CPU time of the whole process (every thread) over wall time,
            // over the cell's passes: above 1 when zlib's thread and the
            // main thread overlap.
            cpu_per_wall: Number(((cpu.user + cpu.system) / 1e6 / wall).toFixed(3)),
            // ws's Sender with its default threshold (1024) would send these
            // uncompressed; it consults the threshold only without context
            // takeover (sender.js).
            below_default_threshold: takeover ? 0 : messages.filter((m) => m.length < 1024).length,
          });
        });
      again();
    });
  });
}

async function round(dir, level, ms) {
  const workloads = WORKLOADS.map((n) => [n, readWorkload(dir, n)]);
  for (const impl of ['ws', 'node-zlib-sync']) {
    for (const [name, messages] of workloads) {
      for (const takeover of [true, false]) {
        const r = await runCell(impl, name, messages, level, takeover, ms);
        console.log(JSON.stringify(r));
      }
    }
  }
}

// ----- the table ---------------------------------------------------------------

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function si(x) {
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (x >= 1e3) return `${(x / 1e3).toFixed(1)}k`;
  return x.toFixed(0);
}

function table(file) {
  const rows = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
  const cells = new Map();
  for (const r of rows) {
    const key = [r.workload, r.takeover, r.level, r.impl].join('|');
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(r);
  }
  // Both sides must have read the same input.
  const inputs = new Map();
  for (const r of rows) {
    const k = r.workload;
    if (inputs.has(k) && inputs.get(k) !== `${r.messages}/${r.input}`) throw new Error(`${k}: inputs differ`);
    inputs.set(k, `${r.messages}/${r.input}`);
  }
  const impls = [
    ['sabai', 'sabai (Connection::send, zlib-rs)'],
    ['ws', 'ws PerMessageDeflate.compress (threshold 0)'],
    ['node-zlib-sync', "Node's zlib, synchronous (not ws's path)"],
  ];
  const levels = [...new Set(rows.map((r) => r.level))].sort();
  const lines = [];
  const rounds = Math.min(...[...cells.values()].map((c) => c.length));
  lines.push(`${rounds} rounds; median [min-max] over rounds; MB/s is 10^6 bytes of input (uncompressed JSON) per second.`);
  lines.push('');
  lines.push(
    '| messages | context takeover | level | implementation | input MB/s | messages/s | compressed / input | MB/s against ws |',
  );
  lines.push('|---|---|---:|---|---:|---:|---:|---:|');
  for (const workload of WORKLOADS) {
    for (const level of levels) {
      for (const takeover of [true, false]) {
        const fig = (impl) => {
          const c = cells.get([workload, takeover, level, impl].join('|'));
          if (!c) return null;
          const mbps = c.map((r) => (r.input * r.passes) / r.seconds / 1e6);
          const mps = c.map((r) => (r.messages * r.passes) / r.seconds);
          const ratios = [...new Set(c.map((r) => (r.compressed / r.input).toFixed(3)))];
          return { c, mbps, mps, ratio: ratios.join(' / ') };
        };
        const ws = fig('ws');
        for (const [impl, label] of impls) {
          const f = fig(impl);
          if (!f) continue;
          const n = f.c[0].messages;
          const avg = Math.round(f.c[0].input / n);
          const what = workload === 'readings' ? `${n} readings (${avg} B)` : `${n} batches (${avg} B)`;
          const vs = ws ? (median(f.mbps) / median(ws.mbps)).toFixed(2) : '-';
          lines.push(
            `| ${what} | ${takeover ? 'yes' : 'no'} | ${level} | ${label} | ` +
              `${median(f.mbps).toFixed(1)} [${Math.min(...f.mbps).toFixed(1)}-${Math.max(...f.mbps).toFixed(1)}] | ` +
              `${si(median(f.mps))} [${si(Math.min(...f.mps))}-${si(Math.max(...f.mps))}] | ${f.ratio} | ${vs} |`,
          );
          const below = impl === 'ws' ? f.c[0].below_default_threshold : 0;
          if (below === n) {
            lines.push(
              `| ${what} | no | ${level} | ws with its default threshold (1024 B) | not compressed | - | 1.000 | - |`,
            );
          } else if (below > 0) {
            lines.push(`| ${what} | no | ${level} | ws with its default threshold (1024 B) | ${below} of ${n} messages not compressed | | | |`);
          }
        }
      }
    }
  }
  const cpu = rows.filter((r) => r.impl === 'ws');
  if (cpu.length) {
    lines.push('');
    lines.push('ws: process CPU time over wall time while compressing (main thread + zlib thread), median per cell:');
    for (const workload of WORKLOADS) {
      for (const takeover of [true, false]) {
        const v = cpu.filter((r) => r.workload === workload && r.takeover === takeover).map((r) => r.cpu_per_wall);
        if (v.length) lines.push(`- ${workload}, context takeover ${takeover ? 'yes' : 'no'}: ${median(v).toFixed(2)}`);
      }
    }
  }
  console.log(lines.join('\n'));
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'round' && args[0]) {
  round(args[0], args[1] === undefined ? 6 : Number(args[1]), args[2] === undefined ? 1000 : Number(args[2]));
} else if (mode === 'table' && args[0]) {
  table(args[0]);
} else {
  console.error('usage: node bench.js round DIR [LEVEL] [MS] | node bench.js table RESULTS.jsonl');
  process.exit(2);
}
