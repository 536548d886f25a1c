// The client against a real tallykey server: verify (valid, and refused with each reason a
// token can earn), every tokens.* call, and the errors, which never carry a secret.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { Tallykey, TallykeyError, REASONS, kindOf } from "../dist/index.js";
import { startServer, freePort } from "./server.mjs";

let server;
let tk;

before(async () => {
  server = await startServer();
  tk = new Tallykey({ baseUrl: server.baseUrl, token: server.admin });
});

after(async () => {
  await server?.stop();
});

async function newToken(fields = {}) {
  return tk.tokens.create({ name: "ts test", scopes: ["employees:read"], expiresInDays: 30, ...fields });
}

async function refusal(secret, options) {
  const verdict = await tk.verify(secret, options);
  assert.equal(verdict.valid, false);
  assert.ok(!JSON.stringify(verdict).includes(secret ?? "\0"), "a verdict never shows the secret");
  return verdict;
}

test("verify: a valid token is who it is, with its name, scopes, metadata and external id", async () => {
  const issued = await newToken({ name: "orders service", metadata: { plan_tier: "gold" }, externalId: "cust_42" });
  const verdict = await tk.verify(issued.token, { scopes: ["employees:read"] });
  assert.equal(verdict.valid, true);
  assert.equal(verdict.status, 200);
  assert.equal(verdict.tokenId, issued.id);
  assert.equal(verdict.name, "orders service");
  assert.equal(verdict.kind, "personal");
  assert.equal(verdict.account, server.seeded.account);
  assert.deepEqual(verdict.scopes, ["employees:read"]);
  assert.ok(Object.values(verdict.workspaces).every((held) => held.includes("employees:read")));
  assert.deepEqual(verdict.metadata, { plan_tier: "gold" }, "metadata keeps its own keys");
  assert.equal(verdict.externalId, "cust_42");
  assert.equal(new Date(verdict.expiresAt).toISOString().slice(0, 10), issued.expiresAt.slice(0, 10));
});

test("verify: refusals carry status, code, reason, kind, message and hint", async () => {
  const missing = await refusal(null);
  assert.deepEqual([missing.status, missing.reason, missing.kind, missing.code], [401, "missing", "token_missing", "missing_token"]);
  assert.match(missing.hint, /Authorization/);

  const cut = server.admin.slice(0, 30);
  const malformed = await refusal(cut);
  assert.deepEqual([malformed.status, malformed.reason, malformed.kind, malformed.code],
    [401, "malformed", "token_malformed", "invalid_token"]);
  assert.match(malformed.message, /copied incompletely/);

  const scoped = await refusal(server.member, { scopes: ["tokens:manage"] });
  assert.deepEqual([scoped.status, scoped.reason, scoped.kind, scoped.code],
    [403, "insufficient_scope", "scope_missing", "insufficient_scope"]);

  const elsewhere = await refusal(server.member, { scopes: ["employees:read"], workspace: "no-such-workspace" });
  assert.equal(elsewhere.status, 403);
  assert.equal(elsewhere.reason, "workspace_not_allowed");
});

test("verify: revoked, suspended and rotated-out tokens are refused with their reasons", async () => {
  const revoked = await newToken();
  await tk.tokens.revoke(revoked.id, { reason: "left the company" });
  const r = await refusal(revoked.token);
  assert.deepEqual([r.status, r.reason, r.kind], [401, "revoked", "token_revoked"]);

  const paused = await newToken();
  await tk.tokens.suspend(paused.id);
  const s = await refusal(paused.token);
  assert.deepEqual([s.status, s.reason, s.kind], [401, "suspended", "token_suspended"]);

  const rotated = await newToken();
  await tk.tokens.rotate(rotated.id, { graceSeconds: 0 });
  const o = await refusal(rotated.token);
  assert.deepEqual([o.status, o.reason, o.kind], [401, "rotated_out", "token_not_recognised"]);
});

test("verify: a token over its rate limit, or out of credits, is refused with 429 and when to retry", async () => {
  const limited = await newToken({ rateLimits: [{ name: "burst", limit: 1, perSeconds: 3600 }] });
  const first = await tk.verify(limited.token);
  assert.equal(first.valid, true);
  assert.deepEqual(first.rateLimits.map((l) => [l.name, l.limit, l.perSeconds, l.remaining]), [["burst", 1, 3600, 0]]);
  const second = await refusal(limited.token);
  assert.deepEqual([second.status, second.reason, second.kind], [429, "rate_limited", "rate_limited"]);
  assert.ok(second.retryAfter > 0 && second.retryAfter <= 3600, `retryAfter ${second.retryAfter}`);

  const metered = await newToken({ credits: { remaining: 2 } });
  const spent = await tk.verify(metered.token, { cost: 2 });
  assert.equal(spent.valid, true);
  assert.equal(spent.creditsRemaining, 0);
  const broke = await refusal(metered.token);
  assert.deepEqual([broke.status, broke.reason, broke.kind], [429, "usage_exhausted", "usage_exhausted"]);
});

