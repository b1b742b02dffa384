// Run with: cd js && node --test tests/
import { test } from "node:test";
import assert from "node:assert/strict";
import { encodeImages, encodePairs, encodeShapes, FakeModel, freshDom, rgb } from "./fake_model.js";
import widget, { rendererFor, SVG_LIMIT } from "../src/footprint_map.js";
import {
  arrowsPath, arrowStrokes, centersInBox, clientToSvg, fitView, formatAngle, nearestInDirection, scaleBar, viewScale, withAspect,
  zoomView,
} from "../src/map/geometry.js";

// Four 10" squares in a 2x2 grid, and a fifth far to the east (left): display frame, y up.
const square = ([cx, cy]) => [[cx - 5, cy - 5], [cx + 5, cy - 5], [cx + 5, cy + 5], [cx - 5, cy + 5]];
const CENTERS = [[0, 0], [20, 0], [0, 20], [20, 20], [-60, 0]];
const FILL = ["#440154", "#21918c", "#fde725", "#3b528b", "#bdbdbd"];
const IMAGES = {
  solved: true, unit: "MJy/sr", sky: [1, 2, 3, 4, NaN], sky_err: [0.1, 0.1, 0.1, 0.1, NaN], component: [0, 0, 0, 0, 1],
  group: ["g", "g", "none (own sky)", "none (own sky)", "none (own sky)"], reason: ["", "", "", "", "no overlap"],
  flags: [[], [], [], [], ["invalid", "disconnected"]],
};
// what Python's FootprintMap.tooltips says for IMAGES
const TOOLTIPS = [
  "a\ngroup: g\nsky: 1 ± 0.1 MJy/sr\ncomponent: 0\nvalid", "b\ngroup: g\nsky: 2 ± 0.1 MJy/sr\ncomponent: 0\nvalid",
  "c\ngroup: none (own sky)\nsky: 3 ± 0.1 MJy/sr\ncomponent: 0\nvalid",
  "d\ngroup: none (own sky)\nsky: 4 ± 0.1 MJy/sr\ncomponent: 0\nvalid",
  "e\ngroup: none (own sky)\nsky: n/a ± n/a MJy/sr\ncomponent: 1\nNOT valid: no overlap",
];
const PAIRS = [
  { a: "a", b: "b", ends: [[0, 0], [20, 0]], color: "#b2182b", valid: true, after: 0.5, before: 1.5 },
  { a: "a", b: "c", ends: [[0, 0], [0, 20]], color: "#2166ac", valid: true, after: -0.5, before: -2 },
];
const TITLES = ["a – b\nresidual after: 0.5 MJy/sr\ndifference before: 1.5 MJy/sr",
  "a – c\nresidual after: -0.5 MJy/sr\ndifference before: -2 MJy/sr"];
const STATE = {
  names: ["a", "b", "c", "d", "e"],
  shapes: encodeShapes(CENTERS.map(square), CENTERS),
  fill_rgb: rgb(FILL),
  images: encodeImages(IMAGES),
  colorbar: { kind: "ramp", colors: ["#440154", "#21918c", "#fde725"], vmin: 1, vmax: 4, label: "sky [MJy/sr]" },
  ...encodePairs(PAIRS, "MJy/sr"),
  renderer: "auto",
  pairs_colorbar: { kind: "ramp", colors: ["#2166ac", "#f7f7f7", "#b2182b"], vmin: -0.5, vmax: 0.5, label: "overlap residual after solve [MJy/sr]" },
  color_by_options: ["sky", "sky_err", "group", "component", "valid"],
  color_by: "sky",
  show_overlaps: false,
  selected: [],
  hovered: "",
};

function mount(overrides = {}) {
  const el = freshDom();
  const model = new FakeModel({ ...STATE, ...overrides });
  const cleanup = widget.render({ model, el });
  const svg = el.querySelector("svg.smnb-map-svg");
  const shapes = () => [...el.querySelectorAll("path.smnb-map-shape")];
  return { el, model, cleanup, svg, shapes };
}

