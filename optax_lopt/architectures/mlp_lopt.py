"""`MLPLOpt`: a per-parameter MLP learned optimizer with a direction/magnitude output.

Every coordinate of every parameter is fed to the same small MLP. Its inputs are the
parameter, the gradient, momenta at several decays and Adam-style second-moment features,
all made scale-free per tensor; a step embedding enters through the first layer's bias.
The MLP outputs a direction ``d`` and a magnitude ``e`` and the update is
``-step_mult * d * exp(exp_mult * e)`` with small ``step_mult`` and ``exp_mult``, the
parameterisation the reference paper found to keep meta-training stable.

References:
  Metz, Maheswaranathan, Nixon, Freeman, Sohl-Dickstein, "Understanding and correcting
  pathologies in the training of learned optimizers", arXiv 1810.10180.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from interpret import step_scale
from optax_lopt import _checks, _numerics
from optax_lopt.architectures import _features as F
from optax_lopt.architectures import _loss_bound, _step_adaptation
from optax_lopt.base import LearnedOptimizer, MetaParams

_SKIP_INITS = ("adam", "random")


class MLPLOptState(NamedTuple):
    """State of `MLPLOpt`.

    Attributes:
      count: number of updates taken (int32 scalar).
      momenta: one params-shaped tree per momentum decay.
      second_moment: a params-shaped tree, EMA of ``g**2``.
      step_adaptation: the adapted step scales, per tensor or per entry (a
        ``_step_adaptation.StepAdaptationState``) when ``step_adaptation`` is set, else ``()``.
    """

    count: jax.Array
    momenta: tuple[Any, ...]
    second_moment: Any
    step_adaptation: Any


@dataclasses.dataclass(frozen=True)
class MLPLOpt(LearnedOptimizer):
    """Per-parameter MLP on gradient, parameter, momenta and second moments (arXiv 1810.10180).

    Features per coordinate, all scale-free (``s`` is the tensor's root-mean-square gradient,
    ``sqrt(mean(v))``): ``p / rms(p)``, ``g / s``, bias-corrected momenta ``m_k / s`` at
    ``momentum_decays``, ``r * s`` with ``r = 1/sqrt(v + eps)`` and ``v`` the bias-corrected
    EMA of ``g**2`` at ``second_moment_decay``, ``g * r`` and ``m_k * r``. A ``tanh(t / T)``
    step embedding is added to the first layer's pre-activations. A ReLU MLP with
    ``hidden_sizes`` plus a linear skip readout gives direction ``d`` and magnitude ``e``;
    the update is ``-step_mult * d * exp(exp_mult * e)``.

    The skip readout is initialised to the feature ``m * r`` for the momentum decay nearest
    0.9 (Adam's direction ``m_hat / sqrt(v_hat)``), and the MLP's output layer to
    ``output_scale`` times a LeCun-normal draw, so an untrained optimizer behaves like Adam
    with learning rate ``step_mult``, slightly perturbed. With ``skip_init="random"`` the skip
    readout is a LeCun-normal draw instead, so nothing hand-designed is built in: the
    starting point of self-training (arXiv 2101.07367). The paper normalises every feature
    by its root-mean-square over the tensor; here only ``p`` is, the others are scale-free by
    construction, which saves one pass over memory per feature. The loss (``value=``) is not
    an input of the network; only ``loss_bound`` reads it.

    Args:
      hidden_sizes: widths of the hidden ReLU layers (the paper used two layers of 32; one
        layer of 32 is the default here, see the step-overhead benchmark).
      momentum_decays: EMA decays of the momentum features.
      second_moment_decay: EMA decay of the second moment.
      step_mult: scale of the update.
      exp_mult: scale of the magnitude in the exponent.
      output_scale: initial scale of the MLP's output layer relative to LeCun-normal.
      skip_init: ``"adam"`` (default) starts the skip readout at Adam's direction;
        ``"random"`` draws it LeCun-normal, a genuinely random optimizer.
      timescales: timescales (in steps) of the ``tanh(t / T)`` step embedding. Once ``t``
        is several times the largest one the embedding is constant, so an optimizer
        meta-trained on horizons past that point behaves the same however long it runs.
      antisymmetric: make the update an odd function of the gradient: it is
        ``(u(f) - u(f')) / 2`` where ``u`` is the update above and ``f'`` the features with
        the sign of every gradient and momentum feature flipped (``p / rms(p)`` and
        ``r * s`` kept). Then a zero-mean gradient gives a zero-mean step: the optimizer
        has no drift of its own that would carry it away from a minimum when it runs far
        longer than it was trained for. Adam's direction is odd already, so the untrained
        optimizer is unchanged; the network is evaluated twice.
      feature_clip: if set (a positive number), clip every gradient, momentum and
        second-moment feature to ``+/- feature_clip``, so that one outlier gradient (a spike
        many times the tensor's running RMS) moves the optimizer no further than a gradient
        at the clip does. Without it ``g / s`` at a one-coordinate spike is bounded only by
        ``sqrt(size / (1 - second_moment_decay))``, hundreds in a large tensor. Noisy
        meta-gradients (ES/PES through diverging inner runs) produce such spikes, and when
        the optimizer updates its own meta-parameters (``optax_lopt.meta.SelfTrainer``) a
        spike-sized step can destabilise the whole population; the self-training benchmark
        uses 5. ``None`` (default) only guards against non-finite values.
      spike_clip: the outlier guard, on by default: before anything reads it, each gradient
        entry is clipped to ``spike_clip`` times its running RMS ``sqrt(v_i)`` (floored by the
        tensor's ``sqrt(mean(v))``; ``v`` the bias-corrected second moment so far; see
        ``_features.spike_clip``). Without it one entry of 1e6 or more sets the tensor's
        ``s`` for thousands of steps, the ``r * s`` feature of every other coordinate becomes
        huge and so does every later step. With it a spike raises ``v`` by a bounded factor
        (about ``1 + spike_clip**2 / t`` at step ``t``, ``1 + spike_clip**2 * (1 - beta2)``
        late in training), so the features and the steps come back within a few tens of
        steps. Gradients within ``spike_clip`` running RMSs pass exactly, so ordinary
        training, and a meta-trained ``theta``, see no change; the first step, which has no
        history, is never clipped. A spike across a whole tensor, which this can only clip
        to ``spike_clip`` times its running norm, is then scaled to its running RMS norm
        (``_features.surge_clip``, past step 10), so the momenta do not carry it for tens
        of steps. ``None`` turns both off.
      anneal_after: if set (a positive integer of steps), past step ``anneal_after`` every
        update is multiplied by ``(anneal_after / t) ** anneal_power`` (see
        ``_features.anneal_factor``). Set it to the longest horizon the optimizer was
        meta-trained on: the network has learned nothing about later steps, and without a
        decay it keeps a constant step under a constant gradient, so a long run circles a
        minimum at the distance of that step instead of converging. Up to ``anneal_after``
        the updates are unchanged, so meta-training on shorter horizons does not see it.
        ``None`` (default) never anneals.
      anneal_power: the decay's exponent, in ``(0, 1]``; 1 is the ``1 / t`` decay.
      step_adaptation: if set (a positive number), every tensor's update is multiplied by a
        step scale ``exp(s)`` that the optimizer adapts as it runs: ``s`` moves by
        ``-rate * cos(g_t, u_{t-1})`` per step (hypergradient descent on the log step size,
        see ``_step_adaptation``), decays toward 0 by ``adaptation_decay`` and stays within
        ``+/- adaptation_limit``. ``rate`` is ``step_adaptation * exp(theta["adaptation"])``,
        so meta-training learns it. The network's features are scale-free, so without this
        it takes steps of about one size on every problem; with it a problem whose steps
        keep agreeing (a well-conditioned convex one) gets longer steps and one whose steps
        oscillate gets shorter ones. ``None`` (default): no adaptation, no extra state.
      adaptation_decay: the pull of ``s`` toward 0 per step, in ``[0, 1)``.
      adaptation_shortening_decay: if set (in ``[0, 1)``), the pull toward 0 of an ``s``
        below 0, a step shorter than the network's own: that step is what meta-training
        chose, so a shorter one is kept only while the evidence for it keeps coming. The
        evidence is biased toward shrinking under minibatch noise (``_step_adaptation``).
        ``None`` (default): ``adaptation_decay`` on both sides.
      adaptation_limit: the bound on ``|s|``: scales stay within ``exp(+/- limit)``.
      adaptation_granularity: ``"tensor"`` (default: one scale per parameter leaf, driven by
        the cosine of ``g_t`` and ``u_{t-1}``) or ``"coordinate"`` (one per entry, driven by
        the sign of ``g_t * u_{t-1}``; one more params-shaped array of state).
      adaptation_rule: ``"agreement"`` (default: the cosine or sign rule above) or
        ``"secant"`` (per tensor only): ``s`` moves by ``rate * log m``, ``m`` the multiple of
        the last step at which a quadratic through the slopes at its two ends is minimal
        (clipped, growing at most ``e``-fold and shrinking up to ``e**3``-fold per step;
        in the first 10 updates growing up to ``e**3``-fold too, since a run starts with no
        estimate of its scale; at the second update, the first evidence, by the whole
        ``log m``: a line search along the first step), so a step ten times too short is
        lengthened in a step or two rather than a few tens.
      adaptation_steepening: if set (positive, with ``adaptation_rule="secant"``), a descent
        step whose slope got steeper along it (``b < a``, no line minimum ahead) moves ``s``
        up by ``rate * adaptation_steepening`` (at most the growth bound) instead of being no
        evidence. Under minibatch noise the slope difference reads as a curvature of either
        sign: without this only the positive half counts and it only ever shortens, so the
        scale drifts below what the problem wants
        (``interpret.secant_step.secant_log_multiplier``). A constant gradient (``b == a``)
        stays no evidence. ``None`` (default): 0.
      loss_bound: if set (a positive number, with ``step_adaptation``), the adaptation may
        lengthen the steps only while the update's predicted decrease ``-g . u`` is at most
        ``loss_bound`` times the loss passed as ``value=`` (see ``_loss_bound``): a loss
        bounded below by 0 cannot fall by more than itself, so a larger predicted decrease
        is an overshoot; an update that is not a descent step (``-g . u <= 0``) gets no
        lengthening at all. It never shortens a step below the network's own, and without
        ``value=`` it does nothing. ``None`` (default): no bound.

    Without ``params`` (``update(grads, state)``) the parameter feature is zero, as if every
    parameter were 0: the steps differ from those with ``params``. Gradients whose tree or
    leaf shapes are not those of the state (and of ``params``) raise a ValueError naming the
    first mismatching leaf.

    References:
      Metz et al., "Understanding and correcting pathologies in the training of learned
      optimizers", arXiv 1810.10180.
      Metz, Freeman, Maheswaranathan, Sohl-Dickstein, "Training Learned Optimizers with
      Randomly Initialized Learned Optimizers", arXiv 2101.07367 (``skip_init="random"``).
    """

    hidden_sizes: tuple[int, ...] = (32,)
    momentum_decays: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)
    second_moment_decay: float = 0.999
    step_mult: float = 1e-3
    exp_mult: float = 1e-3
    output_scale: float = 0.1
    skip_init: str = "adam"
    timescales: tuple[float, ...] = F.DEFAULT_TIMESCALES
    antisymmetric: bool = False
    feature_clip: float | None = None
    spike_clip: float | None = F.SPIKE_CLIP
    anneal_after: int | None = None
    anneal_power: float = 1.0
    step_adaptation: float | None = None
    adaptation_decay: float = 0.01
    adaptation_shortening_decay: float | None = None
    adaptation_limit: float = 4.6
    adaptation_granularity: str = "tensor"
    adaptation_rule: str = "agreement"
    adaptation_steepening: float | None = None
    loss_bound: float | None = None

    def __post_init__(self) -> None:
        F.check_fields(
            self,
            {
                "hidden_sizes": _checks.positive_ints,
                "momentum_decays": _checks.decay_rates,
                "second_moment_decay": _checks.in_unit_interval,
                "step_mult": _checks.positive,
                "exp_mult": _checks.non_negative,
                "output_scale": _checks.non_negative,
                "skip_init": lambda n, v: _checks.one_of(n, v, _SKIP_INITS),
                "timescales": _checks.positives,
                "antisymmetric": _checks.boolean,
                "feature_clip": F.optional(_checks.positive),
                "spike_clip": F.optional(_checks.positive),
                "anneal_after": F.optional(_checks.positive_int),
                "anneal_power": lambda n, v: _checks.in_unit_interval(n, v, closed_high=True),
                "step_adaptation": F.optional(_checks.positive),
                "adaptation_decay": lambda n, v: _checks.in_unit_interval(n, v, closed_low=True),
                "adaptation_shortening_decay": F.optional(
                    lambda n, v: _checks.in_unit_interval(n, v, closed_low=True)
                ),
                "adaptation_limit": _checks.positive,
                "adaptation_granularity": lambda n, v: _checks.one_of(
                    n, v, step_scale.GRANULARITIES
                ),
                "adaptation_rule": lambda n, v: _checks.one_of(n, v, _step_adaptation.RULES),
                "adaptation_steepening": F.optional(_checks.positive),
                "loss_bound": F.optional(_checks.positive),
            },
        )
        if self.adaptation_rule == "secant" and self.adaptation_granularity != "tensor":
            raise ValueError(
                'adaptation_rule: "secant" compares whole tensors and needs '
                f'adaptation_granularity="tensor", got {self.adaptation_granularity!r}.'
            )
        if self.adaptation_steepening is not None and self.adaptation_rule != "secant":
            raise ValueError(
                "adaptation_steepening: acts on the secant rule and needs adaptation_rule="
                f'"secant"; got {self.adaptation_rule!r}.'
            )
        for field in ("adaptation_shortening_decay", "adaptation_steepening", "loss_bound"):
            value = getattr(self, field)
            if value is not None and self.step_adaptation is None:
                raise ValueError(
                    f"{field}: acts on the step-size adaptation and needs step_adaptation "
                    f"set; got {field}={value!r} with step_adaptation=None."
                )

    @property
    def num_inputs(self) -> int:
        """Number of per-coordinate features."""
        return F.num_features(len(self.momentum_decays), 1)

    def init(self, key: chex.PRNGKey) -> MetaParams:
        k_mlp, k_time = jax.random.split(key)
        first = self.hidden_sizes[0] if self.hidden_sizes else 2
        time = F.init_dense(k_time, len(self.timescales), first)
        if self.skip_init == "random":
            # Its own key (folded in), so the MLP and time draws match the default init.
            skip = {"w": F.init_dense(jax.random.fold_in(key, 1), self.num_inputs, 2)["w"]}
        else:
            skip = F.init_skip(self.num_inputs, F.adam_feature_index(self.momentum_decays, 1))
        theta = {
            "mlp": F.init_mlp(k_mlp, self.num_inputs, self.hidden_sizes, 2, self.output_scale),
            "skip": skip,
            "time": {"w": time["w"]},
        }
        if self.step_adaptation is not None:
            theta["adaptation"] = jnp.zeros((), jnp.float32)
        return theta

    def transform(self, theta: MetaParams) -> optax.GradientTransformationExtraArgs:
        decays = self.momentum_decays
        beta2 = self.second_moment_decay
        limit = F.FEATURE_LIMIT if self.feature_clip is None else float(self.feature_clip)

        def init_fn(params):
            return MLPLOptState(
                count=jnp.zeros((), jnp.int32),
                momenta=F.init_momenta(params, decays),
                second_moment=jax.tree.map(_numerics.zeros_for, params),
                step_adaptation=()
                if self.step_adaptation is None
                else _step_adaptation.init(
                    params, self.adaptation_granularity, self.adaptation_rule
                ),
            )

        def update_fn(updates, state, params=None, *, value=None, **extra_args):
            del extra_args
            F.check_tree(updates, state.second_moment, "state")
            if params is not None:
                F.check_tree(updates, params, "params")
            grads = self._guarded(jax.tree.map(_numerics.clean_gradient, updates), state)
            count = optax.safe_increment(state.count)
            momenta = F.update_momenta(state.momenta, grads, decays)
            second = jax.tree.map(
                lambda v, g: F.ema(v, jnp.square(g) + F.SECOND_MOMENT_EPS, beta2),
                state.second_moment,
                grads,
            )
            time_bias = F.step_embedding(count, self.timescales) @ theta["time"]["w"]
            treedef = jax.tree.structure(grads)
            features = self._features(treedef, grads, momenta, second, params, count, limit)
            leaves = self._updates(features, theta, time_bias)
            new_updates, adaptation = self._adapt(treedef.unflatten(leaves), grads, state, theta)
            new_updates = self._anneal(new_updates, count)
            new_updates = self._bound(new_updates, grads, adaptation, value)
            reference = updates if params is None else params
            new_state = MLPLOptState(count, momenta, second, adaptation)
            return _numerics.cast_like(new_updates, reference), new_state

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)

    def _guarded(self, grads, state):
        """``grads`` through the outlier guard (``_features.outlier_guard``)."""
        correction = F.bias_correction(self.second_moment_decay, state.count)
        return jax.tree.map(
            lambda g, v: F.outlier_guard(g, correction * v, self.spike_clip, state.count),
            grads,
            state.second_moment,
        )

    def _features(self, treedef, grads, momenta, second, params, count, limit):
        """Per leaf, the list of network inputs (see the class docstring)."""
        decays = self.momentum_decays
        # Without params the parameter feature is zero (XLA folds it away).
        ps = jax.tree.map(jnp.zeros_like, grads) if params is None else params
        m_leaves = [treedef.flatten_up_to(m) for m in momenta]
        m_corr = [F.bias_correction(d, count) for d in decays]
        v_corr = F.bias_correction(self.second_moment_decay, count)
        features = []
        for i, (g, v, p) in enumerate(
            zip(
                treedef.flatten_up_to(grads),
                treedef.flatten_up_to(second),
                treedef.flatten_up_to(ps),
                strict=True,
            )
        ):
            g = g.astype(v.dtype)
            p = jnp.asarray(p).astype(v.dtype)
            ms = [lm[i] * c for lm, c in zip(m_leaves, m_corr, strict=True)]
            r = jax.lax.rsqrt(v_corr * v + F.RSQRT_EPS)
            feats, _ = F.build_features(p, g, ms, [r], v_corr * F.mean(v), limit=limit)
            features.append(feats)
        return features

    def _updates(self, features, theta, time_bias):
        """The network's update per leaf, made odd in ``g`` where configured."""
        odd = ()
        if self.antisymmetric:
            # All features but 0 (p / rms(p)) and 2 + K (r * s) change sign with g.
            even = (0, 2 + len(self.momentum_decays))
            odd = tuple(k for k in range(self.num_inputs) if k not in even)
        return F.mlp_updates(features, theta, time_bias, self.step_mult, self.exp_mult, odd)

    def adaptation_rate(self, theta: MetaParams) -> jax.Array:
        """The step adaptation's rate, ``step_adaptation * exp(theta["adaptation"])``.

        Raises:
          ValueError: if the optimizer has no step adaptation (``step_adaptation=None``).
        """
        if self.step_adaptation is None:
            raise ValueError("step_adaptation: this MLPLOpt has none (None), so it has no rate.")
        return self.step_adaptation * jnp.exp(theta["adaptation"])

    def _adapt(self, updates, grads, state, theta):
        """``updates`` times the adapted per-tensor step scales, and the new adaptation state."""
        if self.step_adaptation is None:
            return updates, ()
        return _step_adaptation.adapt(
            state.step_adaptation,
            grads,
            updates,
            self.adaptation_rate(theta),
            self.adaptation_decay,
            self.adaptation_limit,
            self.adaptation_granularity,
            self.adaptation_rule,
            count=state.count,
            shortening_decay=self.adaptation_shortening_decay,
            steepening=self.adaptation_steepening or 0.0,
        )

    def _bound(self, updates, grads, adaptation, value):
        """``updates`` with the adaptation's lengthening cut to ``loss_bound``, where set."""
        if self.loss_bound is None:
            return updates
        return _loss_bound.cut_lengthening(
            updates, grads, adaptation.log_scales, value, self.loss_bound
        )

    def _anneal(self, updates, count):
        """``updates`` times the post-horizon decay, where ``anneal_after`` is set."""
        if self.anneal_after is None:
            return updates
        factor = F.anneal_factor(count, self.anneal_after, self.anneal_power)
        return jax.tree.map(lambda u: u * factor.astype(u.dtype), updates)
