"""Properties of sky matching that hold for any mosaic (hypothesis)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skymatch_nb_ui import SkyMatcher
from skymatch_nb_ui.testing import make_mosaic

# one noisy 2x3 mosaic per hypothesis example is slow-ish; a few dozen examples suffice
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def noisy_mosaic(seed, rotation=0.0):
    rng = np.random.default_rng(seed)
    return make_mosaic(
        (2, 3), shape=(48, 48), sky=rng.uniform(0, 50, 6), noise=1.0, rotation=rotation,
        jitter=2.0, dtype=np.float64, seed=seed,
    )


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(0, 5),
    c=st.floats(-30, 30, allow_nan=False),
    skystat=st.sampled_from(["mean", "median"]),
)
def test_adding_a_constant_to_one_image_shifts_only_its_match_sky(seed, k, c, skystat):
    mosaic = noisy_mosaic(seed)
    before = SkyMatcher(mosaic.images, mosaic.wcs).run(skymethod="match", skystat=skystat)
    images = [im + c if i == k else im for i, im in enumerate(mosaic.images)]
    after = SkyMatcher(images, mosaic.wcs).run(skymethod="match", skystat=skystat)
    # the anchor may move: compare in a gauge-free way, relative to another image
    j = (k + 1) % 6
    change = (after.sky - after.sky[j]) - (before.sky - before.sky[j])
    expected = np.zeros(6)
    expected[k] = c
    np.testing.assert_allclose(change, expected, atol=1e-7)


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    order=st.permutations(range(6)),
    method=st.sampled_from(["local", "global", "match", "global+match"]),
    rotation=st.floats(-180, 180),
)
def test_permuting_the_inputs_permutes_the_output(seed, order, method, rotation):
    mosaic = noisy_mosaic(seed, rotation)
    base = SkyMatcher(mosaic.images, mosaic.wcs).run(skymethod=method, skystat="mean")
    order = list(order)
    shuffled = SkyMatcher([mosaic.images[i] for i in order], [mosaic.wcs[i] for i in order]).run(
        skymethod=method, skystat="mean"
    )
    np.testing.assert_allclose(shuffled.sky, base.sky[order], atol=1e-9)
    np.testing.assert_allclose(shuffled.sky_err, base.sky_err[order], rtol=1e-9, atol=1e-12)


@SETTINGS
@given(seed=st.integers(0, 10_000), skystat=st.sampled_from(["mean", "median", "mode", "midpt"]))
def test_match_down_flips_the_anchor(seed, skystat):
    mosaic = noisy_mosaic(seed)
    matcher = SkyMatcher(mosaic.images, mosaic.wcs)
    down = matcher.run(skymethod="match", match_down=True, skystat=skystat)
    up = matcher.run(skymethod="match", match_down=False, skystat=skystat)
    assert down.sky.min() == 0.0 and (down.sky >= 0).all()
    assert up.sky.max() == 0.0 and (up.sky <= 0).all()
    np.testing.assert_allclose(down.sky - up.sky, down.sky.max(), atol=1e-9)
    assert np.argmin(down.sky) == np.argmin(up.sky)
    # global+match does not depend on the direction
    np.testing.assert_allclose(
        matcher.run(skymethod="global+match", match_down=True, skystat=skystat).sky,
        matcher.run(skymethod="global+match", match_down=False, skystat=skystat).sky,
        atol=1e-9,
    )
