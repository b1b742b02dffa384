"""What a sky-matching run returns: plain numpy arrays over images and over pairs.

`assemble_result` maps the outputs of the stages (over inputs) back to images;
`subtracted_copy` applies a sky to an image.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .groups import Grouping
    from .measure import PairStats
    from .plane_match import PlaneResult
    from .solve import Solution
    from .stats import SkyStat

__all__ = ["PairTable", "SkyMatchResult", "assemble_result", "subtracted_copy", "with_subtracted"]


@dataclass(frozen=True)
class PairTable:
    """Per-pair diagnostics between *inputs* (an input is an image or a group).

    Attributes
    ----------
    a, b : ndarray of int
        The two inputs of each pair (indices into ``SkyMatchResult.inputs``), ``a < b``.
    stat_a, stat_b : ndarray
        Input a's sky statistic over its pixels in the overlap with b, and the reverse
        (``compare="levels"``; NaN with ``compare="differences"``, which measures the
        difference directly).
    npix_a, npix_b : ndarray of int
        Pixels behind each statistic (after masks, limits and clipping); with
        ``compare="differences"`` both are the number of pixel differences used.
    err_a, err_b : ndarray
        1-sigma statistical uncertainties of ``stat_a`` and ``stat_b`` (NaN with
        ``compare="differences"``).
    weight : ndarray
        The pair's weight in the solve before the robust weights: the mean of the two pixel
        counts, as the reference.
    valid : ndarray of bool
        Whether the pair entered the solve (pixels on both sides, a finite difference).
    diff_before : ndarray
        The measured sky difference a - b (``stat_a - stat_b``, or the statistic of the pixel
        differences): how much the two disagree before matching.
    diff_err : ndarray
        1-sigma uncertainty of ``diff_before`` (before the run's error scale): statistical
        and, with ``compare="levels"``, how the two pixel grids sample the scene
        (`measure.scene_error`); for the mode, from its own noise error with the kernel each
        side chose, which may be below the first-order one of ``err_a`` and ``err_b``, and
        the move between the two kernels' peaks when the sides chose two.  A pair of fewer
        than `measure.SMALL_PAIR` pixels (a corner where two detectors meet) has at least
        the error that the noise its images show in their larger pairs gives
        (`measure.with_small_pair_errors`).  A flagged pair's error in the sky errors is
        larger: its residual's (`robust.flagged_variance`).
    diff_after : ndarray
        ``diff_before - (sky_a - sky_b)``: the residual after the solve (NaN where either sky
        is unknown).  Large values point at overlaps that do not agree with the rest.
    robust_weight : ndarray
        The factor in (0, 1] the robust solve applied to the pair's weight (1: untouched; NaN
        for pairs outside the solve).
    flagged : ndarray of bool
        Whether the robust solve down-weighted the pair: its residual is far beyond its
        calibrated error (something only one of the two images sees?).
    """

    a: np.ndarray
    b: np.ndarray
    stat_a: np.ndarray
    stat_b: np.ndarray
    npix_a: np.ndarray
    npix_b: np.ndarray
    err_a: np.ndarray
    err_b: np.ndarray
    weight: np.ndarray
    valid: np.ndarray
    diff_before: np.ndarray
    diff_after: np.ndarray
    diff_err: np.ndarray | None = None
    robust_weight: np.ndarray | None = None
    flagged: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.a)
        defaults = {"diff_err": np.full(n, np.nan), "robust_weight": np.full(n, np.nan),
                    "flagged": np.zeros(n, dtype=bool)}
        for name, default in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)

    def __len__(self) -> int:
        return len(self.a)


@dataclass(frozen=True)
class SkyMatchResult:
    """The outcome of `skymatch` (or `SkyMatcher.run`), one entry per image.

    Attributes
    ----------
    sky : ndarray
        The sky of each image (the value to subtract); NaN where ``valid`` is False.  For
        ``skymethod="match"`` these are offsets relative to the anchor image (0 for it).
    sky_err : ndarray
        1-sigma statistical uncertainty of ``sky``.  For matched skies it is the uncertainty
        relative to the mean level of the image's connected component (the anchor choice is a
        convention, not a measurement).
    valid : ndarray of bool
        Whether a sky could be determined.
    reason : ndarray of str
        Why an image is invalid, or a caveat about a valid one; "" when all is well.
    component : ndarray of int
        Connected component of the overlap graph the image's input belongs to.
    group : ndarray of int
        Index of the image's input in ``inputs``.
    npix : ndarray of int
        Pixels of this image that entered its statistics (overlap pixels in valid pairs for
        the match methods, all good pixels for local and global).
    local : ndarray
        The input's own statistic over its whole area (NaN when not computed).
    delta : ndarray
        The match offset of the image's input, zero mean per component (NaN when not computed).
    inputs : tuple
        The label of each input (the group labels, or image indices when there are no groups).
    pairs : PairTable
        Per-pair diagnostics.
    params : dict
        The parameters of the run.
    images : tuple of ndarray or None
        With ``subtract=True``: new arrays with the sky subtracted (the caller's arrays are
        never changed).  Invalid images are copied unchanged.
    warnings : tuple of str
        The messages of the warnings issued during the run.
    plane : PlaneResult or None
        With ``skymodel="plane"``: each image's slopes, the covariance of its (level,
        slope_x, slope_y), its gradient on the sky and, per pair, the residual gradient and
        why a pair counted as a constant only (see `skymatch_nb_ui.engine.plane_match`).
        ``sky`` is then the level at each image's centre and ``sky_err`` its error; None for
        ``skymodel="constant"``.
    error_scale : float
        The factor the pairs' residuals put on the propagated errors of the match offsets
        (see `skymatch_nb_ui.engine.robust`); NaN for ``local`` and ``global``.
    """

    sky: np.ndarray
    sky_err: np.ndarray
    valid: np.ndarray
    reason: np.ndarray
    component: np.ndarray
    group: np.ndarray
    npix: np.ndarray
    local: np.ndarray
    delta: np.ndarray
    inputs: tuple
    pairs: PairTable
    params: dict
    images: tuple | None = None
    warnings: tuple = field(default=())
    plane: PlaneResult | None = None
    error_scale: float = float("nan")

    def __len__(self) -> int:
        return len(self.sky)

    @property
    def n_components(self) -> int:
        """Number of connected components of the overlap graph."""
        return int(self.component.max()) + 1 if len(self.component) else 0

    def format_table(self, names=None) -> str:
        """A plain-text table of the per-image results.

        Parameters
        ----------
        names : sequence of str, optional
            Image names for the first column (default: the image index).
        """
        names = [str(k) for k in range(len(self))] if names is None else [str(n) for n in names]
        width = max(5, *(len(n) for n in names))
        lines = [
            f"{'image':<{width}}  {'input':>5}  {'comp':>4}  {'sky':>12}  {'sky_err':>10}  "
            f"{'npix':>9}  valid  reason"
        ]
        for k, name in enumerate(names):
            lines.append(
                f"{name:<{width}}  {self.inputs[self.group[k]]!s:>5}  {self.component[k]:>4}  "
                f"{self.sky[k]:>12.6g}  {self.sky_err[k]:>10.3g}  {self.npix[k]:>9}  "
                f"{'yes' if self.valid[k] else 'NO':<5}  {self.reason[k]}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        method = self.params.get("skymethod", "?")
        return (
            f"<SkyMatchResult {len(self)} images, method={method!r}, "
            f"{int(self.valid.sum())} valid, {self.n_components} component(s)>\n"
            + self.format_table()
        )


def assemble_result(
    solution: Solution,
    pairs: PairStats,
    local: list[SkyStat] | None,
    grouping: Grouping,
    image_npix: np.ndarray | None,
    params: dict,
) -> SkyMatchResult:
    """The result over images from stage 3's solution over inputs.

    ``image_npix`` (each image's own pixel count, for local and global) is None for the
    match methods: then an image's ``npix`` counts its pixels in the valid pairs' overlaps.
    """
    valid = pairs.valid
    if image_npix is not None:
        npix = image_npix
    else:
        pair, image, counts = pairs.member_pixels
        used = valid[pair]
        npix = np.bincount(image[used], counts[used], minlength=len(grouping.label_of)).astype(np.int64)
    sky = solution.sky
    # the pair's error for the sky errors (`robust.fit_offsets`'s extra_var and its floor)
    diff_err = np.sqrt(np.maximum(pairs.diff_err**2 + pairs.scene_var, 0.25 * pairs.diff_err**2))
    table = PairTable(
        a=pairs.a, b=pairs.b, stat_a=pairs.stat_a, stat_b=pairs.stat_b, npix_a=pairs.npix_a,
        npix_b=pairs.npix_b, err_a=pairs.err_a, err_b=pairs.err_b, weight=pairs.weight,
        valid=valid, diff_before=pairs.diff, diff_err=diff_err,
        diff_after=pairs.diff - (sky[pairs.a] - sky[pairs.b]),
        robust_weight=solution.robust_weight, flagged=solution.flagged,
    )
    n_inputs = len(grouping)
    local_value = np.array([s.value for s in local]) if local is not None else np.full(n_inputs, np.nan)
    label_of = grouping.label_of
    return SkyMatchResult(
        sky=sky[label_of],
        sky_err=solution.sky_err[label_of],
        valid=solution.valid[label_of],
        reason=np.array([solution.reason[g] for g in label_of], dtype=object),
        component=solution.component[label_of],
        group=label_of.copy(),
        npix=npix,
        local=local_value[label_of],
        delta=solution.delta[label_of],
        inputs=tuple(grouping.labels),
        pairs=table,
        params=params,
        warnings=solution.warnings,
        error_scale=solution.error_scale,
    )


def subtracted_copy(image, sky: float, valid: bool, *, slope_x: float = 0.0,
                    slope_y: float = 0.0) -> np.ndarray:
    """A new array: ``image - sky`` when ``valid``, else an unchanged copy.

    With ``slope_x`` / ``slope_y`` (a plane, ``skymodel="plane"``) the sky subtracted is
    ``sky + slope_x * (x - x0) + slope_y * (y - y0)`` about the image's centre
    (`planes.plane_values`).  Float images keep their dtype, integer images become float64.
    ``image`` is never changed.

    Examples
    --------
    >>> subtracted_copy(np.array([[3, 4]]), 1.5, True)
    array([[1.5, 2.5]])
    >>> subtracted_copy(np.array([[3.0, 4.0]]), 1.5, True, slope_x=1.0)
    array([[2., 2.]])
    """
    image = np.asarray(image)
    dtype = image.dtype if image.dtype.kind == "f" else np.float64
    copy = np.array(image, dtype=dtype, copy=True)
    if valid:
        if slope_x or slope_y:
            from .planes import plane_values

            copy -= plane_values(sky, slope_x, slope_y, copy.shape).astype(dtype, copy=False)
        else:
            copy -= sky
    return copy


def plane_of(result: SkyMatchResult, k: int) -> dict:
    """The keywords of `subtracted_copy` for image ``k``'s slopes (none for a constant sky)."""
    if result.plane is None:
        return {}
    return {"slope_x": float(result.plane.slope_x[k]), "slope_y": float(result.plane.slope_y[k])}


def with_subtracted(result: SkyMatchResult, images) -> SkyMatchResult:
    """``result`` with ``images``: sky-subtracted copies of the given pixel arrays."""
    out = tuple(subtracted_copy(im, sky, ok, **plane_of(result, k))
                for k, (im, sky, ok) in enumerate(zip(images, result.sky, result.valid)))
    return replace(result, images=out)
