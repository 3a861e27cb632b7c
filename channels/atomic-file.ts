import { randomUUID } from 'node:crypto';
import { link, mkdir, open, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/**
 * Writes `data` to `path` only if no file is there yet, atomically: the bytes go to a temp file
 * in `<dir>/.tmp`, are fsynced, then hard-linked to `path` (link fails if `path` exists, so two
 * writers racing on one name leave exactly one complete file and a reader never sees half).
 * Resolves true when this call created the file, false when it already existed.
 */
export async function writeFileOnce(path: string, data: Uint8Array): Promise<boolean> {
  const dir = dirname(path);
  const tmpDir = join(dir, '.tmp');
  await mkdir(tmpDir, { recursive: true });
  const tmp = join(tmpDir, `${randomUUID()}.part`);
  const fh = await open(tmp, 'wx', 0o640);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}
