import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startSmtpIngress, type InboundMessage, type QuarantinedMessage, type SmtpIngress, type SmtpIngressOptions } from '../../channels/index.ts';
import { freePort, tempDir } from '../../testkit/common.ts';

export interface SwaksResult {
  code: number | null;
  output: string;
  /** The last reply code the server sent (the answer to DATA's dot when the transaction got there). */
  lastReply: number | undefined;
}

/** Runs Debian's swaks (a real SMTP client) against `port`. */
export function swaks(port: number, args: string[]): Promise<SwaksResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('swaks', ['--server', `127.0.0.1:${port}`, '--timeout', '20s', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString('latin1')));
    child.stderr.on('data', (d: Buffer) => (output += d.toString('latin1')));
    // swaks prompts for missing values: a stuck run must fail the test, not hang it
    const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(killer);
      const replies = [...output.matchAll(/^<[-*]{1,2}\s+(\d{3})[ -]/gm)].map((m) => Number(m[1]));
      // the QUIT answer (221) comes last; the transaction's answer is the one before it
      const meaningful = replies.filter((c) => c !== 221);
      resolve({ code, output, lastReply: meaningful.at(-1) });
    });
  });
}

/** Writes a raw message (LF line ends become CRLF) to a file for `swaks --data @file`. */
export function emlFile(dir: string, name: string, content: string | Buffer): string {
  const path = join(dir, name);
  const data = typeof content === 'string' ? Buffer.from(content.replace(/\r?\n/g, '\r\n'), 'latin1') : content;
  writeFileSync(path, data);
  return path;
}

export interface IngressFixture {
  smtp: SmtpIngress;
  messages: InboundMessage[];
  quarantined: QuarantinedMessage[];
  dir: string;
  stop(): Promise<void>;
}

/** An SMTP ingress on a free port with a temp attachments dir, recording what it was handed. */
export async function startTestIngress(overrides: Partial<SmtpIngressOptions> = {}): Promise<IngressFixture> {
  const dir = tempDir('keel-channels-');
  const messages: InboundMessage[] = [];
  const quarantined: QuarantinedMessage[] = [];
  const smtp = await startSmtpIngress({
    port: await freePort(),
    onMessage: async (m) => {
      messages.push(m);
    },
    onQuarantine: async (q) => {
      quarantined.push(q);
    },
    ...overrides,
    parse: { attachments: { dir: join(dir.path, 'attachments') }, ...overrides.parse },
  });
  return {
    smtp,
    messages,
    quarantined,
    dir: dir.path,
    stop: async () => {
      await smtp.close();
      dir.remove();
    },
  };
}
