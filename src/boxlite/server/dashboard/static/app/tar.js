// Just enough tar for the file routes: one regular file into a tar (upload), the first regular
// file out of one (download). The tar from the server is box-made and hostile: sizes are
// checked against what was actually received.

const BLOCK = 512;
const encoder = new TextEncoder();

function field(buf, offset, length, text) {
  const bytes = encoder.encode(text);
  if (bytes.length > length) throw new Error(`tar field too long: ${text}`);
  buf.set(bytes, offset);
}

function octal(value, length) {
  return value.toString(8).padStart(length - 1, '0');
}

export function checkName(name) {
  if (!name || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new Error(`cannot upload a file named ${JSON.stringify(name)}`);
  }
  if (encoder.encode(name).length > 100) throw new Error('file name longer than 100 bytes');
}

// A Blob holding a ustar archive with the one file `name` (the file's bytes are not copied).
export function tarOneFile(name, file) {
  checkName(name);
  const size = file.size;
  if (size > 0o77777777777) throw new Error('file too large for the upload (8 GiB)');
  const header = new Uint8Array(BLOCK);
  field(header, 0, 100, name);
  field(header, 100, 8, octal(0o644, 8));
  field(header, 108, 8, octal(0, 8));
  field(header, 116, 8, octal(0, 8));
  field(header, 124, 12, octal(size, 12));
  field(header, 136, 12, octal(Math.floor((file.lastModified || Date.now()) / 1000), 12));
  field(header, 148, 8, '        ');
  header[156] = '0'.charCodeAt(0);
  field(header, 257, 6, 'ustar');
  field(header, 263, 2, '00');
  let sum = 0;
  for (const b of header) sum += b;
  field(header, 148, 8, `${octal(sum, 7)}\0`);
  const pad = (BLOCK - (size % BLOCK)) % BLOCK;
  return new Blob([header, file, new Uint8Array(pad), new Uint8Array(2 * BLOCK)], { type: 'application/x-tar' });
}

function readOctal(buf, offset, length) {
  const text = new TextDecoder('latin1').decode(buf.subarray(offset, offset + length)).replace(/[\0 ]+$/, '').trim();
  if (!/^[0-7]*$/.test(text)) throw new Error('unsupported tar header (size field)');
  return text ? parseInt(text, 8) : 0;
}

// The bytes of the first regular file in `data` (a Uint8Array), or null if there is none.
export function firstFile(data) {
  let offset = 0;
  while (offset + BLOCK <= data.length) {
    const header = data.subarray(offset, offset + BLOCK);
    if (header.every((b) => b === 0)) return null;
    const size = readOctal(header, 124, 12);
    const type = String.fromCharCode(header[156] || 48);
    const start = offset + BLOCK;
    if (start + size > data.length) throw new Error('truncated tar');
    if (type === '0' || type === '7') return data.slice(start, start + size);
    offset = start + Math.ceil(size / BLOCK) * BLOCK;
  }
  return null;
}

// Read a Response body, refusing more than `limit` bytes (the browser holds it in memory).
export async function readLimited(response, limit) {
  const reader = response.body.getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > limit) {
      await reader.cancel();
      throw new Error(`download larger than ${limit} bytes: use the CLI (boxlite cp)`);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}
