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
PBT event (so that one lineage does not take over the population) was the steadiest
combination of these options measured, yet it matches Adam-driven meta-training on only some
seeds (a noisy quadratic added to the task mix brings it level in median over twenty seeds):
the README's self-training section has the comparisons, what else was tried, and the
``|theta|^2`` runaway behind the failures.

The whole population advances in one jitted call (``vmap`` over members). The random key of
outer step ``t`` is ``fold_in(key(seed), t)``, so a run resumed from a checkpoint (the whole
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

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TextIO

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_lopt import serialization
from optax_lopt.base import LearnedOptimizer, MetaParams
from optax_lopt.meta import _progress, checkpoint, metrics_log
from optax_lopt.meta.base import EstimatorState
from optax_lopt.meta.trainer import _apply_if_finite, _needs_restart, _to_python

RULES = ("self", "best")
"""Which learned optimizer updates member ``i``: itself, or the member with the best EMA."""

FINAL_DIRNAME = "final"
"""The best member's meta-parameters are written with ``optax_lopt.save`` here."""

_CHECKPOINT_FORMAT = 2
RUNNING_LOSS_CAP = 1e3
"""A meta-loss above this (or non-finite) counts as this in the running (EMA) meta-loss."""


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


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}.")


def _check_finite(name: str, value: Any, relation: str, bound: float) -> None:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= bound if relation == ">=" else value > bound)
    if not ok:
        raise ValueError(f"{name}: expected a finite number {relation} {bound:g}, got {value!r}.")


def _check_unit(name: str, value: Any, *, closed_low: bool, closed_high: bool) -> None:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value)
        ok = ok and (value >= 0 if closed_low else value > 0)
        ok = ok and (value <= 1 if closed_high else value < 1)
    if not ok:
        bounds = ("[" if closed_low else "(") + "0, 1" + ("]" if closed_high else ")")
        raise ValueError(f"{name}: expected a number in {bounds}, got {value!r}.")


def _check_random_init(lopt: LearnedOptimizer) -> None:
    skip_init = getattr(lopt, "skip_init", None)
    if skip_init is not None and skip_init != "random":
        raise ValueError(
            f"lopt: expected a randomly initialised learned optimizer (skip_init='random'), "
            f"got skip_init={skip_init!r}, whose initial theta is Adam in disguise; pass "
            "dataclasses.replace(lopt, skip_init='random') or an explicit theta."
        )


def _take(tree: Any, index: jax.Array) -> Any:
    """``tree[index]`` on the leading axis of every leaf."""
    return jax.tree.map(lambda x: jnp.take(x, index, axis=0), tree)


