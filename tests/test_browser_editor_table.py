"""GroupEditor and ResultsTable in real chromium, without Jupyter.

Each widget's ``_esm``/``_css`` is loaded into a blank page with a tiny in-page model that
stands in for anywidget's; the model is bridged to the real Python widget, so that
``save_changes()`` sets the Python traitlets and ``send()`` reaches the widget's message
handler, and Python's resulting state flows back, as a kernel would do.  Screenshots on light
and dark backgrounds go to test-results/ (look at them after a change of the CSS).
"""

import re
import time
from pathlib import Path

import numpy as np
import pytest
from _page_state import REVIVE_JS, page_state

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.testing import make_mosaic
from skymatch_nb_ui.widgets import GroupEditor, ResultsTable

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

RESULTS = Path(__file__).resolve().parents[1] / "test-results"

#: JupyterLab's dark theme, the variables the widgets use.
DARK = {
    "--jp-layout-color0": "#111111", "--jp-layout-color1": "#212121", "--jp-layout-color2": "#424242",
    "--jp-layout-color3": "#616161", "--jp-ui-font-color0": "rgba(255,255,255,1)",
    "--jp-ui-font-color1": "rgba(255,255,255,0.87)", "--jp-ui-font-color2": "rgba(255,255,255,0.54)",
    "--jp-ui-font-color3": "rgba(255,255,255,0.38)", "--jp-border-color0": "#616161",
    "--jp-border-color1": "#616161", "--jp-border-color2": "#424242", "--jp-border-color3": "#212121",
    "--jp-brand-color1": "#1976d2", "--jp-error-color1": "#d32f2f", "--jp-warn-color0": "#ef6c00",
    "--jp-warn-color1": "#f57c00",
}

MOUNT_JS = """async ([esm, raw]) => {
  """ + REVIVE_JS + """
  const state = revive(raw);
  const sent = Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, JSON.stringify(v)]));
  class Model {
    constructor(state) { this.state = state; this.handlers = new Map(); this.dirty = new Set(); }
    get(key) { return this.state[key]; }
    set(key, value) { this.state[key] = value; this.dirty.add(key); this.emit(key); }
    emit(key) { for (const cb of this.handlers.get(`change:${key}`) ?? []) cb(); }
    on(event, cb) { this.handlers.set(event, [...(this.handlers.get(event) ?? []), cb]); }
    off(event, cb) { this.handlers.set(event, (this.handlers.get(event) ?? []).filter((h) => h !== cb)); }
    save_changes() {
      const changes = Object.fromEntries([...this.dirty].map((k) => [k, this.state[k]]));
      this.dirty.clear();
      return window.pyBridge({ save: changes }).then(window.__apply);
    }
    send(message) { return window.pyBridge({ message }).then(window.__apply); }
  }
  const model = new Model(state);
  // the state Python sends back: only what changed is applied, as a comm update would be
  window.__apply = (raw) => {
    for (const [key, value] of Object.entries(raw)) {
      const text = JSON.stringify(value);
      if (sent[key] !== text) { sent[key] = text; model.state[key] = revive(value); model.emit(key); }
    }
  };
  window.__model = model;
  const widget = (await import(URL.createObjectURL(new Blob([esm], { type: "text/javascript" })))).default;
  const el = document.createElement("div");
  el.id = "root";
  document.body.append(el);
  await widget.render({ model, el });
}"""


def state(widget) -> dict:
    """The widget's own synced traitlets, JSON-safe (not anywidget's or ipywidgets' plumbing)."""
    return page_state(widget)


def mount(page, widget):
    """Render ``widget``'s front end in ``page``, bridged to the Python object."""
    def bridge(request):
        if "save" in request:
            for key, value in request["save"].items():
                setattr(widget, key, value)
        else:
            widget._on_message(widget, request["message"], [])
        return state(widget)

    RESULTS.mkdir(exist_ok=True)
    page.expose_function("pyBridge", bridge)
    page.set_content(f"<!doctype html><html><head><style>{widget._css}</style></head>"
                     "<body style='margin:12px;width:860px'></body></html>")
    page.evaluate(MOUNT_JS, [widget._esm, state(widget)])


def push(page, widget):
    """Send Python-side changes to the page, as the kernel would."""
    page.evaluate("(s) => window.__apply(s)", state(widget))


def screenshots(page, name):
    """The widget on a light page (no JupyterLab variables: the fallbacks), then dark."""
    page.locator("#root").screenshot(path=str(RESULTS / f"{name}-light.png"))
    page.evaluate("""(vars) => {
        for (const [k, v] of Object.entries(vars)) document.body.style.setProperty(k, v);
        document.body.style.background = 'var(--jp-layout-color0)';
        document.body.style.color = 'var(--jp-ui-font-color1)';
    }""", DARK)
    page.locator("#root").screenshot(path=str(RESULTS / f"{name}-dark.png"))
    return page.eval_on_selector("#root > *", "e => getComputedStyle(e).color")


