/** Options and results, camelCase versions of the Python SDK's dataclasses. */

export interface NetworkSpec {
  mode?: string;
  allowNet?: string[];
  /** Outbound flows to public addresses only (no private, CGNAT or unique-local network). */
  publicOnly?: boolean;
}

/** How to build and run one box (`boxlite.BoxOptions`). `rootfsPath` is a path on the server's host. */
export interface BoxOptions {
  image?: string;
  rootfsPath?: string;
  cpus?: number;
  memoryMib?: number;
  diskSizeGb?: number;
  workingDir?: string;
  env?: Record<string, string> | Array<[string, string]>;
  volumes?: unknown[];
  network?: NetworkSpec | string;
  ports?: unknown[];
  autoRemove?: boolean;
  detach?: boolean;
  entrypoint?: string[];
  cmd?: string[];
  user?: string;
  engine?: "auto" | "namespace" | "vm";
  pidsLimit?: number;
  hostname?: string;
  readyTimeout?: number;
}

export interface ExecOptions {
  env?: Record<string, string>;
  tty?: boolean;
  user?: string;
  /** Kill the command after this many seconds (the status reports `timedOut`). */
  timeoutSecs?: number;
  cwd?: string;
  stdin?: boolean;
  rows?: number;
  cols?: number;
}

export interface CopyOptions {
  overwrite?: boolean;
  followSymlinks?: boolean;
  includeParent?: boolean;
  /** copyOut: tar bytes received at most (default 4 GiB, as Python's `CopyOptions.max_bytes`). */
  maxBytes?: number;
  /** copyOut: files, directories and links at most (default 500,000). */
  maxEntries?: number;
  /** copyOut: milliseconds the whole copy may take (default one hour; 0: no deadline). */
  timeoutMs?: number;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  timedOut?: boolean;
  errorMessage?: string | null;
}

export interface BoxInfo {
  id: string;
  name: string | null;
  state: { status: string; running: boolean; pid: number | null };
  status: string;
  createdAt: string;
  startedAt: string | null;
  image: string;
  cpus: number | null;
  memoryMib: number | null;
  engine: string;
  detach: boolean;
  autoRemove: boolean;
}

export interface BoxMetrics {
  commandsExecutedTotal: number;
  execErrorsTotal: number;
  bytesSentTotal: number;
  bytesReceivedTotal: number;
  totalCreateDurationMs: number | null;
  guestBootDurationMs: number | null;
  cpuPercent: number | null;
  cpuTimeMs: number | null;
  memoryBytes: number | null;
  memoryPeakBytes: number | null;
  pids: number | null;
  extra: Record<string, number>;
}

export interface RuntimeMetrics {
  boxesCreatedTotal: number;
  boxesFailedTotal: number;
  numRunningBoxes: number;
  totalCommandsExecuted: number;
  totalExecErrors: number;
}

export interface ImageInfo {
  reference: string;
  digest: string;
  imageId: string;
  size: number;
  created: string | null;
}

export interface PullProgress {
  layer: string;
  downloaded: number;
  total: number;
  done: boolean;
}

const camel = (s: string): string => s.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());
const snake = (s: string): string => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** snake_case JSON object → camelCase (one level; `extra` and `state` values are kept). */
export function camelize<T>(obj: Record<string, unknown>): T {
  return Object.fromEntries(Object.entries(obj).map(([k, v]) => [camel(k), v])) as T;
}

export function boxInfo(raw: Record<string, unknown>): BoxInfo {
  const info = camelize<BoxInfo>(raw);
  info.status = info.state.status;
  return info;
}

/** `BoxOptions` as the server's JSON (snake_case; undefined fields left to the server's defaults). */
export function optionsJson(options: BoxOptions): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(options)) {
    if (v === undefined) continue;
    if (k === "env") out.env = Array.isArray(v) ? Object.fromEntries(v as Array<[string, string]>) : v;
    else if (k === "network" && typeof v === "object" && v !== null) {
      const net = v as NetworkSpec;
      out.network = { mode: net.mode ?? "enabled", allow_net: net.allowNet ?? [], public_only: net.publicOnly ?? false };
    } else out[snake(k)] = v;
  }
  return out;
}
