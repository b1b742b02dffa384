// FootprintMap front end: draws the footprints, colours and overlap lines that Python computed,
// and reports what the user did (selection, hover, colour choice, overlap toggle) through the
// model.  `render` wires four parts, each in its own module:
//
//   map/layout.js        the fixed parts: toolbar, drawing area, compass, scale bar, legend column
//   map/svg_renderer.js  drawing: footprints, overlays, overlap lines (the renderer seam)
//   map/viewport.js      projection and layout on screen: the view, zoom, pan, scale bar
//   map/interaction.js   mouse, keyboard, tooltip, toolbar -> traitlets
//   map/legend.js        colour bar, category legend, flag legend
//   map/geometry.js      the pure helpers (unit-tested alone)
//
// Coordinates: the traitlets are in arcsec in the display frame (x right = west, y up = north).

import { onModel, uniqueId } from "./_dom.js";
import { attachInteraction } from "./map/interaction.js";
import { buildLayout } from "./map/layout.js";
import { colorbarNode, flagRows } from "./map/legend.js";
import { createSvgRenderer } from "./map/svg_renderer.js";
import { createViewport } from "./map/viewport.js";

/**
 * @param {{model: *, el: HTMLElement}} view  anywidget's model and the output element
 * @returns {() => void}  cleanup
 */
function render({ model, el }) {
  const ui = buildLayout();
  const renderer = createSvgRenderer(uniqueId("smnb-map"));
  ui.canvas.prepend(renderer.element);
  el.append(ui.root);
  const viewport = createViewport(renderer, ui);
  const polygons = () => model.get("polygons") ?? [];
  const names = () => model.get("names") ?? [];
  const refit = () => viewport.fit(polygons());
  const interaction = attachInteraction({ model, renderer, viewport, ui, refit });

  // ---- what Python's traitlets say, drawn ----------------------------------------------------
  function drawShapes() {
    renderer.setShapes(polygons());
    interaction.shapesChanged(polygons().length);
    drawFill();
    drawLabels();
    drawFlags();
    drawSelection();
    drawHover();
    refit();
  }

  function drawFill() {
    renderer.setFill(model.get("fill") ?? []);
  }

  function drawLabels() {
    const tips = model.get("tooltips") ?? [];
    renderer.setLabels(names().map((name, i) => (tips[i] ?? name).replace(/\n/g, "; ")));
    describe();
    interaction.refreshTooltip();
  }

  function drawFlags() {
    const flags = model.get("flags") ?? [];
    renderer.setFlags(flags);
    ui.flagLegend.replaceChildren(...flagRows(flags));
  }

  function drawSelection() {
    const chosen = new Set(model.get("selected") ?? []);
    const nm = names();
    renderer.setSelection(new Set(nm.flatMap((n, i) => (chosen.has(n) ? [i] : []))));
    ui.status.textContent = `${nm.length} images · ${chosen.size} selected`;
    describe();
  }

  function drawHover() {
    renderer.setHover(names().indexOf(model.get("hovered")));
  }

  function drawPairs() {
    renderer.setPairs(model.get("pairs") ?? []);
    drawOverlapsToggle();
    interaction.refreshTooltip();
  }

  function drawOverlapsToggle() {
    const on = Boolean(model.get("show_overlaps"));
    renderer.showPairs(on);
    ui.overlaps.checked = on;
    const scale = model.get("pairs_colorbar") ?? {};
    const show = on && (model.get("pairs") ?? []).length > 0 && scale.kind;
    ui.pairsLegend.replaceChildren(...(show ? [colorbarNode(scale)] : []));
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
      `Sky footprints of ${names().length} images, RA increasing to the left and north up, ` +
      `coloured by ${label}; ${(model.get("selected") ?? []).length} selected. ` +
      "Arrow keys move between images, Enter selects, Escape clears.");
  }

  const stopModel = onModel(model, {
    "change:polygons": drawShapes, "change:names": drawShapes, "change:fill": drawFill,
    "change:tooltips": drawLabels, "change:flags": drawFlags, "change:selected": drawSelection,
    "change:hovered": drawHover, "change:pairs": drawPairs, "change:show_overlaps": drawOverlapsToggle,
    "change:pairs_colorbar": drawOverlapsToggle, "change:colorbar": drawColorbar,
    "change:color_by": drawColorbar, "change:color_by_options": drawOptions,
    "change:projection": drawProjection,
    "msg:custom": (msg) => { if (msg?.type === "reset_view") refit(); },
  });

  let observer = null;
  if (typeof ResizeObserver !== "undefined") {
    observer = new ResizeObserver(() => viewport.resized(polygons()));
    observer.observe(renderer.element);
  }

  drawOptions();
  drawProjection();
  drawShapes();
  drawPairs();
  drawColorbar();

  return () => {
    stopModel();
    interaction.cleanup();
    observer?.disconnect();
  };
}

export default { render };
