/**
 * tsvs as a library: the public API, layer by layer.
 *
 *   import { Mempool, VirtioUserPort, VhostUserPort, BURST } from 'tsvs';
 */
// sys
export { SysError, errnoName, memfdCreate, mmap, munmap, eventfd, eventfdRead, eventfdWrite, setAffinity } from './sys/libc.js';
export { UnixSocket, UnixListener, MAX_FDS } from './sys/socket.js';
export { FdWatch, watchReadable, type Readiness } from './sys/poll.js';
// ring, mem
export { Ring, RingError, type RingMode } from './ring/ring.js';
export { SharedRegion, type RegionAttachInfo } from './mem/region.js';
export { GuestMemory, GuestMemoryError, type GuestRegion, type MemWindow } from './mem/guest-memory.js';
export { Mempool, MempoolError, type MempoolAttachInfo } from './mem/mempool.js';
// virtio
export * as virtio from './virtio/index.js';
// vhost
export { VhostUserBackend } from './vhost/backend.js';
export { VhostUserFrontend } from './vhost/frontend.js';
// pmd
export { BURST, newPortStats, type Port, type PortStats, type LinkState } from './port/port.js';
export { VhostUserPort, type VhostUserPortOptions } from './port/vhost-user.js';
export { VirtioUserPort, type VirtioUserOptions } from './port/virtio-user.js';
export { VirtioPciPort, VirtioPciError, PCI_BUF_SIZE, type VirtioPciOptions } from './port/virtio-pci.js';
export { bindPciDevice, listPciDevices, PciError } from './sys/pci.js';
export { TapPort, type TapPortOptions } from './port/tap.js';
export { AfPacketPort, type AfPacketPortOptions } from './port/af-packet.js';
export { RingPort } from './port/ring-port.js';
// dp, ofproto
export { Datapath, type UpcallSink, type PmdStats } from './dp/datapath.js';
export { openPort, type PortSpec } from './dp/port-factory.js';
export { parseFlow, formatFlow, FlowSyntaxError } from './ofproto/flow-syntax.js';
export { xlate } from './ofproto/xlate.js';
// apps
export { Switch } from './daemon/switch.js';
export { Testpmd, parsePortArg } from './app/testpmd.js';
