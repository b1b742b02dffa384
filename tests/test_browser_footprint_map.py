"""FootprintMap in real chromium (no Jupyter): the widget's _esm and _css in a blank page with a
tiny fake model, fed the traitlet state of a real ImageCollection.  Screenshots of a light and a
dark theme go to test-results/ (look at them)."""

from __future__ import annotations

import base64
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from _page_state import REVIVE_JS, map_point, page_state

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.engine.exceptions import DisconnectedMosaicWarning
from skymatch_nb_ui.testing import make_mosaic
from skymatch_nb_ui.widgets.footprint_map import FootprintMap

playwright_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "test-results"

#: JupyterLab's dark theme, enough of it for the variables the widget reads.
DARK = {
    "--jp-layout-color0": "#111111", "--jp-layout-color1": "#111111", "--jp-layout-color2": "#2a2a2a",
    "--jp-ui-font-color0": "rgba(255,255,255,1)", "--jp-ui-font-color1": "rgba(255,255,255,0.87)",
    "--jp-ui-font-color2": "rgba(255,255,255,0.54)", "--jp-border-color1": "#616161",
    "--jp-brand-color1": "#42a5f5", "--jp-warn-color0": "#ffa726", "--jp-error-color1": "#ef5350",
}

# A fake anywidget model in the page (js/tests/fake_model.js needs jsdom, so not that one).
MOUNT_JS = """async ([esm, raw]) => {
  """ + REVIVE_JS + """
  const state = revive(raw);
  class PageModel {
    constructor(s) { this.s = s; this.h = {}; this.saves = 0; }
    get(k) { return this.s[k]; }
    set(k, v) { this.s[k] = v; (this.h['change:' + k] || []).forEach((f) => f()); }
    on(e, f) { (this.h[e] = this.h[e] || []).push(f); }
    off(e, f) { this.h[e] = (this.h[e] || []).filter((g) => g !== f); }
    save_changes() { this.saves += 1; }
    send() {}
  }
  const url = URL.createObjectURL(new Blob([esm], {type: 'text/javascript'}));
  const widget = (await import(url)).default;
  const model = new PageModel(state);
  window.__model = model;
  const el = document.createElement('div'); el.id = 'root'; document.body.append(el);
  await widget.render({model, el});
}"""


@pytest.fixture(scope="module")
def fmap():
    """12 images: a 3x3 grid (two of them grouped), a 1x2 strip east of it, a lone image south."""
    mosaic = (
        make_mosaic((3, 3), sky=[100, 104, 108, 101, 106, 111, 103, 109, 113], noise=2.0, seed=1)
        + make_mosaic((1, 2), center=(150.0125, 2.0), prefix="strip", seed=2)
        + make_mosaic((1, 1), center=(150.0, 1.9925), prefix="lone", seed=3)
    )
    coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=mosaic.names,
                                       groups={"img00": "pair", "img01": "pair"},
                                       meta=[{"bunit": "MJy/sr"}] * len(mosaic))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DisconnectedMosaicWarning)
        result = coll.skymatch(skymethod="match", skystat="mean")
    return FootprintMap(coll, result, show_overlaps=True)


def mount(browser, fmap, theme=None):
    page = browser.new_page(viewport={"width": 980, "height": 600})
    variables = ";".join(f"{k}:{v}" for k, v in (theme or {}).items())
    background = (theme or {}).get("--jp-layout-color1", "white")
    page.set_content(f"<style>{fmap._css} body{{margin:8px;background:{background};{variables}}}</style>")
    page.evaluate(MOUNT_JS, [fmap._esm, page_state(fmap)])
    return page


