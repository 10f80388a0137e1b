/**
 * The control socket: JSON-RPC 2.0 over a unix stream socket, one JSON object
 * per line. The socket is owner-only (0600). A bad request gets an error
 * response; it never takes the daemon down: a parse error, a handler's
 * exception or an answer that cannot be serialised all become JSON-RPC errors.
 *
 * Requests of one connection are answered one at a time, in order (as OVS's
 * unixctl), so a client may pipeline `add-flow` and then `dump-dp-flows` and
 * the second sees the first's effect. Backpressure: a connection is not read
 * while it has MAX_PENDING requests waiting, and no request is handled while
 * more than MAX_OUTPUT bytes of its answers wait to be sent; so a client that
 * pipelines requests and never reads holds at most about MAX_OUTPUT bytes of
 * answers plus one read chunk of requests in the daemon.
 */
import * as net from 'node:net';
import * as fs from 'node:fs';
import { JsonSplitter } from '../ovsdb/json-stream.js';

export interface RpcRequest {
  jsonrpc?: '2.0';
  id?: number | string | null;
  method: string;
  params?: Record<string, unknown>;
}

export class RpcError extends Error {
  readonly code: number;
  constructor(message: string, code = -32000) {
    super(message);
    this.name = 'RpcError';
    this.code = code;
  }
}

export type RpcHandler = (params: Record<string, unknown>) => unknown | Promise<unknown>;

/**
 * OVS's unixctl (ovs-appctl): JSON-RPC 1.0, `params` an array of strings,
 * answered with {id, result: text, error: null} or {id, result: null, error: text}.
 */
export type UnixctlHandler = (method: string, args: string[]) => Promise<{ result: string | null; error: string | null }>;

/** Longest request line, bytes. */
export const MAX_LINE = 1 << 20;
/** Requests read but not yet handled, per connection, before reading stops. */
export const MAX_PENDING = 64;
/** Answer bytes waiting to be sent, per connection, before handling stops until the client reads. */
export const MAX_OUTPUT = 1 << 20;

function errorResponse(id: unknown, code: number, message: string, kind?: string): string {
  return JSON.stringify({ jsonrpc: '2.0', id, error: kind === undefined ? { code, message } : { code, message, kind } });
}

function validId(id: unknown): number | string | null {
  return typeof id === 'number' || typeof id === 'string' ? id : null;
}

export class ControlServer {
  private server: net.Server | null = null;
  private readonly methods = new Map<string, RpcHandler>();
  private readonly conns = new Set<net.Socket>();
  readonly path: string;
  /** Requests in OVS unixctl shape (no "jsonrpc", params an array) go here when set. */
  unixctl: UnixctlHandler | null = null;

  constructor(path: string) {
    this.path = path;
  }

  on(method: string, handler: RpcHandler): this {
    this.methods.set(method, handler);
    return this;
  }

  /** The handler registered for method, if any (to wrap or replace it). */
  handler(method: string): RpcHandler | undefined {
    return this.methods.get(method);
  }

  /** Run a method in-process (observers: the web dashboard, metrics). */
  async invoke(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const h = this.methods.get(method);
    if (!h) throw new RpcError(`unknown method '${method}'`, -32601);
    return h(params);
  }

  listMethods(): string[] {
    return [...this.methods.keys()].sort();
  }

