/**
 * Incremental splitter for a stream of JSON values sent back to back with no
 * separator (RFC 7047 section 4, OVS's jsonrpc, ovs-appctl), tolerating
 * whitespace or newlines between them (our own line-based control protocol).
 *
 * Chunks are fed as they arrive; every complete top-level object or array is
 * handed out as text (JSON.parse is left to the caller). Only brace/bracket
 * depth and string state are tracked, so the cost is one pass per byte.
 */
export class JsonStreamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'JsonStreamError';
  }
}

export class JsonSplitter {
  private buf = '';
  /** Scan position inside buf (bytes before it are part of the current value). */
  private pos = 0;
  private depth = 0;
  private inString = false;
  private escape = false;
  /** Start of the current value in buf, -1 between values. */
  private start = -1;
  readonly maxBytes: number;

  constructor(maxBytes = 64 << 20) {
    this.maxBytes = maxBytes;
  }

  /** Bytes held for an incomplete value. */
  get pending(): number {
    return this.buf.length;
  }

  /**
   * Feed a chunk; returns the complete values it finished. Throws
   * JsonStreamError on text that cannot start a value (anything but
   * whitespace, `{` or `[` between values) or a value over maxBytes; the
   * splitter is then reset.
   */
  push(chunk: string): string[] {
    const out: string[] = [];
    this.buf += chunk;
    const b = this.buf;
    let i = this.pos;
    for (; i < b.length; i++) {
      const c = b.charCodeAt(i);
      if (this.start < 0) {
        if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
        if (c !== 0x7b && c !== 0x5b) {
          this.reset();
          throw new JsonStreamError(`unexpected ${JSON.stringify(b[i])} between JSON values`);
        }
        this.start = i;
        this.depth = 1;
        continue;
      }
      if (this.inString) {
        if (this.escape) this.escape = false;
        else if (c === 0x5c) this.escape = true;
        else if (c === 0x22) this.inString = false;
        continue;
      }
      if (c === 0x22) this.inString = true;
      else if (c === 0x7b || c === 0x5b) this.depth++;
      else if (c === 0x7d || c === 0x5d) {
        if (--this.depth === 0) {
          out.push(b.slice(this.start, i + 1));
          this.start = -1;
        }
      }
    }
    // keep only the unfinished value
    if (this.start < 0) {
      this.buf = '';
      this.pos = 0;
    } else {
      this.buf = b.slice(this.start);
      this.pos = this.buf.length;
      this.start = 0;
      if (this.buf.length > this.maxBytes) {
        this.reset();
        throw new JsonStreamError(`JSON value larger than ${this.maxBytes} bytes`);
      }
    }
    return out;
  }

  reset(): void {
    this.buf = '';
    this.pos = 0;
    this.depth = 0;
    this.inString = false;
    this.escape = false;
    this.start = -1;
  }
}
