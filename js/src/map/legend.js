// The footprint map's legend column: the colour bar (or category legend) of the fill, what the
// hatched and dashed outlines mean, and the colour bar of the overlap lines.

import { el } from "../_dom.js";
import { formatNumber } from "./geometry.js";

/**
 * @typedef {{kind: "ramp", colors: string[], vmin: number, vmax: number, label: string}} RampBar
 * @typedef {{kind: "categories", labels: string[], colors: string[], more: number, label: string}} CategoryBar
 * @typedef {RampBar | CategoryBar | {}} ColorBar
 */

/** The flags the legend explains: [swatch class, text]. */
export const FLAG_LEGEND = {
  invalid: ["smnb-map-swatch-invalid", "no valid sky (hatched)"],
  disconnected: ["smnb-map-swatch-disconnected", "not connected to the largest group of overlaps (dashed)"],
};

/** The legend of the gradient arrows of fitted sky planes. */
export const ARROW_LEGEND = "sky gradient: the direction the fitted plane rises, length by size";
/** Its note on a canvas, which draws no arrows on footprints too small for them. */
export const ARROW_ZOOM_NOTE = " (drawn where footprints are 12 pixels or wider: zoom in)";

/** The legend of an overlap line down-weighted by a robust solve. */
export const FLAGGED_PAIR_LEGEND = "overlap down-weighted by the robust solve (dotted)";

/**
 * A colour bar (ramp: gradient with vmax on top) or a category legend, with its label.
 * @param {ColorBar} cb
 * @returns {HTMLElement}
 */
export function colorbarNode(cb) {
  const node = el("div", "smnb-map-cb");
  node.append(el("div", "smnb-map-cb-title", cb.label ?? ""));
  if (cb.kind === "ramp") {
    const row = el("div", "smnb-map-cb-ramp");
    const bar = el("div", "smnb-map-cb-gradient");
    bar.style.background = `linear-gradient(to top, ${(cb.colors ?? []).join(", ")})`;
    const ticks = el("div", "smnb-map-cb-ticks");
    const mid = (cb.vmin + cb.vmax) / 2;
    for (const v of cb.vmin === cb.vmax ? [cb.vmax] : [cb.vmax, mid, cb.vmin]) {
      ticks.append(el("span", "smnb-map-cb-tick", formatNumber(v)));
    }
    row.append(bar, ticks);
    node.append(row);
  } else if (cb.kind === "categories") {
    (cb.labels ?? []).forEach((label, i) => {
      const swatch = el("span", "smnb-map-swatch");
      swatch.style.background = cb.colors[i];
      node.append(legendRow(swatch, label));
    });
    if (cb.more) node.append(el("div", "smnb-map-cb-more", `+ ${cb.more} more`));
  }
  return node;
}

/**
 * One legend entry: a swatch and its text.
 * @param {HTMLElement} swatch
 * @param {string} text
 * @returns {HTMLElement}
 */
export function legendRow(swatch, text) {
  const row = el("div", "smnb-map-legend-row");
  row.append(swatch, el("span", "smnb-map-legend-text", text));
  return row;
}

/**
 * The legend rows of the flags present among `flags` (one list per image).
 * @param {string[][]} flags
 * @returns {HTMLElement[]}
 */
export function flagRows(flags) {
  const present = new Set(flags.flat());
  return Object.keys(FLAG_LEGEND).filter((f) => present.has(f)).map((f) => {
    const [cls, text] = FLAG_LEGEND[f];
    return legendRow(el("span", `smnb-map-swatch ${cls}`), text);
  });
}
