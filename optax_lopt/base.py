"""The `LearnedOptimizer` contract shared by every architecture.

A learned optimizer is split in two, as in optax: a frozen, hashable configuration object
(the architecture and its sizes) and meta-parameters ``theta`` (a pytree of arrays). The
configuration builds ``theta`` with :meth:`LearnedOptimizer.init` and turns a given ``theta``
into an ordinary ``optax.GradientTransformationExtraArgs`` with
:meth:`LearnedOptimizer.transform`. ``transform`` is cheap and traceable, so meta-training can
differentiate through it.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import chex
import optax

MetaParams = Any
"""Meta-parameters of a learned optimizer: a pytree (nested dicts) of arrays."""

_ARCHITECTURES: dict[str, type[LearnedOptimizer]] = {}


class LearnedOptimizer(abc.ABC):
    """Base class of every learned optimizer architecture.

    Subclasses are frozen dataclasses whose fields are plain Python numbers, strings and
    tuples, so a configuration is hashable, comparable and serialisable to JSON. Subclasses
    register themselves by class name (see :func:`architecture`), which is how
    ``optax_lopt.load`` and the examples' ``--architecture`` flag find them.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not getattr(cls, "__abstractmethods__", None):
            _ARCHITECTURES[cls.__name__] = cls

    @abc.abstractmethod
    def init(self, key: chex.PRNGKey) -> MetaParams:
        """Samples initial meta-parameters ``theta``.

        Args:
          key: a ``jax.random`` key.

        Returns:
          A pytree of arrays.
        """

    @abc.abstractmethod
    def transform(self, theta: MetaParams) -> optax.GradientTransformationExtraArgs:
        """Builds the optax transformation that this optimizer applies with ``theta``.

        The returned ``update(updates, state, params=None, *, value=None, **extra_args)``
        takes the loss as ``value`` (optional), ignores unknown extra arguments, returns
        updates in the dtype of the parameters (of the gradients when ``params`` is None) and
        keeps its state's shapes and dtypes fixed.

        Args:
          theta: meta-parameters, as returned by :meth:`init` (or trained).

        Returns:
          An ``optax.GradientTransformationExtraArgs``.
        """

    def config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-serialisable dict."""
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def architecture(name: str) -> type[LearnedOptimizer]:
    """Returns the `LearnedOptimizer` subclass registered under ``name``.

    Args:
      name: a class name, e.g. ``"ComponentwiseRNN"`` or ``"MLPLOpt"``.

    Returns:
      The class.

    Raises:
      ValueError: if no architecture has that name.
    """
    if name not in _ARCHITECTURES:
        raise ValueError(f"architecture: expected one of {sorted(_ARCHITECTURES)}, got {name!r}.")
    return _ARCHITECTURES[name]


def architecture_names() -> tuple[str, ...]:
    """Returns the names of all registered architectures, sorted."""
    return tuple(sorted(_ARCHITECTURES))


def from_config(name: str, config: dict[str, Any]) -> LearnedOptimizer:
    """Builds an architecture from its class name and :meth:`LearnedOptimizer.config`.

    Args:
      name: the class name.
      config: constructor arguments (lists are turned back into tuples).

    Returns:
      The configured `LearnedOptimizer`.
    """
    cls = architecture(name)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"config: arguments {sorted(config)} do not fit {name}: {err}") from err
