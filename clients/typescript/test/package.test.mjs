// The package as a user installs it (README "Install"): `npm pack`, then `npm install` of
// the tarball into another project, offline, since it has no runtime dependency; and the
// README's Express example, run as written, against a real server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Tallykey } from "../dist/index.js";
import { startServer, freePort } from "./server.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const run = promisify(execFile);
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
let server;
let project;
let tarball;

before(async () => {
  server = await startServer();
  // inside this folder, so the example finds express (a dev dependency) further up
  project = await mkdtemp(join(ROOT, "test", ".consumer-"));
  const packed = await run(npm, ["pack", "--json", "--pack-destination", project], { cwd: ROOT, timeout: 120_000 });
  tarball = JSON.parse(packed.stdout)[0];
  await writeFile(join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  await run(npm, ["install", "--offline", "--no-audit", "--no-fund", join(project, tarball.filename)],
    { cwd: project, timeout: 120_000 });
});

after(async () => {
  if (project) await rm(project, { recursive: true, force: true });
  await server?.stop();
});

test("the tarball holds the built module, its declarations and the README, and installs with no dependency", async () => {
  const files = tarball.files.map((f) => f.path);
  for (const needed of ["package.json", "README.md", "dist/index.js", "dist/index.d.ts", "dist/middleware.js",
    "dist/generated/openapi.d.ts"]) {
    assert.ok(files.includes(needed), `${needed} in ${files}`);
  }
  assert.ok(!files.some((f) => f.startsWith("src/") || f.startsWith("test/")), files.join(" "));
  const manifest = JSON.parse(await readFile(join(project, "node_modules", "tallykey", "package.json"), "utf8"));
  assert.deepEqual(manifest.dependencies ?? {}, {});
  assert.equal(manifest.engines.node, ">=18");
  const installed = (await readdir(join(project, "node_modules"))).filter((name) => !name.startsWith("."));
  assert.deepEqual(installed, ["tallykey"]);
});

test("the README's Express example runs as written", async () => {
  const readme = await readFile(join(ROOT, "README.md"), "utf8");
  const example = readme.split("## Express")[1].match(/```js\n([\s\S]*?)```/)[1];
  assert.ok(example.trim().split("\n").length <= 10, "a 10-line example");
  // the demo server's catalog has no orders:read: the example asks for a scope it has, as
  // the README says under the example
  assert.match(readme, /the demo's catalog has `employees:read` instead/);
  await writeFile(join(project, "app.mjs"), example.replace("orders:read", "employees:read"));
  const port = await freePort();
  const app = spawn(process.execPath, ["app.mjs"], { cwd: project, stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, TALLYKEY_URL: server.baseUrl, PORT: String(port) } });
  let output = "";
  app.stdout.on("data", (chunk) => { output += chunk; });
  app.stderr.on("data", (chunk) => { output += chunk; });
  try {
    const url = `http://127.0.0.1:${port}/orders`;
    const deadline = Date.now() + 20_000;
    let answer;
    while (!answer) {
      try {
        answer = await fetch(url, { headers: { Authorization: `Bearer ${server.member}` } });
      } catch {
        assert.ok(Date.now() < deadline && app.exitCode === null, `the example did not start: ${output}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    assert.equal(answer.status, 200, output);
    const body = await answer.json();
    const verdict = await new Tallykey({ baseUrl: server.baseUrl }).verify(server.member);
    assert.equal(body.caller, verdict.name);
    assert.ok(body.caller);
    assert.deepEqual(body.scopes, ["employees:read"]);
    const refused = await fetch(url);
    assert.equal(refused.status, 401);
    assert.equal((await refused.json()).reason, "missing");
  } finally {
    app.kill();
  }
});

test("npm install of the folder (after npm ci built dist/) links it, and it imports", async () => {
  const linked = await mkdtemp(join(ROOT, "test", ".consumer-"));
  try {
    await writeFile(join(linked, "package.json"), JSON.stringify({ name: "linked", private: true, type: "module" }));
    await run(npm, ["install", "--offline", "--no-audit", "--no-fund", ROOT], { cwd: linked, timeout: 120_000 });
    await writeFile(join(linked, "check.mjs"),
      'import { Tallykey, requireToken } from "tallykey";\nconsole.log(typeof Tallykey, typeof requireToken);\n');
    const ran = await run(process.execPath, ["check.mjs"], { cwd: linked, timeout: 30_000 });
    assert.equal(ran.stdout.trim(), "function function");
  } finally {
    await rm(linked, { recursive: true, force: true });
  }
});
