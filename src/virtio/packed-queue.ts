/** Packed virtqueue: device side (packed-device.ts) and driver side (packed-driver.ts). */
export * from './packed-device.js';
export * from './packed-driver.js';
