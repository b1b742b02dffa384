"""Pure computation: geometry, statistics and solve over numpy arrays.

Nothing here knows of xarray, widgets, files or plotting; the rest of the package builds on it.
"""

from .exceptions import DisconnectedMosaicWarning, SkyMatchWarning
from .result import PairTable, SkyMatchResult
from .skymatch import ANCHORS, SKYMETHODS, SkyMatcher, skymatch
from .stats import SKYSTATS, SkyStat, StatParams, sky_statistic

__all__ = [
    "ANCHORS",
    "SKYMETHODS",
    "SKYSTATS",
    "DisconnectedMosaicWarning",
    "PairTable",
    "SkyMatchResult",
    "SkyMatchWarning",
    "SkyMatcher",
    "SkyStat",
    "StatParams",
    "sky_statistic",
    "skymatch",
]
