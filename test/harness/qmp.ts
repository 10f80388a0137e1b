/**
 * A minimal QMP client (QEMU Machine Protocol over a unix socket) for tests that drive QEMU at
 * run time, e.g. live migration: give QEMU `-qmp unix:PATH,server=on,wait=off`, then
 * `const q = await Qmp.connect(PATH)` and `await q.execute("migrate", { uri })`. Commands are
 * answered in order; asynchronous events are collected in `events`.
 */
import * as net from "node:net";
import { waitFor } from "./wait.js";

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export class QmpError extends Error {
  override readonly name = "QmpError";
}

export class Qmp {
  readonly events: QmpEvent[] = [];
  private buf = "";
  private pending: { resolve: (v: unknown) => void; reject: (e: Error) => void; what: string }[] = [];
  private closed = false;

  private constructor(private readonly sock: net.Socket) {
    sock.setEncoding("utf8");
    sock.on("data", (s: string) => this.onData(s));
    sock.on("close", () => {
      this.closed = true;
      for (const p of this.pending) p.reject(new QmpError(`QMP connection closed before the reply to ${p.what}`));
      this.pending = [];
    });
    sock.on("error", () => undefined); // reported through close
  }

  /** Connects (retrying while QEMU has not created the socket yet), reads the greeting, enters command mode. */
  static async connect(path: string, timeoutMs = 20_000): Promise<Qmp> {
    let last = "";
    const sock = await waitFor(
      () =>
        new Promise<net.Socket | null>((resolve) => {
          const s = net.connect(path, () => resolve(s));
          s.once("error", (e) => {
            last = e.message;
            resolve(null);
          });
        }),
      { what: `QMP socket ${path}`, timeout: timeoutMs, interval: 100, describe: () => last },
    );
    const q = new Qmp(sock);
    await q.greeting();
    await q.execute("qmp_capabilities");
    return q;
  }

  private greetingWaiter: ((v: unknown) => void) | null = null;
  private greeted = false;

  private greeting(): Promise<unknown> {
    if (this.greeted) return Promise.resolve(true);
    return new Promise((resolve) => (this.greetingWaiter = resolve));
  }

  private onData(s: string): void {
    this.buf += s;
    let nl: number;
    while ((nl = this.buf.indexOf("\n")) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ("QMP" in msg) {
        this.greeted = true;
        this.greetingWaiter?.(true);
      } else if ("event" in msg) {
        this.events.push(msg as unknown as QmpEvent);
      } else if ("return" in msg || "error" in msg) {
        const p = this.pending.shift();
        if (!p) continue;
        if ("error" in msg) {
          const err = msg.error as { class?: string; desc?: string };
          p.reject(new QmpError(`${p.what}: ${err.class ?? "error"}: ${err.desc ?? JSON.stringify(err)}`));
        } else {
          p.resolve(msg.return);
        }
      }
    }
  }

  /** Runs a command and resolves with its `return` value (rejects with the QMP error). */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(new QmpError(`QMP connection closed (${command})`));
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ resolve: resolve as (v: unknown) => void, reject, what: command });
      this.sock.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + "\n");
    });
  }

  close(): void {
    this.sock.destroy();
  }
}
