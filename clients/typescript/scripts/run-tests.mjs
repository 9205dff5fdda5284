// Runs the test suite with Node's test runner (TypeScript through tsx), one test file at a time.
//   npm test                       every test/*.test.ts
//   npm test -- test/watch.test.ts only the given files
// JUNIT_OUTPUT=path also writes a JUnit XML report there (for CI).
// GRPCBOARD_TARGET=url runs against that server instead of starting one (tests that need a server
// with special flags still start their own from GRPCBOARD_SERVER_DLL).
import { spawn } from "node:child_process";
import { mkdirSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
let files = process.argv.slice(2);
if (files.length === 0) {
  files = readdirSync(path.join(root, "test"))
    .filter((f) => f.endsWith(".test.ts"))
    .sort()
    .map((f) => path.join("test", f));
}

const args = [
  "--import",
  "tsx",
  "--test",
  "--test-concurrency=1",
  // A test that hangs fails instead of holding CI until its time runs out. The same limit, and the same
  // variable, as the Python suite's (clients/python/tests/conftest.py): 120 s unless set.
  `--test-timeout=${Math.round(1000 * Number(process.env.GRPCBOARD_TEST_TIMEOUT_S ?? "120"))}`,
  "--test-reporter=spec",
  "--test-reporter-destination=stdout",
];
const junit = process.env.JUNIT_OUTPUT;
if (junit) {
  const dest = path.resolve(process.cwd(), junit);
  mkdirSync(path.dirname(dest), { recursive: true });
  args.push("--test-reporter=junit", `--test-reporter-destination=${dest}`);
}
args.push(...files);

const child = spawn(process.execPath, args, { cwd: root, stdio: "inherit" });
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => child.kill(sig));
}
child.on("exit", (code, signal) => {
  process.exit(code ?? (signal ? 1 : 0));
});