test("verify needs no token of the client's own; the Authorization header can be passed whole", async () => {
  const anonymous = new Tallykey({ baseUrl: server.baseUrl });
  const verdict = await anonymous.verify(null, { authorization: `Bearer ${server.member}` });
  assert.equal(verdict.valid, true);
  assert.equal(verdict.kind, "personal");
  await assert.rejects(anonymous.tokens.list(), (error) => error instanceof TallykeyError && error.code === "misconfigured" && error.kind === "misconfigured");
});

test("tokens: create, list, get, update, rotate, renew, suspend, resume, revoke", async () => {
  const issued = await tk.tokens.create({ name: "lifecycle", scopes: ["employees:read"], expiresInDays: 10,
    ipAllowlist: [], externalId: "acme" }, { idempotencyKey: "ts-lifecycle-1" });
  assert.match(issued.token, /^tlk_eu1_/);
  assert.equal(issued.status, "active");
  assert.equal(issued.externalId, "acme");
  const again = await tk.tokens.create({ name: "lifecycle", scopes: ["employees:read"], expiresInDays: 10,
    ipAllowlist: [], externalId: "acme" }, { idempotencyKey: "ts-lifecycle-1" });
  assert.equal(again.id, issued.id, "the same Idempotency-Key makes no second token");

  const page = await tk.tokens.list({ externalId: "acme", limit: 10 });
  assert.deepEqual(page.items.map((t) => t.id), [issued.id]);
  assert.ok("nextCursor" in page);

  const got = await tk.tokens.get(issued.id);
  assert.equal(got.name, "lifecycle");
  assert.ok(!("token" in got), "a stored token never shows its secret again");

  const renamed = await tk.tokens.update(issued.id, { name: "renamed", metadata: { tier_name: "pro" } });
  assert.equal(renamed.name, "renamed");
  assert.deepEqual(renamed.metadata, { tier_name: "pro" });

  const rotated = await tk.tokens.rotate(issued.id, { graceSeconds: 60 });
  assert.notEqual(rotated.token, issued.token);
  assert.ok(rotated.previousSecretExpiresAt);
  assert.equal((await tk.verify(rotated.token)).valid, true);
  assert.equal((await tk.verify(issued.token)).valid, true, "the old secret works during the grace");

  const suspended = await tk.tokens.suspend(issued.id);
  assert.equal(suspended.status, "suspended");
  assert.equal(typeof suspended.propagation.complete, "boolean");
  assert.equal((await tk.verify(rotated.token)).reason, "suspended");
  const resumed = await tk.tokens.resume(issued.id);
  assert.equal(resumed.status, "active");
  assert.equal((await tk.verify(rotated.token)).valid, true);

  const renewed = await tk.tokens.renew(issued.id, { expiresInDays: 20, graceSeconds: 0 });
  assert.notEqual(renewed.id, issued.id);
  assert.equal(renewed.renewedFromId, issued.id);
  assert.equal((await tk.verify(renewed.token)).valid, true);
  assert.equal((await tk.verify(rotated.token)).valid, false, "the renewed token's secret stops after its grace");

  const revoked = await tk.tokens.revoke(renewed.id, { reason: "done" });
  assert.equal(revoked.status, "revoked");
  assert.equal(revoked.revokeReason, "done");
  assert.equal((await tk.verify(renewed.token)).reason, "revoked");
});

