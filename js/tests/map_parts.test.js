// Run with: cd js && node --test tests/
// The pure parts behind the canvas renderer and the decoding of Python's binary state.
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeTexts, float32s, formatG, hexColors, int32s, number, points } from "../src/_data.js";
import { createHitIndex, segmentDistance } from "../src/map/hit_index.js";

// three 10" squares (display frame, y up): a, and b overlapping its right half; c far away
const square = ([cx, cy]) => [cx - 5, cy - 5, cx + 5, cy - 5, cx + 5, cy + 5, cx - 5, cy + 5];
const FLAT = Float32Array.from([[0, 0], [5, 0], [100, 100]].flatMap(square));

test("the hit index finds the topmost footprint under a point, or none", () => {
  const index = createHitIndex(FLAT, 4);
  assert.equal(index.polygonAt(-3, 0), 0); // SVG space: y is flipped
  assert.equal(index.polygonAt(3, 0), 1); // a and b overlap there: b is drawn above
  assert.equal(index.polygonAt(100, -100), 2);
  assert.equal(index.polygonAt(100, 100), -1); // (100, 100) in the display frame is (100, -100) here
  assert.equal(index.polygonAt(50, -50), -1);
});

test("the hit index finds the nearest overlap line within a tolerance", () => {
  const index = createHitIndex(FLAT, 4, [0, 0, 100, 0, 0, 10, 100, 10]);
  assert.equal(index.segmentNear(50, 1, 3), 0);
  assert.equal(index.segmentNear(50, 8, 3), 1);
  assert.equal(index.segmentNear(50, 5, 3), -1);
  assert.equal(segmentDistance(3, 4, 0, 0, 0, 0), 5);
});

test("many footprints: the index agrees with a brute-force search", () => {
  const n = 3000;
  const centres = Array.from({ length: n }, (_, i) => [(i * 37) % 997, (i * 91) % 613]);
  const flat = Float32Array.from(centres.flatMap(square));
  const index = createHitIndex(flat, 4);
  for (let k = 0; k < 500; k++) {
    const x = (k * 7.3) % 1000, y = -((k * 3.1) % 620);
    let expected = -1;
    centres.forEach(([cx, cy], i) => { if (Math.abs(x - cx) < 5 && Math.abs(-y - cy) < 5) expected = i; });
    assert.equal(index.polygonAt(x, y), expected, `${x} ${y}`);
  }
});

test("binary traitlets decode, aligned or not, and strings come from {texts, index}", () => {
  const bytes = new Uint8Array(13);
  new DataView(bytes.buffer).setFloat32(1, 1.5, true);
  assert.deepEqual([...float32s(new DataView(bytes.buffer, 1, 4))], [1.5]); // misaligned: copied
  assert.deepEqual([...int32s([1, 2])], [1, 2]);
  assert.deepEqual(decodeTexts({ texts: ["x", "y"], index: Int32Array.from([1, 0, 1]) }), ["y", "x", "y"]);
  assert.deepEqual(hexColors(Uint8Array.from([255, 0, 16, 1, 2, 3])), ["#ff0010", "#010203"]);
  assert.deepEqual(points([1, 2, 3, 4, 5, 6, 7, 8], 2), [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]);
});

test("numbers read as Python writes them ('.4g'): ties to even, exponents of two digits", () => {
  const cases = [[12.125, "12.12"], [1234.5, "1234"], [0.00012345, "0.0001234"], [1.2345e-5, "1.234e-05"],
    [123456, "1.235e+05"], [9999.5, "1e+04"], [-0.5, "-0.5"], [100, "100"], [0, "0"], [1e21, "1e+21"]];
  for (const [v, text] of cases) assert.equal(formatG(v), text, String(v));
  assert.equal(number(NaN), "n/a");
});
