"""An astropy model evaluated without astropy's per-call machinery: the same values, bit for bit.

A gwcs's transforms are trees of astropy models (a NIRCam detector's: ~20 models).  Calling
one goes through `astropy.modeling.Model.__call__` at every node: the inputs checked and
broadcast, the parameters gathered into arrays, the outputs shaped, units looked for: tens
of microseconds a model whatever the number of points.  The engine calls them on a few to a
few thousand points at a time (footprints, the overlaps' edges, the pairs' pixel maps), where that
machinery costs more than the arithmetic: a NIRCam-like detector step on 50 points takes
~290 us through ``__call__``, ~95 us here.  And the tree with its parameters' objects is
most of a made gwcs's memory, which a `LeanModel` does not keep.

`lean` walks a model's tree once and keeps what a call of it evaluates: each model's own
``evaluate`` with its parameters as ``__call__`` passes them, joined as the tree joins them
(``|`` and ``&``).  Calling it does what ``__call__`` does with ``with_bounding_box=False``
on numbers and arrays of numbers: the inputs as float arrays, each model's ``evaluate``, its
outputs shaped as the inputs broadcast, so the values are the model's own bits.  Only plain
models are taken apart (parameters and outputs without units, numbers taken for inputs, one
parameter set, astropy's own call and input and output handling, scalar parameters or none
broadcast with the inputs); any other node (arithmetic between models, ``fix_inputs``, a
model in units or with its own ``__call__``) is called as it is, and a tree with nothing to
take apart is returned unchanged.  The models' parameters are read once: a lean model does
not see later changes to them (a WCS is not expected to change under a run).

>>> from astropy.modeling import models
>>> m = models.Shift(1.5) & models.Scale(2.0) | models.Mapping((1, 0))
>>> x, y = np.array([1.0, 2.0]), np.array([3.0, 4.0])
>>> [a.tolist() for a in lean(m)(x, y)] == [a.tolist() for a in m(x, y)]
True
"""

from __future__ import annotations

import numpy as np

__all__ = ["LeanModel", "lean"]


class LeanModel:
    """A model's tree as `lean` keeps it: call it as the model, on arrays.

    It keeps what it calls (each model's ``evaluate`` with its parameters, the parts called
    as they are), not the tree: a NIRCam-like gwcs's steps both ways, kept this way, hold
    ~55 KB, against ~430 KB for the gwcs made with its inverses.  A tree with parts called as
    they are is kept too: such a part may give quantities (a lookup table in units), which
    the rest of the tree then takes as astropy does, through the tree's own call.

    Attributes
    ----------
    n_inputs, n_outputs : int
        The model's.
    name : str
        The model's class (for its ``repr``).
    """

    __slots__ = ("_model", "_run", "n_inputs", "n_outputs", "name")

    def __init__(self, run, n_inputs: int, n_outputs: int, name: str, model=None):
        self._run, self._model = run, model
        self.n_inputs, self.n_outputs, self.name = n_inputs, n_outputs, name

    def __call__(self, *inputs, with_bounding_box=False, fill_value=np.nan):
        """The model's outputs (a tuple of arrays, or one array for one output).

        The inputs are numbers or arrays of numbers (not quantities); the model's bounding
        box is not applied (``with_bounding_box=False``, the only value taken).
        """
        if with_bounding_box is not False:
            raise ValueError("a LeanModel does not apply a bounding box: call the model itself")
        if len(inputs) != self.n_inputs or any(hasattr(a, "unit") for a in inputs):
            raise TypeError(f"a LeanModel of {self.name} takes {self.n_inputs} inputs, numbers or "
                            "arrays of numbers (quantities: call the model itself)")
        try:
            outputs = self._run(inputs)
        except _QuantityIn:  # (only where a part is called as it is: the model is kept then)
            return self._model(*inputs, with_bounding_box=False, fill_value=fill_value)
        return outputs[0] if self.n_outputs == 1 else outputs

    def __repr__(self) -> str:
        return f"<LeanModel of {self.name}: {self.n_inputs} -> {self.n_outputs}>"