test("management failures are TallykeyErrors with status, code, reason, kind and hint", async () => {
  await assert.rejects(tk.tokens.get("no-such-token"), (error) => {
    assert.ok(error instanceof TallykeyError);
    assert.deepEqual([error.status, error.code, error.kind], [404, "not_found", "request_rejected"]);
    return true;
  });
  const active = await newToken();
  await assert.rejects(tk.tokens.resume(active.id), (error) => error.status === 409 && error.code === "conflict");
  await assert.rejects(tk.tokens.create({ name: "x", scopes: ["no:such"] }), (error) => {
    assert.deepEqual([error.status, error.code, error.kind], [422, "validation_failed", "request_rejected"]);
    assert.match(error.hint, /Known scopes/);
    return true;
  });
  const revoked = await newToken({ scopes: ["tokens:manage"] });
  await tk.tokens.revoke(revoked.id);
  const stranger = new Tallykey({ baseUrl: server.baseUrl, token: revoked.token });
  await assert.rejects(stranger.tokens.list(), (error) => {
    assert.deepEqual([error.status, error.reason, error.code, error.kind], [401, "revoked", "invalid_token", "token_revoked"]);
    assert.ok(!JSON.stringify(error).includes(revoked.token) && !error.message.includes(revoked.token)
      && !error.stack.includes(revoked.token), "an error never shows the secret");
    return true;
  });
  const member = new Tallykey({ baseUrl: server.baseUrl, token: server.member });
  await assert.rejects(member.tokens.create({ name: "nope" }), (error) => error.status === 403);
});

test("no server, or not tallykey's answer, is a TallykeyError that names the URL", async () => {
  const port = await freePort();
  const nowhere = new Tallykey({ baseUrl: `http://127.0.0.1:${port}`, token: server.admin });
  await assert.rejects(nowhere.verify("x"), (error) => {
    assert.equal(error.code, "server_unreachable");
    assert.equal(error.kind, "server_unreachable");
    assert.equal(error.status, null);
    assert.ok(error.message.includes(`127.0.0.1:${port}/api/v1/verify`));
    return true;
  });
  const html = createServer((req, res) => { res.writeHead(502, { "Content-Type": "text/html" }); res.end("<h1>Bad gateway</h1>"); });
  await new Promise((r) => html.listen(0, "127.0.0.1", r));
  try {
    const proxy = new Tallykey({ baseUrl: `http://127.0.0.1:${html.address().port}`, token: server.admin });
    await assert.rejects(proxy.tokens.list(), (error) => error.code === "unexpected_response" && error.kind === "unexpected_response" && error.status === 502);
    await assert.rejects(proxy.verify("x"), (error) => error.code === "unexpected_response");
  } finally {
    html.close();
  }
  const slow = new Tallykey({ baseUrl: "http://10.255.255.1:9", timeoutMs: 200 });
  await assert.rejects(slow.verify("x"), (error) => error.code === "server_unreachable");
  assert.throws(() => new Tallykey({ baseUrl: "ftp://example.com" }), (error) => error.code === "misconfigured");
  assert.ok(!JSON.stringify(tk).includes(server.admin), "the client never shows its token");
});

test("the reason table covers the reasons the server answered here, and falls back by status", () => {
  for (const reason of ["missing", "malformed", "insufficient_scope", "workspace_not_allowed", "revoked",
    "suspended", "rotated_out", "rate_limited", "usage_exhausted"]) {
    assert.ok(REASONS[reason], reason);
  }
  assert.equal(kindOf("revoked", 401), "token_revoked");
  assert.equal(kindOf(null, 404), "request_rejected");
  assert.equal(kindOf("something_new", 429), "rate_limited");
  assert.equal(kindOf(null, 500), "unexpected_response");
});

test("a bad argument to tokens.* rejects the promise; it never throws synchronously", async () => {
  for (const call of [() => tk.tokens.get(""), () => tk.tokens.revoke(undefined), () => tk.tokens.rotate(""), () => tk.tokens.suspend(null)]) {
    let pending;
    assert.doesNotThrow(() => { pending = call(); });
    assert.ok(pending instanceof Promise);
    await assert.rejects(pending, (error) => error instanceof TallykeyError && error.kind === "misconfigured");
  }
});

test("an over-long secret or header is tallykey's own 400 verdict, never an exception", async () => {
  // the server answers this verdict itself up to 4096 characters (its request limit)
  const served = await (await fetch(`${server.baseUrl}/api/v1/verify`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ authorization: `Bearer ${"x".repeat(2000)}` }),
  })).json();
  for (const length of [2000, 5000, 100_000]) {
    const secret = "x".repeat(length);
    for (const verdict of [await tk.verify(secret), await tk.verify(null, { authorization: `Bearer ${secret}` })]) {
      assert.deepEqual([verdict.valid, verdict.status, verdict.code, verdict.reason, verdict.kind],
        [false, 400, served.error, served.reason, "token_malformed"]);
      assert.equal(verdict.message, served.message.replace("2007", String(length + 7)));
      assert.equal(verdict.hint, served.hint);
    }
  }
});
