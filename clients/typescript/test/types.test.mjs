// The management API's types are generated from the OpenAPI document a server serves
// (scripts/generate.mjs). These tests regenerate them from a live server and fail when the
// committed openapi.json or src/generated/openapi.ts drift from it; and a TypeScript user's
// code type-checks against the built declarations.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFile, mkdtemp, mkdir, symlink, writeFile, rm } from "node:fs/promises";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DOCUMENT_PATH, TYPES_PATH, fetchDocument, normalise, typesOf } from "../scripts/generate.mjs";
import { startServer } from "./server.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const run = promisify(execFile);
let server;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server?.stop();
});

const HOW = "regenerate them: npm run generate -- <server URL> (see README)";

test("the committed OpenAPI document is the one the server serves (less its scope catalog)", async () => {
  const served = normalise(await fetchDocument(server.baseUrl));
  const committed = JSON.parse(await readFile(DOCUMENT_PATH, "utf8"));
  assert.deepEqual(committed, served, `openapi.json drifted from the server: ${HOW}`);
  assert.ok(served.paths["/api/v1/tokens/{token_id}/rotate"], "the document has the management API");
});

test("the committed types are what openapi-typescript makes of the served document", async () => {
  const served = normalise(await fetchDocument(server.baseUrl));
  const committed = await readFile(TYPES_PATH, "utf8");
  assert.equal(await typesOf(served), committed, `src/generated/openapi.ts drifted: ${HOW}`);
});

test("a TypeScript user's code type-checks against the package, and its mistakes do not", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tallykey-ts-consumer-"));
  try {
    await mkdir(join(dir, "node_modules", "@types"), { recursive: true });
    await symlink(ROOT, join(dir, "node_modules", "tallykey"));
    await symlink(join(ROOT, "node_modules", "@types", "node"), join(dir, "node_modules", "@types", "node"));
    await writeFile(join(dir, "consumer.ts"), await readFile(join(ROOT, "test", "fixtures", "consumer.ts")));
    await writeFile(join(dir, "tsconfig.json"), JSON.stringify({ compilerOptions: {
      target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", strict: true, noEmit: true,
      types: ["node"] }, files: ["consumer.ts"] }));
    const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
    const checked = await run(process.execPath, [tsc, "-p", dir], { cwd: dir }).catch((error) => error);
    assert.equal(checked.code ?? 0, 0, `tsc: ${checked.stdout}${checked.stderr}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
