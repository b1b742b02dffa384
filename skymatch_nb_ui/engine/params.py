"""The run parameters, defined once: `SkyMatchParams` (all of them) and `StatParams` (stage 2's).

Each parameter is one field of `SkyMatchParams` carrying a `ParamSpec`: its kind, default,
choices or bounds, the stage it belongs to, a one-line help, a longer description and a unit.
Everything else is derived from these specs: validation (one rule and one message per kind,
in ``_validate``), the defaults, the options of the ``skymatch-nb`` command, the pass-through
of `ImageCollection.skymatch`, the reference adapter of ``testing``, the documentation of the
shared parameters of `skymatch`, and what a user interface needs to build its controls
(choices, range, step, whether None is allowed).  astropy's ``SigmaClip`` class and
``sigma_clip`` function share their parameters the same way.

To add a parameter, add one field to `SkyMatchParams` (and, for a statistics parameter that
`sky_statistic` uses, its name to `StatParams`); give `skymatch` the same keyword (a test
checks that its signature matches).

Examples
--------
>>> p = SkyMatchParams(skymethod="Global+Match", nclip=3)
>>> p.skymethod, p.nclip, p.stat
('global+match', 3, StatParams(skystat='mode', lower=None, upper=None, nclip=3, ...))
>>> p.replace(skymetod="local")
Traceback (most recent call last):
...
TypeError: unknown parameter 'skymetod' (did you mean 'skymethod'?); the valid names are ...
>>> spec = SkyMatchParams.specs()["lsigma"]
>>> spec.kind, spec.default, spec.minimum, spec.stage
('float', 4.0, 0.0, 'statistics')
"""

from __future__ import annotations

import dataclasses
import functools
import textwrap
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from ._validate import check_bool, check_choice, check_float, check_int, check_names

__all__ = [
    "ANCHORS",
    "COMPARES",
    "SKYMETHODS",
    "SKYMODELS",
    "SKYSTATS",
    "Anchor",
    "Compare",
    "ParamSpec",
    "SkyMatchParams",
    "SkyMethod",
    "SkyModel",
    "SkyStatName",
    "StatParams",
    "parameters_doc",
]

SkyMethod = Literal["local", "global", "match", "global+match"]
Anchor = Literal["global", "component"]
SkyStatName = Literal["mean", "median", "mode", "midpt"]
SkyModel = Literal["constant", "plane"]
Compare = Literal["levels", "differences"]
Stage = Literal["geometry", "statistics", "solve", "output"]
Kind = Literal["choice", "bool", "int", "float"]

SKYMETHODS: tuple[str, ...] = get_args(SkyMethod)
ANCHORS: tuple[str, ...] = get_args(Anchor)
SKYSTATS: tuple[str, ...] = get_args(SkyStatName)
SKYMODELS: tuple[str, ...] = get_args(SkyModel)
COMPARES: tuple[str, ...] = get_args(Compare)


