import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { writeFileOnce } from './atomic-file.ts';
import type { AttachmentMeta } from './message.ts';

export interface AttachmentStoreOptions {
  /** Where contents are written, one file per distinct content named by its sha256. Unset: contents are dropped, metadata kept. */
  dir?: string | undefined;
  /** Contents larger than this are dropped (metadata kept, `stored: false`). Default 10 MiB. */
  maxBytes?: number | undefined;
}

export const DEFAULT_MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024;

/** Reduces a sender-given file name to something safe to show: last path segment, no control characters. */
export function safeFilename(name: string | undefined): string {
  const base = (name ?? '').split(/[\\/]/).pop() ?? '';
  // eslint-disable-next-line no-control-regex
  const clean = base.replace(/[\u0000-\u001f\u007f]/g, '').trim().slice(0, 255);
  return clean === '' || clean === '.' || clean === '..' ? 'attachment' : clean;
}

/**
 * Records one attachment: computes its sha256 and, when allowed, writes the content to
 * `<dir>/<sha256>` (content-addressed, so the same file sent twice is stored once).
 */
export async function storeAttachment(
  input: { filename?: string | undefined; contentType?: string | undefined; content: Uint8Array },
  opts: AttachmentStoreOptions,
): Promise<AttachmentMeta> {
  const sha256 = createHash('sha256').update(input.content).digest('hex');
  const meta: AttachmentMeta = {
    filename: safeFilename(input.filename),
    contentType: (input.contentType ?? 'application/octet-stream').slice(0, 200),
    size: input.content.byteLength,
    sha256,
    stored: false,
  };
  const max = opts.maxBytes ?? DEFAULT_MAX_ATTACHMENT_BYTES;
  if (!opts.dir || input.content.byteLength > max) return meta;
  const path = join(resolve(opts.dir), sha256);
  await writeFileOnce(path, input.content);
  return { ...meta, stored: true, path };
}
