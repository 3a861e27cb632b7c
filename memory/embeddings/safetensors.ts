/**
 * A reader for the safetensors format: an 8-byte little-endian header length, a JSON header
 * (`{ name: { dtype, shape, data_offsets: [begin, end] } }`, plus `__metadata__`), then the raw
 * little-endian tensor bytes. Only F32 tensors are decoded (that is what all-MiniLM-L6-v2 ships);
 * others are listed and skipped.
 */

export interface TensorInfo {
  dtype: string;
  shape: number[];
  /** byte range inside the data section */
  begin: number;
  end: number;
}

export interface SafetensorsFile {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  /** a copy of one F32 tensor (so the file's buffer can be dropped); throws if absent or not F32 */
  f32(name: string, shape?: readonly number[]): Float32Array;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

export function parseSafetensors(buf: Uint8Array): SafetensorsFile {
  if (buf.byteLength < 8) throw new Error(`safetensors: file too short (${buf.byteLength} bytes)`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (headerLen <= 0 || 8 + headerLen > buf.byteLength) throw new Error(`safetensors: header length ${headerLen} does not fit a ${buf.byteLength}-byte file`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(buf.subarray(8, 8 + headerLen))) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`safetensors: the header is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const dataStart = 8 + headerLen;
  const dataLen = buf.byteLength - dataStart;
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = (v ?? {}) as Record<string, string>;
      continue;
    }
    const t = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const off = t.data_offsets;
    if (typeof t.dtype !== 'string' || !Array.isArray(t.shape) || !Array.isArray(off) || off.length !== 2) throw new Error(`safetensors: tensor '${name}' has a malformed entry`);
    const [begin, end] = off as [number, number];
    if (!(begin >= 0 && end >= begin && end <= dataLen)) throw new Error(`safetensors: tensor '${name}' lies outside the file (${begin}..${end} of ${dataLen})`);
    tensors.set(name, { dtype: t.dtype, shape: t.shape as number[], begin, end });
  }
  return {
    tensors,
    metadata,
    f32(name, shape) {
      const t = tensors.get(name);
      if (!t) throw new Error(`safetensors: no tensor '${name}'`);
      if (t.dtype !== 'F32') throw new Error(`safetensors: tensor '${name}' is ${t.dtype}, expected F32`);
      if (shape && (shape.length !== t.shape.length || shape.some((d, i) => d !== t.shape[i]))) {
        throw new Error(`safetensors: tensor '${name}' has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
      }
      const count = t.shape.reduce((a, b) => a * b, 1);
      if (t.end - t.begin !== count * 4) throw new Error(`safetensors: tensor '${name}' has ${t.end - t.begin} bytes for ${count} F32 values`);
      const out = new Float32Array(count);
      const at = buf.byteOffset + dataStart + t.begin;
      if (LITTLE_ENDIAN) {
        new Uint8Array(out.buffer).set(new Uint8Array(buf.buffer, at, count * 4));
      } else {
        const dv = new DataView(buf.buffer, at, count * 4);
        for (let i = 0; i < count; i++) out[i] = dv.getFloat32(i * 4, true);
      }
      return out;
    },
  };
}
