/**
 * `tsvs daemon --ovsdb REMOTE`: the switch configured by a real ovsdb-server
 * (see src/ovsdb/vswitchd.ts). Our own add-br/del-br/add-port/del-port then
 * write the database instead of the switch, and `ovsdb-status` reports the
 * connection.
 */
import type { Logger } from 'pino';
import type { Switch } from './switch.js';
import { RpcError } from './control.js';
import { OvsdbVswitchd } from '../ovsdb/vswitchd.js';
import { ctlAddBr, ctlDelBr, ctlAddPort, ctlDelPort, ctlSetPort } from '../ovsdb/ctl-writes.js';
import { parseRemote } from '../ovsdb/client.js';

export function startOvsdbMode(sw: Switch, remote: string, log: Logger, statsMs?: number): OvsdbVswitchd {
  parseRemote(remote); // a bad remote is a usage error, before anything starts
  const c = sw.control;
  // the switch's own methods, kept for the reconciler
  const direct = new Map<string, (p: Record<string, unknown>) => unknown>();
  for (const m of ['add-br', 'del-br', 'add-port', 'del-port', 'set-port']) direct.set(m, c.handler(m)!);
  const v = new OvsdbVswitchd({
    remote,
    statsMs,
    log: { info: (m) => log.info(m), warn: (m) => log.warn(m), debug: (m) => log.debug(m) },
    sw: {
      runDir: sw.paths.dir,
      call: async (method, params) => {
        const h = direct.get(method);
        return h ? h(params) : c.invoke(method, params);
      },
    },
  });
  const wrap = (f: (p: Record<string, unknown>) => Promise<unknown>) => async (p: Record<string, unknown>): Promise<unknown> => {
    try {
      return await f(p);
    } catch (e) {
      throw new RpcError((e as Error).message);
    }
  };
  c.on('add-br', wrap(async (p) => (await ctlAddBr(v, String(p.bridge ?? '')), { text: '' })));
  c.on('del-br', wrap(async (p) => (await ctlDelBr(v, String(p.bridge ?? '')), { text: '' })));
  c.on('add-port', wrap(async (p) => {
    const r = await ctlAddPort(v, p, v.vhostSockDir());
    return { text: String(p.type) === 'vhost-user' ? `${String(p.name)}: vhost-user socket ${r.path}` : '', data: r };
  }));
  c.on('set-port', wrap(async (p) => (await ctlSetPort(v, p), { text: '' })));
  c.on('del-port', wrap(async (p) => (await ctlDelPort(v, String(p.bridge ?? ''), String(p.name ?? '')), { text: '' })));
  c.on('ovsdb-status', () => {
    const data = { remote, connected: v.connected, lock: v.hasLock, cur_cfg: v.appliedCfg, sessions: v.client.sessions };
    return { text: `ovsdb ${remote}: ${data.connected ? 'connected' : 'not connected'}, lock ${data.lock ? 'held' : 'not held'}, cur_cfg ${data.cur_cfg}, sessions ${data.sessions}`, data };
  });
  v.start();
  log.info(`OVSDB mode: configuration from ${remote} (conf.json is not used)`);
  return v;
}
