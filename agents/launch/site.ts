/**
 * The launch's local publication: the landing page as static HTML under
 * `KEEL_DATA_DIR/site/<product>/` (`index.html` and `style.css`), the launch posts under
 * `site/<product>/posts/` (`index.html`, `posts.json`). Markdown is rendered by markdown-it with
 * raw HTML off (whatever a model wrote is escaped). Files are replaced atomically (temp file,
 * fsync, rename), so a reader never sees half a page.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, open, rename, rm, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import MarkdownIt from 'markdown-it';

const md = new MarkdownIt({ html: false, linkify: true, typographer: false });

export const siteDirOf = (dataDir: string, productId: string) => join(dataDir, 'site', productId);

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

const STYLE = `body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem;line-height:1.55;color:#1b1b1b}
h1{font-size:2.4rem;margin-bottom:.2rem}h2{font-weight:500;color:#444;margin-top:0}h3{margin-top:2rem}
strong{background:#fff3c4;padding:.1rem .3rem}footer{margin-top:3rem;font-size:.8rem;color:#777}
article.post{border-left:3px solid #ddd;padding-left:1rem;margin:1.5rem 0;white-space:pre-wrap}`;

export function renderPage(o: { title: string; markdown: string; productId: string; version: number }): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(o.title)}</title>
<meta name="generator" content="Keel">
<link rel="stylesheet" href="style.css">
</head>
<body>
<main>
${md.render(o.markdown)}</main>
<footer>${escape(o.productId)} · version ${o.version}</footer>
</body>
</html>
`;
}

export function renderPosts(o: { title: string; posts: string[]; productId: string; version: number }): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escape(o.title)}</title>
<link rel="stylesheet" href="../style.css">
</head>
<body>
<h1>${escape(o.title)}</h1>
${o.posts.map((p, i) => `<article class="post" id="post-${i + 1}">${escape(p)}</article>`).join('\n')}
<footer>${escape(o.productId)} · version ${o.version}</footer>
</body>
</html>
`;
}

/** Replaces `path` with `data` atomically. */
export async function writeAtomic(path: string, data: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${randomUUID()}.tmp`;
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

export async function writeSitePage(dataDir: string, productId: string, html: string): Promise<string> {
  const dir = siteDirOf(dataDir, productId);
  await writeAtomic(join(dir, 'style.css'), STYLE);
  const path = join(dir, 'index.html');
  await writeAtomic(path, html);
  return path;
}

export async function writeSitePosts(dataDir: string, productId: string, html: string, posts: string[]): Promise<string> {
  const dir = join(siteDirOf(dataDir, productId), 'posts');
  await writeAtomic(join(siteDirOf(dataDir, productId), 'style.css'), STYLE);
  await writeAtomic(join(dir, 'posts.json'), `${JSON.stringify({ productId, posts }, null, 2)}\n`);
  const path = join(dir, 'index.html');
  await writeAtomic(path, html);
  return path;
}

/** Unpublishes: the page (index.html, style.css) or the posts folder are removed. */
export async function removeSitePage(dataDir: string, productId: string): Promise<void> {
  const dir = siteDirOf(dataDir, productId);
  await rm(join(dir, 'index.html'), { force: true });
}
export async function removeSitePosts(dataDir: string, productId: string): Promise<void> {
  await rm(join(siteDirOf(dataDir, productId), 'posts'), { recursive: true, force: true });
}
