"""Colours computed in Python for the widgets (the front end only draws them).

Colour-blind-safe choices: the Okabe-Ito palette for categories, viridis for ordered values,
and a blue-white-red diverging ramp (symmetric about zero) for signed residuals.
"""

from __future__ import annotations

import numpy as np

#: Okabe & Ito (2008), without black (kept for outlines), then a few extra distinct hues.
CATEGORICAL = (
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
    "#332288", "#882255", "#44AA99", "#117733", "#DDCC77", "#AA4499", "#88CCEE",
)

#: viridis sampled at 9 points (matplotlib's values), interpolated linearly in RGB.
VIRIDIS = (
    "#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30",
    "#fde725",
)

#: blue - white - red, for residuals (ColorBrewer RdBu, reversed so that red is positive).
DIVERGING = ("#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62", "#b2182b")

#: The colour of missing values (NaN, invalid images).
MISSING = "#bdbdbd"


def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[k : k + 2], 16) for k in (1, 3, 5)], float)


def ramp(values, stops=VIRIDIS, vmin: float | None = None, vmax: float | None = None) -> list[str]:
    """Map values to colours along ``stops``; NaN gets `MISSING`.

    Examples
    --------
    >>> ramp([0.0, 1.0, float("nan")])
    ['#440154', '#fde725', '#bdbdbd']
    """
    v = np.asarray(values, float)
    finite = np.isfinite(v)
    if not finite.any():
        return [MISSING] * len(v)
    lo = np.nanmin(v[finite]) if vmin is None else vmin
    hi = np.nanmax(v[finite]) if vmax is None else vmax
    span = hi - lo if hi > lo else 1.0
    t = np.clip((v - lo) / span, 0.0, 1.0)
    rgb = np.array([_rgb(s) for s in stops])
    pos = t * (len(stops) - 1)
    k = np.minimum(np.floor(np.nan_to_num(pos)).astype(int), len(stops) - 2)
    frac = (np.nan_to_num(pos) - k)[:, None]
    colors = np.clip(np.rint(rgb[k] * (1 - frac) + rgb[k + 1] * frac), 0, 255).astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" if ok else MISSING
            for (r, g, b), ok in zip(colors.tolist(), finite.tolist())]


def diverging(values, limit: float | None = None) -> list[str]:
    """Colours for signed values, white at zero, saturated at +-``limit`` (default: max |v|)."""
    v = np.asarray(values, float)
    finite = np.isfinite(v)
    if limit is None:
        limit = float(np.abs(v[finite]).max()) if finite.any() else 1.0
    limit = limit if limit > 0 else 1.0
    return ramp(v, DIVERGING, -limit, limit)


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
