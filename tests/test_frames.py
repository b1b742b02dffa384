"""WCS in different celestial frames are matched where the images really are (issue 9, item 1).

The same images described once in ICRS and once in FK4 (B1950, E-terms), FK5 J1975 or
galactic coordinates must give the same overlaps and skies as in ICRS only.  Before, FK4 and
ICRS (both ``pos.eq.ra``/``pos.eq.dec``) were taken as one frame and 80%-overlapping images
came out disjoint; galactic and equatorial were refused.
"""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from astropy.coordinates import FK4, FK5, Galactic
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import fit_wcs_from_points

from skymatch_nb_ui import ImageCollection, SkyMatcher, skymatch
from skymatch_nb_ui.engine.frames import in_one_frame
from skymatch_nb_ui.engine.geometry import CelestialWCS
from skymatch_nb_ui.testing import make_mosaic

FRAMES = {
    "fk4-b1950": FK4(equinox="B1950"),
    "fk5-j1975": FK5(equinox="J1975"),
    "galactic": Galactic(),
}


@pytest.fixture(scope="module")
def pair():
    """Two images overlapping by 80% (skies 100 and 120), with ICRS TAN WCS."""
    return make_mosaic((1, 2), shape=(100, 100), overlap=0.8, sky=[100, 120], noise=1.0, seed=2)


def same_pixels_in(frame, wcs, shape=(100, 100)):
    """A TAN WCS in ``frame`` putting the pixels where ``wcs`` puts them (to ~1e-5 mas)."""
    y, x = np.mgrid[0 : shape[0] : 9, 0 : shape[1] : 9]
    world = wcs.pixel_to_world(x.ravel(), y.ravel()).transform_to(frame)
    fitted = fit_wcs_from_points((x.ravel(), y.ravel()), world, projection="TAN")
    back = fitted.pixel_to_world(x.ravel(), y.ravel()).transform_to("icrs")
    assert back.separation(wcs.pixel_to_world(x.ravel(), y.ravel())).arcsec.max() < 1e-6
    return fitted


