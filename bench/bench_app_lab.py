"""Benchmark: a solve-only change of the app to updated views, end to end in JupyterLab.

Starts a throw-away JupyterLab server per checkout, opens a notebook that builds a
``SkyMatchApp`` of N images (a synthetic grid, 16x16 pixels: a solve-only change does not read
pixels) in Debian's chromium, then times, in the page, a Python assignment that needs only a new
solve (``app.params = {"skymethod": ...}``, match and global+match alternating), sent to the
kernel as a cell would be: from the execute request to the page showing the new result
everywhere -- the status line says "solved" again, the results table shows the new sky of its
first row, every widget message of the change has been handled (the kernel's reply and idle
status received), and the next frame has run its animation callbacks (bqplot's transitions),
style, layout and paint (``requestAnimationFrame`` then a task).  Also reported:
when the kernel's reply arrived, and (``--ui``) the same change made with the ``skymethod``
control (solved at once since h15-app; main before it debounced by 150 ms).

``--compare PATH`` measures another checkout (e.g. ``/work/main``; or this one with
``--compare-setup CODE``: e.g. another renderer) side by side: one server and page each, the
changes taking turns so that both see the same machine load.  ``--trace FILE`` records a Chrome
trace (CDP) of one change of this checkout and prints where the main thread's time went
(style, layout, paint, scripts); ``--profile FILE`` samples the page's JavaScript over one change
(CDP Profiler) and prints the functions that took the time; ``--setup CODE`` runs Python in the
kernel first (e.g. to switch a part off and see what it costs).
Needs Debian's chromium (``/usr/bin/chromium``) and Playwright.

Usage::

    python bench/bench_app_lab.py --sizes 1000 --repeat 9 --compare /work/main
    python bench/bench_app_lab.py --sizes 10000 --repeat 5
    python bench/bench_app_lab.py --sizes 1000 --repeat 3 --trace /tmp/trace.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))  # this checkout's helpers

from skymatch_nb_ui.testing.lab import jupyterlab_server  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


def notebook(n: int, shape: int) -> dict:
    rows = int(n ** 0.5)
    while n % rows:
        rows -= 1
    source = (
        "from skymatch_nb_ui import ImageCollection\n"
        "from skymatch_nb_ui.testing import make_mosaic\n"
        "from skymatch_nb_ui.widgets import SkyMatchApp\n"
        f"m = make_mosaic(({rows}, {n // rows}), shape=({shape}, {shape}), noise=1.0, seed=1)\n"
        "coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)\n"
        "app = SkyMatchApp(coll, skymethod='global+match', skystat='mean')\n"
        "app.params = {'skymethod': 'match'}; app.params = {'skymethod': 'global+match'}  # both cached\n"
        "app")
    cell = {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": source}
    return {"cells": [cell], "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}


@contextlib.contextmanager
def lab_server(root: Path, checkout: Path):
    """A JupyterLab server whose kernels import ``checkout``; yields (base, token)."""
    with jupyterlab_server(root, root / "home", env={"PYTHONPATH": str(checkout)}) as server:
        yield server


#: In the page: run ``code`` in the kernel (or choose in the skymethod control) and time until the
#: views show the result (see the module's docstring).
MEASURE = """async ([code, expected, ui, value]) => {
  const app = document.querySelector('.smnb-app');
  const status = app.querySelector('.smnb-status').closest('.widget-html');
  const firstSky = () => app.querySelector(
    '.smnb-table-grid tbody tr[data-name] td.smnb-table-col-sky')?.textContent;
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  let tStatus = NaN, tTable = NaN, tReply = NaN, idle = false, finished;
  const over = new Promise((done) => { finished = done; });
  const check = () => {  // on every change of the app's DOM and at the kernel's reply
    const now = performance.now();
    if (Number.isNaN(tStatus) && status.textContent.includes('solved in')) tStatus = now;
    if (Number.isNaN(tTable) && (expected === null || firstSky() === expected)) tTable = now;
    if (idle && !Number.isNaN(tStatus) && !Number.isNaN(tTable)) finished();
  };
  const statusObserver = new MutationObserver(() => {  // "solving…" first: the old text is stale
    if (!status.textContent.includes('solved in')) tStatus = NaN;
    check();
  });
  statusObserver.observe(status, {childList: true, subtree: true, characterData: true});
  const observer = new MutationObserver(check);
  observer.observe(app, {childList: true, subtree: true, characterData: true});
  const timeout = setTimeout(finished, 60000);
  const t0 = performance.now();
  if (ui) {  // the first control: skymethod; the kernel's reply does not apply
    const select = app.querySelector('select');
    select.value = value;
    select.dispatchEvent(new Event('change', {bubbles: true}));
    idle = true;
  } else {
    const future = kernel.requestExecute({code, silent: false, store_history: false});
    future.done.then(() => { tReply = performance.now(); idle = true; check(); });
  }
  await over;
  clearTimeout(timeout);
  statusObserver.disconnect();
  observer.disconnect();
  // drawn: the next frame's animation callbacks (bqplot's transitions), style, layout and paint
  await new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));
  const t1 = performance.now();
  return {total: t1 - t0, reply: tReply - t0, status: tStatus - t0, table: tTable - t0, sky: firstSky()};
}"""

EXECUTE = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  await kernel.requestExecute({code, store_history: false}).done;
}"""

