// requireToken() in an Express app and in a plain node:http server, against a real
// tallykey server: the verdict on req.tallykey, and every refusal answered with
// tallykey's own status, JSON body, WWW-Authenticate, Tallykey-Reason, Retry-After and
// RateLimit-* headers.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import express from "express";
import { Tallykey, TallykeyError, requireToken } from "../dist/index.js";
import { startServer, freePort } from "./server.mjs";

let server;
let tk;
let app;
const listening = [];

function listen(handler) {
  return new Promise((resolve) => {
    const http = createServer(handler);
    http.listen(0, "127.0.0.1", () => {
      listening.push(http);
      resolve(`http://127.0.0.1:${http.address().port}`);
    });
  });
}

before(async () => {
  server = await startServer();
  tk = new Tallykey({ baseUrl: server.baseUrl, token: server.admin });
  const shop = express();
  shop.get("/public", (req, res) => res.json({ ok: true }));
  shop.get("/employees", requireToken({ baseUrl: server.baseUrl, scopes: ["employees:read"] }),
    (req, res) => res.json({ tokenId: req.tallykey.tokenId, name: req.tallykey.name, scopes: req.tallykey.scopes }));
  shop.get("/w/:workspace/employees", requireToken({ baseUrl: server.baseUrl, scopes: "employees:read",
    workspace: (req) => req.url.split("/")[2] }), (req, res) => res.json({ workspace: req.tallykey.workspace }));
  app = await listen(shop);
});

after(async () => {
  for (const http of listening) http.close();
  await server?.stop();
});

async function get(url, token, headers = {}) {
  const response = await fetch(url, { headers: token ? { Authorization: `Bearer ${token}`, ...headers } : headers });
  const body = await response.json();
  return { status: response.status, headers: response.headers, body };
}

test("an allowed request reaches the route with the verdict on req.tallykey", async () => {
  const issued = await tk.tokens.create({ name: "shop reader", scopes: ["employees:read"], expiresInDays: 5 });
  const answer = await get(`${app}/employees`, issued.token);
  assert.equal(answer.status, 200);
  assert.deepEqual(answer.body, { tokenId: issued.id, name: "shop reader", scopes: ["employees:read"] });
  assert.deepEqual((await get(`${app}/public`)).body, { ok: true }, "routes without the middleware stay open");
});

test("no token: 401 with a bare challenge and reason missing", async () => {
  const answer = await get(`${app}/employees`);
  assert.equal(answer.status, 401);
  assert.equal(answer.headers.get("www-authenticate"), 'Bearer realm="tallykey"');
  assert.equal(answer.headers.get("tallykey-reason"), "missing");
  assert.equal(answer.body.reason, "missing");
  assert.equal(answer.body.error, "missing_token");
  assert.match(answer.body.hint, /Authorization/);
});

test("a revoked token: 401 invalid_token with the reason in the body and the header", async () => {
  const issued = await tk.tokens.create({ name: "gone", scopes: ["employees:read"], expiresInDays: 5 });
  await tk.tokens.revoke(issued.id);
  const answer = await get(`${app}/employees`, issued.token);
  assert.equal(answer.status, 401);
  assert.match(answer.headers.get("www-authenticate"), /^Bearer realm="tallykey", error="invalid_token", error_description="[^"]+"$/);
  assert.equal(answer.headers.get("tallykey-reason"), "revoked");
  assert.deepEqual([answer.body.error, answer.body.reason], ["invalid_token", "revoked"]);
  assert.ok(answer.body.message && answer.body.hint);
  assert.equal(answer.headers.get("cache-control"), "no-store");
  assert.ok(!JSON.stringify(answer.body).includes(issued.token));
});

test("a token without the scope: 403 insufficient_scope", async () => {
  const issued = await tk.tokens.create({ name: "auditor", scopes: ["audit:read"], expiresInDays: 5 });
  const answer = await get(`${app}/employees`, issued.token);
  assert.equal(answer.status, 403);
  assert.match(answer.headers.get("www-authenticate"), /error="insufficient_scope"/);
  assert.equal(answer.body.reason, "insufficient_scope");
});

