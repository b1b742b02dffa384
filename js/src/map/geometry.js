// The footprint map's pure helpers: geometry of the view (fit, zoom, letterboxing), the scale
// bar, keyboard neighbours, box selection, SVG paths.  No DOM, no model: unit-tested alone.
//
// Coordinates: the traitlets are in arcsec in the display frame (x right = west, y up = north).
// The drawing space ("SVG space") is the same with y flipped (sy = -y), so views are in arcsec.

/** @typedef {{x: number, y: number, w: number, h: number}} View  a box of SVG space */
/** @typedef {{left: number, top: number, width: number, height: number}} Rect  client pixels */
/** @typedef {[number, number]} Point */

const FIT_MARGIN = 0.06;
const PAIR_INSET = 0.2; // overlap lines leave this fraction of their length free at each end
const SCALE_STEPS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900,
  1800, 3600, 7200, 18000, 36000, 72000];

/**
 * Bounding box of polygons in SVG space (y flipped).
 * @param {Point[][]} polygons  corners in the display frame
 * @returns {{x0: number, x1: number, y0: number, y1: number}}
 */
export function svgBounds(polygons) {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const poly of polygons) {
    for (const [x, y] of poly) {
      x0 = Math.min(x0, x); x1 = Math.max(x1, x);
      y0 = Math.min(y0, -y); y1 = Math.max(y1, -y);
    }
  }
  if (!Number.isFinite(x0)) return { x0: -1, x1: 1, y0: -1, y1: 1 };
  return { x0, x1, y0, y1 };
}

/**
 * Widen or heighten a view about its centre so that w / h == aspect.
 * @param {View} view
 * @param {number} aspect
 * @returns {View}
 */
export function withAspect(view, aspect) {
  const cx = view.x + view.w / 2, cy = view.y + view.h / 2;
  let { w, h } = view;
  if (w / h < aspect) w = h * aspect; else h = w / aspect;
  return { x: cx - w / 2, y: cy - h / 2, w, h };
}

/**
 * The view showing every polygon with a margin, at the given aspect ratio (width / height).
 * @param {Point[][]} polygons
 * @param {number} aspect
 * @returns {View}
 */
export function fitView(polygons, aspect) {
  const b = svgBounds(polygons);
  const size = Math.max(b.x1 - b.x0, b.y1 - b.y0, 1e-3);
  const w = Math.max(b.x1 - b.x0, size * 1e-3) + 2 * FIT_MARGIN * size;
  const h = Math.max(b.y1 - b.y0, size * 1e-3) + 2 * FIT_MARGIN * size;
  return withAspect({ x: b.x0 - FIT_MARGIN * size, y: b.y0 - FIT_MARGIN * size, w, h }, aspect);
}

/**
 * Pixels per arcsec and the offset of the view in an element of `rect` (meet, centred).
 * @param {Rect} rect
 * @param {View} view
 * @returns {{s: number, ox: number, oy: number}}
 */
export function viewScale(rect, view) {
  const s = Math.min(rect.width / view.w, rect.height / view.h);
  return { s, ox: rect.left + (rect.width - view.w * s) / 2, oy: rect.top + (rect.height - view.h * s) / 2 };
}

/**
 * SVG-space coordinates [sx, sy] of a point given in client (page) pixels.
 * @param {number} clientX
 * @param {number} clientY
 * @param {Rect} rect
 * @param {View} view
 * @returns {Point}
 */
export function clientToSvg(clientX, clientY, rect, view) {
  const { s, ox, oy } = viewScale(rect, view);
  return [view.x + (clientX - ox) / s, view.y + (clientY - oy) / s];
}

/**
 * The view zoomed by `factor` (> 1 zooms out) keeping the point [sx, sy] fixed.
 * @param {View} view
 * @param {number} factor
 * @param {Point} point
 * @returns {View}
 */
export function zoomView(view, factor, [sx, sy]) {
  return {
    x: sx - (sx - view.x) * factor, y: sy - (sy - view.y) * factor, w: view.w * factor, h: view.h * factor,
  };
}

/**
 * A round scale-bar length (arcsec) no longer than `maxArcsec`, and its label.
 * @param {number} maxArcsec
 * @returns {{length: number, label: string}}
 */
export function scaleBar(maxArcsec) {
  let length = SCALE_STEPS[0];
  for (const step of SCALE_STEPS) if (step <= maxArcsec) length = step;
  return { length, label: formatAngle(length) };
}

