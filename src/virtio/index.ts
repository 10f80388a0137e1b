/**
 * The virtio layer: ring layout, net header, and split/packed virtqueues
 * (device side for the vhost-user backend, driver side for virtio-user).
 */

import type { GuestMemory } from '../mem/guest-memory.js';
import { F_RING_PACKED } from './features.js';
import type { DeviceQueue, DeviceQueueConfig } from './device-queue.js';
import type { DriverQueue, DriverQueueConfig } from './driver-queue.js';
import { SplitDevice, SplitDriver } from './split-queue.js';
import { PackedDevice, PackedDriver } from './packed-queue.js';

export * from './errors.js';
export * from './features.js';
export * from './layout.js';
export * from './net-header.js';
export * from './device-queue.js';
export * from './driver-queue.js';
export * from './split-queue.js';
export * from './packed-queue.js';

/** Device side of the ring kind the features select (RING_PACKED or split). */
export function createDeviceQueue(mem: GuestMemory, cfg: DeviceQueueConfig): DeviceQueue {
  return (cfg.features & F_RING_PACKED) !== 0n ? new PackedDevice(mem, cfg) : new SplitDevice(mem, cfg);
}

/** Driver side of the ring kind the features select (RING_PACKED or split). */
export function createDriverQueue(mem: GuestMemory, cfg: DriverQueueConfig): DriverQueue {
  return (cfg.features & F_RING_PACKED) !== 0n ? new PackedDriver(mem, cfg) : new SplitDriver(mem, cfg);
}
