"""Write the tutorial notebooks from the cells below (outputs are never committed).

Run ``python notebooks/make_notebooks.py`` after editing a notebook's cells here; this keeps
the notebooks reviewable as plain Python.  Cell ids are derived from the notebook's name and
the cell's position, so regenerating unchanged cells rewrites identical files.

Each notebook says what it teaches in its first cell, runs in well under a minute, and is
executed by the test suite (``pytest --nbmake notebooks/``); the ones that reproduce known
numbers assert them, so a broken engine fails the notebook.
"""

from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).parent

QUICKSTART = [
    ("markdown", """# Quickstart: match the sky of real exposures, and see it

**What this teaches:** build an `ImageCollection` from images and their WCS, open the
`SkyMatchApp`, and read the result from Python.

The pixels are real: the Hubble Deep Field (the picture that scikit-image ships) seen through
the real distortion of HST's ACS/WFC camera (a header that astropy ships with its tests). Four
dithered exposures, each with the camera's two detectors, so eight images of 512 x 256 binned
pixels. Each exposure got its own sky level, which we know, and noise. Matching should bring
the sky *differences* back: overlaps tell only how images differ, not what the true zero is.

In the app, hover a footprint to read its sky, click or shift-click to select, drag with shift
to select a box; change a parameter or a group and the solve re-runs. Everything the app shows
is also in `app.result` and `app.params`."""),
    ("code", """import numpy as np
from skymatch_nb_ui.datasets import hubble_deep_field_exposures
from skymatch_nb_ui.widgets import SkyMatchApp

hdf = hubble_deep_field_exposures(seed=1)
coll = hdf.collection(group_by="exposure")   # the two detectors of an exposure share one sky
coll"""),
    ("markdown", """Two of the images as they come, on one grey scale: exposure 1 and exposure 2 see
the same galaxies through different pixels, on skies that differ by 12.5."""),
    ("code", """import matplotlib.pyplot as plt
from astropy.visualization import AsinhStretch, ImageNormalize

norm = ImageNormalize(vmin=130, vmax=1100, stretch=AsinhStretch(0.05))
fig, axes = plt.subplots(1, 2, figsize=(9, 2.4), layout="constrained")
for ax, name in zip(axes, ["e1_wfc1", "e2_wfc1"]):
    shown = ax.imshow(coll.data(name), origin="lower", cmap="gray", norm=norm)
    ax.set_title(f"{name}: sky {hdf.sky[coll.names.index(name)]}")
    ax.set_axis_off()
fig.colorbar(shown, ax=axes, shrink=0.8, label="counts")
plt.show()"""),
    ("code", """app = SkyMatchApp(coll, skymethod="match", skystat="median")
app"""),
    ("markdown", """The app's Python face: parameters, groups and selection are plain attributes.
Setting them updates the widgets, and the widgets update them; `app.result` is the result the
app shows."""),
    ("code", """print("status:", app.status)
app.result[["group", "sky", "sky_err", "valid"]].to_dataframe().round(3)"""),
    ("markdown", """Against the truth: `match` finds the skies up to one constant (the lowest is
zero, `match_down=True`), so compare differences: what is left after removing the mean
should be zero within the uncertainties."""),
    ("code", """left = app.result.sky.values - hdf.sky
left -= left.mean()
print("found - true, less the mean:", left.round(3))
print("uncertainty:                ", app.result.sky_err.values.round(3))
assert np.all(np.abs(left) < 3 * app.result.sky_err.values)"""),
    ("markdown", """An assignment takes effect at once, so the next line already reads the new
result. `global+match` adds one constant to the match offsets so that the faintest image
after matching keeps its own level: here that level includes the picture's own dark
background, which the true skies do not."""),
    ("code", """app.params = {"skymethod": "global+match"}
assert app.result.attrs["skymethod"] == "global+match"   # already the new result
app.result.sky.values.round(1)"""),
]


