"""How a result is shown: quantities to colours and legends, flags, units, labels, numbers.

The widgets (`skymatch_nb_ui.widgets`) and the figures (`skymatch_nb_ui.plotting`) both ask
this module, so a map in the app and a figure of the same result agree on every colour,
legend entry, colour-bar range, title, flag and unit.  Everything here is plain numpy over the
columns of a result of `ImageCollection.skymatch` (or of ``ImageCollection.table`` before any
result: groups only).

Examples
--------
>>> import xarray as xr
>>> result = xr.Dataset({"sky": ("image", [1.0, 3.0]), "valid": ("image", [True, True])},
...                     attrs={"skymethod": "match"})
>>> fill = image_fill(result, "sky", unit="MJy/sr")
>>> fill.colors, fill.legend.title
(['#440154', '#fde725'], 'Sky offset [MJy/sr]')
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .colors import BAD_COLOR, DATA_COLOR, DIVERGING, MISSING, VIRIDIS, categorical, diverging, ramp
from .planes import gradient_unit

__all__ = [
    "COLOR_BY", "CONTINUOUS", "MAX_LEGEND", "NONE_GROUP", "NO_GRADIENT", "VALID_COLORS", "Categories",
    "Fill",
    "Flags", "PairColors", "Ramp", "check_color_by", "group_palette", "image_fill", "image_flags",
    "largest_component", "number", "pair_colors", "quantity_title", "short_names", "sky_unit",
    "with_unit",
]

#: The quantities footprints can be coloured by (continuous ones get a colour bar).
COLOR_BY = ("sky", "sky_err", "gradient", "group", "component", "valid", "npix")
CONTINUOUS = ("sky", "sky_err", "gradient", "npix")

#: Categorical legends list at most this many entries (then "N more").
MAX_LEGEND = 10

#: The legend entry of images that are alone (each its own sky).
NONE_GROUP = "none (own sky)"

#: The legend entries and colours of ``color_by="valid"``.
VALID_COLORS = {"valid sky": DATA_COLOR, "no valid sky": BAD_COLOR}

#: What a map says before any result.
NO_RESULT = "no result yet: run skymatch()"

#: What a map coloured by ``gradient`` says of a result with constant skies.
NO_GRADIENT = "constant skies: no gradient (skymatch(skymodel='plane') fits planes)"

_TITLES = {"sky_err": "Sky uncertainty (1σ)", "gradient": "Sky gradient", "npix": "Pixels used",
           "group": "Group",
           "component": "Component", "valid": ""}
_WITH_UNIT = ("sky", "sky_err")


@dataclass(frozen=True)
class Ramp:
    """A colour bar: ``stops`` from ``vmin`` to ``vmax``, with its title."""

    stops: tuple
    vmin: float
    vmax: float
    title: str

    def as_json(self) -> dict:
        """The front end's colour bar (``FootprintMap.colorbar``)."""
        return {"kind": "ramp", "colors": list(self.stops), "vmin": self.vmin, "vmax": self.vmax,
                "label": self.title}


@dataclass(frozen=True)
class Categories:
    """A legend of discrete colours: at most `MAX_LEGEND` entries, then how many more.

    ``hatched``: the entry drawn hatched (images without a valid sky), or "".
    """

    labels: tuple
    colors: tuple
    title: str
    more: int = 0
    hatched: str = ""

    @classmethod
    def of(cls, entries: dict, title: str, hatched: str = "") -> Categories:
        """From {label: colour}, in order, cut to `MAX_LEGEND`."""
        labels, colors = list(entries), list(entries.values())
        return cls(tuple(labels[:MAX_LEGEND]), tuple(colors[:MAX_LEGEND]), title,
                   max(0, len(labels) - MAX_LEGEND), hatched)

    def as_json(self) -> dict:
        """The front end's legend (``FootprintMap.colorbar``)."""
        return {"kind": "categories", "labels": list(self.labels), "colors": list(self.colors),
                "more": self.more, "label": self.title}


@dataclass(frozen=True)
class Fill:
    """The colour of each image and the legend explaining them.

    ``values``: the numbers behind a `Ramp` (NaN where missing), for a figure's own colour map.
    """

    colors: list
    legend: Ramp | Categories
    values: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Flags:
    """Per image: no valid sky (drawn hatched), outside the largest component (dashed)."""

    invalid: np.ndarray
    disconnected: np.ndarray

    def as_lists(self) -> list[list[str]]:
        """``[["invalid", "disconnected"], [], ...]``: the front end's ``flags``."""
        return [(["invalid"] if i else []) + (["disconnected"] if d else [])
                for i, d in zip(self.invalid.tolist(), self.disconnected.tolist())]


