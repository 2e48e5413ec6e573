"""The one outer loop of meta-training: a pure `meta_step` and the host-side driver `run`.

Every meta-training algorithm in this package (the `MetaTrainer`, the `SelfTrainer` and the
feedback probe) is built on the same two pieces, as optimistix's solvers all run under one
``iterative_solve``:

* `meta_step` is a pure, jittable function of one learner: ask the estimator for a
  meta-gradient, clip it, let an ``update`` function turn it into a step on ``theta``, and
  apply that step only when the meta-gradient, its norm and the new ``theta`` are all finite
  (the skip rule); it also says whether the estimator's inner runs need a restart (the
  restart rule). The self-trainer vmaps it over its population.
* `run` is the host-side loop around an algorithm's jitted step: seed-derived keys,
  resuming from the newest usable checkpoint after comparing the settings recorded with it,
  one ``metrics.jsonl`` line per outer step, the progress bar, periodic checkpoints and the
  final weights in ``<workdir>/final``.

The random key of outer step ``t`` is ``fold_in(keys.step, t)`` with ``keys = seed_keys(seed)``,
so a resumed run draws exactly the randomness an uninterrupted run draws.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol, TextIO

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_lopt import _checks, serialization
from optax_lopt.base import LearnedOptimizer, MetaParams
from optax_lopt.meta import _progress, checkpoint, metrics_log

__all__ = [
    "FINAL_DIRNAME",
    "Algorithm",
    "LoopOptions",
    "MetaStep",
    "SeedKeys",
    "SettingMismatchError",
    "Trainer",
    "UpdateFn",
    "meta_step",
    "optax_update",
    "run",
    "seed_keys",
]

FINAL_DIRNAME = "final"
"""``optax_lopt.save`` writes a run's final meta-parameters to ``<workdir>/final``."""

# ----------------------------------------------------------------- keys


class SeedKeys(NamedTuple):
    """The four independent key streams a run derives from its seed.

    Attributes:
      theta: initialises the meta-parameters.
      estimator: starts the estimator's inner runs.
      step: ``fold_in(step, t)`` is the key of outer step ``t``.
      reset: ``fold_in(reset, t)`` restarts inner runs that went non-finite at step ``t``.
    """

    theta: jax.Array
    estimator: jax.Array
    step: jax.Array
    reset: jax.Array


def seed_keys(seed: int) -> SeedKeys:
    """The key streams of ``seed``: ``fold_in(key(seed), i)`` for ``i = 0..3``."""
    root = jax.random.key(seed)
    return SeedKeys(*(jax.random.fold_in(root, i) for i in range(4)))


# ----------------------------------------------------------------- the pure step


def check_estimator(estimator: Any, name: str = "estimator") -> Any:
    """``estimator`` if it has ``init(theta, key)`` and ``meta_gradient(theta, state, key)``."""
    return _checks.instance(
        name,
        estimator,
        lambda e: (
            callable(getattr(e, "init", None)) and callable(getattr(e, "meta_gradient", None))
        ),
        "a GradientEstimator with init(theta, key) and meta_gradient(theta, state, key)",
    )


def check_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an estimator's ``metrics``, which must hold a ``"meta_loss"`` entry."""
    metrics = dict(metrics)
    if "meta_loss" not in metrics:
        raise ValueError(
            "estimator: expected meta_gradient to return metrics with a 'meta_loss' "
            f"entry, got keys {sorted(metrics)}."
        )
    return metrics


