// The footprint map's state as the drawing code uses it, decoded once from the model's
// traitlets (binary buffers: see FootprintMap's notes in Python) and kept until they change.
// The tooltips and the overlap lines' titles are written here, from the numbers, exactly as
// Python's FootprintMap.tooltips and .pairs write them.

import { decodeTexts, float32s, hexColors, int32s, number, points, uint8s } from "../_data.js";

/**
 * @typedef {import("./geometry.js").Point} Point
 * @typedef {{a: Point, b: Point, color: string, valid: boolean, flagged: boolean}} PairLine
 *
 * @typedef {Object} MapData
 * @property {() => string[]} names
 * @property {() => number} count  the number of images
 * @property {() => Float32Array} flatPolygons  (n * corners * 2) display-frame corners
 * @property {() => number} corners  corners per footprint
 * @property {() => Point[][]} polygons
 * @property {() => Point[]} centers
 * @property {() => string[]} fill  "#rrggbb" per image
 * @property {() => Uint8Array} fillBytes  RGB per image
 * @property {() => string[][]} flags  "invalid", "disconnected" per image
 * @property {(i: number) => string} tooltip
 * @property {() => Array<[Point, Point] | null>} arrows  each image's gradient arrow (centre -> tip), or null
 * @property {() => PairLine[]} pairs
 * @property {(j: number) => string} pairTitle
 * @property {(keys: string[]) => void} changed  forget what was decoded from these traitlets
 */

/**
 * The tooltip lines of image i's fitted plane (Python: footprint_map._plane_lines).
 * @param {{slopeX: Float32Array, slopeY: Float32Array, gradient: Float32Array, pa: Float32Array, unit: string}} r
 * @param {number} i
 * @returns {string[]}
 */
export function planeLines(r, i) {
  const toward = Number.isFinite(r.pa[i]) ? ` toward PA ${number(r.pa[i])}°` : "";
  return [`slopes x, y: ${number(r.slopeX[i])}, ${number(r.slopeY[i])}${r.unit}/pixel`,
    `gradient: ${number(r.gradient[i])}${r.unit}/arcsec${toward}`];
}

/**
 * @param {*} model  the anywidget model
 * @returns {MapData}
 */
export function createMapData(model) {
  const cache = new Map();
  const memo = (key, make) => {
    if (!cache.has(key)) cache.set(key, make());
    return cache.get(key);
  };
  const DEPENDS = {
    names: ["names"], shapes: ["shapes"], fill: ["fill_rgb"], images: ["images"],
    pairs: ["pair_shapes", "pair_values"],
  };

  const shapes = () => memo("shapes", () => {
    const s = model.get("shapes") ?? {};
    const corners = s.corners ?? 4;
    const flat = float32s(s.polygons);
    return { corners, flat, polygons: points(flat, corners), centers: points(float32s(s.centers)) };
  });

  const images = () => memo("images", () => {
    const info = model.get("images") ?? {};
    return {
      solved: Boolean(info.solved), unit: info.unit ? ` ${info.unit}` : "", flags: uint8s(info.flags),
      sky: float32s(info.sky), err: float32s(info.sky_err), component: int32s(info.component),
      group: decodeTexts(info.group), reason: decodeTexts(info.reason),
      plane: Boolean(info.plane), slopeX: float32s(info.slope_x), slopeY: float32s(info.slope_y),
      gradient: float32s(info.gradient), pa: float32s(info.gradient_pa), tips: float32s(info.arrows),
    };
  });

  const pairData = () => memo("pairs", () => {
    const shape = model.get("pair_shapes") ?? {};
    const values = model.get("pair_values") ?? {};
    const ends = float32s(shape.ends);
    const a = int32s(shape.a), b = int32s(shape.b);
    const colors = hexColors(values.color);
    const state = uint8s(values.state);
    const lines = Array.from(a, (_, j) => ({
      a: [ends[4 * j], ends[4 * j + 1]], b: [ends[4 * j + 2], ends[4 * j + 3]], color: colors[j] ?? "#bdbdbd",
      valid: Boolean(state[j] & 1), flagged: Boolean(state[j] & 2),
    }));
    return {
      lines, a, b, state, inputs: shape.inputs ?? [], unit: values.unit ? ` ${values.unit}` : "",
      after: float32s(values.after), before: float32s(values.before), weight: float32s(values.weight),
      plane: Boolean(values.plane), residGradient: float32s(values.resid_gradient),
      fallback: decodeTexts(values.fallback),
    };
  });

  return {
    names: () => model.get("names") ?? [],
    count: () => shapes().polygons.length,
    flatPolygons: () => shapes().flat,
    corners: () => shapes().corners,
    polygons: () => shapes().polygons,
    centers: () => shapes().centers,
    fill: () => memo("fill", () => hexColors(model.get("fill_rgb"))),
    fillBytes: () => memo("fillBytes", () => uint8s(model.get("fill_rgb"))),
    flags: () => memo("flags", () => Array.from(images().flags, (f) => [
      ...(f & 1 ? ["invalid"] : []), ...(f & 2 ? ["disconnected"] : []),
    ])),
    tooltip(i) {
      const name = (model.get("names") ?? [])[i];
      if (name === undefined) return "";
      const r = images();
      const lines = [name, `group: ${r.group[i] ?? ""}`];
      if (!r.solved) {
        lines.push("no result yet");
      } else {
        lines.push(`sky: ${number(r.sky[i])} ± ${number(r.err[i])}${r.unit}`);
        if (r.plane) lines.push(...planeLines(r, i));
        lines.push(`component: ${r.component[i]}`);
        const reason = r.reason[i] ?? "";
        lines.push(r.flags[i] & 1 ? `NOT valid: ${reason || "no sky"}` : `valid${reason ? ` (${reason})` : ""}`);
      }
      return lines.join("\n");
    },
    pairs: () => pairData().lines,
    pairTitle(j) {
      const p = pairData();
      if (j < 0 || j >= p.lines.length) return "";
      let title = `${p.inputs[p.a[j]]} – ${p.inputs[p.b[j]]}\nresidual after: ${number(p.after[j])}${p.unit}\n` +
        `difference before: ${number(p.before[j])}${p.unit}`;
      if (p.plane && p.state[j] & 1) {
        const reason = p.fallback[j] ?? "";
        title += reason ? `\nconstant only: ${reason}` : `\nresidual gradient: ${number(p.residGradient[j])}${p.unit}/arcsec`;
      }
      if (!(p.state[j] & 1)) title += "\nnot used (no valid pixels)";
      else if (p.state[j] & 2) {
        title += `\ndown-weighted by the robust solve (weight x ${number(p.weight[j])}): something only one image sees?`;
      }
      return title;
    },
    arrows: () => memo("arrows", () => {
      const r = images(), c = shapes().centers;
      if (!r.plane) return [];
      return c.map((from, i) => {
        const tip = [r.tips[2 * i], r.tips[2 * i + 1]];
        return Number.isFinite(tip[0]) && Number.isFinite(tip[1]) ? [from, tip] : null;
      });
    }),
    changed(keys) {
      for (const [entry, traits] of Object.entries(DEPENDS)) {
        if (traits.some((t) => keys.includes(t))) {
          cache.delete(entry);
          if (entry === "fill") cache.delete("fillBytes");
          if (entry === "images" || entry === "shapes") cache.delete("arrows");
          if (entry === "images") cache.delete("flags");
        }
      }
    },
  };
}
