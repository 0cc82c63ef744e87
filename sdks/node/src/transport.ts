/** HTTP (unix socket or TCP) and WebSocket plumbing, bearer auth, typed errors. */

import http from "node:http";
import https from "node:https";
import type { Readable } from "node:stream";
import WebSocket from "ws";
import { ConfigError, errorFromBody, StoppedError } from "./errors.js";

export type Query = Record<string, string | number | boolean | undefined | null>;

export interface RequestOptions {
  query?: Query;
  json?: unknown;
  body?: Readable;
  headers?: Record<string, string>;
}

async function readAll(res: http.IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of res) parts.push(chunk as Buffer);
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
      const req = lib.request({ ...target, method, headers }, resolve);
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
    const res = await this.raw(method, path, opts);
    const body = await readAll(res);
    if ((res.statusCode ?? 500) >= 400) throw errorFromBody(parse(body), res.statusCode);
    return (res.statusCode === 204 ? null : parse(body)) as T;
  }

  /** A streamed response body (throws the typed error for a failed request). */
  async stream(method: string, path: string, opts: RequestOptions = {}): Promise<http.IncomingMessage> {
    const res = await this.raw(method, path, opts);
    if ((res.statusCode ?? 500) >= 400) throw errorFromBody(parse(await readAll(res)), res.statusCode);
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
        readAll(res)
          .then((body) => reject(errorFromBody(parse(body), res.statusCode)), reject)
          .finally(() => ws.terminate());
      });
    });
  }
}
