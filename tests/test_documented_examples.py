"""The reference's documented examples: the project's first acceptance test.

All images are pure constant sky, so every statistic must give the exact answers of
REFERENCE.md, whatever the projection details: own or shared tangent points, and a mosaic
rotated on the sky; and whatever the comparison of two images: the statistic of each side's
levels (the reference's way) or of their pixel differences (the default: constant images
give exact differences).
"""

import numpy as np
import pytest

from skymatch_nb_ui import DisconnectedMosaicWarning, SkyMatcher
from skymatch_nb_ui.engine import COMPARES
from skymatch_nb_ui.testing import make_mosaic

STATS = ["mean", "median", "mode", "midpt"]
GEOMETRIES = [
    pytest.param("own", 0.0, id="own-tangent"),
    pytest.param("shared", 0.0, id="shared-tangent"),
    pytest.param("own", 30.0, id="own-tangent-rotated"),
    pytest.param("shared", -65.0, id="shared-tangent-rotated"),
]

SKY_2X3 = [100, 120, 105, 110, 105, 115]
EXPECTED_2X3 = {
    "local": SKY_2X3,
    "global": [100] * 6,
    "match": [0, 20, 5, 10, 5, 15],
    "global+match": SKY_2X3,
}

SKY_2X2 = [100, 120, 105, 110]
SKY_3 = [95, 90, 100]
EXPECTED_DISCONNECTED = {
    "local": SKY_2X2 + SKY_3,
    "global": [90] * 7,
    "match": [0, 20, 5, 10, 8.75, 3.75, 13.75],
    "global+match": [86.25, 106.25, 91.25, 96.25, 95, 90, 100],
}


def two_by_three(tangent, rotation):
    return make_mosaic((2, 3), sky=SKY_2X3, tangent=tangent, rotation=rotation)


def disconnected(tangent, rotation):
    first = make_mosaic((2, 2), sky=SKY_2X2, tangent=tangent, rotation=rotation)
    second = make_mosaic(
        (1, 3), sky=SKY_3, tangent=tangent, rotation=rotation, center=(150.1, 2.0), prefix="b"
    )
    return first + second


@pytest.mark.parametrize("compare", COMPARES)
@pytest.mark.parametrize("tangent, rotation", GEOMETRIES)
@pytest.mark.parametrize("skystat", STATS)
def test_2x3_mosaic_table(tangent, rotation, skystat, compare):
    mosaic = two_by_three(tangent, rotation)
    matcher = SkyMatcher(mosaic.images, mosaic.wcs)
    for method, expected in EXPECTED_2X3.items():
        result = matcher.run(skymethod=method, skystat=skystat, compare=compare)
        np.testing.assert_allclose(result.sky, expected, rtol=0, atol=1e-9, err_msg=method)
        assert result.valid.all()
        assert (result.component == 0).all()


@pytest.mark.parametrize("compare", COMPARES)
@pytest.mark.parametrize("tangent, rotation", GEOMETRIES)
@pytest.mark.parametrize("skystat", STATS)
def test_disconnected_mosaic_table(tangent, rotation, skystat, compare):
    mosaic = disconnected(tangent, rotation)
    matcher = SkyMatcher(mosaic.images, mosaic.wcs)
    for method, expected in EXPECTED_DISCONNECTED.items():
        if "match" in method:
            with pytest.warns(DisconnectedMosaicWarning, match="2 disconnected components"):
                result = matcher.run(skymethod=method, skystat=skystat, compare=compare)
        else:
            result = matcher.run(skymethod=method, skystat=skystat, compare=compare)
        np.testing.assert_allclose(result.sky, expected, rtol=0, atol=1e-9, err_msg=method)
        assert result.valid.all()
        assert result.component.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_disconnected_mosaic_anchored_per_component():
    """The option the reference lacks: each component gets its own absolute sky."""
    mosaic = disconnected("own", 0.0)
    matcher = SkyMatcher(mosaic.images, mosaic.wcs)
    with pytest.warns(DisconnectedMosaicWarning):
        absolute = matcher.run(skymethod="global+match", anchor="component", skystat="mean")
        relative = matcher.run(skymethod="match", anchor="component", skystat="mean")
    np.testing.assert_allclose(absolute.sky, SKY_2X2 + SKY_3, atol=1e-9)
    np.testing.assert_allclose(relative.sky, [0, 20, 5, 10, 5, 0, 10], atol=1e-9)


def test_match_up_anchors_on_the_highest_sky():
    mosaic = two_by_three("own", 0.0)
    result = SkyMatcher(mosaic.images, mosaic.wcs).run(skymethod="match", match_down=False)
    np.testing.assert_allclose(result.sky, np.array(SKY_2X3) - 120, atol=1e-9)


def test_subtracted_copies_are_flat_and_inputs_untouched():
    mosaic = two_by_three("own", 0.0)
    before = [im.copy() for im in mosaic.images]
    result = SkyMatcher(mosaic.images, mosaic.wcs).run(skymethod="global+match", subtract=True)
    for original, kept, out in zip(before, mosaic.images, result.images):
        np.testing.assert_array_equal(kept, original)  # the caller's data are never changed
        assert out is not kept
        np.testing.assert_allclose(out, 0.0, atol=1e-4)
