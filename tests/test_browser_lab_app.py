"""End to end in JupyterLab: the quickstart notebook's SkyMatchApp, driven in Debian's chromium.

The quickstart draws real pixels (the Hubble Deep Field through ACS/WFC's distortion). Kernel
<-> browser both ways: a click in the map reaches ``app.selected`` in the kernel; an edit in
the group editor re-solves and the table's skies change; a new ``skymethod`` in the controls
updates the table; a Python assignment to ``app.params`` or ``app.groups`` is read back in the
same cell (``app.result`` is already the new one) and the page follows; a tooltip on screen
follows a re-solve. Screenshots in the light and dark themes go to test-results/.
"""

import json
import re
import time

from _page_state import map_point
from playwright.sync_api import Page, expect

# run code in the notebook's kernel from the page; returns what it printed
KERNEL_EXEC = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code});
  let out = '';
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === 'stream') out += msg.content.text;
    if (msg.header.msg_type === 'error') out += 'ERROR:' + msg.content.ename + ':' + msg.content.evalue;
  };
  await future.done;
  return out;
}"""


def kernel(page: Page, code: str) -> str:
    out = page.evaluate(KERNEL_EXEC, code)
    assert "ERROR:" not in out, out
    return out.strip()


def open_notebook(page: Page, lab_server, name: str) -> None:
    base, token, _ = lab_server
    page.goto(f"{base}/lab/tree/{name}?token={token}&reset")
    page.wait_for_function(
        "window.jupyterapp && window.jupyterapp.shell.currentWidget"
        " && window.jupyterapp.shell.currentWidget.sessionContext", timeout=90_000)
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=90_000)
    page.wait_for_function(
        "window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel"
        "?.connectionStatus === 'connected'", timeout=90_000)


def kernel_until(page: Page, code: str, expected: str, timeout: float = 15.0) -> None:
    """Run ``code`` until it prints ``expected``: the page's widget messages reach the kernel
    throttled (ipywidgets holds back a change while the kernel is busy), not instantly."""
    deadline = time.monotonic() + timeout
    while (out := kernel(page, code)) != expected and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert out == expected


def sky_cells(page: Page) -> list[str]:
    return page.locator(".smnb-table-grid tbody td.smnb-table-col-sky").all_inner_texts()


def cell(page: Page, name: str, column: str):
    return page.locator(f".smnb-table-grid tbody tr[data-name='{name}'] td.smnb-table-col-{column}")


def test_quickstart_app_round_trip(page: Page, lab_server, screenshots):
    open_notebook(page, lab_server, "01-quickstart.ipynb")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    shapes = page.locator(".smnb-map-shape")
    expect(shapes).to_have_count(8, timeout=120_000)  # 4 exposures x 2 ACS/WFC detectors
    rows = page.locator(".smnb-table-grid tbody tr")
    expect(rows).to_have_count(8)
    expect(page.locator(".smnb-status")).to_contain_text("solved in", timeout=60_000)
    app_output = page.locator(".jp-OutputArea-output").filter(has=page.locator(".smnb-map"))

    # real pixels through a real distorted WCS, with the known skies found again (the notebook
    # asserts it; its last cell's Python assignment was read back at once)
    assert kernel(page, "print(type(hdf).__name__, hdf.wcs[0].sip is not None, hdf.images[0].shape,"
                        " coll.names[:2])") == "DitheredExposures True (256, 512) ('e1_wfc1', 'e1_wfc2')"
    assert kernel(page, "print(app.result.attrs['skymethod'])") == "global+match"
    expect(page.locator(".jp-OutputArea-output img")).not_to_have_count(0)  # the pixels, drawn
    pixels = page.locator(".jp-OutputArea-output img").first
    pixels.screenshot(path=str(screenshots / "lab_quickstart_pixels.png"))
    # the sky plot names the images on its axis
    expect(page.locator(".smnb-app .bqplot .tick text").filter(has_text="e1_wfc1")).to_have_count(1)

    # Assign waits for a selection
    assign = page.locator(".smnb-groups-assign-button")
    expect(assign).to_be_disabled()

    # JS -> Python: click a footprint (the last one drawn is on top), shift-click a table row
    shapes.nth(7).click()
    expect(shapes.nth(7)).to_have_class(re.compile(r"\bsmnb-map-selected\b"))
    expect(page.locator(".smnb-table-grid tbody tr.smnb-table-selected")).to_have_count(1)
    kernel_until(page, "print(app.selected)", "['e4_wfc2']")
    page.locator(".smnb-table-grid tbody tr[data-name='e3_wfc1'] td").first.click(modifiers=["Shift"])
    expect(page.locator(".smnb-table-grid tbody tr.smnb-table-selected")).to_have_count(2)
    kernel_until(page, "print(sorted(app.selected))", "['e3_wfc1', 'e4_wfc2']")

    # the group editor: assign the two selected images to a new group; the skies change
    before = sky_cells(page)
    page.locator(".smnb-groups-name").fill("pair")
    expect(assign).to_be_enabled()
    assign.click()
    expect(page.locator(".smnb-groups-chip").filter(has_text="pair")).to_have_count(1)
    expect(cell(page, "e4_wfc2", "group")).to_have_text("pair")
    expect(page.locator(".smnb-status")).to_contain_text("solved in")
    after = sky_cells(page)
    assert after != before
    assert cell(page, "e3_wfc1", "sky").inner_text() == cell(page, "e4_wfc2", "sky").inner_text()
    kernel_until(page, "print(app.groups['e4_wfc2'], app.result.group.values[-1])", "pair pair")

    # the controls: a new skymethod re-solves and the table follows
    page.locator(".smnb-app select").first.select_option("match")
    expect(page.locator(".smnb-status")).to_contain_text("match / median", timeout=30_000)
    expect(page.locator(".smnb-table-grid tbody td.smnb-table-col-sky").filter(
        has_text=re.compile(r"^0(\.0+)?$"))).not_to_have_count(0)
    kernel_until(page, "print(app.params['skymethod'], app.result.attrs['skymethod'])", "match match")

    # Python: an assignment is read back in the same cell, and the page follows
    assert kernel(page, "app.params = {'skystat': 'mode'}\n"
                        "print(app.result.attrs['skystat'], app.status.split(':')[0])") == "mode match / mode"
    expect(page.locator(".smnb-status")).to_contain_text("match / mode")
    expect(page.locator(".smnb-app select").nth(1)).to_have_value("mode")
    # the table's rows show the new skies, written in place (the same row elements)
    row_handle = page.locator(".smnb-table-grid tbody tr[data-name='e4_wfc2']").element_handle()
    shown_sky = cell(page, "e4_wfc2", "sky").inner_text()
    assert kernel(page, "app.params = {'skystat': 'median'}\n"
                        "print(app.result.attrs['skystat'])") == "median"
    sky_text = kernel(page, "import csv, io\n"
                            "rows = {r['name']: r for r in csv.DictReader(io.StringIO(app.table.to_csv()))}\n"
                            "print(rows['e4_wfc2']['sky'])")
    assert sky_text != shown_sky  # the new statistic moved this image's sky
    expect(cell(page, "e4_wfc2", "sky")).to_have_text(sky_text)
    assert page.evaluate("(tr) => tr.isConnected", row_handle)  # updated in place, not rebuilt
    kernel(page, "app.params = {'skystat': 'mode'}")
    expect(page.locator(".smnb-status")).to_contain_text("match / mode")
    assert kernel(page, "app.groups = {n: n.split('_')[1] for n in coll.names}  # by detector\n"
                        "print(sorted(map(str, set(app.result.group.values))), app.result.sky.values[0] == "
                        "app.result.sky.values[2])") == "['wfc1', 'wfc2'] True"
    expect(page.locator(".smnb-groups-chip")).to_have_count(2)
    expect(cell(page, "e2_wfc1", "group")).to_have_text("wfc1")

    # a tooltip on screen follows a re-solve
    kernel(page, "app.groups = {n: n.split('_')[0] for n in coll.names}; "
                 "app.params = {'skystat': 'median', 'skymethod': 'match'}")
    expect(page.locator(".smnb-status")).to_contain_text("match / median")
    shapes.nth(7).hover()
    tooltip = page.locator(".smnb-map-tooltip")
    expect(tooltip).to_be_visible()
    expect(tooltip).to_contain_text("e4_wfc2")
    shown = tooltip.inner_text()
    kernel(page, "app.params = {'skymethod': 'global+match'}")
    expect(tooltip).to_be_visible()
    expect(tooltip).not_to_have_text(shown)  # the new sky, without moving the mouse
    sky = kernel(page, "print(f\"{app.result.sky.sel(image='e4_wfc2').item():.4g}\")")
    expect(tooltip).to_contain_text(sky)

    # Python -> JS: set the selection from the kernel
    kernel(page, "app.selected = ['e2_wfc1']")
    expect(shapes.nth(2)).to_have_class(re.compile(r"\bsmnb-map-selected\b"))
    expect(shapes.nth(7)).not_to_have_class(re.compile(r"\bsmnb-map-selected\b"))

    page.mouse.move(5, 5)
    page.set_viewport_size({"width": 1400, "height": 2400})  # the whole app in view
    app_output.first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    app_output.first.screenshot(path=str(screenshots / "lab_app_light.png"))
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "false", timeout=30_000)
    page.wait_for_timeout(500)
    # bqplot cannot read CSS variables: its points take the dark page's colour from Python
    expect(page.locator(".smnb-app .bqplot .dot").first).to_have_css("fill", "rgb(86, 180, 233)")
    # the plots' titles and axis labels in the page's text colour, not bqplot's dark orange
    text = page.evaluate("""() => {
      const probe = document.createElement('span');
      probe.style.color = 'var(--jp-content-font-color1)';
      document.querySelector('.smnb-app').appendChild(probe);
      const page = getComputedStyle(probe).color;
      probe.remove();
      const labels = [...document.querySelectorAll(
        '.smnb-app .bqplot .mainheading, .smnb-app .bqplot .axislabel')].map(e => getComputedStyle(e).fill);
      const legend = getComputedStyle(document.querySelector('.smnb-app-legend')).color;
      return {page, labels, legend};
    }""")
    assert text["page"] != "rgb(255, 165, 0)" and len(text["labels"]) >= 5
    assert set(text["labels"]) == {text["page"]} and text["legend"] == text["page"], text
    app_output.first.screenshot(path=str(screenshots / "lab_app_dark.png"))
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")


def app_notebook(mosaic: str, app: str) -> dict:
    """A notebook of one cell: ``mosaic`` (a `make_mosaic` call) in a collection, shown in an app."""
    source = ("from skymatch_nb_ui import ImageCollection\n"
              "from skymatch_nb_ui.testing import make_mosaic\n"
              "from skymatch_nb_ui.widgets import SkyMatchApp\n"
              f"m = {mosaic}\n"
              "coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)\n"
              f"app = SkyMatchApp(coll, {app})\n"
              "app")
    return {
        "cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                   "source": source}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


SCALE_NOTEBOOK = app_notebook("make_mosaic((40, 50), shape=(16, 16), noise=1.0, seed=3)",
                              "skymethod='match', skystat='mean'")

# a statistic slowed down in the kernel, so that a solve lasts long enough to be cancelled
SLOW_STATISTIC = """
import time
from skymatch_nb_ui.engine import measure
_real_statistic = measure.sky_statistic
def _slow_statistic(*args, **kwargs):
    time.sleep(0.003)
    return _real_statistic(*args, **kwargs)
