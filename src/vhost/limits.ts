/**
 * Limits of the vhost-user backend that its users set without loading the protocol (the daemon's option
 * defaults: its main thread never runs a backend, src/vhost/backend-protocol.ts runs in the PMD threads).
 */

/** Default cap on the guest memory one frontend may map (sum of its regions): 1 TiB. */
export const DEFAULT_MAX_GUEST_MEMORY = 2 ** 40;
