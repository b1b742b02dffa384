"""Sky statistics of many small pixel sets at once (the cells of ``skymodel="plane"``)."""

from __future__ import annotations

import numpy as np

from .params import StatParams
from .stats import Workspace, sky_statistic

__all__ = ["segment_statistics"]


def segment_statistics(values: np.ndarray, start: np.ndarray, count: np.ndarray, params: StatParams,
                       work: Workspace | None = None):
    """`stats.sky_statistic` of each segment ``values[start[k] : start[k] + count[k]]``."""
    k = len(start)
    value, err = np.full(k, np.nan), np.full(k, np.nan)
    npix = np.zeros(k, np.int64)
    for c in range(k):
        s = sky_statistic(values[start[c] : start[c] + count[c]], params, work=work)
        value[c], npix[c], err[c] = s.value, s.npix, s.err
    return value, npix, err