const mouse = (type, opts = {}) => new window.MouseEvent(type, { bubbles: true, cancelable: true, button: 0, ...opts });
const key = (k, opts = {}) => new window.KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true, ...opts });
const viewOf = (svg) => {
  const [x, y, w, h] = svg.getAttribute("viewBox").split(" ").map(Number);
  return { x, y, w, h };
};
// jsdom has no layout: the widget then assumes a 640 x 420 pixel map at the page origin
const RECT = { left: 0, top: 0, width: 640, height: 420 };
function toClient(svg, [x, y]) { // display-frame point -> client pixels
  const view = viewOf(svg);
  const { s, ox, oy } = viewScale(RECT, view);
  return { clientX: ox + (x - view.x) * s, clientY: oy + (-y - view.y) * s };
}

// -- rendering ---------------------------------------------------------------------------------
test("one path per image, with Python's fill colours and an accessible label", () => {
  const { el, svg, shapes } = mount();
  assert.equal(shapes().length, 5);
  assert.deepEqual(shapes().map((p) => p.getAttribute("fill")), FILL);
  assert.equal(shapes()[1].getAttribute("d"), "M15,5L25,5L25,-5L15,-5Z"); // y flipped for SVG
  assert.equal(shapes()[4].getAttribute("aria-label"), TOOLTIPS[4].replace(/\n/g, "; "));
  assert.equal(svg.getAttribute("role"), "img");
  assert.match(svg.getAttribute("aria-label"), /5 images.*sky \[MJy\/sr\]/);
  assert.equal(svg.getAttribute("tabindex"), "0");
  assert.equal(el.querySelectorAll(".smnb-map-compass-label").length, 2);
});

