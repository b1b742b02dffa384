"""Benchmark: the front end's share of a solve-only change (the map and the table, in chromium).

Renders a FootprintMap and a ResultsTable of N images (a synthetic grid) alone in a blank
chromium page with an in-page model, then applies what a re-solve sends (the traitlets that
change between a ``local`` and a ``global`` result) and times it until drawn (two animation
frames).  The GroupEditor of the same images, in groups of 8 (a NIRCam exposure's short-wave
detectors) and of 1 (every file its own exposure), gets what a click in the map sends instead:
a new selection.  The kernel's share is in ``bench_app.py``; JupyterLab's own layout and paint
come on top of both.  Needs Debian's chromium (``/usr/bin/chromium``) and Playwright.

Usage::

    python bench/bench_app_frontend.py --sizes 1000,10000
    python bench/bench_app_frontend.py --sizes 10000 --overlaps
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the page's state

from _page_state import REVIVE_JS, page_state

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.testing import make_mosaic
from skymatch_nb_ui.widgets import FootprintMap, GroupEditor, ResultsTable

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]

#: In the page: binary buffers back as DataViews, a model with get/set/on/off, the widget.
MOUNT = """async ([esm, raw]) => {
  """ + REVIVE_JS + """
  window.__revive = revive;
  class Model {
    constructor(s) { this.s = s; this.h = {}; }
    get(k) { return this.s[k]; }
    set(k, v) { this.s[k] = v; (this.h['change:' + k] || []).forEach((f) => f()); }
    on(e, f) { (this.h[e] = this.h[e] || []).push(f); }
    off(e, f) { this.h[e] = (this.h[e] || []).filter((g) => g !== f); }
    save_changes() {}
    send() {}
  }
  const widget = (await import(URL.createObjectURL(new Blob([esm], {type: 'text/javascript'})))).default;
  window.__model = new Model(revive(raw));
  const el = document.createElement('div');
  document.body.append(el);
  await widget.render({model: window.__model, el});
}"""

APPLY = """async (raw) => {
  const t0 = performance.now();
  for (const [k, v] of Object.entries(raw)) window.__model.set(k, window.__revive(v));
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  return performance.now() - t0;
}"""


def main(argv=None) -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--overlaps", action="store_true", help="draw the overlap lines too")
    args = parser.parse_args(argv)
    print(f"load: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        for n in (int(s) for s in args.sizes.split(",")):
            rows = int(n ** 0.5)
            while n % rows:
                rows -= 1
            mosaic = make_mosaic((rows, n // rows), shape=(8, 8), noise=1.0, seed=1)
            coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=mosaic.names)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                before = coll.skymatch(skymethod="local", skystat="mean")
                after = coll.skymatch(skymethod="global", skystat="mean")
            for widget in (FootprintMap(coll, before, show_overlaps=args.overlaps),
                           ResultsTable(coll, before)):
                first = page_state(widget)
                widget.update(after)
                changed = {k: v for k, v in page_state(widget).items()
                           if json.dumps(v) != json.dumps(first[k])}
                page = browser.new_page(viewport={"width": 1200, "height": 800})
                page.set_content(f"<style>{widget._css}</style>")
                start = time.perf_counter()
                page.evaluate(MOUNT, [widget._esm, first])
                mounted = time.perf_counter() - start
                times = []
                for k in range(args.repeat):
                    times.append(page.evaluate(APPLY, changed if k % 2 == 0 else
                                               {key: first[key] for key in changed}))
                print(f"{type(widget).__name__:>13} {n:>6} images: mounted in {mounted:.2f} s; a re-solve "
                      f"drawn in {statistics.median(times):.0f} ms (min {min(times):.0f}, "
                      f"max {max(times):.0f}); traitlets {sorted(changed)}")
                page.close()
            for size in (8, 1):  # groups of a NIRCam exposure's 8 detectors, or of one file
                for k in range(0, n, size):
                    coll.set_group(mosaic.names[k:k + size], f"jw01234001001_02101_{k // size:05d}")
                editor = GroupEditor(coll)
                page = browser.new_page(viewport={"width": 1200, "height": 800})
                page.set_content(f"<style>{editor._css}</style>")
                start = time.perf_counter()
                page.evaluate(MOUNT, [editor._esm, page_state(editor)])
                mounted = time.perf_counter() - start
                elements = page.evaluate("document.querySelectorAll('*').length")
                times = [page.evaluate(APPLY, {"selected": [mosaic.names[(37 * k) % n]]})
                         for k in range(args.repeat)]
                print(f"{'GroupEditor':>13} {n:>6} images in {n // size} groups: mounted in "
                      f"{mounted:.2f} s ({elements} elements); a selection drawn in "
                      f"{statistics.median(times):.0f} ms (min {min(times):.0f}, max {max(times):.0f})")
                page.close()
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