@pytest.fixture
def harness_page(browser):
    """A blank page; JavaScript errors in it fail the test."""
    context = browser.new_context(viewport={"width": 900, "height": 700}, accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()
    assert not errors, errors


META = [{"exposure": e, "detector": d} for e, d in
        [("e1", "d1"), ("e2", "d1"), ("e1", "d2"), ("e2", "d2"), ("e3", "d1"), ("e3", "d2")]]


@pytest.fixture
def coll():
    """A 2x2 mosaic (two exposures of two detectors) and a far pair overlapping only each other."""
    m = make_mosaic((2, 2), sky=[100, 120.25, 105, 105], dtype=np.float64) + make_mosaic(
        (1, 2), sky=[90, 93], center=(151.0, 2.0), prefix="far", dtype=np.float64)
    return ImageCollection.from_arrays(m.images, m.wcs, names=m.names, meta=META)


def test_group_editor_in_chromium(harness_page, coll):
    page = harness_page
    t0 = time.perf_counter()
    editor = GroupEditor(coll)
    mount(page, editor)
    chips = page.locator("#root .smnb-groups-chip")
    expect(chips).to_have_count(0)
    expect(page.locator("#root .smnb-groups-member")).to_have_count(6)

    page.get_by_role("button", name="By exposure").click()  # preset, applied by Python
    expect(chips).to_have_count(3)
    assert coll.groups == dict(zip(coll.names, ["e1", "e2", "e1", "e2", "e3", "e3"]))
    expect(page.get_by_role("button", name="By exposure")).to_have_attribute("aria-pressed", "true")
    warning = page.locator("#root .smnb-groups-warning")
    expect(warning).to_have_text("⚠ Group “e3” overlaps no image outside it: its sky cannot be matched "
                                 "to the others.")  # the far pair is one exposure

    page.locator('#root .smnb-groups-member[data-name="img00"]').click()
    page.locator('#root .smnb-groups-member[data-name="img01"]').click()
    expect(page.locator("#root .smnb-groups-count")).to_have_text("2 selected")
    assert editor.selected == ["img00", "img01"]
    page.locator("#root").screenshot(path=str(RESULTS / "group-editor-selecting-light.png"))

    name = page.get_by_label("Group name for the selected images")
    name.fill("top")
    name.press("Enter")  # the keyboard path
    expect(page.locator('#root .smnb-groups-chip[data-label="top"]')).to_be_visible()
    expect(name).to_have_value("")
    assert editor.members("top") == ["img00", "img01"] and coll.groups["img00"] == "top"

    page.locator('#root .smnb-groups-chip[data-label="e3"]').click()  # selects the far pair
    assert editor.selected == ["far00", "far01"]
    name.fill("island")
    page.locator("#root .smnb-groups-assign-button").click()
    expect(warning).to_contain_text("“island” overlaps no image outside it")
    expect(page.locator('#root .smnb-groups-group[data-label="island"]')).to_have_class(
        re.compile(r"\bsmnb-groups-isolated\b"))

    name.fill("top")
    page.locator('#root .smnb-groups-rename[data-label="island"]').click()
    rename = page.locator("#root .smnb-groups-rename-input")
    expect(rename).to_be_focused()
    rename.fill("top")
    rename.press("Enter")  # refused: renaming onto an existing group does not merge
    expect(page.locator("#root .smnb-groups-error")).to_contain_text("a group named 'top' already exists")
    expect(chips).to_have_count(4)  # top, e1, e2, island
    assert editor.isolated == ["island"]

    color = screenshots(page, "group-editor")
    assert color == "rgba(255, 255, 255, 0.87)"  # the dark theme's text colour reached the widget

    page.locator("#root .smnb-groups-undo").click()
    expect(page.locator('#root .smnb-groups-chip[data-label="island"]')).to_have_count(0)
    expect(warning).to_contain_text("“e3”")
    assert coll.groups["far00"] == "e3"
    print(f"\ngroup editor in chromium: {time.perf_counter() - t0:.2f} s")


def test_results_table_in_chromium(harness_page, coll):
    page = harness_page
    t0 = time.perf_counter()
    coll.groups = {"img02": "g", "img03": "g", "far00": "island", "far01": "island"}
    with pytest.warns(Warning):
        result = coll.skymatch(skymethod="match", skystat="mean")  # the island cannot be matched
    table = ResultsTable(coll, result)
    mount(page, table)
    rows = page.locator("#root tbody tr")
    expect(rows).to_have_count(6)
    names = lambda: rows.evaluate_all("trs => trs.map(t => t.dataset.name)")
    expect(page.locator('#root tr[data-name="far00"]')).to_have_class(re.compile(r"\bsmnb-table-invalid\b"))
    far_reason = page.locator('#root tr[data-name="far00"] .smnb-table-col-reason')
    expect(far_reason).to_contain_text("no valid overlap")

    sort_sky = page.locator('#root button.smnb-table-sort[data-key="sky"]')
    sort_sky.click()
    expect(page.locator("#root th[aria-sort=ascending]")).to_have_count(1)
    assert names() == ["img00", "img02", "img03", "img01", "far00", "far01"]
    assert (table.sort_by, table.ascending) == ("sky", True)
    sort_sky.click()
    expect(page.locator("#root th[aria-sort=descending]")).to_have_count(1)
    assert names() == ["img01", "img02", "img03", "img00", "far00", "far01"]  # missing last
    assert table.ascending is False

    page.locator('#root tr[data-name="img01"] td').first.click()
    page.locator('#root tr[data-name="img03"] td').first.click(modifiers=["Shift"])
    expect(page.locator("#root tr.smnb-table-selected")).to_have_count(2)
    assert table.selected == ["img01", "img03"]
    assert page.evaluate("getSelection().toString()") == ""  # shift-click selects rows, not text

    page.locator('#root tr[data-name="img02"] td').nth(3).hover()
    expect(page.locator("#root tr.smnb-table-hovered")).to_have_count(1)
    assert table.hovered == "img02"
    page.mouse.move(880, 690)  # leave the table
    expect(page.locator("#root tr.smnb-table-hovered")).to_have_count(0)
    assert table.hovered == ""
    table.hovered = "img00"  # e.g. from the map
    push(page, table)
    expect(page.locator('#root tr[data-name="img00"]')).to_have_class(re.compile(r"\bsmnb-table-hovered\b"))

    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    assert download.value.suggested_filename == "skymatch_results.csv"
    assert Path(download.value.path()).read_text(encoding="utf-8") == table.to_csv()

    color = screenshots(page, "results-table")
    assert color == "rgba(255, 255, 255, 0.87)"

    # the numbers line up on the decimal point (real layout): every fraction of a column
    # starts at the same x, and the cells' right edges agree
    for key in ("sky", "sky_err"):
        points = page.locator(f"#root td.smnb-table-col-{key} .smnb-table-frac").evaluate_all(
            "spans => spans.map(s => [s.getBoundingClientRect().left, s.getBoundingClientRect().right])")
        assert len(points) == 6
        assert max(p[0] for p in points) - min(p[0] for p in points) < 0.5, (key, points)
        assert max(p[1] for p in points) - min(p[1] for p in points) < 0.5, (key, points)

    # 500 rows in the real browser: render, sort twice, select half (the time is printed; the
    # timings live in bench/, not in tests); then 10,000, of which only those in view are rows
    many = """(n) => {
        const texts = (list) => {
            const d = [...new Set(list)];
            return {texts: d, index: Int32Array.from(list, (t) => d.indexOf(t))};
        };
        const ids = Array.from({length: n}, (_, i) => i);
        return {count: n, name: texts(ids.map((i) => `x${i}`)), group: texts(ids.map((i) => `g${i % 9}`)),
            component: new Float64Array(n), sky: Float64Array.from(ids, (i) => (i * 7919) % 503),
            sky_err: new Float64Array(n).fill(0.1), npix: new Float64Array(n).fill(100),
            valid: Uint8Array.from(ids, (i) => (i % 50 !== 0 ? 1 : 0)),
            reason: texts(ids.map((i) => (i % 50 ? '' : 'no valid pixels')))};
    }"""
    elapsed = page.evaluate(f"""() => {{
        const m = window.__model;
        const data = ({many})(500);
        const t0 = performance.now();
        m.state.data = data; m.emit('data');
        m.state.sort_by = 'npix'; m.emit('sort_by');
        m.state.ascending = true; m.emit('ascending');
        m.state.selected = Array.from({{length: 250}}, (_, i) => `x${{i}}`); m.emit('selected');
        return performance.now() - t0;
    }}""")
    expect(rows).to_have_count(500)
    expect(page.locator("#root tr.smnb-table-selected")).to_have_count(250)
    assert names()[:3] == ["x0", "x1", "x2"]  # sorted by npix (all equal): image order
    large = page.evaluate(f"""() => {{
        const m = window.__model;
        const t0 = performance.now();
        m.state.data = ({many})(10000); m.emit('data');
        return performance.now() - t0;
    }}""")
    shown = page.locator("#root tbody tr[data-name]")
    assert 10 < shown.count() < 150  # a window of rows, not 10,000
    page.locator("#root .smnb-table-scroll").evaluate("s => { s.scrollTop = s.scrollHeight; }")
    expect(page.locator('#root tr[data-name="x9999"]')).to_have_count(1)  # the window followed
    assert 10 < shown.count() < 150
    print(f"\nresults table in chromium: {time.perf_counter() - t0:.2f} s (500 rows: {elapsed:.0f} ms, "
          f"10,000 rows: {large:.0f} ms)")
