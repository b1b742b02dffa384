"""SkyMatchApp on the Python side: traitlets, linking, live re-solve, Python -> UI state."""

import asyncio
import threading
import time

import numpy as np
import pytest

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.engine import measure
from skymatch_nb_ui.testing import make_mosaic
from skymatch_nb_ui.widgets import SkyMatchApp

SKY = [100, 120, 105, 110, 105, 115]


@pytest.fixture
def app():
    m = make_mosaic((2, 3), sky=SKY)
    coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
    return SkyMatchApp(coll, skymethod="global+match", skystat="mean")


def table_skies(app):
    return {row["name"]: row["sky"] for row in app.table.rows}


def test_the_app_solves_on_construction_and_every_view_shows_it(app):
    np.testing.assert_allclose(app.result.sky.values, SKY, atol=1e-9)
    assert table_skies(app) == pytest.approx(dict(zip(app.collection.names, SKY)))
    assert len(app.map.polygons) == 6 and len(set(app.map.fill)) > 1
    assert "solved in" in app.status and "6 of 6 images valid" in app.status


def test_setting_params_from_python_re_solves_and_moves_the_controls(app):
    app.params = {"skymethod": "match"}
    assert app.params["skystat"] == "mean"  # a partial assignment keeps the rest
    np.testing.assert_allclose(app.result.sky.values, np.array(SKY) - 100, atol=1e-9)
    assert app._controls["skymethod"].value == "match"
    assert table_skies(app)["img01"] == pytest.approx(20.0)
    with pytest.raises(ValueError, match="skystat must be one of"):
        app.params = {"skystat": "average"}
    with pytest.raises(ValueError, match="unknown parameter"):
        app.params = {"skymthod": "match"}
    assert app.params["skystat"] == "mean"


def test_a_control_change_re_solves(app):
    async def scenario():  # as in a kernel: the page's solve runs in the worker
        app._controls["skymethod"].value = "local"
        await until(lambda: not app._solves.busy and not app._tasks)
        assert app.params["skymethod"] == "local" and app.result.attrs["skymethod"] == "local"
        app._controls["upper"].value = "110"
        await until(lambda: not app._solves.busy and not app._tasks)
        assert app.params["upper"] == 110.0
        assert not app.result.valid.values[1]  # image 1 (sky 120) has no pixel below 110
        app._controls["upper"].value = "not a number"
        assert app.status.startswith("error: upper must be a number") and not app._solves.busy
        assert app.params["upper"] == 110.0

    in_event_loop(scenario)


def test_editing_groups_in_the_editor_re_solves(app):
    before = app.result.sky.values.copy()
    app.editor.assign(["img00", "img01"], "pair")  # what the editor's Assign button does
    assert app.groups["img00"] == app.groups["img01"] == "pair"
    assert app.collection.groups["img01"] == "pair"
    assert app.result.group.values.tolist()[:2] == ["pair", "pair"]
    assert app.result.sky.values[0] == app.result.sky.values[1]
    assert not np.allclose(app.result.sky.values, before)
    assert {row["name"]: row["group"] for row in app.table.rows}["img01"] == "pair"


def test_setting_groups_from_python_updates_the_editor(app):
    app.groups = {"img02": "g", "img04": "g"}
    assert app.editor.groups["img02"] == "g" and app.editor.groups["img00"] is None
    assert app.result.group.values.tolist() == ["", "", "g", "", "g", ""]
    with pytest.raises(ValueError, match="not in the collection"):
        app.groups = {"nope": "g"}


def test_selection_is_shared_by_every_view(app):
    app.selected = ["img03"]
    assert app.map.selected == app.table.selected == app.editor.selected == ["img03"]
    app.map.selected = ["img01", "img02"]  # a click in the map
    assert app.selected == ["img01", "img02"] and app.table.selected == ["img01", "img02"]
    app.table.hovered = "img05"
    assert app.map.hovered == "img05"
    app._plot._sky.selected = [4]  # a click on a point of the sky plot
    assert app.selected == ["img04"] and app.map.selected == ["img04"]


def test_solve_only_changes_reuse_the_statistics(app, monkeypatch):
    calls = []
    real = measure.sky_statistic
    monkeypatch.setattr(measure, "sky_statistic", lambda v, p, **k: calls.append(1) or real(v, p, **k))
    app.params = {"match_down": False}
    app.params = {"skymethod": "match"}
    assert calls == []


