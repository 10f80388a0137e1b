/** The package's version, read from package.json (from src/ or from the compiled dist/src/). */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as path from 'node:path';

export function packageVersion(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      return (JSON.parse(readFileSync(path.join(here, rel), 'utf8')) as { version: string }).version;
    } catch {
      /* try next */
    }
  }
  return 'unknown';
}
