"""The order of a run's reads of large images from files, and the pixels kept between them.

With ``compare="differences"`` a task reads two images: the one whose pixels are compared and
the other, interpolated; ``global+match`` reads each image once more for its own sky.  A run
of 36 Roman detectors of 4088 x 4088 (lz4-compressed ASDF, ~0.085 s to read and check one,
with its mask) read 86 of them for 53 pairs, 122 with ``global+match``: about 40% of its time.
Here the run's reads are planned instead (`plan`):

- `planned` orders the steps (a pair, an image's own sky, or for planes an image with the
  pairs it is compared in) so that those sharing an image come together, for the number of
  images that `KEEP_PIXELS_BYTES` holds;
- `keep_flags` says, for each read of that order, whether the image is read again later;
- `load` keeps the pixels and mask of such a read (`KEEP_PIXELS_BYTES` at most, the least
  recently used let go first) and hands them to that later read, which lets them go.

On that field, in one process: 86 -> 36 reads (``match``), 122 -> 40 (``global+match``).
Pixels in memory, and images small enough that a read costs little (`PLAN_PIXELS`), are not
planned: those runs are unchanged.  What is kept is kept for the run only (`release_kept`: at
the run's end, and in a worker when the run is over there).  Only the order of the reads
changes, never what is computed from them: the values are the same to the last bit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import numpy as np

from . import _execute

__all__ = ["KEEP_PIXELS_BYTES", "PLAN_PIXELS", "chunks", "keep_flags", "kept_bytes",
           "largest_planned", "load", "pixels_key", "plan", "planned", "release_kept"]

#: Bytes of pixels and masks kept for the run's next reads of the same images (the images in
#: use included).  4 Roman detectors (67 MB of float32 pixels and 17 MB of mask each): with
#: 3 kept the field above reads 47 / 51 images, with 6 kept 37 / 36.
KEEP_PIXELS_BYTES = 384 * 2**20
#: Images from files of at least this many pixels get their reads planned (the run's
#: statistics tasks ordered by `planned`, one per pair).  Smaller ones read in milliseconds
#: (and a compressed one is kept by `io._fits.keeping_decoded`): their tasks stay as they
#: were, one per image, largest first.
PLAN_PIXELS = 2**20
#: The images `planned` assumes kept at most (the plan's cost grows with it).
MOST_KEPT = 8

_KEPT: OrderedDict = OrderedDict()  # key -> (data, mask, bytes), least recently used first
_KEPT_LOCK = threading.Lock()
_kept_state = {"bytes": 0}


def pixels_key(loader) -> Hashable | None:
    """Which pixels a loader reads, the same in every process.

    None: its reads are neither planned nor kept (pixels in memory, a loader without a
    ``pixels_key``, or one whose key cannot be hashed).
    """
    key = getattr(loader, "pixels_key", None)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def largest_planned(loaders) -> int | None:
    """The pixels of the largest of ``loaders`` when a run's reads of them are planned, or None.

    Planned: every one of them read from a file by a loader with a `pixels_key`, and one
    of at least `PLAN_PIXELS` pixels.
    """
    loaders = list(loaders)
    if not loaders or any(pixels_key(ld) is None or getattr(ld, "in_memory", False)
                          for ld in loaders):
        return None
    largest = max(int(np.prod(ld.shape)) for ld in loaders)
    return largest if largest >= PLAN_PIXELS else None


def load(loader, read: Callable[[], tuple], keep: bool | None = None) -> tuple:
    """``read()`` of ``loader``'s pixels and mask, or what a planned earlier read kept.

    ``keep``: whether the run reads this image again later (`keep_flags`).  True: its pixels
    are kept for that read, within `KEEP_PIXELS_BYTES` (least recently used let go first).
    False: what was kept is handed over and let go here.  None (a read no plan knows of):
    what was kept is used and left as it was.
    """
    key = pixels_key(loader)
    if key is None:
        return read()
    with _KEPT_LOCK:
        found = _KEPT.get(key)
        if found is not None:
            if keep:
                _KEPT.move_to_end(key)
            elif keep is not None:
                del _KEPT[key]
                _kept_state["bytes"] -= found[2]
            return found[0], found[1]
    data, mask = read()
    if keep:
        _keep(key, data, mask)
    return data, mask


def _keep(key: Hashable, data: np.ndarray, mask: np.ndarray | None) -> None:
    size = data.nbytes + (0 if mask is None else mask.nbytes)
    limit = KEEP_PIXELS_BYTES
    with _KEPT_LOCK:
        if size > limit or key in _KEPT:
            return
        _KEPT[key] = (data, mask, size)
        _kept_state["bytes"] += size
        while _kept_state["bytes"] > limit:
            _kept_state["bytes"] -= _KEPT.popitem(last=False)[1][2]


def kept_bytes() -> int:
    """Bytes of pixels and masks kept now in this process."""
    with _KEPT_LOCK:
        return _kept_state["bytes"]


def release_kept() -> int:
    """Let go of every kept image (at the end of a run); returns the bytes let go."""
    with _KEPT_LOCK:
        freed = _kept_state["bytes"]
        _KEPT.clear()
        _kept_state["bytes"] = 0
    return freed


_execute.WORKER_RUN_ENDS.append(release_kept)


def plan(steps: Sequence[tuple], largest: int) -> tuple[list[int], list[tuple[bool, ...]]]:
    """The order of ``steps`` and the `load` flags of their reads.

    ``steps[k]``: the images step k reads, in the order it reads them (`pixels_key` values);
    ``largest``: the pixels of the largest image.  Returns the step indices in the order
    `planned` finds for as many images as `KEEP_PIXELS_BYTES` holds (float32 pixels and a bool
    mask: 5 bytes a pixel), and for each step a flag per read: whether the run reads that
    image again in a later step of that order.

    >>> plan([("a", "b"), ("c",), ("b", "c")], 100)
    ([0, 2, 1], [(False, True), (False,), (False, True)])
    """
    kept = min(max(KEEP_PIXELS_BYTES // (5 * max(int(largest), 1)), 2), MOST_KEPT)
    order = planned(steps, kept)
    flags = iter(keep_flags([key for k in order for key in steps[k]]))
    found: list = [()] * len(steps)
    for k in order:
        found[k] = tuple(next(flags) for _ in steps[k])
    return order, found


def planned(steps: Sequence[tuple], kept: int) -> list[int]:
    """An order of ``steps`` in which the images they read come close together.

    ``steps[k]``: the images step k reads (any hashable names: an image's own sky, a pair,
    an image and those it is compared with).

    Greedy: the next step is one that reads an image of the last ``kept`` read (both of them,
    if one does; then the one whose images have the fewest steps left, so that an image is
    done with and need not be kept; then the earliest), and when none does, the first step
    left.  Returns the step indices in that order.

    Examples
    --------
    Four images in a ring, each pair a step: read in a chain, one image after the other.

    >>> planned([(0, 1), (2, 3), (1, 2), (3, 0)], kept=2)
    [0, 2, 1, 3]
    """
    kept = max(int(kept), 1)
    steps = [tuple(s) for s in steps]
    touching: dict = {}
    for k, images in enumerate(steps):
        for i in images:
            touching.setdefault(i, []).append(k)
    left = {i: len(ks) for i, ks in touching.items()}
    done = [False] * len(steps)
    recent: list = []  # the images read last, the most recent last
    order: list[int] = []
    first_open = 0  # every step before it is done

    def rank(k: int):
        images = steps[k]
        return (-sum(i in recent for i in images), min(left[i] for i in images), k)

    while len(order) < len(steps):
        near = {k for i in recent for k in touching[i] if not done[k]}
        if near:
            k = min(near, key=rank)
        else:  # the first step left (a scan for the fewest steps left cost O(steps) each
            # time: 4,000 separate pairs took 16 s, and on tilings it read no fewer images)
            while done[first_open]:
                first_open += 1
            k = first_open
        done[k] = True
        order.append(k)
        for i in steps[k]:
            left[i] -= 1
            if i in recent:
                recent.remove(i)
            recent.append(i)
        del recent[:-kept]
    return order


def keep_flags(reads: Sequence[Hashable]) -> list[bool]:
    """For each read of ``reads``, whether the same image is read again later.

    ``reads``: image keys, in the order the run reads them.

    >>> keep_flags(["a", "b", "a", "c", "b"])
    [True, True, False, False, False]
    """
    seen: set = set()
    flags = []
    for key in reversed(reads):
        flags.append(key in seen)
        seen.add(key)
    return flags[::-1]


def chunks(sizes: Sequence[int], count: int) -> list[list[int]]:
    """``range(len(sizes))`` cut into at most ``count`` runs of consecutive indices.

    The runs are of about equal total size (each non-empty): a run ends with the index that
    reaches its share.

    >>> chunks([5, 1, 1, 1, 4, 4], 3)
    [[0, 1], [2, 3, 4], [5]]
    """
    count = max(1, min(int(count), len(sizes)))
    total = float(sum(sizes))
    out: list[list[int]] = []
    current: list[int] = []
    done = 0.0
    for k, size in enumerate(sizes):
        current.append(k)
        done += size
        left_slots = count - len(out) - 1
        items_left = len(sizes) - k - 1
        if left_slots > 0 and (done >= total * (len(out) + 1) / count or items_left == left_slots):
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out