measure.sky_statistic = _slow_statistic
"""


def test_two_thousand_images_app_progress_and_cancel(page: Page, lab_server, screenshots):
    """Issue 12 item 5: the app with 2,000 images: canvas map, picking and hover reach the
    kernel, a long solve from the page shows its progress and Cancel stops it."""
    _, _, root = lab_server
    (root / "scale_app.ipynb").write_text(json.dumps(SCALE_NOTEBOOK))
    open_notebook(page, lab_server, "scale_app.ipynb")
    page.set_viewport_size({"width": 1400, "height": 2200})
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    surface = page.locator(".smnb-map-surface[data-renderer='canvas']")
    expect(surface).to_have_count(1, timeout=180_000)
    expect(page.locator(".smnb-status")).to_contain_text("solved in", timeout=120_000)
    expect(page.locator(".smnb-status")).to_contain_text("2000 images valid")
    assert page.locator(".smnb-map-shape").count() == 0  # no element per footprint
    rows = page.locator(".smnb-table-grid tbody tr[data-name]")
    assert 10 < rows.count() < 150  # a window of the 2,000 rows

    # picking on the canvas reaches the kernel; the tooltip is the kernel's text
    page.wait_for_timeout(300)
    k, j = 1234, 777
    centre = json.loads(kernel(page, f"import json; print(json.dumps(app.map.centers[{k}]))"))
    page.mouse.click(*map_point(page, centre))
    name = json.loads(kernel(page, f"print(json.dumps(coll.names[{k}]))"))
    kernel_until(page, "print(app.selected)", f"['{name}']")
    centre = json.loads(kernel(page, f"print(json.dumps(app.map.centers[{j}]))"))
    page.mouse.move(*map_point(page, centre))
    tooltip = page.locator(".smnb-map-tooltip")
    expect(tooltip).to_be_visible()
    assert tooltip.inner_text() == json.loads(kernel(page, f"print(json.dumps(app.map.tooltips[{j}]))"))
    page.mouse.move(5, 5)
    app_output = page.locator(".jp-OutputArea-output").filter(has=page.locator(".smnb-map"))
    app_output.first.screenshot(path=str(screenshots / "lab_app_2000_light.png"))

    # a long solve started in the page: progress, then Cancel; the views keep the last result
    kernel(page, SLOW_STATISTIC)
    hooks = kernel(page, "print(sorted(app._hooks))")
    skystat = page.locator(".smnb-app .widget-dropdown").filter(has_text="skystat").locator("select")
    skystat.select_option("median")
    cancel = page.locator(".smnb-app-cancel")
    expect(cancel).to_be_visible(timeout=30_000)
    if hooks == "['cancel', 'progress']":  # the engine reports progress (SkyMatcher.run's hook)
        expect(page.locator(".smnb-status")).to_contain_text("solving… statistics", timeout=30_000)
        expect(page.locator(".smnb-app-progress")).to_be_visible()
    cancel.click()
    expect(page.locator(".smnb-status")).to_contain_text("cancelled: the views show the last result")
    expect(cancel).to_be_hidden()
    expect(skystat).to_have_value("mean")  # the control went back with the parameters
    assert kernel(page, "print(app.result.attrs['skystat'], app.params['skystat'], app._running)") == \
        "mean mean None"
    kernel(page, "measure.sky_statistic = _real_statistic")
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "false", timeout=30_000)
    page.wait_for_timeout(500)
    app_output.first.screenshot(path=str(screenshots / "lab_app_2000_dark.png"))
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")


CONTROL_NOTEBOOK = app_notebook("make_mosaic((2, 3), sky=[100, 120, 105, 110, 105, 115])",
                                "skymethod='global+match', skystat='mean'")

# every solve of the app recorded (its skymethod) and made to last 0.2 s: changes made while one
# runs arrive during it
RECORD_SOLVES = """
import time
runs, _real_skymatch = [], coll.skymatch
def _recorded(**params):
    runs.append(params['skymethod'])
    time.sleep(0.2)
    return _real_skymatch(**params)
