"""Saving and loading learned optimizers: flax msgpack weights plus a JSON config.

``save(path, lopt, theta)`` writes a directory ``path`` with two files:
``config.json`` (format version, architecture class name, constructor arguments, the SHA-256
of the weights file, free-form metadata such as the command that produced the weights) and
``theta.msgpack`` (the meta-parameters, serialised with ``flax.serialization.msgpack_serialize``,
which stores raw array bytes, so a round trip is bit-exact). ``load(path)`` rebuilds the
architecture from the config, checks every array's shape and dtype against a freshly
initialised ``theta`` and returns ``(lopt, theta)``. No pickle is involved.

Errors and reliability:
  ``load`` either returns exactly the ``(lopt, theta)`` that ``save`` wrote or raises; it never
  returns weights that are not the ones saved beside the config. A missing directory or file
  raises `SavedOptimizerNotFoundError` (a ``FileNotFoundError`` and a ``ValueError``); every
  other defect (a path that is not a ``str`` or ``os.PathLike``, a config that is not UTF-8,
  not JSON, not a JSON object, without ``format_version`` or of another version, naming an
  unknown architecture or arguments it does not take; a weights file that is truncated,
  corrupt, or from another save, detected by its SHA-256, or whose arrays do not fit the
  architecture) raises a ``ValueError`` that names the file and says what is wrong. Configs
  written before the SHA-256 was recorded load without that check.

  ``save`` checks everything before it writes anything: ``theta`` must have the tree
  structure, shapes and dtypes of ``lopt.init(key)`` (the first leaf that differs is named),
  ``metadata`` must be a JSON-serialisable dict, and ``path`` must be new, an empty
  directory or a directory written by an earlier ``save``, which is overwritten. A
  non-empty directory holding anything else is refused, so ``save`` never mixes its files
  with someone else's. Overwriting removes the old config first, then writes the weights,
  then the new config (each to a temporary name, flushed to disk and renamed), so a crash
  mid-save leaves the old save untouched, a directory without a config (which ``load``
  refuses and a later ``save`` overwrites), or the complete new save.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import numpy as np
from flax import serialization

from optax_lopt import _checks
from optax_lopt.base import LearnedOptimizer, MetaParams, from_config

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "theta.msgpack"
_OWN_FILES = (CONFIG_FILE, WEIGHTS_FILE)


class SavedOptimizerNotFoundError(FileNotFoundError, ValueError):
    """A saved optimizer's directory, ``config.json`` or ``theta.msgpack`` does not exist.

    Both a ``FileNotFoundError`` (what is missing is a file) and a ``ValueError`` (like every
    other bad ``path`` given to `load`), so either ``except`` catches it.
    """


def save(
    path: str | os.PathLike,
    lopt: LearnedOptimizer,
    theta: MetaParams,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Writes ``lopt``'s config and ``theta`` to the directory ``path``.

    Everything is checked before anything is written (see the module's "Errors and
    reliability"): ``theta`` must be ``lopt``'s, and ``path`` must be new, empty or an earlier
    save, which is overwritten.

    Args:
      path: a directory: new (it is created), empty, or written by an earlier :func:`save`.
      lopt: the architecture.
      theta: its meta-parameters: the tree structure, shapes and dtypes of
        ``lopt.init(key)``.
      metadata: optional JSON-serialisable extras stored in the config (e.g. ``command``).

    Raises:
      TypeError: ``lopt`` is not a `LearnedOptimizer`.
      ValueError: ``path`` is not a path, is an existing file or a non-empty directory that
        :func:`save` did not write; ``theta`` does not fit ``lopt`` (the first mismatching
        leaf is named); ``metadata`` is not a JSON-serialisable dict.
    """
    path = _checks.path("path", path)
    _checks.learned_optimizer("lopt", lopt, error=TypeError)
    check_theta(lopt, theta)
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(
            f"metadata: expected a dict or None, got {metadata!r} ({type(metadata).__name__})."
        )
    state_dict = serialization.to_state_dict(jax.tree.map(np.asarray, theta))
    weights = serialization.msgpack_serialize(state_dict)
    config = {
        "format_version": FORMAT_VERSION,
        "architecture": type(lopt).__name__,
        "config": lopt.config(),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "metadata": metadata or {},
    }
    try:
        config_bytes = json.dumps(config, indent=2).encode()
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata: expected JSON-serialisable values ({err}).") from err
    _check_target(path)
    os.makedirs(path, exist_ok=True)
    config_path = os.path.join(path, CONFIG_FILE)
    if os.path.exists(config_path):
        os.remove(config_path)  # Until the new config lands, the directory does not load.
    _atomic_write(os.path.join(path, WEIGHTS_FILE), weights)
    _atomic_write(config_path, config_bytes)


