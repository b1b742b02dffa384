"""From images to *inputs*: the images that share one sky (a group), or an image alone.

The solve works on inputs; a group's members are never compared with one another, and the
overlap of two inputs is made of their members' overlaps.

A *missing* label leaves an image alone, as None does: NaN (float or numpy), ``pandas.NA``,
``pandas.NaT`` and NaT.  Labels read from a table with missing values then mean "no group",
whatever objects represent them (NaN is not equal to itself, so as a dict key it would make
each NaN object a group of its own, depending on object identity).

Examples
--------
>>> grouping = group_inputs(["e1", None, "e1", None], 4)
>>> grouping.label_of.tolist(), grouping.labels, grouping.members
([0, 1, 0, 2], ['e1', 1, 3], [[0, 2], [1], [3]])
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from .geometry import Runs

__all__ = ["Grouping", "group_inputs", "input_overlaps", "is_missing_label"]

_ALONE = object()  # key of an image alone: equal to no label a user can give


@dataclass(frozen=True, eq=False)
class Grouping:
    """Which input each image belongs to.

    Attributes
    ----------
    label_of : ndarray of int
        The input of each image (inputs numbered in order of first appearance).
    labels : list
        Each input's label: its group label, or the image's index for an image alone.
    members : list of list of int
        The images of each input.
    alone : tuple of bool
        Whether each input is an image alone (a missing label), not a group.
    """

    label_of: np.ndarray
    labels: list
    members: list[list[int]]
    alone: tuple[bool, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def names(self) -> list[str]:
        """How to name each input in a message: ``images[3]`` or ``group 'e1'``."""
        return [
            f"images[{members[0]}]" if alone else f"group {label!r}"
            for label, members, alone in zip(self.labels, self.members, self.alone)
        ]


def is_missing_label(label: object) -> bool:
    """Whether a group label means "no group": None, NaN, ``pandas.NA`` or NaT.

    Examples
    --------
    >>> [is_missing_label(x) for x in (None, float("nan"), np.datetime64("NaT"), "nan", 0)]
    [True, True, True, False, False]
    """
    if label is None or type(label).__name__ in ("NAType", "NaTType"):
        return True
    if isinstance(label, (numbers.Number, np.datetime64, np.timedelta64)):
        return bool(label != label)  # NaN (float, complex, Decimal, numpy) and NaT only
    return False


def group_inputs(groups: Sequence[Hashable] | None, n: int) -> Grouping:
    """Group ``n`` images by their labels; a missing label (or ``groups=None``) leaves one alone.

    Missing labels are None, NaN, ``pandas.NA`` and NaT (`is_missing_label`).

    Raises
    ------
    TypeError
        When ``groups`` is not a sequence, or a label is not hashable.
    ValueError
        When ``groups`` does not have one label per image.
    """
    if groups is None:
        groups = [None] * n
    elif isinstance(groups, (str, bytes)) or not isinstance(groups, (Sequence, np.ndarray)):
        raise TypeError(
            f"groups must be a sequence with one label per image (or None); got {type(groups).__name__}"
        )
    if len(groups) != n:
        raise ValueError(f"groups must have one label per image: got {len(groups)} labels for {n} images")
    index: dict = {}
    labels: list = []
    alone: list[bool] = []
    label_of = np.empty(n, dtype=np.intp)
    for k, label in enumerate(groups):
        if isinstance(label, np.generic):
            label = label.item()
        if is_missing_label(label):
            key, shown, lone = (_ALONE, k), k, True
        else:
            if not isinstance(label, Hashable):
                raise TypeError(f"groups[{k}] must be a hashable label; got {type(label).__name__}")
            key, shown, lone = label, label, False
        if key not in index:
            index[key] = len(labels)
            labels.append(shown)
            alone.append(lone)
        label_of[k] = index[key]
    members: list[list[int]] = [[] for _ in labels]
    for k, g in enumerate(label_of):
        members[g].append(k)
    return Grouping(label_of=label_of, labels=labels, members=members, alone=tuple(alone))


def input_overlaps(
    runs: dict[tuple[int, int], Runs], label_of: np.ndarray
) -> dict[tuple[int, int], dict[int, frozenset[int]]]:
    """Per ordered pair of inputs (g, h) that overlap both ways: the side of g.

    The side of g is ``{a: partners}``: each member ``a`` of g whose pixels fall inside the
    images ``partners`` of h.  Its statistic over those pixels is one term of g's side of the
    overlap.  Members of one input are not compared (no pair (g, g)).
    """
    partners: dict[tuple[int, int], dict[int, set]] = {}
    for (a, b), r in runs.items():
        ga, gb = int(label_of[a]), int(label_of[b])
        if ga == gb or not r:
            continue
        partners.setdefault((ga, gb), {}).setdefault(a, set()).add(b)
    return {
        key: {a: frozenset(bs) for a, bs in side.items()}
        for key, side in partners.items()
        if (key[1], key[0]) in partners
    }
