// What the user does in the footprint map, turned into traitlet changes: click and shift-click
// selection, box selection, pan and zoom, hover and its tooltip, the keyboard, the toolbar.

import { listen, setTrait } from "../_dom.js";
import { centersInBox, clientToSvg, nearestInDirection } from "./geometry.js";

const DRAG_SLOP = 4; // pixels a press may move and still count as a click
const WHEEL_RATE = 0.0015;
const KEY_ZOOM = 1.25;
const DIRECTIONS = { ArrowRight: [1, 0], ArrowLeft: [-1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };

/**
 * @typedef {Object} Interaction
 * @property {() => void} cleanup  stop listening
 * @property {() => void} refreshTooltip  a tooltip on screen re-reads its text (after a re-solve)
 * @property {() => number} focusIndex  the image with the keyboard focus ring, -1: none
 * @property {(count: number) => void} shapesChanged  new footprints: keep the focus in range
 */

/**
 * @param {Object} parts
 * @param {*} parts.model  the anywidget model
 * @param {import("./data.js").MapData} parts.data  the model's state, decoded
 * @param {import("./svg_renderer.js").Renderer} parts.renderer
 * @param {import("./viewport.js").Viewport} parts.viewport
 * @param {import("./layout.js").Layout} parts.ui
 * @param {() => void} parts.refit  show every footprint ("Reset view")
 * @returns {Interaction}
 */
export function attachInteraction({ model, data, renderer, viewport, ui, refit }) {
  const surface = renderer.element;
  let focusIndex = -1;
  let boxMode = false;
  let press = null; // the mouse press under way: {mode: "pan"|"box", x, y, view, start, moved, additive}
  let suppressClick = false;
  let pointerFocus = false; // the map is being focused by a mouse press, not by Tab
  let tipSource = null; // what the tooltip on screen describes: {image: i} or {pair: j}
  let hoverKey = null; // what the pointer is over ("i3", "p7"), to act only on a change

  const names = () => data.names();
  const selected = () => model.get("selected") ?? [];
  const count = () => data.count();

  function setHovered(name) {
    if (model.get("hovered") !== name) setTrait(model, "hovered", name);
  }

  function toggle(name) {
    const sel = selected();
    setTrait(model, "selected", sel.includes(name) ? sel.filter((n) => n !== name) : [...sel, name]);
  }

  // ---- mouse ---------------------------------------------------------------------------------
  function onClick(event) {
    if (suppressClick) { suppressClick = false; return; }
    const hit = renderer.hit(event);
    if (!hit || !("image" in hit)) return;
    focusIndex = hit.image;
    renderer.setFocus(focusIndex);
    const name = names()[hit.image];
    const sel = selected();
    if (event.shiftKey || event.ctrlKey || event.metaKey) toggle(name);
    else setTrait(model, "selected", sel.length === 1 && sel[0] === name ? [] : [name]);
  }

  function onMouseDown(event) {
    if (event.button !== 0) return;
    press = {
      mode: event.shiftKey || boxMode ? "box" : "pan", x: event.clientX, y: event.clientY,
      view: { ...viewport.get() }, moved: false, additive: event.shiftKey,
      start: clientToSvg(event.clientX, event.clientY, viewport.rect(), viewport.get()),
    };
    window.addEventListener("mousemove", onMouseMove);
    window.addEventListener("mouseup", onMouseUp);
    event.preventDefault(); // no text selection while dragging; this also skips focusing, so:
    pointerFocus = true;
    surface.focus({ preventScroll: true });
    pointerFocus = false;
  }

  function onMouseMove(event) {
    if (!press) return;
    const dx = event.clientX - press.x, dy = event.clientY - press.y;
    if (!press.moved && Math.hypot(dx, dy) < DRAG_SLOP) return;
    press.moved = true;
    hideTooltip();
    if (press.mode === "pan") viewport.pan(press.view, dx, dy);
    else renderer.showBox(press.start, clientToSvg(event.clientX, event.clientY, viewport.rect(), viewport.get()));
  }

  function onMouseUp(event) {
    window.removeEventListener("mousemove", onMouseMove);
    window.removeEventListener("mouseup", onMouseUp);
    const done = press;
    press = null;
    renderer.hideBox();
    if (!done?.moved) return;
    suppressClick = true;
    setTimeout(() => { suppressClick = false; }, 0); // in case no click follows the drag
    if (done.mode === "box") {
      const end = clientToSvg(event.clientX, event.clientY, viewport.rect(), viewport.get());
      const nm = names();
      const inside = centersInBox(data.centers(), done.start, end).map((i) => nm[i]);
      const base = done.additive ? selected() : [];
      setTrait(model, "selected", [...new Set([...base, ...inside])]);
    }
  }

  function onWheel(event) {
    event.preventDefault();
    viewport.zoomAt(Math.exp(event.deltaY * WHEEL_RATE),
      clientToSvg(event.clientX, event.clientY, viewport.rect(), viewport.get()));
  }

  // Hover: SVG reports entering each shape (mouseover); a canvas has one element, so the
  // pointer's moves are hit-tested too.  Either way only a change of what is under it acts.
  function hoverAt(event) {
    if (press?.moved) return;
    const hit = renderer.hit(event);
    const key = hit ? ("image" in hit ? `i${hit.image}` : `p${hit.pair}`) : null;
    if (key === hoverKey) {
      moveTooltip(event);
      return;
    }
    hoverKey = key;
    setHovered(hit && "image" in hit ? names()[hit.image] : "");
    if (hit) showTooltip(hit, event);
    else hideTooltip();
  }

  function onMouseOut(event) {
    if (renderer.hit(event)?.image !== undefined) setHovered("");
    hoverKey = null;
    hideTooltip();
  }

  // ---- tooltip -------------------------------------------------------------------------------
  // The text is looked up from the model each time, so that a tooltip on screen follows a
  // re-solve (new tooltips or pairs) without the mouse moving.
  function tooltipText(source) {
    return "image" in source ? data.tooltip(source.image) : data.pairTitle(source.pair);
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
    if (i < 0 || i >= count()) return;
    focusIndex = i;
    renderer.setFocus(i);
    hideTooltip(); // the mouse's tooltip would describe another image
    const name = names()[i];
    setHovered(name);
    const text = data.tooltip(i).replace(/\n/g, "; ");
    ui.live.textContent = `${text}; ${selected().includes(name) ? "selected" : "not selected"}`;
  }

  function onFocus() {
    if (pointerFocus) return; // the click itself says which image
    if (focusIndex < 0 && count()) {
      const first = names().indexOf(selected()[0]);
      moveFocus(first >= 0 ? first : 0);
    }
  }

  function onKeyDown(event) {
    const n = count();
    if (event.key === "Escape" && event.target.tagName !== "SELECT") {
      if (selected().length) setTrait(model, "selected", []);
      if (press) { press = null; renderer.hideBox(); }
      event.preventDefault();
      return;
    }
    if (event.target !== surface || n === 0) return;
    let handled = true;
    if (event.key in DIRECTIONS) {
      if (focusIndex < 0) moveFocus(0);
      else moveFocus(nearestInDirection(data.centers(), focusIndex, DIRECTIONS[event.key]));
    } else if (event.key === "n") moveFocus((focusIndex + 1) % n);
    else if (event.key === "p") moveFocus((focusIndex - 1 + n) % n);
    else if ((event.key === "Enter" || event.key === " ") && focusIndex >= 0) {
      toggle(names()[focusIndex]);
      moveFocus(focusIndex);
    } else if (event.key === "+" || event.key === "=") viewport.zoomAt(1 / KEY_ZOOM, viewport.centre());
    else if (event.key === "-") viewport.zoomAt(KEY_ZOOM, viewport.centre());
    else if (event.key === "0") refit();
    else handled = false;
    if (handled) event.preventDefault();
  }

  // ---- toolbar -------------------------------------------------------------------------------
  function onBoxButton() {
    boxMode = !boxMode;
    ui.boxButton.setAttribute("aria-pressed", String(boxMode));
    surface.classList.toggle("smnb-map-boxmode", boxMode);
  }

  const stop = listen([
    [surface, "click", onClick], [surface, "mousedown", onMouseDown],
    [surface, "wheel", onWheel, { passive: false }],
    [surface, "mouseover", hoverAt], [surface, "mouseout", onMouseOut],
    [surface, "mousemove", hoverAt], [surface, "focus", onFocus], [ui.root, "keydown", onKeyDown],
    [surface, "blur", () => setHovered("")],
    [ui.reset, "click", refit],
    [ui.boxButton, "click", onBoxButton],
    [ui.overlaps, "change", () => setTrait(model, "show_overlaps", ui.overlaps.checked)],
    [ui.colorBy, "change", () => setTrait(model, "color_by", ui.colorBy.value)],
  ]);

  return {
    cleanup() {
      stop();
      window.removeEventListener("mousemove", onMouseMove);
      window.removeEventListener("mouseup", onMouseUp);
    },
    refreshTooltip,
    focusIndex: () => focusIndex,
    shapesChanged(n) {
      focusIndex = Math.min(focusIndex, n - 1);
      renderer.setFocus(focusIndex);
    },
  };
}