#: The solve-only change: skymethod between these (both statistics computed when built).
CHOICES = {False: "match", True: "global+match"}

STATE = ("() => document.querySelector("
         "'.smnb-app .smnb-table-grid tbody tr[data-name] td.smnb-table-col-sky')?.textContent")


class Page:
    """One checkout's server, notebook and page."""

    def __init__(self, browser, stack: contextlib.ExitStack, checkout: Path, n: int, shape: int,
                 setup: str = ""):
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_app_lab_")))
        (root / "app.ipynb").write_text(json.dumps(notebook(n, shape)))
        base, token = stack.enter_context(lab_server(root, checkout))
        self.page = browser.new_page(viewport={"width": 1400, "height": 1100})
        self.page.set_default_timeout(600_000)
        self.page.goto(f"{base}/lab/tree/app.ipynb?token={token}&reset")
        self.page.wait_for_function(
            "window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel"
            "?.connectionStatus === 'connected'", timeout=120_000)
        self.page.wait_for_timeout(1000)
        start = time.perf_counter()
        self.page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        self.page.wait_for_selector(".smnb-app .smnb-table-grid tbody tr[data-name]", timeout=600_000)
        self.page.wait_for_function(
            "document.querySelector('.smnb-app .smnb-status')?.textContent.includes('solved in')")
        self.page.wait_for_timeout(2000)
        self.built = time.perf_counter() - start
        if setup:
            self.page.evaluate(EXECUTE, setup)
        self.sky = {}  # the first row's sky text per state
        self.state = True
        for value in (False, True):
            self.change(value, None)
            self.page.wait_for_timeout(500)
            self.sky[value] = self.page.evaluate(STATE)

    def change(self, value: bool, expected, ui: bool = False) -> dict:
        code = f"app.params = {{'skymethod': {CHOICES[value]!r}}}"
        out = self.page.evaluate(MEASURE, [code, expected, ui, CHOICES[value]])
        self.state = value
        return out

    def next_change(self, ui: bool = False) -> dict:
        value = not self.state
        return self.change(value, self.sky[value], ui)


#: Main-thread events a trace summary lists (those over 3 ms, in time order).
LISTED = ("UpdateLayoutTree", "Layout", "PrePaint", "Paint", "Layerize", "FunctionCall",
          "RunMicrotasks", "FireAnimationFrame", "EventDispatch")


def summarize_trace(path: Path) -> None:
    """Print the renderer main thread's long events in time order (style, layout, scripts)."""
    events = json.loads(path.read_text())["traceEvents"]
    main = {(e["pid"], e["tid"]) for e in events if e.get("name") == "thread_name"
            and e.get("args", {}).get("name") == "CrRendererMain"}
    spans = sorted((e for e in events if (e.get("pid"), e.get("tid")) in main
                    and e.get("ph") == "X" and "dur" in e), key=lambda e: e["ts"])
    if not spans:
        print("no main-thread events in the trace")
        return
    t0 = spans[0]["ts"]
    for e in spans:
        if e["dur"] < 3000 or e["name"] not in LISTED:
            continue
        data = e.get("args", {}).get("data", {})
        what = {k: data[k] for k in ("functionName", "elementCount") if data.get(k)}
        if data.get("url"):
            what["url"] = data["url"].rsplit("/", 1)[-1][:24]
        print(f"  at {(e['ts'] - t0) / 1e3:7.1f} ms {e['dur'] / 1e3:6.1f} ms {e['name']} {what or ''}")


def _frame_name(frame: dict) -> str:
    url = frame["url"].rsplit("/", 1)[-1][:40]
    return f"{frame['functionName'] or '(anon)'} {url}:{frame['lineNumber']}"


#: What a trace records (invalidation tracking: which change made the browser restyle what).
TRACE_CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "v8.execute",
                    "blink.user_timing", "toplevel",
                    "disabled-by-default-devtools.timeline.invalidationTracking",
                    "disabled-by-default-devtools.timeline.stack"]


