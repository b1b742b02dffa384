// The footprint map's SVG renderer: one <path> per footprint, overlays for the hatching of
// invalid images, the selection, hover and focus rings, the overlap lines and the box being
// dragged.  It only draws what it is told (render in footprint_map.js decides what).
//
// Another renderer (a canvas, for many thousands of footprints) provides the same methods:
// the interaction and the rest of the map call nothing else.

import { svgEl } from "../_dom.js";
import { arrowsPath, pairSegment, pathData } from "./geometry.js";

/**
 * @typedef {import("./geometry.js").View} View
 * @typedef {import("./geometry.js").Point} Point
 * @typedef {{a: Point, b: Point, color: string, valid: boolean, flagged?: boolean, title?: string}} Pair
 * @typedef {{image: number} | {pair: number}} Hit  what lies under the pointer
 *
 * @typedef {Object} Renderer
 * @property {Element} element  the drawing surface: focusable, role "img", gets the events
 * @property {(polygons: Point[][]) => void} setShapes  the footprints (display frame)
 * @property {(fill: string[]) => void} setFill  one CSS colour per footprint
 * @property {(labels: string[]) => void} setLabels  one accessible label per footprint
 * @property {(flags: string[][]) => void} setFlags  "invalid" (hatched), "disconnected" (dashed)
 * @property {(selected: Set<number>) => void} setSelection
 * @property {(index: number) => void} setHover  -1: none
 * @property {(index: number) => void} setFocus  the keyboard focus ring, -1: none
 * @property {(arrows: Array<[Point, Point] | null>) => void} setArrows  gradient arrows (centre -> tip)
 * @property {(pairs: Pair[]) => void} setPairs  the overlap lines
 * @property {(visible: boolean) => void} showPairs
 * @property {(view: View) => void} setView  the part of SVG space shown
 * @property {(from: Point, to: Point) => void} showBox  the box of a box selection (SVG space)
 * @property {() => void} hideBox
 * @property {(event: MouseEvent) => (Hit|null)} hit  what the event's pointer is on
 * @property {() => void} destroy  stop what it listens to
 */

/** Set an attribute only if it changes (an unchanged write still makes the browser restyle). */
function setChanged(node, name, value) {
  if (node.getAttribute(name) !== value) node.setAttribute(name, value);
}

/**
 * @param {string} uid  a page-unique prefix for the ids of the SVG's definitions
 * @returns {Renderer}
 */
