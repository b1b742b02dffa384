"""skymatch-nb-ui: sky (background) matching of overlapping astronomical images.

The engine (`skymatch`, `SkyMatcher`) measures each image's sky and makes the skies agree
where images overlap, with the semantics of the JWST/Roman pipelines' ``stcal.skymatch``.

>>> import skymatch_nb_ui as sm
>>> from skymatch_nb_ui.testing import make_mosaic
>>> m = make_mosaic((2, 3), sky=[100, 120, 105, 110, 105, 115])
>>> sm.skymatch(m.images, m.wcs, skymethod="global+match", skystat="mean").sky.round(6).tolist()
[100.0, 120.0, 105.0, 110.0, 105.0, 115.0]
"""

from ._version import __version__
from .engine import (
    ANCHORS,
    SKYMETHODS,
    SKYSTATS,
    DisconnectedMosaicWarning,
    PairTable,
    Progress,
    SkyMatchCancelled,
    SkyMatcher,
    SkyMatchParams,
    SkyMatchResult,
    SkyMatchWarning,
    skymatch,
)

__all__ = [
    "ANCHORS",
    "SKYMETHODS",
    "SKYSTATS",
    "DisconnectedMosaicWarning",
    "ImageCollection",
    "PairTable",
    "Progress",
    "SkyMatchCancelled",
    "SkyMatchParams",
    "SkyMatchResult",
    "SkyMatchWarning",
    "SkyMatcher",
    "__version__",
    "skymatch",
]


def __getattr__(name):
    # xarray is imported only when the collection is first used: `import skymatch_nb_ui` stays light
    if name == "ImageCollection":
        from .collection import ImageCollection

        return ImageCollection
    raise AttributeError(f"module 'skymatch_nb_ui' has no attribute {name!r}")
