/**
 * The one range of port numbers. A port's number is both its OpenFlow port
 * number and its datapath port number (see src/daemon/switch.ts), so the
 * OpenFlow range applies everywhere: 1..0xfeff (OpenFlow's OFPP_MAX = 0xff00 is
 * the first reserved number; 0 is not a port). The control RPC, the datapath
 * and the configuration loader all check with portNumberProblem().
 */

export const PORT_NO_MIN = 1;
/** Largest port number: OFPP_MAX - 1. */
export const PORT_NO_MAX = 0xfeff;

/** Why n is not a valid port number, or null. */
export function portNumberProblem(n: unknown): string | null {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < PORT_NO_MIN || n > PORT_NO_MAX) {
    return `port number ${typeof n === 'string' ? JSON.stringify(n) : String(n)} is out of range (an integer in ${PORT_NO_MIN}..${PORT_NO_MAX})`;
  }
  return null;
}