/**
 * "30″", "2′", "1.5°".
 * @param {number} arcsec
 * @returns {string}
 */
export function formatAngle(arcsec) {
  const trim = (v) => String(Number(v.toPrecision(3)));
  if (arcsec < 60) return `${trim(arcsec)}″`;
  if (arcsec < 3600) return `${trim(arcsec / 60)}′`;
  return `${trim(arcsec / 3600)}°`;
}

/**
 * The image nearest to image `from` in direction [dx, dy] (display frame, y up), or -1.
 * Candidates lie in the half-plane ahead; the distance across the direction counts double,
 * so that aligned neighbours win over diagonal ones.  Images at the very same centre are
 * reached with next/previous instead.
 * @param {Point[]} centers
 * @param {number} from
 * @param {Point} direction
 * @returns {number}
 */
export function nearestInDirection(centers, from, [dx, dy]) {
  const [x0, y0] = centers[from];
  let best = -1, bestScore = Infinity;
  centers.forEach(([x, y], j) => {
    const along = (x - x0) * dx + (y - y0) * dy;
    if (j === from || along <= 1e-9) return;
    const score = along + 2 * Math.abs((x - x0) * dy - (y - y0) * dx);
    if (score < bestScore) { best = j; bestScore = score; }
  });
  return best;
}

/**
 * Indices of the centres (display frame) inside a box given by two SVG-space corners.
 * @param {Point[]} centers
 * @param {Point} a
 * @param {Point} b
 * @returns {number[]}
 */
export function centersInBox(centers, [ax, ay], [bx, by]) {
  const [x0, x1] = [Math.min(ax, bx), Math.max(ax, bx)];
  const [y0, y1] = [Math.min(ay, by), Math.max(ay, by)];
  const out = [];
  centers.forEach(([x, y], i) => { if (x >= x0 && x <= x1 && -y >= y0 && -y <= y1) out.push(i); });
  return out;
}

/**
 * SVG path data of a polygon given in the display frame.
 * @param {Point[]} poly
 * @returns {string}
 */
export function pathData(poly) {
  return "M" + poly.map(([x, y]) => `${x},${-y}`).join("L") + "Z";
}

/**
 * The drawn part (SVG space) of the line between two input centres (display frame): it stops
 * short of both centres, so that a click at an image's centre reaches the image, not a line.
 * @param {Point} a
 * @param {Point} b
 * @returns {[Point, Point]}
 */
export function pairSegment([ax, ay], [bx, by]) {
  const t = PAIR_INSET;
  return [[ax + t * (bx - ax), -(ay + t * (by - ay))], [bx - t * (bx - ax), -(by - t * (by - ay))]];
}

const ARROW_HEAD = 0.3; // an arrow's head: this fraction of its length ...
const ARROW_ANGLE = (25 * Math.PI) / 180; // ... at this angle to the shaft

/**
 * The strokes (SVG space) of an arrow from `from` to `tip` (display frame): the shaft and the
 * two sides of its head.  An arrow of no length has no strokes.
 * @param {Point} from
 * @param {Point} tip
 * @returns {[Point, Point][]}
 */
export function arrowStrokes([fx, fy], [tx, ty]) {
  const dx = tx - fx, dy = -(ty - fy); // SVG space: y down
  const length = Math.hypot(dx, dy);
  if (!(length > 0)) return [];
  const back = Math.atan2(-dy, -dx), h = ARROW_HEAD * length;
  const end = [tx, -ty];
  const side = (a) => [end, [end[0] + h * Math.cos(back + a), end[1] + h * Math.sin(back + a)]];
  return [[[fx, -fy], end], side(ARROW_ANGLE), side(-ARROW_ANGLE)];
}

/**
 * SVG path data of many arrows (see `arrowStrokes`); null entries are skipped.
 * @param {Array<[Point, Point] | null>} arrows
 * @returns {string}
 */
export function arrowsPath(arrows) {
  return arrows.flatMap((a) => (a ? arrowStrokes(a[0], a[1]) : []))
    .map(([[x1, y1], [x2, y2]]) => `M${x1},${y1}L${x2},${y2}`).join("");
}

/**
 * A short number for colour-bar ticks.
 * @param {number} v
 * @returns {string}
 */
export function formatNumber(v) {
  if (!Number.isFinite(v)) return "n/a";
  return String(Number(v.toPrecision(4)));
}
