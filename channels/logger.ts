import { pino, type Logger } from 'pino';

let silent: Logger | undefined;
/** The logger a channel uses when none is given: discards everything. */
export function silentLogger(): Logger {
  silent ??= pino({ level: 'silent' });
  return silent;
}
