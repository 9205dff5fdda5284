// Fails (exit 1) when the checked-in src/gen differs from a fresh `buf generate` of the repository's protos.
// The fresh copy is generated into a temporary directory, so the working tree is never touched.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const checkedIn = path.join(root, "src", "gen");
const out = mkdtempSync(path.join(tmpdir(), "grpcboard-gen-"));

function list(dir, base = dir) {
  let files = [];
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return files;
  }
  for (const name of entries) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) {
      files = files.concat(list(full, base));
    } else {
      files.push(path.relative(base, full).split(path.sep).join("/"));
    }
  }
  return files.sort();
}

let problems = [];
try {
  const bin = path.join(root, "node_modules", ".bin");
  execFileSync(path.join(bin, "buf"), ["generate", "--output", out], {
    cwd: root,
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, PATH: `${bin}${path.delimiter}${process.env.PATH ?? ""}` },
  });
  const fresh = path.join(out, "src", "gen");
  const want = list(fresh);
  const have = list(checkedIn);
  if (want.length === 0) {
    problems.push("buf generate produced no files");
  }
  for (const f of want) {
    if (!have.includes(f)) {
      problems.push(`missing: src/gen/${f}`);
    } else if (!readFileSync(path.join(fresh, f)).equals(readFileSync(path.join(checkedIn, f)))) {
      problems.push(`differs: src/gen/${f}`);
    }
  }
  for (const f of have) {
    if (!want.includes(f)) {
      problems.push(`stale (no longer generated): src/gen/${f}`);
    }
  }
} finally {
  rmSync(out, { recursive: true, force: true });
}

if (problems.length > 0) {
  console.error("Generated code is out of date; run `npm run generate` in clients/typescript and commit src/gen:");
  for (const p of problems) console.error(`  ${p}`);
  process.exit(1);
}
console.log("src/gen is up to date with the protos.");
