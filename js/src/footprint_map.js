// FootprintMap front end: draws the footprints, colours and overlap lines that Python computed,
// and reports what the user did (selection, hover, colour choice, overlap toggle) through the
// model.  `render` wires four parts, each in its own module:
//
//   map/data.js             the traitlets decoded (binary buffers), tooltips and line titles
//   map/layout.js           the fixed parts: toolbar, drawing area, compass, scale bar, legend
//   map/svg_renderer.js     drawing with one SVG element per footprint (up to SVG_LIMIT)
//   map/canvas_renderer.js  drawing on a canvas (many thousands), same methods; hit_index.js
//   map/viewport.js         projection and layout on screen: the view, zoom, pan, scale bar
//   map/interaction.js      mouse, keyboard, tooltip, toolbar -> traitlets
//   map/legend.js           colour bar, category legend, flag legend
//   map/geometry.js         the pure helpers (unit-tested alone)
//
// Coordinates: the traitlets are in arcsec in the display frame (x right = west, y up = north).

import { el, onModel, uniqueId } from "./_dom.js";
import { createCanvasRenderer } from "./map/canvas_renderer.js";
import { createMapData } from "./map/data.js";
import { attachInteraction } from "./map/interaction.js";
import { buildLayout } from "./map/layout.js";
import { ARROW_LEGEND, ARROW_ZOOM_NOTE, colorbarNode, FLAGGED_PAIR_LEGEND, flagRows, legendRow } from "./map/legend.js";
import { createSvgRenderer } from "./map/svg_renderer.js";
import { createViewport } from "./map/viewport.js";

/**
 * `renderer="auto"` draws SVG up to this many footprints, a canvas above.  A re-solve recolours
 * every footprint: with SVG the browser restyles one element per footprint (~15-30 ms of a
 * 1,000-image re-solve in JupyterLab, bench/bench_app_lab.py), a canvas redraws in a few.
 */
export const SVG_LIMIT = 500;

/**
 * Which renderer draws `count` footprints for the traitlet `renderer`.
 * @param {string} choice  "auto", "svg" or "canvas"
 * @param {number} count
 * @returns {"svg"|"canvas"}
 */
export function rendererFor(choice, count) {
  if (choice === "svg" || choice === "canvas") return choice;
  return count > SVG_LIMIT ? "canvas" : "svg";
}

/**
 * @param {{model: *, el: HTMLElement}} view  anywidget's model and the output element
 * @returns {() => void}  cleanup
 */
