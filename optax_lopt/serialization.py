"""Saving and loading learned optimizers: flax msgpack weights plus a JSON config.

``save(path, lopt, theta)`` writes a directory ``path`` with two files:
``config.json`` (format version, architecture class name, constructor arguments, free-form
metadata such as the command that produced the weights) and ``theta.msgpack`` (the
meta-parameters, serialised with ``flax.serialization.msgpack_serialize``, which stores raw
array bytes, so a round trip is bit-exact). ``load(path)`` rebuilds the architecture from the
config, checks every array's shape and dtype against a freshly initialised ``theta`` and
returns ``(lopt, theta)``. No pickle is involved.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from flax import serialization

from optax_lopt.base import LearnedOptimizer, MetaParams, from_config

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "theta.msgpack"


def save(
    path: str | os.PathLike,
    lopt: LearnedOptimizer,
    theta: MetaParams,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Writes ``lopt``'s config and ``theta`` to the directory ``path``.

    Each file is written to a temporary name and renamed, so a reader never sees a partial
    file.

    Args:
      path: a directory (created if missing).
      lopt: the architecture.
      theta: its meta-parameters.
      metadata: optional JSON-serialisable extras stored in the config (e.g. ``command``).
    """
    if not isinstance(lopt, LearnedOptimizer):
        raise TypeError(f"lopt: expected a LearnedOptimizer, got {type(lopt).__name__}.")
    os.makedirs(path, exist_ok=True)
    config = {
        "format_version": FORMAT_VERSION,
        "architecture": type(lopt).__name__,
        "config": lopt.config(),
        "metadata": metadata or {},
    }
    state_dict = serialization.to_state_dict(jax.tree.map(np.asarray, theta))
    _atomic_write(os.path.join(path, CONFIG_FILE), json.dumps(config, indent=2).encode())
    _atomic_write(os.path.join(path, WEIGHTS_FILE), serialization.msgpack_serialize(state_dict))


def load(path: str | os.PathLike) -> tuple[LearnedOptimizer, MetaParams]:
    """Reads a learned optimizer written by :func:`save`.

    Args:
      path: the directory given to :func:`save`.

    Returns:
      ``(lopt, theta)``.

    Raises:
      FileNotFoundError: the directory or one of its two files is missing.
      ValueError: the config is not valid JSON or has another format version, or the weights
        file is truncated or corrupt, or an array's shape or dtype does not match the
        architecture.
    """
    config = read_config(path)
    lopt = from_config(config["architecture"], config["config"])
    weights_path = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(f"path: no weights file {weights_path!r}.")
    with open(weights_path, "rb") as f:
        data = f.read()
    try:
        restored = serialization.msgpack_restore(data)
    except Exception as err:  # msgpack raises several types on truncated input.
        raise ValueError(
            f"path: weights file {weights_path!r} is truncated or corrupt ({err})."
        ) from err
    template = jax.eval_shape(lopt.init, jax.random.key(0))
    _check_matches(template, restored, weights_path)
    theta = serialization.from_state_dict(template, restored)
    theta = jax.tree.map(lambda x: jax.numpy.asarray(x), theta)
    return lopt, theta


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Reads and validates ``config.json`` of a saved learned optimizer."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"path: expected a directory written by save(), got {path!r}.")
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"path: no config file {config_path!r}.")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"path: config file {config_path!r} is not valid JSON ({err}).") from err
    version = config.get("format_version") if isinstance(config, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(
            f"path: config file {config_path!r} has format_version {version!r}, "
            f"this version of optax-lopt reads format_version {FORMAT_VERSION}."
        )
    for field in ("architecture", "config"):
        if field not in config:
            raise ValueError(f"path: config file {config_path!r} has no {field!r} field.")
    return config


def _check_matches(template: Any, restored: Any, where: str) -> None:
    expected = serialization.to_state_dict(template)
    flat_expected = _flatten(expected)
    flat_restored = _flatten(restored)
    if set(flat_expected) != set(flat_restored):
        missing = sorted(set(flat_expected) - set(flat_restored))
        extra = sorted(set(flat_restored) - set(flat_expected))
        raise ValueError(
            f"path: weights file {where!r} does not fit the architecture: "
            f"missing arrays {missing}, unexpected arrays {extra}."
        )
    for name, spec in flat_expected.items():
        got = np.asarray(flat_restored[name])
        if tuple(got.shape) != tuple(spec.shape) or got.dtype != spec.dtype:
            raise ValueError(
                f"path: weights file {where!r}: array {name!r} expected shape "
                f"{tuple(spec.shape)} and dtype {spec.dtype}, got shape {got.shape} and "
                f"dtype {got.dtype}."
            )


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}/{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
