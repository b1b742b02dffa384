// Reading what Python sends: arrays arrive as binary buffers (a DataView in the page; tests may
// pass typed arrays or plain arrays), strings as {texts, index} when few are distinct, and
// numbers are written as Python writes them (so a tooltip reads the same in both).

/**
 * @typedef {DataView|ArrayBuffer|ArrayBufferView|number[]|null|undefined} Buffer
 * @typedef {{texts: string[], index: Buffer}} EncodedTexts
 */

/**
 * A typed array of `Type` over a buffer (no copy when aligned).
 * @template T
 * @param {{new(b: ArrayBuffer, o?: number, n?: number): T, new(n: number|ArrayLike<number>): T, BYTES_PER_ELEMENT: number}} Type
 * @param {Buffer} value
 * @returns {T}
 */
function view(Type, value) {
  if (value === null || value === undefined) return new Type(0);
  if (Array.isArray(value)) return new Type(value);
  if (value instanceof Type) return value;
  const buffer = value instanceof ArrayBuffer ? value : value.buffer;
  const offset = value instanceof ArrayBuffer ? 0 : value.byteOffset;
  const length = value instanceof ArrayBuffer ? value.byteLength : value.byteLength;
  const count = Math.floor(length / Type.BYTES_PER_ELEMENT);
  if (offset % Type.BYTES_PER_ELEMENT === 0) return new Type(buffer, offset, count);
  return new Type(buffer.slice(offset, offset + count * Type.BYTES_PER_ELEMENT)); // misaligned: copy
}

/** @param {Buffer} v @returns {Float32Array} */
export const float32s = (v) => view(Float32Array, v);
/** @param {Buffer} v @returns {Float64Array} */
export const float64s = (v) => view(Float64Array, v);
/** @param {Buffer} v @returns {Int32Array} */
export const int32s = (v) => view(Int32Array, v);
/** @param {Buffer} v @returns {Uint8Array} */
export const uint8s = (v) => view(Uint8Array, v);

/**
 * The strings of an {texts, index} encoding, one per item (a null text stays null: missing).
 * @param {EncodedTexts|undefined} encoded
 * @returns {string[]}
 */
export function decodeTexts(encoded) {
  if (!encoded) return [];
  const texts = encoded.texts ?? [];
  return Array.from(int32s(encoded.index), (k) => (k >= 0 && k < texts.length ? texts[k] : "")); // null stays null
}

/**
 * "#rrggbb" colours from packed RGB bytes.
 * @param {Buffer} rgb
 * @returns {string[]}
 */
export function hexColors(rgb) {
  const bytes = uint8s(rgb);
  const hex = (b) => b.toString(16).padStart(2, "0");
  const out = new Array(Math.floor(bytes.length / 3));
  for (let i = 0; i < out.length; i++) out[i] = `#${hex(bytes[3 * i])}${hex(bytes[3 * i + 1])}${hex(bytes[3 * i + 2])}`;
  return out;
}

/**
 * Points [[x, y], ...] of a flat array of coordinates, `per` points per group when given.
 * @param {ArrayLike<number>} flat
 * @param {number} [per]  points per group (polygons): nested one level deeper
 * @returns {Array}
 */
export function points(flat, per = 0) {
  const pts = [];
  for (let k = 0; k + 1 < flat.length; k += 2) pts.push([flat[k], flat[k + 1]]);
  if (!per) return pts;
  const groups = [];
  for (let k = 0; k < pts.length; k += per) groups.push(pts.slice(k, k + per));
  return groups;
}

/**
 * Python's `format(v, f".{digits}g")`: `digits` significant digits, rounded half to even on the
 * exact value as Python rounds; fixed notation for exponents -4 to digits - 1, else
 * `1.5e+07`; trailing zeros removed.
 * @param {number} v  finite
 * @param {number} [digits]
 * @returns {string}
 */
export function formatG(v, digits = 4) {
  if (v === 0) return Object.is(v, -0) ? "-0" : "0";
  const sign = v < 0 ? "-" : "";
  const [sig, exponent] = roundedDigits(Math.abs(v), digits);
  if (exponent < -4 || exponent >= digits) {
    const tail = sig.slice(1).replace(/0+$/, "");
    return `${sign}${sig[0]}${tail ? "." + tail : ""}e${exponent < 0 ? "-" : "+"}${String(Math.abs(exponent)).padStart(2, "0")}`;
  }
  const whole = exponent >= 0 ? sig.slice(0, exponent + 1) : "0";
  const fraction = (exponent >= 0 ? sig.slice(exponent + 1) : "0".repeat(-exponent - 1) + sig).replace(/0+$/, "");
  return `${sign}${whole}${fraction ? "." + fraction : ""}`;
}

/**
 * The first `count` significant digits of a > 0, rounded half to even, and the decimal
 * exponent of the first: (["1235"], 3) for 1234.5678.
 * @param {number} a
 * @param {number} count
 * @returns {[string, number]}
 */
function roundedDigits(a, count) {
  // toFixed(100) writes the exact value for 1e-14 < a < 1e21 (doubles have finite decimals);
  // outside, 24 significant digits decide all but exact ties
  const exact = a >= 1e-14 && a < 1e21;
  const text = exact ? a.toFixed(100) : a.toExponential(count + 20).replace(/e.*$/, "");
  const shift = exact ? 0 : Number(a.toExponential(count + 20).split("e")[1]);
  const [int, frac = ""] = text.split(".");
  const all = int + frac;
  let first = 0;
  while (all[first] === "0") first += 1;
  let exponent = int.length - first - 1 + shift;
  let sig = all.slice(first, first + count).padEnd(count, "0");
  const rest = all.slice(first + count);
  const tie = rest[0] === "5" && !/[1-9]/.test(rest.slice(1));
  const up = rest[0] > "5" || (rest[0] === "5" && !tie) || (tie && Number(sig[count - 1]) % 2 === 1);
  if (up) {
    sig = String(BigInt(sig) + 1n);
    if (sig.length > count) {
      sig = sig.slice(0, count);
      exponent += 1;
    }
  }
  return [sig, exponent];
}

/**
 * A number for tooltips, as `skymatch_nb_ui.display.encodings.number`: 4 significant digits,
 * "n/a" when not finite.
 * @param {number} v
 * @returns {string}
 */
export function number(v) {
  return Number.isFinite(v) ? formatG(v, 4) : "n/a";
}