def trace(page: Page, path: Path) -> None:
    """Record a Chrome trace (CDP) of one change into ``path`` and summarise it."""
    cdp = page.page.context.new_cdp_session(page.page)
    chunks, done = [], []
    cdp.on("Tracing.dataCollected", lambda event: chunks.extend(event["value"]))
    cdp.on("Tracing.tracingComplete", lambda event: done.append(1))
    cdp.send("Tracing.start", {"traceConfig": {"includedCategories": TRACE_CATEGORIES},
                               "transferMode": "ReportEvents"})
    out = page.next_change()
    cdp.send("Tracing.end")
    while not done:
        page.page.wait_for_timeout(100)
    path.write_text(json.dumps({"traceEvents": chunks}))  # loads in DevTools (Performance)
    print(f"traced change: {out['total']:.0f} ms -> {path}")
    summarize_trace(path)


def profile(page: Page, path: Path, top: int = 30) -> None:
    """Print the JavaScript functions that took the main thread's time in one change."""
    cdp = page.page.context.new_cdp_session(page.page)
    cdp.send("Profiler.enable")
    cdp.send("Profiler.setSamplingInterval", {"interval": 200})
    cdp.send("Profiler.start")
    out = page.next_change()
    recorded = cdp.send("Profiler.stop")["profile"]
    path.write_text(json.dumps(recorded))  # loads in the browser's DevTools (Performance)
    nodes = recorded["nodes"]
    print(f"profiled change: {out['total']:.0f} ms")
    by_id = {node["id"]: node for node in nodes}
    parent = {child: node["id"] for node in nodes for child in node.get("children", ())}
    self_hits = collections.Counter()
    total_hits = collections.Counter()
    for node in nodes:
        frame = node["callFrame"]
        self_hits[_frame_name(frame)] += node.get("hitCount", 0)
        seen, at = set(), node["id"]
        while at is not None:  # inclusive: every distinct ancestor frame
            key = _frame_name(by_id[at]["callFrame"])
            if key not in seen:
                seen.add(key)
                total_hits[key] += node.get("hitCount", 0)
            at = parent.get(at)
    ms = 0.2
    print("self ms:")
    for name, hits in self_hits.most_common(top):
        print(f"  {hits * ms:8.1f}  {name}")
    print("inclusive ms:")
    for name, hits in total_hits.most_common(top):
        print(f"  {hits * ms:8.1f}  {name}")


def main(argv=None) -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--shape", type=int, default=16)
    parser.add_argument("--compare", default="", help="another checkout to measure side by side")
    parser.add_argument("--ui", action="store_true", help="also time the skymethod control")
    parser.add_argument("--trace", default="", help="record a Chrome trace of one change here")
    parser.add_argument("--profile", default="", help="profile one change here (CDP) into this file")
    parser.add_argument("--setup", default="", help="Python to run in this kernel before timing")
    parser.add_argument("--compare-setup", default="", help="Python to run in the other kernel")
    args = parser.parse_args(argv)
    roots = {"this": HERE} | ({"compare": Path(args.compare).resolve()} if args.compare else {})
    kinds = ["python"] + (["ui"] if args.ui else [])
    print(f"load: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min)")
    with sync_playwright() as p, contextlib.ExitStack() as stack:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        stack.callback(browser.close)
        for n in (int(s) for s in args.sizes.split(",")):
            setups = {"this": args.setup, "compare": args.compare_setup}
            pages = {name: Page(browser, stack, root, n, args.shape, setups[name])
                     for name, root in roots.items()}
            for name, page in pages.items():
                print(f"{name}: {roots[name]}: N={n} built and shown in {page.built:.1f} s")
            times = {(name, kind): [] for name in roots for kind in kinds}
            for _ in range(args.repeat):
                for name, page in pages.items():  # the checkouts take turns
                    for kind in kinds:
                        times[name, kind].append(page.next_change(ui=kind == "ui"))
            for (name, kind), runs in times.items():
                total = [r["total"] for r in runs]
                reply = [r["reply"] for r in runs if r["reply"] == r["reply"]]
                table = [r["table"] for r in runs]
                print(f"{name:>8} N={n:>6} {kind:>6}: updated views in {statistics.median(total):6.0f} ms "
                      f"(min {min(total):.0f}, max {max(total):.0f}); table shows it at "
                      f"{statistics.median(table):.0f} ms" + (
                          f"; kernel reply at {statistics.median(reply):.0f} ms" if reply else ""))
            if args.trace:
                trace(pages["this"], Path(args.trace))
            if args.profile:
                profile(pages["this"], Path(args.profile))
            for page in pages.values():
                page.page.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