  /** Answer one request line; never throws. */
  async dispatch(line: string): Promise<string> {
    let id: number | string | null = null;
    try {
      let req: RpcRequest;
      try {
        req = JSON.parse(line) as RpcRequest;
      } catch {
        return errorResponse(null, -32700, 'parse error: request is not valid JSON');
      }
      if (typeof req !== 'object' || req === null || Array.isArray(req) || typeof req.method !== 'string') {
        id = validId((req as { id?: unknown } | null)?.id);
        return errorResponse(id, -32600, 'invalid request: expected {"method": string, "params": object}');
      }
      id = validId(req.id);
      const raw = req as unknown as { jsonrpc?: unknown; params?: unknown };
      if (this.unixctl && raw.jsonrpc === undefined && Array.isArray(raw.params)) {
        // ovs-appctl: JSON-RPC 1.0 reply shape, text result
        const args = (raw.params as unknown[]).map((a) => String(a));
        try {
          const r = await this.unixctl(req.method, args);
          return JSON.stringify({ id, result: r.result, error: r.error });
        } catch (e) {
          return JSON.stringify({ id, result: null, error: e instanceof Error ? e.message : String(e) });
        }
      }
      const h = this.methods.get(req.method);
      if (!h) return errorResponse(id, -32601, `unknown method '${req.method.slice(0, 100)}'`);
      const params = req.params ?? {};
      if (typeof params !== 'object' || params === null || Array.isArray(params)) {
        return errorResponse(id, -32602, 'params must be an object');
      }
      let result: unknown;
      try {
        result = await h(params);
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        const code = e instanceof RpcError ? e.code : -32000;
        return errorResponse(id, code, err.message, err.name);
      }
      return JSON.stringify({ jsonrpc: '2.0', id, result: result ?? null });
    } catch (e) {
      return errorResponse(id, -32603, `internal error: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** Read requests from one connection and answer them in order, with backpressure. */
  private serve(sock: net.Socket): void {
    this.conns.add(sock);
    let partial = '';
    const pending: string[] = [];
    let busy = false;
    sock.setEncoding('utf8');
    sock.on('error', () => sock.destroy());
    sock.on('close', () => {
      this.conns.delete(sock);
      pending.length = 0;
    });
    const waitWritable = (): Promise<void> =>
      new Promise((resolve) => {
        const done = (): void => {
          sock.off('drain', done);
          sock.off('close', done);
          resolve();
        };
        sock.on('drain', done);
        sock.on('close', done);
      });
    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        while (pending.length > 0 && !sock.destroyed) {
          if (sock.writableLength > MAX_OUTPUT) {
            await waitWritable();
            continue;
          }
          const line = pending.shift()!;
          if (pending.length < MAX_PENDING / 2 && sock.isPaused()) sock.resume();
          const resp = await this.dispatch(line);
          if (sock.destroyed || !sock.writable) break;
          sock.write(resp + '\n');
        }
      } finally {
        busy = false;
      }
      if (!sock.destroyed && sock.isPaused() && pending.length < MAX_PENDING) sock.resume();
    };
    sock.on('data', (chunk: string) => {
      partial += chunk;
      const lines = partial.split('\n');
      partial = lines.pop()!;
      if (partial.length > MAX_LINE) {
        pending.length = 0;
        partial = '';
        sock.end(errorResponse(null, -32600, `request too large (over ${MAX_LINE} bytes without a newline)`) + '\n');
        return;
      }
      for (const l of lines) if (l.trim() !== '') pending.push(l);
      if (partial.startsWith('{')) {
        // ovs-appctl sends one JSON object with no newline after it
        try {
          const sp = new JsonSplitter(MAX_LINE);
          const vals = sp.push(partial);
          if (vals.length > 0 && sp.pending === 0) {
            pending.push(...vals);
            partial = '';
          }
        } catch {
          /* not JSON: answered as a bad line once its newline comes */
        }
      }
      if (pending.length >= MAX_PENDING) sock.pause();
      void pump();
    });
  }

  listen(): Promise<void> {
    try {
      fs.unlinkSync(this.path);
    } catch {
      /* none */
    }
    return new Promise((resolve, reject) => {
      const srv = net.createServer((sock) => this.serve(sock));
      srv.once('error', reject);
      const old = process.umask(0o177);
      srv.listen(this.path, () => {
        process.umask(old);
        fs.chmodSync(this.path, 0o600);
        this.server = srv;
        resolve();
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server) return resolve();
      this.server.close(() => resolve());
      this.server = null;
      // a client that never reads must not keep the daemon from stopping
      for (const c of this.conns) {
        if (c.writableLength > 0) c.destroy();
        else {
          c.end();
          setTimeout(() => c.destroy(), 1000).unref();
        }
      }
      try {
        fs.unlinkSync(this.path);
      } catch {
        /* gone */
      }
    });
  }
}

/** Call one method on a running daemon. Throws RpcError with the daemon's message. */
export function rpcCall(sockPath: string, method: string, params: Record<string, unknown> = {}, timeoutMs = 30000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(sockPath);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new RpcError(`no answer from the daemon at ${sockPath} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
        reject(new RpcError(`cannot reach the tsvs daemon at ${sockPath} (${e.code}): is 'tsvs daemon' running with the same run dir (TSVS_RUN_DIR / --run-dir)?`));
      } else reject(e);
    });
    sock.on('connect', () => sock.write(JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) + '\n'));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      sock.end();
      const resp = JSON.parse(buf.slice(0, nl)) as { result?: unknown; error?: { code: number; message: string } };
      if (resp.error) reject(new RpcError(resp.error.message, resp.error.code));
      else resolve(resp.result);
    });
  });
}
