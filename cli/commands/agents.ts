import type { Command } from 'commander';

export function registerAgents(program: Command): void {
  program
    .command('agents')
    .description('List the live agent instances and their capabilities (from the capability registry on the bus).')
    .option('--json', 'print JSON')
    .action(async () => {
      throw new Error('not implemented yet');
    });
}
