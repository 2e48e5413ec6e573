"""Argument checks shared by every interpret module: each rule is written (and worded) once.

Each check takes the argument's ``name`` (as the caller wrote it, e.g. ``"num_steps"``) and its
value; it returns the value normalised (an ``int``, a ``float``, a float64 array) or raises a
``ValueError`` that names the argument, says what was expected and shows what came. NumPy
integers count as integers; ``bool`` never does, although Python treats it as one.

The module is private to the package (its names are not re-exported), and its names carry no
underscore so that every interpret module may call them. ``interpret`` does not share
``optax_lopt``'s checks: the package must import without ``optax_lopt`` installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_int(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy integer (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_float(leaf: Any) -> bool:
    """Whether an array (or scalar) has a floating-point or complex dtype.

    Such leaves of an optimizer state are its state vector; the others (step counters,
    booleans) are its clock.
    """
    return jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)


def gradient_transformation(tx: Any, name: str = "tx") -> None:
    """Raises a ValueError naming ``name`` unless ``tx`` has callable ``init`` and ``update``."""
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise ValueError(
            f"{name}: expected an optax.GradientTransformation (with init and update), "
            f"got {type(tx).__name__}."
        )


def function(name: str, value: Any) -> Any:
    """``value`` itself when it is callable."""
    if not callable(value):
        raise ValueError(f"{name}: expected a callable, got {type(value).__name__}.")
    return value


def instance(name: str, value: Any, cls: type, expected: str) -> Any:
    """``value`` itself when it is an instance of ``cls`` (``expected`` words it: "a Report")."""
    if not isinstance(value, cls):
        raise ValueError(f"{name}: expected {expected}, got {type(value).__name__}.")
    return value


def integer(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` no smaller than ``minimum``."""
    if not is_int(value) or value < minimum:
        if minimum == 1:
            what = "a positive integer"
        elif minimum == 0:
            what = "a non-negative integer"
        else:
            what = f"an integer >= {minimum}"
        raise ValueError(f"{name}: expected {what}, got {value!r}.")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """``value`` as a positive ``int``."""
    return integer(name, value, minimum=1)


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as a non-negative ``int``."""
    return integer(name, value, minimum=0)


def positive(name: str, value: Any) -> float:
    """``value`` as a finite positive ``float``."""
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive number, got {value!r}.")
    return float(value)


def non_negative(name: str, value: Any) -> float:
    """``value`` as a finite non-negative ``float``."""
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a non-negative number, got {value!r}.")
    return float(value)


def optional_positive(name: str, value: Any) -> float | None:
    """None, or ``value`` as a finite positive ``float``."""
    return None if value is None else positive(name, value)


def in_unit_interval(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as a ``float`` in ``(0, 1)``, or in ``[0, 1)`` with ``allow_zero`` (a decay
    that may be zero, a fraction)."""
    low_ok = value >= 0 if allow_zero else value > 0
    if not (np.isfinite(value) and low_ok and value < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name}: expected a number in {interval}, got {value!r}.")
    return float(value)


def one_of(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}.")
    return value


def vector(name: str, values: Any, ndim: int = 1) -> np.ndarray:
    """``values`` as a non-empty finite float64 array with ``ndim`` dims (a scalar is 1-d)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0 and ndim == 1:
        arr = arr.reshape(1)
    if arr.ndim != ndim or arr.size == 0:
        raise ValueError(
            f"{name}: expected a non-empty {ndim}-d array of numbers, got shape {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite numbers, got {arr}.")
    return arr


def magnitudes(name: str, values: Any, *, minimum_size: int = 1) -> np.ndarray:
    """``values`` as a 1-d float64 array of at least ``minimum_size`` positive numbers."""
    arr = vector(name, values)
    if arr.size < minimum_size or np.any(arr <= 0):
        at_least = "" if minimum_size == 1 else f"at least {minimum_size} "
        raise ValueError(f"{name}: expected {at_least}positive magnitudes, got {arr}.")
    return arr


def coordinates(params: Any, coordinates: Sequence[int] | int | None) -> list:
    """Resolves a ``coordinates`` argument to ``(flat index, leaf index, index in the leaf)``.

    Flat indices count over all leaves of ``params``, concatenated. ``coordinates`` is either
    those indices or a count ``n`` (None: 8): then ``min(n, size)`` indices spread evenly over
    all the entries.
    """
    leaves = jax.tree.leaves(params)
    sizes = [int(np.size(leaf)) for leaf in leaves]
    total = sum(sizes)
    if total == 0:
        raise ValueError("params: expected at least one parameter entry, got none.")
    if coordinates is None:
        coordinates = 8
    if is_int(coordinates):
        count = positive_int("coordinates", coordinates)
        flat = np.unique(np.linspace(0, total - 1, min(count, total)).astype(int))
    else:
        flat = np.asarray(list(coordinates), dtype=int)
        if flat.ndim != 1 or flat.size == 0 or flat.min() < 0 or flat.max() >= total:
            raise ValueError(
                f"coordinates: expected flat indices in [0, {total}), got {list(coordinates)}."
            )
    offsets = np.cumsum([0] + sizes)
    out = []
    for c in flat:
        leaf = int(np.searchsorted(offsets, c, side="right") - 1)
        out.append((int(c), leaf, int(c - offsets[leaf])))
    return out


def replay_arguments(g: Any, u: Any, rate: float, decay: float, limit: float) -> tuple:
    """The checked arguments of a host-side replay of a step-adaptation rule.

    Returns:
      ``(g, u, previous, rate, decay, limit)``: ``g`` and ``u`` as ``(T, K)`` float arrays
      of one shape, ``previous`` the update before each step (zeros before the first), and
      the checked rate, decay and limit.

    Raises:
      ValueError: naming the argument that is not what `interpret.agreement_log_scales` documents.
    """
    g, u = vector("g", g, ndim=2), vector("u", u, ndim=2)
    if g.shape != u.shape:
        raise ValueError(f"g, u: expected the same (T, K) shape, got {g.shape} and {u.shape}.")
    rate = positive("rate", rate)
    decay = in_unit_interval("decay", decay, allow_zero=True)
    limit = positive("limit", limit)
    previous = np.concatenate([np.zeros_like(u[:1]), u[:-1]])
    return g, u, previous, rate, decay, limit