@dataclass(frozen=True)
class PairColors:
    """Overlap lines coloured by the residual after the solve (unused pairs: `MISSING`)."""

    colors: list
    legend: Ramp


# -- choices, titles, units ------------------------------------------------------------------------
def check_color_by(value) -> str:
    """``value`` if it is one of `COLOR_BY`, else a ValueError listing them."""
    if value not in COLOR_BY:
        raise ValueError(f"color_by must be one of {list(COLOR_BY)}; got {value!r}")
    return value


def quantity_title(quantity: str, method: str = "") -> str:
    """The name of a quantity on a colour bar or a legend (without the unit).

    With ``skymethod="match"`` the skies are offsets from the anchor, not absolute levels.

    Examples
    --------
    >>> quantity_title("sky", "match"), quantity_title("sky", "global+match")
    ('Sky offset', 'Sky level')
    """
    if quantity == "sky":
        return "Sky offset" if method == "match" else "Sky level"
    return _TITLES[quantity]


def with_unit(label: str, unit: str) -> str:
    """``"label [unit]"``, or the label alone when the unit is not known.

    Examples
    --------
    >>> with_unit("Sky level", "MJy/sr"), with_unit("Sky level", "")
    ('Sky level [MJy/sr]', 'Sky level')
    """
    return f"{label} [{unit}]" if unit else label


#: Where `short_names` may cut a name: after or before one of these.
_NAME_SEPARATORS = "_-. /"


def short_names(names) -> tuple[list[str], str]:
    """Names without the prefix and suffix all of them share, for an axis's ticks.

    Pipeline file names differ in a few characters of 30 or more
    (``jw01234001001_02101_00001_nrcb1_cal``): along an axis only what differs is told.  A
    prefix or suffix is dropped only whole, up to a separator (``_ - . / `` or a space), and
    only when every name keeps something (else the one of the two that saves more).  Returns
    the labels and the pattern they stand in (``"jw01234001001_02101_…_cal"``), or the names
    and ``""`` when nothing is shared.

    Examples
    --------
    >>> short_names(["jw01_00001_nrcb1_cal", "jw01_00001_nrcb2_cal", "jw01_00002_nrcb1_cal"])
    (['00001_nrcb1', '00001_nrcb2', '00002_nrcb1'], 'jw01_…_cal')
    >>> short_names(["img00", "img01"])  # no separator: nothing is cut
    (['img00', 'img01'], '')
    """
    names = [str(n) for n in names]
    if len(names) < 2:
        return names, ""
    # (character by character, as wanted here: the names are not paths)
    prefix = os.path.commonprefix(names)  # noqa: RUF071
    cut = max(prefix.rfind(c) for c in _NAME_SEPARATORS) + 1  # (0: no separator)
    reversed_suffix = os.path.commonprefix([n[::-1] for n in names])  # noqa: RUF071
    back = max(reversed_suffix.rfind(c) for c in _NAME_SEPARATORS) + 1
    shortest = min(len(n) for n in names)
    # both cuts, else the one that saves more, as long as every name keeps something
    cuts = [c for c in sorted([(cut, back), (cut, 0), (0, back)], key=lambda c: -sum(c))
            if sum(c) > 0 and shortest - sum(c) > 0]
    if not cuts:
        return names, ""
    cut, back = cuts[0]
    labels = [n[cut : len(n) - back] for n in names]
    return labels, f"{names[0][:cut]}…{names[0][len(names[0]) - back:]}"


def sky_unit(result: xr.Dataset | None, variable: str = "sky") -> str:
    """The unit of a result's sky values (its ``units`` attribute), or ``""``."""
    if result is not None and variable in result.variables:
        return str(result[variable].attrs.get("units", "") or "")
    return ""


def number(value: float) -> str:
    """A short number for tooltips: 4 significant digits, ``n/a`` when not finite."""
    return f"{value:.4g}" if np.isfinite(value) else "n/a"


# -- images ---------------------------------------------------------------------------------------
def largest_component(component) -> int:
    """The connected component with the most images (the smallest label among equals)."""
    values, counts = np.unique(np.asarray(component, int), return_counts=True)
    return int(values[np.argmax(counts)]) if values.size else 0


