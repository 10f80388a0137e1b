/** Control-path errors of the virtio layer (never thrown from a data path). */

export type VirtqueueErrorCode =
  | 'BAD_SIZE' // queue size not allowed for this ring kind
  | 'BAD_ADDR' // a ring area is not inside one mapped window of guest memory
  | 'MISALIGNED' // a ring area violates its alignment (guest or host view)
  | 'BAD_INDEX' // initial index out of range
  | 'BAD_CONFIG'; // anything else about the configuration

export class VirtqueueError extends Error {
  readonly code: VirtqueueErrorCode;
  constructor(code: VirtqueueErrorCode, message: string) {
    super(message);
    this.name = 'VirtqueueError';
    this.code = code;
  }
}
