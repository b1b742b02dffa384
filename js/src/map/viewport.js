// The footprint map's view: which part of the sky is shown, at what scale, and the scale bar.
// Fitting, zooming and panning change it; a resize keeps the user's view once they moved it.

import { fitView, scaleBar, viewScale, withAspect, zoomView } from "./geometry.js";

const NOMINAL = { left: 0, top: 0, width: 640, height: 420 }; // the size assumed without layout (jsdom)

/**
 * @typedef {import("./geometry.js").View} View
 * @typedef {import("./geometry.js").Point} Point
 * @typedef {import("./geometry.js").Rect} Rect
 *
 * @typedef {Object} Viewport
 * @property {() => View} get  the view now
 * @property {() => Rect} rect  the drawing surface in client pixels
 * @property {(polygons: Point[][]) => void} fit  show every polygon (and forget the user's view)
 * @property {(polygons: Point[][]) => void} resized  keep the user's view, else refit
 * @property {(factor: number, point: Point) => void} zoomAt  > 1 zooms out, `point` fixed
 * @property {(start: View, dx: number, dy: number) => void} pan  `start` moved by pixels
 * @property {() => Point} centre
 * @property {(showScale: boolean) => void} setScaleShown  (no scale bar on all-sky maps)
 */

/**
 * @param {import("./svg_renderer.js").Renderer} renderer
 * @param {import("./layout.js").Layout} ui
 * @returns {Viewport}
 */
export function createViewport(renderer, ui) {
  /** @type {View} */
  let view = { x: -1, y: -1, w: 2, h: 2 };
  let userMoved = false;
  let showScale = true;

  function rect() {
    const r = renderer.element.getBoundingClientRect();
    return r.width > 0 && r.height > 0 ? r : NOMINAL;
  }

  function apply() {
    renderer.setView(view);
    const r = rect();
    const { s } = viewScale(r, view);
    const bar = scaleBar((r.width * 0.25) / s);
    ui.scaleBar.style.width = `${bar.length * s}px`;
    ui.scaleLabel.textContent = bar.label;
    ui.scale.style.display = showScale ? "" : "none";
  }

  return {
    get: () => view,
    rect,
    fit(polygons) {
      const r = rect();
      view = fitView(polygons, r.width / r.height);
      userMoved = false;
      apply();
    },
    resized(polygons) {
      const r = rect();
      view = userMoved ? withAspect(view, r.width / r.height) : fitView(polygons, r.width / r.height);
      apply();
    },
    zoomAt(factor, point) {
      view = zoomView(view, factor, point);
      userMoved = true;
      apply();
    },
    pan(start, dx, dy) {
      const { s } = viewScale(rect(), start);
      view = { ...start, x: start.x - dx / s, y: start.y - dy / s };
      userMoved = true;
      apply();
    },
    centre: () => [view.x + view.w / 2, view.y + view.h / 2],
    setScaleShown(shown) {
      showScale = shown;
      apply();
    },
  };
}
