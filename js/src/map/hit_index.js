// What lies under a point, for a canvas (which, unlike SVG, has no elements to hit): a uniform
// grid over the footprints' (and lines') bounding boxes, then an exact test of the few in the
// point's cell.  Pure: unit-tested alone.  Coordinates are SVG space (display frame, y flipped).

/** @typedef {import("./geometry.js").Point} Point */

/**
 * @typedef {Object} HitIndex
 * @property {(x: number, y: number) => number} polygonAt  the topmost footprint containing
 *   the point (the highest index), or -1
 * @property {(x: number, y: number, tolerance: number) => number} segmentNear  the nearest
 *   segment within `tolerance` of the point, or -1
 */

/**
 * An index of polygons (flat display-frame corners, `corners` per polygon) and segments.
 * @param {ArrayLike<number>} flat  x0, y0, x1, y1, ... in the display frame (y up)
 * @param {number} corners
 * @param {ArrayLike<number>} [segments]  x1, y1, x2, y2 per segment, SVG space
 * @returns {HitIndex}
 */
export function createHitIndex(flat, corners, segments = []) {
  const n = corners ? Math.floor(flat.length / (2 * corners)) : 0;
  const boxes = new Float64Array(4 * n); // x0, y0, x1, y1 in SVG space
  for (let i = 0; i < n; i++) {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (let c = 0; c < corners; c++) {
      const x = flat[2 * (i * corners + c)], y = -flat[2 * (i * corners + c) + 1];
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    boxes.set([x0, y0, x1, y1], 4 * i);
  }
  const polygons = gridOf(boxes, n);
  const m = Math.floor(segments.length / 4);
  const segBoxes = new Float64Array(4 * m);
  for (let j = 0; j < m; j++) {
    const [ax, ay, bx, by] = [segments[4 * j], segments[4 * j + 1], segments[4 * j + 2], segments[4 * j + 3]];
    segBoxes.set([Math.min(ax, bx), Math.min(ay, by), Math.max(ax, bx), Math.max(ay, by)], 4 * j);
  }
  const lines = gridOf(segBoxes, m);

  return {
    polygonAt(x, y) {
      let best = -1;
      for (const i of polygons.near(x, y, 0)) {
        if (i > best && inside(flat, corners, i, x, y)) best = i;
      }
      return best;
    },
    segmentNear(x, y, tolerance) {
      let best = -1, bestD = tolerance;
      for (const j of lines.near(x, y, tolerance)) {
        const d = segmentDistance(x, y, segments[4 * j], segments[4 * j + 1], segments[4 * j + 2], segments[4 * j + 3]);
        if (d <= bestD) { best = j; bestD = d; }
      }
      return best;
    },
  };
}

/**
 * A uniform grid of about one box per cell over `count` boxes (x0, y0, x1, y1 each).
 * @param {Float64Array} boxes
 * @param {number} count
 */
function gridOf(boxes, count) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (let i = 0; i < count; i++) {
    x0 = Math.min(x0, boxes[4 * i]); y0 = Math.min(y0, boxes[4 * i + 1]);
    x1 = Math.max(x1, boxes[4 * i + 2]); y1 = Math.max(y1, boxes[4 * i + 3]);
  }
  const side = Math.max(1, Math.ceil(Math.sqrt(count)));
  const cw = Math.max((x1 - x0) / side, 1e-9), ch = Math.max((y1 - y0) / side, 1e-9);
  const cells = new Map();
  const col = (x) => Math.min(side - 1, Math.max(0, Math.floor((x - x0) / cw)));
  const row = (y) => Math.min(side - 1, Math.max(0, Math.floor((y - y0) / ch)));
  for (let i = 0; i < count; i++) {
    for (let r = row(boxes[4 * i + 1]); r <= row(boxes[4 * i + 3]); r++) {
      for (let c = col(boxes[4 * i]); c <= col(boxes[4 * i + 2]); c++) {
        const key = r * side + c;
        if (!cells.has(key)) cells.set(key, []);
        cells.get(key).push(i);
      }
    }
  }
  return {
    /** Indices whose boxes, widened by `pad`, contain the point. */
    *near(x, y, pad) {
      if (!count || x < x0 - pad || x > x1 + pad || y < y0 - pad || y > y1 + pad) return;
      const seen = new Set();
      for (let r = row(y - pad); r <= row(y + pad); r++) {
        for (let c = col(x - pad); c <= col(x + pad); c++) {
          for (const i of cells.get(r * side + c) ?? []) {
            if (seen.has(i)) continue;
            seen.add(i);
            if (x >= boxes[4 * i] - pad && x <= boxes[4 * i + 2] + pad && y >= boxes[4 * i + 1] - pad
                && y <= boxes[4 * i + 3] + pad) yield i;
          }
        }
      }
    },
  };
}

/** Whether (x, y) in SVG space lies inside polygon i (even-odd rule). */
function inside(flat, corners, i, x, y) {
  let hit = false;
  for (let c = 0, p = corners - 1; c < corners; p = c++) {
    const xc = flat[2 * (i * corners + c)], yc = -flat[2 * (i * corners + c) + 1];
    const xp = flat[2 * (i * corners + p)], yp = -flat[2 * (i * corners + p) + 1];
    if ((yc > y) !== (yp > y) && x < ((xp - xc) * (y - yc)) / (yp - yc) + xc) hit = !hit;
  }
  return hit;
}

/**
 * Distance from (x, y) to the segment from (ax, ay) to (bx, by).
 * @returns {number}
 */
export function segmentDistance(x, y, ax, ay, bx, by) {
  const dx = bx - ax, dy = by - ay;
  const t = dx || dy ? Math.max(0, Math.min(1, ((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy))) : 0;
  return Math.hypot(x - (ax + t * dx), y - (ay + t * dy));
}
