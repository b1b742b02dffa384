"""Synthetic mosaics with known skies, and the reference engine as an oracle.

Helpers for tests, benchmarks and tutorials:

- `make_mosaic` builds a grid of overlapping images with celestial TAN WCSs and a known sky
  per image, constant or a plane (plus optional noise, sources, NaN holes and bad-pixel masks);
- `Mosaic` holds the result; ``+`` concatenates mosaics (e.g. to build a disconnected one);
- `reference_skymatch` runs the reference engine (``stcal.skymatch``, a test-only
  dependency) on the same inputs as `skymatch_nb_ui.skymatch`;
- `nircam_like_gwcs` builds a ``gwcs.WCS`` the way the JWST pipeline does (distortion,
  v2/v3, sky rotation, bounding box);
- `write_jwst_cal`, `write_hst_flt` and `write_roman_cal` write files as the instruments'
  pipelines do, with their own libraries (``stdatamodels``, astropy with real ACS headers,
  ``roman_datamodels``).
- `skymatch_nb_ui.testing.lab.jupyterlab_server` runs a throw-away JupyterLab server (the
  browser tests and the app benchmarks).

>>> from skymatch_nb_ui.testing import make_mosaic
>>> m = make_mosaic((2, 3), sky=[100, 120, 105, 110, 105, 115])
>>> len(m), m.images[0].shape, m.names[:2]
(6, (100, 100), ['img00', 'img01'])
"""

from .instruments import nircam_like_gwcs, write_hst_flt, write_jwst_cal, write_roman_cal
from .mosaics import Mosaic, make_mosaic, tiling_pairs
from .reference import reference_skymatch

__all__ = [
    "Mosaic",
    "make_mosaic",
    "nircam_like_gwcs",
    "reference_skymatch",
    "tiling_pairs",
    "write_hst_flt",
    "write_jwst_cal",
    "write_roman_cal",
]
