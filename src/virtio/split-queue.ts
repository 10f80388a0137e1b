/** Split virtqueue: device side (split-device.ts) and driver side (split-driver.ts). */
export * from './split-device.js';
export * from './split-driver.js';