# -- 02 ------------------------------------------------------------------------------------------
METHODS = [
    ("markdown", r"""# The four sky methods, on the reference's documented examples

**What this teaches:** what `skymethod="local"`, `"global"`, `"match"` and `"global+match"`
compute, on the two examples tabulated in the documentation of the reference engine
(`stcal.skymatch`, the sky-matching step of the JWST and Roman pipelines); why a mosaic made of
two parts that do not overlap gets the odd values 8.75, 86.25, ...; and `anchor="component"`,
which gives each part its own absolute sky.

Every image here is a constant sky and nothing else, so any statistic of it (`mean`,
`median`, `mode`, `midpt`) is exact and the tables must come out exactly as documented. The
notebook asserts them: if the engine breaks, the notebook fails."""),
    ("code", """import warnings

import numpy as np
import pandas as pd

from skymatch_nb_ui import DisconnectedMosaicWarning, ImageCollection
from skymatch_nb_ui.testing import make_mosaic
from skymatch_nb_ui.widgets import FootprintMap

METHODS = ["local", "global", "match", "global+match"]


def sky_table(coll, **params):
    \"\"\"The sky of every image (rows) under each method (columns).\"\"\"
    return pd.DataFrame(
        {method: coll.skymatch(skymethod=method, **params).sky.values for method in METHODS},
        index=list(coll.names),
    )"""),
    ("markdown", """## 1. A connected mosaic: 2 x 3 images

Six 100 x 100-pixel images (0.1" pixels) on a 2 x 3 grid; neighbours overlap by 20 % of an
image side, diagonal neighbours in a small corner. The skies are 100, 120, 105 in the southern
row (`img00`-`img02`, east to west) and 110, 105, 115 in the northern row (`img03`-`img05`).
All parameters are the defaults of the JWST pipeline's skymatch step except `skymethod`."""),
    ("code", """sky_2x3 = [100, 120, 105, 110, 105, 115]
m = make_mosaic((2, 3), sky=sky_2x3)
grid = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
table = sky_table(grid)
table"""),
    ("code", """documented = {
    "local": sky_2x3,
    "global": [100] * 6,
    "match": [0, 20, 5, 10, 5, 15],
    "global+match": sky_2x3,
}
for method, values in documented.items():
    np.testing.assert_allclose(table[method], values, rtol=0, atol=1e-9, err_msg=method)"""),
    ("markdown", r"""In every column, `sky` is **the value to subtract** from the image.

- **local**: each image's own statistic over all of its good pixels. The overlaps play no
  part. Right when every image has enough blank sky and no two differ for any other reason.
- **global**: the lowest local value, given to every image. Meant for images that share one
  sky and whose differences are not real; here it leaves offsets of up to 20 between images.
- **match**: only *differences*. In the overlap of images $i$ and $j$ the two are compared
  over the same patch of sky, giving the difference $\Delta_{ij}$ of their skies; the
  offsets $d$ minimise $\sum_{\rm pairs} w_{ij}^2\,\bigl(d_i - d_j - \Delta_{ij}\bigr)^2$,
  with $w_{ij}$ the pair's pixel count. By default (`compare="differences"`) $\Delta_{ij}$
  is the statistic of the pixel differences $i - j$, image $j$ interpolated at the pixels of
  $i$, so that whatever both see (a nebula, stars) cancels; `compare="levels"` takes the
  statistic of each side, $s_i^{(j)} - s_j^{(i)}$, as the reference does. Overlaps fix
  differences only, so the offsets are defined up to one additive constant; `match_down=True`
  (the default) makes the
  lowest one zero. Subtracting them leaves every image at the level of the faintest one
  (here 100): a seamless mosaic that still contains its sky.
- **global+match**: the match offsets plus one constant, $\min_k(\text{local}_k - d_k)$,
  which puts the image that looks faintest *after* matching at its local level. For a
  connected mosaic of blank sky these are the absolute skies.

The result also holds the overlaps and their residuals, over its `pair` dimension:"""),
    ("code", """matched = grid.skymatch(skymethod="match")
matched[["npix_a", "diff_before", "diff_err", "diff_after", "flagged"]].to_dataframe()"""),
    ("markdown", """Eleven overlaps: seven between edge neighbours (2000 pixels each) and four between
diagonal neighbours (a 20 x 20-pixel corner). `diff_before` is how much the two images
disagree in their overlap, `diff_after` what is left once the matched skies are subtracted:
zero everywhere, since constant skies are exactly consistent. On real data, a large
`diff_after` points at an overlap that disagrees with the rest: a bright source's wing,
scattered light, a bad flat field; the robust solve (`robust=True`, the default)
down-weights such an overlap and sets its `flagged`.

The footprint map shows the images on the plane tangent at the mosaic's centre, north up and
east to the left, coloured by the result; hover an image to read its sky, or colour it by
another quantity with the menu."""),
    ("code", """FootprintMap(grid, grid.skymatch(skymethod="global+match"))"""),
    ("markdown", """## 2. A mosaic in two parts

The reference's second example: a 2 x 2 mosaic with skies 100, 120, 105, 110 and, 0.1 deg
(6 arcmin) to the east, a strip of three images with skies 95, 90, 100 that touches none of the
first four. The match methods raise a `DisconnectedMosaicWarning`, which we collect here."""),
    ("code", """first = make_mosaic((2, 2), sky=[100, 120, 105, 110])
second = make_mosaic((1, 3), sky=[95, 90, 100], center=(150.1, 2.0), prefix="b")
both = first + second
parts = ImageCollection.from_arrays(both.images, both.wcs, names=both.names)

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    table = sky_table(parts)
messages = {str(w.message) for w in caught if issubclass(w.category, DisconnectedMosaicWarning)}
print(*messages, sep="\\n")
table"""),
    ("code", """assert len(messages) == 1
documented = {
    "local": [100, 120, 105, 110, 95, 90, 100],
    "global": [90] * 7,
    "match": [0, 20, 5, 10, 8.75, 3.75, 13.75],
    "global+match": [86.25, 106.25, 91.25, 96.25, 95, 90, 100],
}
for method, values in documented.items():
    np.testing.assert_allclose(table[method], values, rtol=0, atol=1e-9, err_msg=method)"""),
    ("markdown", r"""`local` and `global` ignore overlaps and are as before. `match` and
`global+match` are not: `match` puts `b01`, the faintest image of the strip, 3.75 *above*
`img00`, whose sky is 10 higher; and `global+match` puts the 2 x 2 part 13.75 below its true
sky.

### Why 8.75, 3.75, 13.75 and 86.25

Think of the images as the nodes of a graph whose edges are the overlaps. Here the graph has
two connected components. Inside a component the overlaps fix every offset relative to the
others; *between* components nothing does, so the least-squares problem has one free constant
per component, not one in all. The solver (as the reference's) returns the minimum-norm
solution, in which **the offsets of each component have zero mean**:

| component | skies | mean | zero-mean offsets $d$ |
|---|---|---|---|
| 0 (`img00`-`img03`) | 100, 120, 105, 110 | 108.75 | −8.75, 11.25, −3.75, 1.25 |
| 1 (`b00`-`b02`) | 95, 90, 100 | 95 | 0, −5, 5 |

- **match**: `match_down` subtracts the lowest offset of the *whole* mosaic, −8.75, giving
  0, 20, 5, 10 and 8.75, 3.75, 13.75. The strip has been shifted against the 2 x 2 part by
  the difference of their mean skies (108.75 − 95 = 13.75): an artefact of the zero-mean
  convention, not a measurement.
- **global+match** adds $\min_k(\text{local}_k - d_k)$ to the zero-mean offsets. Within
  one component $\text{local}_k - d_k$ is the same for every image: the component's mean sky
  (108.75 and 95). One constant for both components must be the smaller, 95, so the strip
  comes out right and the 2 x 2 part 108.75 − 95 = 13.75 too low: 95 − 8.75 = 86.25, and so on.

The result carries the pieces of this computation: `component`, `local` and the zero-mean
`delta`."""),
    ("code", """with warnings.catch_warnings():
    warnings.simplefilter("ignore", DisconnectedMosaicWarning)
    result = parts.skymatch(skymethod="global+match")
steps = result[["component", "local", "delta", "sky"]].to_dataframe()
steps["local - delta"] = steps["local"] - steps["delta"]
steps.round(6)"""),
    ("code", """assert result.component.values.tolist() == [0, 0, 0, 0, 1, 1, 1]
component_means = steps.groupby("component")["local - delta"].min()
np.testing.assert_allclose(component_means, [108.75, 95.0], atol=1e-9)
np.testing.assert_allclose(result.sky, result.delta + component_means.min(), atol=1e-9)"""),
    ("markdown", """On the map, colour by `component`: images outside the largest component
also have a dashed outline."""),
    ("code", """FootprintMap(parts, result, color_by="component")"""),
    ("markdown", r"""### The fix: `anchor="component"`

With `anchor="component"` the constant is chosen in each component separately: for
`global+match`, $\min_k(\text{local}_k - d_k)$ over the component's images; for `match`, the
lowest offset of the component becomes zero. Each part then gets its own absolute sky, the
true one here.

The warning is still raised, and rightly: the two parts remain unmatched to each other. Their
levels are now as good as the assumption that each part contains blank sky somewhere, which
is the assumption `global+match` makes for a whole connected mosaic. The real cure is data
that link the parts: notebook 03 shows both remedies on noisy data."""),
    ("code", """with warnings.catch_warnings():
    warnings.simplefilter("ignore", DisconnectedMosaicWarning)
    anchored = parts.skymatch(skymethod="global+match", anchor="component")
    relative = parts.skymatch(skymethod="match", anchor="component")

np.testing.assert_allclose(anchored.sky, [100, 120, 105, 110, 95, 90, 100], atol=1e-9)
np.testing.assert_allclose(relative.sky, [0, 20, 5, 10, 5, 0, 10], atol=1e-9)
pd.DataFrame({"global+match": anchored.sky.values, "match": relative.sky.values},
             index=list(parts.names)).rename_axis(columns='anchor="component"')"""),
]