@pytest.mark.parametrize("frame", FRAMES)
def test_mixed_frames_match_as_in_one_frame(pair, frame):
    other = same_pixels_in(FRAMES[frame], pair.wcs[1])
    wcs = [pair.wcs[0], other]
    reference = SkyMatcher(pair.images, pair.wcs)
    mixed = SkyMatcher(pair.images, wcs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "disconnected mosaic"
        result = mixed.run(skystat="mean")
    expected = reference.run(skystat="mean")
    np.testing.assert_allclose(result.sky, expected.sky, atol=1e-9)
    assert result.sky[1] == pytest.approx(20.0, abs=0.1)
    # the same pixels in the overlap, on both sides
    for key in ((0, 1), (1, 0)):
        assert mixed.overlap_pixels(*key).npix == reference.overlap_pixels(*key).npix > 7000


def test_fk4_is_not_taken_for_icrs(pair):
    """The FK4 WCS names the same pixels with coordinates ~0.6 degree away from ICRS."""
    fk4 = same_pixels_in(FRAMES["fk4-b1950"], pair.wcs[1])
    assert fk4.world_axis_physical_types == pair.wcs[1].world_axis_physical_types
    assert abs(fk4.wcs.crval[0] - pair.wcs[1].wcs.crval[0]) > 0.5
    result = skymatch(pair.images, [pair.wcs[0], fk4], skymethod="global+match", skystat="mean")
    np.testing.assert_allclose(result.sky, [100, 120], atol=0.1)
    assert result.n_components == 1


def test_one_shared_frame_is_not_converted(pair):
    fk4 = [same_pixels_in(FRAMES["fk4-b1950"], w) for w in pair.wcs]
    adapters = in_one_frame([CelestialWCS(w) for w in fk4])
    assert all(type(a) is CelestialWCS for a in adapters)
    result = skymatch(pair.images, fk4, skystat="mean")
    np.testing.assert_allclose(result.sky, [0, 20], atol=0.1)


def test_collection_footprints_share_one_frame(pair):
    """The map and the table show both images in ICRS when their WCS frames differ."""
    fk4 = same_pixels_in(FRAMES["fk4-b1950"], pair.wcs[1])
    mixed = ImageCollection.from_arrays(pair.images, [pair.wcs[0], fk4])
    icrs = ImageCollection.from_arrays(pair.images, pair.wcs)
    np.testing.assert_allclose(mixed.footprints[0], icrs.footprints[0], atol=1e-9)
    np.testing.assert_allclose(mixed.footprints[1], icrs.footprints[1], atol=1e-9)


class _NoFrame:
    """An APE 14 WCS that does not say its frame (only the low-level mapping)."""

    def __init__(self, wcs):
        self._w = wcs
        self.pixel_n_dim = self.world_n_dim = 2
        self.world_axis_physical_types = wcs.world_axis_physical_types

    def pixel_to_world_values(self, x, y):
        return self._w.pixel_to_world_values(x, y)

    def world_to_pixel_values(self, lon, lat):
        return self._w.world_to_pixel_values(lon, lat)


def test_mixed_frames_with_an_unknown_one_are_refused(pair):
    fk4 = same_pixels_in(FRAMES["fk4-b1950"], pair.wcs[1])
    images = [pair.images[0], *pair.images]
    with pytest.raises(ValueError, match=r"wcs\[0\] do not say their frame.*convert them"):
        SkyMatcher(images, [_NoFrame(pair.wcs[0]), pair.wcs[0], fk4])
    # a WCS that does not say its frame is taken to be in the others' (one) frame
    result = skymatch(pair.images, [_NoFrame(pair.wcs[0]), pair.wcs[1]], skystat="mean")
    np.testing.assert_allclose(result.sky, [0, 20], atol=0.1)
    galactic = same_pixels_in(FRAMES["galactic"], pair.wcs[1])
    with pytest.raises(ValueError, match="all WCS must use the same celestial frame"):
        SkyMatcher(pair.images, [_NoFrame(pair.wcs[0]), _NoFrame(galactic)])


# -- the command, in a subprocess, on FITS headers that say FK4 ----------------------------------
def test_command_matches_fk4_and_icrs_files(pair, tmp_path):
    fk4 = same_pixels_in(FRAMES["fk4-b1950"], pair.wcs[1])
    paths = []
    for name, image, wcs in zip(("icrs", "fk4"), pair.images, (pair.wcs[0], fk4)):
        path = tmp_path / f"{name}.fits"
        fits.PrimaryHDU(image, wcs.to_header()).writeto(path)
        paths.append(path)
    header = fits.getheader(paths[1])
    assert header["RADESYS"] == "FK4" and header["EQUINOX"] == 1950.0
    assert WCS(header).world_axis_object_classes["celestial"][2]["frame"].name == "fk4"
    proc = subprocess.run(
        [sys.executable, "-m", "skymatch_nb_ui.cli", *map(str, paths), "--skymethod",
         "global+match", "--skystat", "mean", "--no-dq"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr  # no disconnected mosaic
    table = Table.read(proc.stdout, format="ascii.fixed_width_two_line")
    np.testing.assert_allclose(table["sky"], [100, 120], atol=0.1)


def test_converted_wcs_pickles(pair):
    """Stage-1 tasks may run in another process: the converted adapters travel."""
    import pickle

    fk4 = same_pixels_in(FRAMES["fk4-b1950"], pair.wcs[1])
    adapters = in_one_frame([CelestialWCS(pair.wcs[0]), CelestialWCS(fk4)])
    copy = pickle.loads(pickle.dumps(adapters[1]))
    x, y = np.array([0.0, 50.0, 99.0]), np.array([0.0, 30.0, 99.0])
    np.testing.assert_allclose(copy.pixel_to_lonlat(x, y), adapters[1].pixel_to_lonlat(x, y),
                               rtol=0, atol=1e-10)  # degrees; a pickled WCS may differ by ulps
    np.testing.assert_allclose(copy.lonlat_to_pixel(*copy.pixel_to_lonlat(x, y)), (x, y), atol=1e-8)
