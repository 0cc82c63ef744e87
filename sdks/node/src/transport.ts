/** HTTP (unix socket or TCP) and WebSocket plumbing, bearer auth, typed errors. */

import http from "node:http";
import https from "node:https";
import type { Readable } from "node:stream";
import WebSocket from "ws";
import { BoxliteError, ConfigError, errorFromBody, ResourceExhaustedError, StoppedError, TimeoutError } from "./errors.js";

export type Query = Record<string, string | number | boolean | undefined | null>;

export interface RequestOptions {
  query?: Query;
  json?: unknown;
  body?: Readable;
  headers?: Record<string, string>;
  /** Milliseconds the whole exchange may take (default: 60 s for a GET, none otherwise). */
  deadlineMs?: number;
  signal?: AbortSignal;
}

/** Largest JSON answer read; a hostile server's endless body ends in an error, not in memory. */
export const MAX_ANSWER = 64 << 20;
/** Largest error body read. */
export const MAX_ERROR_ANSWER = 1 << 20;
/** Longest line of a streamed NDJSON answer (pull progress). */
export const MAX_LINE = 1 << 20;
/** Deadline of a read-only call (GET): such calls never wait for box work. */
export const QUICK_DEADLINE_MS = 60_000;

async function readAll(res: http.IncomingMessage, limit: number, url: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of res) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      res.destroy();
      throw new ResourceExhaustedError(`${url} sent an answer longer than ${limit} bytes; stopped reading`);
    }
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts);
}

function parse(text: Buffer): unknown {
  try {
    return JSON.parse(text.toString("utf8"));
  } catch {
    return text.toString("utf8");
  }
}

/** Talks to one server: `unix:///path/to.sock` or `http(s)://host:port`. */
export class Transport {
  readonly url: string;
  readonly headers: Record<string, string>;
  private readonly socketPath?: string;
  private readonly base?: URL;
  closed = false;

  constructor(url: string, apiKey?: string) {
    this.url = url;
    this.headers = apiKey ? { authorization: `Bearer ${apiKey}` } : {};
    if (url.startsWith("unix://")) {
      this.socketPath = url.slice("unix://".length);
    } else if (/^https?:\/\//.test(url)) {
      this.base = new URL(url);
    } else {
      throw new ConfigError(`server URL must be unix:///path or http(s)://host:port, got ${url}`);
    }
  }

  private check(): void {
    if (this.closed) throw new StoppedError("this runtime was shut down");
  }

  /** Send a request; resolves with the response once its headers arrived (any status). */
  raw(method: string, path: string, opts: RequestOptions = {}): Promise<http.IncomingMessage> {
    this.check();
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined && v !== null) qs.set(k, String(v));
    const fullPath = path + (qs.size ? `?${qs}` : "");
    const headers: Record<string, string> = { ...this.headers, ...opts.headers };
    let payload: Buffer | undefined;
    if (opts.json !== undefined) {
      payload = Buffer.from(JSON.stringify(opts.json));
      headers["content-type"] = "application/json";
      headers["content-length"] = String(payload.length);
    }
    const target = this.socketPath
      ? { socketPath: this.socketPath, host: "boxlite", path: fullPath }
      : { host: this.base!.hostname, port: this.base!.port, path: (this.base!.pathname.replace(/\/$/, "")) + fullPath };
    const lib = this.base?.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
      const req = lib.request({ ...target, method, headers, signal: opts.signal }, resolve);
      req.on("error", reject);
      if (opts.body) {
        opts.body.on("error", (e) => req.destroy(e));
        opts.body.pipe(req);
      } else {
        req.end(payload);
      }
    });
  }

  /** A request whose JSON answer is returned (null for 204); errors become typed exceptions. */
  async json<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const deadline = opts.deadlineMs ?? (method === "GET" ? QUICK_DEADLINE_MS : undefined);
    const signal = deadline === undefined ? opts.signal : AbortSignal.timeout(deadline);
    try {
      const res = await this.raw(method, path, { ...opts, signal });
      const failed = (res.statusCode ?? 500) >= 400;
      const body = await readAll(res, failed ? MAX_ERROR_ANSWER : MAX_ANSWER, this.url);
      if (failed) throw errorFromBody(parse(body), res.statusCode);
      return (res.statusCode === 204 ? null : parse(body)) as T;
    } catch (e) {
      if (signal?.aborted && deadline !== undefined && !(e instanceof BoxliteError)) {
        throw new TimeoutError(`${this.url} did not answer ${method} ${path} within ${deadline / 1000} s`);
      }
      throw e;
    }
  }

  /** A streamed response body (throws the typed error for a failed request). */
  async stream(method: string, path: string, opts: RequestOptions = {}): Promise<http.IncomingMessage> {
    const res = await this.raw(method, path, opts);
    if ((res.statusCode ?? 500) >= 400) {
      throw errorFromBody(parse(await readAll(res, MAX_ERROR_ANSWER, this.url)), res.statusCode);
    }
    return res;
  }

  /** An open WebSocket to `path`. */
  websocket(path: string): Promise<WebSocket> {
    this.check();
    const url = this.socketPath
      ? `ws+unix://${this.socketPath}:${path}`
      : `${this.base!.protocol === "https:" ? "wss" : "ws"}://${this.base!.host}${this.base!.pathname.replace(/\/$/, "")}${path}`;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: this.headers, perMessageDeflate: false, maxPayload: 1 << 21 });
      ws.binaryType = "nodebuffer";
      ws.once("open", () => resolve(ws));
      ws.on("error", reject); // later errors: the socket closes and the channel sees "close"
      ws.once("unexpected-response", (_req, res) => {
        readAll(res, MAX_ERROR_ANSWER, this.url)
          .then((body) => reject(errorFromBody(parse(body), res.statusCode)), reject)
          .finally(() => ws.terminate());
      });
    });
  }
}
