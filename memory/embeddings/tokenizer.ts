/**
 * The BERT uncased WordPiece tokenizer, read from a Hugging Face `tokenizer.json`
 * (`BertNormalizer` + `BertPreTokenizer` + `WordPiece` + the `[CLS] A [SEP]` template), as the
 * `tokenizers` library runs it for sentence-transformers/all-MiniLM-L6-v2:
 *
 * 1. clean: drop NUL, U+FFFD and control/format characters; any white space becomes a space;
 * 2. CJK ideographs get spaces around them (each is its own word);
 * 3. accents stripped (NFD, then combining marks removed), then lower-cased character by character;
 * 4. split on white space, and every punctuation character is a word of its own;
 * 5. each word → the longest vocabulary prefix, then `##`-continuations; a word that cannot be
 *    covered, or is longer than `max_input_chars_per_word`, is one `[UNK]`;
 * 6. `[CLS]` … `[SEP]`, truncated so the whole fits `maxLength` (256 for this model).
 */

export interface WordPieceTokenizerJson {
  normalizer?: { type?: string; clean_text?: boolean; handle_chinese_chars?: boolean; strip_accents?: boolean | null; lowercase?: boolean } | null;
  pre_tokenizer?: { type?: string } | null;
  model: { type?: string; vocab: Record<string, number>; unk_token?: string; continuing_subword_prefix?: string; max_input_chars_per_word?: number };
}

export interface Encoding {
  ids: Int32Array;
  tokens: string[];
  /** whether the text was cut to fit `maxLength` */
  truncated: boolean;
}

const CONTROL = /\p{C}/u;
const WHITE = /\p{White_Space}/u;
const MARK_NONSPACING = /\p{Mn}/gu;
const PUNCT = /\p{P}/u;

function isCjk(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

/** ASCII punctuation (which includes `$+<=>^`|~`, not Unicode `P`) or any Unicode punctuation. */
function isPunct(ch: string, cp: number): boolean {
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) return true;
  return PUNCT.test(ch);
}

export class WordPieceTokenizer {
  readonly vocab: ReadonlyMap<string, number>;
  readonly maxLength: number;
  readonly unkId: number;
  readonly clsId: number;
  readonly sepId: number;
  private readonly unk: string;
  private readonly prefix: string;
  private readonly maxWordChars: number;
  private readonly lowercase: boolean;
  private readonly stripAccents: boolean;
  private readonly cleanText: boolean;
  private readonly chineseChars: boolean;

  constructor(json: WordPieceTokenizerJson, opts: { maxLength: number }) {
    if (json.model?.type !== undefined && json.model.type !== 'WordPiece') throw new Error(`tokenizer.json: model type '${json.model.type}' is not WordPiece`);
    if (!json.model?.vocab || typeof json.model.vocab !== 'object') throw new Error('tokenizer.json: no model.vocab');
    this.vocab = new Map(Object.entries(json.model.vocab));
    this.unk = json.model.unk_token ?? '[UNK]';
    this.prefix = json.model.continuing_subword_prefix ?? '##';
    this.maxWordChars = json.model.max_input_chars_per_word ?? 100;
    const n = json.normalizer ?? {};
    this.lowercase = n.lowercase ?? true;
    this.stripAccents = n.strip_accents ?? this.lowercase; // null: follows lowercase, as in `tokenizers`
    this.cleanText = n.clean_text ?? true;
    this.chineseChars = n.handle_chinese_chars ?? true;
    this.maxLength = opts.maxLength;
    const id = (t: string): number => {
      const v = this.vocab.get(t);
      if (v === undefined) throw new Error(`tokenizer.json: the vocabulary has no ${t}`);
      return v;
    };
    this.unkId = id(this.unk);
    this.clsId = id('[CLS]');
    this.sepId = id('[SEP]');
  }

  /** Steps 1–3: the normalized text. */
  normalize(text: string): string {
    let out = '';
    for (const ch of text) {
      const cp = ch.codePointAt(0)!;
      if (this.cleanText) {
        if (cp === 0 || cp === 0xfffd) continue;
        if (cp === 9 || cp === 10 || cp === 13 || WHITE.test(ch)) {
          out += ' ';
          continue;
        }
        if (CONTROL.test(ch)) continue;
      }
      out += this.chineseChars && isCjk(cp) ? ` ${ch} ` : ch;
    }
    if (this.stripAccents) out = out.normalize('NFD').replace(MARK_NONSPACING, '');
    // per character, as `tokenizers` does: no final-sigma context rule (Σ → σ everywhere)
    if (this.lowercase) {
      let lower = '';
      for (const ch of out) lower += ch.toLowerCase();
      out = lower;
    }
    return out;
  }

  /** Step 4: words and punctuation of a normalized text. */
  preTokenize(normalized: string): string[] {
    const words: string[] = [];
    let cur = '';
    for (const ch of normalized) {
      const cp = ch.codePointAt(0)!;
      if (WHITE.test(ch)) {
        if (cur) words.push(cur);
        cur = '';
      } else if (isPunct(ch, cp)) {
        if (cur) words.push(cur);
        words.push(ch);
        cur = '';
      } else cur += ch;
    }
    if (cur) words.push(cur);
    return words;
  }

  /** Step 5 for one word: its pieces (`['un', '##aff', '##able']`), or `[unk]`. */
  wordPieces(word: string): string[] {
    const chars = Array.from(word);
    if (chars.length > this.maxWordChars) return [this.unk];
    const pieces: string[] = [];
    let start = 0;
    while (start < chars.length) {
      let end = chars.length;
      let found: string | undefined;
      while (start < end) {
        const sub = (start > 0 ? this.prefix : '') + chars.slice(start, end).join('');
        if (this.vocab.has(sub)) {
          found = sub;
          break;
        }
        end--;
      }
      if (found === undefined) return [this.unk];
      pieces.push(found);
      start = end;
    }
    return pieces;
  }

  /** The word pieces of a text, without `[CLS]`/`[SEP]` and without truncation. */
  tokenize(text: string): string[] {
    return this.preTokenize(this.normalize(text)).flatMap((w) => this.wordPieces(w));
  }

  /** `[CLS] pieces [SEP]`, cut to `maxLength` ids in all. */
  encode(text: string): Encoding {
    const pieces = this.tokenize(text);
    const room = Math.max(0, this.maxLength - 2);
    const kept = pieces.length > room ? pieces.slice(0, room) : pieces;
    const tokens = ['[CLS]', ...kept, '[SEP]'];
    const ids = new Int32Array(tokens.length);
    ids[0] = this.clsId;
    for (let i = 0; i < kept.length; i++) ids[i + 1] = this.vocab.get(kept[i]!) ?? this.unkId;
    ids[tokens.length - 1] = this.sepId;
    return { ids, tokens, truncated: kept.length < pieces.length };
  }
}
