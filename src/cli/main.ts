#!/usr/bin/env node
/**
 * tsvs command line. Every subcommand lives in its own module and is loaded
 * on demand; argument parsing uses node:util parseArgs.
 */
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import * as path from 'node:path';
import { COMMANDS, type CommandSpec } from './commands.js';

import { UsageError } from '../util/options.js';
import { packageVersion } from '../util/version.js';

export { UsageError };

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  const lines = COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`);
  return [
    'tsvs: a userspace virtual switch and packet-I/O toolkit (vhost-user, virtio-user, flow-cached datapath)',
    '',
    'Usage: tsvs <command> [options]      tsvs <command> --help for its options',
    '',
    'Commands:',
    ...lines,
    '',
    'Global options:',
    '  -h, --help     show this help',
    '  -V, --version  print the version',
  ].join('\n');
}

function commandUsage(c: CommandSpec): string {
  const opts = Object.entries(c.options ?? {}).map(([k, o]) => {
    const flag = `--${k}${o.type === 'string' ? ' ' + (o.arg ?? 'VALUE') : ''}`;
    return `  ${flag.padEnd(28)} ${o.help}${o.default !== undefined ? ` (default: ${o.default})` : ''}`;
  });
  return [`Usage: tsvs ${c.name}${c.args ? ' ' + c.args : ''} [options]`, '', c.summary, ...(opts.length ? ['', 'Options:', ...opts] : [])].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [cmdName, ...rest] = argv;
  if (cmdName === undefined || cmdName === '-h' || cmdName === '--help' || cmdName === 'help') {
    process.stdout.write(usage() + '\n');
    return cmdName === undefined ? 2 : 0;
  }
  if (cmdName === '-V' || cmdName === '--version') {
    process.stdout.write(`tsvs ${packageVersion()}\n`);
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === cmdName);
  if (!cmd) {
    process.stderr.write(`tsvs: unknown command '${cmdName}'. Run 'tsvs --help' for the list.\n`);
    return 2;
  }
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const [k, o] of Object.entries(cmd.options ?? {})) {
    options[k] = { type: o.type };
    if (o.multiple) options[k].multiple = true;
    if (o.short) options[k].short = o.short;
  }
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options, allowPositionals: true, strict: true });
  } catch (e) {
    process.stderr.write(`tsvs ${cmd.name}: ${(e as Error).message}\n\n${commandUsage(cmd)}\n`);
    return 2;
  }
  if (parsed.values.help) {
    process.stdout.write(commandUsage(cmd) + '\n');
    return 0;
  }
  try {
    if (cmd.name === 'daemon') (await import('../daemon/heap-limits.js')).reexecWithHeapLimits();
    const mod = await cmd.load();
    return await mod.run(parsed.values as Record<string, unknown>, parsed.positionals);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`tsvs ${cmd.name}: ${e.message}\n\n${commandUsage(cmd)}\n`);
      return 2;
    }
    const err = e as Error & { code?: string };
    process.stderr.write(`tsvs ${cmd.name}: ${err.message}\n`);
    if (process.env.TSVS_DEBUG) process.stderr.write(`${err.stack}\n`);
    return 1;
  }
}

const invokedDirectly = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (invokedDirectly || process.argv[1]?.endsWith('/tsvs')) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`tsvs: ${(e as Error).stack}\n`);
      process.exitCode = 1;
    },
  );
}
