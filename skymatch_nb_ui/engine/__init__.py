"""Pure computation: geometry, statistics and solve over numpy arrays.

Nothing here knows of xarray, widgets, files or plotting; the rest of the package builds on it.

One module per concept, in the order of the data flow:

- ``params``: the run parameters, defined once (`SkyMatchParams`, `StatParams`);
- ``loaders``: where pixels come from (arrays in memory, or loaders read on demand);
- ``groups``: images -> inputs (the images that share one sky);
- ``geometry``: stage 1, footprints and the pixels of each overlap;
- ``stats``: the sky statistic of one set of pixel values;
- ``measure``: stage 2, statistics of images over their overlaps, as independent tasks
  (``differences``: the pixel differences of a pair without a common grid);
- ``solve``: stage 3, one function per ``skymethod`` (``lstsq``: the least-squares step,
  ``covariance``: how pair statistics that share pixels are correlated);
- ``result``: what a run returns;
- ``matcher``: `SkyMatcher` (the stages in order, cached) and `skymatch` (one call);
- ``_execute``: where the statistics tasks run (threads, processes, Dask), progress, cancel;
- ``_validate``: the checks of every input at the boundary.
"""

from ._execute import SCHEDULERS, Progress
from .exceptions import DisconnectedMosaicWarning, SkyMatchCancelled, SkyMatchWarning
from .loaders import ArrayImage, ImageLoader
from .matcher import SkyMatcher, skymatch
from .params import (
    ANCHORS,
    COMPARES,
    SKYMETHODS,
    SKYSTATS,
    ParamSpec,
    SkyMatchParams,
    StatParams,
)
from .result import PairTable, SkyMatchResult, subtracted_copy
from .stats import SkyStat, sky_statistic

__all__ = [
    "ANCHORS",
    "COMPARES",
    "SCHEDULERS",
    "SKYMETHODS",
    "SKYSTATS",
    "ArrayImage",
    "DisconnectedMosaicWarning",
    "ImageLoader",
    "PairTable",
    "ParamSpec",
    "Progress",
    "SkyMatchCancelled",
    "SkyMatchParams",
    "SkyMatchResult",
    "SkyMatchWarning",
    "SkyMatcher",
    "SkyStat",
    "StatParams",
    "sky_statistic",
    "skymatch",
    "subtracted_copy",
]
