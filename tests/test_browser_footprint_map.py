"""FootprintMap in real chromium (no Jupyter): the widget's _esm and _css in a blank page with a
tiny fake model, fed the traitlet state of a real ImageCollection.  Screenshots of a light and a
dark theme go to test-results/ (look at them)."""

from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path

import pytest

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.engine.exceptions import DisconnectedMosaicWarning
from skymatch_nb_ui.testing import make_mosaic
from skymatch_nb_ui.widgets.footprint_map import FootprintMap

playwright_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "test-results"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]

#: JupyterLab's dark theme, enough of it for the variables the widget reads.
DARK = {
    "--jp-layout-color0": "#111111", "--jp-layout-color1": "#111111", "--jp-layout-color2": "#2a2a2a",
    "--jp-ui-font-color0": "rgba(255,255,255,1)", "--jp-ui-font-color1": "rgba(255,255,255,0.87)",
    "--jp-ui-font-color2": "rgba(255,255,255,0.54)", "--jp-border-color1": "#616161",
    "--jp-brand-color1": "#42a5f5", "--jp-warn-color0": "#ffa726", "--jp-error-color1": "#ef5350",
}

# A fake anywidget model in the page (js/tests/fake_model.js needs jsdom, so not that one).
MOUNT_JS = """async ([esm, state]) => {
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
def map_browser(request):
    """Debian's chromium through Playwright's sync API (never a downloaded browser)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        manager = playwright_api.sync_playwright().start()
    except playwright_api.Error:
        # pytest-playwright's session-wide Playwright already runs in this thread (another
        # test used its `page`): two sync Playwrights cannot share a thread, so use its browser
        yield request.getfixturevalue("browser")
        return
    chromium = manager.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    yield chromium
    chromium.close()
    manager.stop()


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
    state = {k: getattr(fmap, k) for k in FootprintMap.class_own_traits(sync=True) if not k.startswith("_")}
    page.evaluate(MOUNT_JS, [fmap._esm, state])
    return page


def test_footprint_map_in_chromium(map_browser, fmap):
    t0 = time.perf_counter()
    SCREENSHOTS.mkdir(exist_ok=True)
    page = mount(map_browser, fmap)
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

    page = mount(map_browser, fmap, DARK)
    text = page.eval_on_selector(".smnb-map-cb-title", "e => getComputedStyle(e).color")
    assert text == "rgba(255, 255, 255, 0.87)"  # the dark theme's text colour, not a fixed one
    background = page.eval_on_selector("svg.smnb-map-svg", "e => getComputedStyle(e).backgroundColor")
    assert background == "rgb(17, 17, 17)"
    page.locator("#root path.smnb-map-shape").nth(0).click(modifiers=["Shift"])
    page.keyboard.press("ArrowRight")  # the focus ring (dashed) moves east of img00: to img01
    page.locator("#root").screenshot(path=str(SCREENSHOTS / "footprint_map_dark.png"))
    page.close()
    print(f"\nbrowser test body {time.perf_counter() - t0:.2f} s")
