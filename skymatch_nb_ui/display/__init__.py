"""How results are shown, in one place for the widgets and the figures.

- `colors`: the palettes (Okabe-Ito categories, viridis, a diverging ramp, the data, invalid
  and "before" colours, and their variants for dark pages);
- `encodings`: quantities to colours and legends, flags, units, titles, numbers;
- `projection`: footprint centres and the map projection (tangent plane, or all-sky when
  the images are too far apart for one);
- `planes`: fitted sky planes (``skymodel="plane"``): gradient arrows, planes on a grid.

`skymatch_nb_ui.widgets` and `skymatch_nb_ui.plotting` draw what these decide; neither
computes a colour, a legend, a limit or a centre of its own.  Needs only numpy and xarray.
"""

from . import colors, encodings, planes, projection

__all__ = ["colors", "encodings", "planes", "projection"]
