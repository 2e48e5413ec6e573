"""The meta-trainer: the outer loop that trains a learned optimizer's meta-parameters.

Each outer step asks a `GradientEstimator` for a meta-gradient (the estimator advances its
persistent batch of inner runs by one truncation), clips it by global norm, and hands it to
any optax transformation (the meta-optimizer). A meta-gradient with a NaN or infinite entry
is never applied, nor is an update that would make ``theta`` non-finite: the step is counted
as skipped and ``theta`` and the meta-optimizer state stay as they were. Everything in one
outer step is a single jitted function of the training state; the random key of step ``t``
is ``fold_in(key(seed), t)``, so a run resumed from a checkpoint draws exactly the
randomness an uninterrupted run draws and ends at the same ``theta``.

When given a ``workdir`` the trainer appends one JSON line per outer step to
``<workdir>/metrics.jsonl``, writes an orbax checkpoint every ``checkpoint_every`` steps
under ``<workdir>/checkpoints``, resumes from the newest checkpoint when one is there, and
writes the final meta-parameters with ``optax_lopt.save`` to ``<workdir>/final``.

References:
  Metz et al., "Understanding and correcting pathologies in the training of learned
  optimizers", arXiv 1810.10180.
  Metz et al., "Tasks, stability, architecture, and compute: Training more effective learned
  optimizers, and using them to train themselves", arXiv 2009.11243.
  Vicol, Metz, Sohl-Dickstein, "Unbiased Gradient Estimation in Unrolled Computation Graphs
  with Persistent Evolution Strategies", arXiv 2112.13835.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TextIO

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_lopt import serialization
from optax_lopt.base import LearnedOptimizer, MetaParams
from optax_lopt.meta import _progress, checkpoint, metrics_log, sharding
from optax_lopt.meta.base import EstimatorState

FINAL_DIRNAME = "final"
"""``optax_lopt.save`` writes the final meta-parameters to ``<workdir>/final``."""

_CHECKPOINT_FORMAT = 1


class TrainState(NamedTuple):
    """Everything the meta-trainer carries from one outer step to the next.

    Attributes:
      step: number of outer steps done (int32 scalar).
      theta: the meta-parameters.
      opt_state: the meta-optimizer's state.
      estimator_state: the estimator's persistent inner runs.
      num_skipped: outer steps whose meta-gradient was non-finite and was not applied.
      num_resets: skipped steps after which the estimator's inner runs held non-finite
        numbers and were restarted with ``estimator.init``.
    """

    step: jax.Array
    theta: MetaParams
    opt_state: optax.OptState
    estimator_state: EstimatorState
    num_skipped: jax.Array
    num_resets: jax.Array


def _all_finite(tree: Any) -> jax.Array:
    """True when every inexact leaf of ``tree`` is free of NaN and infinity."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack(leaves))


def _apply_if_finite(
    grads: Any, new_theta: Any, new_opt_state: Any, theta: Any, opt_state: Any
) -> tuple[Any, Any, jax.Array]:
    """``(theta, opt_state, ok)``: the new ones if the meta-gradient and new theta are finite.

    An outer step with a NaN/inf meta-gradient, or one that would make ``theta`` non-finite,
    is skipped: the old meta-parameters and optimizer state are kept.
    """
    ok = jnp.logical_and(_all_finite(grads), _all_finite(new_theta))
    theta, opt_state = jax.tree.map(
        lambda new, old: jnp.where(ok, new, old), (new_theta, new_opt_state), (theta, opt_state)
    )
    return theta, opt_state, ok


def _needs_restart(grads: Any, estimator_state: Any) -> jax.Array:
    """True when a step's meta-gradient is non-finite and the inner runs hold NaN/inf.

    Such runs would keep producing non-finite meta-gradients forever, so the trainers restart
    them from ``estimator.init``.
    """
    return jnp.logical_and(~_all_finite(grads), ~_all_finite(estimator_state))


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}.")


def _to_python(value: Any) -> Any:
    value = np.asarray(value)
    return value.item() if value.shape == () else value.tolist()