@dataclass(frozen=True)
class ParamSpec:
    """The definition of one parameter: what validation, a CLI, a UI and the docs need.

    Attributes
    ----------
    name : str
        The keyword, as in the JWST pipeline's skymatch step where it has one.
    kind : {'choice', 'bool', 'int', 'float'}
        The kind of value.
    default : object
        The default value.
    stage : {'geometry', 'statistics', 'solve', 'output'}
        The first stage a change of this parameter re-runs (later stages re-run too).
    help : str
        One line, for ``--help`` and tooltips; for a bool, what True does (a checkbox's
        tooltip).
    doc : str
        The description for reference documentation (numpydoc).
    choices : tuple of str
        The valid values of a ``choice`` (lower-case; given case-insensitively).
    nullable : bool
        Whether None is valid (its meaning is in `rule`).
    minimum : float or None
        The smallest valid value (``exclusive_minimum``: values must be above it).
    exclusive_minimum : bool
        Whether `minimum` itself is invalid.
    rule : str
        The rule in words, for error messages (``"<name> must be <rule>; got ..."``).
    unit : str
        The unit of a number (``"pixels"``, ``"standard deviations"``, ``"data units"``).
    widget_min, widget_max, step : float or None
        A range and step that suit a control in a user interface (not validation limits).
    cli_flag : str
        The command-line flag of a bool whose default is True (it sets False).
    cli_help : str
        That flag's one line of ``--help``: what False does.
    """

    name: str
    kind: Kind
    default: Any
    stage: Stage
    help: str
    doc: str
    choices: tuple[str, ...] = ()
    nullable: bool = False
    minimum: float | None = None
    exclusive_minimum: bool = False
    rule: str = ""
    unit: str = ""
    widget_min: float | None = None
    widget_max: float | None = None
    step: float | None = None
    cli_flag: str = ""
    cli_help: str = ""

    def check(self, value: object) -> Any:
        """``value`` validated and normalised (choices lower-case, numbers int or float).

        Raises
        ------
        TypeError
            For a value of the wrong kind.
        ValueError
            For a value outside the parameter's domain.
        """
        if value is None and self.nullable:
            return None
        if self.kind == "choice":
            return check_choice(self.name, value, self.choices)
        if self.kind == "bool":
            return check_bool(self.name, value)
        if self.kind == "int":
            return check_int(self.name, value, self.rule, minimum=self.minimum)
        return check_float(
            self.name, value, self.rule, minimum=self.minimum, exclusive=self.exclusive_minimum
        )

    @property
    def type_doc(self) -> str:
        """The numpydoc type, e.g. ``{'match', 'local', ...}`` or ``float, optional``."""
        if self.kind == "choice":
            ordered = (self.default, *(c for c in self.choices if c != self.default))
            return "{" + ", ".join(repr(c) for c in ordered) + "}"
        kind = {"bool": "bool", "int": "int", "float": "float"}[self.kind]
        return f"{kind}, optional" if self.nullable else kind


def _param(name: str, **spec: Any) -> Any:
    """A dataclass field defined by its `ParamSpec`."""
    definition = ParamSpec(name=name, **spec)
    return field(default=definition.default, metadata={"spec": definition})


