// Moving a finished copyOut from its staging directory into place (the rules of Python's
// fsutil/commit.py): a copy is extracted beside its destination and moved only once complete,
// so a failed copy changes nothing there. Every move is planned before the first is made; an
// existing directory is merged into, anything else is replaced only with `overwrite` (a
// directory only when empty) and otherwise kept. lstat throughout: links are never followed.
import { lstat, readdir, rename, rmdir, unlink } from "node:fs/promises";
import type { Stats } from "node:fs";
import { join } from "node:path";
import { UnsafeArchiveError } from "./errors.js";

type Step = { rel: string; replace: boolean };

const statOf = (path: string): Promise<Stats | null> => lstat(path).then((s) => s, () => null);

/** Move `stage/name` to `parent/name`, merging into directories that are there. */
export async function moveIntoPlace(stage: string, parent: string, name: string, overwrite: boolean): Promise<void> {
  const steps: Step[] = [];
  const todo = [name];
  while (todo.length > 0) {
    const rel = todo.pop()!;
    const staged = await statOf(join(stage, rel));
    const there = await statOf(join(parent, rel));
    if (staged === null) continue;
    if (there === null) {
      steps.push({ rel, replace: false });
    } else if (there.isDirectory() && staged.isDirectory()) {
      const names = (await readdir(join(stage, rel))).sort().reverse();
      todo.push(...names.map((n) => join(rel, n)));
    } else if (overwrite) {
      if (there.isDirectory() && (await readdir(join(parent, rel))).length > 0) {
        throw new UnsafeArchiveError(`copyOut would replace the non-empty directory ${JSON.stringify(rel)}`);
      }
      steps.push({ rel, replace: true });
    }
  }
  for (const { rel, replace } of steps) {
    const to = join(parent, rel);
    if (replace) {
      const [there, staged] = [await statOf(to), await statOf(join(stage, rel))];
      if (there !== null && (there.isDirectory() || staged?.isDirectory())) {
        await (there.isDirectory() ? rmdir(to) : unlink(to)); // rename swaps only like for like
      }
    }
    await rename(join(stage, rel), to);
  }
}
