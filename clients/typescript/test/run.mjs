// `npm test`: one real tallykey server for the whole run (seeding and starting one takes
// seconds), shared by the test files through $TALLYKEY_TEST_SERVER, then `node --test`.
// Every test makes the tokens it changes, so the files do not depend on each other.
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "./server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const files = readdirSync(here).filter((name) => name.endsWith(".test.mjs")).sort().map((name) => join(here, name));
const server = await startServer();
let code = 1;
try {
  const shared = JSON.stringify({ baseUrl: server.baseUrl, seeded: server.seeded, env: server.env });
  const run = spawn(process.execPath, ["--test", ...process.argv.slice(2), ...files], {
    stdio: "inherit", env: { ...process.env, TALLYKEY_TEST_SERVER: shared },
  });
  code = await new Promise((resolve) => run.once("exit", (status, signal) => resolve(status ?? (signal ? 1 : 0))));
} finally {
  await server.stop();
}
process.exit(code);