def lean(model):
    """``model`` to call on arrays without astropy's per-call machinery (see the module).

    Parameters
    ----------
    model : astropy.modeling.Model
        Any model; a gwcs step's transform or its inverse.

    Returns
    -------
    LeanModel or astropy.modeling.Model
        A `LeanModel` giving the model's values bit for bit, or ``model`` itself when none
        of its tree can be taken apart.
    """
    run, taken, whole = _node(model)
    if not taken:
        return model
    return LeanModel(run, model.n_inputs, model.n_outputs, type(model).__name__,
                     None if whole else model)


# -- the tree ---------------------------------------------------------------------------------
class _QuantityIn(Exception):
    """A quantity reached a lean model (from a part called as it is): the tree's own call."""


def _node(model):
    """``model``'s node: (its run, whether any of it is lean, whether all of it is).

    A run takes the tuple of inputs and returns the tuple of outputs.
    """
    from astropy.modeling.core import CompoundModel

    if isinstance(model, CompoundModel):
        if model.op in ("|", "&") and _plain_compound(model):
            (left, lean_left, all_left), (right, lean_right, all_right) = (
                _node(model.left), _node(model.right))
            if lean_left or lean_right:
                if model.op == "|":
                    return (lambda inputs: right(left(inputs))), True, all_left and all_right
                split = model.left.n_inputs
                return ((lambda inputs: left(inputs[:split]) + right(inputs[split:])), True,
                        all_left and all_right)
        return _called(model), False, False
    evaluate = _plain_evaluate(model)
    if evaluate is None:
        return _called(model), False, False
    parameters = tuple(model._param_sets(raw=True, units=False))
    evaluate = _polynomial(model, evaluate, parameters)
    single = model.n_outputs == 1
    prepare = model._prepare_output_single_model

    def run(inputs):
        # `Model.prepare_inputs`: float arrays; `_prepare_outputs_single_model`: the outputs
        # shaped as the inputs broadcast (scalar parameters broadcast with none)
        if any(hasattr(a, "unit") for a in inputs):  # (from a part called as it is)
            raise _QuantityIn
        inputs = [np.asanyarray(a, dtype=float) for a in inputs]
        shape = np.broadcast_shapes(*(a.shape for a in inputs))
        if not all(a.shape for a in inputs):  # (`_prepare_inputs_single_model`)
            inputs = [a if a.shape else a.reshape((1,)) for a in inputs]
        outputs = evaluate(*inputs, *parameters)
        if single:
            outputs = (outputs,)
        return tuple(prepare(output, shape) for output in outputs)

    return run, True, True


def _polynomial(model, evaluate, parameters):
    """A `Polynomial2D`'s ``evaluate`` with its coefficients ordered once, or ``evaluate``.

    ``Polynomial2D.evaluate`` orders the coefficients for Horner's scheme at every call
    (~130 us for degree 5, more than the scheme on a few hundred points).  It is called here
    on what it reads of its model, with that order kept; the model itself is not kept.  Checked
    once against the model's own ``evaluate`` on a few points (the same bits, or the model's).
    """
    from astropy.modeling.polynomial import Polynomial2D

    if type(model) is not Polynomial2D:
        return evaluate
    try:
        state = _PolynomialState(model, parameters)
        call = Polynomial2D.evaluate
        probe = (np.array([-3.5, 0.0, 0.25, 7.0, 1e3]), np.array([2.0, -1.5, 0.0, 11.0, -1e3]))
        if np.array_equal(call(state, *probe, *parameters), evaluate(*probe, *parameters)):
            return lambda x, y, *coeffs: call(state, x, y, *coeffs)
    except Exception:  # (astropy's evaluate reads something else of its model)
        pass
    return evaluate