def test_footprint_map_in_chromium(browser, fmap):
    t0 = time.perf_counter()
    SCREENSHOTS.mkdir(exist_ok=True)
    page = mount(browser, fmap)
    shapes = page.locator("#root path.smnb-map-shape")
    assert shapes.count() == len(fmap.names) == 12

    # RA increases to the left: the strip (larger RA) is drawn left of the grid, E left of N
    box = {name: shapes.nth(k).bounding_box() for k, name in enumerate(fmap.names)}
    assert box["strip00"]["x"] + box["strip00"]["width"] < box["img00"]["x"]
    assert box["lone00"]["y"] > box["img04"]["y"] + box["img04"]["height"]  # south is down
    east = page.locator(".smnb-map-compass-label", has_text="E").bounding_box()
    north = page.locator(".smnb-map-compass-label", has_text="N").bounding_box()
    assert east["x"] < north["x"] and north["y"] < east["y"]

    # a real click at the centre of img04 selects it; its ring takes the theme's brand colour
    shapes.nth(4).click()
    assert page.evaluate("window.__model.get('selected')") == ["img04"]
    assert re.search(r"\bsmnb-map-selected\b", shapes.nth(4).get_attribute("class"))
    ring = page.eval_on_selector("#root path.smnb-map-selection", "e => getComputedStyle(e).stroke")
    assert ring == "rgb(25, 118, 210)"  # --jp-brand-color1 fallback

    # the click focused the map: the keyboard carries on from the clicked image
    page.keyboard.press("ArrowUp")  # img04 is the grid's centre; img07 lies north of it
    assert page.evaluate("window.__model.get('hovered')") == "img07"
    page.keyboard.press("Enter")
    assert page.evaluate("window.__model.get('selected')") == ["img04", "img07"]
    page.keyboard.press("Escape")
    assert page.evaluate("window.__model.get('selected')") == []
    shapes.nth(4).click()

    # hover names the image and shows its tooltip
    shapes.nth(fmap.names.index("lone00")).hover()
    assert page.evaluate("window.__model.get('hovered')") == "lone00"
    tooltip = page.locator(".smnb-map-tooltip")
    assert tooltip.is_visible() and "NOT valid" in tooltip.inner_text()
    page.mouse.move(5, 5)

    lines = page.locator("#root line.smnb-map-pair")
    assert lines.count() == len(fmap.pairs) > 0
    assert "MJy/sr" in page.locator(".smnb-map-colorbar").inner_text()
    page.locator("#root").screenshot(path=str(SCREENSHOTS / "footprint_map_light.png"))
    page.close()

    page = mount(browser, fmap, DARK)
    text = page.eval_on_selector(".smnb-map-cb-title", "e => getComputedStyle(e).color")
    assert text == "rgba(255, 255, 255, 0.87)"  # the dark theme's text colour, not a fixed one
    background = page.eval_on_selector("svg.smnb-map-svg", "e => getComputedStyle(e).backgroundColor")
    assert background == "rgb(17, 17, 17)"
    page.locator("#root path.smnb-map-shape").nth(0).click(modifiers=["Shift"])
    page.keyboard.press("ArrowRight")  # the focus ring (dashed) moves east of img00: to img01
    page.locator("#root").screenshot(path=str(SCREENSHOTS / "footprint_map_dark.png"))
    page.close()
    print(f"\nbrowser test body {time.perf_counter() - t0:.2f} s")


@pytest.fixture(scope="module")
def big_map():
    """2,000 small images (a 40 x 50 grid): drawn on a canvas."""
    mosaic = make_mosaic((40, 50), shape=(8, 8), noise=1.0, seed=4, sky=[float(k % 97) for k in range(2000)])
    coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=mosaic.names,
                                       meta=[{"bunit": "MJy/sr"}] * len(mosaic))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DisconnectedMosaicWarning)
        result = coll.skymatch(skymethod="local", skystat="mean")
    return FootprintMap(coll, result)


def client_point(page, xy):
    return map_point(page, xy, "#root .smnb-map-surface")


