// The footprint map's canvas renderer, for many thousands of footprints (SVG slows down with
// one element per footprint): the same methods as svg_renderer.js.  Two stacked canvases: the
// footprints and overlap lines (redrawn when they or the view change) and, above, the
// selection, hover, focus and box (cheap to redraw).  Fills are drawn one path per colour;
// a footprint smaller than two pixels is drawn as a dot (level of detail); footprints
// outside the view are skipped.  Colours of outlines and rings are the map's CSS variables,
// read when drawing, so the theme applies as it does to the SVG.  What lies under the pointer
// is found by a grid index (hit_index.js).

import { el } from "../_dom.js";
import { arrowStrokes, pairSegment, viewScale } from "./geometry.js";
import { createHitIndex } from "./hit_index.js";

const DOT = 2; // pixels: footprints smaller than this on screen are drawn as dots
const OUTLINED = 6; // pixels: footprints smaller than this get no outline (it would hide the fill)
export const ARROWED = 12; // pixels: nor gradient arrows below this (thousands hid the planes' colours)
const PER_PATH = 256; // footprints per path: one path of thousands of overlapping ones fills slowly
const PAIR_TOLERANCE = 4; // pixels: how close to an overlap line the pointer must be

/**
 * @param {string} uid  unused (the canvas needs no ids); the SVG renderer's signature
 * @returns {import("./svg_renderer.js").Renderer}
 */