# -- 03 ------------------------------------------------------------------------------------------
GROUPS = [
    ("markdown", """# Groups: the detectors of one exposure share one sky

**What this teaches:** why and how images are made to share one sky; groups set from Python
(`coll.groups`, `coll.set_group`) and in the `GroupEditor` widget, whose buttons are also
Python methods (`assign`, `apply_preset`, `undo`); and a mosaic in disconnected parts: how it
is reported (`DisconnectedMosaicWarning`, `result.component`) and the two remedies.

A camera with several detectors exposes them together: they see the same sky (zodiacal
light, airglow, scattered light), equal up to flat-field errors, so matching should solve for
one sky per exposure, not one per detector. A *group* is such a set of images. It is a single
unknown of the solve; its images are never compared with each other; in an overlap with
another input each member is measured over its own part of the overlap and the values are
averaged with pixel-count weights."""),
    ("markdown", """## Two exposures of a four-detector camera

A 2 x 2 array of 200 x 200-pixel detectors (0.1" pixels, so 20" on a side) with 10-pixel
gaps, exposed twice with a dither of 0.55 detector widths east and 0.30 north. The sky is 112
in exposure 1 and 97 in exposure 2, the same on all detectors, plus Gaussian noise of
σ = 2 per pixel. Detectors of one exposure do not overlap each other, only those of the other
exposure. Each image carries `exposure` and `detector` metadata (from FITS files these come
from the headers; see notebook 04)."""),
    ("code", """import warnings

import numpy as np
import pandas as pd

from skymatch_nb_ui import DisconnectedMosaicWarning, ImageCollection
from skymatch_nb_ui.testing import make_mosaic
from skymatch_nb_ui.widgets import FootprintMap, GroupEditor

DETECTOR = 200 * 0.1 / 3600  # detector side, degrees
CENTER = (150.0, 2.0)        # RA, Dec of the first pointing, degrees


def exposure(dither, sky, seed):
    \"\"\"One exposure: 2 x 2 detectors, offset by `dither` (east, north) detector widths.\"\"\"
    ra = CENTER[0] + dither[0] * DETECTOR / np.cos(np.radians(CENTER[1]))
    dec = CENTER[1] + dither[1] * DETECTOR
    return make_mosaic((2, 2), shape=(200, 200), overlap=-0.05, sky=sky, noise=2.0,
                       center=(ra, dec), seed=seed)


def collection(exposures):
    \"\"\"An ImageCollection of {exposure: mosaic}, images named e.g. e1_D3; and the true skies.\"\"\"
    images, wcs, names, meta, truth = [], [], [], [], []
    for name, mosaic in exposures.items():
        for k in range(len(mosaic)):
            images.append(mosaic.images[k])
            wcs.append(mosaic.wcs[k])
            names.append(f"{name}_D{k + 1}")
            meta.append({"exposure": name, "detector": f"D{k + 1}"})
            truth.append(mosaic.sky[k])
    return ImageCollection.from_arrays(images, wcs, names=names, meta=meta), np.array(truth)


exposures = {"e1": exposure((0, 0), 112.0, seed=1), "e2": exposure((0.55, 0.30), 97.0, seed=2)}
coll, truth = collection(exposures)
coll"""),
    ("markdown", """## Every detector alone

Without groups each detector has its own sky: eight unknowns, tied together only through the
overlaps of each detector with those of the other exposure, some of them narrow strips. The
statistic is the median: on pure Gaussian noise it is more precise than the histogram mode
(the default, `skystat="mode"`, preferred on real images for its robustness to faint
sources)."""),
    ("code", """alone = coll.skymatch(skymethod="global+match", skystat="median")
alone[["sky", "sky_err", "npix"]].to_dataframe().assign(truth=truth).round(4)"""),
    ("code", """alone[["npix_a", "diff_before", "diff_after"]].to_dataframe().round(4)"""),
    ("markdown", """The detectors of one exposure get skies that differ by a few hundredths, each
uncertain by 0.03 to 0.04; nine overlaps of 4 500 to 14 000 pixels constrain them.

## Groups from Python

`coll.groups` is a dict {image name: label}, `None` meaning alone. Assign a mapping (images
left out become alone) or a sequence of one label per image; `coll.set_group(images, label)`
changes only the images named."""),
    ("code", """coll.groups = {name: name.split("_")[0] for name in coll.names}   # e1_D3 -> e1

# the same, one exposure at a time
coll.groups = None
coll.set_group(["e1_D1", "e1_D2", "e1_D3", "e1_D4"], "e1")
coll.set_group([name for name in coll.names if name.startswith("e2")], "e2")
coll.groups"""),
    ("code", """grouped = coll.skymatch(skymethod="global+match", skystat="median")
comparison = pd.DataFrame({
    "truth": truth,
    "alone": alone.sky.values, "alone ±": alone.sky_err.values,
    "grouped": grouped.sky.values, "grouped ±": grouped.sky_err.values,
}, index=list(coll.names))
comparison.round(4)"""),
    ("code", """# one sky per exposure, within 0.05 of the truth, and more than twice as precise
assert np.allclose(grouped.sky, truth, atol=0.05)
assert len(set(grouped.sky.values[:4])) == 1 and len(set(grouped.sky.values[4:])) == 1
assert grouped.sky_err.max() < alone.sky_err.min() / 2
grouped[["npix_a", "diff_before", "diff_err", "diff_after"]].to_dataframe()"""),
    ("markdown", """Two unknowns instead of eight, constrained by all nine overlaps at once: every
detector of an exposure gets the same sky, and its uncertainty drops by a factor of two to
three. The result now has a single pair, `e1|e2`, whose difference combines those of the
overlapping detectors of the two exposures (some 92 000 pixel differences).

## Groups in the editor

`GroupEditor(coll)` shows each group as a coloured chip followed by its members. Click images
to select them, type a label and press Enter to put them in a group (new or existing);
rename, dissolve or ungroup; apply a preset; undo. The presets come from the metadata columns
of `coll.table`: *By exposure*, and *By detector*, which is offered because the column exists
but would tie detector D1 of one exposure to D1 of the other: wrong for these data. Every
accepted edit is written to `coll.groups`. In `SkyMatchApp` (notebook 01) the same editor
re-runs the solve after each edit."""),
    ("code", """editor = GroupEditor(coll)
editor"""),
    ("markdown", """Every button is also a method, so a grouping can be scripted, and the widget
above follows:"""),
    ("code", """editor.apply_preset("alone")                                   # every image alone
editor.assign(["e1_D1", "e1_D2", "e1_D3", "e1_D4"], "first")  # a new group
editor.assign(["e2_D1", "e2_D2"], "first")                    # join it: a mistake ...
editor.undo()                                                 # ... taken back
print(editor.labels, editor.members("first"))

editor.apply_preset("by:exposure")
print("preset:", editor.active_preset)
assert coll.groups == {name: name[:2] for name in coll.names}
coll.groups"""),
    ("markdown", """## A mosaic in two parts

A second field, 3.2 detector widths east of the first and observed with the same two-exposure
dither (skies 90 and 93). No image of it overlaps the first field: the overlap graph of the
four exposures falls into two connected components. The editor's `isolated` lists groups
that overlap nothing outside themselves; here none does, since the second field's two
exposures overlap each other."""),
    ("code", """exposures["e3"] = exposure((3.20, 0), 90.0, seed=3)
exposures["e4"] = exposure((3.75, 0.30), 93.0, seed=4)
fields, truth = collection(exposures)
editor = GroupEditor(fields)
editor.apply_preset("by:exposure")   # or: fields.groups = {...}
print("isolated groups:", editor.isolated)
assert editor.isolated == []

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", DisconnectedMosaicWarning)
    split = fields.skymatch(skymethod="global+match", skystat="median")
for w in caught:
    print(f"{w.category.__name__}: {w.message}")
assert any(issubclass(w.category, DisconnectedMosaicWarning) for w in caught)

split[["group", "component", "sky"]].to_dataframe().assign(truth=truth).iloc[::4].round(3)"""),
    ("code", """FootprintMap(fields, split, color_by="component")"""),
    ("markdown", """`result.component` numbers the connected component of each image (0: the largest;
on the map, images outside it have dashed outlines). Within each component the skies are
matched; between components they are not, and `global+match` with its single anchor leaves
the first field 13 too low: the same mechanism as the 86.25 of notebook 02 (the offsets of
each component have zero mean, and the anchor takes the smaller of the two components' mean
skies, 91.5, for both).

Two remedies:

1. **`anchor="component"`**: anchor each component on its own faintest sky. Right when every
   component contains blank sky, as `global+match` already assumes for a connected mosaic.
   The warning stays: the components remain unmatched to each other.
2. **Images that link the components**: here a fifth exposure between the two fields. The
   mosaic is connected again, the warning goes away, and all skies are matched.

Do not link the parts by putting images of both in one group: a group asserts that its
images share one sky, which is true of the detectors of one exposure and of nothing else."""),
    ("code", """with warnings.catch_warnings():
    warnings.simplefilter("ignore", DisconnectedMosaicWarning)
    anchored = fields.skymatch(skymethod="global+match", skystat="median", anchor="component")
assert np.allclose(anchored.sky, truth, atol=0.05)

exposures["e5"] = exposure((1.90, 0.15), 103.0, seed=5)   # overlaps both fields
linked, truth = collection(exposures)
linked.groups = {name: name[:2] for name in linked.names}
with warnings.catch_warnings():
    warnings.simplefilter("error", DisconnectedMosaicWarning)   # would fail here if still split
    joined = linked.skymatch(skymethod="global+match", skystat="median")
assert (joined.component == 0).all() and np.allclose(joined.sky, truth, atol=0.1)

pd.DataFrame({
    "truth": truth[::4],
    'anchor="component"': np.append(anchored.sky.values[::4], np.nan),
    "linked": joined.sky.values[::4], "linked ±": joined.sky_err.values[::4],
}, index=list(exposures)).round(3)"""),
]


