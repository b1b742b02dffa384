"""End to end in JupyterLab: the quickstart notebook's SkyMatchApp, driven in Debian's chromium.

Kernel <-> browser both ways: a click in the map reaches ``app.selected`` in the kernel; an edit
in the group editor re-solves and the table's skies change; a new ``skymethod`` in the
controls updates the table.  Screenshots in the light and dark themes go to test-results/.
"""

import re

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


def sky_cells(page: Page) -> list[str]:
    return page.locator(".smnb-table-grid tbody td.smnb-table-col-sky").all_inner_texts()


def test_quickstart_app_round_trip(page: Page, lab_server, screenshots):
    open_notebook(page, lab_server, "01-quickstart.ipynb")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    shapes = page.locator(".smnb-map-shape")
    expect(shapes).to_have_count(12, timeout=90_000)  # one footprint per image
    rows = page.locator(".smnb-table-grid tbody tr")
    expect(rows).to_have_count(12)
    expect(page.locator(".smnb-status")).to_contain_text("solved in")
    app_output = page.locator(".jp-OutputArea-output").filter(has=page.locator(".smnb-map"))

    # JS -> Python: click a footprint, the kernel's app.selected follows
    shapes.nth(0).click()
    expect(shapes.nth(0)).to_have_class(re.compile(r"\bsmnb-map-selected\b"))
    expect(page.locator(".smnb-table-grid tbody tr.smnb-table-selected")).to_have_count(1)
    assert kernel(page, "print(app.selected)") == "['img00']"
    shapes.nth(1).click(modifiers=["Shift"])
    expect(page.locator(".smnb-table-grid tbody tr.smnb-table-selected")).to_have_count(2)
    assert kernel(page, "print(app.selected)") == "['img00', 'img01']"

    # the group editor: assign the two selected images to a new group; the skies change
    before = sky_cells(page)
    page.locator(".smnb-groups-name").fill("pair")
    page.locator(".smnb-groups-assign-button").click()
    expect(page.locator(".smnb-groups-chip").filter(has_text="pair")).to_have_count(1)
    expect(page.locator(".smnb-table-grid tbody tr[data-name='img00'] td.smnb-table-col-group")).to_have_text("pair")
    after = sky_cells(page)
    assert after != before
    assert after[0] == after[1]  # one sky for the group
    assert kernel(page, "print(app.groups['img01'], app.result.group.values[1])") == "pair pair"

    # the controls: a new skymethod re-solves and the table follows
    page.locator(".smnb-app select").first.select_option("match")
    expect(page.locator(".smnb-status")).to_contain_text("match / median", timeout=30_000)
    expect(page.locator(".smnb-table-grid tbody td.smnb-table-col-sky").filter(has_text=re.compile(r"^0(\.0+)?$"))).not_to_have_count(0)
    assert kernel(page, "print(app.params['skymethod'], app.result.attrs['skymethod'])") == "match match"

    # Python -> JS: set the selection from the kernel
    kernel(page, "app.selected = ['img05']")
    expect(shapes.nth(5)).to_have_class(re.compile(r"\bsmnb-map-selected\b"))
    expect(shapes.nth(0)).not_to_have_class(re.compile(r"\bsmnb-map-selected\b"))

    page.set_viewport_size({"width": 1400, "height": 2400})  # the whole app in view
    app_output.first.scroll_into_view_if_needed()
    app_output.first.screenshot(path=str(screenshots / "lab_app_light.png"))
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "false", timeout=30_000)
    page.wait_for_timeout(500)
    app_output.first.screenshot(path=str(screenshots / "lab_app_dark.png"))
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