export function createCanvasRenderer(uid) { // eslint-disable-line no-unused-vars
  const surface = el("div", "smnb-map-surface smnb-map-canvas-surface");
  surface.tabIndex = 0;
  surface.setAttribute("role", "img");
  surface.dataset.renderer = "canvas";
  const base = /** @type {HTMLCanvasElement} */ (el("canvas", "smnb-map-layer"));
  const top = /** @type {HTMLCanvasElement} */ (el("canvas", "smnb-map-layer"));
  surface.append(base, top);

  let flat = new Float32Array(0); // display-frame corners, `corners` per footprint
  let corners = 4;
  let count = 0;
  let fill = []; // "#rrggbb" per footprint
  let flags = []; // string lists per footprint
  let selected = new Set();
  let hover = -1, focus = -1;
  let pairs = [], pairsShown = false;
  let arrows = []; // [centre, tip] or null per footprint
  let view = { x: -1, y: -1, w: 2, h: 2 };
  let box = null;
  let index = createHitIndex(flat, corners);
  let segments = new Float64Array(0);
  let frame = 0, dirtyBase = false, dirtyTop = false;
  let typical = 0; // the median footprint width, display units

  function measure() {
    const widths = [];
    const step = Math.max(1, Math.floor(count / 200));
    for (let i = 0; i < count; i += step) {
      let x0 = Infinity, x1 = -Infinity;
      for (let c = 0; c < corners; c++) {
        x0 = Math.min(x0, flat[2 * (i * corners + c)]);
        x1 = Math.max(x1, flat[2 * (i * corners + c)]);
      }
      widths.push(x1 - x0);
    }
    widths.sort((a, b) => a - b);
    typical = widths[Math.floor(widths.length / 2)] ?? 0;
  }

  function reindex() {
    segments = new Float64Array(4 * pairs.length);
    pairs.forEach((pair, j) => segments.set(pairSegment(pair.a, pair.b).flat(), 4 * j));
    index = createHitIndex(flat, corners, pairsShown ? segments : []);
  }

  /** The pairs' lines are where they were (a re-solve: new colours only). */
  function sameSegments(next) {
    if (next.length !== pairs.length) return false;
    for (let j = 0; j < next.length; j++) {
      const [[ax, ay], [bx, by]] = pairSegment(next[j].a, next[j].b);
      const k = 4 * j;
      if (segments[k] !== ax || segments[k + 1] !== ay || segments[k + 2] !== bx || segments[k + 3] !== by) return false;
    }
    return true;
  }

  function schedule(layer) {
    if (layer === "base") dirtyBase = true;
    dirtyTop = true;
    if (frame) return;
    const run = () => {
      frame = 0;
      const r = surface.getBoundingClientRect();
      // not laid out (hidden, detached, the page re-styling): keep what is drawn, draw later
      // (the map's ResizeObserver asks again once it has a size)
      if (!(r.width > 0 && r.height > 0)) return;
      if (dirtyBase) drawBase();
      if (dirtyTop) drawTop();
      dirtyBase = dirtyTop = false;
    };
    frame = typeof requestAnimationFrame === "function" ? requestAnimationFrame(run) : setTimeout(run, 0);
  }

  /** The canvas's pixel size and the SVG-space -> canvas-pixel mapping (as SVG's "meet"). */
  function layout(canvas) {
    const r = surface.getBoundingClientRect();
    const ratio = globalThis.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(r.width * ratio)), height = Math.max(1, Math.round(r.height * ratio));
    if (canvas.width !== width || canvas.height !== height) Object.assign(canvas, { width, height });
    const { s, ox, oy } = viewScale({ left: 0, top: 0, width, height }, view);
    return { s, ox, oy, ratio, width, height };
  }

  function context(canvas) {
    try {
      return canvas.getContext("2d");
    } catch {
      return null; // no canvas support (node's jsdom): nothing is drawn, the rest works
    }
  }

  function css(name, fallback) {
    return getComputedStyle(surface).getPropertyValue(name).trim() || fallback;
  }

  /** Trace footprint i (pixels); returns whether it was drawn as a path (not culled). */
  function trace(ctx, t, i, asDot) {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (let c = 0; c < corners; c++) {
      const x = t.ox + (flat[2 * (i * corners + c)] - view.x) * t.s;
      const y = t.oy + (-flat[2 * (i * corners + c) + 1] - view.y) * t.s;
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    if (x1 < 0 || y1 < 0 || x0 > t.width || y0 > t.height) return false;
    if (asDot && x1 - x0 < DOT * t.ratio && y1 - y0 < DOT * t.ratio) {
      ctx.rect((x0 + x1) / 2 - t.ratio, (y0 + y1) / 2 - t.ratio, DOT * t.ratio, DOT * t.ratio);
      return true;
    }
    for (let c = 0; c < corners; c++) {
      const x = t.ox + (flat[2 * (i * corners + c)] - view.x) * t.s;
      const y = t.oy + (-flat[2 * (i * corners + c) + 1] - view.y) * t.s;
      if (c === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    }
    ctx.closePath();
    return true;
  }

  function drawBase() {
    const ctx = context(base);
    if (!ctx) return;
    const t = layout(base);
    ctx.clearRect(0, 0, t.width, t.height);
    const byColor = new Map();
    for (let i = 0; i < count; i++) {
      const color = fill[i] ?? "#bdbdbd";
      if (!byColor.has(color)) byColor.set(color, []);
      byColor.get(color).push(i);
    }
    ctx.globalAlpha = 0.85;
    for (const [color, members] of byColor) {
      ctx.fillStyle = color;
      for (let start = 0; start < members.length; start += PER_PATH) {
        ctx.beginPath();
        for (const i of members.slice(start, start + PER_PATH)) trace(ctx, t, i, true);
        ctx.fill();
      }
    }
    ctx.globalAlpha = 1;
    if (typical * t.s >= OUTLINED * t.ratio) {
      outline(ctx, t, (i) => !(flags[i] ?? []).length, css("--smnb-map-muted", "#616161"), 1, []);
    }
    hatch(ctx, t);
    outline(ctx, t, (i) => (flags[i] ?? []).includes("invalid"), css("--smnb-map-error", "#d32f2f"), 2, []);
    outline(ctx, t, (i) => (flags[i] ?? []).includes("disconnected"), css("--smnb-map-warn", "#e65100"), 2, [6, 4]);
    if (typical * t.s >= ARROWED * t.ratio) drawArrows(ctx, t);
    if (pairsShown) drawPairs(ctx, t);
  }

  function drawArrows(ctx, t) {
    const strokes = arrows.flatMap((a) => (a ? arrowStrokes(a[0], a[1]) : []));
    if (!strokes.length) return;
    const px = (x) => t.ox + (x - view.x) * t.s, py = (y) => t.oy + (y - view.y) * t.s;
    ctx.beginPath();
    for (const [[x1, y1], [x2, y2]] of strokes) {
      ctx.moveTo(px(x1), py(y1));
      ctx.lineTo(px(x2), py(y2));
    }
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.strokeStyle = css("--smnb-map-bg", "white");
    ctx.lineWidth = 4 * t.ratio;
    ctx.stroke();
    ctx.strokeStyle = css("--smnb-map-fg-strong", "#111");
    ctx.lineWidth = 1.6 * t.ratio;
    ctx.stroke();
  }

  function outline(ctx, t, which, color, width, dash) {
    ctx.setLineDash(dash.map((d) => d * t.ratio));
    ctx.lineWidth = width * t.ratio;
    ctx.strokeStyle = color;
    ctx.lineJoin = "round";
    let traced = 0;
    ctx.beginPath();
    for (let i = 0; i < count; i++) {
      if (!which(i) || !trace(ctx, t, i, false)) continue;
      if (++traced % PER_PATH === 0) {
        ctx.stroke();
        ctx.beginPath();
      }
    }
    if (traced % PER_PATH) ctx.stroke();
    ctx.setLineDash([]);
  }

  function hatch(ctx, t) {
    const invalid = [];
    for (let i = 0; i < count; i++) if ((flags[i] ?? []).includes("invalid")) invalid.push(i);
    if (!invalid.length) return;
    const tile = document.createElement("canvas");
    tile.width = tile.height = Math.round(8 * t.ratio);
    const tc = context(tile);
    if (!tc) return;
    tc.strokeStyle = css("--smnb-map-error", "#d32f2f");
    tc.globalAlpha = 0.8;
    tc.lineWidth = 2 * t.ratio;
    tc.beginPath();
    tc.moveTo(0, tile.height);
    tc.lineTo(tile.width, 0);
    tc.stroke();
    ctx.beginPath();
    for (const i of invalid) trace(ctx, t, i, false);
    ctx.fillStyle = ctx.createPattern(tile, "repeat");
    ctx.fill();
  }

  function drawPairs(ctx, t) {
    const px = (x) => t.ox + (x - view.x) * t.s, py = (y) => t.oy + (y - view.y) * t.s;
    const inView = (j) => {
      const [x1, y1, x2, y2] = [px(segments[4 * j]), py(segments[4 * j + 1]), px(segments[4 * j + 2]), py(segments[4 * j + 3])];
      return Math.max(x1, x2) >= 0 && Math.min(x1, x2) <= t.width && Math.max(y1, y2) >= 0 && Math.min(y1, y2) <= t.height;
    };
    const stroke = (members) => {
      for (let start = 0; start < members.length; start += PER_PATH) {
        ctx.beginPath();
        for (const j of members.slice(start, start + PER_PATH)) {
          ctx.moveTo(px(segments[4 * j]), py(segments[4 * j + 1]));
          ctx.lineTo(px(segments[4 * j + 2]), py(segments[4 * j + 3]));
        }
        ctx.stroke();
      }
    };
    const shown = [];
    for (let j = 0; j < pairs.length; j++) if (inView(j)) shown.push(j);
    ctx.lineCap = "round";
    ctx.strokeStyle = "rgba(0, 0, 0, 0.7)";
    ctx.lineWidth = 5.5 * t.ratio;
    stroke(shown);
    const groups = new Map();
    for (const j of shown) {
      const pair = pairs[j];
      const key = `${pair.color}|${pair.valid ? "" : "unused"}|${pair.flagged ? "flagged" : ""}`;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(j);
    }
    ctx.lineWidth = 3 * t.ratio;
    for (const [key, members] of groups) {
      const [color, unused, flagged] = key.split("|");
      ctx.setLineDash(unused ? [4 * t.ratio, 4 * t.ratio] : flagged ? [1 * t.ratio, 4 * t.ratio] : []);
      ctx.strokeStyle = color;
      stroke(members);
    }
    ctx.setLineDash([]);
  }

  function drawTop() {
    const ctx = context(top);
    if (!ctx) return;
    const t = layout(top);
    ctx.clearRect(0, 0, t.width, t.height);
    const ring = (indices, color, width, dash = []) => {
      ctx.beginPath();
      let any = false;
      for (const i of indices) if (i >= 0 && i < count) any = trace(ctx, t, i, false) || any;
      if (!any) return;
      ctx.setLineDash(dash.map((d) => d * t.ratio));
      ctx.lineWidth = width * t.ratio;
      ctx.strokeStyle = color;
      ctx.lineJoin = "round";
      ctx.stroke();
      ctx.setLineDash([]);
    };
    ring(selected, css("--smnb-map-bg", "white"), 5.5);
    ring(selected, css("--smnb-map-accent", "#1976d2"), 2.5);
    ring([hover], css("--smnb-map-fg-strong", "#111"), 2);
    if (surface.matches(":focus-visible")) ring([focus], css("--smnb-map-fg-strong", "#111"), 2.5, [5, 3]);
    if (box) {
      const [ax, ay] = box[0], [bx, by] = box[1];
      const x = t.ox + (Math.min(ax, bx) - view.x) * t.s, y = t.oy + (Math.min(ay, by) - view.y) * t.s;
      const w = Math.abs(bx - ax) * t.s, h = Math.abs(by - ay) * t.s;
      ctx.fillStyle = css("--smnb-map-accent", "#1976d2");
      ctx.globalAlpha = 0.12;
      ctx.fillRect(x, y, w, h);
      ctx.globalAlpha = 1;
      ctx.strokeStyle = ctx.fillStyle;
      ctx.lineWidth = t.ratio;
      ctx.strokeRect(x, y, w, h);
    }
  }

  surface.addEventListener("focus", () => schedule("top"));
  surface.addEventListener("blur", () => schedule("top"));
  // a new theme (JupyterLab marks it on <body>) changes the CSS colours the canvas was drawn in
  const theme = typeof MutationObserver === "function" ? new MutationObserver(() => schedule("base")) : null;
  theme?.observe(document.body, { attributes: true });

  return {
    element: surface,
    setShapes(polygons) {
      count = polygons.length;
      corners = polygons[0]?.length ?? 4;
      flat = Float32Array.from(polygons.flat(2));
      measure();
      reindex();
      schedule("base");
    },
    setFlat(values, perPolygon) {
      flat = values;
      corners = perPolygon;
      count = corners ? Math.floor(values.length / (2 * corners)) : 0;
      measure();
      reindex();
      schedule("base");
    },
    setFill(colors) { fill = colors; schedule("base"); },
    setLabels() {}, // no element per footprint: the live region and the tooltip speak instead
    setFlags(values) { flags = values; schedule("base"); },
    setSelection(indices) { selected = indices; schedule("top"); },
    setHover(i) { hover = i; schedule("top"); },
    setFocus(i) { focus = i; schedule("top"); },
    setArrows(values) { arrows = values; schedule("base"); },
    setPairs(values) {
      const moved = !sameSegments(values);
      pairs = values;
      if (moved) reindex(); // a re-solve changes colours only: the hit index stays
      if (pairsShown) schedule("base");
    },
    showPairs(visible) {
      if (visible === pairsShown) return;
      pairsShown = visible;
      reindex();
      schedule("base");
    },
    setView(v) {
      view = { ...v };
      surface.dataset.view = `${view.x} ${view.y} ${view.w} ${view.h}`;
      schedule("base");
    },
    showBox(a, b) { box = [a, b]; schedule("top"); },
    hideBox() { if (box) { box = null; schedule("top"); } },
    destroy() {
      theme?.disconnect();
      if (frame && typeof cancelAnimationFrame === "function") cancelAnimationFrame(frame);
    },
    hit(event) {
      const r = surface.getBoundingClientRect();
      const rect = r.width > 0 && r.height > 0 ? r : { left: 0, top: 0, width: 640, height: 420 };
      const { s, ox, oy } = viewScale(rect, view);
      const x = view.x + (event.clientX - ox) / s, y = view.y + (event.clientY - oy) / s;
      if (pairsShown) {
        const j = index.segmentNear(x, y, PAIR_TOLERANCE / s);
        if (j >= 0) return { pair: j };
      }
      const i = index.polygonAt(x, y);
      return i >= 0 ? { image: i } : null;
    },
  };
}
