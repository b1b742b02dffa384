// The footprint map's fixed parts: toolbar, the drawing area with its compass, scale bar,
// tooltip and screen-reader line, and the legend column.  The renderer (svg_renderer.js)
// puts its drawing surface first in `canvas`.

import { button, el, svgEl } from "../_dom.js";

/**
 * @typedef {Object} Layout
 * @property {HTMLElement} root
 * @property {HTMLSelectElement} colorBy  the "Colour by" menu
 * @property {HTMLInputElement} overlaps  the "Overlaps" checkbox
 * @property {HTMLButtonElement} boxButton  "Box select" (aria-pressed)
 * @property {HTMLButtonElement} reset  "Reset view"
 * @property {HTMLElement} status  "N images · k selected"
 * @property {HTMLElement} canvas  the drawing area (position: relative)
 * @property {HTMLElement} scale  the scale bar and its label
 * @property {HTMLElement} scaleBar
 * @property {HTMLElement} scaleLabel
 * @property {HTMLElement} note  what the projection is when it is not a tangent plane
 * @property {HTMLElement} tooltip
 * @property {HTMLElement} live  aria-live text of the keyboard focus
 * @property {HTMLElement} colorbar  legend: the colour bar or the categories
 * @property {HTMLElement} flagLegend  legend: hatched and dashed footprints
 * @property {HTMLElement} pairsLegend  legend: the overlap lines' colour bar
 */

/** @returns {Layout} */
export function buildLayout() {
  const root = el("div", "smnb-map");

  const toolbar = el("div", "smnb-map-toolbar");
  const colorByLabel = el("label", "smnb-map-field", "Colour by ");
  const colorBy = /** @type {HTMLSelectElement} */ (el("select", "smnb-map-colorby"));
  colorByLabel.append(colorBy);
  const overlapsLabel = el("label", "smnb-map-field");
  const overlaps = /** @type {HTMLInputElement} */ (el("input", "smnb-map-overlaps"));
  overlaps.type = "checkbox";
  overlapsLabel.append(overlaps, document.createTextNode(" Overlaps"));
  // their keys are theirs, not JupyterLab's notebook shortcuts (arrows: another cell; a
  // letter: a Markdown cell; Lumino runs no shortcut for a key in such an element)
  for (const control of [colorBy, overlaps]) control.setAttribute("data-lm-suppress-shortcuts", "true");
  const boxButton = button("smnb-map-button smnb-map-boxbutton", "Box select",
    "Drag to select the images whose centres lie in a box (or shift-drag)");
  boxButton.setAttribute("aria-pressed", "false");
  const reset = button("smnb-map-button smnb-map-reset", "Reset view");
  const status = el("span", "smnb-map-status");
  toolbar.append(colorByLabel, overlapsLabel, boxButton, reset, status);

  const canvas = el("div", "smnb-map-canvas");
  const scale = el("div", "smnb-map-scale");
  const scaleBar = el("div", "smnb-map-scalebar");
  const scaleLabel = el("div", "smnb-map-scalelabel");
  scale.append(scaleBar, scaleLabel);
  const note = el("div", "smnb-map-note");
  note.hidden = true;
  const tooltip = el("div", "smnb-map-tooltip");
  tooltip.style.display = "none";
  tooltip.setAttribute("role", "tooltip");
  const live = el("div", "smnb-map-live");
  live.setAttribute("aria-live", "polite");
  canvas.append(compass(), scale, note, tooltip, live);

  const legend = el("div", "smnb-map-legend");
  const colorbar = el("div", "smnb-map-colorbar");
  const flagLegend = el("div", "smnb-map-flaglegend");
  const pairsLegend = el("div", "smnb-map-pairslegend");
  legend.append(colorbar, flagLegend, pairsLegend);
  const body = el("div", "smnb-map-body");
  body.append(canvas, legend);
  root.append(toolbar, body);

  return {
    root, colorBy, overlaps, boxButton, reset, status, canvas, scale, scaleBar, scaleLabel, note,
    tooltip, live, colorbar, flagLegend, pairsLegend,
  };
}

/** The north and east arrows (east to the left: the sky seen from inside). */
function compass() {
  const node = svgEl("svg", { viewBox: "0 0 60 60", width: 60, height: 60, "aria-hidden": "true" }, "smnb-map-compass");
  node.append(svgEl("path", { d: "M44,44 L44,10 M44,44 L10,44 M40,16 L44,8 L48,16 M16,40 L8,44 L16,48" },
    "smnb-map-compass-arrows"));
  const north = svgEl("text", { x: 44, y: 7, "text-anchor": "middle" }, "smnb-map-compass-label");
  north.textContent = "N";
  const east = svgEl("text", { x: 6, y: 48, "text-anchor": "middle", "dominant-baseline": "middle" },
    "smnb-map-compass-label");
  east.textContent = "E";
  node.append(north, east);
  return node;
}
