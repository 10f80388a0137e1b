/** `tsvs pci-bind` and `tsvs pci-list`: PCI devices for userspace drivers (src/sys/pci.ts). */
import { bindPciDevice, listPciDevices, hugepageCounts, BIND_DRIVERS, PciError, type BindDriver } from '../sys/pci.js';
import { UsageError } from '../util/options.js';

export async function runBind(values: Record<string, unknown>, positionals: string[]): Promise<number> {
  if (positionals.length !== 2) throw new UsageError(`expected PCI_ADDR DRIVER (DRIVER: ${BIND_DRIVERS.join(' | ')})`);
  const [addr, driver] = positionals;
  if (!(BIND_DRIVERS as readonly string[]).includes(driver)) throw new UsageError(`unknown driver '${driver}' (${BIND_DRIVERS.join(' | ')})`);
  try {
    const r = bindPciDevice(addr, driver as BindDriver, { force: values.force === true });
    if (values.json) process.stdout.write(JSON.stringify(r) + '\n');
    else if (r.unchanged) process.stdout.write(`${r.addr} is already bound to ${r.to}\n`);
    else process.stdout.write(`${r.addr}: ${r.from ?? 'no driver'} -> ${r.to}\n`);
    for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
    return 0;
  } catch (e) {
    if (e instanceof PciError) {
      process.stderr.write(`tsvs pci-bind: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}

const hex = (v: number, w: number): string => v.toString(16).padStart(w, '0');

export async function runList(values: Record<string, unknown>): Promise<number> {
  const devs = listPciDevices().filter((d) => values.all === true || d.classCode >> 16 === 0x02);
  if (values.json) {
    process.stdout.write(JSON.stringify({ devices: devs, hugepages: hugepageCounts() }) + '\n');
    return 0;
  }
  for (const d of devs) {
    process.stdout.write(
      `${d.addr}  ${hex(d.vendor, 4)}:${hex(d.device, 4)}  class ${hex(d.classCode, 6)}  driver=${d.driver ?? '-'}` +
        `${d.ifaces.length ? `  if=${d.ifaces.join(',')}` : ''}\n`,
    );
  }
  const hp = hugepageCounts();
  process.stdout.write(`hugepages (2 MiB): ${hp.free} free of ${hp.total}\n`);
  return 0;
}
