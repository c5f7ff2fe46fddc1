#!/usr/bin/env node
/**
 * The command line: `webgpu-finetune <command> [flags]`, each command in src/node/commands with its
 * flags declared once (parsing and --help come from the same table). A usage mistake exits with code 2
 * and one line saying what to change; a failed run exits 1 with the error's one-line message.
 */
import { commandHelp, parseFlags, UsageError, type Command } from './flags.js';
import { evalCommand } from './commands/eval.js';
import { exportCommand } from './commands/export.js';
import { generateCommand } from './commands/generate.js';
import { infoCommand } from './commands/info.js';
import { selectMaskCommand } from './commands/select-mask.js';
import { trainCommand } from './commands/train.js';

const COMMANDS: Command[] = [trainCommand, evalCommand, generateCommand, exportCommand, selectMaskCommand, infoCommand];

const USAGE = [
  'usage: webgpu-finetune <command> [flags]      (webgpu-finetune <command> --help for its flags)',
  ...COMMANDS.map((c) => `  ${c.name.padEnd(12)} ${c.summary}`),
].join('\n');

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(USAGE);
    return name === undefined ? 2 : 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    console.error(`unknown command '${name}'\n${USAGE}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(commandHelp(command));
    return 0;
  }
  try {
    await command.run(parseFlags(command, rest));
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`${e.message} (webgpu-finetune ${command.name} --help lists the flags)`);
      return 2;
    }
    // The message says what went wrong and what to do; a class name would add nothing for the user.
    console.error(e instanceof Error ? `error: ${e.message}` : String(e));
    if (process.env.WEBGPU_FINETUNE_DEBUG && e instanceof Error) console.error(e.stack);
    return 1;
  }
}

process.exit(await main(process.argv.slice(2)));