function render({ model, el: host }) {
  const ui = buildLayout();
  host.append(ui.root);
  const data = createMapData(model);
  const refit = () => viewport.fit(data.polygons());
  let kind = "", renderer = null, viewport = null, interaction = null, observer = null;

  /** Make the renderer the traitlet `renderer` and the number of footprints call for. */
  function mount() {
    const wanted = rendererFor(model.get("renderer"), data.count());
    if (wanted === kind) return false;
    interaction?.cleanup();
    observer?.disconnect();
    renderer?.destroy();
    renderer?.element.remove();
    kind = wanted;
    renderer = (kind === "canvas" ? createCanvasRenderer : createSvgRenderer)(uniqueId("smnb-map"));
    ui.canvas.prepend(renderer.element);
    viewport = createViewport(renderer, ui);
    interaction = attachInteraction({ model, data, renderer, viewport, ui, refit });
    if (typeof ResizeObserver !== "undefined") {
      observer = new ResizeObserver(() => viewport.resized(data.polygons()));
      observer.observe(renderer.element);
    }
    return true;
  }

  // ---- what Python's traitlets say, drawn ----------------------------------------------------
  function drawAll() {
    drawProjection();
    drawShapes();
    drawPairs();
    drawColorbar();
  }

  function drawShapes() {
    if (mount()) return drawAll();
    renderer.setShapes(data.polygons());
    interaction.shapesChanged(data.count());
    drawFill();
    drawImages();
    drawSelection();
    drawHover();
    refit();
  }

  function drawFill() {
    renderer.setFill(data.fill());
  }

  function drawImages() {
    drawLabels();
    drawFlags();
  }

  function drawLabels() {
    if (kind === "svg") renderer.setLabels(data.names().map((_, i) => data.tooltip(i).replace(/\n/g, "; ")));
    describe();
    interaction.refreshTooltip();
  }

  function drawFlags() {
    const flags = data.flags();
    const arrows = data.arrows();
    renderer.setFlags(flags);
    renderer.setArrows(arrows);
    const arrowText = ARROW_LEGEND + (kind === "canvas" ? ARROW_ZOOM_NOTE : "");
    const arrowRow = arrows.some(Boolean) ? [legendRow(el("span", "smnb-map-swatch smnb-map-swatch-arrow", "➝"), arrowText)] : [];
    ui.flagLegend.replaceChildren(...flagRows(flags), ...arrowRow);
  }

  function drawSelection() {
    const chosen = new Set(model.get("selected") ?? []);
    const nm = data.names();
    renderer.setSelection(new Set(nm.flatMap((n, i) => (chosen.has(n) ? [i] : []))));
    ui.status.textContent = `${nm.length} images · ${chosen.size} selected`;
    describe();
  }

  function drawHover() {
    renderer.setHover(data.names().indexOf(model.get("hovered")));
  }

  function drawPairs() {
    const lines = data.pairs();
    // SVG lines carry their title as an accessible label; a canvas has no elements to label
    renderer.setPairs(kind === "svg" ? lines.map((line, j) => ({ ...line, title: data.pairTitle(j) })) : lines);
    drawOverlapsToggle();
    interaction.refreshTooltip();
  }

  function drawOverlapsToggle() {
    const on = Boolean(model.get("show_overlaps"));
    renderer.showPairs(on);
    ui.overlaps.checked = on;
    const scale = model.get("pairs_colorbar") ?? {};
    const pairs = data.pairs();
    const show = on && pairs.length > 0 && scale.kind;
    const flagged = show && pairs.some((pair) => pair.valid && pair.flagged);
    ui.pairsLegend.replaceChildren(...(show ? [colorbarNode(scale)] : []), ...(flagged
      ? [legendRow(el("span", "smnb-map-swatch smnb-map-swatch-flagged"), FLAGGED_PAIR_LEGEND)] : []));
    ui.pairsLegend.style.display = show ? "" : "none";
  }

  function drawColorbar() {
    ui.colorbar.replaceChildren(colorbarNode(model.get("colorbar") ?? {}));
    ui.colorBy.value = model.get("color_by");
    describe();
  }

  function drawOptions() {
    ui.colorBy.replaceChildren(...(model.get("color_by_options") ?? []).map((o) => {
      const option = document.createElement("option");
      option.value = option.textContent = o;
      return option;
    }));
    ui.colorBy.value = model.get("color_by");
  }

  function drawProjection() {
    const projection = model.get("projection") ?? {};
    const allSky = projection.kind === "allsky";
    viewport.setScaleShown(!allSky); // an all-sky map's scale varies across it
    ui.note.hidden = !allSky;
    ui.note.textContent = allSky ? projection.label ?? "all-sky map" : "";
  }

  function describe() {
    const label = (model.get("colorbar") ?? {}).label || model.get("color_by");
    renderer.element.setAttribute("aria-label",
      `Sky footprints of ${data.names().length} images, RA increasing to the left and north up, ` +
      `coloured by ${label}; ${(model.get("selected") ?? []).length} selected. ` +
      (data.arrows().some(Boolean) ? "Arrows point where each image's fitted sky rises. " : "") +
      "Arrow keys move between images, Enter selects, Escape clears.");
  }

  /** A handler that first forgets what was decoded from the traitlets `keys`. */
  const after = (keys, draw) => () => { data.changed(keys); draw(); };
  const stopModel = onModel(model, {
    "change:shapes": after(["shapes"], drawShapes), "change:names": after(["names"], drawShapes),
    "change:renderer": drawShapes, "change:fill_rgb": after(["fill_rgb"], drawFill),
    "change:images": after(["images"], drawImages), "change:selected": drawSelection,
    "change:hovered": drawHover, "change:pair_shapes": after(["pair_shapes"], drawPairs),
    "change:pair_values": after(["pair_values"], drawPairs), "change:show_overlaps": drawOverlapsToggle,
    "change:pairs_colorbar": drawOverlapsToggle, "change:colorbar": drawColorbar,
    "change:color_by": drawColorbar, "change:color_by_options": drawOptions,
    "change:projection": drawProjection,
    "msg:custom": (msg) => { if (msg?.type === "reset_view") refit(); },
  });

  drawOptions();
  mount();
  drawAll();

  return () => {
    stopModel();
    interaction.cleanup();
    observer?.disconnect();
    renderer.destroy();
  };
}

export default { render };
