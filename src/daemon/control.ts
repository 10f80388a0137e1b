/**
 * The control socket: JSON-RPC 2.0 over a unix stream socket, one JSON object
 * per line. The socket is owner-only (0600). A bad request gets an error
 * response; it never takes the daemon down.
 */
import * as net from 'node:net';
import * as fs from 'node:fs';

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

const MAX_LINE = 1 << 20;

export class ControlServer {
  private server: net.Server | null = null;
  private readonly methods = new Map<string, RpcHandler>();
  readonly path: string;

  constructor(path: string) {
    this.path = path;
  }

  on(method: string, handler: RpcHandler): this {
    this.methods.set(method, handler);
    return this;
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

  async dispatch(line: string): Promise<string> {
    let req: RpcRequest;
    try {
      req = JSON.parse(line) as RpcRequest;
    } catch {
      return JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'parse error: request is not valid JSON' } });
    }
    const id = req?.id ?? null;
    if (typeof req !== 'object' || req === null || typeof req.method !== 'string') {
      return JSON.stringify({ jsonrpc: '2.0', id, error: { code: -32600, message: 'invalid request: expected {"method": string, "params": object}' } });
    }
    const h = this.methods.get(req.method);
    if (!h) return JSON.stringify({ jsonrpc: '2.0', id, error: { code: -32601, message: `unknown method '${req.method}'` } });
    const params = req.params ?? {};
    if (typeof params !== 'object' || params === null || Array.isArray(params)) {
      return JSON.stringify({ jsonrpc: '2.0', id, error: { code: -32602, message: 'params must be an object' } });
    }
    try {
      const result = await h(params);
      return JSON.stringify({ jsonrpc: '2.0', id, result: result ?? null });
    } catch (e) {
      const err = e as Error & { code?: unknown };
      const code = e instanceof RpcError ? e.code : -32000;
      return JSON.stringify({ jsonrpc: '2.0', id, error: { code, message: err.message, kind: err.name } });
    }
  }

  listen(): Promise<void> {
    try {
      fs.unlinkSync(this.path);
    } catch {
      /* none */
    }
    return new Promise((resolve, reject) => {
      const srv = net.createServer((sock) => {
        let buf = '';
        sock.setEncoding('utf8');
        sock.on('error', () => sock.destroy());
        sock.on('data', (chunk: string) => {
          buf += chunk;
          if (buf.length > MAX_LINE) {
            sock.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'request too large' } }) + '\n');
            buf = '';
            return;
          }
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            if (line.trim() === '') continue;
            void this.dispatch(line).then((resp) => {
              if (!sock.destroyed) sock.write(resp + '\n');
            });
          }
        });
      });
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
