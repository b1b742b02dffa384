"""ResultsTable: one row per image of a sky-matching result, sortable, linked, downloadable."""

from __future__ import annotations

import math
from decimal import Decimal

import anywidget
import numpy as np
import traitlets

from ..display.encodings import group_palette
from ..display.planes import is_plane
from ._assets import css_path, esm
from .group_editor import check_names

__all__ = ["ResultsTable"]

#: The columns shown, in order: key (as in `ImageCollection.to_table`), header, kind.
COLUMNS = (
    {"key": "name", "label": "image", "kind": "str"},
    {"key": "group", "label": "group", "kind": "str"},
    {"key": "component", "label": "component", "kind": "num"},
    {"key": "sky", "label": "sky", "kind": "num"},
    {"key": "sky_err", "label": "sky_err", "kind": "num"},
    {"key": "npix", "label": "npix", "kind": "num"},
    {"key": "valid", "label": "valid", "kind": "bool"},
    {"key": "reason", "label": "reason", "kind": "str"},
)

#: The columns of fitted planes (``skymodel="plane"``), shown after ``sky_err`` when present.
PLANE_COLUMNS = (
    {"key": "slope_x", "label": "slope_x", "kind": "num"},
    {"key": "slope_y", "label": "slope_y", "kind": "num"},
    {"key": "gradient", "label": "gradient", "kind": "num"},
    {"key": "gradient_pa", "label": "gradient_pa", "kind": "num"},
)
_NUMBERS = ("sky", "sky_err") + tuple(c["key"] for c in PLANE_COLUMNS)


def columns_for(result) -> tuple[dict, ...]:
    """The columns shown for ``result``: `COLUMNS`, with `PLANE_COLUMNS` for fitted planes."""
    if not is_plane(result):
        return COLUMNS
    at = [c["key"] for c in COLUMNS].index("sky_err") + 1
    return COLUMNS[:at] + PLANE_COLUMNS + COLUMNS[at:]


#: Floats in `ResultsTable.rows` (and so in the CSV) keep this many significant digits.
SIGNIFICANT_DIGITS = 7


