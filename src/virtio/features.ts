/**
 * Virtio feature bits (virtio 1.2 §6 reserved bits, §5.1.3 net bits) and the
 * vhost-user PROTOCOL_FEATURES bit, as bigint masks.
 */

const bit = (n: number): bigint => 1n << BigInt(n);

// --- virtio-net device features (§5.1.3) ---
export const NET_F_CSUM = bit(0);
export const NET_F_GUEST_CSUM = bit(1);
export const NET_F_CTRL_GUEST_OFFLOADS = bit(2);
export const NET_F_MTU = bit(3);
export const NET_F_MAC = bit(5);
export const NET_F_GUEST_TSO4 = bit(7);
export const NET_F_GUEST_TSO6 = bit(8);
export const NET_F_GUEST_ECN = bit(9);
export const NET_F_GUEST_UFO = bit(10);
export const NET_F_HOST_TSO4 = bit(11);
export const NET_F_HOST_TSO6 = bit(12);
export const NET_F_HOST_ECN = bit(13);
export const NET_F_HOST_UFO = bit(14);
export const NET_F_MRG_RXBUF = bit(15);
export const NET_F_STATUS = bit(16);
export const NET_F_CTRL_VQ = bit(17);
export const NET_F_CTRL_RX = bit(18);
export const NET_F_CTRL_VLAN = bit(19);
export const NET_F_GUEST_ANNOUNCE = bit(21);
export const NET_F_MQ = bit(22);
export const NET_F_CTRL_MAC_ADDR = bit(23);
export const NET_F_HASH_REPORT = bit(57);
export const NET_F_RSS = bit(60);
export const NET_F_RSC_EXT = bit(61);
export const NET_F_STANDBY = bit(62);
export const NET_F_SPEED_DUPLEX = bit(63);

// --- transport / ring features (§6) ---
export const F_NOTIFY_ON_EMPTY = bit(24);
/** vhost (not virtio): dirty-page logging. */
export const F_LOG_ALL = bit(26);
export const F_ANY_LAYOUT = bit(27);
export const RING_F_INDIRECT_DESC = bit(28);
export const RING_F_EVENT_IDX = bit(29);
/** vhost-user: the backend supports GET/SET_PROTOCOL_FEATURES. */
export const VHOST_USER_F_PROTOCOL_FEATURES = bit(30);
export const F_VERSION_1 = bit(32);
export const F_ACCESS_PLATFORM = bit(33);
export const F_RING_PACKED = bit(34);
export const F_IN_ORDER = bit(35);
export const F_ORDER_PLATFORM = bit(36);
export const F_SR_IOV = bit(37);
export const F_NOTIFICATION_DATA = bit(38);
export const F_NOTIF_CONFIG_DATA = bit(39);
export const F_RING_RESET = bit(40);

/** Short aliases, as named in the task brief. */
export const VERSION_1 = F_VERSION_1;
export const RING_PACKED = F_RING_PACKED;
export const IN_ORDER = F_IN_ORDER;
export const EVENT_IDX = RING_F_EVENT_IDX;
export const INDIRECT_DESC = RING_F_INDIRECT_DESC;
export const NOTIFY_ON_EMPTY = F_NOTIFY_ON_EMPTY;
export const ANY_LAYOUT = F_ANY_LAYOUT;
export const PROTOCOL_FEATURES = VHOST_USER_F_PROTOCOL_FEATURES;

/** Name table, bit number -> name (one description, used by featureNames). */
export const FEATURE_NAMES: ReadonlyMap<number, string> = new Map<number, string>([
  [0, 'NET_F_CSUM'],
  [1, 'NET_F_GUEST_CSUM'],
  [2, 'NET_F_CTRL_GUEST_OFFLOADS'],
  [3, 'NET_F_MTU'],
  [5, 'NET_F_MAC'],
  [7, 'NET_F_GUEST_TSO4'],
  [8, 'NET_F_GUEST_TSO6'],
  [9, 'NET_F_GUEST_ECN'],
  [10, 'NET_F_GUEST_UFO'],
  [11, 'NET_F_HOST_TSO4'],
  [12, 'NET_F_HOST_TSO6'],
  [13, 'NET_F_HOST_ECN'],
  [14, 'NET_F_HOST_UFO'],
  [15, 'NET_F_MRG_RXBUF'],
  [16, 'NET_F_STATUS'],
  [17, 'NET_F_CTRL_VQ'],
  [18, 'NET_F_CTRL_RX'],
  [19, 'NET_F_CTRL_VLAN'],
  [21, 'NET_F_GUEST_ANNOUNCE'],
  [22, 'NET_F_MQ'],
  [23, 'NET_F_CTRL_MAC_ADDR'],
  [24, 'F_NOTIFY_ON_EMPTY'],
  [26, 'F_LOG_ALL'],
  [27, 'F_ANY_LAYOUT'],
  [28, 'RING_F_INDIRECT_DESC'],
  [29, 'RING_F_EVENT_IDX'],
  [30, 'VHOST_USER_F_PROTOCOL_FEATURES'],
  [32, 'F_VERSION_1'],
  [33, 'F_ACCESS_PLATFORM'],
  [34, 'F_RING_PACKED'],
  [35, 'F_IN_ORDER'],
  [36, 'F_ORDER_PLATFORM'],
  [37, 'F_SR_IOV'],
  [38, 'F_NOTIFICATION_DATA'],
  [39, 'F_NOTIF_CONFIG_DATA'],
  [40, 'F_RING_RESET'],
  [57, 'NET_F_HASH_REPORT'],
  [60, 'NET_F_RSS'],
  [61, 'NET_F_RSC_EXT'],
  [62, 'NET_F_STANDBY'],
  [63, 'NET_F_SPEED_DUPLEX'],
]);

/** Names of the bits set in `bits` (unknown bits as `bit<N>`), lowest bit first. For logs. */
export function featureNames(bits: bigint): string[] {
  const out: string[] = [];
  for (let n = 0; n < 64; n++) {
    if ((bits >> BigInt(n)) & 1n) out.push(FEATURE_NAMES.get(n) ?? `bit${n}`);
  }
  return out;
}

/** True if every bit of `mask` is set in `features`. */
export function hasFeature(features: bigint, mask: bigint): boolean {
  return (features & mask) === mask;
}
