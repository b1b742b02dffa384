"""Jupyter widgets: a footprint map, a group editor, a results table and the app composing them.

Needs the ``widgets`` extra: ``pip install skymatch-nb-ui[widgets]``.

>>> from skymatch_nb_ui import ImageCollection
>>> from skymatch_nb_ui.widgets import SkyMatchApp
>>> app = SkyMatchApp(ImageCollection.from_fits("data/*_cal.fits"))   # doctest: +SKIP
>>> app                                                                # doctest: +SKIP
"""

try:
    import anywidget  # noqa: F401
    import bqplot  # noqa: F401
    import ipywidgets  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"skymatch_nb_ui.widgets needs anywidget, ipywidgets and bqplot ({exc.name} is missing); "
        "install them with: pip install skymatch-nb-ui[widgets]"
    ) from exc

from .app import SkyMatchApp
from .footprint_map import FootprintMap
from .group_editor import GroupEditor
from .results_table import ResultsTable

__all__ = ["FootprintMap", "GroupEditor", "ResultsTable", "SkyMatchApp"]
