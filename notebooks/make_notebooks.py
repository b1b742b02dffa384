"""Write the tutorial notebooks from the cells below (outputs are never committed).

Run ``python notebooks/make_notebooks.py`` after editing a notebook's cells here; this keeps
the notebooks reviewable as plain Python.
"""

from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).parent

QUICKSTART = [
    ("markdown", """# Quickstart: match the sky of a mosaic, and see it

**What this teaches:** build an `ImageCollection` from images and their WCS, open the
`SkyMatchApp`, and read the result from Python.

The mosaic below is synthetic: twelve overlapping 200x200 images with noise, sources and a
different constant sky in each. In the app, hover a footprint to read its sky, click or
shift-click to select, drag with shift to select a box; change a parameter or a group and the
solve re-runs at once. Everything the app shows is also in `app.result` and `app.params`."""),
    ("code", """import numpy as np
from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.testing import make_mosaic
from skymatch_nb_ui.widgets import SkyMatchApp

mosaic = make_mosaic((3, 4), shape=(200, 200), overlap=0.2, noise=1.0, sources=20,
                     sky=np.random.default_rng(1).uniform(90, 130, 12), rotation=10, seed=1)
coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=mosaic.names)
coll"""),
    ("code", """app = SkyMatchApp(coll, skymethod="global+match", skystat="median")
app"""),
    ("markdown", """The app's Python face: parameters, groups and selection are plain attributes.
Setting them updates the widgets, and the widgets update them."""),
    ("code", """print("selected:", app.selected)
print("status:", app.status)
app.result[["sky", "sky_err", "valid", "component"]].to_dataframe().round(3)"""),
    ("code", """# compare with the true skies the mosaic was made with
np.round(app.result.sky.values - mosaic.sky, 3)"""),
]


def notebook(cells) -> nbf.NotebookNode:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbf.v4.new_markdown_cell(text) if kind == "markdown" else nbf.v4.new_code_cell(text)
        for kind, text in cells
    ]
    return nb


def main() -> None:
    nbf.write(notebook(QUICKSTART), HERE / "01-quickstart.ipynb")


if __name__ == "__main__":
    main()