def image_flags(result: xr.Dataset | None, n: int, *, disconnected: bool = True) -> Flags:
    """Which images have no valid sky, and which lie outside the largest component."""
    invalid = np.zeros(n, bool)
    outside = np.zeros(n, bool)
    if result is not None and "valid" in result:
        invalid = ~result["valid"].values.astype(bool)
    if result is not None and disconnected and "component" in result:
        component = result["component"].values.astype(int)
        outside = component != largest_component(component)
    return Flags(invalid, outside)


def group_palette(texts) -> dict:
    """{group text: colour} in order of first appearance; ``""`` (alone) gets `MISSING`."""
    labels = [t or None for t in texts]
    return {("" if g is None else g): c for g, c in categorical(labels).items()} | {"": MISSING}


def value_range(values: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) of the finite values of a colour bar.

    A single value v gets the range v -+ max(|v|, 1) / 2: the middle colour of the ramp.
    """
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    vmin, vmax = float(finite.min()), float(finite.max())
    if vmin == vmax:
        vmin, vmax = vmin - 0.5 * max(abs(vmin), 1.0), vmax + 0.5 * max(abs(vmax), 1.0)
    return vmin, vmax


def image_fill(table: xr.Dataset, quantity: str, *, unit: str = "") -> Fill:
    """The colour of each image for ``quantity`` and its legend.

    Parameters
    ----------
    table : xarray.Dataset
        A result of `ImageCollection.skymatch` (its ``skymethod`` in ``attrs``), or the
        collection's ``table`` (then only ``"group"`` can be shown).
    quantity : str
        One of `COLOR_BY`.  ``sky``, ``sky_err`` and ``npix`` are shown along viridis
        (images without a valid sky in `MISSING`), the others with categorical colours.
    unit : str
        The unit of the sky values (see `sky_unit`); ``npix`` has none, ``gradient`` is in
        that unit per arcsec.
    """
    check_color_by(quantity)
    if quantity != "group" and quantity not in table.variables:
        solved = "sky" in table.variables
        missing = NO_GRADIENT if quantity == "gradient" and solved else NO_RESULT
        return Fill([MISSING] * table.sizes["image"], Categories.of({missing: MISSING}, quantity))
    title = quantity_title(quantity, str(table.attrs.get("skymethod", "")))
    if quantity in CONTINUOUS:
        values = table[quantity].values.astype(float)
        if "valid" in table:
            values = np.where(table["valid"].values.astype(bool), values, np.nan)
        vmin, vmax = value_range(values)
        if quantity == "gradient" and np.isfinite(values).any():
            vmin = 0.0  # a size: the ramp starts at no gradient
        legend = Ramp(VIRIDIS, vmin, vmax, with_unit(title, _unit_of(quantity, unit)))
        return Fill(ramp(values, vmin, vmax), legend, values)
    if quantity == "group":
        texts = [str(g) for g in table["group"].values] if "group" in table else [""] * table.sizes["image"]
        palette = group_palette(texts)
        order = sorted(set(texts), key=lambda g: (not g, texts.index(g)))  # alone last
        entries = {(g or NONE_GROUP): palette[g] for g in order}
        return Fill([palette[g] for g in texts], Categories.of(entries, title))
    if quantity == "component":
        component = table["component"].values.astype(int)
        largest = largest_component(component)
        palette = categorical(component.tolist())
        entries = {(f"{c} (largest)" if c == largest else str(c)): col for c, col in palette.items()}
        return Fill([palette[c] for c in component.tolist()], Categories.of(entries, title))
    labels = ["valid sky" if v else "no valid sky" for v in table["valid"].values.astype(bool)]
    entries = {k: c for k, c in VALID_COLORS.items() if k in labels}
    return Fill([VALID_COLORS[k] for k in labels], Categories.of(entries, title, hatched="no valid sky"))


def _unit_of(quantity: str, unit: str) -> str:
    """The unit of a quantity shown for sky values in ``unit``."""
    if quantity == "gradient":
        return gradient_unit(unit)
    return unit if quantity in _WITH_UNIT else ""


# -- pairs ----------------------------------------------------------------------------------------
def pair_colors(result: xr.Dataset, *, unit: str = "") -> PairColors:
    """Colours of the overlaps: the residual after the solve, white at zero, blue-red at +-max."""
    after = result["diff_after"].values.astype(float)
    used = result["pair_valid"].values.astype(bool)
    finite = np.abs(after[np.isfinite(after)])
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    colors = [c if ok else MISSING for c, ok in zip(diverging(after, limit), used.tolist())]
    return PairColors(colors, Ramp(DIVERGING, -limit, limit,
                                   with_unit("Overlap residual after solve", unit)))
