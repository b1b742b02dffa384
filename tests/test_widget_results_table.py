"""ResultsTable: rows from a result, JSON-safety, sorting/selection traitlets, table(), CSV.

The CSV text must be the same in Python (`to_csv`) and in the front end (`toCSV` in
js/src/results_table.js).  Both are tested against one fixture, js/tests/results_table_csv.json
(rows with awkward values and the CSV Python makes of them); regenerate it after a deliberate
format change with ``python tests/test_widget_results_table.py``.
"""

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import traitlets

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.testing import make_mosaic
from skymatch_nb_ui.widgets import ResultsTable
from skymatch_nb_ui.widgets.results_table import COLUMNS, js_number, rows_to_csv

JS = Path(__file__).resolve().parents[1] / "js"
CSV_FIXTURE = JS / "tests" / "results_table_csv.json"
KEYS = [c["key"] for c in COLUMNS]


@pytest.fixture
def coll():
    """A 2x2 mosaic plus a third image far away with no overlap (its sky cannot be matched)."""
    m = make_mosaic((2, 2), sky=[100, 120.123456789, 105, 105], dtype=np.float64) + make_mosaic(
        (1, 1), sky=[90], center=(151.0, 2.0), prefix="far", dtype=np.float64
    )
    return ImageCollection.from_arrays(m.images, m.wcs, names=m.names)


@pytest.fixture
def solved(coll):
    coll.groups = {"img02": "g", "img03": "g"}
    with pytest.warns(Warning):
        result = coll.skymatch(skymethod="match", skystat="mean")
    return coll, result


def test_no_result_yet_gives_an_empty_table(coll):
    table = ResultsTable(coll)
    assert table.rows == [] and table.result is None
    assert table.to_csv() == ",".join(KEYS) + "\n"
    with pytest.raises(ValueError, match="no result yet"):
        table.table()


def test_the_table_shows_the_result_it_is_given_never_the_collections_last(solved):
    coll, result = solved  # item 5 of issue 10: views take a result, they read no state
    assert ResultsTable(coll, result).result is result
    assert ResultsTable(coll).result is None and ResultsTable(coll).rows == []


def test_rows_one_per_image_in_image_order_json_safe(solved):
    coll, result = solved
    table = ResultsTable(coll, result)
    assert [r["name"] for r in table.rows] == list(coll.names)
    assert all(list(r) == KEYS for r in table.rows)
    json.dumps(table.rows, allow_nan=False)  # no NaN or inf reaches the front end
    by_name = {r["name"]: r for r in table.rows}
    assert by_name["img00"]["group"] is None and by_name["img02"]["group"] == "g"
    assert by_name["img01"]["sky"] == 20.12346  # 7 significant digits for display
    assert isinstance(by_name["img01"]["npix"], int)
    far = by_name["far00"]
    assert far["valid"] is False and far["sky"] is None and far["reason"]
    assert table.colors == {"g": "#E69F00"}


def test_table_keeps_full_precision_and_equals_the_rows(solved):
    coll, result = solved
    table = ResultsTable(coll, result)
    t = table.table()
    assert t["sky"][1] == pytest.approx(20.123456789, abs=1e-9)
    assert list(t["name"]) == [r["name"] for r in table.rows]
    for key in KEYS:
        for value, row in zip(t[key], table.rows):
            shown = row[key]
            if key == "group":
                assert (shown or "") == value
            elif isinstance(shown, float):
                assert shown == pytest.approx(float(value), rel=1e-6)
            elif shown is None:
                assert not math.isfinite(float(value))
            else:
                assert shown == value


def test_update_replaces_rows_and_checks_the_result(solved):
    coll, _ = solved
    table = ResultsTable(coll)
    coll.groups = None
    with pytest.warns(Warning):
        table.update(coll.skymatch(skymethod="global+match", skystat="mean", anchor="component"))
    assert [r["sky"] for r in table.rows][:4] == [100, 120.1235, 105, 105]
    other = ImageCollection.from_arrays(*(lambda m: (m.images, m.wcs))(make_mosaic((1, 2))))
    with pytest.raises(ValueError, match="not of this collection"):
        table.update(other.skymatch())


def test_selection_hover_and_sort_are_validated(solved):
    coll, result = solved
    table = ResultsTable(coll, result)
    table.selected = ["img01", "img00"]
    table.hovered = "img03"
    table.hovered = ""
    with pytest.raises(ValueError, match="no image named 'nope'"):
        table.selected = ["nope"]
    with pytest.raises(ValueError, match="no image named 'nope'"):
        table.hovered = "nope"
    table.sort_by, table.ascending = "sky_err", False
    table.sort_by = ""
    with pytest.raises(traitlets.TraitError, match="sort_by must be one of"):
        table.sort_by = "colour"


