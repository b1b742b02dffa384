"""The palettes: which colours exist (how quantities map to them is `encodings`).

Colour-blind-safe choices: the Okabe-Ito palette for categories, viridis for ordered values,
and a blue-white-red diverging ramp (symmetric about zero) for signed residuals.  Every
colour is a ``#rrggbb`` string: the front end draws it as it is, matplotlib reads it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BAD_COLOR", "BEFORE_COLOR", "CATEGORICAL", "DATA_COLOR", "DIVERGING", "HATCH_COLOR", "MISSING",
    "VIRIDIS", "VIRIDIS_LUT", "ThemeColors", "categorical", "diverging", "ramp", "theme_colors",
]

#: Okabe & Ito (2008), without black (kept for outlines), then a few extra distinct hues.
CATEGORICAL = (
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
    "#332288", "#882255", "#44AA99", "#117733", "#DDCC77", "#AA4499", "#88CCEE",
)

#: matplotlib's viridis, all 256 entries: a value gets the entry matplotlib would give it, so a
#: widget and a figure of one result show the very same colours.
VIRIDIS_LUT = (
    "#440154", "#440256", "#450457", "#450559", "#46075a", "#46085c", "#460a5d", "#460b5e",
    "#470d60", "#470e61", "#471063", "#471164", "#471365", "#481467", "#481668", "#481769",
    "#48186a", "#481a6c", "#481b6d", "#481c6e", "#481d6f", "#481f70", "#482071", "#482173",
    "#482374", "#482475", "#482576", "#482677", "#482878", "#482979", "#472a7a", "#472c7a",
    "#472d7b", "#472e7c", "#472f7d", "#46307e", "#46327e", "#46337f", "#463480", "#453581",
    "#453781", "#453882", "#443983", "#443a83", "#443b84", "#433d84", "#433e85", "#423f85",
    "#424086", "#424186", "#414287", "#414487", "#404588", "#404688", "#3f4788", "#3f4889",
    "#3e4989", "#3e4a89", "#3e4c8a", "#3d4d8a", "#3d4e8a", "#3c4f8a", "#3c508b", "#3b518b",
    "#3b528b", "#3a538b", "#3a548c", "#39558c", "#39568c", "#38588c", "#38598c", "#375a8c",
    "#375b8d", "#365c8d", "#365d8d", "#355e8d", "#355f8d", "#34608d", "#34618d", "#33628d",
    "#33638d", "#32648e", "#32658e", "#31668e", "#31678e", "#31688e", "#30698e", "#306a8e",
    "#2f6b8e", "#2f6c8e", "#2e6d8e", "#2e6e8e", "#2e6f8e", "#2d708e", "#2d718e", "#2c718e",
    "#2c728e", "#2c738e", "#2b748e", "#2b758e", "#2a768e", "#2a778e", "#2a788e", "#29798e",
    "#297a8e", "#297b8e", "#287c8e", "#287d8e", "#277e8e", "#277f8e", "#27808e", "#26818e",
    "#26828e", "#26828e", "#25838e", "#25848e", "#25858e", "#24868e", "#24878e", "#23888e",
    "#23898e", "#238a8d", "#228b8d", "#228c8d", "#228d8d", "#218e8d", "#218f8d", "#21908d",
    "#21918c", "#20928c", "#20928c", "#20938c", "#1f948c", "#1f958b", "#1f968b", "#1f978b",
    "#1f988b", "#1f998a", "#1f9a8a", "#1e9b8a", "#1e9c89", "#1e9d89", "#1f9e89", "#1f9f88",
    "#1fa088", "#1fa188", "#1fa187", "#1fa287", "#20a386", "#20a486", "#21a585", "#21a685",
    "#22a785", "#22a884", "#23a983", "#24aa83", "#25ab82", "#25ac82", "#26ad81", "#27ad81",
    "#28ae80", "#29af7f", "#2ab07f", "#2cb17e", "#2db27d", "#2eb37c", "#2fb47c", "#31b57b",
    "#32b67a", "#34b679", "#35b779", "#37b878", "#38b977", "#3aba76", "#3bbb75", "#3dbc74",
    "#3fbc73", "#40bd72", "#42be71", "#44bf70", "#46c06f", "#48c16e", "#4ac16d", "#4cc26c",
    "#4ec36b", "#50c46a", "#52c569", "#54c568", "#56c667", "#58c765", "#5ac864", "#5cc863",
    "#5ec962", "#60ca60", "#63cb5f", "#65cb5e", "#67cc5c", "#69cd5b", "#6ccd5a", "#6ece58",
    "#70cf57", "#73d056", "#75d054", "#77d153", "#7ad151", "#7cd250", "#7fd34e", "#81d34d",
    "#84d44b", "#86d549", "#89d548", "#8bd646", "#8ed645", "#90d743", "#93d741", "#95d840",
    "#98d83e", "#9bd93c", "#9dd93b", "#a0da39", "#a2da37", "#a5db36", "#a8db34", "#aadc32",
    "#addc30", "#b0dd2f", "#b2dd2d", "#b5de2b", "#b8de29", "#bade28", "#bddf26", "#c0df25",
    "#c2df23", "#c5e021", "#c8e020", "#cae11f", "#cde11d", "#d0e11c", "#d2e21b", "#d5e21a",
    "#d8e219", "#dae319", "#dde318", "#dfe318", "#e2e418", "#e5e419", "#e7e419", "#eae51a",
    "#ece51b", "#efe51c", "#f1e51d", "#f4e61e", "#f6e620", "#f8e621", "#fbe723", "#fde725",
)

#: viridis at 9 points (every 32nd entry and the last): the stops of a colour bar's gradient.
VIRIDIS = (*VIRIDIS_LUT[::32], VIRIDIS_LUT[-1])

#: blue - white - red, for residuals (ColorBrewer RdBu, reversed so that red is positive).
DIVERGING = ("#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62", "#b2182b")

#: The colour of missing values (NaN, invalid images, images alone in a group legend).
MISSING = "#bdbdbd"

#: The data (a sky, the residuals after matching), on light backgrounds: Okabe-Ito blue.
DATA_COLOR = CATEGORICAL[4]
#: What has no valid sky: Okabe-Ito vermillion.
BAD_COLOR = CATEGORICAL[5]
#: The differences before matching: a neutral grey.
BEFORE_COLOR = "#737373"
#: The hatching of footprints without a valid sky.
HATCH_COLOR = "#4d4d4d"


def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[k : k + 2], 16) for k in (1, 3, 5)], float)


def hex_colors(rgb: np.ndarray) -> list[str]:
    """``#rrggbb`` strings of an (n, 3) array of 0-255 values."""
    text = np.ascontiguousarray(rgb, np.uint8).tobytes().hex()
    return ["#" + text[k : k + 6] for k in range(0, len(text), 6)]