test("flags become classes, invalid images are hatched, and the legend explains both", () => {
  const { el, shapes, model } = mount();
  assert.ok(shapes()[4].classList.contains("smnb-map-invalid"));
  assert.ok(shapes()[4].classList.contains("smnb-map-disconnected"));
  assert.ok(!shapes()[0].classList.contains("smnb-map-invalid"));
  const hatch = el.querySelector("path.smnb-map-hatch");
  assert.equal(hatch.getAttribute("d"), shapes()[4].getAttribute("d"));
  assert.match(hatch.getAttribute("fill"), /^url\(#smnb-map-.*-hatch\)$/);
  assert.match(el.querySelector(".smnb-map-flaglegend").textContent, /hatched.*dashed/s);
  model.set("images", encodeImages({ ...IMAGES, flags: [["invalid"], [], [], [], []] }));
  assert.ok(shapes()[0].classList.contains("smnb-map-invalid"));
  assert.ok(!shapes()[4].classList.contains("smnb-map-disconnected"));
  assert.equal(hatch.getAttribute("d"), shapes()[0].getAttribute("d"));
  assert.doesNotMatch(el.querySelector(".smnb-map-flaglegend").textContent, /dashed/);
});

test("colour bar: a ramp with label and ticks, or a category legend", () => {
  const { el, model } = mount();
  const cb = () => el.querySelector(".smnb-map-colorbar");
  assert.equal(cb().querySelector(".smnb-map-cb-title").textContent, "sky [MJy/sr]");
  assert.deepEqual([...cb().querySelectorAll(".smnb-map-cb-tick")].map((t) => t.textContent), ["4", "2.5", "1"]);
  assert.match(cb().querySelector(".smnb-map-cb-gradient").style.background, /linear-gradient/);
  model.set("colorbar", { kind: "categories", labels: ["g1", "none (own sky)"], colors: ["#E69F00", "#bdbdbd"], more: 3, label: "group" });
  model.set("color_by", "group");
  assert.deepEqual([...cb().querySelectorAll(".smnb-map-legend-text")].map((t) => t.textContent), ["g1", "none (own sky)"]);
  assert.match(cb().textContent, /\+ 3 more/);
  assert.equal(el.querySelector("select.smnb-map-colorby").value, "group");
});

test("change events from Python update fills and the selection in place", () => {
  const { el, model, shapes } = mount();
  const before = shapes();
  model.set("fill_rgb", rgb(["#000001", "#000002", "#000003", "#000004", "#000005"]));
  assert.equal(shapes()[2].getAttribute("fill"), "#000003");
  model.set("selected", ["b", "d"]);
  assert.deepEqual(shapes().map((p) => p.classList.contains("smnb-map-selected")), [false, true, false, true, false]);
  assert.equal(el.querySelector("path.smnb-map-selection").getAttribute("d"), before[1].getAttribute("d") + before[3].getAttribute("d"));
  assert.match(el.querySelector(".smnb-map-status").textContent, /2 selected/);
  assert.deepEqual(shapes(), before); // attributes updated, shapes not rebuilt
  model.set("hovered", "c");
  assert.equal(el.querySelector("path.smnb-map-hover").getAttribute("d"), before[2].getAttribute("d"));
  model.set("shapes", encodeShapes(CENTERS.slice(0, 2).map(square), CENTERS.slice(0, 2)));
  assert.equal(shapes().length, 2);
});

test("show_overlaps shows one coloured line per pair and the residual colour bar", () => {
  const { el, model } = mount();
  const layer = el.querySelector(".smnb-map-overlaps-layer");
  const lines = () => [...el.querySelectorAll("line.smnb-map-pair")];
  assert.equal(layer.style.display, "none");
  assert.equal(el.querySelector(".smnb-map-pairslegend").children.length, 0);
  model.set("show_overlaps", true);
  assert.equal(layer.style.display, "");
  assert.equal(lines().length, 2);
  assert.deepEqual(lines().map((l) => l.getAttribute("stroke")), ["#b2182b", "#2166ac"]);
  assert.deepEqual(["x1", "y1", "x2", "y2"].map((k) => lines()[1].getAttribute(k)), ["0", "-4", "0", "-16"]);
  assert.match(el.querySelector(".smnb-map-pairslegend").textContent, /overlap residual/);
  assert.ok(el.querySelector("input.smnb-map-overlaps").checked);
  const one = encodePairs([PAIRS[0]], "MJy/sr");
  model.set("pair_shapes", one.pair_shapes);
  model.set("pair_values", one.pair_values);
  assert.equal(lines().length, 1);
});

// -- user intent -------------------------------------------------------------------------------
test("click selects one image, shift-click toggles, Escape clears; each saves", () => {
  const { model, shapes, svg } = mount();
  shapes()[1].dispatchEvent(mouse("click"));
  assert.deepEqual(model.get("selected"), ["b"]);
  shapes()[3].dispatchEvent(mouse("click", { shiftKey: true }));
  assert.deepEqual(model.get("selected"), ["b", "d"]);
  shapes()[1].dispatchEvent(mouse("click", { shiftKey: true }));
  assert.deepEqual(model.get("selected"), ["d"]);
  shapes()[0].dispatchEvent(mouse("click"));
  assert.deepEqual(model.get("selected"), ["a"]);
  assert.ok(shapes()[0].classList.contains("smnb-map-selected"));
  svg.dispatchEvent(key("Escape"));
  assert.deepEqual(model.get("selected"), []);
  assert.equal(model.saves, 5);
});

test("shift-drag selects the images whose centres lie in the box, and adds to the selection", () => {
  const { model, svg, shapes, el } = mount({ selected: ["e"] });
  const from = toClient(svg, [-8, -8]), to = toClient(svg, [28, 8]); // around a and b
  shapes()[0].dispatchEvent(mouse("mousedown", { ...from, shiftKey: true }));
  window.dispatchEvent(mouse("mousemove", { ...to, shiftKey: true }));
  assert.equal(el.querySelector("rect.smnb-map-box").style.display, "");
  window.dispatchEvent(mouse("mouseup", { ...to, shiftKey: true }));
  shapes()[0].dispatchEvent(mouse("click", { shiftKey: true })); // the click after a drag is ignored
  assert.deepEqual(model.get("selected"), ["e", "a", "b"]);
  assert.equal(el.querySelector("rect.smnb-map-box").style.display, "none");
});

test("in box-select mode a plain drag replaces the selection", () => {
  const { model, svg, el } = mount({ selected: ["e"] });
  el.querySelector("button.smnb-map-boxbutton").click();
  assert.equal(el.querySelector("button.smnb-map-boxbutton").getAttribute("aria-pressed"), "true");
  const from = toClient(svg, [-8, 28]), to = toClient(svg, [8, -8]); // around a and c
  svg.dispatchEvent(mouse("mousedown", from));
  window.dispatchEvent(mouse("mousemove", to));
  window.dispatchEvent(mouse("mouseup", to));
  assert.deepEqual(model.get("selected"), ["a", "c"]);
});

test("plain drag pans without selecting; wheel zooms about the cursor; reset restores the view", () => {
  const { model, svg, shapes, el } = mount();
  const fitted = viewOf(svg);
  shapes()[0].dispatchEvent(mouse("mousedown", { clientX: 100, clientY: 100 }));
  window.dispatchEvent(mouse("mousemove", { clientX: 164, clientY: 100 }));
  window.dispatchEvent(mouse("mouseup", { clientX: 164, clientY: 100 }));
  shapes()[0].dispatchEvent(mouse("click"));
  assert.deepEqual(model.get("selected"), []);
  const panned = viewOf(svg);
  const { s } = viewScale(RECT, fitted);
  assert.ok(Math.abs(panned.x - (fitted.x - 64 / s)) < 1e-9);
  assert.equal(panned.y, fitted.y);

  const at = toClient(svg, [20, 20]);
  svg.dispatchEvent(new window.WheelEvent("wheel", { deltaY: -200, bubbles: true, cancelable: true, ...at }));
  const zoomed = viewOf(svg);
  assert.ok(zoomed.w < panned.w);
  const still = clientToSvg(at.clientX, at.clientY, RECT, zoomed);
  assert.ok(Math.abs(still[0] - 20) < 1e-9 && Math.abs(still[1] + 20) < 1e-9); // point under cursor fixed

  el.querySelector("button.smnb-map-reset").click();
  assert.deepEqual(viewOf(svg), fitted);
  svg.dispatchEvent(key("+"));
  assert.ok(viewOf(svg).w < fitted.w);
  model.receive({ type: "reset_view" }); // FootprintMap.reset_view() from Python
  assert.deepEqual(viewOf(svg), fitted);
});

test("the scale bar shows a round angle that fits the view", () => {
  const { el, svg } = mount();
  const label = el.querySelector(".smnb-map-scalelabel").textContent;
  const { s } = viewScale(RECT, viewOf(svg));
  const px = parseFloat(el.querySelector(".smnb-map-scalebar").style.width);
  assert.equal(label, formatAngle(px / s));
  assert.ok(px > 0 && px <= 0.25 * RECT.width + 1e-9);
});

test("hover sets `hovered` and shows the tooltip; leaving clears it", () => {
  const { model, shapes, el } = mount();
  shapes()[2].dispatchEvent(mouse("mouseover", { clientX: 50, clientY: 60 }));
  assert.equal(model.get("hovered"), "c");
  const tip = el.querySelector(".smnb-map-tooltip");
  assert.equal(tip.style.display, "block");
  assert.equal(tip.textContent, TOOLTIPS[2]);
  shapes()[2].dispatchEvent(mouse("mousedown", { clientX: 50, clientY: 60 })); // focuses the map...
  window.dispatchEvent(mouse("mouseup", { clientX: 50, clientY: 60 }));
  assert.equal(document.activeElement, el.querySelector("svg.smnb-map-svg"));
  assert.equal(model.get("hovered"), "c"); // ...without moving `hovered` to a keyboard focus
  shapes()[2].dispatchEvent(mouse("mouseout"));
  assert.equal(model.get("hovered"), "");
  assert.equal(tip.style.display, "none");
});

test("keyboard: focus shows a ring, arrows move to the nearest image that way, Enter toggles", () => {
  const { model, svg, shapes, el } = mount();
  const ring = () => el.querySelector("path.smnb-map-focusring").getAttribute("d");
  svg.focus(); // what Tab does
  assert.equal(document.activeElement, svg);
  assert.equal(ring(), shapes()[0].getAttribute("d"));
  svg.dispatchEvent(key("ArrowRight"));
  assert.equal(ring(), shapes()[1].getAttribute("d"));
  assert.equal(model.get("hovered"), "b");
  svg.dispatchEvent(key("ArrowUp"));
  assert.equal(ring(), shapes()[3].getAttribute("d"));
  svg.dispatchEvent(key("ArrowUp")); // nothing further north: stays
  assert.equal(ring(), shapes()[3].getAttribute("d"));
  svg.dispatchEvent(key("Enter"));
  assert.deepEqual(model.get("selected"), ["d"]);
  assert.match(el.querySelector(".smnb-map-live").textContent, /^d; .*; selected$/);
  svg.dispatchEvent(key("ArrowLeft"));
  svg.dispatchEvent(key(" "));
  assert.deepEqual(model.get("selected"), ["d", "c"]);
  svg.dispatchEvent(key("n"));
  assert.equal(ring(), shapes()[3].getAttribute("d"));
  svg.dispatchEvent(key("Escape"));
  assert.deepEqual(model.get("selected"), []);
});

test("toolbar: the colour-by menu and the overlaps toggle set their traitlets", () => {
  const { model, el } = mount();
  const select = el.querySelector("select.smnb-map-colorby");
  assert.deepEqual([...select.options].map((o) => o.value), STATE.color_by_options);
  select.value = "component";
  select.dispatchEvent(new window.Event("change", { bubbles: true }));
  assert.equal(model.get("color_by"), "component");
  const box = el.querySelector("input.smnb-map-overlaps");
  box.click();
  assert.equal(model.get("show_overlaps"), true);
  assert.equal(model.saves, 2);
});

test("cleanup stops listening to the model", () => {
  const { model, cleanup, shapes } = mount();
  cleanup();
  model.set("fill_rgb", rgb(["#111111", "#111111", "#111111", "#111111", "#111111"]));
  assert.equal(shapes()[0].getAttribute("fill"), FILL[0]);
});

// -- geometry helpers --------------------------------------------------------------------------
test("nearestInDirection prefers aligned neighbours and returns -1 at the edge", () => {
  assert.equal(nearestInDirection(CENTERS, 0, [1, 0]), 1);
  assert.equal(nearestInDirection(CENTERS, 0, [0, 1]), 2);
  assert.equal(nearestInDirection(CENTERS, 0, [-1, 0]), 4);
  assert.equal(nearestInDirection(CENTERS, 0, [0, -1]), -1);
  assert.equal(nearestInDirection([[0, 0], [10, 9], [12, 0]], 0, [1, 0]), 2); // diagonal loses
});

test("clientToSvg inverts the letterboxed (meet) mapping; zoomView keeps its fixed point", () => {
  const view = { x: -10, y: -5, w: 20, h: 10 };
  const rect = { left: 100, top: 50, width: 200, height: 200 }; // 10 px per arcsec, letterboxed
  assert.deepEqual(clientToSvg(100, 150, rect, view), [-10, 0]);
  assert.deepEqual(clientToSvg(200, 100, rect, view), [0, -5]);
  const z = zoomView(view, 0.5, [2, 1]);
  assert.deepEqual(z, { x: -4, y: -2, w: 10, h: 5 });
});

test("fitView covers every polygon at the requested aspect ratio", () => {
  const v = fitView(CENTERS.map(square), 2);
  assert.ok(Math.abs(v.w / v.h - 2) < 1e-12);
  assert.ok(v.x < -65 && v.x + v.w > 25 && v.y < -25 && v.y + v.h > 5);
  assert.deepEqual(withAspect({ x: 0, y: 0, w: 4, h: 4 }, 2), { x: -2, y: 0, w: 8, h: 4 });
  assert.deepEqual(centersInBox(CENTERS, [-5, -25], [25, 5]), [0, 1, 2, 3]);
});

test("scale bar lengths are round and labelled in arcsec, arcmin or degrees", () => {
  assert.deepEqual(scaleBar(47), { length: 30, label: "30″" });
  assert.deepEqual(scaleBar(250), { length: 120, label: "2′" });
  assert.deepEqual(scaleBar(6000), { length: 3600, label: "1°" });
  assert.equal(formatAngle(0.5), "0.5″");
});

test("a tooltip on screen follows a re-solve: new text for the same image or pair", () => {
  const { el, model, shapes } = mount({ show_overlaps: true });
  const tip = el.querySelector(".smnb-map-tooltip");
  shapes()[1].dispatchEvent(mouse("mouseover", { clientX: 10, clientY: 10 }));
  assert.equal(tip.textContent, TOOLTIPS[1]);
  model.set("images", encodeImages({ ...IMAGES, sky: [10, 20.25, 30, 40, NaN] }));
  assert.equal(tip.style.display, "block");
  assert.equal(tip.textContent, "b\ngroup: g\nsky: 20.25 ± 0.1 MJy/sr\ncomponent: 0\nvalid");
  // a pair's tooltip follows new pairs
  const line = el.querySelector('line[data-pair="1"]');
  line.dispatchEvent(mouse("mouseover", { clientX: 10, clientY: 10 }));
  assert.equal(tip.textContent, TITLES[1]);
  model.set("pair_values", encodePairs(PAIRS.map((p) => ({ ...p, after: p.after / 2 })), "MJy/sr").pair_values);
  assert.equal(tip.textContent, "a – c\nresidual after: -0.25 MJy/sr\ndifference before: -2 MJy/sr");
  // the pair is gone after the re-solve: so is its tooltip
  el.querySelector('line[data-pair="0"]').dispatchEvent(mouse("mouseover", { clientX: 1, clientY: 1 }));
  const none = encodePairs([], "MJy/sr");
  model.set("pair_shapes", none.pair_shapes);
  model.set("pair_values", none.pair_values);
  assert.equal(tip.style.display, "none");
  // a hidden tooltip stays hidden when the tooltips change
  model.set("images", encodeImages(IMAGES));
  assert.equal(tip.style.display, "none");
});

test("a pair flagged by the robust solve is dotted, with a legend row", () => {
  const { el, model } = mount();
  model.set("show_overlaps", true);
  const legend = () => el.querySelector(".smnb-map-pairslegend").textContent;
  assert.doesNotMatch(legend(), /robust/);
  model.set("pair_values", encodePairs([{ ...PAIRS[0], flagged: true, weight: 0.125 }, PAIRS[1]], "MJy/sr").pair_values);
  const lines = [...el.querySelectorAll("line.smnb-map-pair")];
  assert.deepEqual(lines.map((l) => l.classList.contains("smnb-map-pair-flagged")), [true, false]);
  assert.match(legend(), /down-weighted by the robust solve/);
  assert.match(lines[0].getAttribute("aria-label"), /weight x 0.125/);
  model.set("show_overlaps", false);
  assert.equal(el.querySelector(".smnb-map-pairslegend").style.display, "none");
});

test("auto draws SVG up to SVG_LIMIT footprints and a canvas above; both answer the same calls", () => {
  assert.equal(rendererFor("auto", SVG_LIMIT), "svg");
  assert.equal(rendererFor("auto", SVG_LIMIT + 1), "canvas");
  assert.equal(rendererFor("svg", 1e6), "svg");
  const { el, model } = mount({ renderer: "canvas" });
  const surface = el.querySelector(".smnb-map-canvas-surface");
  assert.ok(surface && !el.querySelector("svg.smnb-map-svg"));
  assert.equal(surface.getAttribute("tabindex"), "0");
  // a click at an image's centre selects it (found by the canvas's hit index)
  const [x, y, w, h] = surface.dataset.view.split(" ").map(Number);
  const { s, ox, oy } = viewScale(RECT, { x, y, w, h });
  const at = ([cx, cy]) => ({ clientX: ox + (cx - x) * s, clientY: oy + (-cy - y) * s });
  surface.dispatchEvent(mouse("click", at(CENTERS[3])));
  assert.deepEqual(model.get("selected"), ["d"]);
  surface.dispatchEvent(mouse("mousemove", at(CENTERS[1])));
  assert.equal(model.get("hovered"), "b");
  assert.equal(el.querySelector(".smnb-map-tooltip").textContent, TOOLTIPS[1]);
  surface.dispatchEvent(mouse("mousemove", at([-30, 40]))); // nothing there
  assert.equal(model.get("hovered"), "");
  // switching the renderer re-mounts the map, state kept
  model.set("renderer", "svg");
  assert.ok(el.querySelector("svg.smnb-map-svg") && !el.querySelector(".smnb-map-canvas-surface"));
  assert.ok(el.querySelectorAll("path.smnb-map-shape")[3].classList.contains("smnb-map-selected"));
});

test("a re-solve (new fills, skies, pair colours) updates the drawing in place, SVG or canvas", () => {
  const resolved = { ...IMAGES, sky: [5, 6, 7, 8, NaN] };
  const newPairs = PAIRS.map((pair) => ({ ...pair, color: "#000000", after: 0.25 }));
  // SVG: the same <path> per footprint, new fill and label
  const svgMap = mount();
  const paths = svgMap.shapes();
  svgMap.model.set("fill_rgb", rgb(["#000001", "#000002", "#000003", "#000004", "#000005"]));
  svgMap.model.set("images", encodeImages(resolved));
  svgMap.model.set("pair_values", encodePairs(newPairs, "MJy/sr").pair_values);
  assert.deepEqual(svgMap.shapes(), paths);
  assert.equal(paths[1].getAttribute("fill"), "#000002");
  assert.match(paths[1].getAttribute("aria-label"), /sky: 6 ± 0.1 MJy\/sr/);
  // canvas: the same surface (not re-mounted); hover and the tooltip still find the images
  const { el, model } = mount({ renderer: "canvas" });
  const surface = el.querySelector(".smnb-map-canvas-surface");
  const canvases = [...el.querySelectorAll("canvas")];
  model.set("fill_rgb", rgb(["#000001", "#000002", "#000003", "#000004", "#000005"]));
  model.set("images", encodeImages(resolved));
  model.set("pair_values", encodePairs(newPairs, "MJy/sr").pair_values);
  assert.equal(el.querySelector(".smnb-map-canvas-surface"), surface);
  assert.ok(canvases.length > 0);
  assert.deepEqual([...el.querySelectorAll("canvas")], canvases);
  const [x, y, w, h] = surface.dataset.view.split(" ").map(Number);
  const { s, ox, oy } = viewScale(RECT, { x, y, w, h });
  surface.dispatchEvent(mouse("mousemove", { clientX: ox + (CENTERS[1][0] - x) * s, clientY: oy + (-CENTERS[1][1] - y) * s }));
  assert.equal(model.get("hovered"), "b");
  assert.match(el.querySelector(".smnb-map-tooltip").textContent, /sky: 6 ± 0.1 MJy\/sr/);
});

// -- fitted sky planes (skymodel="plane") ---------------------------------------------------------
const PLANE_IMAGES = {
  ...IMAGES, plane: true, slope_x: [0.01, -0.002, 0, 0.5, NaN], slope_y: [0, 0.003, 0, -0.25, NaN],
  gradient: [0.1, 0.036, 0, 0.5591, NaN], gradient_pa: [270, 33.69, NaN, 116.6, NaN],
  // tips of the arrows from each centre (display frame: x = west, y = north); NaN: no arrow
  arrows: [[4, 0], [21, 1.5], [NaN, NaN], [16, 18], [NaN, NaN]],
};
// what Python's FootprintMap.tooltips says for PLANE_IMAGES (float32 numbers, 4 digits)
const PLANE_TOOLTIPS = [
  "a\ngroup: g\nsky: 1 ± 0.1 MJy/sr\nslopes x, y: 0.01, 0 MJy/sr/pixel\n" +
    "gradient: 0.1 MJy/sr/arcsec toward PA 270°\ncomponent: 0\nvalid",
  "c\ngroup: none (own sky)\nsky: 3 ± 0.1 MJy/sr\nslopes x, y: 0, 0 MJy/sr/pixel\n" +
    "gradient: 0 MJy/sr/arcsec\ncomponent: 0\nvalid",
];

test("a plane result: tooltips with the slopes and the gradient, as Python writes them", () => {
  const { el, svg, cleanup } = mount({ images: encodeImages(PLANE_IMAGES) });
  const tooltip = el.querySelector(".smnb-map-tooltip");
  for (const [i, text] of [[0, PLANE_TOOLTIPS[0]], [2, PLANE_TOOLTIPS[1]]]) {
    svg.querySelectorAll("path.smnb-map-shape")[i].dispatchEvent(mouse("mousemove", toClient(svg, CENTERS[i])));
    assert.equal(tooltip.textContent, text);
  }
  cleanup();
});

test("a plane result: one arrow per image with a gradient, centre to tip, and a legend row", () => {
  const { el, model, cleanup } = mount({ images: encodeImages(PLANE_IMAGES) });
  const d = el.querySelector("path.smnb-map-arrows").getAttribute("d");
  assert.equal(d, el.querySelector("path.smnb-map-arrow-casing").getAttribute("d"));
  const strokes = d.split("M").filter(Boolean);
  assert.equal(strokes.length, 3 * 3); // images a, b, d: a shaft and two head strokes each
  assert.equal(strokes[0], "0,0L4,0"); // a: from its centre (0, 0) west to (4, 0), y flipped
  assert.equal(strokes[6], "20,-20L16,-18"); // d: from (20, 20) to its tip (16, 18)
  assert.match(el.querySelector(".smnb-map-flaglegend").textContent, /sky gradient: the direction the fitted plane rises/);
  assert.match(el.querySelector("svg.smnb-map-svg").getAttribute("aria-label"), /Arrows point where each image's fitted sky rises/);
  // a constant result: no arrows, no legend row
  model.set("images", encodeImages(IMAGES));
  assert.equal(el.querySelector("path.smnb-map-arrows").getAttribute("d"), "");
  assert.doesNotMatch(el.querySelector(".smnb-map-flaglegend").textContent, /sky gradient/);
  assert.doesNotMatch(el.querySelector("svg.smnb-map-svg").getAttribute("aria-label"), /Arrows point/);
  cleanup();
});

test("a plane result: overlap titles give the residual gradient or why a pair fitted a constant", () => {
  const pairs = [{ ...PAIRS[0], resid_gradient: 0.0002, fallback: "" },
    { ...PAIRS[1], fallback: "overlap too thin for a slope" }];
  const { el, model, cleanup } = mount({ ...encodePairs(pairs, "MJy/sr"), show_overlaps: true });
  const lines = [...el.querySelectorAll("line.smnb-map-pair")];
  assert.equal(lines[0].getAttribute("aria-label"), `${TITLES[0]}\nresidual gradient: 0.0002 MJy/sr/arcsec`.replace(/\n/g, "; "));
  assert.equal(lines[1].getAttribute("aria-label"), `${TITLES[1]}\nconstant only: overlap too thin for a slope`.replace(/\n/g, "; "));
  model.set("renderer", "canvas"); // the canvas draws arrows too (same call; jsdom has no 2-D context)
  model.set("images", encodeImages(PLANE_IMAGES));
  assert.ok(el.querySelector(".smnb-map-canvas-surface"));
  assert.match(el.querySelector(".smnb-map-flaglegend").textContent, /sky gradient/);
  cleanup();
});

test("arrowStrokes: a shaft and a head of 0.3 of its length at 25 degrees; none for no length", () => {
  const [shaft, left, right] = arrowStrokes([0, 0], [10, 0]);
  assert.deepEqual(shaft, [[0, -0], [10, -0]]);
  for (const [[x1, y1], [x2, y2]] of [left, right]) {
    assert.deepEqual([x1, y1], [10, -0]);
    assert.ok(Math.abs(Math.hypot(x2 - x1, y2 - y1) - 3) < 1e-12);
    assert.ok(Math.abs(Math.abs(Math.atan2(y2 - y1, x1 - x2)) - (25 * Math.PI) / 180) < 1e-12);
  }
  assert.ok(left[1][1] * right[1][1] < 0); // one on each side of the shaft
  assert.deepEqual(arrowStrokes([1, 1], [1, 1]), []);
  assert.equal(arrowsPath([null, [[0, 0], [0, 10]]]).split("M").filter(Boolean)[0], "0,0L0,-10");
});

test("the toolbar's menu and checkbox keep their keys from JupyterLab's notebook shortcuts", () => {
  const { el, cleanup } = mount();
  // Lumino runs no shortcut for a key whose target carries this attribute (in command mode
  // ArrowUp/Down would select another cell instead of changing the colouring)
  for (const selector of ["select.smnb-map-colorby", "input.smnb-map-overlaps"]) {
    assert.equal(el.querySelector(selector).getAttribute("data-lm-suppress-shortcuts"), "true");
  }
  assert.ok(!el.querySelector("svg.smnb-map-svg").hasAttribute("data-lm-suppress-shortcuts"));
  cleanup();
});
