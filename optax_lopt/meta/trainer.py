"""The meta-trainer: the outer loop that trains a learned optimizer's meta-parameters.

Each outer step asks a `GradientEstimator` for a meta-gradient (the estimator advances its
persistent batch of inner runs by one truncation), clips it by global norm, and hands it to
any optax transformation (the meta-optimizer). A meta-gradient with a NaN or infinite entry
is never applied, nor is an update that would make ``theta`` non-finite: the step is counted
as skipped and ``theta`` and the meta-optimizer state stay as they were. Everything in one
outer step is a single jitted function of the training state; the random key of step ``t``
is ``fold_in(seed_keys(seed).step, t)`` (`optax_lopt.meta.outer_loop.seed_keys`), so a run
resumed from a checkpoint draws exactly the randomness an uninterrupted run draws and ends
at the same ``theta``.

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

import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TextIO

import jax
import jax.numpy as jnp
import optax

from optax_lopt import _checks
from optax_lopt.base import LearnedOptimizer, MetaParams
from optax_lopt.meta import checkpoint, metrics_log, outer_loop, sharding
from optax_lopt.meta.base import EstimatorState

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


def _check_mesh(mesh: Any, estimator: Any, num_tasks: int | None) -> int:
    """The task batch size to shard over ``mesh`` (``estimator.num_tasks`` when None)."""
    _checks.instance("mesh", mesh, jax.sharding.Mesh, "a jax.sharding.Mesh")
    num_tasks = getattr(estimator, "num_tasks", None) if num_tasks is None else num_tasks
    if num_tasks is None:
        raise ValueError(
            "num_tasks: expected the task batch size (the estimator has no "
            "num_tasks attribute), got None."
        )
    return num_tasks


class MetaTrainer(outer_loop.Trainer):
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
      workdir: directory for ``metrics.jsonl``, checkpoints and the final weights; None:
        nothing is written or resumed. This and the other host arguments
        (``checkpoint_every``, ``max_to_keep``, ``progress``, ``progress_stream``,
        ``on_step``, ``async_checkpointing``) are the fields of
        `optax_lopt.meta.outer_loop.LoopOptions`, documented there; none changes the weights.
      seed: the only source of randomness; the same seed gives the same ``theta``.
      clip_norm: if set, meta-gradients are scaled down to at most this global L2 norm.
      checkpoint_every: see ``workdir``.
      max_to_keep: see ``workdir``.
      mesh: a 1-D device mesh from `optax_lopt.meta.task_mesh`; when given, the task batch
        (leaves of the estimator state with leading dimension ``num_tasks``) is sharded over
        it and everything else is replicated.
      num_tasks: size of the task batch, needed with ``mesh``; read from
        ``estimator.num_tasks`` when None.
      progress: see ``workdir``.
      progress_stream: see ``workdir``.
      on_step: see ``workdir``.
      async_checkpointing: see ``workdir``.
      config: optional JSON settings of the run (e.g. an example's flags): recorded with
        every checkpoint, and a resume whose value of one differs is refused with an error
        naming it (`optax_lopt.meta.outer_loop.SettingMismatchError`).
      final_metadata: optional JSON entries added to the metadata of ``<workdir>/final``
        (e.g. the command that reproduces the run); the trainer itself writes ``step``,
        ``seed`` and ``summary`` (`optax_lopt.meta.metrics_log.summarize` of the run).

    Raises:
      ValueError: for an argument of the wrong kind or out of range; the message names it.
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
        config: Mapping[str, Any] | None = None,
        final_metadata: Mapping[str, Any] | None = None,
    ) -> None:
        outer_loop.check_estimator(estimator)
        _checks.gradient_transformation("meta_optimizer", meta_optimizer)
        _checks.optional(_checks.learned_optimizer, "lopt", lopt)
        if lopt is None and theta is None:
            raise ValueError("lopt: expected a LearnedOptimizer (or an initial theta), got None.")
        self.seed = _checks.integer("seed", seed)
        self.clip_norm = _checks.optional(_checks.positive, "clip_norm", clip_norm)
        self.options = outer_loop.LoopOptions(
            workdir=workdir,
            checkpoint_every=checkpoint_every,
            max_to_keep=max_to_keep,
            async_checkpointing=async_checkpointing,
            progress=progress,
            progress_stream=progress_stream,
            on_step=on_step,
        )
        if mesh is not None:
            num_tasks = _check_mesh(mesh, estimator, num_tasks)

        self.estimator = estimator
        self.meta_optimizer = optax.with_extra_args_support(meta_optimizer)
        self.lopt = lopt
        self.mesh = mesh
        self.num_tasks = num_tasks
        self.config = None if config is None else dict(config)
        self.final_metadata = dict(final_metadata or {})
        self.state: TrainState | None = None
        self._keys = outer_loop.seed_keys(self.seed)
        self._initial_theta = theta

        self._compile()

    def _compile(self) -> None:
        """Jits init, step and reset, placed on the mesh when there is one."""
        abstract = jax.eval_shape(self._init_fn)
        self._shardings = None if self.mesh is None else self._state_shardings(abstract)
        if self.mesh is None:
            self._init = jax.jit(self._init_fn)
            self._step = jax.jit(self._step_fn)
            self._reset = jax.jit(self._reset_fn)
        else:
            copy = sharding.replicated(self.mesh)
            self._init = jax.jit(self._init_fn, out_shardings=self._shardings)
            self._step = jax.jit(self._step_fn, out_shardings=(self._shardings, copy, copy))
            self._reset = jax.jit(self._reset_fn, out_shardings=self._shardings)
        self._abstract_state = checkpoint.abstract_like(abstract, self._shardings)

    def _state_shardings(self, abstract: TrainState) -> TrainState:
        copy = sharding.replicated(self.mesh)
        return TrainState(
            step=copy,
            theta=jax.tree.map(lambda _: copy, abstract.theta),
            opt_state=jax.tree.map(lambda _: copy, abstract.opt_state),
            estimator_state=sharding.task_shardings(
                abstract.estimator_state, self.mesh, self.num_tasks
            ),
            num_skipped=copy,
            num_resets=copy,
        )

    # ----------------------------------------------------------------- pure functions

    def _init_fn(self) -> TrainState:
        if self._initial_theta is None:
            theta = self.lopt.init(self._keys.theta)
        else:
            theta = jax.tree.map(jnp.asarray, self._initial_theta)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            theta=theta,
            opt_state=self.meta_optimizer.init(theta),
            estimator_state=self.estimator.init(theta, self._keys.estimator),
            num_skipped=jnp.zeros((), jnp.int32),
            num_resets=jnp.zeros((), jnp.int32),
        )

    def _step_fn(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array], jax.Array]:
        out = outer_loop.meta_step(
            self.estimator,
            outer_loop.optax_update(self.meta_optimizer),
            state.theta,
            state.opt_state,
            state.estimator_state,
            jax.random.fold_in(self._keys.step, state.step),
            clip_norm=self.clip_norm,
        )
        num_skipped = state.num_skipped + out.metrics["skipped"].astype(jnp.int32)
        new_state = TrainState(
            step=state.step + 1,
            theta=out.theta,
            opt_state=out.opt_state,
            estimator_state=out.estimator_state,
            num_skipped=num_skipped,
            num_resets=state.num_resets,
        )
        out.metrics["num_skipped"] = num_skipped
        return new_state, out.metrics, out.restart

    def _reset_fn(self, state: TrainState) -> TrainState:
        key = jax.random.fold_in(self._keys.reset, state.step)
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

    def record(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """The ``metrics.jsonl`` line of outer step ``step`` from its host metrics."""
        host = dict(metrics)
        record: dict[str, Any] = {"step": step}
        record["meta_loss"] = outer_loop.to_python(host.pop("meta_loss"))
        record.update({k: outer_loop.to_python(v) for k, v in sorted(host.items())})
        record["skipped"] = bool(record["skipped"])
        return record

    def recorded_settings(self) -> dict[str, Any]:
        """What every checkpoint records and a resume compares: seed, format, ``config``."""
        settings: dict[str, Any] = {"seed": self.seed, "format": _CHECKPOINT_FORMAT}
        if self.config is not None:
            settings["config"] = self.config
        return settings

    def final_weights(self, state: TrainState) -> tuple[LearnedOptimizer, Any, dict] | None:
        """``(lopt, theta, metadata)`` for ``<workdir>/final`` (None without ``lopt``)."""
        if self.lopt is None:
            return None
        metadata = {
            **self.final_metadata,
            "step": int(state.step),
            "seed": self.seed,
            "summary": metrics_log.summarize(metrics_log.read_metrics(self.workdir)),
        }
        return self.lopt, state.theta, metadata

    def _result(self, state: TrainState) -> MetaParams:
        return state.theta
