// FootprintMap front end: draws the footprints, colours and overlap lines that Python computed,
// and reports what the user did (selection, hover, colour choice, overlap toggle) through the
// model.  No imports, so node can load it; the named exports are pure helpers for the tests.
//
// Coordinates: the traitlets are in arcsec in the display frame (x right = west, y up = north).
// The SVG user space is the same with y flipped (sy = -y), so the viewBox is in arcsec too.

const SVGNS = "http://www.w3.org/2000/svg";
const NOMINAL = { width: 640, height: 420 }; // pixel size assumed when there is no layout (jsdom)
const DRAG_SLOP = 4; // pixels a press may move and still count as a click
const FIT_MARGIN = 0.06;
const WHEEL_RATE = 0.0015;
const PAIR_INSET = 0.2; // overlap lines leave this fraction of their length free at each end
const KEY_ZOOM = 1.25;
const DIRECTIONS = { ArrowRight: [1, 0], ArrowLeft: [-1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };
const SCALE_STEPS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900,
  1800, 3600, 7200, 18000, 36000, 72000];
const FLAG_LEGEND = {
  invalid: ["smnb-map-swatch-invalid", "no valid sky (hatched)"],
  disconnected: ["smnb-map-swatch-disconnected", "not connected to the largest group of overlaps (dashed)"],
};
const FLAGGED_PAIR_LEGEND = "overlap down-weighted by the robust solve (dotted)";

// -- pure helpers ------------------------------------------------------------------------------

/** Bounding box {x0, x1, y0, y1} of polygons in SVG user space (y flipped). */
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

/** Widen or heighten a view {x, y, w, h} about its centre so that w / h == aspect. */
export function withAspect(view, aspect) {
  const cx = view.x + view.w / 2, cy = view.y + view.h / 2;
  let { w, h } = view;
  if (w / h < aspect) w = h * aspect; else h = w / aspect;
  return { x: cx - w / 2, y: cy - h / 2, w, h };
}

/** The view showing every polygon with a margin, at the given aspect ratio (width / height). */
export function fitView(polygons, aspect) {
  const b = svgBounds(polygons);
  const size = Math.max(b.x1 - b.x0, b.y1 - b.y0, 1e-3);
  const w = Math.max(b.x1 - b.x0, size * 1e-3) + 2 * FIT_MARGIN * size;
  const h = Math.max(b.y1 - b.y0, size * 1e-3) + 2 * FIT_MARGIN * size;
  return withAspect({ x: b.x0 - FIT_MARGIN * size, y: b.y0 - FIT_MARGIN * size, w, h }, aspect);
}

/** Pixels per arcsec and the offset of the viewBox in an element of `rect` (meet, centred). */
export function viewScale(rect, view) {
  const s = Math.min(rect.width / view.w, rect.height / view.h);
  return { s, ox: rect.left + (rect.width - view.w * s) / 2, oy: rect.top + (rect.height - view.h * s) / 2 };
}

/** SVG user coordinates [sx, sy] of a point given in client (page) pixels. */
export function clientToSvg(clientX, clientY, rect, view) {
  const { s, ox, oy } = viewScale(rect, view);
  return [view.x + (clientX - ox) / s, view.y + (clientY - oy) / s];
}

/** The view zoomed by `factor` (> 1 zooms out) keeping the point [sx, sy] fixed. */
export function zoomView(view, factor, [sx, sy]) {
  return {
    x: sx - (sx - view.x) * factor, y: sy - (sy - view.y) * factor, w: view.w * factor, h: view.h * factor,
  };
}

/** A round scale-bar length (arcsec) no longer than `maxArcsec`, and its label. */
export function scaleBar(maxArcsec) {
  let length = SCALE_STEPS[0];
  for (const step of SCALE_STEPS) if (step <= maxArcsec) length = step;
  return { length, label: formatAngle(length) };
}

/** "30″", "2′", "1.5°". */
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

/** Indices of the centres (display frame) inside a box given by two SVG-space corners. */
export function centersInBox(centers, [ax, ay], [bx, by]) {
  const [x0, x1] = [Math.min(ax, bx), Math.max(ax, bx)];
  const [y0, y1] = [Math.min(ay, by), Math.max(ay, by)];
  const out = [];
  centers.forEach(([x, y], i) => { if (x >= x0 && x <= x1 && -y >= y0 && -y <= y1) out.push(i); });
  return out;
}