export function createSvgRenderer(uid) {
  const svg = svgEl("svg", { tabindex: 0, role: "img", preserveAspectRatio: "xMidYMid meet" }, "smnb-map-svg");
  const defs = svgEl("defs");
  const pattern = svgEl("pattern", {
    id: `${uid}-hatch`, patternUnits: "userSpaceOnUse", width: 1, height: 1, patternTransform: "rotate(45)",
  });
  const patternLine = svgEl("line", { x1: 0, y1: 0, x2: 0, y2: 1 }, "smnb-map-hatch-line");
  pattern.append(patternLine);
  defs.append(pattern);
  const group = svgEl("g", {}, "smnb-map-shapes");
  const hatch = svgEl("path", { fill: `url(#${uid}-hatch)`, d: "" }, "smnb-map-hatch");
  const selectionHalo = svgEl("path", { d: "" }, "smnb-map-selection-halo");
  const selection = svgEl("path", { d: "" }, "smnb-map-selection");
  const overlay = svgEl("g", {}, "smnb-map-overlaps-layer");
  const casing = svgEl("path", { d: "" }, "smnb-map-pair-casing");
  const lines = svgEl("g", {}, "smnb-map-pairs");
  overlay.append(casing, lines);
  // gradient arrows: a casing in the page's background under a stroke in its text colour,
  // visible on any fill in either theme
  const arrowCasing = svgEl("path", { d: "" }, "smnb-map-arrow-casing");
  const arrows = svgEl("path", { d: "" }, "smnb-map-arrows");
  const hover = svgEl("path", { d: "" }, "smnb-map-hover");
  const focus = svgEl("path", { d: "" }, "smnb-map-focusring");
  const box = svgEl("rect", {}, "smnb-map-box");
  box.style.display = "none";
  svg.append(defs, group, hatch, arrowCasing, arrows, selectionHalo, selection, overlay, hover, focus, box);

  /** @type {SVGPathElement[]} */
  let shapes = [];
  const outline = (i) => shapes[i]?.getAttribute("d") ?? "";

  return {
    element: svg,
    setShapes(polygons) {
      shapes = polygons.map((poly, i) => svgEl("path", { d: pathData(poly), "data-index": i }, "smnb-map-shape"));
      group.replaceChildren(...shapes);
    },
    setFill(fill) {
      shapes.forEach((p, i) => setChanged(p, "fill", fill[i] ?? "none"));
    },
    setLabels(labels) {
      shapes.forEach((p, i) => setChanged(p, "aria-label", labels[i] ?? ""));
    },
    setFlags(flags) {
      const hatched = [];
      shapes.forEach((p, i) => {
        const f = flags[i] ?? [];
        p.classList.toggle("smnb-map-invalid", f.includes("invalid"));
        p.classList.toggle("smnb-map-disconnected", f.includes("disconnected"));
        if (f.includes("invalid")) hatched.push(outline(i));
      });
      hatch.setAttribute("d", hatched.join(""));
    },
    setSelection(selected) {
      const rings = [];
      shapes.forEach((p, i) => {
        p.classList.toggle("smnb-map-selected", selected.has(i));
        if (selected.has(i)) rings.push(outline(i));
      });
      selection.setAttribute("d", rings.join(""));
      selectionHalo.setAttribute("d", rings.join(""));
    },
    setHover(index) {
      hover.setAttribute("d", outline(index));
    },
    setFocus(index) {
      focus.setAttribute("d", outline(index));
    },
    setArrows(values) {
      const d = arrowsPath(values);
      arrows.setAttribute("d", d);
      arrowCasing.setAttribute("d", d);
    },
    setPairs(pairs) {
      const ends = pairs.map((pair) => pairSegment(pair.a, pair.b));
      lines.replaceChildren(...pairs.map((pair, j) => {
        const [[x1, y1], [x2, y2]] = ends[j];
        const kind = !pair.valid ? " smnb-map-pair-unused" : pair.flagged ? " smnb-map-pair-flagged" : "";
        const line = svgEl("line", { x1, y1, x2, y2, stroke: pair.color, "data-pair": j }, `smnb-map-pair${kind}`);
        line.setAttribute("aria-label", (pair.title ?? "").replace(/\n/g, "; "));
        return line;
      }));
      casing.setAttribute("d", ends.map(([[x1, y1], [x2, y2]]) => `M${x1},${y1}L${x2},${y2}`).join(""));
    },
    showPairs(visible) {
      overlay.style.display = visible ? "" : "none";
    },
    setView(view) {
      svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`);
      const spacing = view.w / 90; // hatching stays the same on screen at any zoom
      pattern.setAttribute("width", spacing);
      pattern.setAttribute("height", spacing);
      patternLine.setAttribute("y2", spacing);
      patternLine.setAttribute("stroke-width", spacing / 3);
    },
    showBox([ax, ay], [bx, by]) {
      const attrs = { x: Math.min(ax, bx), y: Math.min(ay, by), width: Math.abs(bx - ax), height: Math.abs(by - ay) };
      for (const [k, v] of Object.entries(attrs)) box.setAttribute(k, String(v));
      box.style.display = "";
    },
    hideBox() {
      box.style.display = "none";
    },
    destroy() {},
    hit(event) {
      const target = /** @type {Element|null} */ (event.target);
      const image = target?.getAttribute?.("data-index");
      if (image !== null && image !== undefined) return { image: Number(image) };
      const pair = target?.getAttribute?.("data-pair");
      if (pair !== null && pair !== undefined) return { pair: Number(pair) };
      return null;
    },
  };
}