def all_finite(tree: Any) -> jax.Array:
    """True when every inexact leaf of ``tree`` is free of NaN and infinity."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack(leaves))


def apply_if_finite(
    checked: Any, new_theta: Any, new_opt_state: Any, theta: Any, opt_state: Any
) -> tuple[Any, Any, jax.Array]:
    """``(theta, opt_state, ok)``: the new ones if ``checked`` and the new theta are finite.

    The skip rule: an outer step whose meta-gradient (``checked``) holds NaN/inf, or that
    would make ``theta`` non-finite, keeps the old meta-parameters and optimizer state.
    """
    ok = jnp.logical_and(all_finite(checked), all_finite(new_theta))
    theta, opt_state = jax.tree.map(
        lambda new, old: jnp.where(ok, new, old), (new_theta, new_opt_state), (theta, opt_state)
    )
    return theta, opt_state, ok


def needs_restart(grads: Any, estimator_state: Any) -> jax.Array:
    """The restart rule: the meta-gradient is non-finite and the inner runs hold NaN/inf.

    Such runs would keep producing non-finite meta-gradients forever, so they are restarted
    from ``estimator.init``.
    """
    return jnp.logical_and(~all_finite(grads), ~all_finite(estimator_state))


UpdateFn = Callable[[MetaParams, Any, MetaParams, jax.Array], tuple[MetaParams, Any, Any]]
"""``update(grad, opt_state, theta, meta_loss) -> (updates, new_opt_state, aux)``."""


class MetaStep(NamedTuple):
    """What one `meta_step` returns.

    Attributes:
      theta: the new meta-parameters (the old ones if the step was skipped).
      opt_state: the new meta-optimizer state (the old one if skipped).
      estimator_state: the estimator's advanced inner runs.
      metrics: the estimator's metrics plus ``"grad_norm"`` (before clipping) and
        ``"skipped"``.
      restart: whether the inner runs must be restarted (`needs_restart`).
      aux: whatever the ``update`` function returned beside the step.
    """

    theta: MetaParams
    opt_state: Any
    estimator_state: Any
    metrics: dict[str, jax.Array]
    restart: jax.Array
    aux: Any


def optax_update(meta_optimizer: optax.GradientTransformationExtraArgs) -> UpdateFn:
    """The `meta_step` update of an optax meta-optimizer, given the meta-loss as ``value``."""

    def update(grad, opt_state, theta, meta_loss):
        updates, new_opt_state = meta_optimizer.update(grad, opt_state, theta, value=meta_loss)
        return updates, new_opt_state, None

    return update


def meta_step(
    estimator: Any,
    update: UpdateFn,
    theta: MetaParams,
    opt_state: Any,
    estimator_state: Any,
    key: jax.Array,
    *,
    clip_norm: float | None = None,
) -> MetaStep:
    """One outer step of one learner: estimate, clip, update, skip if non-finite.

    Args:
      estimator: a `GradientEstimator`.
      update: ``update(grad, opt_state, theta, meta_loss) -> (updates, new_opt_state, aux)``
        (`optax_update` for an optax meta-optimizer; a learned one in self-training).
      theta: the meta-parameters.
      opt_state: the meta-optimizer's state.
      estimator_state: the estimator's persistent inner runs.
      key: this step's key.
      clip_norm: if set, the meta-gradient is scaled down to at most this global norm. The
        skip rule looks at the gradient before the clip: a finite gradient whose norm
        overflows is skipped, not scaled to a silent zero step.

    Returns:
      A `MetaStep`.
    """
    grad, estimator_state, metrics = estimator.meta_gradient(theta, estimator_state, key)
    metrics = check_metrics(metrics)
    grad_norm = optax.tree.norm(grad)
    restart = needs_restart(grad, estimator_state)
    raw = (grad, grad_norm)
    if clip_norm is not None:
        scale = jnp.where(grad_norm > clip_norm, clip_norm / grad_norm, 1.0)
        grad = jax.tree.map(lambda g: (g * scale).astype(g.dtype), grad)
    updates, new_opt_state, aux = update(grad, opt_state, theta, metrics["meta_loss"])
    new_theta = optax.apply_updates(theta, updates)
    theta, opt_state, ok = apply_if_finite(raw, new_theta, new_opt_state, theta, opt_state)
    metrics.update(grad_norm=grad_norm, skipped=~ok)
    return MetaStep(theta, opt_state, estimator_state, metrics, restart, aux)


# ----------------------------------------------------------------- the host loop


class Algorithm(Protocol):
    """What `run` drives: a meta-training algorithm's state, step and records."""

    def init_state(self) -> Any:
        """A fresh training state at step 0 (with an int32 ``step`` field)."""

    def step(self, state: Any) -> tuple[Any, dict[str, jax.Array]]:
        """One jitted outer step (restarts included)."""

    def record(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """The ``metrics.jsonl`` line of outer step ``step`` (host values)."""

    def recorded_settings(self) -> dict[str, Any]:
        """JSON settings written with every checkpoint and compared on resume."""

    def final_weights(self, state: Any) -> tuple[LearnedOptimizer, MetaParams, dict] | None:
        """``(lopt, theta, metadata)`` to save to ``<workdir>/final``, or None."""


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """How `run` writes, shows and resumes a run (none of it changes the weights).

    Attributes:
      workdir: where ``metrics.jsonl``, checkpoints and ``final/`` go (any path-like, kept as
        a ``str``); None: nothing is written or resumed.
      checkpoint_every: a checkpoint every this many outer steps (and at the end; >= 1).
      max_to_keep: how many checkpoints are kept (>= 1).
      async_checkpointing: write checkpoints in a background thread.
      progress: draw a progress bar (None: only on a terminal).
      progress_stream: where the bar and the resume notice go (``sys.stderr`` when None).
      on_step: ``on_step(step, record)`` after every outer step.
      progress_key: the record entry the bar shows.
    """

    workdir: str | None = None
    checkpoint_every: int = 100
    max_to_keep: int = 3
    async_checkpointing: bool = True
    progress: bool | None = None
    progress_stream: TextIO | None = None
    on_step: Callable[[int, dict[str, Any]], None] | None = None
    progress_key: str = "meta_loss"

    def __post_init__(self) -> None:
        # The trainers pass their arguments straight through: the checks live here, once.
        if self.workdir is not None:
            object.__setattr__(self, "workdir", os.fspath(self.workdir))
        for name in ("checkpoint_every", "max_to_keep"):
            object.__setattr__(self, name, _checks.positive_int(name, getattr(self, name)))


class SettingMismatchError(ValueError):
    """A workdir's checkpoints were written with another value of a recorded setting.

    Attributes:
      name: the setting (a key of the recorded settings, e.g. a flag's name).
      recorded: the value the checkpoints were written with.
      given: the value of this run.
    """

    def __init__(self, name: str, recorded: Any, given: Any, workdir: str) -> None:
        super().__init__(
            f"{name}: the checkpoints in {workdir} were written with {name}={recorded!r}, got "
            f"{given!r}; use the same value or a new workdir."
        )
        self.name, self.recorded, self.given = name, recorded, given


def to_python(value: Any) -> Any:
    """A host scalar or array as a Python number or (nested) list."""
    value = np.asarray(value)
    return value.item() if value.shape == () else value.tolist()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def check_settings(recorded: Mapping[str, Any], given: Mapping[str, Any], workdir: str) -> None:
    """Raises `SettingMismatchError` for the first setting whose values differ.

    Settings under ``"config"`` (a run's user-level configuration) are compared only when the
    checkpoint recorded one, so checkpoints from before such a record still resume.
    """
    given = _jsonable(dict(given))
    for name, value in given.items():
        if name == "config":
            continue
        if recorded.get(name) != value:
            raise SettingMismatchError(name, recorded.get(name), value, workdir)
    old = recorded.get("config")
    if isinstance(old, Mapping):
        for name, value in (given.get("config") or {}).items():
            if old.get(name) != value:
                raise SettingMismatchError(name, old.get(name), value, workdir)


def _logged_steps(workdir: str) -> int | None:
    """How many outer steps ``metrics.jsonl`` holds from step 1 on without a gap (None: no log)."""
    if not os.path.exists(metrics_log.metrics_path(workdir)):
        return None
    count = 0
    for record in metrics_log.read_metrics(workdir):
        if record["step"] == count + 1:
            count += 1
        elif record["step"] > count + 1:
            break
    return count


def restore(
    workdir: str | None, abstract_state: Any, settings: Mapping[str, Any], max_to_keep: int = 3
) -> Any | None:
    """The newest usable checkpointed state in ``workdir``, or None when there is none.

    Candidates are tried newest first. One past the last step ``metrics.jsonl`` holds (its
    tail was lost) is passed over, so its steps are recomputed and logged again: nothing is
    lost or duplicated. One that cannot be read (truncated on disk) while an older one can is
    moved to ``<workdir>/unreadable_checkpoints``. The recorded settings are compared before
    any array is read, so a changed setting is named instead of a mismatching tree.

    Raises:
      SettingMismatchError: a recorded setting differs from ``settings``.
      ValueError: no checkpoint matches this run's training state.
    """
    if workdir is None:
        return None
    ckpt = checkpoint.Checkpointer(workdir, max_to_keep, async_save=False)
    try:
        logged = _logged_steps(workdir)
        unreadable: list[tuple[int, Exception]] = []
        for step in reversed(ckpt.all_steps()):
            if logged is not None and step > logged:
                continue
            try:
                metadata = ckpt.read_metadata(step)
            except Exception as err:  # noqa: BLE001 - whatever a damaged file raises
                unreadable.append((step, err))
                continue
            check_settings(metadata, settings, workdir)
            try:
                state, _ = ckpt.restore(abstract_state, step)
            except Exception as err:  # noqa: BLE001
                unreadable.append((step, err))
                continue
            for bad, _ in unreadable:
                ckpt.set_aside(bad)
            return state
        if unreadable:
            step, err = unreadable[0]
            raise ValueError(
                f"workdir: no checkpoint in {ckpt.directory} matches this run's training state "
                f"(step {step}: {type(err).__name__}); use the settings they were written with "
                "or a new workdir."
            ) from None
        return None
    finally:
        ckpt.close()


def _save_final(algorithm: Algorithm, workdir: str, state: Any) -> None:
    final = algorithm.final_weights(state)
    if final is None:
        return
    lopt, theta, metadata = final
    serialization.save(
        os.path.join(workdir, FINAL_DIRNAME), lopt, jax.device_get(theta), metadata=metadata
    )


def run(
    algorithm: Algorithm, num_outer_steps: int, options: LoopOptions, abstract_state: Any
) -> Any:
    """Runs ``algorithm`` until ``num_outer_steps`` outer steps are done, resuming if it can.

    Args:
      algorithm: the `Algorithm` (a trainer).
      num_outer_steps: the total number of outer steps (counting those before a resume).
      options: the `LoopOptions`.
      abstract_state: the training state's ``ShapeDtypeStruct`` tree (shardings included).

    Returns:
      The final training state.
    """
    workdir = options.workdir
    settings = algorithm.recorded_settings()
    state = restore(workdir, abstract_state, settings, options.max_to_keep)
    lead = jax.process_index() == 0
    stream = sys.stderr if options.progress_stream is None else options.progress_stream
    if state is None:
        state = algorithm.init_state()
    elif lead and options.progress is not False:
        print(f"Resumed {workdir} from the checkpoint at step {int(state.step)}.", file=stream)
    start = int(state.step)
    writer = ckpt = None
    if workdir is not None:
        ckpt = checkpoint.Checkpointer(
            workdir, options.max_to_keep, async_save=options.async_checkpointing
        )
        if lead:
            metrics_log.truncate_metrics(workdir, start)
            writer = metrics_log.MetricsWriter(workdir)
    bar = _progress.ProgressBar(
        num_outer_steps, enabled=options.progress if lead else False, stream=stream
    )
    try:
        for step in range(start, num_outer_steps):
            state, metrics = algorithm.step(state)
            done = step + 1
            record = algorithm.record(done, jax.device_get(metrics))
            record["time"] = time.time()
            if writer is not None:
                writer.write(record)
            if options.on_step is not None:
                options.on_step(done, record)
            bar.update(done, record[options.progress_key])
            if ckpt is not None and done % options.checkpoint_every == 0:
                ckpt.save(done, state, settings)
        if ckpt is not None and num_outer_steps > start:
            ckpt.save(int(state.step), state, settings)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if ckpt is not None:
            ckpt.close()
    if workdir is not None and lead:
        _save_final(algorithm, workdir, state)
    return state


class Trainer:
    """The host side every trainer on `run` shares: ``workdir``, `restore` and `train`.

    A subclass (`optax_lopt.meta.MetaTrainer`, `optax_lopt.meta.SelfTrainer`) is an
    `Algorithm`; its constructor sets ``self.options`` (a `LoopOptions`),
    ``self._abstract_state`` (the training state's ``ShapeDtypeStruct`` tree, shardings
    included) and ``self.state = None``, and ``_result(state)`` says what `train` returns.
    """

    options: LoopOptions
    state: Any
    _abstract_state: Any

    @property
    def workdir(self) -> str | None:
        """The run directory (None: nothing written or resumed)."""
        return self.options.workdir

    @workdir.setter
    def workdir(self, value: str | os.PathLike | None) -> None:
        self.options = dataclasses.replace(self.options, workdir=value)

    def restore(self) -> Any | None:
        """The training state of the newest usable checkpoint in ``workdir``, or None.

        Raises:
          ValueError: if the checkpoint was written with another value of a setting that
            ``recorded_settings()`` records (the seed, the ``MetaTrainer``'s ``config``, the
            ``SelfTrainer``'s population size and rule; a `SettingMismatchError` naming it),
            or matches no part of this run's training state.
        """
        return restore(
            self.workdir, self._abstract_state, self.recorded_settings(), self.options.max_to_keep
        )

    def train(self, num_outer_steps: int) -> MetaParams:
        """Runs outer steps until ``num_outer_steps`` are done, resuming if it can.

        Args:
          num_outer_steps: the total number of outer steps of the run (counting those done
            before a resume).

        Returns:
          The trained meta-parameters: the ``MetaTrainer``'s ``theta``, the ``SelfTrainer``'s
          best member (lowest running meta-loss). The whole training state (the whole
          population) is left in ``self.state``. If the workdir's checkpoint is already past
          ``num_outer_steps``, those of that checkpoint.

        Raises:
          ValueError: if ``num_outer_steps`` is not a non-negative integer.
        """
        num_outer_steps = _checks.non_negative_int("num_outer_steps", num_outer_steps)
        self.state = run(self, num_outer_steps, self.options, self._abstract_state)
        return self._result(self.state)

    def _result(self, state: Any) -> MetaParams:
        """What `train` returns from the final training state."""
        raise NotImplementedError
