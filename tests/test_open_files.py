"""A collection of many files must not keep a file descriptor per image.

1,100 FITS files once failed with "Too many open files" under the common ``ulimit -n 1024``:
every memory-mapped image held a descriptor.  Here 150 files are matched and copied, and all
their pixels held at once, by a process allowed 64 descriptors.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.io import fits

from skymatch_nb_ui.testing import make_mosaic

LIMIT = 64
N_FILES = 150

resource = pytest.importorskip("resource")  # POSIX only


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("many")
    m = make_mosaic((10, 15), shape=(24, 24), sky=np.arange(N_FILES, dtype=float), seed=0)
    dq = np.zeros((24, 24), np.uint32)
    dq[0, 0] = 1
    for name, image, w in zip(m.names, m.images, m.wcs):
        fits.HDUList([
            fits.PrimaryHDU(),
            fits.ImageHDU(image, w.to_header(), name="SCI"),
            fits.ImageHDU(dq, name="DQ"),  # uint32: stored scaled, read into memory
        ]).writeto(directory / f"{name}.fits")
    return directory


def test_many_files_with_few_file_descriptors(many_files, tmp_path):
    script = textwrap.dedent(f"""
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, hard))
        import numpy as np
        from skymatch_nb_ui import ImageCollection
        coll = ImageCollection.from_files({str(many_files / "*.fits")!r})
        ds = coll.skymatch(skymethod="match", skystat="mean")
        coll.write_copies({str(tmp_path)!r})
        held = [coll.data(k) for k in range(len(coll))]  # every image's pixels at once
        masks = [coll.mask(k) for k in range(len(coll))]
        print(len(held), bool(ds.valid.all()), float(np.ptp(ds.sky.values - np.arange(len(coll)))))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    count, valid, spread = run.stdout.split()
    assert int(count) == N_FILES and valid == "True" and float(spread) < 1e-6
    assert len(list(tmp_path.glob("*.fits"))) == N_FILES


def test_the_limit_is_real(many_files):
    """Control: the same process, holding descriptors per file, does run out."""
    script = textwrap.dedent(f"""
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, hard))
        import glob
        import numpy as np
        held = [np.memmap(p, mode="r") for p in sorted(glob.glob({str(many_files / "*.fits")!r}))]
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode != 0 and "Too many open files" in run.stderr
