/**
 * Network namespaces: a socket or TAP device belongs to the namespace of the
 * thread that creates it, and keeps working from any namespace afterwards.
 * {@link withNetns} switches the calling thread into a named namespace
 * (`ip netns add NAME` -> /run/netns/NAME), runs a synchronous function and
 * switches back. Only the calling thread moves; other threads (libuv pool,
 * workers) are unaffected. Alternatively run the whole process under
 * `ip netns exec NAME node ...`.
 *
 * Where it runs: in the thread that opens a port in another namespace (the PMD worker in the
 * daemon; the main thread in tests and tools).
 */
import { SysError, closeQuiet, koffi } from './libc.js';
import { CLONE_NEWNET, E, O_CLOEXEC, O_RDONLY, c_open, c_setns, fail } from './netdev-native.js';

/**
 * Run fn with the calling thread inside network namespace `netns` (a name
 * under /run/netns, or an absolute path to a netns file such as
 * /proc/PID/ns/net), then switch back. fn must be synchronous. Sockets and
 * TAP devices created inside stay in that namespace.
 */
export function withNetns<T>(netns: string, fn: () => T): T {
  const target = netns.startsWith('/') ? netns : `/run/netns/${netns}`;
  if (!netns.startsWith('/') && (netns.includes('/') || netns === '' || netns === '.' || netns === '..')) {
    throw new SysError('setns', E.EINVAL, `bad namespace name ${JSON.stringify(netns)}`);
  }
  const orig = c_open('/proc/thread-self/ns/net', O_RDONLY | O_CLOEXEC, 0);
  if (orig < 0) fail('open(/proc/thread-self/ns/net)');
  const nsfd = c_open(target, O_RDONLY | O_CLOEXEC, 0);
  if (nsfd < 0) {
    const e = koffi.errno();
    closeQuiet(orig);
    throw new SysError('open(netns)', e, target);
  }
  try {
    if (c_setns(nsfd, CLONE_NEWNET) < 0) fail('setns', target);
    try {
      return fn();
    } finally {
      if (c_setns(orig, CLONE_NEWNET) < 0) {
        // Staying in the wrong namespace silently would be worse than dying.
        const err = new SysError('setns(back)', koffi.errno(), 'cannot return to the original network namespace');
        process.emitWarning(err);
        throw err;
      }
    }
  } finally {
    closeQuiet(nsfd);
    closeQuiet(orig);
  }
}