coll.skymatch = _recorded
"""

TABLE_SKY = ("import csv, io\n"
             "print({r['name']: r['sky'] for r in csv.DictReader(io.StringIO(app.table.to_csv()))}"
             "['img01'])")


def test_a_control_change_shows_the_new_result_and_keyboard_stepping_ends_on_the_last_value(
        page: Page, lab_server):
    """A change made with a control solves at once (no debounce) and every view shows it;
    stepping through the choices with the keyboard, faster than the solves, ends with the
    last value chosen solved once and shown, the control still focused (JupyterLab's
    notebook shortcuts do not take its arrow keys or letters)."""
    _, _, root = lab_server
    (root / "control_app.ipynb").write_text(json.dumps(CONTROL_NOTEBOOK))
    open_notebook(page, lab_server, "control_app.ipynb")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    status = page.locator(".smnb-app .smnb-status")
    expect(status).to_contain_text("global+match / mean: solved in", timeout=120_000)
    expect(page.locator(".smnb-table-grid tbody tr[data-name]")).to_have_count(6)
    kernel(page, RECORD_SOLVES)
    skymethod = page.locator(".smnb-app .widget-dropdown").filter(has_text="skymethod").locator("select")
    sky01 = cell(page, "img01", "sky")

    # one change with the mouse: one solve, and the views show it
    skymethod.select_option("match")
    expect(status).to_contain_text("match / mean: solved in", timeout=30_000)
    kernel_until(page, "print(runs, app.result.attrs['skymethod'])", "['match'] match")
    expect(sky01).to_have_text(kernel(page, TABLE_SKY))
    assert float(kernel(page, TABLE_SKY)) == 20.0  # img01: 20 above img00

    # the keyboard: match -> global -> local, the second key pressed while the first solve runs
    skymethod.focus()
    cells = page.locator(".jp-Notebook .jp-Cell")
    active_cell = "cells => cells.findIndex(c => c.classList.contains('jp-mod-active'))"
    active = cells.evaluate_all(active_cell)
    for _ in range(2):
        page.keyboard.press("ArrowUp")
    expect(skymethod).to_have_value("local")
    kernel_until(page, "print(app.result.attrs['skymethod'], app.params['skymethod'], app._solves.busy)",
                 "local local False")
    burst = json.loads(kernel(page, "import json; print(json.dumps(runs[1:]))"))
    assert burst[-1] == "local" and burst.count("local") == 1 and set(burst) <= {"global", "local"}
    expect(status).to_contain_text("local / mean: solved in")
    expect(sky01).to_have_text(kernel(page, TABLE_SKY))
    assert float(kernel(page, TABLE_SKY)) == 120.0  # local: each image's own sky
    expect(skymethod).to_be_focused()  # the views' updates did not take the focus away
    # a value's first letter picks it ("m": match), and is not the notebook's shortcut (a cell
    # to Markdown)
    page.keyboard.press("m")
    expect(status).to_contain_text("match / mean: solved in", timeout=30_000)
    kernel_until(page, "print(runs[-1], app.result.attrs['skymethod'])", "match match")
    assert cells.evaluate_all(active_cell) == active
    expect(page.locator(".jp-Notebook .jp-Cell.jp-MarkdownCell")).to_have_count(0)
    # the map's own menu too
    color_by = page.locator(".smnb-app .smnb-map-colorby")
    first = color_by.input_value()
    color_by.focus()
    page.keyboard.press("ArrowDown")
    expect(color_by).not_to_have_value(first)
    kernel_until(page, "print(app.map.color_by)", color_by.input_value())
    kernel(page, "coll.skymatch = _real_skymatch")