class _Params:
    """Validation, replacement and introspection shared by the parameter classes."""

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, f.metadata["spec"].check(getattr(self, f.name)))
        lower, upper = getattr(self, "lower", None), getattr(self, "upper", None)
        if lower is not None and upper is not None and lower > upper:
            raise ValueError(
                f"lower must be <= upper (they bound the usable values, inclusive); "
                f"got lower={lower!r}, upper={upper!r}"
            )
        alpha = getattr(self, "slope_significance", 0.0)
        if alpha > 1.0:
            raise ValueError(
                f"slope_significance must be a probability between 0 and 1 (0: always keep "
                f"the fitted slopes); got {alpha!r}"
            )

    @classmethod
    def specs(cls) -> dict[str, ParamSpec]:
        """{name: ParamSpec} of every parameter, in order."""
        return {f.name: f.metadata["spec"] for f in fields(cls)}

    @classmethod
    def names(cls, *stages: str) -> tuple[str, ...]:
        """The parameter names, in order (only those of ``stages`` when given)."""
        return tuple(n for n, s in cls.specs().items() if not stages or s.stage in stages)

    def replace(self, **changes: Any):
        """A copy with ``changes`` applied and validated.

        Raises
        ------
        TypeError
            For a name that is not a parameter (the message lists the valid ones).
        """
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """{name: value} of every parameter, in order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _reject_unknown_names(cls):
    """Make ``cls(**kwargs)`` name the valid parameters (and the closest) for a wrong one."""
    init = cls.__init__
    valid = tuple(f.name for f in fields(cls))

    @functools.wraps(init)
    def __init__(self, **kwargs: Any) -> None:
        check_names(kwargs, valid, what="parameter")
        init(self, **kwargs)

    cls.__init__ = __init__
    return cls


@_reject_unknown_names
@dataclass(frozen=True, kw_only=True)
class SkyMatchParams(_Params):
    """The parameters of one sky-matching run: validated, normalised, immutable, hashable.

    `skymatch` and `SkyMatcher.run` take these parameters as keywords; ``SkyMatcher.run``
    and `ImageCollection.skymatch` also take one `SkyMatchParams` object.  Each field's
    `ParamSpec` is in `specs`.

    Parameters
    ----------
    {parameters}

    Raises
    ------
    TypeError
        For an unknown parameter name (the message lists the valid ones) or a value of the
        wrong kind.
    ValueError
        For a value outside the parameter's domain; the message names the parameter, the
        rule and the value received.

    Examples
    --------
    >>> SkyMatchParams()
    SkyMatchParams(skymethod='match', match_down=True, subtract=False, skystat='mode', ...)
    >>> SkyMatchParams(lower=10, upper=1)
    Traceback (most recent call last):
    ...
    ValueError: lower must be <= upper (they bound the usable values, inclusive); got lower=10.0, upper=1.0
    >>> SkyMatchParams.names("solve")
    ('skymethod', 'match_down', 'anchor', 'robust', 'skymodel')
    """

    skymethod: SkyMethod = _param(
        "skymethod", kind="choice", default="match", stage="solve", choices=SKYMETHODS,
        help="local: each image's own sky; global: the lowest of those, for all; match: "
        "relative offsets that make overlaps agree; global+match: the match offsets lifted "
        "to absolute level",
        doc="``local``: each input's own statistic; ``global``: the smallest local value, for "
        "all; ``match``: offsets that make overlaps agree (relative, the anchor at 0); "
        "``global+match``: the match offsets lifted to absolute level by the global minimum.",
    )
    match_down: bool = _param(
        "match_down", kind="bool", default=True, stage="solve", cli_flag="--match-up",
        help="anchor the match offsets to the lowest sky (off: to the highest)",
        cli_help="anchor the match offsets to the highest sky instead of the lowest",
        doc="Anchor the match offsets to the lowest sky (True) or the highest (False).",
    )
    subtract: bool = _param(
        "subtract", kind="bool", default=False, stage="output",
        help="subtract the sky from copies of the images",
        doc="Return copies of the images with the sky subtracted in ``result.images``.",
    )
    skystat: SkyStatName = _param(
        "skystat", kind="choice", default="mode", stage="statistics", choices=SKYSTATS,
        help="statistic of the sky pixels",
        doc="The statistic of the sky pixels (case-insensitive).  ``mode`` is the peak of the "
        "distribution of the clipped values (a smoothed histogram), ``midpt`` IRAF's "
        "pseudo-median from the histogram.",
    )
    lower: float | None = _param(
        "lower", kind="float", default=None, stage="statistics", nullable=True,
        rule="None (no limit) or a finite number in data units", unit="data units",
        help="ignore pixel values below X",
        doc="Pixel values below ``lower`` are ignored (inclusive limit; None: no limit).",
    )
    upper: float | None = _param(
        "upper", kind="float", default=None, stage="statistics", nullable=True,
        rule="None (no limit) or a finite number in data units", unit="data units",
        help="ignore pixel values above X",
        doc="Pixel values above ``upper`` are ignored (inclusive limit; None: no limit).",
    )
    nclip: int = _param(
        "nclip", kind="int", default=5, stage="statistics", minimum=0,
        rule="an integer >= 0 (the number of sigma-clipping passes; 0: no clipping)",
        widget_min=0, widget_max=100, step=1,
        help="sigma-clipping passes",
        doc="Passes of sigma clipping (0: no clipping).",
    )
    lsigma: float = _param(
        "lsigma", kind="float", default=4.0, stage="statistics", minimum=0.0,
        exclusive_minimum=True, unit="standard deviations",
        rule="> 0 (it is a clipping limit in units of the standard deviation)",
        widget_min=0.01, widget_max=100, step=0.5,
        help="lower clipping limit, in standard deviations",
        doc="Lower clipping limit, in standard deviations.",
    )
    usigma: float = _param(
        "usigma", kind="float", default=4.0, stage="statistics", minimum=0.0,
        exclusive_minimum=True, unit="standard deviations",
        rule="> 0 (it is a clipping limit in units of the standard deviation)",
        widget_min=0.01, widget_max=100, step=0.5,
        help="upper clipping limit, in standard deviations",
        doc="Upper clipping limit, in standard deviations.",
    )
    binwidth: float = _param(
        "binwidth", kind="float", default=0.1, stage="statistics", minimum=0.0,
        exclusive_minimum=True, unit="standard deviations",
        rule="> 0 (it is the histogram bin width in units of the standard deviation)",
        widget_min=0.001, widget_max=10, step=0.05,
        help="histogram bin width of mode and midpt, in standard deviations",
        doc="Histogram bin width for ``mode`` and ``midpt``, in standard deviations: the "
        "resolution of ``mode``'s peak.",
    )
    compare: Compare = _param(
        "compare", kind="choice", default="differences", stage="statistics", choices=COMPARES,
        help="how an overlapping pair is compared: the statistic of the pixel differences "
        "(the other image interpolated at this one's pixels) or of each side's levels",
        doc="How the sky offset of two overlapping inputs is measured.  ``differences``: the "
        "statistic of the pixel differences over the overlap, the other image interpolated "
        "(bilinear, through both WCS) at each pixel of the image with more pixels there, so "
        "that what both images see (extended emission, stars) cancels.  ``levels`` (the "
        "reference's way): the statistic of each side's pixels separately, subtracted.  "
        "Pairs are weighted by their pixel counts either way.  Both give the same result on "
        "pure sky; ``differences`` (the default) is 2-17 times more accurate on extended "
        "emission, with honest errors, at 2-3 times the time of ``levels`` "
        "(``bench/README.md``: ``bench_vs_peers.py``).  ``levels`` measures the reference's "
        "pixels with its statistic: its results to a few 1e-4 sigma with ``median`` or ``mean``; "
        "with ``mode`` closer to the truth than the reference, whose mode is the fullest bin "
        "of a raw histogram (here: the peak of the smoothed histogram, README).",
    )
    stepsize: int | None = _param(
        "stepsize", kind="int", default=None, stage="geometry", nullable=True, minimum=1,
        rule="None or a positive integer (pixels between footprint vertices)", unit="pixels",
        widget_min=1, widget_max=4096, step=1,
        help="footprint vertex spacing along image edges, in pixels (for distorted WCS; "
        "default: the corners only)",
        doc="Footprint vertices at most this many pixels apart along the image edges, so that "
        "the outline of a distorted WCS is followed closely (None: the four corners only).",
    )
    anchor: Anchor = _param(
        "anchor", kind="choice", default="global", stage="solve", choices=ANCHORS,
        help="one anchor for the whole mosaic, or one per connected component",
        doc="``global`` (the reference's behaviour): one anchor for the whole mosaic.  "
        "``component``: each connected component of the overlap graph is anchored on its "
        "own, so with ``global+match`` every component gets its own absolute sky.",
    )
    robust: bool = _param(
        "robust", kind="bool", default=True, stage="solve", cli_flag="--no-robust",
        help="down-weight overlaps whose offset disagrees with the rest far beyond its error",
        cli_help="plain least squares: every overlap keeps its full weight, even one whose "
        "offset disagrees with the rest far beyond its error",
        doc="Solve by iteratively reweighted least squares: a pair whose residual is more than "
        "4 calibrated errors from the solution (an overlap spoiled by something only one "
        "image sees: a satellite trail, a ghost, a saturated star) is down-weighted by the "
        "square of 4 / its residual in errors and flagged; other pairs keep their weight, so "
        "a mosaic without such pairs is solved exactly as by plain least squares.",
    )
    skymodel: SkyModel = _param(
        "skymodel", kind="choice", default="constant", stage="solve", choices=SKYMODELS,
        help="the sky of each image: a constant, or a plane (level + gradient) to remove "
        "gradients such as scattered light",
        doc="``constant`` (the reference's model): one sky value per input.  ``plane``: a "
        "plane per input, ``level + slope_x * (x - x0) + slope_y * (y - y0)`` in each image's "
        "pixels about its centre, one plane on the sky for a group; fitted from robust "
        "statistics in cells of every overlap (see `skymatch_nb_ui.engine.planes`).",
    )
    slope_significance: float = _param(
        "slope_significance", kind="float", default=1e-3, stage="solve", minimum=0.0,
        widget_min=0.0, widget_max=1.0, step=0.001,
        help="skymodel='plane': keep the fitted slopes only when a chi-square test of them "
        "against zero rejects 'no gradient' at this false-alarm probability (0: always keep)",
        doc="With ``skymodel=\"plane\"``, the fitted slopes of all inputs are tested against "
        "their covariances (the sum of each input's chi-square with 2 degrees of freedom, "
        "and the largest one, Bonferroni-corrected).  When neither rejects \"no gradient "
        "anywhere\" at this probability, the planes are not needed: the levels are those of "
        "``skymodel=\"constant\"`` (as precise: a plane's level at the image centre is an "
        "extrapolation from the overlaps, several times less precise), the slopes 0 with "
        "their fitted errors.  ``0`` always keeps the fitted slopes.",
    )

    @property
    def stat(self) -> StatParams:
        """The parameters of the statistic of one pixel set (`sky_statistic`)."""
        return StatParams(**{name: getattr(self, name) for name in StatParams.names()})

    def key(self, *stages: str) -> tuple:
        """The values of the parameters of ``stages``: a cache key of those stages' results."""
        return tuple(getattr(self, name) for name in self.names(*stages))