class ResultsTable(anywidget.AnyWidget):
    """The per-image results of a sky matching as a sortable table linked to a selection.

    Rows are listed in image order and shown sorted by `sort_by`.  Clicking a header sorts by
    that column (clicking it again reverses the order; missing values always come last);
    clicking a row deselects it if it is selected, else selects only it; shift-, ctrl- or
    cmd-click adds it to the selection; Enter and Space do the same for the focused row, and
    the arrow keys move between rows; hovering a row sets `hovered`.  Invalid
    rows are shown hatched in red with their reason.  A result of ``skymodel="plane"`` adds
    the columns of its planes (`PLANE_COLUMNS`: slopes per pixel, gradient per arcsec and its
    position angle) after ``sky_err``.
    The "Download CSV" button saves exactly the text of `to_csv`.

    Parameters
    ----------
    collection : ImageCollection
        The images of the result.
    result : xarray.Dataset, optional
        A result of ``collection.skymatch()``; without one the table is empty.

    Attributes
    ----------
    rows : list of dict
        One dict per image, in image order, with the keys of `columns`: JSON-safe values (NaN
        and infinities become None, an image alone has group None), floats rounded to
        `SIGNIFICANT_DIGITS` significant digits.  `table` keeps full precision.  (Read-only;
        the front end gets the same values column by column in `data`.)
    data : dict
        The rows as columns, as they travel to the front end: ``{"count": n, key: ...}`` with
        numbers as float64 buffers (NaN: missing), booleans as uint8 buffers and strings as
        ``{"texts": [distinct texts], "index": int32 buffer}``.  Above 500 rows the front end
        keeps only the rows in view in the page (a virtual window).
    columns : list of dict
        ``{"key", "label", "kind"}`` of each column (``kind``: ``"str"``, ``"num"``, ``"bool"``).
    colors : dict
        {group label: "#rrggbb"}, the group colours of the other views.
    selected : list of str
        The selected image names (shared with the map and the editor by the app).
    hovered : str
        The image under the pointer (here or in a linked view), or ``""``.
    sort_by : str
        The key of the column the rows are sorted by, or ``""`` for image order.
    ascending : bool
        The sort direction.
    filename : str
        The name the downloaded CSV file gets.

    Examples
    --------
    >>> from skymatch_nb_ui import ImageCollection
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> from skymatch_nb_ui.widgets import ResultsTable
    >>> m = make_mosaic((1, 3), sky=[100, 120, 105])
    >>> coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
    >>> table = ResultsTable(coll, coll.skymatch(skystat="mean"))
    >>> table.rows[1]["sky"], table.rows[1]["valid"]
    (20.0, True)
    >>> table.sort_by, table.ascending = "sky", False
    >>> print(table.to_csv().splitlines()[0])
    name,group,component,sky,sky_err,npix,valid,reason
    >>> print(table.to_csv().splitlines()[2])
    img01,,0,20,0,4000,True,
    >>> round(float(table.table()["sky"][1]), 9)
    20.0
    """

    _esm = esm("results_table.js")
    _css = css_path("results_table.css")

    data = traitlets.Dict(read_only=True).tag(sync=True)
    columns = traitlets.List(traitlets.Dict(), read_only=True).tag(sync=True)
    colors = traitlets.Dict(read_only=True).tag(sync=True)
    selected = traitlets.List(traitlets.Unicode()).tag(sync=True)
    hovered = traitlets.Unicode("").tag(sync=True)
    sort_by = traitlets.Unicode("").tag(sync=True)
    ascending = traitlets.Bool(True).tag(sync=True)
    filename = traitlets.Unicode("skymatch_results.csv").tag(sync=True)

    def __init__(self, collection, result=None, **kwargs):
        self._collection = collection
        self._result = None
        self._rows: list[dict] = []
        super().__init__(**kwargs)
        self.set_trait("columns", [dict(c) for c in COLUMNS])
        self.update(result)

    @property
    def collection(self):
        """The `ImageCollection` whose results are shown."""
        return self._collection

    @property
    def result(self):
        """The result shown (an `xarray.Dataset`), or None."""
        return self._result

    def update(self, result=None) -> None:
        """Show ``result``, a Dataset returned by ``collection.skymatch()`` (None: empty).

        Examples
        --------
        >>> table.update(coll.skymatch(skymethod="global+match"))   # doctest: +SKIP
        """
        if result is not None:
            self._collection._result(result)  # checks that it is a result of this collection
        self._result = result
        columns = columns_for(result)
        self._rows = [] if result is None else _rows(self._collection.names, result, columns)
        with self.hold_trait_notifications():
            if self.sort_by and self.sort_by not in {c["key"] for c in columns}:
                self.sort_by = ""  # a plane column of the previous result
            self.set_trait("columns", [dict(c) for c in columns])
            self.set_trait("data", _columns(self._rows, columns))
            self.set_trait("colors", _group_colors(self._rows))

    @property
    def rows(self) -> list[dict]:
        """One dict per image (see the class's attributes)."""
        return self._rows

    def table(self):
        """The rows shown, at full precision, as an `astropy.table.Table` (image order).

        Raises
        ------
        ValueError
            When there is no result yet.
        """
        if self._result is None:
            raise ValueError("the table has no result yet: run collection.skymatch() and update(result)")
        return self._collection.to_table(self._result)

    def to_csv(self) -> str:
        r"""The rows as CSV text, exactly as the "Download CSV" button saves them.

        One header line of column keys, then one line per image in image order (whatever the
        sort shown); numbers as JavaScript prints them, missing values empty, booleans
        ``True``/``False``, fields quoted when they hold a comma, a quote or a line break;
        lines end with ``\\n``.
        """
        return rows_to_csv(self.rows, self.columns)

    # -- validation ------------------------------------------------------------------------------
    @traitlets.validate("selected")
    def _validate_selected(self, proposal):
        return check_names(self._collection, proposal["value"], "selected")

    @traitlets.validate("hovered")
    def _validate_hovered(self, proposal):
        name = proposal["value"]
        if name:
            check_names(self._collection, [name], "hovered")
        return name

    @traitlets.validate("sort_by")
    def _validate_sort_by(self, proposal):
        key = proposal["value"]
        keys = [c["key"] for c in self.columns or COLUMNS]
        if key and key not in keys:
            raise traitlets.TraitError(f"sort_by must be one of {keys} or '' (image order); got {key!r}")
        return key