def _where(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per member: ``new`` where ``mask[i]``, else ``old`` (leaves ``[P, ...]``)."""

    def pick(a, b):
        m = mask.reshape(mask.shape + (1,) * (jnp.ndim(a) - 1))
        return jnp.where(m, a, b)

    return jax.tree.map(pick, new, old)


def pbt_parents(ema_loss: jax.Array, num_exploit: int) -> jax.Array:
    """The PBT copy map: ``parent[i]`` is the member ``i`` becomes (itself if it stays).

    The ``num_exploit`` members with the highest running meta-loss copy the ``num_exploit``
    with the lowest: the worst the best, the second worst the second best, and so on. Ties
    are broken by index (stable sort); a non-finite loss ranks last.

    Args:
      ema_loss: ``[P]`` running meta-losses (lower is better).
      num_exploit: how many members are replaced, ``0 <= num_exploit <= P // 2``.

    Returns:
      ``[P]`` int32 indices.

    References:
      Jaderberg et al., "Population Based Training of Neural Networks", arXiv 1711.09846.
    """
    size = ema_loss.shape[0]
    parent = jnp.arange(size, dtype=jnp.int32)
    if num_exploit == 0:
        return parent
    ranked = jnp.where(jnp.isfinite(ema_loss), ema_loss, jnp.inf)
    order = jnp.argsort(ranked, stable=True).astype(jnp.int32)
    best = order[:num_exploit]
    worst = order[::-1][:num_exploit]
    return parent.at[worst].set(best)


def perturb(theta: MetaParams, key: jax.Array, scale: float) -> MetaParams:
    """``theta`` plus Gaussian noise of std ``scale`` times each tensor's root-mean-square.

    Args:
      theta: one member's meta-parameters (no population axis).
      key: a ``jax.random`` key.
      scale: relative size of the noise; 0 returns ``theta`` unchanged.

    Returns:
      The perturbed meta-parameters (all-zero tensors stay zero).
    """
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = []
    for k, x in zip(keys, leaves, strict=False):
        rms = jnp.sqrt(jnp.mean(jnp.square(x)))
        out.append(x + scale * rms * jax.random.normal(k, jnp.shape(x), jnp.result_type(x)))
    return jax.tree.unflatten(treedef, out)


class SelfTrainer:
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
      workdir: directory for ``metrics.jsonl``, checkpoints and the final best member; when
        None nothing is written or resumed.
      seed: the only source of randomness.
      checkpoint_every: write a checkpoint every this many outer steps (and at the end).
      max_to_keep: how many checkpoints to keep.
      progress: draw a progress bar (None: only on a terminal).
      progress_stream: where the progress bar goes (``sys.stderr`` when None).
      on_step: optional ``on_step(step, record)`` called on the host after every outer step
        with the record written to ``metrics.jsonl``.
      async_checkpointing: write checkpoints in a background thread.

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
        if not (
            callable(getattr(estimator, "init", None))
            and callable(getattr(estimator, "meta_gradient", None))
        ):
            raise ValueError(
                "estimator: expected a GradientEstimator with init(theta, key) and "
                f"meta_gradient(theta, state, key), got {type(estimator).__name__}."
            )
        if not isinstance(lopt, LearnedOptimizer):
            raise ValueError(f"lopt: expected a LearnedOptimizer, got {type(lopt).__name__}.")
        _check_int("population_size", population_size, 2)
        if rule not in RULES:
            raise ValueError(f"rule: expected one of {list(RULES)}, got {rule!r}.")
        _check_int("exploit_every", exploit_every, 1)
        ok = isinstance(exploit_fraction, (int, float)) and not isinstance(exploit_fraction, bool)
        if not (ok and 0.0 <= float(exploit_fraction) <= 0.5):
            raise ValueError(
                f"exploit_fraction: expected a number in [0, 0.5], got {exploit_fraction!r}."
            )
        _check_finite("perturb_scale", perturb_scale, ">=", 0)
        _check_finite("initial_step_gain", initial_step_gain, ">", 0)
        _check_finite("step_gain_factor", step_gain_factor, ">=", 1)
        _check_unit("ema_decay", ema_decay, closed_low=True, closed_high=False)
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise ValueError(f"seed: expected an integer, got {seed!r}.")
        _check_int("checkpoint_every", checkpoint_every, 1)
        _check_int("max_to_keep", max_to_keep, 1)
        if theta is None:
            _check_random_init(lopt)
        else:
            sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(theta)}
            if sizes != {population_size}:
                raise ValueError(
                    f"theta: expected leaves with leading dimension population_size="
                    f"{population_size}, got leading dimensions {sorted(map(str, sizes))}."
                )

        self.estimator = estimator
        self.lopt = lopt
        self.population_size = int(population_size)
        self.rule = rule
        self.exploit_every = int(exploit_every)
        self.exploit_fraction = float(exploit_fraction)
        self.num_exploit = int(round(self.exploit_fraction * self.population_size))
        self.perturb_scale = float(perturb_scale)
        self.initial_step_gain = float(initial_step_gain)
        self.step_gain_factor = float(step_gain_factor)
        self.ema_decay = float(ema_decay)
        self.workdir = None if workdir is None else os.fspath(workdir)
        self.seed = int(seed)
        self.checkpoint_every = int(checkpoint_every)
        self.max_to_keep = int(max_to_keep)
        self.progress = progress
        self.progress_stream = progress_stream
        self.on_step = on_step
        self.async_checkpointing = async_checkpointing
        self.state: PopulationState | None = None

        root = jax.random.key(self.seed)
        self._theta_key = jax.random.fold_in(root, 0)
        self._estimator_key = jax.random.fold_in(root, 1)
        self._step_root = jax.random.fold_in(root, 2)
        self._reset_root = jax.random.fold_in(root, 3)
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
            theta = jax.vmap(self.lopt.init)(self._member_keys(self._theta_key))
        else:
            theta = jax.tree.map(jnp.asarray, self._initial_theta)
        estimator_state = jax.vmap(self.estimator.init)(
            theta, self._member_keys(self._estimator_key)
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
        ranked = jnp.where(jnp.isfinite(ema_loss), ema_loss, jnp.inf)
        return jnp.full((size,), jnp.argmin(ranked), jnp.int32)

    def _apply_learned(self, state: PopulationState, grads: MetaParams, loss: jax.Array, who):
        """Member i's update: ``step_gain[i]`` times ``lopt.transform(theta[who[i]])``'s."""
        optimizer_theta = _take(state.theta, who)

        def one(opt_theta, grad, opt_state, theta, value, gain):
            updates, new_opt_state = self.lopt.transform(opt_theta).update(
                grad, opt_state, theta, value=value
            )
            updates = jax.tree.map(lambda u: (gain * u).astype(u.dtype), updates)
            return optax.apply_updates(theta, updates), new_opt_state

        return jax.vmap(one)(
            optimizer_theta, grads, state.opt_state, state.theta, loss, state.step_gain
        )

    def _step_fn(self, state: PopulationState):
        key = jax.random.fold_in(self._step_root, state.step)
        k_grad, k_explore, k_gain = jax.random.split(key, 3)
        grads, estimator_state, metrics = jax.vmap(self.estimator.meta_gradient)(
            state.theta, state.estimator_state, self._member_keys(k_grad)
        )
        metrics = dict(metrics)
        if "meta_loss" not in metrics:
            raise ValueError(
                "estimator: expected meta_gradient to return metrics with a 'meta_loss' "
                f"entry, got keys {sorted(metrics)}."
            )
        loss = metrics["meta_loss"].astype(jnp.float32)
        capped = jnp.where(
            jnp.isfinite(loss), jnp.minimum(loss, RUNNING_LOSS_CAP), RUNNING_LOSS_CAP
        )
        ema = jnp.where(
            state.step == 0, capped, self.ema_decay * state.ema_loss + (1 - self.ema_decay) * capped
        )
        who = self.optimizer_indices(ema)
        new_theta, new_opt_state = self._apply_learned(state, grads, loss, who)

        theta, opt_state, ok = jax.vmap(_apply_if_finite)(
            grads, new_theta, new_opt_state, state.theta, state.opt_state
        )
        needs_reset = jax.vmap(_needs_restart)(grads, estimator_state)
        num_skipped = state.num_skipped + (~ok).astype(jnp.int32)

        # PBT: exploit (copy the best over the worst) and explore (perturb the copies).
        step = state.step + 1
        exploit = (step % self.exploit_every == 0) & (self.num_exploit > 0)
        parent = jnp.where(
            exploit, pbt_parents(ema, self.num_exploit), jnp.arange(self.population_size)
        ).astype(jnp.int32)
        copied = parent != jnp.arange(self.population_size)
        perturbed = jax.vmap(lambda t, k: perturb(t, k, self.perturb_scale))(
            _take(theta, parent), self._member_keys(k_explore)
        )
        theta = _where(copied, perturbed, theta)
        opt_state = _take(opt_state, parent)
        estimator_state = _take(estimator_state, parent)
        coin = jax.random.bernoulli(k_gain, 0.5, (self.population_size,))
        factor = jnp.where(coin, self.step_gain_factor, 1.0 / self.step_gain_factor)
        step_gain = jnp.take(state.step_gain, parent) * jnp.where(copied, factor, 1.0)
        ranking = ema
        ema = jnp.take(ema, parent)
        needs_reset = jnp.take(needs_reset, parent)

        new_state = PopulationState(
            step=step,
            theta=theta,
            opt_state=opt_state,
            estimator_state=estimator_state,
            ema_loss=ema,
            num_skipped=num_skipped,
            num_resets=state.num_resets,
            num_exploits=state.num_exploits + exploit.astype(jnp.int32),
            step_gain=step_gain.astype(jnp.float32),
        )
        out = {
            "meta_loss": loss,
            "ema_meta_loss": ranking,
            "grad_norm": jax.vmap(optax.tree.norm)(grads),
            "skipped": ~ok,
            "optimizer_of": who,
            "parent": parent,
            "exploit": exploit,
            "step_gain": state.step_gain,
            "best": jnp.argmin(jnp.where(jnp.isfinite(ranking), ranking, jnp.inf)).astype(
                jnp.int32
            ),
        }
        for name in ("inner_loss", "nonfinite_fraction"):
            if name in metrics:
                out[name] = metrics[name]
        return new_state, out, needs_reset

    def _reset_fn(self, state: PopulationState, needs_reset: jax.Array) -> PopulationState:
        key = jax.random.fold_in(self._reset_root, state.step)
        fresh = jax.vmap(self.estimator.init)(state.theta, self._member_keys(key))
        return state._replace(
            estimator_state=_where(needs_reset, fresh, state.estimator_state),
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
        ema = np.asarray(state.ema_loss)
        return int(np.argmin(np.where(np.isfinite(ema), ema, np.inf)))

    def best_theta(self, state: PopulationState | None = None) -> MetaParams:
        """The meta-parameters of the member with the lowest running meta-loss."""
        state = self.state if state is None else state
        return jax.tree.map(lambda x: x[self.best_index(state)], state.theta)

    def _metadata(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "format": _CHECKPOINT_FORMAT,
            "population_size": self.population_size,
            "rule": self.rule,
        }

    def restore(self) -> PopulationState | None:
        """The population of the newest checkpoint in ``workdir``, or None if there is none.

        Raises:
          ValueError: if the checkpoint was written with another seed, population size or
            rule.
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
        expected = self._metadata()
        for name in ("seed", "population_size", "rule"):
            if metadata.get(name) != expected[name]:
                raise ValueError(
                    f"{name}: the checkpoints in {self.workdir} were written with {name}="
                    f"{metadata.get(name)!r}, got {expected[name]!r}; use the same value or "
                    "a new workdir."
                )
        return state

    def _record(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        host = {k: _to_python(v) for k, v in jax.device_get(metrics).items()}
        record: dict[str, Any] = {"step": step}
        record["meta_loss"] = host.pop("meta_loss")
        best = host["best"]
        record["best"] = best
        record["best_ema_meta_loss"] = host["ema_meta_loss"][best]
        record.update(sorted(host.items()))
        record["exploit"] = bool(record["exploit"])
        record["skipped"] = [bool(s) for s in record["skipped"]]
        record["time"] = time.time()
        return record

    def train(self, num_outer_steps: int) -> MetaParams:
        """Runs outer steps until ``num_outer_steps`` are done, resuming if it can.

        Args:
          num_outer_steps: the total number of outer steps (counting those before a resume).

        Returns:
          The best member's ``theta`` (lowest running meta-loss); the whole population is in
          ``self.state``.

        Raises:
          ValueError: if ``num_outer_steps`` is not a non-negative integer.
        """
        _check_int("num_outer_steps", num_outer_steps, 0)
        state = self.restore()
        if state is None:
            state = self.init_state()
        start = int(state.step)
        writer = None
        ckpt = None
        if self.workdir is not None:
            ckpt = checkpoint.Checkpointer(
                self.workdir, self.max_to_keep, async_save=self.async_checkpointing
            )
            metrics_log.truncate_metrics(self.workdir, start)
            writer = metrics_log.MetricsWriter(self.workdir)
        bar = _progress.ProgressBar(
            num_outer_steps, enabled=self.progress, stream=self.progress_stream
        )
        metadata = self._metadata()
        try:
            for step in range(start, num_outer_steps):
                state, metrics = self.step(state)
                done = step + 1
                record = self._record(done, metrics)
                if writer is not None:
                    writer.write(record)
                if self.on_step is not None:
                    self.on_step(done, record)
                bar.update(done, record["best_ema_meta_loss"])
                if ckpt is not None and done % self.checkpoint_every == 0:
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
        best = self.best_theta(state)
        if self.workdir is not None:
            serialization.save(
                os.path.join(self.workdir, FINAL_DIRNAME),
                self.lopt,
                jax.device_get(best),
                metadata={
                    "step": int(state.step),
                    "seed": self.seed,
                    "member": self.best_index(state),
                    "self_training": True,
                },
            )
        return best


def plot_population(
    records: Sequence[dict[str, Any]],
    path: str,
    title: str = "",
    key: str = "ema_meta_loss",
    references: Mapping[str, Sequence[float]] | None = None,
    feedback: Mapping[int, float] | None = None,
    feedback_references: Mapping[str, float] | None = None,
) -> None:
    """Writes a PNG of the population's meta-loss, its step gains and the feedback probe.

    Left: every member's meta-loss over outer steps (thin), the best (bold), PBT events (grey
    lines) and optional reference curves (dashed, e.g. the same architecture meta-trained by
    Adam on the same budget). Right, if the records hold ``"step_gain"``: the best member's
    gain on its own meta-update and the population's range; a gain that rises as the
    meta-loss falls is the feedback loop of arXiv 2101.07367 made visible: the better the
    optimizers get, the larger the steps they can take on themselves. Last, if ``feedback``
    is given: how well the best member saved at each outer step meta-trains fresh random
    learned optimizers (`optax_lopt.meta.probe_meta_optimizers`; lower is better), the loop's
    other half: the population becomes a better meta-optimizer as it trains itself.

    Args:
      records: the metrics records (``read_metrics(workdir)`` or ``on_step`` records).
      path: output PNG path.
      title: figure title.
      key: which per-member series to draw (``"ema_meta_loss"`` or ``"meta_loss"``).
      references: optional ``{label: values}``, one value per outer step (step ``1..n``).
      feedback: optional ``{outer step: probe meta-loss}`` of the snapshots.
      feedback_references: optional ``{label: probe meta-loss}`` drawn as horizontal lines
        in the feedback panel (e.g. Adam as the meta-optimizer).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        raise ValueError("records: expected at least one metrics record, got none.")
    steps = np.asarray([r["step"] for r in records])
    values = np.asarray([[np.nan if v is None else v for v in r[key]] for r in records], np.float64)
    best = np.nanmin(values, axis=1)
    has_gain = all("step_gain" in r for r in records)
    num_panels = 1 + int(has_gain) + int(bool(feedback))
    fig, axes = plt.subplots(1, num_panels, figsize=(5 * num_panels, 3.8), dpi=100, squeeze=False)
    axes = list(axes[0])
    ax = axes[0]
    for i in range(values.shape[1]):
        ax.plot(steps, values[:, i], lw=0.6, alpha=0.5, color="tab:blue")
    ax.plot(steps, best, lw=2.0, color="black", label="best member")
    exploits = [r["step"] for r in records if r.get("exploit")]
    for s in exploits:
        ax.axvline(s, color="0.85", lw=0.5, zorder=0)
    for (label, curve), color in zip(
        (references or {}).items(), ("tab:red", "tab:orange", "tab:green"), strict=False
    ):
        curve = np.asarray(curve, np.float64)
        ax.plot(np.arange(1, len(curve) + 1), curve, ls="--", lw=1.5, color=color, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("outer step")
    ax.set_ylabel(f"meta-loss ({key.replace('_', ' ')})")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    if has_gain:
        gains = np.asarray([r["step_gain"] for r in records], np.float64)
        best_index = np.asarray([r["best"] for r in records])
        gx = axes[1]
        gx.fill_between(
            steps,
            gains.min(axis=1),
            gains.max(axis=1),
            color="tab:blue",
            alpha=0.2,
            label="population range",
        )
        gx.plot(
            steps,
            gains[np.arange(len(steps)), best_index],
            color="black",
            lw=2.0,
            label="best member",
        )
        gx.set_yscale("log")
        gx.set_xlabel("outer step")
        gx.set_ylabel("step gain on own meta-update")
        gx.set_title("Gain selected by PBT", fontsize=10)
        gx.legend(fontsize=8)
    if feedback:
        fx = axes[-1]
        at = sorted(feedback)
        fx.plot(at, [feedback[t] for t in at], "o-", color="black", label="best member at step")
        for (label, value), color in zip(
            (feedback_references or {}).items(), ("tab:red", "tab:orange"), strict=False
        ):
            fx.axhline(value, ls="--", lw=1.2, color=color, label=label)
        fx.set_yscale("log")
        fx.set_xlabel("outer step of the snapshot")
        fx.set_ylabel("meta-loss of fresh trainees")
        fx.set_title("Snapshots as meta-optimizers", fontsize=10)
        fx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
