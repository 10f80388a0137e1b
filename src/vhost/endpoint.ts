/**
 * The socket side of a vhost-user endpoint, written once for both ends (the
 * backend, backend.ts, and the frontend, frontend.ts): as a server, listen on
 * the path and hand every accepted socket to the owner (which serves one peer
 * at a time and refuses the others); as a client, connect and, while that
 * fails or after the owner lost its peer, try again with exponential backoff.
 * The protocol is the owner's business. Runs on the thread that owns the port
 * (in the daemon: the port's PMD worker), on that thread's event loop.
 */
import { UnixSocket, UnixListener } from '../sys/socket.js';
import { watchReadable, type FdWatch } from '../sys/poll.js';

export interface EndpointOptions {
  path: string;
  /** Connect to a listening peer (true) or listen (false). */
  client: boolean;
  /** Client: first delay between attempts and the longest, ms (each failure doubles it). */
  reconnectMinMs: number;
  reconnectMaxMs: number;
  /** A connected socket (accepted or connected): the owner serves it or closes it. */
  onSocket(sock: UnixSocket): void;
  /** Client: the owner has a peer, no attempt is needed now. */
  busy(): boolean;
  /** Client: an attempt failed; the next is in `retryInMs`. */
  onConnectError?(e: Error, retryInMs: number): void;
  /** Server: accept() failed (the listener stays). */
  onAcceptError?(e: Error): void;
}

export class SocketEndpoint {
  private listener: UnixListener | null = null;
  private listenWatch: FdWatch | null = null;
  private timer: NodeJS.Timeout | null = null;
  private delay: number;
  private closed = false;

  constructor(private readonly o: EndpointOptions) {
    this.delay = o.reconnectMinMs;
  }

  /** Listen (server; throws if the path cannot be bound) or make the first attempt (client). */
  start(): void {
    if (this.o.client) this.tryConnect();
    else {
      this.listener = UnixListener.listen(this.o.path);
      this.listenWatch = watchReadable(this.listener.fd, () => this.onAcceptable());
    }
  }

  /** Client: the next attempt starts from the shortest delay again. */
  resetBackoff(): void {
    this.delay = this.o.reconnectMinMs;
  }

  /** Client: schedule the next attempt (no-op for a server, when closed, or when one is scheduled). */
  retry(): void {
    if (this.closed || !this.o.client || this.timer) return;
    const d = this.delay;
    this.delay = Math.min(this.o.reconnectMaxMs, this.delay * 2);
    this.timer = setTimeout(() => this.tryConnect(), d);
  }

  /** Stop listening and retrying (the owner closes its connection itself). */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.listenWatch?.close();
    this.listenWatch = null;
    this.listener?.close();
    this.listener = null;
  }

  private tryConnect(): void {
    this.timer = null;
    if (this.closed || this.o.busy()) return;
    let s: UnixSocket;
    try {
      s = UnixSocket.connect(this.o.path);
    } catch (e) {
      this.o.onConnectError?.(e as Error, this.delay);
      this.retry();
      return;
    }
    this.o.onSocket(s);
  }

  private onAcceptable(): void {
    for (;;) {
      if (!this.listener) return;
      let s: UnixSocket | null;
      try {
        s = this.listener.accept();
      } catch (e) {
        this.o.onAcceptError?.(e as Error);
        return;
      }
      if (!s) return;
      this.o.onSocket(s);
    }
  }
}
