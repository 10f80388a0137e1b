/**
 * ofproto/trace: run a flow (ovs-ofctl match syntax, e.g.
 * "in_port=1,dl_src=..,dl_dst=..") through a bridge's tables without a
 * packet, and report which rule matched in which table (in order, so
 * resubmits and goto_table show as the later tables), each rule's actions,
 * NORMAL's decision, the megaflow that would be installed and the datapath
 * actions, laid out as `ovs-appctl ofproto/trace` prints them. MAC learning
 * is consulted but not updated.
 */
import { FLOW_WORDS, W_IN_PORT, W_DL_HI, W_DL_SRC_LO, W_DL_DST_LO, W_TYPE_TCI, W_NW, W_TP, W_L3_SRC, W_L3_DST, W_VLAN2, VLAN_CFI, keyDlDst } from '../dp/flow-key.js';
import { formatProgram } from '../dp/actions.js';
import { xlate, type XlateEnv } from './xlate.js';
import { parseFlow, formatMatch, formatActions, DEFAULT_PRIORITY, OFPP_NORMAL, type PortResolver, type PortNamer } from './flow-syntax.js';
import { isMulticastMac } from './mac-learning.js';

export interface TraceStep {
  table: number;
  priority: number;
  match: string;
  actions: string;
  cookie: string;
}

export interface TraceResult {
  flow: string;
  steps: TraceStep[];
  megaflow: string;
  datapathActions: string;
  error?: string;
  text: string;
}

/**
 * The fields of a flow that OVS prints for it: L2 always, L3 for IPv4/IPv6/ARP,
 * L4 for TCP/UDP/SCTP/ICMP.
 */
function relevantMask(key: Uint32Array): Uint32Array {
  const m = new Uint32Array(FLOW_WORDS);
  for (const w of [W_IN_PORT, W_DL_HI, W_DL_SRC_LO, W_DL_DST_LO, W_TYPE_TCI]) m[w] = 0xffffffff;
  if (key[W_VLAN2] & VLAN_CFI) m[W_VLAN2] = 0xffffffff;
  const type = key[W_TYPE_TCI] >>> 16;
  if (type === 0x0800 || type === 0x86dd || type === 0x0806) {
    m[W_NW] = type === 0x0806 ? 0xff000000 : 0xffffff00;
    const n = type === 0x86dd ? 4 : 1;
    for (let i = 0; i < n; i++) {
      m[W_L3_SRC + i] = 0xffffffff;
      m[W_L3_DST + i] = 0xffffffff;
    }
    const proto = key[W_NW] >>> 24;
    if (type !== 0x0806 && [1, 6, 17, 58, 132].includes(proto)) m[W_TP] = 0xffffffff;
  }
  return m;
}

/** Trace `flowText` through `env` (the bridge named `bridge`). Throws FlowSyntaxError on a bad flow. */
export function traceFlow(env: XlateEnv, bridge: string, flowText: string, resolve?: PortResolver, namer?: PortNamer): TraceResult {
  const spec = parseFlow(flowText, { mode: 'match', resolvePort: resolve });
  const key = new Uint32Array(FLOW_WORDS);
  for (let i = 0; i < FLOW_WORDS; i++) key[i] = spec.match.key[i] & spec.match.mask[i];
  const flow = formatMatch({ key, mask: relevantMask(key) }, DEFAULT_PRIORITY);
  const r = xlate(env, key, 0, { learn: false });
  const steps: TraceStep[] = r.rules.map((rule) => ({
    table: rule.table,
    priority: rule.priority,
    match: formatMatch(rule.match, DEFAULT_PRIORITY),
    actions: formatActions(rule.actions),
    cookie: `0x${rule.cookie.toString(16)}`,
  }));
  const mkey = new Uint32Array(FLOW_WORDS);
  for (let i = 0; i < FLOW_WORDS; i++) mkey[i] = key[i] & r.mask[i];
  const mf = formatMatch({ key: mkey, mask: r.mask }, DEFAULT_PRIORITY);
  const megaflow = `recirc_id=0,eth${mf ? ',' + mf : ''}`;
  const dp = formatProgram(r.actions);
  const lines = [`Flow: ${flow}`, '', `bridge("${bridge}")`, '-'.repeat(bridge.length + 10)];
  if (r.error === 'unknown_in_port') {
    lines.push(` >> no input port ${key[W_IN_PORT]} on this bridge`);
  } else if (steps.length === 0) {
    lines.push(' 0. No match.', '    drop');
  }
  let prevTable = -1;
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i];
    const rule = r.rules[i];
    if (i > 0 && s.table <= prevTable) lines.push('');
    const m = s.match === '' ? '' : `${s.match}, `;
    lines.push(` ${s.table}. ${m}priority ${s.priority}${rule.cookie !== 0n ? `, cookie ${s.cookie}` : ''}`);
    lines.push(`    ${s.actions}`);
    if (rule.actions.some((a) => a.type === 'output' && (a as { port?: number }).port === OFPP_NORMAL)) {
      const dst = keyDlDst(key, 0);
      if (isMulticastMac(dst)) lines.push('     -> no learned MAC for destination, flooding');
      else {
        const tci = key[W_TYPE_TCI] & 0xffff;
        const port = env.macs.lookup(tci & VLAN_CFI ? tci & 0xfff : 0, dst, env.now);
        if (port === undefined) lines.push('     -> no learned MAC for destination, flooding');
        else if (port === key[W_IN_PORT]) lines.push('     -> learned port is input port, dropping');
        else lines.push(`     -> forwarding to learned port`);
      }
    }
    prevTable = s.table;
  }
  if (r.error !== undefined && r.error !== 'unknown_in_port') lines.push(` >> translation aborted: ${r.error}`);
  lines.push('', `Final flow: ${/set|push|pop/.test(dp) ? flow + ' (the datapath actions rewrite it)' : 'unchanged'}`);
  lines.push(`Megaflow: ${megaflow}`);
  lines.push(`Datapath actions: ${dp}`);
  return { flow, steps, megaflow, datapathActions: dp, error: r.error, text: lines.join('\n') };
}
