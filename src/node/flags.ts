/**
 * Command-line flags: each command declares a table of its flags (type, default, placeholder, help),
 * parsed strictly by Node's util.parseArgs (an unknown flag, a missing value or a stray argument is an
 * error), and from the same table comes its --help. Values are checked for type and range here, before
 * anything is loaded.
 */
import { parseArgs } from 'node:util';
import { describeBounds, numberWithin, type NumberBounds } from '../methods/fields.js';

export type { NumberBounds };

/** A usage mistake: one line, exit code 2 (a failed run exits 1). */
export class UsageError extends Error {}

export interface Flag {
  type: 'string' | 'boolean';
  /** Shown in help as `--name VALUE`. */
  value?: string;
  default?: string;
  /** How help shows the default, where the value itself says little (a path). */
  shownDefault?: string;
  help: string;
}

export type FlagTable = Record<string, Flag>;

export interface Command {
  name: string;
  summary: string;
  /** Command lines shown under "examples" in --help, each with what it does. */
  examples: [string, string][];
  flags: FlagTable;
  run(values: FlagValues): Promise<void>;
}

export type FlagValues = Record<string, string | boolean | undefined>;

export const HELP_FLAG: Flag = { type: 'boolean', help: 'this help' };

export function parseFlags(command: Command, argv: string[]): FlagValues {
  const options = Object.fromEntries(Object.entries(command.flags).map(([name, f]) => [name, { type: f.type, ...(f.default !== undefined ? { default: f.default } : {}) }]));
  // A value flag followed by another flag has no value; one followed by a negative number has it
  // (parseArgs would call both ambiguous): the first is a usage error, the second reaches the range check.
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const name = /^--([\w-]+)$/.exec(argv[i])?.[1];
    const next = argv[i + 1];
    if (name && command.flags[name]?.type === 'string' && next !== undefined && next.startsWith('-')) {
      if (/^-(\d|\.\d|Infinity)/.test(next)) {
        args.push(`--${name}=${next}`);
        i++;
        continue;
      }
      throw new UsageError(`${command.name}: --${name} needs a value (got the flag ${next})`);
    }
    args.push(argv[i]);
  }
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values as FlagValues;
  } catch (e) {
    throw new UsageError(`${command.name}: ${(e as Error).message.split('\n')[0]}`);
  }
}

export function commandHelp(command: Command): string {
  const rows = Object.entries(command.flags).map(([name, f]) => {
    const left = `  --${name}${f.type === 'string' ? ` ${f.value ?? 'VALUE'}` : ''}`;
    const shown = f.shownDefault ?? f.default;
    const def = shown !== undefined && shown !== '' ? ` (default ${shown})` : '';
    return left.length < 32 ? `${left.padEnd(32)} ${f.help}${def}` : `${left}\n${''.padEnd(33)}${f.help}${def}`;
  });
  const examples = command.examples.flatMap(([line, what]) => [`  # ${what}`, `  webgpu-finetune ${command.name} ${line}`]);
  return [`usage: webgpu-finetune ${command.name} [flags]`, `  ${command.summary}`, '', ...rows, '', 'examples:', ...examples].join('\n');
}

/** A flag's value as a number: finite, an integer where asked, within its bounds (as a method's number fields). */
export function numberFlag(values: FlagValues, name: string, o: NumberBounds = {}): number {
  const text = String(values[name]);
  const v = numberWithin(text, o);
  if (v === null) throw new UsageError(`--${name} must be ${describeBounds(o)}, got '${text}'`);
  return v;
}

/** A flag's number when given, else undefined. */
export function optionalNumber(values: FlagValues, name: string, o: NumberBounds = {}): number | undefined {
  return values[name] === undefined ? undefined : numberFlag(values, name, o);
}

/** A flag's value from a fixed set. */
export function choiceFlag<T extends string>(values: FlagValues, name: string, choices: readonly T[]): T {
  const v = String(values[name]);
  if (!choices.includes(v as T)) throw new UsageError(`--${name} must be one of ${choices.join(', ')}, got '${v}'`);
  return v as T;
}