def test_csv_of_a_real_result(solved):
    coll, result = solved
    table = ResultsTable(coll, result)
    lines = table.to_csv().split("\n")
    assert lines[0] == ",".join(KEYS) and lines[-1] == ""
    # img01's pixels: 2000 in each of img02 and img03 (group g), 400 of them in both, each
    # compared with both members (compare="differences": one difference per member pair)
    assert lines[2] == "img01,,0,20.12346,0,4400,True,"
    assert lines[3].startswith("img02,g,0,")
    far = lines[5]
    assert far.startswith("far00,,1,,,0,False,"), far
    table.sort_by, table.ascending = "sky", False  # the CSV does not depend on the view
    assert table.to_csv().split("\n") == lines


# -- the CSV format shared with the front end ----------------------------------------------------
def _awkward_rows():
    return [
        {"name": "plain", "group": None, "component": 0, "sky": 5.0, "sky_err": 0.5, "npix": 10,
         "valid": True, "reason": ""},
        {"name": "a,b", "group": 'say "hi"', "component": -1, "sky": None, "sky_err": None,
         "npix": 0, "valid": False, "reason": "line one\nline two"},
        {"name": "tiny", "group": "g", "component": 2, "sky": 1e-7, "sky_err": 1.234e-6,
         "npix": 123456789, "valid": True, "reason": "not matched, its own sky"},
        {"name": "huge", "group": "g", "component": 2, "sky": 1.5e21, "sky_err": 1e21,
         "npix": 1, "valid": True, "reason": "x"},
        {"name": "neg", "group": "h", "component": 3, "sky": -123456.7, "sky_err": 0.0001234,
         "npix": 7, "valid": True, "reason": "π ≈ 3.14"},
    ]


def _write_fixture():
    rows = _awkward_rows()
    columns = [dict(c) for c in COLUMNS]
    CSV_FIXTURE.write_text(
        json.dumps({"rows": rows, "columns": columns, "csv": rows_to_csv(rows, columns)}, indent=1,
                   ensure_ascii=False) + "\n", encoding="utf-8")


def test_csv_fixture_matches_python():
    """The node test checks the front end's toCSV against the same fixture."""
    fixture = json.loads(CSV_FIXTURE.read_text(encoding="utf-8"))
    assert fixture["rows"] == _awkward_rows() and fixture["columns"] == list(COLUMNS)
    assert rows_to_csv(fixture["rows"], fixture["columns"]) == fixture["csv"]
    assert fixture["csv"].splitlines()[2] == '"a,b","say ""hi""",-1,,,0,False,"line one'


@pytest.mark.parametrize(
    "value, text",
    [(0.0, "0"), (-0.0, "0"), (5.0, "5"), (-3, "-3"), (0.1, "0.1"), (1e-6, "0.000001"),
     (1e-7, "1e-7"), (1.5e-10, "1.5e-10"), (1e21, "1e+21"), (1e20, "100000000000000000000"),
     (123456.7, "123456.7"), (2.5e-5, "0.000025"), (1.7976931348623157e308, "1.7976931348623157e+308")],
)
def test_js_number_prints_numbers_as_javascript_does(value, text):
    assert js_number(value) == text


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_js_number_agrees_with_node_on_random_numbers():
    rng = np.random.default_rng(1)
    values = [float(f"{v:.7g}") for v in rng.standard_normal(300) * 10.0 ** rng.integers(-12, 25, 300)]
    values += [float(v) for v in rng.integers(-10**6, 10**6, 20)]
    out = subprocess.run(
        ["node", "-e", "for (const v of JSON.parse(process.argv[1])) console.log(String(v))",
         json.dumps(values)], capture_output=True, text=True, check=True,
    ).stdout.split()
    assert [js_number(v) for v in values] == out


if __name__ == "__main__":
    _write_fixture()
    print(f"wrote {CSV_FIXTURE}")


# -- fitted planes (skymodel="plane") -------------------------------------------------------------
def test_a_plane_result_adds_the_plane_columns_after_sky_err():
    from _plane_results import plane_result

    from skymatch_nb_ui.widgets.results_table import PLANE_COLUMNS

    mosaic = make_mosaic((1, 3), noise=1.0, gradient=3.0, seed=2)
    coll, result = plane_result(mosaic)
    table = ResultsTable(coll, result)
    keys = [c["key"] for c in table.columns]
    plane_keys = [c["key"] for c in PLANE_COLUMNS]
    assert keys == KEYS[:5] + plane_keys + KEYS[5:]
    for k, row in enumerate(table.rows):
        for key in plane_keys:
            assert row[key] == pytest.approx(float(result[key].values[k]), rel=1e-6)
    assert table.to_csv().splitlines()[0] == ",".join(keys)
    assert table.table()["gradient"][1] == result.gradient.values[1]  # full precision
    table.sort_by = "gradient"
    table.update(coll.skymatch(skystat="mean"))  # constant skies: the plane columns go
    assert [c["key"] for c in table.columns] == KEYS and table.sort_by == ""
    with pytest.raises(traitlets.TraitError, match="sort_by must be one of"):
        table.sort_by = "slope_x"