def load(path: str | os.PathLike) -> tuple[LearnedOptimizer, MetaParams]:
    """Reads a learned optimizer written by :func:`save`.

    Args:
      path: the directory given to :func:`save`.

    Returns:
      ``(lopt, theta)``.

    Raises:
      SavedOptimizerNotFoundError: the directory or one of its two files is missing (a
        ``FileNotFoundError`` and a ``ValueError``).
      ValueError: ``path`` is not a path; the config is not UTF-8 JSON, not an object, lacks
        a field, has another format version or does not describe an architecture; the
        weights file is truncated, corrupt or not the one saved with the config, or an
        array's shape or dtype does not match the architecture. The message names the file.
    """
    config = read_config(path)
    path = os.fspath(path)
    config_path = os.path.join(path, CONFIG_FILE)
    try:
        lopt = from_config(config["architecture"], config["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"path: config file {config_path!r} does not describe an architecture: {err}"
        ) from err
    weights_path = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(weights_path):
        raise SavedOptimizerNotFoundError(
            f"path: no weights file {weights_path!r} (save() writes it beside {CONFIG_FILE})."
        )
    with open(weights_path, "rb") as f:
        data = f.read()
    recorded = config.get("weights_sha256")
    if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
        raise ValueError(
            f"path: weights file {weights_path!r} is truncated, corrupt or not the one saved "
            f"with {config_path!r}: its SHA-256 differs from the one the config records."
        )
    try:
        restored = serialization.msgpack_restore(data)
    except Exception as err:  # msgpack raises several types on truncated input.
        raise ValueError(
            f"path: weights file {weights_path!r} is truncated or corrupt "
            f"({type(err).__name__}: {err})."
        ) from err
    if not isinstance(restored, dict):
        raise ValueError(
            f"path: weights file {weights_path!r} is truncated or corrupt: expected a "
            f"msgpack map of arrays, got {type(restored).__name__}."
        )
    template = jax.eval_shape(lopt.init, jax.random.key(0))
    _check_matches(template, restored, weights_path)
    theta = serialization.from_state_dict(template, restored)
    theta = jax.tree.map(lambda x: jax.numpy.asarray(x), theta)
    return lopt, theta


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Reads and validates ``config.json`` of a saved learned optimizer.

    Args:
      path: the directory given to :func:`save`.

    Returns:
      The config: a dict with ``format_version``, ``architecture``, ``config`` and
      ``metadata`` (and, for saves that recorded it, ``weights_sha256``).

    Raises:
      SavedOptimizerNotFoundError: the directory or its config file is missing.
      ValueError: ``path`` is not a path, or the config is not UTF-8 JSON, not an object,
        lacks a field or has another format version (the message names the file).
    """
    path = _checks.path("path", path)
    if not os.path.isdir(path):
        what = "a file" if os.path.exists(path) else "missing"
        raise SavedOptimizerNotFoundError(
            f"path: expected a directory written by save(), got {path!r} ({what})."
        )
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise SavedOptimizerNotFoundError(
            f"path: no config file {config_path!r}; the directory was not written by save() "
            "or its save was interrupted."
        )
    config = _parse_config(config_path)
    if "format_version" not in config:
        raise ValueError(
            f"path: config file {config_path!r} has no 'format_version' field (expected "
            f"{FORMAT_VERSION}); it was not written by optax_lopt.save()."
        )
    version = config["format_version"]
    if not _checks.is_int(version) or version != FORMAT_VERSION:
        raise ValueError(
            f"path: config file {config_path!r} has format_version {version!r}, "
            f"this version of optax-lopt reads format_version {FORMAT_VERSION}."
        )
    for field, kind in (("architecture", str), ("config", dict), ("metadata", dict)):
        if field not in config and field != "metadata":
            raise ValueError(f"path: config file {config_path!r} has no {field!r} field.")
        if field in config and not isinstance(config[field], kind):
            raise ValueError(
                f"path: config file {config_path!r}: field {field!r} expected a JSON "
                f"{'string' if kind is str else 'object'}, got {config[field]!r}."
            )
    digest = config.get("weights_sha256")
    if digest is not None and not isinstance(digest, str):
        raise ValueError(
            f"path: config file {config_path!r}: field 'weights_sha256' expected a hex "
            f"string, got {digest!r}."
        )
    return config


def _parse_config(config_path: str) -> dict[str, Any]:
    """The JSON object in ``config_path``, or a ValueError naming the file and the defect."""
    with open(config_path, "rb") as f:
        raw = f.read()
    try:
        config = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(
            f"path: config file {config_path!r} is not UTF-8 text (byte "
            f"{raw[err.start]:#04x} at offset {err.start}); it is corrupt or not a config."
        ) from err
    except json.JSONDecodeError as err:
        raise ValueError(f"path: config file {config_path!r} is not valid JSON ({err}).") from err
    if not isinstance(config, dict):
        raise ValueError(
            f"path: config file {config_path!r}: expected a JSON object, got "
            f"{_json_kind(config)} {_short(config)}."
        )
    return config


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_theta(lopt: LearnedOptimizer, theta: MetaParams) -> None:
    """Raises a ValueError naming the first leaf where ``theta`` differs from ``lopt.init``'s."""
    template = jax.eval_shape(lopt.init, jax.random.key(0))
    want = jax.tree_util.tree_flatten_with_path(template)[0]
    try:
        got = jax.tree_util.tree_flatten_with_path(theta)[0]
    except Exception as err:  # An unflattenable object: jax raises several types.
        raise ValueError(f"theta: expected a pytree of arrays, got {_short(theta)}.") from err
    name = type(lopt).__name__
    want_paths = [jax.tree_util.keystr(p) for p, _ in want]
    got_paths = [jax.tree_util.keystr(p) for p, _ in got]
    if want_paths != got_paths:
        pairs = zip(want_paths + [None], got_paths + [None], strict=False)
        first = next(i for i, (w, g) in enumerate(pairs) if w != g)
        missing = want_paths[first] if first < len(want_paths) else None
        if missing is not None and missing not in got_paths:
            detail = f"missing leaf theta{missing}"
        else:
            detail = f"unexpected leaf theta{got_paths[first]}"
        raise ValueError(
            f"theta: expected the tree structure of {name}.init(key) "
            f"({len(want_paths)} leaves), got {len(got_paths)} leaves; first difference: "
            f"{detail}. Is theta from another architecture or configuration?"
        )
    for (key_path, spec), (_, leaf) in zip(want, got, strict=True):
        shape, dtype = np.shape(leaf), getattr(leaf, "dtype", np.asarray(leaf).dtype)
        if tuple(shape) != tuple(spec.shape) or np.dtype(dtype) != np.dtype(spec.dtype):
            raise ValueError(
                f"theta{jax.tree_util.keystr(key_path)}: expected shape {tuple(spec.shape)} and "
                f"dtype {spec.dtype} (as {name}.init(key) makes it), got shape {tuple(shape)} "
                f"and dtype {dtype}."
            )


def _check_target(path: str) -> None:
    """Raises unless ``path`` is new, an empty directory or one an earlier save() wrote."""
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path):
        raise ValueError(
            f"path: expected a new or empty directory or one written by save(), got the "
            f"existing file {path!r}."
        )
    entries = sorted(os.listdir(path))
    foreign = [e for e in entries if e not in _OWN_FILES and not e.startswith(_tmp_prefixes())]
    if foreign:
        shown = ", ".join(repr(e) for e in foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ValueError(
            f"path: {path!r} is a non-empty directory that save() did not write (it holds "
            f"{shown}); save() writes only into a new or empty directory or over an earlier "
            "save. Choose another path."
        )
    config_path = os.path.join(path, CONFIG_FILE)
    if CONFIG_FILE in entries:
        try:
            config = _parse_config(config_path)
        except (OSError, ValueError) as err:
            raise ValueError(f"{err} Refusing to overwrite it: choose another path.") from err
        if "format_version" not in config or "architecture" not in config:
            raise ValueError(
                f"path: config file {config_path!r} was not written by save() (it has no "
                "'format_version' or 'architecture' field). Refusing to overwrite it: choose "
                "another path."
            )


def _tmp_prefixes() -> tuple[str, ...]:
    return tuple(f"{name}.tmp-" for name in _OWN_FILES)


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