# -- 04 ------------------------------------------------------------------------------------------
FITS_WORKFLOW = [
    ("markdown", """# From FITS files to sky-subtracted copies, in Python and on the command line

**What this teaches:** read calibrated FITS images (a `SCI` image and a `DQ` data-quality
extension each) with `ImageCollection.from_fits`, grouping the detectors of each exposure by
a header keyword; match; inspect the images (`coll.table`), the result with its overlaps
(the `pair` dimension) and the table of skies (`coll.to_table`); write sky-subtracted
copies (`coll.write_fits`) and check their `BKGLEVEL`; then do the same with the `skymatch-nb` command.

The files are made here, in a temporary directory: two exposures of a 2 x 2-detector camera,
as in notebook 03, written the way the JWST pipeline writes `_cal` files (an empty primary
HDU with the exposure keywords, then `SCI` and `DQ`). Three detectors have a stripe of
persistence 5 units high (2.5 σ of the noise), flagged `PERSISTENCE` (32) in `DQ`."""),
    ("code", """import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.testing import make_mosaic

DETECTOR = 200 * 0.1 / 3600  # detector side, degrees
PERSISTENCE = 32             # the JWST DQ flag
TRUTH = {1: 112.0, 2: 97.0}  # the sky of each exposure


def exposure(dither, sky, seed):
    ra = 150.0 + dither[0] * DETECTOR / np.cos(np.radians(2.0))
    dec = 2.0 + dither[1] * DETECTOR
    return make_mosaic((2, 2), shape=(200, 200), overlap=-0.05, sky=sky, noise=2.0,
                       center=(ra, dec), seed=seed)


scratch = tempfile.TemporaryDirectory(prefix="skymatch-fits-")  # gone with the kernel
workdir = Path(scratch.name)
raw = workdir / "raw"
raw.mkdir()
for number, dither in [(1, (0, 0)), (2, (0.55, 0.30))]:
    mosaic = exposure(dither, TRUTH[number], seed=number)
    for k, (image, wcs) in enumerate(zip(mosaic.images, mosaic.wcs)):
        sci, dq = image.copy(), np.zeros(image.shape, dtype=np.uint32)
        if (number, k) in [(1, 1), (1, 3), (2, 2)]:
            sci[:, 140:] += 5.0
            dq[:, 140:] |= PERSISTENCE
        primary = fits.PrimaryHDU()
        primary.header.update(TELESCOP="SYNTH", INSTRUME="TOYCAM", FILTER="F200W",
                              EXPOSURE=number, DETECTOR=f"D{k + 1}", EXPTIME=300.0)
        sci_hdu = fits.ImageHDU(sci, wcs.to_header(), name="SCI")
        sci_hdu.header["BUNIT"] = "MJy/sr"
        fits.HDUList([primary, sci_hdu, fits.ImageHDU(dq, name="DQ")]).writeto(
            raw / f"exp{number}_d{k + 1}_cal.fits")
sorted(path.name for path in raw.iterdir())"""),
    ("markdown", """## Read

`from_fits` takes files or glob patterns. It reads headers and WCS only; the pixels are
memory-mapped when first needed. The science extension is `SCI` (else every image with a
celestial WCS looking somewhere else: a camera's detectors, see the end), the mask comes from
`DQ` (any flag marks a bad pixel unless `dqbits` says to ignore it), and
`group_by="EXPOSURE"` puts images with the same value of that keyword in one group.
`coll.table` has one row per image with what the headers say."""),
    ("code", """coll = ImageCollection.from_fits(str(raw / "*_cal.fits"), group_by="EXPOSURE")
coll.table[["group", "detector", "exposure", "bunit", "filter", "ny", "nx", "ra", "dec"]].to_dataframe()"""),
    ("code", """bad = {name: int((~coll.mask(name)).sum()) for name in coll.names}
bad   # pixels flagged in DQ"""),
    ("markdown", """## Match and inspect"""),
    ("code", """result = coll.skymatch(skymethod="global+match", skystat="median")
result[["group", "sky", "sky_err", "npix", "component"]].to_dataframe()"""),
    ("code", """expected = np.array([TRUTH[int(g)] for g in result.group.values])
assert np.allclose(result.sky, expected, atol=0.05)
result.drop_dims(["image", "corner"]).to_dataframe().T"""),
    ("markdown", """The `pair` dimension has one entry per overlapping pair of inputs, here the two exposures:
each side's statistic over its part of the overlaps, pixel counts, errors, the weight in the
solve, the difference before and the residual after.

The mask matters. The persistence stripes are too faint for sigma clipping to remove. Read
the same files with the flag *ignored* (`dqbits` lists flags to treat as good): the stripe of
`exp2_d3` lies in the overlap, so exposure 2 looks 0.5 brighter there than it is, and
exposure 1, matched to it, comes out 0.5 too faint, some thirty times its uncertainty."""),
    ("code", """unmasked = ImageCollection.from_fits(str(raw / "*_cal.fits"), group_by="EXPOSURE",
                                     dqbits="PERSISTENCE")
biased = unmasked.skymatch(skymethod="global+match", skystat="median")
print("exposure 2 in the overlap:", result.stat_b.values, "with DQ,",
      biased.stat_b.values, "without")
print("skies with DQ:   ", np.unique(result.sky.values.round(3)))
print("skies without DQ:", np.unique(biased.sky.values.round(3)))
assert TRUTH[1] - biased.sky.values[0] > 0.3"""),
    ("markdown", """`to_table` gives the per-image results as an astropy `Table`, with the parameters
in its `meta`; write it as ECSV (or CSV, FITS, VOTable)."""),
    ("code", """table = coll.to_table(result)
table.write(workdir / "skies.ecsv")
Table.read(workdir / "skies.ecsv")["name", "group", "sky", "sky_err", "valid"]"""),
    ("markdown", """## Write sky-subtracted copies

`write_fits(directory, result)` copies each file whole (all extensions) under its own name,
subtracts the sky from `SCI` and records it in the science header with the JWST pipeline's
keywords: `BKGLEVEL` (the sky), `BKGSUB` (whether it was subtracted) and `BKGMETH` (the
method). The input files are never opened for writing; each copy appears atomically; existing
files are refused unless `overwrite=True`."""),
    ("code", """matched = workdir / "matched"
matched.mkdir()
written = coll.write_fits(matched, result)

with fits.open(written[0]) as hdul:
    header, data, dq = hdul["SCI"].header, hdul["SCI"].data, hdul["DQ"].data
    print(repr(header["BKG*"]))
    print("median of the good pixels after subtraction:", np.median(data[dq == 0]))
assert header["BKGLEVEL"] == result.sky.values[0] and header["BKGSUB"] is True
assert abs(np.median(data[dq == 0])) < 0.1"""),
    ("markdown", """## The same from the command line

`skymatch-nb` does all of the above in one command; `--table` and `--output-dir` are the
outputs, `--subtract` subtracts the sky in the copies. Here it is run as
`python -m skymatch_nb_ui.cli` with this kernel's Python, which works whether or not the
`skymatch-nb` script is on the `PATH`; in a terminal, type
`skymatch-nb "raw/*_cal.fits" --skymethod global+match ...`."""),
    ("code", """command = [
    sys.executable, "-m", "skymatch_nb_ui.cli", str(raw / "*_cal.fits"),
    "--skymethod", "global+match", "--skystat", "median", "--group-by", "EXPOSURE",
    "--table", str(workdir / "cli_skies.ecsv"),
    "--subtract", "--output-dir", str(workdir / "cli_matched"),
]
run = subprocess.run(command, capture_output=True, text=True)
print(run.stdout, run.stderr)
assert run.returncode == 0"""),
    ("code", """cli = Table.read(workdir / "cli_skies.ecsv")
np.testing.assert_allclose(cli["sky"], result.sky.values, rtol=0, atol=1e-9)
copy = workdir / "cli_matched" / Path(written[0]).name
fits.getval(copy, "BKGLEVEL", extname="SCI"), fits.getval(copy, "BKGSUB", extname="SCI")"""),
    ("markdown", """## Files as cameras write them

Ground-based cameras write one file per exposure with an HDU per detector (no `SCI`), often
tile-compressed by fpack (`.fits.fz`), and their flags or weights in other files (DECam's
`_ood` and `_oow` beside its `_ooi` images). `from_fits` reads every detector of such a file
(an HDU looking where no HDU before it looked) and decompresses it; `masks=(old, new)` names
each file's mask file by a replacement in its name (integer values are flags, 0 good; float
values weights, 0 bad). The exposures above, written that way, give the same skies, within
the quantization fpack's compression applies to floats."""),
    ("code", """camera = workdir / "camera"
camera.mkdir()
for number in (1, 2):
    images = [fits.PrimaryHDU(header=fits.Header({"EXPOSURE": number}))]
    flags = [fits.PrimaryHDU()]
    for k in range(1, 5):
        with fits.open(raw / f"exp{number}_d{k}_cal.fits") as hdul:
            images.append(fits.CompImageHDU(hdul["SCI"].data, hdul["SCI"].header, name=f"D{k}"))
            flags.append(fits.CompImageHDU(hdul["DQ"].data.astype(np.int32), name=f"D{k}",
                                           compression_type="PLIO_1"))
    fits.HDUList(images).writeto(camera / f"exp{number}_img.fits.fz")
    fits.HDUList(flags).writeto(camera / f"exp{number}_dq.fits.fz")

cam = ImageCollection.from_fits(str(camera / "*_img.fits.fz"), masks=("_img", "_dq"),
                                group_by="EXPOSURE")
again = cam.skymatch(skymethod="global+match", skystat="median")
np.testing.assert_allclose(again.sky.values, result.sky.values, atol=0.05)
print(cam.names)
print("largest difference from the files above:", abs(again.sky.values - result.sky.values).max())"""),
    ("markdown", """`skymatch-nb --help` lists every option: the statistic and its clipping, `--dqbits`,
`--ext`, `--masks`, `--anchor component` for disconnected mosaics, `--match-up`,
`--overwrite`."""),
    ("code", """print(subprocess.run([sys.executable, "-m", "skymatch_nb_ui.cli", "--help"],
                     capture_output=True, text=True, check=True).stdout)"""),
    ("code", """scratch.cleanup()  # the temporary files (skip it to look at them till the kernel stops)"""),
]


