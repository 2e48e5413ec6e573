"""Shipped, meta-trained paper optimizers: ``optax_lopt.pretrained(name)``.

Each shipped optimizer is a `ComponentwiseRNN` (a GRU applied to every parameter
coordinate) meta-trained on one of the paper's task families and stored inside the package
as a directory written by `optax_lopt.save` (``config.json`` plus ``theta.msgpack``) under
``optax_lopt/pretrained_weights/<name>/``. ``"general"`` is the exception: an `MLPLOpt`
meta-trained on a mix of families (``optax_lopt.tasks.GENERAL_MIX``) and meant for new
problems with no hyperparameters to set; it is evaluated on ``digits_conv``, a family it
never saw. Nothing is downloaded. The config's ``metadata``
records the exact ``examples/meta_train.py`` command that reproduces the weights and the
held-out evaluation measured when they were shipped; read it with :func:`pretrained_metadata`.

  tx = optax_lopt.pretrained("linear_regression")      # optax.GradientTransformationExtraArgs
  tx = optax_lopt.pretrained("general")                # for any problem
  lopt, theta = optax_lopt.load_pretrained("linear_regression")

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
  Metz et al., "Tasks, stability, architecture, and compute: Training more effective learned
  optimizers, and using them to train themselves", arXiv 2009.11243 ("general").
"""

from __future__ import annotations

import difflib
import os
from typing import Any

import optax

from optax_lopt.base import LearnedOptimizer, MetaParams
from optax_lopt.serialization import CONFIG_FILE, load, read_config

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained_weights")
"""Directory holding one sub-directory per shipped optimizer."""


def pretrained_names() -> tuple[str, ...]:
    """Names accepted by :func:`pretrained`, sorted (the task family each was trained on, or
    ``"general"``)."""
    if not os.path.isdir(WEIGHTS_DIR):
        return ()
    return tuple(
        sorted(
            entry
            for entry in os.listdir(WEIGHTS_DIR)
            if os.path.isfile(os.path.join(WEIGHTS_DIR, entry, CONFIG_FILE))
        )
    )


def _normalize(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _resolve_name(name: str) -> str:
    """The shipped optimizer's name that ``name`` means: case, ``-`` and spaces are ignored.

    ``"Rosenbrock"``, ``"linear-regression"`` and ``" General "`` resolve to
    ``"rosenbrock"``, ``"linear_regression"`` and ``"general"``.

    Args:
      name: a name as a user may type it.

    Returns:
      One of :func:`pretrained_names`.

    Raises:
      ValueError: ``name`` is not a string or names no shipped optimizer; the message
        suggests the closest name, if any is close, and lists the valid ones.
    """
    names = pretrained_names()
    listed = ", ".join(repr(n) for n in names)
    if not isinstance(name, str):
        raise ValueError(
            f"name: expected one of {listed} (a str), got {name!r} ({type(name).__name__})."
        )
    wanted = _normalize(name)
    by_key = {_normalize(n): n for n in names}
    if wanted in by_key:
        return by_key[wanted]
    close = difflib.get_close_matches(wanted, list(by_key), n=1, cutoff=0.6)
    hint = f" Did you mean {by_key[close[0]]!r}?" if close else ""
    raise ValueError(f"name: expected one of {listed}; got {name!r}.{hint}")


def weights_dir(name: str) -> str:
    """The directory holding the shipped optimizer ``name``'s weights (see `load_pretrained`).

    Raises:
      ValueError: ``name`` is not a shipped optimizer.
    """
    return os.path.join(WEIGHTS_DIR, _resolve_name(name))


def load_pretrained(name: str) -> tuple[LearnedOptimizer, MetaParams]:
    """The architecture and meta-parameters of the shipped optimizer ``name``.

    Args:
      name: one of :func:`pretrained_names` (e.g. ``"linear_regression"``), in any case,
        with ``-`` or ``_`` (``"Linear-Regression"`` works too).

    Returns:
      ``(lopt, theta)``, as `optax_lopt.load` returns them; ``lopt.transform(theta)`` is the
      optimizer.

    Raises:
      ValueError: ``name`` is not a shipped optimizer (the message suggests the closest
        name and lists those that are).
    """
    return load(weights_dir(name))


def pretrained(name: str) -> optax.GradientTransformationExtraArgs:
    """The shipped, meta-trained optimizer ``name`` as an optax transformation.

    Use it like ``optax.adam``; pass the loss as ``value=`` to ``update`` where you have it:
    ``"general"`` bounds how far its step-size adaptation lengthens a step by the loss
    (``MLPLOpt(loss_bound=...)``; without ``value=`` there is no bound), the shipped GRU
    optimizers ignore it. The architecture and meta-parameters are
    :func:`load_pretrained`'s.

    Args:
      name: one of :func:`pretrained_names` (e.g. ``"rosenbrock"``), in any case, with ``-``
        or ``_`` (``"Rosenbrock"`` works too).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError: ``name`` is not a shipped optimizer (the message suggests the closest
        name and lists those that are).
    """
    lopt, theta = load_pretrained(name)
    return lopt.transform(theta)


def pretrained_metadata(name: str) -> dict[str, Any]:
    """The ``metadata`` of the shipped optimizer ``name``'s config.

    Holds ``command`` (the ``examples/meta_train.py`` command that reproduces the weights),
    ``meta_train_config`` (its settings) and, where measured, ``evaluation`` (held-out
    meta-objectives of this optimizer and of tuned baselines).

    Args:
      name: as for :func:`pretrained`.

    Returns:
      A copy of the metadata dict.

    Raises:
      ValueError: ``name`` is not a shipped optimizer (the message suggests the closest
        name and lists those that are).
    """
    return dict(read_config(weights_dir(name)).get("metadata", {}))