class MetaTrainer:
    """Meta-trains ``theta`` with a gradient estimator and an optax meta-optimizer.

    Args:
      estimator: a `GradientEstimator` (``init(theta, key)``, ``meta_gradient(theta, state,
        key)``); the meta-loss it reports (mean loss over the trajectory relative to the
        initial loss, its log, the final loss, a validation loss) is chosen when the
        estimator is built.
      meta_optimizer: any ``optax.GradientTransformation``; it receives the meta-loss as
        ``value`` (so e.g. ``optax.contrib.reduce_on_plateau`` works).
      lopt: the learned optimizer whose ``theta`` is trained. Used to initialise ``theta``
        (unless ``theta`` is given) and to write the final weights with ``optax_lopt.save``.
      theta: initial meta-parameters; ``lopt.init`` with a key from ``seed`` when None.
      workdir: directory for ``metrics.jsonl``, checkpoints and the final weights. When None
        nothing is written and nothing is resumed.
      seed: the only source of randomness; the same seed gives the same ``theta``.
      clip_norm: if set, meta-gradients are scaled down to at most this global L2 norm.
      checkpoint_every: write a checkpoint every this many outer steps (and at the end).
      max_to_keep: how many checkpoints to keep.
      mesh: a 1-D device mesh from `optax_lopt.meta.task_mesh`; when given, the task batch
        (leaves of the estimator state with leading dimension ``num_tasks``) is sharded over
        it and everything else is replicated.
      num_tasks: size of the task batch, needed with ``mesh``; read from
        ``estimator.num_tasks`` when None.
      progress: draw a progress bar on ``progress_stream``: None draws only on a terminal.
      progress_stream: where the progress bar goes; ``sys.stderr`` when None.
      on_step: optional ``on_step(step, record)`` called on the host after every outer step
        with the record written to ``metrics.jsonl``.
      async_checkpointing: write checkpoints in a background thread.

    Raises:
      ValueError: for an argument of the wrong kind or out of range; the message names it.

    References:
      Metz et al., "Understanding and correcting pathologies in the training of learned
      optimizers", arXiv 1810.10180.
    """

    def __init__(
        self,
        estimator: Any,
        meta_optimizer: optax.GradientTransformation,
        *,
        lopt: LearnedOptimizer | None = None,
        theta: MetaParams | None = None,
        workdir: str | os.PathLike | None = None,
        seed: int = 0,
        clip_norm: float | None = None,
        checkpoint_every: int = 100,
        max_to_keep: int = 3,
        mesh: jax.sharding.Mesh | None = None,
        num_tasks: int | None = None,
        progress: bool | None = None,
        progress_stream: TextIO | None = None,
        on_step: Callable[[int, dict[str, Any]], None] | None = None,
        async_checkpointing: bool = True,
    ) -> None:
        if not (
            callable(getattr(estimator, "init", None))
            and callable(getattr(estimator, "meta_gradient", None))
        ):
            raise ValueError(
                "estimator: expected a GradientEstimator with init(theta, key) and "
                f"meta_gradient(theta, state, key), got {type(estimator).__name__}."
            )
        if not isinstance(meta_optimizer, optax.GradientTransformation):
            raise ValueError(
                "meta_optimizer: expected an optax.GradientTransformation, got "
                f"{type(meta_optimizer).__name__}."
            )
        if lopt is not None and not isinstance(lopt, LearnedOptimizer):
            raise ValueError(f"lopt: expected a LearnedOptimizer, got {type(lopt).__name__}.")
        if lopt is None and theta is None:
            raise ValueError("lopt: expected a LearnedOptimizer (or an initial theta), got None.")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise ValueError(f"seed: expected an integer, got {seed!r}.")
        if clip_norm is not None and not (
            isinstance(clip_norm, (int, float)) and math.isfinite(clip_norm) and clip_norm > 0
        ):
            raise ValueError(f"clip_norm: expected None or a positive number, got {clip_norm!r}.")
        _check_positive_int("checkpoint_every", checkpoint_every)
        _check_positive_int("max_to_keep", max_to_keep)
        if mesh is not None:
            if not isinstance(mesh, jax.sharding.Mesh):
                raise ValueError(f"mesh: expected a jax.sharding.Mesh, got {type(mesh).__name__}.")
            num_tasks = getattr(estimator, "num_tasks", None) if num_tasks is None else num_tasks
            if num_tasks is None:
                raise ValueError(
                    "num_tasks: expected the task batch size (the estimator has no "
                    "num_tasks attribute), got None."
                )

        self.estimator = estimator
        self.meta_optimizer = optax.with_extra_args_support(meta_optimizer)
        self.lopt = lopt
        self.workdir = None if workdir is None else os.fspath(workdir)
        self.seed = int(seed)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.checkpoint_every = int(checkpoint_every)
        self.max_to_keep = int(max_to_keep)
        self.mesh = mesh
        self.num_tasks = num_tasks
        self.progress = progress
        self.progress_stream = progress_stream
        self.on_step = on_step
        self.async_checkpointing = async_checkpointing
        self.state: TrainState | None = None

        root = jax.random.key(self.seed)
        self._theta_key = jax.random.fold_in(root, 0)
        self._estimator_key = jax.random.fold_in(root, 1)
        self._step_root = jax.random.fold_in(root, 2)
        self._reset_root = jax.random.fold_in(root, 3)
        self._initial_theta = theta

        abstract = jax.eval_shape(self._init_fn)
        if mesh is None:
            self._shardings = None
            self._init = jax.jit(self._init_fn)
            self._step = jax.jit(self._step_fn)
            self._reset = jax.jit(self._reset_fn)
        else:
            copy = sharding.replicated(mesh)
            self._shardings = TrainState(
                step=copy,
                theta=jax.tree.map(lambda _: copy, abstract.theta),
                opt_state=jax.tree.map(lambda _: copy, abstract.opt_state),
                estimator_state=sharding.task_shardings(abstract.estimator_state, mesh, num_tasks),
                num_skipped=copy,
                num_resets=copy,
            )
            self._init = jax.jit(self._init_fn, out_shardings=self._shardings)
            self._step = jax.jit(self._step_fn, out_shardings=(self._shardings, copy, copy))
            self._reset = jax.jit(self._reset_fn, out_shardings=self._shardings)
        self._abstract_state = checkpoint.abstract_like(abstract, self._shardings)

    # ----------------------------------------------------------------- pure functions

    def _init_fn(self) -> TrainState:
        if self._initial_theta is None:
            theta = self.lopt.init(self._theta_key)
        else:
            theta = jax.tree.map(jnp.asarray, self._initial_theta)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            theta=theta,
            opt_state=self.meta_optimizer.init(theta),
            estimator_state=self.estimator.init(theta, self._estimator_key),
            num_skipped=jnp.zeros((), jnp.int32),
            num_resets=jnp.zeros((), jnp.int32),
        )

    def _step_fn(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array], jax.Array]:
        key = jax.random.fold_in(self._step_root, state.step)
        grad, estimator_state, metrics = self.estimator.meta_gradient(
            state.theta, state.estimator_state, key
        )
        metrics = dict(metrics)
        if "meta_loss" not in metrics:
            raise ValueError(
                "estimator: expected meta_gradient to return metrics with a 'meta_loss' "
                f"entry, got keys {sorted(metrics)}."
            )
        grad_norm = optax.tree.norm(grad)
        needs_reset = _needs_restart(grad, estimator_state)
        # Checked before clipping: a finite gradient whose norm overflows would be scaled to
        # zero by the clip and applied as a silent no-op instead of counted as skipped.
        raw = (grad, grad_norm)
        if self.clip_norm is not None:
            scale = jnp.where(grad_norm > self.clip_norm, self.clip_norm / grad_norm, 1.0)
            grad = jax.tree.map(lambda g: (g * scale).astype(g.dtype), grad)

        updates, new_opt_state = self.meta_optimizer.update(
            grad, state.opt_state, state.theta, value=metrics["meta_loss"]
        )
        new_theta = optax.apply_updates(state.theta, updates)
        theta, opt_state, ok = _apply_if_finite(
            raw, new_theta, new_opt_state, state.theta, state.opt_state
        )
        skipped = (~ok).astype(jnp.int32)
        new_state = TrainState(
            step=state.step + 1,
            theta=theta,
            opt_state=opt_state,
            estimator_state=estimator_state,
            num_skipped=state.num_skipped + skipped,
            num_resets=state.num_resets,
        )
        metrics.update(grad_norm=grad_norm, skipped=~ok, num_skipped=new_state.num_skipped)
        return new_state, metrics, needs_reset

    def _reset_fn(self, state: TrainState) -> TrainState:
        key = jax.random.fold_in(self._reset_root, state.step)
        return state._replace(
            estimator_state=self.estimator.init(state.theta, key),
            num_resets=state.num_resets + 1,
        )

    # ----------------------------------------------------------------- public API

    def init_state(self) -> TrainState:
        """A fresh training state at step 0, placed on the mesh when there is one."""
        return self._init()

    def step(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        """One outer step: a jitted gradient-clip-update, then a restart if needed.

        If the meta-gradient was non-finite and the estimator's new state holds NaN or
        infinity, the inner runs are restarted with ``estimator.init`` (a second jitted
        function, compiled only the first time it is needed), with a key from the seed and
        the step.

        Args:
          state: the current training state.

        Returns:
          ``(new_state, metrics)``: the estimator's metrics (including ``"meta_loss"``) plus
          ``"grad_norm"`` (before clipping), ``"skipped"``, ``"num_skipped"`` and
          ``"num_resets"``.
        """
        state, metrics, needs_reset = self._step(state)
        if bool(needs_reset):
            state = self._reset(state)
        metrics["num_resets"] = state.num_resets
        return state, metrics

    def restore(self) -> TrainState | None:
        """The training state of the newest checkpoint in ``workdir``, or None if there is none.

        Raises:
          ValueError: if the checkpoint was written with another seed.
        """
        if self.workdir is None:
            return None
        ckpt = checkpoint.Checkpointer(self.workdir, self.max_to_keep, async_save=False)
        try:
            if ckpt.latest_step() is None:
                return None
            state, metadata = ckpt.restore(self._abstract_state)
        finally:
            ckpt.close()
        if metadata.get("seed") != self.seed:
            raise ValueError(
                f"seed: the checkpoints in {self.workdir} were written with seed "
                f"{metadata.get('seed')!r}, got {self.seed!r}; use the same seed or a new workdir."
            )
        return state

    def train(self, num_outer_steps: int) -> MetaParams:
        """Runs outer steps until ``num_outer_steps`` are done, resuming if it can.

        Args:
          num_outer_steps: the total number of outer steps of the run (counting those done
            before a resume).

        Returns:
          The final meta-parameters ``theta`` (also left in ``self.state.theta``). If the
          workdir's checkpoint is already past ``num_outer_steps``, its ``theta``.

        Raises:
          ValueError: if ``num_outer_steps`` is not a non-negative integer.
        """
        if (
            not isinstance(num_outer_steps, (int, np.integer))
            or isinstance(num_outer_steps, bool)
            or num_outer_steps < 0
        ):
            raise ValueError(
                f"num_outer_steps: expected a non-negative integer, got {num_outer_steps!r}."
            )
        state = self.restore()
        if state is None:
            state = self.init_state()
        start = int(state.step)
        lead = jax.process_index() == 0
        writer = None
        ckpt = None
        if self.workdir is not None:
            ckpt = checkpoint.Checkpointer(
                self.workdir, self.max_to_keep, async_save=self.async_checkpointing
            )
            if lead:
                metrics_log.truncate_metrics(self.workdir, start)
                writer = metrics_log.MetricsWriter(self.workdir)
        bar = _progress.ProgressBar(
            num_outer_steps,
            enabled=self.progress if lead else False,
            stream=self.progress_stream,
        )
        metadata = {"seed": self.seed, "format": _CHECKPOINT_FORMAT}
        try:
            for step in range(start, num_outer_steps):
                state, metrics = self.step(state)
                done = step + 1
                host = jax.device_get(metrics)
                record: dict[str, Any] = {"step": done}
                record["meta_loss"] = _to_python(host.pop("meta_loss"))
                record.update({k: _to_python(v) for k, v in sorted(host.items())})
                record["skipped"] = bool(record["skipped"])
                record["time"] = time.time()
                if writer is not None:
                    writer.write(record)
                if self.on_step is not None:
                    self.on_step(done, record)
                bar.update(done, record["meta_loss"])
                if ckpt is not None and (done % self.checkpoint_every == 0):
                    ckpt.save(done, state, metadata)
            if ckpt is not None and num_outer_steps > start:
                ckpt.save(int(state.step), state, metadata)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            if ckpt is not None:
                ckpt.close()
        self.state = state
        if self.workdir is not None and self.lopt is not None and lead:
            serialization.save(
                os.path.join(self.workdir, FINAL_DIRNAME),
                self.lopt,
                jax.device_get(state.theta),
                metadata={"step": int(state.step), "seed": self.seed},
            )
        return state.theta
