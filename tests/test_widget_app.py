"""SkyMatchApp on the Python side: traitlets, linking, live re-solve, Python -> UI state."""

import asyncio
import threading

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
    return SkyMatchApp(coll, debounce=0, skymethod="global+match", skystat="mean")


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
    app._controls["skymethod"].value = "local"
    assert app.params["skymethod"] == "local" and app.result.attrs["skymethod"] == "local"
    app._controls["upper"].value = "110"
    assert app.params["upper"] == 110.0
    assert not app.result.valid.values[1]  # image 1 (sky 120) has no pixel below 110
    app._controls["upper"].value = "not a number"
    assert app.status.startswith("error: upper must be a number")
    assert app.params["upper"] == 110.0


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
    m = make_mosaic((2, 2), sky=[1, 2, 3, 4]) + make_mosaic((1, 2), sky=[5, 6], center=(150.1, 2.0), prefix="b")
    app = SkyMatchApp(ImageCollection.from_arrays(m.images, m.wcs, names=m.names), debounce=0,
                      skystat="mean")
    assert "warning: the overlap graph has 2 disconnected components" in app.status
    assert "2 component(s)" in app.status


def test_changes_are_debounced_inside_an_event_loop(app):
    async def scenario():
        app.debounce = 0.05
        app.params = {"skymethod": "local"}
        app.params = {"skymethod": "match"}  # two quick changes: one solve, with the last
        assert app.result.attrs["skymethod"] == "global+match"  # not solved yet
        await asyncio.sleep(0.2)
        return app.result.attrs["skymethod"]

    # a thread of its own: pytest-playwright keeps an event loop running in the main thread
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(method=asyncio.run(scenario())))
    worker.start()
    worker.join(10)
    assert outcome["method"] == "match"


def test_export_figure_writes_publication_files(app, tmp_path):
    pytest.importorskip("matplotlib")
    pdf = app.export_figure(tmp_path / "map.pdf", "footprints")
    assert pdf.read_bytes().startswith(b"%PDF")
    app._export["file"].value = str(tmp_path / "sky.png")  # the Export button, as a user would
    app._export["kind"].value = "sky"
    app._export["button"].click()
    assert (tmp_path / "sky.png").read_bytes().startswith(b"\x89PNG")
    assert app.status == f"exported sky figure to {tmp_path / 'sky.png'}"
    with pytest.raises(FileExistsError):
        app.export_figure(pdf, "pairs")
    with pytest.raises(ValueError, match="kind must be one of"):
        app.export_figure(tmp_path / "x.pdf", "histogram")
