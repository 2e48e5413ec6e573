"""Self-training: a population of randomly initialised learned optimizers trains itself.

A population of ``population_size`` meta-parameter vectors ``theta_1..theta_P`` is drawn
from independent keys. Every outer step, each member asks a `GradientEstimator` (its own
persistent inner runs, its own task draws) for a meta-gradient ``g_i``, and that gradient is
applied to ``theta_i`` by a *learned* optimizer from the population:

    updates_i, s_i = lopt.transform(theta_j).update(g_i, s_i, theta_i, value=L_i)
    theta_i <- theta_i + updates_i,

where ``j`` is chosen by ``rule``: ``"self"`` (``j = i``, every member optimizes itself) or
``"best"`` (``j`` = the member with the lowest running meta-loss, so the current best
optimizer trains everyone). ``s_i`` is the learned optimizer's state for ``theta_i`` (its
momenta and second moments); it is shaped by ``theta_i``, so it persists whichever member
updates it. Nothing hand-designed acts on ``theta``: no optax optimizer, no clipping by a
hand-picked norm. The only guard is the meta-trainer's non-finite skip (a step whose
gradient or resulting ``theta_i`` is not finite is not applied), which is not an optimizer.

Population-based training (PBT) runs every ``exploit_every`` outer steps: members are
ranked by an exponential moving average (decay ``ema_decay``) of their meta-loss; the worst
``num_exploit = round(exploit_fraction * P)`` members copy ``theta``, the optimizer state,
the estimator state and the running meta-loss of the best ``num_exploit`` (the worst copies
the best, the second worst the second best, ...) and then *explore*: each tensor of the
copied ``theta`` gets Gaussian noise with standard deviation ``perturb_scale`` times the
tensor's root-mean-square.

As in PBT's hyperparameter search, each member also carries a *step gain* ``c_i`` that
multiplies the learned update on its own ``theta`` (``theta_i <- theta_i + c_i * updates_i``).
It starts at ``initial_step_gain``, is copied with ``theta`` at an exploit, and is multiplied
by ``step_gain_factor`` or its inverse (a fair coin) at the explore. It is not an optimizer:
the update's direction and per-coordinate size still come from the learned optimizer alone;
the gain lets selection find how far the population can move its own meta-parameters per
step (with ``step_gain_factor=1`` it stays at its initial value).

Random optimizers start poor (some ascend), selection keeps the members whose updates descend,
and as the optimizers improve, the meta-updates they apply improve too: the positive feedback
loop of the paper. The same coupling is the main risk: an optimizer that learns larger inner
steps also takes larger steps on its own meta-parameters, and with ``rule="best"`` one
unstable best member moves everyone at once. ``rule="self"``, an ``MLPLOpt`` whose
``feature_clip`` bounds the step a meta-gradient spike can cause, and one member replaced per
PBT event (so that one lineage does not take over the population) guard against it; the
docs' self-training results page has the measured comparisons.

The whole population advances in one jitted call: the outer loop's `meta_step`, vmapped
over members (the ``"best"`` rule gathers the members' running losses and ``theta`` across
that vmap axis). The random key of outer step ``t`` is ``fold_in(seed_keys(seed).step, t)``
(`optax_lopt.meta.outer_loop.seed_keys`), so a run resumed from a checkpoint (the whole
population, written with orbax) ends exactly where an uninterrupted run ends. With a
``workdir``, ``<workdir>/metrics.jsonl`` gets one record per outer step with every member's
meta-loss, running meta-loss, gradient norm, skip flag, which member optimized it
(``optimizer_of``), its step gain, the best member, and the PBT event (``parent``: whom each
member copied, itself when it did not); ``<workdir>/final`` receives the best member with
``optax_lopt.save``.

References:
  Metz, Freeman, Maheswaranathan, Sohl-Dickstein, "Training Learned Optimizers with
  Randomly Initialized Learned Optimizers", arXiv 2101.07367.
  Jaderberg et al., "Population Based Training of Neural Networks", arXiv 1711.09846.
  Vicol, Metz, Sohl-Dickstein, "Unbiased Gradient Estimation in Unrolled Computation Graphs
  with Persistent Evolution Strategies", arXiv 2112.13835.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple, TextIO

import jax
import jax.numpy as jnp

from optax_lopt import _checks
from optax_lopt.base import LearnedOptimizer, MetaParams
from optax_lopt.meta import checkpoint, outer_loop, pbt
from optax_lopt.meta.base import EstimatorState
from optax_lopt.meta.pbt import pbt_parents, perturb

RULES = ("self", "best")
"""Which learned optimizer updates member ``i``: itself, or the member with the best EMA."""

_CHECKPOINT_FORMAT = 2
_MEMBERS = "members"  # the vmap axis of the population, for the "best" rule's gather


class PopulationState(NamedTuple):
    """Everything self-training carries from one outer step to the next.

    Every field but ``step`` and ``num_exploits`` has a leading population axis ``[P]``.

    Attributes:
      step: number of outer steps done (int32 scalar).
      theta: the members' meta-parameters, leaves ``[P, ...]``.
      opt_state: each member's learned-optimizer state for its own ``theta`` (the state of
        ``lopt.transform(.)`` initialised on ``theta_i``), leaves ``[P, ...]``.
      estimator_state: each member's persistent inner runs, leaves ``[P, ...]``.
      ema_loss: ``[P]`` running (EMA) meta-loss, the ranking used by PBT and ``"best"``.
      num_skipped: ``[P]`` outer steps whose update was not applied (non-finite).
      num_resets: ``[P]`` restarts of a member's inner runs after they went non-finite.
      num_exploits: number of PBT exploit/explore events so far (int32 scalar).
      step_gain: ``[P]`` each member's gain on the learned update of its own ``theta``.
    """

    step: jax.Array
    theta: MetaParams
    opt_state: Any
    estimator_state: EstimatorState
    ema_loss: jax.Array
    num_skipped: jax.Array
    num_resets: jax.Array
    num_exploits: jax.Array
    step_gain: jax.Array


def _check_random_init(lopt: LearnedOptimizer) -> None:
    skip_init = getattr(lopt, "skip_init", None)
    if skip_init is not None and skip_init != "random":
        raise ValueError(
            f"lopt: expected a randomly initialised learned optimizer (skip_init='random'), "
            f"got skip_init={skip_init!r}, whose initial theta is Adam in disguise; pass "
            "dataclasses.replace(lopt, skip_init='random') or an explicit theta."
        )


def _check_population(theta: MetaParams, population_size: int) -> None:
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(theta)}
    if sizes != {population_size}:
        raise ValueError(
            f"theta: expected leaves with leading dimension population_size="
            f"{population_size}, got leading dimensions {sorted(map(str, sizes))}."
        )


def _check_start(lopt: LearnedOptimizer, theta: MetaParams | None, population_size: int) -> None:
    """A given ``theta`` must be a stacked population; otherwise ``lopt`` must start random."""
    if theta is None:
        _check_random_init(lopt)
    else:
        _check_population(theta, population_size)


class SelfTrainer(outer_loop.Trainer):
    """Trains a population of learned optimizers with learned optimizers from itself.

    Args:
      estimator: a `GradientEstimator` for ``lopt`` (e.g. ``PES`` or a ``Mixture`` of them);
        each member runs its own copy of its persistent state.
      lopt: the learned optimizer architecture. Its random initialisation must not encode a
        hand-designed optimizer: an architecture with a ``skip_init`` field (``MLPLOpt``)
        must have ``skip_init="random"``, unless ``theta`` is given.
      population_size: number of members ``P`` (>= 2).
      rule: ``"self"`` (default) or ``"best"``: which member's optimizer applies member
        ``i``'s meta-gradient (see the module docstring).
      exploit_every: outer steps between PBT events (the event happens after steps
        ``exploit_every``, ``2 * exploit_every``, ...).
      exploit_fraction: fraction of the population replaced at each PBT event, in
        ``[0, 0.5]``; ``round(exploit_fraction * P)`` members.
      perturb_scale: relative std of the explore noise (>= 0).
      initial_step_gain: every member's initial gain on its learned meta-update (> 0).
      step_gain_factor: at each explore, a copied member's gain is multiplied by this or its
        inverse (>= 1; the default 1 keeps every gain at ``initial_step_gain``, the paper's
        method). ``examples/self_train.py`` and ``benchmarks/self_training.py`` use 1.25.
      ema_decay: decay of the running meta-loss, in ``[0, 1)``.
      theta: optional initial meta-parameters with a leading ``[P]`` axis (a stacked
        population); by default ``lopt.init`` on ``P`` independent keys from ``seed``.
      workdir: directory for ``metrics.jsonl``, checkpoints and the final best member; None:
        nothing is written or resumed. This and the other host arguments
        (``checkpoint_every``, ``max_to_keep``, ``progress``, ``progress_stream``,
        ``on_step``, ``async_checkpointing``) are the fields of
        `optax_lopt.meta.outer_loop.LoopOptions`, documented there; none changes the weights.
      seed: the only source of randomness.
      checkpoint_every: see ``workdir``.
      max_to_keep: see ``workdir``.
      progress: see ``workdir``.
      progress_stream: see ``workdir``.
      on_step: see ``workdir``.
      async_checkpointing: see ``workdir``.

    Raises:
      ValueError: for an argument of the wrong kind or out of range; the message names it.

    References:
      Metz et al., "Training Learned Optimizers with Randomly Initialized Learned
      Optimizers", arXiv 2101.07367.
      Jaderberg et al., "Population Based Training of Neural Networks", arXiv 1711.09846.
    """

    def __init__(
        self,
        estimator: Any,
        lopt: LearnedOptimizer,
        *,
        population_size: int = 8,
        rule: str = "self",
        exploit_every: int = 5,
        exploit_fraction: float = 0.25,
        perturb_scale: float = 0.05,
        initial_step_gain: float = 1.0,
        step_gain_factor: float = 1.0,
        ema_decay: float = 0.9,
        theta: MetaParams | None = None,
        workdir: str | os.PathLike | None = None,
        seed: int = 0,
        checkpoint_every: int = 100,
        max_to_keep: int = 3,
        progress: bool | None = None,
        progress_stream: TextIO | None = None,
        on_step: Callable[[int, dict[str, Any]], None] | None = None,
        async_checkpointing: bool = True,
    ) -> None:
        outer_loop.check_estimator(estimator)
        _checks.learned_optimizer("lopt", lopt)
        self.population_size = _checks.integer("population_size", population_size, minimum=2)
        self.rule = _checks.one_of("rule", rule, RULES)
        self.exploit_every = _checks.positive_int("exploit_every", exploit_every)
        self.exploit_fraction = _checks.between("exploit_fraction", exploit_fraction, 0.0, 0.5)
        self.perturb_scale = _checks.non_negative("perturb_scale", perturb_scale)
        self.initial_step_gain = _checks.positive("initial_step_gain", initial_step_gain)
        self.step_gain_factor = _checks.at_least("step_gain_factor", step_gain_factor, 1.0)
        self.ema_decay = _checks.in_unit_interval("ema_decay", ema_decay, closed_low=True)
        self.seed = _checks.integer("seed", seed)
        self.options = outer_loop.LoopOptions(
            workdir=workdir,
            checkpoint_every=checkpoint_every,
            max_to_keep=max_to_keep,
            async_checkpointing=async_checkpointing,
            progress=progress,
            progress_stream=progress_stream,
            on_step=on_step,
            progress_key="best_ema_meta_loss",
        )
        _check_start(lopt, theta, self.population_size)

        self.estimator = estimator
        self.lopt = lopt
        self.num_exploit = int(round(self.exploit_fraction * self.population_size))
        self.state: PopulationState | None = None
        self._keys = outer_loop.seed_keys(self.seed)
        self._initial_theta = theta

        self._init = jax.jit(self._init_fn)
        self._step = jax.jit(self._step_fn)
        self._reset = jax.jit(self._reset_fn)
        self._abstract_state = checkpoint.abstract_like(jax.eval_shape(self._init_fn))

    # ----------------------------------------------------------------- pure functions

    def _member_keys(self, key: jax.Array) -> jax.Array:
        return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(self.population_size))

    def _opt_init(self, theta: MetaParams) -> Any:
        # The state depends on theta_i's structure only: initialise it with theta_i's own
        # optimizer (any member's transform gives the same state).
        return jax.vmap(lambda t: self.lopt.transform(t).init(t))(theta)

    def _init_fn(self) -> PopulationState:
        size = self.population_size
        if self._initial_theta is None:
            theta = jax.vmap(self.lopt.init)(self._member_keys(self._keys.theta))
        else:
            theta = jax.tree.map(jnp.asarray, self._initial_theta)
        estimator_state = jax.vmap(self.estimator.init)(
            theta, self._member_keys(self._keys.estimator)
        )
        return PopulationState(
            step=jnp.zeros((), jnp.int32),
            theta=theta,
            opt_state=self._opt_init(theta),
            estimator_state=estimator_state,
            ema_loss=jnp.zeros((size,), jnp.float32),
            num_skipped=jnp.zeros((size,), jnp.int32),
            num_resets=jnp.zeros((size,), jnp.int32),
            num_exploits=jnp.zeros((), jnp.int32),
            step_gain=jnp.full((size,), self.initial_step_gain, jnp.float32),
        )

    def optimizer_indices(self, ema_loss: jax.Array) -> jax.Array:
        """``[P]`` index ``j`` of the member whose learned optimizer updates each member.

        Args:
          ema_loss: ``[P]`` running meta-losses.

        Returns:
          ``arange(P)`` for ``rule="self"``; ``argmin(ema_loss)`` repeated for ``"best"``.
        """
        size = self.population_size
        if self.rule == "self":
            return jnp.arange(size, dtype=jnp.int32)
        return jnp.full((size,), pbt.finite_argmin(ema_loss), jnp.int32)

    def _member_step(self, step, theta, opt_state, estimator_state, key, ema_loss, gain):
        """`outer_loop.meta_step` of one member (vmapped over the population, axis _MEMBERS).

        Its update is ``gain`` times the learned update of ``lopt.transform(theta_j)``, with
        ``j`` chosen by ``rule`` from the running meta-losses that include this step's.
        """

        def update(grad, opt_state, theta, meta_loss):
            loss = meta_loss.astype(jnp.float32)
            ema = pbt.running_loss(ema_loss, loss, step, self.ema_decay)
            ranking = jax.lax.all_gather(ema, _MEMBERS)
            who = self.optimizer_indices(ranking)[jax.lax.axis_index(_MEMBERS)]
            optimizer_theta = jax.tree.map(lambda x: jax.lax.all_gather(x, _MEMBERS)[who], theta)
            updates, new_opt_state = self.lopt.transform(optimizer_theta).update(
                grad, opt_state, theta, value=loss
            )
            updates = jax.tree.map(lambda u: (gain * u).astype(u.dtype), updates)
            return updates, new_opt_state, (ema, who)

        return outer_loop.meta_step(self.estimator, update, theta, opt_state, estimator_state, key)

    def _exploit_explore(self, state: PopulationState, out: outer_loop.MetaStep, ema, keys):
        """PBT after the step: copy the best over the worst, perturb the copies' theta."""
        k_explore, k_gain = keys
        step = state.step + 1
        arange = jnp.arange(self.population_size)
        exploit = (step % self.exploit_every == 0) & (self.num_exploit > 0)
        parent = jnp.where(exploit, pbt_parents(ema, self.num_exploit), arange).astype(jnp.int32)
        copied = parent != arange
        perturbed = jax.vmap(lambda t, k: perturb(t, k, self.perturb_scale))(
            pbt.take(out.theta, parent), self._member_keys(k_explore)
        )
        coin = jax.random.bernoulli(k_gain, 0.5, (self.population_size,))
        factor = jnp.where(coin, self.step_gain_factor, 1.0 / self.step_gain_factor)
        step_gain = jnp.take(state.step_gain, parent) * jnp.where(copied, factor, 1.0)
        new_state = PopulationState(
            step=step,
            theta=pbt.where(copied, perturbed, out.theta),
            opt_state=pbt.take(out.opt_state, parent),
            estimator_state=pbt.take(out.estimator_state, parent),
            ema_loss=jnp.take(ema, parent),
            num_skipped=state.num_skipped + out.metrics["skipped"].astype(jnp.int32),
            num_resets=state.num_resets,
            num_exploits=state.num_exploits + exploit.astype(jnp.int32),
            step_gain=step_gain.astype(jnp.float32),
        )
        return new_state, parent, exploit

    def _step_fn(self, state: PopulationState):
        key = jax.random.fold_in(self._keys.step, state.step)
        k_grad, k_explore, k_gain = jax.random.split(key, 3)
        out = jax.vmap(self._member_step, in_axes=(None, 0, 0, 0, 0, 0, 0), axis_name=_MEMBERS)(
            state.step,
            state.theta,
            state.opt_state,
            state.estimator_state,
            self._member_keys(k_grad),
            state.ema_loss,
            state.step_gain,
        )
        ema, who = out.aux
        new_state, parent, exploit = self._exploit_explore(state, out, ema, (k_explore, k_gain))
        metrics = {
            "meta_loss": out.metrics["meta_loss"].astype(jnp.float32),
            "ema_meta_loss": ema,
            "grad_norm": out.metrics["grad_norm"],
            "skipped": out.metrics["skipped"],
            "optimizer_of": who,
            "parent": parent,
            "exploit": exploit,
            "step_gain": state.step_gain,
            "best": pbt.finite_argmin(ema).astype(jnp.int32),
        }
        for name in ("inner_loss", "nonfinite_fraction"):
            if name in out.metrics:
                metrics[name] = out.metrics[name]
        return new_state, metrics, jnp.take(out.restart, parent)

    def _reset_fn(self, state: PopulationState, needs_reset: jax.Array) -> PopulationState:
        key = jax.random.fold_in(self._keys.reset, state.step)
        fresh = jax.vmap(self.estimator.init)(state.theta, self._member_keys(key))
        return state._replace(
            estimator_state=pbt.where(needs_reset, fresh, state.estimator_state),
            num_resets=state.num_resets + needs_reset.astype(jnp.int32),
        )

    # ----------------------------------------------------------------- public API

    def init_state(self) -> PopulationState:
        """A fresh population at step 0."""
        return self._init()

    def step(self, state: PopulationState) -> tuple[PopulationState, dict[str, jax.Array]]:
        """One outer step of the whole population (one jitted call), then restarts if needed.

        A member whose meta-gradient was non-finite and whose inner runs hold NaN or infinity
        gets fresh inner runs from ``estimator.init`` (a second jitted function, compiled only
        when first needed), keyed by the seed and the step.

        Args:
          state: the current population.

        Returns:
          ``(new_state, metrics)``: per member (``[P]``) ``"meta_loss"``, ``"ema_meta_loss"``
          (the running meta-loss that ranked the members this step, before any PBT copy),
          ``"grad_norm"``, ``"skipped"``, ``"optimizer_of"``, ``"parent"`` (and the
          estimator's ``"inner_loss"`` when reported); scalars ``"best"`` and ``"exploit"``.
        """
        state, metrics, needs_reset = self._step(state)
        if bool(jnp.any(needs_reset)):
            state = self._reset(state, needs_reset)
        return state, metrics

    def best_index(self, state: PopulationState | None = None) -> int:
        """Index of the member with the lowest running meta-loss."""
        state = self.state if state is None else state
        return int(pbt.finite_argmin(jax.device_get(state.ema_loss)))

    def best_theta(self, state: PopulationState | None = None) -> MetaParams:
        """The meta-parameters of the member with the lowest running meta-loss."""
        state = self.state if state is None else state
        return jax.tree.map(lambda x: x[self.best_index(state)], state.theta)

    def recorded_settings(self) -> dict[str, Any]:
        """What every checkpoint records and a resume compares."""
        return {
            "seed": self.seed,
            "format": _CHECKPOINT_FORMAT,
            "population_size": self.population_size,
            "rule": self.rule,
        }

    def record(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """The ``metrics.jsonl`` line of outer step ``step`` from its host metrics."""
        host = {k: outer_loop.to_python(v) for k, v in metrics.items()}
        record: dict[str, Any] = {"step": step}
        record["meta_loss"] = host.pop("meta_loss")
        best = host["best"]
        record["best"] = best
        record["best_ema_meta_loss"] = host["ema_meta_loss"][best]
        record.update(sorted(host.items()))
        record["exploit"] = bool(record["exploit"])
        record["skipped"] = [bool(s) for s in record["skipped"]]
        return record

    def final_weights(self, state: PopulationState) -> tuple[LearnedOptimizer, Any, dict]:
        """The best member for ``<workdir>/final``, with its index in the metadata."""
        metadata = {
            "step": int(state.step),
            "seed": self.seed,
            "member": self.best_index(state),
            "self_training": True,
        }
        return self.lopt, self.best_theta(state), metadata

    def _result(self, state: PopulationState) -> MetaParams:
        return self.best_theta(state)
