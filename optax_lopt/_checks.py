"""Argument checks shared by every module, so that the same rule is written (and worded) once.

Each check takes the argument's ``name`` (as the user wrote it: a keyword argument, a flag, a
config key) and its ``value``; it returns the value normalised to a Python type or raises a
``ValueError`` that names the argument, says what was expected and shows what came. NumPy
scalars are accepted wherever the matching Python type is (``np.int64(4)`` is an int here);
``bool`` is never accepted as a number, although Python treats it as one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
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
    if not is_int(value) or value < 1:
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