/** SVG path data of a polygon given in the display frame. */
export function pathData(poly) {
  return "M" + poly.map(([x, y]) => `${x},${-y}`).join("L") + "Z";
}

/**
 * The drawn part (SVG space) of the line between two input centres (display frame): it stops
 * short of both centres, so that a click at an image's centre reaches the image, not a line.
 */
export function pairSegment([ax, ay], [bx, by]) {
  const t = PAIR_INSET;
  return [[ax + t * (bx - ax), -(ay + t * (by - ay))], [bx - t * (bx - ax), -(by - t * (by - ay))]];
}

/** A short number for colour-bar ticks. */
export function formatNumber(v) {
  if (!Number.isFinite(v)) return "n/a";
  return String(Number(v.toPrecision(4)));
}

// -- DOM helpers -------------------------------------------------------------------------------
function svgEl(tag, attrs = {}, cls = "") {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (cls) e.setAttribute("class", cls);
  return e;
}

function htmlEl(tag, cls = "", text = "") {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text) e.textContent = text;
  return e;
}

// -- the widget --------------------------------------------------------------------------------
function render({ model, el }) {
  const uid = `smnb-map-${Math.random().toString(36).slice(2, 10)}`; // unique ids per view
  const ui = buildDom(uid);
  el.append(ui.root);

  let shapes = []; // one <path> per image
  let view = { x: -1, y: -1, w: 2, h: 2 };
  let userMoved = false; // once the user pans or zooms, a resize keeps their view
  let focusIndex = -1;
  let boxMode = false;
  let press = null; // the current mouse press: {mode: "pan"|"box", x, y, view, start, moved}
  let suppressClick = false;
  let pointerFocus = false; // the map is being focused by a mouse press, not by Tab
  let tipSource = null; // what the tooltip on screen describes: {image: i} or {pair: j}

  const names = () => model.get("names") ?? [];
  const indexOf = () => new Map(names().map((n, i) => [n, i]));

  function rect() {
    const r = ui.svg.getBoundingClientRect();
    return r.width > 0 && r.height > 0 ? r : { left: 0, top: 0, ...NOMINAL };
  }

  function setSelected(list) {
    model.set("selected", list);
    model.save_changes();
  }

  function setHovered(name) {
    if (model.get("hovered") === name) return;
    model.set("hovered", name);
    model.save_changes();
  }

  // ---- drawing -------------------------------------------------------------------------------
  function buildShapes() {
    const polygons = model.get("polygons") ?? [];
    shapes = polygons.map((poly, i) => svgEl("path", { d: pathData(poly), "data-index": i }, "smnb-map-shape"));
    ui.shapes.replaceChildren(...shapes);
    focusIndex = Math.min(focusIndex, shapes.length - 1);
    drawFill();
    drawLabels();
    drawFlags();
    drawSelection();
    drawHover();
    drawFocus();
    resetView();
  }

  function drawFill() {
    const fill = model.get("fill") ?? [];
    shapes.forEach((p, i) => p.setAttribute("fill", fill[i] ?? "none"));
  }

  function drawLabels() {
    const tips = model.get("tooltips") ?? [];
    const nm = names();
    shapes.forEach((p, i) => p.setAttribute("aria-label", (tips[i] ?? nm[i] ?? "").replace(/\n/g, "; ")));
    describe();
    refreshTooltip();
  }

  function drawFlags() {
    const flags = model.get("flags") ?? [];
    const hatched = [];
    const present = new Set();
    shapes.forEach((p, i) => {
      const f = flags[i] ?? [];
      for (const flag of Object.keys(FLAG_LEGEND)) p.classList.toggle(`smnb-map-${flag}`, f.includes(flag));
      f.forEach((flag) => present.add(flag));
      if (f.includes("invalid")) hatched.push(p.getAttribute("d"));
    });
    ui.hatch.setAttribute("d", hatched.join(""));
    ui.flagLegend.replaceChildren(...[...present].filter((f) => f in FLAG_LEGEND).map((f) => {
      const [cls, text] = FLAG_LEGEND[f];
      return legendRow(htmlEl("span", `smnb-map-swatch ${cls}`), text);
    }));
  }

  function drawSelection() {
    const sel = new Set(model.get("selected") ?? []);
    const nm = names();
    const rings = [];
    shapes.forEach((p, i) => {
      const on = sel.has(nm[i]);
      p.classList.toggle("smnb-map-selected", on);
      if (on) rings.push(p.getAttribute("d"));
    });
    ui.selection.setAttribute("d", rings.join(""));
    ui.selectionHalo.setAttribute("d", rings.join(""));
    ui.status.textContent = `${nm.length} images · ${sel.size} selected`;
    describe();
  }

  function drawHover() {
    const p = shapes[indexOf().get(model.get("hovered"))];
    ui.hover.setAttribute("d", p ? p.getAttribute("d") : "");
  }

  function drawFocus() {
    const p = shapes[focusIndex];
    ui.focus.setAttribute("d", p ? p.getAttribute("d") : "");
  }

  function drawPairs() {
    const pairs = model.get("pairs") ?? [];
    const ends = pairs.map((pair) => pairSegment(pair.a, pair.b));
    const lines = pairs.map((pair, j) => {
      const [[x1, y1], [x2, y2]] = ends[j];
      const kind = !pair.valid ? " smnb-map-pair-unused" : pair.flagged ? " smnb-map-pair-flagged" : "";
      const line = svgEl("line", { x1, y1, x2, y2, stroke: pair.color, "data-pair": j }, `smnb-map-pair${kind}`);
      line.setAttribute("aria-label", pair.title.replace(/\n/g, "; "));
      return line;
    });
    ui.casing.setAttribute("d", ends.map(([[x1, y1], [x2, y2]]) => `M${x1},${y1}L${x2},${y2}`).join(""));
    ui.pairs.replaceChildren(...lines);
    drawOverlapsToggle();
    refreshTooltip();
  }

  function drawOverlapsToggle() {
    const on = Boolean(model.get("show_overlaps"));
    ui.overlayPairs.style.display = on ? "" : "none";
    ui.overlaps.checked = on;
    const scale = model.get("pairs_colorbar") ?? {};
    const pairs = model.get("pairs") ?? [];
    const show = on && pairs.length > 0 && scale.kind;
    const flagged = pairs.some((pair) => pair.valid && pair.flagged);
    const swatch = () => htmlEl("span", "smnb-map-swatch smnb-map-swatch-flagged");
    ui.pairsLegend.replaceChildren(...(show ? [colorbarNode(scale)] : []),
      ...(show && flagged ? [legendRow(swatch(), FLAGGED_PAIR_LEGEND)] : []));
    ui.pairsLegend.style.display = show ? "" : "none";
  }

  function drawColorbar() {
    ui.colorbar.replaceChildren(colorbarNode(model.get("colorbar") ?? {}));
    ui.colorBy.value = model.get("color_by");
    describe();
  }

  function drawOptions() {
    ui.colorBy.replaceChildren(...(model.get("color_by_options") ?? []).map((o) => {
      const opt = htmlEl("option", "", o);
      opt.value = o;
      return opt;
    }));
    ui.colorBy.value = model.get("color_by");
  }

  function describe() {
    const label = (model.get("colorbar") ?? {}).label ?? model.get("color_by");
    ui.svg.setAttribute("aria-label",
      `Sky footprints of ${names().length} images, RA increasing to the left and north up, ` +
      `coloured by ${label}; ${(model.get("selected") ?? []).length} selected. ` +
      "Arrow keys move between images, Enter selects, Escape clears.");
  }

  // ---- view ----------------------------------------------------------------------------------
  function applyView() {
    ui.svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`);
    const r = rect();
    const { s } = viewScale(r, view);
    const bar = scaleBar((r.width * 0.25) / s);
    ui.scaleBar.style.width = `${bar.length * s}px`;
    ui.scaleLabel.textContent = bar.label;
    const hatch = view.w / 90;
    ui.pattern.setAttribute("width", hatch);
    ui.pattern.setAttribute("height", hatch);
    ui.patternLine.setAttribute("y2", hatch);
    ui.patternLine.setAttribute("stroke-width", hatch / 3);
  }

  function resetView() {
    const r = rect();
    view = fitView(model.get("polygons") ?? [], r.width / r.height);
    userMoved = false;
    applyView();
  }

  function zoomAt(factor, point) {
    view = zoomView(view, factor, point);
    userMoved = true;
    applyView();
  }

  function viewCentre() {
    return [view.x + view.w / 2, view.y + view.h / 2];
  }

  // ---- mouse ---------------------------------------------------------------------------------
  function shapeIndex(target) {
    const i = target?.getAttribute?.("data-index");
    return i === null || i === undefined ? -1 : Number(i);
  }

  function onClick(event) {
    if (suppressClick) { suppressClick = false; return; }
    const i = shapeIndex(event.target);
    if (i < 0) return;
    focusIndex = i;
    drawFocus();
    const name = names()[i];
    const sel = model.get("selected") ?? [];
    if (event.shiftKey || event.ctrlKey || event.metaKey) toggle(name);
    else setSelected(sel.length === 1 && sel[0] === name ? [] : [name]);
  }

  function toggle(name) {
    const sel = model.get("selected") ?? [];
    setSelected(sel.includes(name) ? sel.filter((n) => n !== name) : [...sel, name]);
  }

  function onMouseDown(event) {
    if (event.button !== 0) return;
    const mode = event.shiftKey || boxMode ? "box" : "pan";
    press = { mode, x: event.clientX, y: event.clientY, view: { ...view }, moved: false,
      start: clientToSvg(event.clientX, event.clientY, rect(), view), additive: event.shiftKey };
    window.addEventListener("mousemove", onMouseMove);
    window.addEventListener("mouseup", onMouseUp);
    event.preventDefault(); // no text selection while dragging; this also skips focusing, so:
    pointerFocus = true;
    ui.svg.focus({ preventScroll: true });
    pointerFocus = false;
  }

  function onMouseMove(event) {
    if (!press) return;
    const dx = event.clientX - press.x, dy = event.clientY - press.y;
    if (!press.moved && Math.hypot(dx, dy) < DRAG_SLOP) return;
    press.moved = true;
    hideTooltip();
    if (press.mode === "pan") {
      const { s } = viewScale(rect(), press.view);
      view = { ...press.view, x: press.view.x - dx / s, y: press.view.y - dy / s };
      userMoved = true;
      applyView();
    } else {
      const [bx, by] = clientToSvg(event.clientX, event.clientY, rect(), view);
      const [ax, ay] = press.start;
      Object.entries({ x: Math.min(ax, bx), y: Math.min(ay, by), width: Math.abs(bx - ax), height: Math.abs(by - ay) })
        .forEach(([k, v]) => ui.box.setAttribute(k, v));
      ui.box.style.display = "";
    }
  }

  function onMouseUp(event) {
    window.removeEventListener("mousemove", onMouseMove);
    window.removeEventListener("mouseup", onMouseUp);
    const done = press;
    press = null;
    ui.box.style.display = "none";
    if (!done?.moved) return;
    suppressClick = true;
    setTimeout(() => { suppressClick = false; }, 0); // in case no click follows the drag
    if (done.mode === "box") {
      const end = clientToSvg(event.clientX, event.clientY, rect(), view);
      const nm = names();
      const inside = centersInBox(model.get("centers") ?? [], done.start, end).map((i) => nm[i]);
      const base = done.additive ? model.get("selected") ?? [] : [];
      setSelected([...new Set([...base, ...inside])]);
    }
  }

  function onWheel(event) {
    event.preventDefault();
    const point = clientToSvg(event.clientX, event.clientY, rect(), view);
    zoomAt(Math.exp(event.deltaY * WHEEL_RATE), point);
  }

  function onMouseOver(event) {
    const i = shapeIndex(event.target);
    const pair = event.target?.getAttribute?.("data-pair");
    if (i >= 0) {
      setHovered(names()[i]);
      showTooltip({ image: i }, event);
    } else if (pair !== null && pair !== undefined) {
      showTooltip({ pair: Number(pair) }, event);
    }
  }

  function onMouseOut(event) {
    if (shapeIndex(event.target) >= 0) setHovered("");
    hideTooltip();
  }

  // The text of a tooltip is looked up from the model each time, so that one on screen
  // follows a re-solve (new tooltips or pairs) without the mouse moving.
  function tooltipText(source) {
    if ("image" in source) return (model.get("tooltips") ?? [])[source.image] ?? names()[source.image] ?? "";
    return (model.get("pairs") ?? [])[source.pair]?.title ?? "";
  }

  function showTooltip(source, event) {
    tipSource = source;
    ui.tooltip.textContent = tooltipText(source);
    ui.tooltip.style.display = "block";
    moveTooltip(event);
  }

  function refreshTooltip() {
    if (!tipSource || ui.tooltip.style.display === "none") return;
    const text = tooltipText(tipSource);
    if (text) ui.tooltip.textContent = text;
    else hideTooltip(); // what it described is gone
  }

  function moveTooltip(event) {
    if (ui.tooltip.style.display === "none") return;
    const r = ui.canvas.getBoundingClientRect();
    const x = event.clientX - r.left + 14, y = event.clientY - r.top + 14;
    const flip = r.width > 0 && x > r.width * 0.6; // keep it inside the map on the right side
    ui.tooltip.style.left = flip ? "" : `${x}px`;
    ui.tooltip.style.right = flip ? `${r.width - x + 28}px` : "";
    ui.tooltip.style.top = `${y}px`;
  }

  function hideTooltip() {
    ui.tooltip.style.display = "none";
    tipSource = null;
  }

  // ---- keyboard ------------------------------------------------------------------------------
  function moveFocus(i) {
    if (i < 0 || i >= shapes.length) return;
    focusIndex = i;
    drawFocus();
    hideTooltip(); // the mouse's tooltip would describe another image
    const name = names()[i];
    setHovered(name);
    const sel = (model.get("selected") ?? []).includes(name);
    ui.live.textContent = `${((model.get("tooltips") ?? [])[i] ?? name).replace(/\n/g, "; ")}; ${sel ? "selected" : "not selected"}`;
  }

  function onFocus() {
    if (pointerFocus) return; // the click itself says which image
    if (focusIndex < 0 && shapes.length) {
      const first = indexOf().get((model.get("selected") ?? [])[0]);
      moveFocus(first ?? 0);
    }
  }

  function onKeyDown(event) {
    const n = shapes.length;
    if (event.key === "Escape" && event.target.tagName !== "SELECT") {
      if ((model.get("selected") ?? []).length) setSelected([]);
      if (press) { press = null; ui.box.style.display = "none"; }
      event.preventDefault();
      return;
    }
    if (event.target !== ui.svg || n === 0) return;
    let handled = true;
    if (event.key in DIRECTIONS) {
      if (focusIndex < 0) moveFocus(0);
      else moveFocus(nearestInDirection(model.get("centers"), focusIndex, DIRECTIONS[event.key]));
    } else if (event.key === "n") moveFocus((focusIndex + 1) % n);
    else if (event.key === "p") moveFocus((focusIndex - 1 + n) % n);
    else if ((event.key === "Enter" || event.key === " ") && focusIndex >= 0) {
      toggle(names()[focusIndex]);
      moveFocus(focusIndex);
    } else if (event.key === "+" || event.key === "=") zoomAt(1 / KEY_ZOOM, viewCentre());
    else if (event.key === "-") zoomAt(KEY_ZOOM, viewCentre());
    else if (event.key === "0") resetView();
    else handled = false;
    if (handled) event.preventDefault();
  }

  // ---- wiring --------------------------------------------------------------------------------
  const listeners = [
    [ui.svg, "click", onClick], [ui.svg, "mousedown", onMouseDown], [ui.svg, "wheel", onWheel],
    [ui.svg, "mouseover", onMouseOver], [ui.svg, "mouseout", onMouseOut],
    [ui.svg, "mousemove", moveTooltip], [ui.svg, "focus", onFocus], [ui.root, "keydown", onKeyDown],
    [ui.svg, "blur", () => setHovered("")],
    [ui.reset, "click", resetView],
    [ui.boxButton, "click", () => {
      boxMode = !boxMode;
      ui.boxButton.setAttribute("aria-pressed", String(boxMode));
      ui.svg.classList.toggle("smnb-map-boxmode", boxMode);
    }],
    [ui.overlaps, "change", () => { model.set("show_overlaps", ui.overlaps.checked); model.save_changes(); }],
    [ui.colorBy, "change", () => { model.set("color_by", ui.colorBy.value); model.save_changes(); }],
  ];
  for (const [target, type, fn] of listeners) target.addEventListener(type, fn, type === "wheel" ? { passive: false } : undefined);

  const handlers = {
    "change:polygons": buildShapes, "change:names": buildShapes, "change:fill": drawFill,
    "change:tooltips": drawLabels, "change:flags": drawFlags, "change:selected": drawSelection,
    "change:hovered": drawHover, "change:pairs": drawPairs, "change:show_overlaps": drawOverlapsToggle,
    "change:pairs_colorbar": drawOverlapsToggle, "change:colorbar": drawColorbar,
    "change:color_by": drawColorbar, "change:color_by_options": drawOptions,
    "msg:custom": (msg) => { if (msg?.type === "reset_view") resetView(); },
  };
  for (const [event, fn] of Object.entries(handlers)) model.on(event, fn);

  let observer = null;
  if (typeof ResizeObserver !== "undefined") {
    observer = new ResizeObserver(() => {
      const r = rect();
      if (userMoved) view = withAspect(view, r.width / r.height);
      else view = fitView(model.get("polygons") ?? [], r.width / r.height);
      applyView();
    });
    observer.observe(ui.svg);
  }

  drawOptions();
  buildShapes();
  drawPairs();
  drawColorbar();

  return () => {
    for (const [target, type, fn] of listeners) target.removeEventListener(type, fn);
    for (const [event, fn] of Object.entries(handlers)) model.off(event, fn);
    window.removeEventListener("mousemove", onMouseMove);
    window.removeEventListener("mouseup", onMouseUp);
    observer?.disconnect();
  };
}

// -- static parts of the DOM -------------------------------------------------------------------
function buildDom(uid) {
  const root = htmlEl("div", "smnb-map");

  const toolbar = htmlEl("div", "smnb-map-toolbar");
  const colorByLabel = htmlEl("label", "smnb-map-field", "Colour by ");
  const colorBy = htmlEl("select", "smnb-map-colorby");
  colorByLabel.append(colorBy);
  const overlapsLabel = htmlEl("label", "smnb-map-field");
  const overlaps = htmlEl("input", "smnb-map-overlaps");
  overlaps.type = "checkbox";
  overlapsLabel.append(overlaps, document.createTextNode(" Overlaps"));
  const boxButton = htmlEl("button", "smnb-map-button smnb-map-boxbutton", "Box select");
  boxButton.type = "button";
  boxButton.setAttribute("aria-pressed", "false");
  boxButton.title = "Drag to select the images whose centres lie in a box (or shift-drag)";
  const reset = htmlEl("button", "smnb-map-button smnb-map-reset", "Reset view");
  reset.type = "button";
  const status = htmlEl("span", "smnb-map-status");
  toolbar.append(colorByLabel, overlapsLabel, boxButton, reset, status);

  const body = htmlEl("div", "smnb-map-body");
  const canvas = htmlEl("div", "smnb-map-canvas");
  const svg = svgEl("svg", { tabindex: 0, role: "img", preserveAspectRatio: "xMidYMid meet" }, "smnb-map-svg");
  const defs = svgEl("defs");
  const pattern = svgEl("pattern", { id: `${uid}-hatch`, patternUnits: "userSpaceOnUse", width: 1, height: 1,
    patternTransform: "rotate(45)" });
  const patternLine = svgEl("line", { x1: 0, y1: 0, x2: 0, y2: 1 }, "smnb-map-hatch-line");
  pattern.append(patternLine);
  defs.append(pattern);
  const shapes = svgEl("g", {}, "smnb-map-shapes");
  const hatch = svgEl("path", { fill: `url(#${uid}-hatch)`, d: "" }, "smnb-map-hatch");
  const selectionHalo = svgEl("path", { d: "" }, "smnb-map-selection-halo");
  const selection = svgEl("path", { d: "" }, "smnb-map-selection");
  const overlayPairs = svgEl("g", {}, "smnb-map-overlaps-layer");
  const casing = svgEl("path", { d: "" }, "smnb-map-pair-casing");
  const pairs = svgEl("g", {}, "smnb-map-pairs");
  overlayPairs.append(casing, pairs);
  const hover = svgEl("path", { d: "" }, "smnb-map-hover");
  const focus = svgEl("path", { d: "" }, "smnb-map-focusring");
  const box = svgEl("rect", {}, "smnb-map-box");
  box.style.display = "none";
  svg.append(defs, shapes, hatch, selectionHalo, selection, overlayPairs, hover, focus, box);

  const compass = svgEl("svg", { viewBox: "0 0 60 60", width: 60, height: 60, "aria-hidden": "true" }, "smnb-map-compass");
  compass.append(
    svgEl("path", { d: "M44,44 L44,10 M44,44 L10,44 M40,16 L44,8 L48,16 M16,40 L8,44 L16,48" }, "smnb-map-compass-arrows"),
  );
  const north = svgEl("text", { x: 44, y: 7, "text-anchor": "middle" }, "smnb-map-compass-label");
  north.textContent = "N";
  const east = svgEl("text", { x: 6, y: 48, "text-anchor": "middle", "dominant-baseline": "middle" }, "smnb-map-compass-label");
  east.textContent = "E";
  compass.append(north, east);

  const scale = htmlEl("div", "smnb-map-scale");
  const scaleBarEl = htmlEl("div", "smnb-map-scalebar");
  const scaleLabel = htmlEl("div", "smnb-map-scalelabel");
  scale.append(scaleBarEl, scaleLabel);
  const tooltip = htmlEl("div", "smnb-map-tooltip");
  tooltip.style.display = "none";
  tooltip.setAttribute("role", "tooltip");
  const live = htmlEl("div", "smnb-map-live");
  live.setAttribute("aria-live", "polite");
  canvas.append(svg, compass, scale, tooltip, live);

  const legend = htmlEl("div", "smnb-map-legend");
  const colorbar = htmlEl("div", "smnb-map-colorbar");
  const flagLegend = htmlEl("div", "smnb-map-flaglegend");
  const pairsLegend = htmlEl("div", "smnb-map-pairslegend");
  legend.append(colorbar, flagLegend, pairsLegend);
  body.append(canvas, legend);
  root.append(toolbar, body);

  return {
    root, svg, canvas, colorBy, overlaps, boxButton, reset, status, pattern, patternLine, shapes, hatch,
    selectionHalo, selection, overlayPairs, casing, pairs, hover, focus, box, scaleBar: scaleBarEl, scaleLabel, tooltip,
    live, colorbar, flagLegend, pairsLegend,
  };
}

/** A colour bar (ramp: gradient with vmax on top) or a category legend, with its label. */
function colorbarNode(cb) {
  const node = htmlEl("div", "smnb-map-cb");
  node.append(htmlEl("div", "smnb-map-cb-title", cb.label ?? ""));
  if (cb.kind === "ramp") {
    const row = htmlEl("div", "smnb-map-cb-ramp");
    const bar = htmlEl("div", "smnb-map-cb-gradient");
    bar.style.background = `linear-gradient(to top, ${(cb.colors ?? []).join(", ")})`;
    const ticks = htmlEl("div", "smnb-map-cb-ticks");
    const mid = (cb.vmin + cb.vmax) / 2;
    for (const v of cb.vmin === cb.vmax ? [cb.vmax] : [cb.vmax, mid, cb.vmin]) {
      ticks.append(htmlEl("span", "smnb-map-cb-tick", formatNumber(v)));
    }
    row.append(bar, ticks);
    node.append(row);
  } else if (cb.kind === "categories") {
    (cb.labels ?? []).forEach((label, i) => {
      const swatch = htmlEl("span", "smnb-map-swatch");
      swatch.style.background = cb.colors[i];
      node.append(legendRow(swatch, label));
    });
    if (cb.more) node.append(htmlEl("div", "smnb-map-cb-more", `+ ${cb.more} more`));
  }
  return node;
}

function legendRow(swatch, text) {
  const row = htmlEl("div", "smnb-map-legend-row");
  row.append(swatch, htmlEl("span", "smnb-map-legend-text", text));
  return row;
}

export default { render };
