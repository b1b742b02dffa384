"""Widget state for a page without a kernel: binary buffers travel as base64 and come back as
DataViews, as Jupyter delivers them to a widget's front end (used by the browser harnesses)."""

from __future__ import annotations

import base64

import anywidget

#: JavaScript: ``revive(value)`` turns ``{"__buffer__": base64}`` back into a DataView.
REVIVE_JS = """const revive = (v) => {
  if (Array.isArray(v)) return v.map(revive);
  if (!v || typeof v !== "object") return v;
  if ("__buffer__" in v) {
    return new DataView(Uint8Array.from(atob(v.__buffer__), (c) => c.charCodeAt(0)).buffer);
  }
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)]));
};"""


def jsonable(value):
    """``value`` with every bytes-like object as ``{"__buffer__": base64}``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"__buffer__": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def map_point(page, xy, surface: str = ".smnb-map-surface") -> list:
    """Page pixels of a display-frame point (arcsec) of a canvas map, from its view.

    The canvas maps SVG space (y flipped) as SVG's viewBox with "meet" does; its view is in
    the surface's ``data-view`` ("x y w h").
    """
    return page.evaluate("""([x, y, selector]) => {
        const surface = document.querySelector(selector);
        const [vx, vy, vw, vh] = surface.dataset.view.split(' ').map(Number);
        const r = surface.getBoundingClientRect();
        const s = Math.min(r.width / vw, r.height / vh);
        const ox = r.left + (r.width - vw * s) / 2, oy = r.top + (r.height - vh * s) / 2;
        return [ox + (x - vx) * s, oy + (-y - vy) * s];
    }""", [*map(float, xy), surface])


def page_state(widget) -> dict:
    """The widget's own synced traitlets (not anywidget's plumbing), JSON-safe."""
    base = set(anywidget.AnyWidget.class_trait_names())
    keys = [k for k in widget.trait_names(sync=True) if k not in base and not k.startswith("_")]
    return jsonable({k: getattr(widget, k) for k in keys})