def test_two_thousand_footprints_on_a_canvas(browser, big_map):
    """Issue 12 item 5: many images stay usable: drawn, picked, hovered, box-selected, keyboard."""
    fmap = big_map
    t0 = time.perf_counter()
    page = mount(browser, fmap)
    mounted = time.perf_counter() - t0
    assert page.locator("#root .smnb-map-surface").get_attribute("data-renderer") == "canvas"
    assert page.locator("#root path.smnb-map-shape").count() == 0  # no element per footprint
    page.wait_for_timeout(200)  # the next frame draws
    centers = np.array(fmap.centers)

    # what is drawn at an image's centre is its colour, at the SVG's fill opacity (0.85)
    k = 1234
    x, y = client_point(page, centers[k])
    drawn = page.evaluate("""([x, y]) => {
        const canvas = document.querySelector('#root .smnb-map-layer');
        const r = canvas.getBoundingClientRect(), ratio = canvas.width / r.width;
        const pixel = canvas.getContext('2d').getImageData((x - r.left) * ratio, (y - r.top) * ratio, 1, 1);
        return [...pixel.data];
    }""", [x, y])
    fill = np.array([int(fmap.fill[k][i:i + 2], 16) for i in (1, 3, 5)])
    np.testing.assert_allclose(drawn, [*fill, 0.85 * 255], atol=2)

    # a click picks the image under it, the hover names it with Python's very tooltip
    page.mouse.click(x, y)
    assert page.evaluate("window.__model.get('selected')") == [fmap.names[k]]
    j = 777
    page.mouse.move(*client_point(page, centers[j]))
    assert page.evaluate("window.__model.get('hovered')") == fmap.names[j]
    assert page.locator(".smnb-map-tooltip").inner_text() == fmap.tooltips[j]

    # shift-drag: the images whose centres lie in the box
    corner_a, corner_b = centers[[505, 556]].mean(axis=0), centers[[1012, 1063]].mean(axis=0)
    page.keyboard.down("Shift")
    page.mouse.move(*client_point(page, corner_a))
    page.mouse.down()
    page.mouse.move(*client_point(page, corner_b), steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    lo, hi = np.minimum(corner_a, corner_b), np.maximum(corner_a, corner_b)
    inside = [n for n, c in zip(fmap.names, centers) if (lo <= c).all() and (c <= hi).all()]
    selected = page.evaluate("window.__model.get('selected')")
    assert len(inside) > 10 and set(selected) == set(inside) | {fmap.names[k]}

    # the keyboard: the focus moves to the nearest image east (left on the map)
    page.keyboard.press("Escape")
    page.locator("#root .smnb-map-surface").focus()
    page.keyboard.press("n")  # the next image in collection order: the focus (and hover) there
    start = page.evaluate("window.__model.get('hovered')")
    assert start == fmap.names[k + 1]
    page.keyboard.press("ArrowLeft")
    moved = page.evaluate("window.__model.get('hovered')")
    a, b = centers[fmap.names.index(start)], centers[fmap.names.index(moved)]
    assert b[0] < a[0] and abs(b[1] - a[1]) < 1.0

    page.locator("#root").screenshot(path=str(SCREENSHOTS / "footprint_map_canvas_light.png"))
    # a new colouring (a re-solve) redraws in one frame
    redraw = page.evaluate("""(fill) => new Promise((done) => {
        const m = window.__model, t0 = performance.now();
        m.set('fill_rgb', new DataView(Uint8Array.from(atob(fill), (c) => c.charCodeAt(0)).buffer));
        requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0)));
    })""", base64.b64encode(bytes(reversed(fmap.fill_rgb))).decode())
    page.close()
    page = mount(browser, fmap, DARK)
    page.wait_for_timeout(200)
    page.locator("#root").screenshot(path=str(SCREENSHOTS / "footprint_map_canvas_dark.png"))
    page.close()
    print(f"\n2,000 footprints: mounted in {mounted:.2f} s, recoloured and drawn in {redraw:.0f} ms")


@pytest.fixture(scope="module")
def plane_map():
    """A rotated 3x4 mosaic with scattered light, its true planes as a plane result."""
    from _plane_results import plane_result

    mosaic = make_mosaic((3, 4), noise=1.0, gradient=5.0, rotation=20.0, seed=3)
    coll, result = plane_result(mosaic, fallback_pairs=(0,))
    return FootprintMap(coll, result, color_by="gradient")


def arrow_pixel(page, fmap, k, selector):
    """Client point half-way along image k's arrow."""
    tip = np.frombuffer(fmap.images["arrows"], np.float32).reshape(-1, 2)[k]
    return map_point(page, (np.array(fmap.centers[k]) + tip) / 2, selector)


def test_plane_result_arrows_and_tooltips_in_both_renderers_and_themes(browser, plane_map):
    fmap = plane_map
    SCREENSHOTS.mkdir(exist_ok=True)
    k = int(np.argmax(fmap._result.gradient.values))  # the longest arrow
    for theme, name in ((None, "light"), (DARK, "dark")):
        page = mount(browser, fmap, theme)
        arrows = page.locator("#root path.smnb-map-arrows")
        assert arrows.get_attribute("d").count("M") == 3 * len(fmap.names)  # shaft + head each
        stroke = page.eval_on_selector("#root path.smnb-map-arrows", "e => getComputedStyle(e).stroke")
        assert stroke == ("rgb(17, 17, 17)" if theme is None else "rgb(255, 255, 255)")
        assert "sky gradient" in page.locator(".smnb-map-flaglegend").inner_text()
        assert "Sky gradient [per arcsec]" in page.locator(".smnb-map-colorbar").inner_text()
        page.locator("#root path.smnb-map-shape").nth(5).hover()
        hovered = page.evaluate("window.__model.get('hovered')")
        tooltip = page.locator(".smnb-map-tooltip").inner_text()
        assert hovered == "img05" and tooltip == fmap.tooltips[5]
        assert "gradient:" in tooltip and "slopes x, y:" in tooltip
        page.mouse.move(5, 5)
        page.locator("#root").screenshot(path=str(SCREENSHOTS / f"footprint_map_planes_{name}.png"))
        page.close()

    # the canvas renderer draws the same arrows: the arrow's colour half-way along its shaft
    page = mount(browser, FootprintMap(fmap._collection, fmap._result, color_by="gradient",
                                           renderer="canvas"))
    page.wait_for_timeout(200)
    x, y = arrow_pixel(page, fmap, k, "#root .smnb-map-surface")
    drawn = page.evaluate("""([x, y]) => {
        const canvas = document.querySelector('#root .smnb-map-layer');
        const r = canvas.getBoundingClientRect(), ratio = canvas.width / r.width;
        const at = [(x - r.left) * ratio, (y - r.top) * ratio];
        return [...canvas.getContext('2d').getImageData(at[0], at[1], 1, 1).data];
    }""", [x, y])
    assert max(drawn[:3]) < 80, drawn  # the dark stroke, not the footprint's fill
    page.locator("#root").screenshot(path=str(SCREENSHOTS / "footprint_map_planes_canvas_light.png"))

    # footprints under 12 pixels get no arrows on a canvas (thousands of them hid the planes'
    # colours), the legend says so; zoomed in again, the arrows are back
    def dark_pixels():
        return page.evaluate("""() => {
            const canvas = document.querySelector('#root .smnb-map-layer');
            const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let dark = 0;
            for (let i = 0; i < px.length; i += 4) {
                if (px[i + 3] > 200 && Math.max(px[i], px[i + 1], px[i + 2]) < 60) dark++;
            }
            return dark;
        }""")

    assert "zoom in" in page.locator(".smnb-map-flaglegend").inner_text()
    near = dark_pixels()
    surface = page.locator("#root .smnb-map-surface").bounding_box()
    page.mouse.move(surface["x"] + surface["width"] / 2, surface["y"] + surface["height"] / 2)
    for _ in range(6):
        page.mouse.wheel(0, 400)  # zoom out: each step by e^0.6
        page.wait_for_timeout(50)
    page.wait_for_timeout(200)
    assert near > 200 and dark_pixels() == 0, near
    for _ in range(6):
        page.mouse.wheel(0, -400)
        page.wait_for_timeout(50)
    page.wait_for_timeout(200)
    assert dark_pixels() > 200
    page.close()