# -- rows and CSV (the front end's toCSV does the same) ------------------------------------------
def _rows(names, result, columns=COLUMNS) -> list[dict]:
    """The rows of `ResultsTable.rows`: the columns of `ImageCollection.to_table`, JSON-safe."""
    values = {"name": list(names), "group": [g or None for g in result["group"].values.astype(str).tolist()],
              "reason": result["reason"].values.astype(str).tolist(),
              "valid": result["valid"].values.astype(bool).tolist(),
              "component": result["component"].values.astype(int).tolist(),
              "npix": result["npix"].values.astype(int).tolist()}
    keys = [c["key"] for c in columns]
    for key in (k for k in _NUMBERS if k in keys):
        values[key] = [float(f"{v:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(v) else None
                       for v in result[key].values.astype(float).tolist()]
    return [dict(zip(keys, row)) for row in zip(*(values[k] for k in keys))]


def _columns(rows: list[dict], columns=COLUMNS) -> dict:
    """The rows column by column, numbers and booleans as binary buffers (see `data`)."""
    data: dict = {"count": len(rows)}
    for column in columns:
        key = column["key"]
        values = [row[key] for row in rows]
        if column["kind"] == "num":
            data[key] = np.array([np.nan if v is None else v for v in values], "<f8").tobytes()
        elif column["kind"] == "bool":
            data[key] = np.array(values, np.uint8).tobytes()
        else:
            distinct = list(dict.fromkeys(values))
            number_of = {v: k for k, v in enumerate(distinct)}
            index = np.array([number_of[v] for v in values], "<i4")
            data[key] = {"texts": distinct, "index": index.tobytes()}
    return data


def _group_colors(rows: list[dict]) -> dict:
    return {k: v for k, v in group_palette(r["group"] or "" for r in rows).items() if k}


def rows_to_csv(rows: list[dict], columns: list[dict]) -> str:
    """CSV text of ``rows`` (see `ResultsTable.to_csv`), as the front end builds it."""
    keys = [c["key"] for c in columns]
    lines = [",".join(_csv_field(k) for k in keys)]
    lines += [",".join(_csv_field(_csv_text(row.get(k))) for k in keys) for row in rows]
    return "\n".join(lines) + "\n"


def _csv_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return js_number(value)
    return str(value)


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def js_number(x: float) -> str:
    """``String(x)`` of JavaScript for a finite number (shortest round-trip digits).

    Examples
    --------
    >>> [js_number(v) for v in (5.0, -0.0, 0.5, 1e-7, 1.5e21, 123456.7)]
    ['5', '0', '0.5', '1e-7', '1.5e+21', '123456.7']
    """
    if x == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(float(x))).normalize().as_tuple()
    text = "".join(map(str, digits))
    k, n = len(text), len(text) + exponent  # value = 0.<text> * 10**n (ECMAScript Number::toString)
    if k <= n <= 21:
        body = text + "0" * (n - k)
    elif 0 < n <= 21:
        body = text[:n] + "." + text[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * -n + text
    else:
        mantissa = text if k == 1 else text[0] + "." + text[1:]
        body = f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return ("-" if sign else "") + body