test("a workspace read from the request: held there passes, unknown is 403", async () => {
  const seen = await tk.verify(server.member);
  const workspaces = await tk.request("GET", "/api/v1/workspaces");
  const held = workspaces.find((w) => (seen.workspaces[w.id] ?? []).includes("employees:read"));
  assert.ok(held, "the demo member reads employees in some workspace");
  const allowed = await get(`${app}/w/${held.slug}/employees`, server.member);
  assert.equal(allowed.status, 200);
  assert.equal(allowed.body.workspace, held.id);
  const refused = await get(`${app}/w/nowhere/employees`, server.member);
  assert.equal(refused.status, 403);
  assert.equal(refused.body.reason, "workspace_not_allowed");
});

test("RateLimit-* while allowed; over the limit 429 rate_limited with Retry-After, not a failed-login throttle", async () => {
  const issued = await tk.tokens.create({ name: "bursty", scopes: ["employees:read"], expiresInDays: 5,
    rateLimits: [{ limit: 2, perSeconds: 3600 }] });
  const first = await get(`${app}/employees`, issued.token);
  assert.equal(first.status, 200);
  assert.equal(first.headers.get("ratelimit-limit"), "2");
  assert.equal(first.headers.get("ratelimit-remaining"), "1");
  await get(`${app}/employees`, issued.token);
  const third = await get(`${app}/employees`, issued.token);
  assert.equal(third.status, 429);
  assert.equal(third.body.reason, "rate_limited");
  assert.equal(third.headers.get("tallykey-reason"), "rate_limited");
  assert.ok(Number(third.headers.get("retry-after")) > 0);
});

test("out of credits: 429 usage_exhausted", async () => {
  const issued = await tk.tokens.create({ name: "metered", scopes: ["employees:read"], expiresInDays: 5,
    credits: { remaining: 1 } });
  assert.equal((await get(`${app}/employees`, issued.token)).status, 200);
  const spent = await get(`${app}/employees`, issued.token);
  assert.equal(spent.status, 429);
  assert.equal(spent.body.reason, "usage_exhausted");
  assert.equal(spent.headers.get("tallykey-reason"), "usage_exhausted");
});

test("a plain node:http server works the same (Connect-style next)", async () => {
  const guard = requireToken({ client: new Tallykey({ baseUrl: server.baseUrl }), scopes: ["employees:read"] });
  const plain = await listen((req, res) => guard(req, res, (error) => {
    res.writeHead(error ? 500 : 200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ kind: req.tallykey.kind }));
  }));
  assert.deepEqual((await get(plain, server.member)).body, { kind: "personal" });
  const refused = await get(plain, "tlk_eu1_short");
  assert.equal(refused.status, 401);
  assert.equal(refused.body.reason, "malformed");
});

test("tallykey unreachable: 503, fails closed", async () => {
  const guard = requireToken({ baseUrl: `http://127.0.0.1:${await freePort()}`, timeoutMs: 2000 });
  let reached = false;
  const closed = await listen((req, res) => guard(req, res, () => { reached = true; res.end("{}"); }));
  const answer = await get(closed, server.member);
  assert.equal(answer.status, 503);
  assert.equal(answer.body.error, "verification_unavailable");
  assert.equal(answer.body.reason, "store_unavailable");  // as README: error, message, reason, hint
  assert.equal(answer.headers.get("tallykey-reason"), "store_unavailable");
  assert.equal(answer.headers.get("retry-after"), "2");
  assert.equal(reached, false);
});

test("requireToken without a baseUrl fails at set-up with one clear error", () => {
  for (const options of [{ baseUrl: undefined }, {}, undefined]) {
    assert.throws(() => requireToken(options), (error) => {
      assert.ok(error instanceof TallykeyError);
      assert.equal(error.kind, "misconfigured");
      assert.match(error.message, /^requireToken\(\{ baseUrl \}\) needs the tallykey server's base URL\.$/);
      return true;
    });
  }
});

test("an over-long Authorization header is 400 malformed_header, not a 503", async () => {
  const guard = requireToken({ baseUrl: server.baseUrl });
  let reached = false;
  const app = await listen((req, res) => guard(req, res, () => { reached = true; res.end("{}"); }));
  const answer = await get(app, "x".repeat(5000));
  assert.equal(answer.status, 400);
  assert.equal(answer.body.reason, "malformed_header");
  assert.equal(answer.headers.get("tallykey-reason"), "malformed_header");
  assert.match(answer.body.message, /^The Authorization header is 5007 characters long/);
  assert.equal(reached, false);
});
