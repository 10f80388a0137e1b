/** The table of tsvs subcommands: name, options, and the module that runs it. */

export interface OptionSpec {
  type: 'string' | 'boolean';
  multiple?: boolean;
  short?: string;
  arg?: string;
  help: string;
  default?: string | boolean;
}

export interface CommandModule {
  run(values: Record<string, unknown>, positionals: string[]): Promise<number>;
}

export interface CommandSpec {
  name: string;
  args?: string;
  summary: string;
  options?: Record<string, OptionSpec>;
  load(): Promise<CommandModule>;
}

export const COMMANDS: CommandSpec[] = [];