def _unit_interval(values, vmin: float | None, vmax: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(t in [0, 1], finite) of ``values`` between ``vmin`` and ``vmax`` (default: their range)."""
    v = np.asarray(values, float)
    finite = np.isfinite(v)
    if not finite.any():
        return np.zeros(v.shape), finite
    lo = float(v[finite].min()) if vmin is None else vmin
    hi = float(v[finite].max()) if vmax is None else vmax
    span = hi - lo if hi > lo else 1.0
    return np.clip(np.nan_to_num((v - lo) / span), 0.0, 1.0), finite


def ramp(values, vmin: float | None = None, vmax: float | None = None, lut=VIRIDIS_LUT) -> list[str]:
    """The colour of each value in a look-up table, as matplotlib picks it; NaN gets `MISSING`.

    A value at fraction ``t`` of ``[vmin, vmax]`` (default: the values' range) gets entry
    ``min(floor(t * len(lut)), len(lut) - 1)``, matplotlib's rule for a listed colour map.

    Examples
    --------
    >>> ramp([0.0, 1.0, float("nan")])
    ['#440154', '#fde725', '#bdbdbd']
    """
    t, finite = _unit_interval(values, vmin, vmax)
    index = np.minimum((t * len(lut)).astype(int), len(lut) - 1)
    return [lut[k] if ok else MISSING for k, ok in zip(index.tolist(), finite.tolist())]


def interpolated(values, stops, vmin: float | None = None, vmax: float | None = None) -> list[str]:
    """Colours interpolated linearly (in RGB) between ``stops``; NaN gets `MISSING`."""
    t, finite = _unit_interval(values, vmin, vmax)
    rgb = np.array([_rgb(s) for s in stops])
    pos = t * (len(stops) - 1)
    k = np.minimum(np.floor(pos).astype(int), len(stops) - 2)
    frac = (pos - k)[:, None]
    colors = np.clip(np.rint(rgb[k] * (1 - frac) + rgb[k + 1] * frac), 0, 255)
    colors[~finite] = _rgb(MISSING)
    return hex_colors(colors)


def diverging(values, limit: float | None = None) -> list[str]:
    """Colours for signed values, white at zero, saturated at +-``limit`` (default: max |v|).

    Examples
    --------
    >>> diverging([-2.0, 0.0, 2.0])
    ['#2166ac', '#f7f7f7', '#b2182b']
    """
    v = np.asarray(values, float)
    finite = np.isfinite(v)
    if limit is None:
        limit = float(np.abs(v[finite]).max()) if finite.any() else 1.0
    limit = limit if limit > 0 else 1.0
    return interpolated(v, DIVERGING, -limit, limit)


def categorical(labels) -> dict:
    """A colour per distinct label, in order of first appearance (None gets `MISSING`).

    Examples
    --------
    >>> categorical(["a", "b", "a", None])
    {'a': '#E69F00', 'b': '#56B4E9', None: '#bdbdbd'}
    """
    colors: dict = {}
    for label in labels:
        if label not in colors:
            colors[label] = MISSING if label is None else CATEGORICAL[
                sum(k is not None for k in colors) % len(CATEGORICAL)
            ]
    return colors


def luminance(color: str) -> float:
    """Relative luminance (WCAG) of a ``#rrggbb`` colour, 0 (black) to 1 (white)."""
    c = _rgb(color) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(linear @ [0.2126, 0.7152, 0.0722])


@dataclass(frozen=True)
class ThemeColors:
    """Colours of marks that cannot read the page's CSS variables (bqplot's, drawn by Python).

    Attributes
    ----------
    data, bad, before, zero : str
        The sky and the residuals after matching; what has no valid sky; the differences
        before matching; the zero line.
    """

    data: str
    bad: str
    before: str
    zero: str


#: On a light page: the figures' colours.  On a dark page lighter colours of the same roles:
#: the data, the invalid and the "before" marks keep a contrast above 6 with JupyterLab's dark
#: backgrounds (#111111, #212121), where the light page's blue falls to about 3.
_THEMES = {
    False: ThemeColors(data=DATA_COLOR, bad=BAD_COLOR, before=BEFORE_COLOR, zero="#9e9e9e"),
    True: ThemeColors(data=CATEGORICAL[1], bad="#ff7f3f", before="#a6a6a6", zero="#757575"),
}


def theme_colors(dark: bool) -> ThemeColors:
    """The colours of Python-drawn marks for a light (False) or dark (True) page.

    Examples
    --------
    >>> theme_colors(False).data == DATA_COLOR
    True
    """
    return _THEMES[bool(dark)]
