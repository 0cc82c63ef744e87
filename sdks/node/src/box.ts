/** `Box`: a handle on one box of a server (start, stop, exec, copy files, metrics). */

import { lstat, mkdir, mkdtemp, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, posix, resolve } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { create as tarCreate, extract as tarExtract } from "tar";
import { NotFoundError, ResourceExhaustedError, TimeoutError } from "./errors.js";
import { Channel, Execution } from "./execution.js";
import { moveIntoPlace } from "./placing.js";
import type { Boxlite } from "./runtime.js";
import {
  type BoxInfo,
  type BoxMetrics,
  boxInfo,
  camelize,
  type CopyOptions,
  type ExecOptions,
} from "./types.js";

const COPY_MAX_BYTES = 4 * 2 ** 30;
const COPY_MAX_ENTRIES = 500_000;
const COPY_TIMEOUT_MS = 3_600_000;
const SAFE_TYPES = new Set(["File", "OldFile", "ContiguousFile", "Directory", "SymbolicLink", "Link"]);

export class Box {
  constructor(
    private readonly runtime: Boxlite,
    private cached: BoxInfo,
  ) {}

  get id(): string {
    return this.cached.id;
  }

  get name(): string | null {
    return this.cached.name;
  }

  private get path(): string {
    return `/v1/boxes/${encodeURIComponent(this.cached.id)}`;
  }

  /** Current information. */
  async info(): Promise<BoxInfo> {
    this.cached = boxInfo(await this.runtime.transport.json("GET", this.path));
    return this.cached;
  }

  async start(): Promise<void> {
    this.cached = boxInfo(await this.runtime.transport.json("POST", `${this.path}/start`));
    if (!this.cached.detach) this.runtime.owned.add(this.id);
  }

  /** Stop all processes; the writable layer is kept (`autoRemove` boxes are removed). */
  async stop(timeout?: number): Promise<void> {
    await this.runtime.transport.json("POST", `${this.path}/stop`, { query: { timeout } });
    this.runtime.owned.delete(this.id);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      await this.stop();
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
    }
  }

  /** Run `command ...args` in the box (starting it if needed) and return at once. */
  async exec(command: string, args: string[] = [], opts: ExecOptions = {}): Promise<Execution> {
    const channel = await Channel.open(this.runtime.transport, this.id, {
      command,
      args,
      env: opts.env ?? {},
      tty: opts.tty ?? false,
      user: opts.user ?? null,
      timeout_secs: opts.timeoutSecs ?? null,
      cwd: opts.cwd ?? null,
      stdin: opts.stdin ?? true,
      rows: opts.rows ?? 24,
      cols: opts.cols ?? 80,
    });
    if (!this.cached.detach) this.runtime.owned.add(this.id);
    return new Execution(channel);
  }

  /** Copy a host file or directory into the box (`docker cp` semantics). */
  async copyIn(hostPath: string, containerDest: string, opts: CopyOptions = {}): Promise<void> {
    const src = resolve(hostPath);
    try {
      await lstat(src);
    } catch {
      throw new NotFoundError(`no such host path: ${hostPath}`);
    }
    const name = basename(src);
    const tar = tarCreate({ cwd: dirname(src), portable: true, follow: opts.followSymlinks ?? false }, [name]);
    await this.runtime.transport.json("PUT", `${this.path}/archive`, {
      query: { path: containerDest, name, include_parent: opts.includeParent ?? true },
      body: Readable.from(tar),
      headers: { "content-type": "application/x-tar" },
    });
  }

  /** Copy a file or directory out of the box (ownership, devices and unsafe paths are dropped;
   * at most `maxBytes` of tar, `maxEntries` entries, within `timeoutMs`: the box, or the server,
   * may be hostile). */
  async copyOut(containerSrc: string, hostDest: string, opts: CopyOptions = {}): Promise<void> {
    const name = posix.basename(posix.normalize(`/${containerSrc}`)) || "root"; // the server's top-level member
    const maxBytes = opts.maxBytes ?? COPY_MAX_BYTES;
    const maxEntries = opts.maxEntries ?? COPY_MAX_ENTRIES;
    const timeoutMs = opts.timeoutMs ?? COPY_TIMEOUT_MS;
    const signal = timeoutMs > 0 ? AbortSignal.timeout(timeoutMs) : undefined;
    const res = await this.runtime.transport.stream("GET", `${this.path}/archive`, {
      query: { path: containerSrc },
      signal,
    });
    let received = 0;
    const capped = new Transform({
      transform(chunk: Buffer, _enc, done) {
        received += chunk.length;
        if (received > maxBytes) done(new ResourceExhaustedError(`copyOut received more than ${maxBytes} bytes`));
        else done(null, chunk);
      },
    });
    const dest = resolve(hostDest);
    const isDir = await stat(dest).then((s) => s.isDirectory(), () => false);
    let entries = 0;
    const extract = (cwd: string) => {
      const x = tarExtract({
        cwd,
        keep: opts.overwrite === false,
        preserveOwner: false,
        filter: (_p, entry) => {
          if (++entries > maxEntries) {
            x.abort(new ResourceExhaustedError(`copyOut received more than ${maxEntries} entries`));
            return false;
          }
          return SAFE_TYPES.has((entry as { type?: string }).type ?? "File");
        },
      });
      return x;
    };
    const run = async (cwd: string) => {
      try {
        await pipeline(res, capped, extract(cwd), { signal });
      } catch (e) {
        if (signal?.aborted) throw new TimeoutError(`copyOut did not finish within ${timeoutMs / 1000} s`);
        throw e;
      }
    };
    // Into an existing directory (as `name`), or as `dest` itself; staged beside it either way,
    // so a failed copy leaves the destination as it was.
    const [parent, target] = (opts.includeParent ?? true) && isDir ? [dest, name] : [dirname(dest), basename(dest)];
    await mkdir(parent, { recursive: true });
    const tmp = await mkdtemp(join(parent, ".boxlite-copy-"));
    try {
      await run(tmp);
      if (target !== name) await rename(join(tmp, name), join(tmp, target));
      await moveIntoPlace(tmp, parent, target, opts.overwrite !== false);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  async metrics(): Promise<BoxMetrics> {
    return camelize<BoxMetrics>(await this.runtime.transport.json("GET", `${this.path}/metrics`));
  }

  toString(): string {
    return `Box(id="${this.id}")`;
  }
}