# -- 05 ------------------------------------------------------------------------------------------
FIGURES = [
    ("markdown", """# Figures for a paper

**What this teaches:** the publication figures of `skymatch_nb_ui.plotting`: the footprint map
coloured by sky and by group (`plot_footprints`), the overlap residuals before and after
matching (`plot_pair_residuals`) and the skies with their uncertainties against the truth
(`plot_sky`); how to place them in a multi-panel figure of your own (`mosaic_wcs`, `ax=`); and
how to save them as PDF (vector, for the journal) and 300-dpi PNG (for slides and the web).

The figures come one journal column wide (3.5 in) with 8-9 pt text and colour-blind-safe
colours (the widgets' Okabe-Ito palette and viridis). The data: three exposures of a 2 x 2
detector camera in a three-point dither, detectors grouped by exposure (as in notebook 03)."""),
    ("code", """import tempfile
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.plotting import mosaic_wcs, plot_footprints, plot_pair_residuals, plot_sky
from skymatch_nb_ui.testing import make_mosaic

mpl.rcParams["pdf.fonttype"] = 42   # TrueType in PDFs: text stays text, as journals ask

DETECTOR = 200 * 0.1 / 3600  # detector side, degrees
images, wcs, names, truth = [], [], [], []
for number, (dither, sky) in enumerate([((0, 0), 112.0), ((0.45, 0.25), 97.0),
                                         ((0.90, 0.50), 104.0)], start=1):
    mosaic = make_mosaic((2, 2), shape=(200, 200), overlap=-0.05, sky=sky, noise=2.0, seed=number,
                         center=(150.0 + dither[0] * DETECTOR / np.cos(np.radians(2.0)),
                                 2.0 + dither[1] * DETECTOR))
    images += mosaic.images
    wcs += mosaic.wcs
    names += [f"e{number}_D{k + 1}" for k in range(4)]
    truth += list(mosaic.sky)
coll = ImageCollection.from_arrays(images, wcs, names=names,
                                   groups=[name.split("_")[0] for name in names])
result = coll.skymatch(skymethod="global+match", skystat="median")
result[["group", "sky", "sky_err"]].to_dataframe().iloc[::4]"""),
    ("markdown", """Each figure is saved twice in a temporary directory (in a paper's repository,
use a `figures/` directory instead). `savefig` writes what is drawn; the PNG is
`width x 300` pixels wide."""),
    ("code", """scratch = tempfile.TemporaryDirectory(prefix="skymatch-figures-")  # gone with the kernel
outdir = Path(scratch.name)
saved = []


def save(ax, name):
    \"\"\"Save the figure of `ax` as PDF and as 300-dpi PNG; return the PNG's path.\"\"\"
    figure = ax.figure
    for suffix, options in ((".pdf", {}), (".png", {"dpi": 300})):
        path = outdir / f"{name}{suffix}"
        figure.savefig(path, **options)
        saved.append(path)
    return path  # the PNG"""),
    ("markdown", """## Figure 1: the footprints, coloured by the matched sky

North up, east left, RA and Dec on the axes. The thick outlines give each image's group; with
`show_names=True` the images are labelled. Images without a valid sky would be hatched, and
those outside the largest connected component outlined with dashes."""),
    ("code", """ax = plot_footprints(result, color_by="sky")
save(ax, "fig1_footprints_sky")"""),
    ("markdown", """## Figure 2: the footprints, coloured by group

Which images share a sky, for the paper's description of the method. (`show_names=True`
writes each image's name at its centre: legible for mosaics with little overlap.)"""),
    ("code", """ax = plot_footprints(result, color_by="group")
save(ax, "fig2_footprints_group")"""),
    ("markdown", """## Figure 3: overlap residuals

For each overlapping pair of inputs (here pairs of exposures): the difference of their sky
statistics in the overlap before matching (grey, open) and what is left after it (blue), with
1σ error bars; worst residual first. Residuals consistent with zero say that one sky per
exposure describes the data; an outlier points at an overlap to look at."""),
    ("code", """ax = plot_pair_residuals(result)
save(ax, "fig3_pair_residuals")"""),
    ("markdown", """## Figure 4: the skies, against the truth

The sky of each image with its 1σ uncertainty, images ordered by group on coloured bands;
the black bars are the true skies (for synthetic data such as these)."""),
    ("code", """ax = plot_sky(result, truth=truth)
save(ax, "fig4_sky")"""),
    ("markdown", """## A two-panel figure of your own

Pass `ax=` to draw into your own layout. The footprint map needs WCS axes: `mosaic_wcs`
gives the tangent-plane WCS the map uses. With `ax=`, the functions keep your figure's size
and your font sizes (matplotlib's rcParams), here 8 pt in a full-width (7 in) figure. The
panel labels are lifted above the legends the functions put over each panel."""),
    ("code", """with mpl.rc_context({"font.size": 8}):
    fig = plt.figure(figsize=(7.0, 3.0), layout="constrained")
    left = fig.add_subplot(1, 2, 1, projection=mosaic_wcs(result))
    right = fig.add_subplot(1, 2, 2)
    plot_footprints(result, color_by="sky", ax=left)
    plot_sky(result, truth=truth, ax=right)
    for ax, label in ((left, "(a)"), (right, "(b)")):
        ax.set_title(label, loc="left", pad=14, fontweight="bold")
    png = save(right, "fig5_two_panels")"""),
    ("markdown", """## What was written"""),
    ("code", """for path in saved:
    head = path.read_bytes()[:8]
    kind = "PDF" if head.startswith(b"%PDF") else "PNG" if head.startswith(b"\\x89PNG") else "?"
    size = ""
    if kind == "PNG":
        height, width = plt.imread(path).shape[:2]
        size = f"{width} x {height} px"
    print(f"{path.name:28s} {kind:4s} {path.stat().st_size / 1024:7.1f} kB  {size}")
    assert kind == path.suffix[1:].upper()

# a 7 x 3 in figure at 300 dpi
assert plt.imread(png).shape[:2] == (900, 2100)"""),
    ("code", """scratch.cleanup()  # the temporary files (skip this to keep them until the kernel stops)"""),
]


