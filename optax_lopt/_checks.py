"""Argument checks shared by every module, so that the same rule is written (and worded) once.

Each check takes the argument's ``name`` (as the user wrote it: a keyword argument, a flag, a
config key) and its ``value``; it returns the value normalised to a Python type or raises a
``ValueError`` that names the argument, says what was expected and shows what came. NumPy
scalars are accepted wherever the matching Python type is (``np.int64(4)`` is an int here);
``bool`` is never accepted as a number, although Python treats it as one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np


def _fail(name: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"{name}: expected {expected}, got {value!r} ({type(value).__name__}).")


def is_int(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy integer (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy real number (not a bool, not a string)."""
    return is_int(value) or isinstance(value, (float, np.floating))


def integer(name: str, value: Any, *, minimum: int | None = None) -> int:
    """``value`` as an ``int``, at least ``minimum`` when given."""
    if not is_int(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise _fail(name, f"an integer{bound}", value)
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """``value`` as a positive ``int``."""
    if not (is_int(value) and value >= 1):
        raise _fail(name, "a positive integer", value)
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as a non-negative ``int``."""
    if not is_int(value) or value < 0:
        raise _fail(name, "a non-negative integer", value)
    return int(value)


def finite(name: str, value: Any) -> float:
    """``value`` as a finite ``float``."""
    if not is_real(value) or not math.isfinite(float(value)):
        raise _fail(name, "a finite number", value)
    return float(value)


def positive(name: str, value: Any) -> float:
    """``value`` as a finite positive ``float``."""
    if not is_real(value) or not math.isfinite(float(value)) or value <= 0:
        raise _fail(name, "a finite positive number", value)
    return float(value)


def non_negative(name: str, value: Any) -> float:
    """``value`` as a finite non-negative ``float``."""
    if not is_real(value) or not math.isfinite(float(value)) or value < 0:
        raise _fail(name, "a finite non-negative number", value)
    return float(value)


def in_unit_interval(
    name: str, value: Any, *, closed_low: bool = False, closed_high: bool = False
) -> float:
    """``value`` as a ``float`` in the unit interval, open or closed at each end as asked."""
    low, high = "[" if closed_low else "(", "]" if closed_high else ")"
    ok = is_real(value) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v >= 0 if closed_low else v > 0) and (v <= 1 if closed_high else v < 1)
    if not ok:
        raise _fail(name, f"a number in {low}0, 1{high}", value)
    return float(value)


def one_of(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` itself when it is one of ``choices``; the error lists the valid values."""
    choices = list(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: expected one of {listed}; got {value!r}.")
    return value


def path(name: str, value: Any) -> str:
    """``value`` as a non-empty ``str`` path; ``os.PathLike`` objects (``pathlib.Path``) too."""
    import os

    fspath = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(fspath, str) or not fspath:
        raise _fail(name, "a non-empty str or os.PathLike path", value)
    return fspath


def boolean(name: str, value: Any) -> bool:
    """``value`` as a ``bool`` (Python or NumPy bool only; 0 and 1 are refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise _fail(name, "a bool", value)
    return bool(value)


def between(name: str, value: Any, low: float, high: float) -> float:
    """``value`` as a finite ``float`` in the closed interval ``[low, high]``."""
    if not is_real(value) or not math.isfinite(float(value)) or not low <= value <= high:
        raise _fail(name, f"a number in [{low:g}, {high:g}]", value)
    return float(value)


def at_least(name: str, value: Any, bound: float) -> float:
    """``value`` as a finite ``float`` no smaller than ``bound``."""
    if not is_real(value) or not math.isfinite(float(value)) or value < bound:
        raise _fail(name, f"a finite number >= {bound:g}", value)
    return float(value)


def optional(check: Callable[..., Any], name: str, value: Any, **kwargs: Any) -> Any:
    """None when ``value`` is None, else ``check(name, value, **kwargs)``."""
    return None if value is None else check(name, value, **kwargs)


def instance(
    name: str,
    value: Any,
    kind: type | tuple[type, ...] | Callable[[Any], bool],
    expected: str,
    *,
    error: type[Exception] = ValueError,
) -> Any:
    """``value`` itself when it is an instance of ``kind`` (or ``kind(value)`` is true).

    Args:
      name: the argument's name.
      value: what came.
      kind: a class, a tuple of classes, or a predicate of the value.
      expected: what was expected, as the message says it (``"a TaskFamily"``).
      error: the exception raised (``ValueError``; ``optax_lopt.save`` raises ``TypeError``).

    Raises:
      ``error``: ``"{name}: expected {expected}, got {type of value}."``
    """
    ok = isinstance(value, kind) if isinstance(kind, (type, tuple)) else kind(value)
    if not ok:
        raise error(f"{name}: expected {expected}, got {type(value).__name__}.")
    return value


def learned_optimizer(name: str, value: Any, *, error: type[Exception] = ValueError) -> Any:
    """``value`` if it is an ``optax_lopt.LearnedOptimizer``."""
    from optax_lopt.base import LearnedOptimizer

    return instance(name, value, LearnedOptimizer, "a LearnedOptimizer", error=error)


def task_family(name: str, value: Any) -> Any:
    """``value`` if it is an ``optax_lopt.tasks.TaskFamily``."""
    from optax_lopt.tasks.base import TaskFamily

    return instance(name, value, TaskFamily, "a TaskFamily")


def gradient_transformation(name: str, value: Any) -> Any:
    """``value`` if it is an ``optax.GradientTransformation``."""
    import optax

    return instance(name, value, optax.GradientTransformation, "an optax.GradientTransformation")


def transforms(name: str, value: Any) -> Any:
    """``value`` if it maps labels to optax transformations (``name[label]`` names a bad one)."""
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{name}: expected a mapping label -> optax transformation, got {type(value).__name__}."
        )
    for label, tx in value.items():
        gradient_transformation(f"{name}[{label!r}]", tx)
    return value


def value_range(name: str, value: Any, *, positive: bool = True) -> tuple[float, float]:
    """``value`` as a pair ``(low, high)`` of finite floats, ``low <= high`` (both > 0 when
    ``positive``); Python or NumPy numbers, in a tuple or list."""
    ok = isinstance(value, (tuple, list)) and len(value) == 2
    if ok:
        low, high = value
        ok = (
            is_real(low)
            and is_real(high)
            and math.isfinite(float(low))
            and math.isfinite(float(high))
            and low <= high
            and (not positive or low > 0)
        )
    if not ok:
        kind = "finite positive numbers" if positive else "finite numbers"
        raise ValueError(
            f"{name}: expected a pair (low, high) of {kind} with low <= high, got {value!r}."
        )
    return (float(value[0]), float(value[1]))


def tuple_of(
    check: Callable[[str, Any], Any], name: str, value: Any, *, what: str, allow_empty: bool = False
) -> tuple:
    """``value`` (a tuple or a list) as a tuple of its elements passed through ``check``.

    Each element is checked under the name ``name[i]``, so the message points at the entry
    that is wrong; ``what`` describes the elements for the message about the container.
    """
    if not isinstance(value, (tuple, list)) or (not value and not allow_empty):
        size = "" if allow_empty else "non-empty "
        raise ValueError(f"{name}: expected a {size}tuple of {what}, got {value!r}.")
    return tuple(check(f"{name}[{i}]", v) for i, v in enumerate(value))


def positive_ints(name: str, value: Any, *, allow_empty: bool = False) -> tuple[int, ...]:
    """``value`` as a tuple of positive ints (non-empty unless ``allow_empty``)."""
    return tuple_of(positive_int, name, value, what="positive integers", allow_empty=allow_empty)


def positives(name: str, value: Any) -> tuple[float, ...]:
    """``value`` as a non-empty tuple of finite positive floats."""
    return tuple_of(positive, name, value, what="finite positive numbers")


def decay_rates(name: str, value: Any, *, allow_empty: bool = False) -> tuple[float, ...]:
    """``value`` as a tuple of decay rates in (0, 1) (non-empty unless ``allow_empty``)."""
    return tuple_of(
        in_unit_interval, name, value, what="decay rates in (0, 1)", allow_empty=allow_empty
    )