class _PolynomialState:
    """What ``Polynomial2D.evaluate`` and ``multivariate_horner`` read of their model."""

    __slots__ = ("_alpha", "_coeffs", "degree", "x_domain", "x_window", "y_domain", "y_window")

    def __init__(self, model, parameters):
        for name in ("degree", "x_domain", "x_window", "y_domain", "y_window"):
            setattr(self, name, getattr(model, name))
        self._coeffs = model.invlex_coeff(parameters)
        self._alpha = model._invlex()

    def invlex_coeff(self, coeffs):
        return self._coeffs

    def _invlex(self):
        return self._alpha

    def multivariate_horner(self, x, y, coeffs):
        from astropy.modeling.polynomial import Polynomial2D

        return Polynomial2D.multivariate_horner(self, x, y, coeffs)


def _called(model):
    """The node called as it is (what a compound model does with its parts)."""
    single = model.n_outputs == 1

    def run(inputs):
        outputs = model(*inputs)
        return (outputs,) if single or not isinstance(outputs, tuple) else outputs

    return run


def _plain_compound(model) -> bool:
    """Whether a ``|`` or ``&`` compound model evaluates its parts as `CompoundModel` does."""
    from astropy.modeling.core import CompoundModel

    cls = type(model)  # (units are its parts' own: a part with units is called as it is)
    return all(getattr(cls, name) is getattr(CompoundModel, name) for name in _COMPOUND_CALL)


def _plain_evaluate(model):
    """``model.evaluate`` when a call of ``model`` is exactly it (see the module), else None."""
    from astropy.modeling.core import Model

    cls = type(model)
    try:
        if len(model) != 1 or model._has_units or not _numbers_in(model) or model.return_units \
                or model.n_inputs < 1:
            return None
        if any(getattr(cls, name) is not getattr(Model, name)
               and getattr(cls, name) not in _same_as_model(name) for name in _MODEL_CALL):
            return None
        if not _generated_call(cls):
            return None
        if model.standard_broadcasting and any(
                np.shape(getattr(model, name).value) for name in model.param_names):
            return None
        return model.evaluate
    except Exception:  # (anything unusual: called as it is)
        return None


#: What `Model.__call__` goes through for a plain model: a class overriding one of these may
#: evaluate otherwise.
_MODEL_CALL = ("_pre_evaluate", "_generic_evaluate", "_post_evaluate", "prepare_inputs",
               "prepare_outputs", "_prepare_inputs_single_model", "_prepare_outputs_single_model",
               "_validate_input_units", "_process_output_units", "_param_sets",
               "_get_renamed_inputs_as_positional")
_COMPOUND_CALL = ("__call__", "_pre_evaluate", "_generic_evaluate", "_post_evaluate",
                  "_evaluate", "_apply_operators_to_value_lists",
                  "_get_renamed_inputs_as_positional")


def _numbers_in(model) -> bool:
    """Whether ``model`` takes numbers as they are (`Model._validate_input_units`).

    So it does without input units, or when it takes numbers for each input that has one
    (``input_units_allow_dimensionless``: gwcs's ``SphericalToCartesian`` in degrees).
    """
    units = model.input_units
    if units is None:
        return True
    allowed = model.input_units_allow_dimensionless
    return all(units.get(name) is None or allowed[name] for name in model.inputs)


def _same_as_model(name: str) -> tuple:
    """Overrides of `Model`'s ``name`` that do what it does (the polynomials' inputs unpacked)."""
    if name != "prepare_inputs":
        return ()
    from astropy.modeling.polynomial import Polynomial1D, Polynomial2D

    return (Polynomial1D.prepare_inputs, Polynomial2D.prepare_inputs)


def _generated_call(cls) -> bool:
    """Whether ``cls.__call__`` is `Model.__call__` or the one astropy's metaclass writes.

    The metaclass gives each model class with a fixed number of inputs a ``__call__`` of the
    class's signature that only calls its base class's (``super(cls, self).__call__``); a
    class's own ``__call__`` is anything else.
    """
    from astropy.modeling.core import Model

    for klass in cls.__mro__:
        if klass is Model:
            return True
        call = klass.__dict__.get("__call__")
        if call is None:
            continue
        code = getattr(call, "__code__", None)
        inner = getattr(call, "__globals__", {}).get("____call____func")
        if code is None or code.co_names != ("____call____func",) \
                or getattr(getattr(inner, "__code__", None), "co_names", None) != ("super", "__call__"):
            return False
    return False
