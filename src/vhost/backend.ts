/**
 * The vhost-user backend: the socket side (server: listen and accept; client:
 * connect and reconnect with backoff, both through endpoint.ts; one frontend
 * connection at a time) over the protocol side in backend-protocol.ts, which
 * handles the session of the connected frontend.
 *
 * Where it runs: on the event loop of the PMD worker that polls the port (the daemon), or of
 * whichever thread made the backend (tests, tsvs testpmd).
 */
import type { UnixSocket } from '../sys/socket.js';
import { validateRequest } from './messages.js';
import { VhostConnection } from './connection.js';
import { SocketEndpoint } from './endpoint.js';
import { peerPid } from './peer.js';
import { LogLimiter, VhostUserProtocol, type ProtocolOptions } from './backend-protocol.js';

export interface BackendOptions extends Omit<ProtocolOptions, 'name'> {
  /** Unix socket path. */
  path: string;
  /** Connect to a listening frontend (true) or listen (false, default). */
  client?: boolean;
  /** Name for logs (default: the path). */
  name?: string;
  /** Client mode: longest delay between reconnect attempts (default 1000 ms). */
  reconnectMaxMs?: number;
  /** Client mode: first delay (default 20 ms). */
  reconnectMinMs?: number;
  /** A frontend's message must complete this many ms after its first byte (default 10000, see VhostConnection). */
  messageTimeoutMs?: number;
}

export class VhostUserBackend extends VhostUserProtocol {
  readonly path: string;
  readonly client: boolean;
  /** Listening / connecting and reconnecting (shared with the frontend). */
  private readonly endpoint: SocketEndpoint;
  private closed = false;
  private started = false;
  private readonly reconnectMin: number;
  private readonly reconnectMax: number;
  private readonly messageTimeoutMs: number | undefined;
  /** Lines about frontends coming and going (connected, disconnected, refused, closed by us). */
  private readonly connLog: LogLimiter;

  constructor(opts: BackendOptions) {
    super({ ...opts, name: opts.name ?? opts.path });
    this.path = opts.path;
    this.client = opts.client ?? false;
    this.reconnectMin = opts.reconnectMinMs ?? 20;
    this.reconnectMax = opts.reconnectMaxMs ?? 1000;
    this.messageTimeoutMs = opts.messageTimeoutMs;
    this.connLog = new LogLimiter(2 * this.warnPer10s);
    this.endpoint = new SocketEndpoint({
      path: this.path,
      client: this.client,
      reconnectMinMs: this.reconnectMin,
      reconnectMaxMs: this.reconnectMax,
      busy: () => this.connected,
      onSocket: (s) => {
        this.endpoint.resetBackoff();
        this.attachSocket(s);
      },
      onConnectError: (e, ms) => this.log.log('debug', `${this.name}: connect: ${e.message}; retry in ${ms} ms`),
      onAcceptError: (e) => this.log.log('warn', `${this.name}: accept: ${e.message}`),
    });
  }

  get connected(): boolean {
    return this.conn !== null && !this.conn.isClosed;
  }

  /** Listen (server) or start connecting (client). */
  start(): void {
    if (this.started) throw new Error('backend already started');
    this.started = true;
    this.endpoint.start();
  }

  /**
   * Serve one already-connected socket (tests over socketpairs, or a caller
   * that accepted itself). Refused (socket closed) if a frontend is connected.
   */
  attachSocket(sock: UnixSocket): boolean {
    if (this.closed || this.connected) {
      // rate-limited like warnings about messages (a frontend reconnecting in a loop must not flood the log)
      this.connLine('warn', 'refusing a second frontend connection (one at a time)');
      sock.close();
      return false;
    }
    this.stats.connections++;
    const conn: VhostConnection = new VhostConnection(sock, {
      validate: (hdr, payload, nfds) => {
        validateRequest(hdr, payload, nfds);
      },
      onMessage: (msg) => this.enqueue(() => this.handle(conn, msg)),
      onInvalid: (hdr, err) => this.onInvalid(conn, hdr, err),
      onClose: (err) => {
        if (err) {
          this.stats.closeReasons[err.reason] = (this.stats.closeReasons[err.reason] ?? 0) + 1;
          this.connLine('warn', `closing frontend connection: ${err.message} [${err.reason}]`);
        }
        this.flushSuppressed();
        void this.enqueue(() => this.onDisconnect(conn, err ? `${err.reason}: ${err.message}` : null));
      },
    }, { messageTimeoutMs: this.messageTimeoutMs });
    this.conn = conn;
    this.peer = peerPid(sock.fd);
    this.connLine('info', `frontend connected${this.peer > 0 ? ` (pid ${this.peer})` : ''}`);
    this.emit('connect');
    conn.start();
    return true;
  }

  /** Disconnect the frontend (if any) and stay available for the next one. */
  dropConnection(): void {
    this.conn?.close(null);
  }

  /** Stop everything: disconnect, unmap, close fds and the socket. Resolves when done. */
  async close(): Promise<void> {
    if (this.closed) return this.serial;
    this.closed = true;
    this.endpoint.close();
    this.conn?.close(null);
    await this.enqueue(async () => {
      await this.resetSession();
    });
  }

  private async onDisconnect(conn: VhostConnection, reason: string | null): Promise<void> {
    if (this.conn !== conn) return;
    this.conn = null;
    this.stats.disconnects++;
    await this.resetSession();
    this.connLine('info', `frontend disconnected${reason ? ` (${reason})` : ''}`);
    this.emit('disconnect', reason);
    if (!this.closed) {
      // client: connect again, from the shortest delay (a server keeps listening)
      this.endpoint.resetBackoff();
      this.endpoint.retry();
    }
  }

  /** A frontend came, went or was refused: logged, rate-limited (a frontend reconnecting in a loop must not flood the log). */
  private connLine(level: 'info' | 'warn', msg: string): void {
    if (!this.connLog.allow()) {
      this.stats.suppressedWarnings++;
      return;
    }
    const n = this.connLog.takeSuppressed();
    this.log.log(level, `${this.name}: ${msg}${n > 0 ? ` (${n} lines about connections suppressed before this one)` : ''}`);
  }
}
