// A real tallykey server for the tests: seeded with the demo data through the CLI
// (`tallykey demo --seed-only --json`), served on a free port, SQLite in a temp dir.
// The `tallykey` command is $TALLYKEY_BIN, else the repository's .venv, else the PATH.
import { spawn, execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, openSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const REPO = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export function tallykeyCommand() {
  if (process.env.TALLYKEY_BIN) return process.env.TALLYKEY_BIN;
  const local = join(REPO, ".venv", "bin", "tallykey");
  return existsSync(local) ? local : "tallykey";
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Start a seeded server; `await server.stop()` ends it and removes its files. With
 *  $TALLYKEY_TEST_SERVER (set by test/run.mjs), the one server of the run, left running. */
export async function startServer(extraEnv = {}) {
  if (process.env.TALLYKEY_TEST_SERVER && !Object.keys(extraEnv).length) {
    const { baseUrl, seeded, env } = JSON.parse(process.env.TALLYKEY_TEST_SERVER);
    return {
      baseUrl, seeded, env, admin: seeded.admin.token, member: seeded.member.token,
      cli: async (...args) => (await run(tallykeyCommand(), args, { env, timeout: 60_000 })).stdout,
      async stop() {},
    };
  }
  const dir = mkdtempSync(join(tmpdir(), "tallykey-ts-"));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("TALLYKEY_")));
  Object.assign(env, { TALLYKEY_DATA_DIR: join(dir, "data"), TALLYKEY_AUTH_FAIL_LIMIT: "0" }, extraEnv);
  const command = tallykeyCommand();
  const seeded = JSON.parse((await run(command, ["demo", "--seed-only", "--json"], { env, timeout: 120_000 })).stdout);
  const port = await freePort();
  const logPath = join(dir, "server.log");
  const log = openSync(logPath, "a");
  const child = spawn(command, ["serve", "--port", String(port)], { env, stdio: ["ignore", log, log] });
  const baseUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  let exited = null;
  child.once("exit", (code) => { exited = code ?? -1; });
  for (;;) {
    if (exited !== null) throw new Error(`tallykey serve exited (${exited}): ${readFileSync(logPath, "utf8")}`);
    try {
      if ((await fetch(`${baseUrl}/healthz`)).ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`tallykey serve did not start: ${readFileSync(logPath, "utf8")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    baseUrl, seeded, env, dir,
    admin: seeded.admin.token,
    member: seeded.member.token,
    log: () => readFileSync(logPath, "utf8"),
    cli: async (...args) => (await run(command, args, { env, timeout: 60_000 })).stdout,
    async stop() {
      if (exited === null) {
        const done = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
        await done;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