def _same_as(name: str) -> Any:
    """A field defined exactly as `SkyMatchParams`'s field ``name``."""
    original = next(f for f in fields(SkyMatchParams) if f.name == name)
    return field(default=original.default, metadata=original.metadata)


@_reject_unknown_names
@dataclass(frozen=True, kw_only=True)
class StatParams(_Params):
    """How to compute a sky statistic: which statistic, value limits and sigma clipping.

    The statistics parameters of `SkyMatchParams` (same names, defaults and rules).

    Parameters
    ----------
    skystat : {'mode', 'mean', 'median', 'midpt'}
        The statistic (case-insensitive; stored lower-case). ``mode`` is the peak of the
        distribution of the clipped values (a smoothed histogram), ``midpt`` IRAF's
        pseudo-median from the histogram.
    lower, upper : float or None
        Fixed limits of usable values, in data units, inclusive (None: no limit).
    nclip : int
        Number of sigma-clipping passes (0: no clipping).
    lsigma, usigma : float
        Lower and upper clipping limits, in units of the standard deviation.
    binwidth : float
        Histogram bin width for ``mode`` and ``midpt``, in units of the standard deviation:
        the resolution of ``mode``'s peak (see `sky_statistic`).

    Raises
    ------
    ValueError, TypeError
        For a parameter outside its domain; the message names it and the value received.

    Examples
    --------
    >>> StatParams(skystat="Median", nclip=3, upper=1000)
    StatParams(skystat='median', lower=None, upper=1000.0, nclip=3, lsigma=4.0, usigma=4.0, ...)
    >>> StatParams(skystat="avg")
    Traceback (most recent call last):
    ...
    ValueError: skystat must be one of 'mean', 'median', 'mode', 'midpt'; got 'avg'
    """

    skystat: SkyStatName = _same_as("skystat")
    lower: float | None = _same_as("lower")
    upper: float | None = _same_as("upper")
    nclip: int = _same_as("nclip")
    lsigma: float = _same_as("lsigma")
    usigma: float = _same_as("usigma")
    binwidth: float = _same_as("binwidth")


def parameters_doc(names: tuple[str, ...] | None = None, *, indent: int = 4) -> str:
    """The numpydoc ``Parameters`` entries of `SkyMatchParams`' parameters (``names``: these only).

    Examples
    --------
    >>> print(parameters_doc(("nclip",), indent=0))
    nclip : int, default 5
        Passes of sigma clipping (0: no clipping).
    """
    specs = SkyMatchParams.specs()
    lines = []
    for name in names or tuple(specs):
        spec = specs[name]
        default = "" if spec.default is None or spec.kind == "choice" else f", default {spec.default!r}"
        lines.append(f"{name} : {spec.type_doc}{default}")
        lines += textwrap.wrap(spec.doc, 88 - indent - 4, initial_indent="    ", subsequent_indent="    ")
    return textwrap.indent("\n".join(lines), " " * indent)


if SkyMatchParams.__doc__:  # None under python -OO
    SkyMatchParams.__doc__ = SkyMatchParams.__doc__.replace("{parameters}", parameters_doc().lstrip())