# -- 06 ------------------------------------------------------------------------------------------
SKY_PLANES = [
    ("markdown", """# Scattered light: a sky plane per image

**What this teaches:** when the background of each image is not flat (scattered light, a
zodiacal or thermal gradient, the wing of a bright star just off the field), one constant per
image leaves *seams* along every overlap edge. `skymodel="plane"` fits a plane per image
instead, from the same pair differences, and the seams go.

The mosaic is synthetic, so that we know the truth: 3 x 4 images of 160 x 160 pixels, noise
σ = 1, a few stars, and on each image its own random plane rising by up to 8σ across it in a
random direction (`make_mosaic(..., gradient=8)`), on top of its own constant level. The
images share one tangent plane, so that pasting them side by side makes the mosaic."""),
    ("code", """import warnings

import matplotlib.pyplot as plt
import numpy as np
from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.plotting import mosaic_wcs, plot_footprints, plot_planes
from skymatch_nb_ui.testing import make_mosaic
from skymatch_nb_ui.widgets import FootprintMap

NOISE = 1.0
m = make_mosaic((3, 4), shape=(160, 160), overlap=0.2, noise=NOISE, gradient=8.0, sources=4,
                tangent="shared", seed=13)
coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
rise = np.ptp([m.true_sky(k) for k in range(len(m))], axis=(1, 2))
print(f"{len(m)} images; their planes rise by {rise.round(1)} σ across them")"""),
    ("markdown", """Two helpers: `mosaic_of` pastes images onto the mosaic's pixel grid (later images
on top, so every seam shows) and bins it 8 x 8 with a median (noise and stars fade, the sky
stays); `sky_error` measures what a result leaves of the true sky, in σ, over all pixels
(`Mosaic.residual_sky`: matching finds skies only up to what no overlap can see, a common
plane, which it removes)."""),
    ("code", """def mosaic_of(images, step=8):
    \"\"\"The images on the mosaic's grid (one shared tangent plane), binned by a median.\"\"\"
    crpix = np.array([w.wcs.crpix for w in m.wcs])
    offset = np.rint(crpix.max(axis=0) - crpix).astype(int)  # (x, y) of each image's pixel 0
    ny, nx = images[0].shape
    canvas = np.full((offset[:, 1].max() + ny, offset[:, 0].max() + nx), np.nan)
    for (x0, y0), image in zip(offset, images):
        canvas[y0:y0 + ny, x0:x0 + nx] = image
    h, w = canvas.shape[0] // step * step, canvas.shape[1] // step * step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins outside the images
        return np.nanmedian(canvas[:h, :w].reshape(h // step, step, w // step, step), axis=(1, 3))


def sky_error(result):
    \"\"\"rms of the true sky left after subtracting the result's skies, in noise σ.\"\"\"
    corrected = coll.result_images(result)
    models = [image - corrected[name] for image, name in zip(m.images, m.names)]
    return float(np.sqrt(np.mean(m.residual_sky(models) ** 2))) / NOISE"""),
    ("markdown", """## One constant per image: seams

`match` with the default constant sky model. Each image's constant is the best compromise over
its overlaps, but a tilted sky minus a constant is still tilted: where two images meet, one
is too high and the other too low."""),
    ("code", """constant = coll.skymatch(skymethod="match", skystat="median")
print(f"constant skies: the sky left is {sky_error(constant):.2f} σ rms")
binned = mosaic_of(list(coll.result_images(constant).values()))
scale = dict(cmap="coolwarm", origin="lower", vmin=np.nanmedian(binned) - 3, vmax=np.nanmedian(binned) + 3)
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
fig.colorbar(ax.imshow(binned, **scale), ax=ax, label="sky-subtracted data (8x8 median)")
ax.set_title("skymodel='constant': seams at the image edges")
ax.set_axis_off()
plt.show()"""),
    ("markdown", """## A plane per image: no seams

The same call with `skymodel="plane"`. The result has, per image, the level at its centre
(`sky`, what every view shows), the slopes along its own pixel axes (`slope_x`, `slope_y`,
per pixel), their covariance (`sky_cov`), and the gradient on the sky (`gradient`, per
arcsec, rising towards the position angle `gradient_pa`, east of north).
`coll.result_images` subtracts the planes."""),
    ("code", """planes = coll.skymatch(skymethod="match", skystat="median", skymodel="plane")
print(f"planes: the sky left is {sky_error(planes):.3f} σ rms (constants: {sky_error(constant):.2f} σ)")
planes[["sky", "slope_x", "slope_y", "slope_x_err", "gradient", "gradient_pa"]].to_dataframe().round(4)"""),
    ("code", """fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
for ax, (title, result) in zip(axes, [("constant", constant), ("plane", planes)]):
    binned = mosaic_of(list(coll.result_images(result).values()))
    shown = ax.imshow(binned - np.nanmedian(binned), **{**scale, "vmin": -3, "vmax": 3})
    ax.set_title(f"skymodel={title!r}: {sky_error(result):.2f} σ rms left")
    ax.set_axis_off()
fig.colorbar(shown, ax=axes, label="sky-subtracted data (8x8 median) [σ]")
plt.show()"""),
    ("markdown", """The seams are gone. What is left is one smooth tilt across the whole mosaic: the
part of the scattered light that is the same plane on the sky in every image (here the mean
of their slopes) changes no overlap's difference, so no matching can see it, just as no
matching can tell a common constant (`sky_error` leaves both out). Against the truth: the
images share one tangent plane with the same axes, so that common part is a common slope in
every image. Less it, the fitted slopes are the true ones within their errors."""),
    ("code", """for axis in ("slope_x", "slope_y"):
    off = planes[axis].values - getattr(m, axis)
    off -= off.mean()
    pull = off / planes[f"{axis}_err"].values
    print(f"{axis}: fitted - true, less the common slope, in errors: {pull.round(1)}")
    assert np.all(np.abs(pull) < 5)
assert sky_error(planes) < sky_error(constant) / 5"""),
    ("markdown", """## What was fitted, on the sky

`plot_planes` fills each footprint with its fitted plane; the arrows point where the sky
rises, their length by the gradient's size. `plot_footprints(..., color_by="gradient")` colours
the footprints by that size, and the `FootprintMap` widget shows the same arrows, with the
slopes in each footprint's tooltip (and each overlap's residual gradient in its line's)."""),
    ("code", """fig = plt.figure(figsize=(10, 4), layout="constrained")
wcs = mosaic_wcs(planes)
plot_planes(planes, ax=fig.add_subplot(1, 2, 1, projection=wcs))
plot_footprints(planes, color_by="gradient", ax=fig.add_subplot(1, 2, 2, projection=wcs))
plt.show()"""),
    ("code", """FootprintMap(coll, planes, color_by="gradient", show_overlaps=True)"""),
    ("markdown", """## No gradient: no planes

A plane's level at an image's centre is an extrapolation from the overlaps at its edges, so
it is several times less precise than a constant from the same overlaps. When the sky has no
gradient, `skymodel="plane"` says so and keeps the constants: a chi-square test of all the
fitted slopes against zero (`slope_significance`, the test's false-alarm probability, 0.001
by default; 0 always keeps the fitted slopes). The result then has the levels of
`skymodel="constant"`, the slopes 0 with their errors, and the Dataset's
`attrs["plane_flat"]` is 1. The same images as above without their planes:"""),
    ("code", """flat = make_mosaic((3, 4), shape=(160, 160), overlap=0.2, noise=NOISE, sources=4,
                   tangent="shared", seed=13)
flat_coll = ImageCollection.from_arrays(flat.images, flat.wcs, names=flat.names)
tested = flat_coll.skymatch(skymethod="match", skystat="median", skymodel="plane")
fitted = flat_coll.skymatch(skymethod="match", skystat="median", skymodel="plane",
                            slope_significance=0)
constants = flat_coll.skymatch(skymethod="match", skystat="median")
truth = flat.sky - flat.sky.mean()
for name, result in [("plane", tested), ("plane, slopes kept", fitted), ("constant", constants)]:
    off = result["sky"].values - result["sky"].values.mean() - truth
    print(f"{name:>20}: levels off by {off.std():.4f} rms, sky_err {result['sky_err'].values.mean():.4f}")
print("slopes:", np.unique(tested["slope_x"].values), "+-", tested["slope_x_err"].values.mean().round(5))
assert tested.attrs["plane_flat"] == 1 and fitted.attrs["plane_flat"] == 0
assert np.array_equal(tested["sky"].values, constants["sky"].values)"""),
    ("markdown", """## Real pixels through a real camera

The same on the Hubble Deep Field seen through HST's ACS/WFC: four dithered exposures of its
two chips, each chip's WCS the camera's real one with its SIP distortion
(`skymatch_nb_ui.datasets`, as in the quickstart), and on each exposure its own sky plane,
`gradient=[(east, north), ...]` in data units per arcsec: about 3σ across a chip. Scattered
light lies on the sky across both chips of an exposure, so the collection groups them by
exposure: a group shares *one plane on the sky* (each chip gets its slopes along its own pixel
axes through its own WCS; the gradient on the sky is the same). Through the distortion a plane
on the sky is slightly curved in a chip's pixels; what is subtracted is the plane in the
chip's pixels closest to it (least squares over the chip)."""),
    ("code", """from skymatch_nb_ui.datasets import hubble_deep_field_exposures

slopes = [(0.06, -0.02), (-0.05, 0.04), (0.02, 0.07), (-0.03, -0.06)]  # (east, north) per arcsec
hdf = hubble_deep_field_exposures(gradient=slopes, seed=2)
hdf_coll = hdf.collection(group_by="exposure")
hdf_planes = hdf_coll.skymatch(skymethod="match", skymodel="plane")
hdf_planes[["group", "sky", "slope_x", "slope_y", "gradient", "gradient_pa"]].to_dataframe().round(4)"""),
    ("markdown", """Against the truth (`hdf.gradient`, per image): the fitted gradients on the sky, less
the common gradient no overlap sees, are the true ones to a few 1e-4 per arcsec, for slopes
of 0.02-0.07."""),
    ("code", """pa = np.radians(hdf_planes["gradient_pa"].values)  # east of north
fitted = np.column_stack([np.sin(pa), np.cos(pa)]) * hdf_planes["gradient"].values[:, None]
off = fitted - hdf.gradient
off -= off.mean(axis=0)
print("fitted - true (east, north) per arcsec, per exposure, less the common part:")
print(off[::2].round(5))
assert np.abs(off).max() < 0.002
fig = plt.figure(figsize=(5, 4), layout="constrained")
plot_planes(hdf_planes, ax=fig.add_subplot(projection=mosaic_wcs(hdf_planes)))
plt.show()"""),
]


NOTEBOOKS = {
    "01-quickstart.ipynb": QUICKSTART,
    "02-methods.ipynb": METHODS,
    "03-groups.ipynb": GROUPS,
    "04-fits-workflow.ipynb": FITS_WORKFLOW,
    "05-figures.ipynb": FIGURES,
    "06-sky-gradients.ipynb": SKY_PLANES,
}


def notebook(cells, stem: str = "cell") -> nbf.NotebookNode:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [
        nbf.v4.new_markdown_cell(text) if kind == "markdown" else nbf.v4.new_code_cell(text)
        for kind, text in cells
    ]
    for k, cell in enumerate(nb.cells):
        cell.id = f"{stem}-{k:02d}"  # stable ids: regenerating gives the same file
    nbf.validate(nb)
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nbf.write(notebook(cells, stem=name.split("-")[0]), HERE / name)


if __name__ == "__main__":
    main()
