// A stand-in for the anywidget model (get/set/on/off/save_changes/send) and a jsdom page,
// so that each widget's render() can be tested in node without a browser or a kernel.
import { JSDOM } from "jsdom";

export class FakeModel {
  constructor(state) {
    this.state = structuredClone(state);
    this.handlers = new Map();
    this.saves = 0;
    this.sent = [];
  }
  get(key) {
    return this.state[key];
  }
  set(key, value) {
    this.state[key] = value;
    for (const cb of this.handlers.get(`change:${key}`) ?? []) cb();
  }
  on(event, cb) {
    this.handlers.set(event, [...(this.handlers.get(event) ?? []), cb]);
  }
  off(event, cb) {
    this.handlers.set(event, (this.handlers.get(event) ?? []).filter((h) => h !== cb));
  }
  save_changes() {
    this.saves += 1;
  }
  send(message) {
    this.sent.push(message);
  }
  // a message from Python (anywidget's "msg:custom")
  receive(message) {
    for (const cb of this.handlers.get("msg:custom") ?? []) cb(message);
  }
}

// Install a fresh jsdom document as the global DOM; returns the element to render into.
export function freshDom() {
  const dom = new JSDOM("<!doctype html><html><body><div id='el'></div></body></html>", {
    pretendToBeVisual: true,
  });
  const { window } = dom;
  for (const key of ["window", "document", "navigator", "Node", "Element", "HTMLElement",
    "SVGElement", "Event", "KeyboardEvent", "MouseEvent", "WheelEvent", "Blob", "URL",
    "getComputedStyle", "requestAnimationFrame", "cancelAnimationFrame", "MutationObserver"]) {
    if (window[key] !== undefined) {
      Object.defineProperty(globalThis, key, { value: window[key], configurable: true, writable: true });
    }
  }
  return document.getElementById("el");
}

// -- the footprint map's traitlets from readable values (Python sends binary buffers) --------
const texts = (list) => {
  const distinct = [...new Set(list)];
  return { texts: distinct, index: Int32Array.from(list, (t) => distinct.indexOf(t)) };
};

/** `shapes` from polygons [[[x, y], ...], ...] and centres [[x, y], ...]. */
export function encodeShapes(polygons, centers) {
  return { corners: polygons[0]?.length ?? 4, polygons: Float32Array.from(polygons.flat(2)), centers: Float32Array.from(centers.flat()) };
}

/** `fill_rgb` from "#rrggbb" colours. */
export function rgb(hexes) {
  return Uint8Array.from(hexes.flatMap((h) => [1, 3, 5].map((k) => parseInt(h.slice(k, k + 2), 16))));
}

/** `images` from {solved, unit, sky, sky_err, component, group, reason, flags: [["invalid"], ...]}. */
export function encodeImages(r) {
  const bits = r.flags.map((f) => (f.includes("invalid") ? 1 : 0) | (f.includes("disconnected") ? 2 : 0));
  return {
    solved: r.solved, unit: r.unit, flags: Uint8Array.from(bits), sky: Float32Array.from(r.sky ?? []),
    sky_err: Float32Array.from(r.sky_err ?? []), component: Int32Array.from(r.component ?? []),
    group: texts(r.group), reason: texts(r.reason ?? r.group.map(() => "")),
    plane: Boolean(r.plane), slope_x: Float32Array.from(r.slope_x ?? []), slope_y: Float32Array.from(r.slope_y ?? []),
    gradient: Float32Array.from(r.gradient ?? []), gradient_pa: Float32Array.from(r.gradient_pa ?? []),
    arrows: Float32Array.from((r.arrows ?? []).flat()),
  };
}

/** `pair_shapes` and `pair_values` from [{a, b (input names), ends: [[x, y], [x, y]], color,
 * valid, flagged, after, before, weight}] and a unit. */
export function encodePairs(pairs, unit = "") {
  const inputs = [...new Set(pairs.flatMap((p) => [p.a, p.b]))];
  return {
    pair_shapes: {
      inputs, a: Int32Array.from(pairs, (p) => inputs.indexOf(p.a)), b: Int32Array.from(pairs, (p) => inputs.indexOf(p.b)),
      ends: Float32Array.from(pairs.flatMap((p) => p.ends.flat())),
    },
    pair_values: {
      unit, color: rgb(pairs.map((p) => p.color)), state: Uint8Array.from(pairs, (p) => (p.valid ? 1 : 0) | (p.flagged ? 2 : 0)),
      after: Float32Array.from(pairs, (p) => p.after), before: Float32Array.from(pairs, (p) => p.before),
      weight: Float32Array.from(pairs, (p) => p.weight ?? NaN),
      plane: pairs.some((p) => p.fallback !== undefined),
      resid_gradient: Float32Array.from(pairs, (p) => p.resid_gradient ?? NaN),
      fallback: texts(pairs.map((p) => p.fallback ?? "")),
    },
  };
}

/** The results table's columnar `data` from row objects (as Python's ResultsTable sends it). */
export function encodeRows(rows, columns) {
  const data = { count: rows.length };
  for (const c of columns) {
    const values = rows.map((r) => r[c.key] ?? null);
    if (c.kind === "num") data[c.key] = Float64Array.from(values, (v) => (v === null ? NaN : v));
    else if (c.kind === "bool") data[c.key] = Uint8Array.from(values, (v) => (v ? 1 : 0));
    else data[c.key] = texts(values);
  }
  return data;
}
