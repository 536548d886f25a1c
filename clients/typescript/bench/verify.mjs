// The round trip of one verify() from Node to POST /api/v1/verify, against a real server
// started like the tests' (SQLite, 127.0.0.1), or at $TALLYKEY_URL with $TALLYKEY_SECRET:
//
//   npm run bench                      # VERIFY_ROUNDS=2000 by default, after 200 warm-ups
//
// prints the median, p90 and p99 in milliseconds as one JSON line, and for scale the
// median of a bare GET /healthz on the same server (HTTP and the event loops alone).
import { performance } from "node:perf_hooks";
import { Tallykey } from "../dist/index.js";
import { startServer } from "../test/server.mjs";

const rounds = Number(process.env.VERIFY_ROUNDS ?? 2000);
const warmup = Math.min(200, rounds);
let server = null;
let baseUrl = process.env.TALLYKEY_URL;
let secret = process.env.TALLYKEY_SECRET;
if (!baseUrl || !secret) {
  server = await startServer();
  baseUrl = server.baseUrl;
  secret = server.member;
}
try {
  const tk = new Tallykey({ baseUrl });
  for (let i = 0; i < warmup; i++) {
    if (!(await tk.verify(secret, { scopes: ["employees:read"] })).valid) throw new Error("the token was refused");
  }
  const times = [];
  for (let i = 0; i < rounds; i++) {
    const start = performance.now();
    const verdict = await tk.verify(secret, { scopes: ["employees:read"] });
    times.push(performance.now() - start);
    if (!verdict.valid) throw new Error(`refused: ${verdict.reason}`);
  }
  const health = [];
  for (let i = 0; i < rounds; i++) {
    const start = performance.now();
    await (await fetch(`${baseUrl}/healthz`)).text();
    health.push(performance.now() - start);
  }
  const at = (list, q) => [...list].sort((a, b) => a - b)[Math.min(list.length - 1, Math.floor(q * list.length))];
  console.log(JSON.stringify({
    rounds, node: process.version, median_ms: +at(times, 0.5).toFixed(3), p90_ms: +at(times, 0.9).toFixed(3),
    p99_ms: +at(times, 0.99).toFixed(3), healthz_median_ms: +at(health, 0.5).toFixed(3), baseUrl,
  }));
} finally {
  await server?.stop();
}