def test_disconnected_mosaic_warning_shows_in_the_status():
    m = make_mosaic((2, 2), sky=[1, 2, 3, 4]) + make_mosaic((1, 2), sky=[5, 6], center=(150.1, 2.0),
                                                            prefix="b")
    app = SkyMatchApp(ImageCollection.from_arrays(m.images, m.wcs, names=m.names), debounce=0,
                      skystat="mean")
    assert "warning: the overlap graph has 2 disconnected components" in app.status
    assert "2 component(s)" in app.status


def in_event_loop(scenario):
    """Run ``scenario()`` (a coroutine function) in an event loop, as a kernel runs cells and
    page messages; in a thread of its own: pytest-playwright keeps a loop in the main thread."""
    outcome = {}

    def target():
        try:
            outcome["value"] = asyncio.run(scenario())
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    worker = threading.Thread(target=target)
    worker.start()
    worker.join(30)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


async def until(condition, timeout: float = 10.0) -> None:
    """Let the event loop run until ``condition()`` holds (a busy machine may be slow)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting in the event loop"
        await asyncio.sleep(0.01)


def count_solves(app, monkeypatch):
    calls = []
    real = app.collection.skymatch
    monkeypatch.setattr(app.collection, "skymatch", lambda **p: calls.append(p) or real(**p))
    return calls


def test_python_assignments_take_effect_before_the_next_line_even_in_an_event_loop(app):
    async def scenario():
        app.debounce = 0.05  # a kernel runs cells inside its event loop
        app.params = {"skymethod": "local"}
        seen = [app.result.attrs["skymethod"]]
        app.groups = {"img00": "pair", "img01": "pair"}
        seen.append(app.result.group.values.tolist()[:2])
        app.editor.assign(["img02", "img04"], "b")  # an editor method called from Python
        seen.append(app.result.group.values.tolist())
        return seen

    assert in_event_loop(scenario) == [
        "local", ["pair", "pair"], ["pair", "pair", "b", "", "b", ""]]


class GatedEngine:
    """The collection's skymatch, its first ``hold`` runs held at a gate until the test opens
    it (or the app cancels them): a page's solve that is still running when the next change
    arrives, without sleeps."""

    def __init__(self, app, monkeypatch, hold=1):
        self.real, self.hold, self.app = app.collection.skymatch, hold, app
        self.gate = threading.Event()
        self.runs, self.cancelled = [], []
        self.groups = []  # the groups each run saw
        monkeypatch.setattr(app.collection, "skymatch", self)

    def __call__(self, progress=None, cancel=None, **params):
        from skymatch_nb_ui.widgets.app import SkyMatchCancelled

        self.runs.append(params)
        if len(self.runs) <= self.hold:
            while not self.gate.wait(0.005):
                if cancel is not None and cancel.is_set():
                    self.cancelled.append(params)
                    raise SkyMatchCancelled("cancelled")
        self.groups.append(self.app.collection.groups)
        return self.real(**params)


def record_shown(app, monkeypatch):
    """What reached the views: (skymethod, skystat, first two groups) of each result shown."""
    shown, real = [], app.table.update
    monkeypatch.setattr(app.table, "update", lambda result: shown.append(
        (result.attrs["skymethod"], result.attrs["skystat"], result.group.values.tolist()[:2]))
        or real(result))
    return shown


def test_a_page_change_solves_at_once_and_a_burst_ends_in_one_solve_of_the_last_value(app, monkeypatch):
    from skymatch_nb_ui.widgets import app as app_module

    monkeypatch.setattr(app_module, "BUSY_DELAY", 0.0)  # say "solving…" at once (it is long)
    engine, shown = GatedEngine(app, monkeypatch), record_shown(app, monkeypatch)

    async def scenario():
        app._controls["skymethod"].value = "local"  # from the page: starts at once, no waiting
        at_once = app._running is not None
        await until(lambda: len(engine.runs) == 1 and app.status.startswith("solving…"))  # held
        # more changes in the page while it runs (keyboard stepping, a group edit)
        app._controls["skymethod"].value = "global"
        app._controls["skymethod"].value = "match"
        app.editor._on_message(app.editor, {"type": "assign", "names": ["img00", "img01"],
                                            "label": "pair"}, [])
        during = (len(engine.runs), app._running.cancel.is_set(), app.result.attrs["skymethod"],
                  "smnb-app-solving" in app._views._dom_classes)
        engine.gate.set()
        await until(lambda: not app._solves.busy and not app._tasks)
        return at_once, during

    at_once, during = in_event_loop(scenario)
    assert at_once
    # nothing new started while the first ran; it was asked to stop; the views kept the last result
    assert during == (1, True, "global+match", True)
    assert [run["skymethod"] for run in engine.runs] == ["local", "match"]  # the last value, once
    assert engine.groups[-1]["img00"] == engine.groups[-1]["img01"] == "pair"
    assert shown == [("match", "mean", ["pair", "pair"])]  # the stale "local" never shown
    assert app.result.attrs["skymethod"] == "match" and app.params["skymethod"] == "match"
    assert app.status.startswith("match / mean: solved in")
    assert "smnb-app-solving" not in app._views._dom_classes and app._busy.layout.display == "none"


def test_page_changes_after_a_solve_ended_each_solve_at_once_and_are_shown(app, monkeypatch):
    shown = record_shown(app, monkeypatch)

    async def scenario():
        for method in ("local", "match", "global"):
            app._controls["skymethod"].value = method
            assert app._running is not None  # started at once
            await until(lambda: not app._solves.busy and not app._tasks)
        return app.result.attrs["skymethod"]

    assert in_event_loop(scenario) == "global"
    assert [s[0] for s in shown] == ["local", "match", "global"]


def test_a_quick_page_solve_sends_no_progress_bar_and_no_progress(app, monkeypatch):
    """"solving…", the progress bar, Cancel and the stages' reports appear only for a solve
    that lasts (BUSY_DELAY; here longer than any solve of the test): a quick one sends the
    page only its result."""
    from skymatch_nb_ui.widgets import app as app_module

    monkeypatch.setattr(app_module, "BUSY_DELAY", 60.0)
    monkeypatch.setattr(app, "_hooks", {"progress", "cancel"})  # the engine reports its stages
    shown, statuses = [], []
    app._busy.layout.observe(lambda change: shown.append(change["new"]), "display")
    app.observe(lambda change: statuses.append(change["new"].split(":")[0].split(" (")[0]), "status")

    async def scenario():
        app._controls["skystat"].value = "median"  # statistics and solve stages report
        await until(lambda: not app._solves.busy and not app._tasks)

    in_event_loop(scenario)
    assert app.result.attrs["skystat"] == "median"
    assert shown == [] and app._busy_timer is None
    assert statuses == ["global+match / median"]  # no "solving…" flashed before the result


def test_a_python_assignment_overtakes_a_page_solve(app, monkeypatch):
    engine, shown = GatedEngine(app, monkeypatch), record_shown(app, monkeypatch)

    async def scenario():
        app._controls["skystat"].value = "median"  # from the page: running, held
        await until(lambda: len(engine.runs) == 1)
        app.params = {"skymethod": "local"}  # from Python: stops it and solves now, with both
        now = (app.result.attrs["skymethod"], app.result.attrs["skystat"])
        await until(lambda: not app._tasks)  # the stopped page solve's end: nothing follows
        return now

    assert in_event_loop(scenario) == ("local", "median")
    assert [r["skystat"] for r in engine.cancelled] == ["median"]
    assert len(engine.runs) == 2 and engine.runs[1]["skymethod"] == "local"
    assert shown == [("local", "median", ["", ""])] and not app._solves.busy


def test_a_solve_made_stale_by_a_newer_change_is_dropped(app, monkeypatch):
    real = app.collection.skymatch
    shown = []
    monkeypatch.setattr(app.table, "update", lambda result=None: shown.append(result.attrs["skystat"]))
    loop_holder = {}

    def slow_skymatch(**params):
        if params["skystat"] == "median":  # a long solve, during which the user changes skystat
            time.sleep(0.3)
            loop_holder["loop"].call_soon(lambda: setattr(app._controls["skystat"], "value", "midpt"))
        return real(**params)

    monkeypatch.setattr(app.collection, "skymatch", slow_skymatch)

    async def scenario():
        loop_holder["loop"] = asyncio.get_running_loop()
        app.debounce = 0.02
        app._controls["skystat"].value = "median"
        await until(lambda: app.result.attrs["skystat"] == "midpt")
        return app.result.attrs["skystat"]

    assert in_event_loop(scenario) == "midpt"
    assert shown == ["midpt"]  # the stale median result never reached the views


def test_a_long_python_solve_says_solving_while_a_quick_one_sends_only_its_result(app, monkeypatch):
    from skymatch_nb_ui.widgets import app as app_module

    real = app.collection.skymatch
    seen, statuses = [], []
    app.observe(lambda change: statuses.append(change["new"].split(":")[0].split(" (")[0]), "status")

    def long(**params):  # lasts until the page has been told (or 10 s)
        deadline = time.monotonic() + 10
        while "solving…" not in app._status.value and time.monotonic() < deadline:
            time.sleep(0.005)
        seen.append((app._status.value, "smnb-app-solving" in app._views._dom_classes))
        return real(**params)

    monkeypatch.setattr(app_module, "BUSY_DELAY", 0.05)
    monkeypatch.setattr(app.collection, "skymatch", long)
    app.params = {"skymethod": "match"}
    assert "solving…" in seen[0][0] and seen[0][1]  # said while the solve ran, views dimmed
    assert app.result.attrs["skymethod"] == "match" and statuses == ["solving…", "match / mean"]
    assert "smnb-app-solving" not in app._views._dom_classes
    monkeypatch.setattr(app_module, "BUSY_DELAY", 60.0)
    monkeypatch.setattr(app.collection, "skymatch", real)
    statuses.clear()
    app.params = {"skymethod": "local"}
    assert app.result.attrs["skymethod"] == "local" and statuses == ["local / mean"]


def test_interrupting_a_python_solve_stops_the_engine_and_keeps_the_last_result(app, monkeypatch):
    """The kernel's Interrupt (SIGINT: KeyboardInterrupt in the cell's thread) while a Python
    assignment waits for a long solve: the engine is told to stop, nothing is shown, and the
    parameters go back to those of the result shown."""
    import os
    import signal

    from skymatch_nb_ui.widgets.app import SkyMatchCancelled

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    shown, stopped = app.result, []
    monkeypatch.setattr(app, "_hooks", {"progress", "cancel"})
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def long(progress=None, cancel=None, **params):
        os.kill(os.getpid(), signal.SIGINT)  # the user interrupts the kernel
        stopped.append(cancel.wait(10))
        raise SkyMatchCancelled("cancelled")

    monkeypatch.setattr(app.collection, "skymatch", long)
    try:
        with pytest.raises(KeyboardInterrupt):
            app.params = {"skystat": "median"}
    finally:
        signal.signal(signal.SIGINT, previous)
    app._worker.submit(lambda: None).result(10)  # the engine has ended
    assert stopped == [True]
    assert app.result is shown and app.params["skystat"] == "mean"
    assert app._controls["skystat"].value == "mean"
    assert app.status == "interrupted: the views show the last result"
    assert "smnb-app-solving" not in app._views._dom_classes


def test_a_failed_solve_keeps_the_views_and_says_why(app, monkeypatch):
    app.params = {"skymethod": "match"}
    good = app.result

    def refuses(**params):
        raise ValueError("the engine refuses")

    monkeypatch.setattr(app.collection, "skymatch", refuses)
    assert app.solve() is None
    assert app.status == "error: the engine refuses" and app.result is good
    assert table_skies(app)["img01"] == pytest.approx(20.0)  # the last good views stay
    assert "smnb-app-solving" not in app._views._dom_classes


def test_building_the_app_keeps_the_collections_group_labels():
    m = make_mosaic((2, 3), sky=SKY)
    coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
    labels = {"img00": 1, "img01": 1.0, "img02": "1", "img03": None, "img04": "b", "img05": "b"}
    coll.groups = labels
    expected = coll.skymatch(skymethod="match", skystat="mean").sky.values
    app = SkyMatchApp(coll, skymethod="match", skystat="mean")
    kept = coll.groups
    assert kept == labels and [type(kept[n]) for n in ("img00", "img01", "img02")] == [int, float, str]
    assert app.groups == labels
    np.testing.assert_allclose(app.result.sky.values, expected)
    np.testing.assert_allclose(coll.skymatch(skymethod="match", skystat="mean").sky.values, expected)
    # the editor shows text: 1 and 1.0 are one group "1"; the str "1" is another group
    assert app.editor.groups == {"img00": "1", "img01": "1", "img02": "1 (2)", "img03": None,
                                 "img04": "b", "img05": "b"}
    assert app.result.group.values.tolist() == ["1", "1", "1 (2)", "", "b", "b"]
    # an edit of one group leaves the others' labels alone
    app.editor.assign(["img03"], "b")
    assert type(coll.groups["img00"]) is int and type(coll.groups["img01"]) is float
    assert coll.groups["img03"] == "b" and app.groups["img03"] == "b"
    app.editor.undo()
    assert coll.groups == labels


def test_the_sky_plot_names_images_and_never_draws_an_invalid_sky_at_zero(app):
    app.params = {"skymethod": "local", "upper": 117.0}  # img01 (sky 120) has no valid sky
    plot = app._plot
    assert not app.result.valid.values[1]
    assert plot._x_axis.tick_labels == {k: f"img0{k}" for k in range(6)}
    assert list(plot._sky.x) == [0, 2, 3, 4, 5]  # no point for img01 ...
    assert list(plot._invalid.x) == [1]  # ... but a cross on the bottom edge
    assert plot._invalid.y[0] < min(plot._sky.y) and plot._invalid.y[0] > plot._y.min
    assert (plot._x.min, plot._x.max) == (-0.5, 5.5)  # room for the first and last names
    assert "× no valid sky" in plot._sky_fig.title
    # selection still maps points to images
    app.selected = ["img02"]
    assert list(plot._sky.selected) == [1]
    plot._sky.selected = [3]  # a click on the fourth point: img04
    assert app.selected == ["img04"]
    app.selected = ["img01"]  # an invalid image has no point to select
    assert plot._sky.selected is None


def test_the_plots_axes_carry_the_images_unit_when_they_have_one(app):
    # as the map's colour bar and the figures: the sky and its differences in the images'
    # BUNIT when every image has the same one, plain words otherwise
    plot = app._plot
    assert (plot._sky_axis.label, plot._difference_axis.label) == ("sky", "difference")
    m = make_mosaic((2, 3), sky=SKY)
    coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names,
                                       meta=[{"bunit": "MJy/sr"}] * 6)
    plot = SkyMatchApp(coll, skymethod="match")._plot
    assert (plot._sky_axis.label, plot._difference_axis.label) == (
        "sky [MJy/sr]", "difference [MJy/sr]")
    assert plot._p_axis.tick_format == ",d"  # thousands of pairs: 15,985 (d3-format)


def test_the_sky_plot_names_pipeline_files_by_what_differs():
    # 35-character JWST names under a 390-pixel plot: the ticks say what differs, the axis
    # label what they share
    names = [f"jw01234001001_02101_0000{1 + k // 2}_nrcb{1 + k % 2}_cal" for k in range(6)]
    m = make_mosaic((2, 3), sky=SKY)
    plot = SkyMatchApp(ImageCollection.from_arrays(m.images, m.wcs, names=names))._plot
    assert plot._x_axis.tick_labels == {k: names[k][20:31] for k in range(6)}  # 00001_nrcb1 ...
    assert plot._x_axis.label == "jw01234001001_02101_…_cal"

def test_export_figure_writes_publication_files(app, tmp_path):
    pytest.importorskip("matplotlib")
    pdf = app.export_figure(tmp_path / "map.pdf", "footprints")
    assert pdf.read_bytes().startswith(b"%PDF")
    app._export["file"].value = str(tmp_path / "sky.png")  # the Export button, as a user would
    app._export["kind"].value = "sky"
    app._export["button"].click()
    assert (tmp_path / "sky.png").read_bytes().startswith(b"\x89PNG")
    assert app.status == f"exported sky figure to {tmp_path / 'sky.png'}"
    svg = app.export_figure(tmp_path / "planes.svg", "planes")  # flat for constant skies
    assert b"<svg" in svg.read_bytes()[:400]
    with pytest.raises(FileExistsError):
        app.export_figure(pdf, "pairs")
    with pytest.raises(ValueError, match="kind must be one of"):
        app.export_figure(tmp_path / "x.pdf", "histogram")


def test_every_parameter_has_a_control_made_from_its_spec(app):
    """Issue 10 item 2: a parameter added to SkyMatchParams appears without touching app.py."""
    import ipywidgets as w

    from skymatch_nb_ui.engine import SkyMatchParams

    specs = {n: s for n, s in SkyMatchParams.specs().items() if s.stage not in ("geometry", "output")}
    assert list(app._controls) == list(specs) and set(app.params) == set(specs)
    for name, spec in specs.items():
        control = app._controls[name]
        assert control.description == name and control.tooltip == spec.help
        if spec.kind == "choice":
            assert isinstance(control, w.Dropdown) and list(control.options) == list(spec.choices)
        elif spec.kind == "bool":
            assert isinstance(control, w.Checkbox)
        elif spec.nullable:
            assert isinstance(control, w.Text)  # empty or "none" is None
        else:
            assert (control.min, control.max, control.step) == (spec.widget_min, spec.widget_max, spec.step)
    defaults = SkyMatchParams()
    fresh = SkyMatchApp(app.collection)
    assert fresh.params == {n: getattr(defaults, n) for n in specs}


def test_an_app_assignment_of_groups_is_written_by_the_editor_one_undo_step(app):
    app.groups = {"img00": 1, "img01": 1}
    assert app.collection.groups["img00"] == 1 and app.editor.groups["img00"] == "1"
    assert app.result.group.values.tolist()[:2] == ["1", "1"]
    app.editor.undo()  # the app's assignment is an edit like the editor's own
    assert app.groups == dict.fromkeys(app.collection.names)
    assert app.result.group.values.tolist() == [""] * 6


def test_images_half_a_sky_apart_are_drawn():
    """Issue 9 item 20: the app refused collections the engine accepts."""
    m = make_mosaic((1, 2), sky=[1, 2]) + make_mosaic((1, 2), sky=[3, 4], center=(330.0, -2.0), prefix="b")
    app = SkyMatchApp(ImageCollection.from_arrays(m.images, m.wcs, names=m.names),
                      skymethod="local", skystat="mean")
    np.testing.assert_allclose(app.result.sky.values, [1, 2, 3, 4], atol=1e-9)
    assert app.map.projection["kind"] == "allsky" and len(app.map.polygons) == 4


class SlowEngine:
    """Stands in for an engine with the progress and cancel hooks of SkyMatcher.run: a solve
    that re-runs statistics, ``n`` steps of ``step`` seconds, reporting after each."""

    def __init__(self, app, monkeypatch, n=40, step=0.02):
        from collections import namedtuple

        self.real, self.n, self.step, self.started = app.collection.skymatch, n, step, threading.Event()
        self.runs, self.cancelled = [], []
        self.Progress = namedtuple("Progress", "stage done total")
        monkeypatch.setattr(app, "_hooks", {"progress", "cancel"})
        monkeypatch.setattr(app.collection, "skymatch", self)

    def __call__(self, progress=None, cancel=None, **params):
        from skymatch_nb_ui.widgets.app import SkyMatchCancelled

        self.runs.append(params)
        if params.get("skystat") == "median":  # the long one
            self.started.set()
            for k in range(self.n):
                if cancel is not None and cancel.is_set():
                    self.cancelled.append(params)
                    raise SkyMatchCancelled("cancelled")
                time.sleep(self.step)
                if progress is not None:
                    progress(self.Progress("statistics", k + 1, self.n))
        return self.real(**params)


def test_a_page_solve_runs_in_the_background_with_progress_and_cancel(app, monkeypatch):
    engine = SlowEngine(app, monkeypatch)
    shown = app.result

    async def scenario():
        app.debounce = 0.01
        app._controls["skystat"].value = "median"  # from the page: a long solve
        await until(lambda: app._progress.value > 0.2)
        # the loop kept serving while the worker computed: progress reached the widgets
        seen = (app._busy.layout.display, app._progress.layout.visibility, app.status)
        app._cancel.click()  # the Cancel button (a comm message the loop handles)
        await asyncio.sleep(0.3)
        return seen

    display, visibility, status = in_event_loop(scenario)
    assert display == "flex" and visibility == "visible" and status.startswith("solving… statistics")
    assert engine.cancelled and engine.cancelled[0]["skystat"] == "median"  # the engine stopped
    assert app.result is shown and app.params["skystat"] == "mean"  # back to the shown result
    assert app._controls["skystat"].value == "mean"
    assert app.status.startswith("cancelled: the views show the last result")
    assert app._busy.layout.display == "none" and "smnb-app-solving" not in app._views._dom_classes


def test_a_python_assignment_stops_a_background_solve_and_takes_effect_at_once(app, monkeypatch):
    engine = SlowEngine(app, monkeypatch, n=200)

    async def scenario():
        app.debounce = 0.01
        app._controls["skystat"].value = "median"
        await until(engine.started.is_set)
        app.params = {"skystat": "midpt"}  # a cell's assignment while the page's solve runs
        now = app.result.attrs["skystat"]
        await asyncio.sleep(0.3)
        return now

    assert in_event_loop(scenario) == "midpt"
    assert app.result.attrs["skystat"] == "midpt" and app.params["skystat"] == "midpt"
    assert engine.cancelled  # the stale page solve was stopped, not finished


def test_cancelling_a_group_edit_takes_it_back_and_the_editor_can_redo_it(app, monkeypatch):
    SlowEngine(app, monkeypatch)

    async def scenario():
        app.debounce = 0.01
        app._controls["skystat"].value = "median"
        await asyncio.sleep(0.05)
        app.editor._on_message(app.editor, {"type": "assign", "names": ["img00", "img01"], "label": "p"}, [])
        await until(lambda: app._running is not None)
        return app.cancel()

    assert in_event_loop(scenario) is True
    assert app.groups == dict.fromkeys(app.collection.names) and app.params["skystat"] == "mean"
    assert app.result.group.values.tolist() == [""] * 6
    assert app.cancel() is False  # nothing under way any more


def test_plots_of_many_images_show_ranges_and_the_selection_as_points():
    """Level of detail: thousands of points would stall the page; ranges per bin instead."""
    import xarray as xr

    from skymatch_nb_ui.widgets.app import MAX_PLOT_POINTS, PLOT_BINS, _SkyPlot

    n, m = 5000, 12000
    rng = np.random.default_rng(1)
    sky = rng.normal(100, 5, n)
    valid = np.ones(n, bool)
    valid[[7, 4321]] = False
    result = xr.Dataset(
        {"sky": ("image", sky), "sky_err": ("image", np.full(n, 0.5)), "valid": ("image", valid),
         "diff_before": ("pair", rng.normal(0, 3, m)), "diff_after": ("pair", rng.normal(0, 0.1, m))},
        coords={"image": [f"i{k}" for k in range(n)], "pair": np.arange(m)})
    plot = _SkyPlot()
    plot.update(result, selected=[3, 7, 100])
    bars = np.asarray(plot._bars.y).reshape(-1, 3)  # one path: segments apart by a NaN y
    assert n > MAX_PLOT_POINTS and len(bars) <= PLOT_BINS and np.isnan(bars[:, 2]).all()
    bars = bars[:, :2]
    ok = valid
    assert bars.min() == pytest.approx((sky[ok] - 0.5).min())
    assert bars.max() == pytest.approx((sky[ok] + 0.5).max())
    assert list(plot._sky.x) == [3, 100]  # the valid selected images, as points
    assert list(plot._sky.selected) == [0, 1]
    assert len(plot._invalid.x) == 2  # the bins holding an image without a sky
    assert "range per" in plot._sky_fig.title
    plot.select([4999])
    assert list(plot._sky.x) == [4999]
    assert len(plot._before.x) == 0 and len(plot._after_range.x) <= 3 * PLOT_BINS  # ranges only
    assert np.nanmax(plot._after_range.y) == pytest.approx(result.diff_after.values.max())


def test_plot_ranges_are_not_sent_again_when_a_re_solve_leaves_them_as_they_were():
    """The ranges' NaN gaps must not make equal arrays look changed (each would be re-sent and
    redrawn in the page on every solve)."""
    import xarray as xr

    from skymatch_nb_ui.widgets.app import _SkyPlot

    n, m = 800, 3000
    rng = np.random.default_rng(2)
    result = xr.Dataset(
        {"sky": ("image", rng.normal(100, 5, n)), "sky_err": ("image", np.full(n, 0.5)),
         "valid": ("image", np.ones(n, bool)), "diff_before": ("pair", rng.normal(0, 3, m)),
         "diff_after": ("pair", rng.normal(0, 0.1, m))},
        coords={"image": [f"i{k}" for k in range(n)], "pair": np.arange(m)})
    plot = _SkyPlot()
    plot.update(result, selected=[])
    sent = []
    for mark in (plot._bars, plot._before_range, plot._after_range):
        mark.observe(lambda change: sent.append(change["name"]), names=["x", "y"])
    plot.update(result.copy(deep=True), selected=[])
    assert sent == []
    moved = result.copy(deep=True)
    moved["sky"] = moved.sky + 1.0
    plot.update(moved, selected=[])
    assert sent == ["y"]  # the sky ranges moved; the pairs' ranges stayed
    assert np.nanmax(plot._bars.y) == pytest.approx(moved.sky.max().item() + 0.5)
