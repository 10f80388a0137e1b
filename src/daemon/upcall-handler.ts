/**
 * The slow path's handler for a batch of upcalls (where it runs: the daemon's
 * main thread; bench/micro/upcall.ts runs it alone): translate every miss
 * with its bridge's rules into one answer (megaflows to install, then the
 * actions for each held packet). Translation reuses the bridge's storage and
 * the answer builder's arrays, so a batch allocates little beyond the answer.
 */
import { FLOW_WORDS } from '../dp/flow-key.js';
import type { UpcallAnswerBuilder, UpcallBatch } from '../dp/upcall-batch.js';
import type { ControllerEvent, XlateError } from '../ofproto/xlate.js';
import type { Bridge } from './bridge.js';

export interface UpcallHandlerHooks {
  /** The bridge of a datapath port (undefined: the port is gone; the held packets are dropped). */
  bridgeOf(port: number): Bridge | undefined;
  /** A translation was cut off (too deep, too many resubmits, ...). */
  xlateError(br: Bridge, port: number, error: XlateError): void;
  /** output:CONTROLLER: send packet-ins (frame and program are the caller's to keep). */
  packetIns(br: Bridge, frame: Uint8Array, port: number, prog: Int32Array, evs: ControllerEvent[]): void;
}

/** Translate batch b into out (out.reset() first); now in ms. */
export function translateUpcalls(b: UpcallBatch, out: UpcallAnswerBuilder, now: number, hooks: UpcallHandlerHooks): void {
  out.reset(b.n);
  for (let i = 0; i < b.n; i++) {
    const id = b.ids[i];
    const portNo = b.ports[i];
    const br = hooks.bridgeOf(portNo);
    if (br === undefined) {
      out.reply(id, -1, 0);
      continue;
    }
    const frameLen = b.frameOff[i + 1] - b.frameOff[i];
    const r = br.translateUpcall(b.keys, i * FLOW_WORDS, now, frameLen);
    if (r.error) hooks.xlateError(br, portNo, r.error);
    if (r.controller.length > 0) {
      // output:CONTROLLER: packet-ins; the flow stays on the slow path (never installed)
      // (each packet held behind this one goes up on its own: every one is a packet-in)
      hooks.packetIns(br, b.frames.slice(b.frameOff[i], b.frameOff[i + 1]), portNo, r.actions.slice(), r.controller);
      out.reply(id, out.program(r.actions), r.actions.length, true);
      continue;
    }
    // duplicate upcalls of one megaflow in a batch install it once (hash of key and mask, then compared)
    let off = out.installed(r.key, r.mask);
    if (off < 0) {
      off = out.program(r.actions);
      out.install(r.key, r.mask, off, r.actions.length, out.lastHash, br.keepUpcall(now));
    }
    if (id >= 0) out.reply(id, off, r.actions.length); // (an upcall past the queue holds no packet: install only)
  }
}
