/**
 * Control methods for observers: `observe` answers one view of the switch
 * (shared-memory counters and topology) and, with flows=true, the datapath
 * flow table (tsvs top, the dashboard).
 */
import type { MethodTable, ObservableSwitch, DpFlowRow } from './view.js';

export async function dpFlows(sw: ObservableSwitch): Promise<DpFlowRow[]> {
  const r = (await sw.call('dump-dp-flows')) as { data?: DpFlowRow[] } | null;
  return r?.data ?? [];
}

export function registerObserveMethods(c: MethodTable, sw: ObservableSwitch): void {
  c.on('observe', async (p) => {
    const view = sw.view();
    const flows = p.flows === true ? await dpFlows(sw) : undefined;
    return { text: JSON.stringify(view), data: { view, flows } };
  });
}
