// Removes the given directories (relative to the package root), portable across shells.
import { rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
for (const dir of process.argv.slice(2)) {
  rmSync(path.join(root, dir), { recursive: true, force: true });
}
