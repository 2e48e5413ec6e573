"""`HierarchicalLOpt`: a per-tensor LSTM steering a per-parameter MLP.

Two levels, as in the reference paper. Once per step and per tensor, an LSTM (weights shared
across tensors, one hidden state per tensor) reads global features (step embedding, training-
and validation-loss features) and statistics of the tensor (root-mean-squares of its
parameters and gradient, momentum-to-gradient ratios). Its output sets a per-tensor
learning-rate multiplier and a context vector that is added to the first-layer bias of a
small per-parameter MLP, which reads the same per-coordinate features as `FactoredMLPLOpt`
and outputs a direction and a magnitude. The expensive per-coordinate work stays a tiny MLP;
the LSTM's cost scales with the number of tensors, not parameters.

References:
  Metz, Maheswaranathan, Freeman, Poole, Sohl-Dickstein, "Tasks, stability, architecture,
  and compute: Training more effective learned optimizers, and using them to train
  themselves", arXiv 2009.11243.
  Wichrowska et al., "Learned Optimizers that Scale and Generalize", arXiv 1703.04813.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optax_lopt import _checks, _numerics
from optax_lopt.architectures import _features as F
from optax_lopt.base import LearnedOptimizer, MetaParams

_LOG_EPS = 1e-30
_LOG_SCALE = 0.1  # log-statistics are multiplied by this before entering the LSTM
_MAX_LOG_LR = 10.0


class LossTrackerState(NamedTuple):
    """Running statistics of one loss stream (training or validation).

    Attributes:
      ema: EMAs of the loss at the architecture's ``loss_decays`` (float32 vector).
      minimum: smallest loss seen (float32 scalar).
      seen: 1.0 once a finite loss has been seen, else 0.0.
    """

    ema: jax.Array
    minimum: jax.Array
    seen: jax.Array


class HierarchicalLOptState(NamedTuple):
    """State of `HierarchicalLOpt`.

    Attributes:
      count: number of updates taken (int32 scalar).
      momenta: one params-shaped tree per momentum decay.
      factored: one tree of `FactoredMoment` leaves per factored decay.
      lstm_hidden: params-structured tree of per-tensor LSTM hidden vectors ``(hidden,)``.
      lstm_cell: params-structured tree of per-tensor LSTM cell vectors ``(hidden,)``.
      train_loss: `LossTrackerState` of ``value``.
      validation_loss: `LossTrackerState` of ``validation_value``.
    """

    count: jax.Array
    momenta: tuple[Any, ...]
    factored: tuple[Any, ...]
    lstm_hidden: Any
    lstm_cell: Any
    train_loss: LossTrackerState
    validation_loss: LossTrackerState


def _init_tracker(num_decays: int) -> LossTrackerState:
    return LossTrackerState(
        ema=jnp.zeros((num_decays,), jnp.float32),
        minimum=jnp.zeros((), jnp.float32),
        seen=jnp.zeros((), jnp.float32),
    )


def loss_features(
    tracker: LossTrackerState, value: Any, decays: tuple[float, ...], name: str = "value"
) -> tuple[jax.Array, LossTrackerState]:
    """Features of a loss relative to its history, and the updated history.

    Features: ``tanh((L - ema_k) / (|ema_k| + eps))`` for each decay, ``tanh((L - min) /
    (|min| + eps))`` and an indicator that a loss is present. A missing loss (``None``), a
    non-finite one and a loss of exactly 0 are all treated alike, as "no loss": zero features
    and an unchanged history. (So ``value=None`` and ``value=0.0`` are the same call, as the
    package contract requires.)

    Args:
      tracker: the loss history.
      value: the loss (scalar) or None.
      decays: EMA decays of the history.
      name: the argument's name, for error messages.

    Returns:
      ``(features, new_tracker)``; features has length ``len(decays) + 2``.

    Raises:
      ValueError: if ``value`` is not a scalar.
    """
    n = len(decays)
    if value is None:
        return jnp.zeros((n + 2,), jnp.float32), tracker
    raw = jnp.asarray(value, jnp.float32)
    if raw.shape != ():
        raise ValueError(f"{name}: expected a scalar loss, got an array of shape {raw.shape}.")
    present = jnp.logical_and(jnp.isfinite(raw), raw != 0)
    loss = jnp.where(present, raw, 0.0)
    seen = tracker.seen > 0
    rel = jnp.tanh((loss - tracker.ema) / (jnp.abs(tracker.ema) + 1e-8))
    rel_min = jnp.tanh((loss - tracker.minimum) / (jnp.abs(tracker.minimum) + 1e-8))
    use = jnp.logical_and(present, seen)
    feats = jnp.concatenate(
        [jnp.where(use, rel, 0.0), jnp.where(use, rel_min, 0.0)[None], present[None]]
    ).astype(jnp.float32)
    d = jnp.asarray(decays, jnp.float32)
    new_ema = jnp.where(seen, d * tracker.ema + (1 - d) * loss, loss)
    new_min = jnp.where(seen, jnp.minimum(tracker.minimum, loss), loss)
    new = LossTrackerState(
        ema=jnp.where(present, new_ema, tracker.ema),
        minimum=jnp.where(present, new_min, tracker.minimum),
        seen=jnp.where(present, 1.0, tracker.seen).astype(jnp.float32),
    )
    return feats, new


def _lstm_step(w: dict, h: jax.Array, c: jax.Array, x: jax.Array):
    z = jnp.concatenate([x, h], axis=-1) @ w["w"] + w["b"]
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, c


def _tensor_features(p, g, ms, facs, f_corr, global_feats):
    """One tensor's per-coordinate features and its LSTM input (global + tensor statistics)."""
    rs = [F.factored_rsqrt(f, g.shape, c) for f, c in zip(facs, f_corr, strict=True)]
    if facs:
        msg = F.factored_mean(facs[0], g.shape, f_corr[0])
    else:
        msg = F.mean_square(g)
    feats, stats = F.build_features(p, g, ms, rs, msg, momentum_stats=True)
    tensor_feats = jnp.concatenate(
        [_LOG_SCALE * jnp.log(jnp.stack(stats[:2]) + _LOG_EPS), jnp.stack(stats[2:])]
    )
    size_feat = jnp.full((1,), _LOG_SCALE * math.log(max(g.size, 1)), jnp.float32)
    return feats, jnp.concatenate([global_feats, tensor_feats.astype(jnp.float32), size_feat])


@dataclasses.dataclass(frozen=True)
class HierarchicalLOpt(LearnedOptimizer):
    """Per-tensor LSTM plus per-parameter MLP, with loss features (arXiv 2009.11243).

    Per coordinate, the features of `FactoredMLPLOpt` (``p``, ``g``, momenta, Adafactor
    ``r``, ``g * r``, ``m * r``, each normalised over its tensor). Per tensor, an LSTM input
    made of: a ``tanh(t / T)`` step embedding; training-loss features from ``value=`` and
    validation-loss features from ``validation_value=`` (each: relative change against EMAs
    at ``loss_decays``, relative gap to the best loss so far, a presence flag; zeros when the
    loss is not passed, or is 0 or non-finite); ``0.1 * log`` of the tensor's root-mean-square
    parameter and gradient; ``rms(m_k) / rms(g)`` for each momentum; ``0.1 * log`` of the
    tensor's size. The LSTM's hidden state
    gives a context added to the MLP's first-layer bias and a log learning-rate multiplier
    ``a``; the update is
    ``-step_mult * exp(a) * d * exp(exp_mult * s)`` with ``(d, s)`` the MLP's direction and
    magnitude (plus a linear skip readout).

    At initialisation ``a = 0``, the context readout is small and the skip readout is the
    Adafactor-with-momentum feature, so an untrained optimizer takes Adafactor-like steps of
    size ``step_mult``.

    ``tx.update(updates, state, params, value=loss, validation_value=val_loss)``: both losses
    are optional; pass ``validation_value`` on the steps where it is measured. Inside one
    jitted step function, pass ``validation_value=jnp.nan`` on the other steps (NaN counts as
    missing) so that both kinds of step share one trace.

    Args:
      lstm_hidden_size: units of the per-tensor LSTM.
      hidden_sizes: widths of the per-parameter MLP's hidden ReLU layers (at least one).
      momentum_decays: EMA decays of the momentum features.
      factored_decays: EMA decays of the factored second moments (may be empty).
      loss_decays: EMA decays of the loss histories.
      step_mult: scale of the update.
      exp_mult: scale of the magnitude in the exponent.
      output_scale: initial scale of the MLP's and the context's output layers.
      spike_clip: the outlier guard, on by default, as in `FactoredMLPLOpt`: each gradient
        entry is clipped to ``spike_clip`` times its running RMS (floored by the tensor's; from
        the factored second moment of the slowest factored decay) before the momenta, second
        moments, features and tensor statistics read it. A spike then can neither set the
        tensor's RMS statistics (and the LSTM's inputs) for thousands of steps nor make the
        other coordinates' features huge; gradients within ``spike_clip`` running RMSs pass
        exactly; a spike across a whole tensor is scaled to its running RMS norm
        (``_features.surge_clip``). The first step is never clipped; without factored decays
        there is no guard.
        ``None`` turns it off.

    Without ``params`` the parameter feature and the parameter statistic are those of all-zero
    parameters. Gradients whose tree or leaf shapes are not those of the state (and of
    ``params``) raise a ValueError naming the first mismatching leaf.

    References:
      Metz et al., "Tasks, stability, architecture, and compute: Training more effective
      learned optimizers, and using them to train themselves", arXiv 2009.11243.
    """

    lstm_hidden_size: int = 32
    hidden_sizes: tuple[int, ...] = (8,)
    momentum_decays: tuple[float, ...] = (0.9, 0.99, 0.999)
    factored_decays: tuple[float, ...] = (0.999,)
    loss_decays: tuple[float, ...] = (0.9, 0.99)
    step_mult: float = 1e-3
    exp_mult: float = 1e-3
    output_scale: float = 0.1
    spike_clip: float | None = F.SPIKE_CLIP

    def __post_init__(self) -> None:
        F.check_fields(
            self,
            {
                "lstm_hidden_size": _checks.positive_int,
                "hidden_sizes": _checks.positive_ints,
                "momentum_decays": _checks.decay_rates,
                "factored_decays": lambda n, v: _checks.decay_rates(n, v, allow_empty=True),
                "loss_decays": _checks.decay_rates,
                "step_mult": _checks.positive,
                "exp_mult": _checks.non_negative,
                "output_scale": _checks.non_negative,
                "spike_clip": F.optional(_checks.positive),
            },
        )

    @property
    def num_inputs(self) -> int:
        """Number of per-coordinate features."""
        return F.num_features(len(self.momentum_decays), len(self.factored_decays))

    @property
    def num_tensor_inputs(self) -> int:
        """Length of the per-tensor LSTM input."""
        loss = 2 * (len(self.loss_decays) + 2)
        return len(F.DEFAULT_TIMESCALES) + loss + 2 + len(self.momentum_decays) + 1

    def init(self, key: chex.PRNGKey) -> MetaParams:
        k_mlp, k_lstm, k_ctx = jax.random.split(key, 3)
        n_in, hidden = self.num_tensor_inputs, self.lstm_hidden_size
        w = jax.random.normal(k_lstm, (n_in + hidden, 4 * hidden), jnp.float32)
        w = w / math.sqrt(n_in + hidden)
        b = jnp.zeros((4 * hidden,), jnp.float32).at[hidden : 2 * hidden].set(1.0)  # forget
        index = F.adam_feature_index(self.momentum_decays, len(self.factored_decays))
        return {
            "mlp": F.init_mlp(k_mlp, self.num_inputs, self.hidden_sizes, 2, self.output_scale),
            "skip": F.init_skip(self.num_inputs, index),
            "lstm": {"w": w, "b": b},
            "context": F.init_dense(k_ctx, hidden, self.hidden_sizes[0], self.output_scale),
            "log_lr": {
                "w": jnp.zeros((hidden,), jnp.float32),
                "b": jnp.zeros((), jnp.float32),
            },
        }

    def transform(self, theta: MetaParams) -> optax.GradientTransformationExtraArgs:
        def init_fn(params):
            return self._init_state(params)

        def update_fn(
            updates, state, params=None, *, value=None, validation_value=None, **extra_args
        ):
            del extra_args
            return self._update(theta, updates, state, params, value, validation_value)

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)

    def _init_state(self, params: Any) -> HierarchicalLOptState:
        """The state before the first step: zero moments, LSTM states and loss histories."""
        hidden = self.lstm_hidden_size

        def zeros_vector(p):
            return jnp.zeros((hidden,), _numerics.compute_dtype(p.dtype))

        return HierarchicalLOptState(
            count=jnp.zeros((), jnp.int32),
            momenta=F.init_momenta(params, self.momentum_decays),
            factored=tuple(jax.tree.map(F.init_factored, params) for _ in self.factored_decays),
            lstm_hidden=jax.tree.map(zeros_vector, params),
            lstm_cell=jax.tree.map(zeros_vector, params),
            train_loss=_init_tracker(len(self.loss_decays)),
            validation_loss=_init_tracker(len(self.loss_decays)),
        )

    def _update(self, theta, updates, state, params, value, validation_value):
        """One step: moments, loss features, per-tensor LSTM, per-parameter MLP."""
        grads, count, momenta, factored = self._moments(updates, state, params)
        train_feats, train_loss = loss_features(state.train_loss, value, self.loss_decays)
        valid_feats, valid_loss = loss_features(
            state.validation_loss, validation_value, self.loss_decays, "validation_value"
        )
        global_feats = jnp.concatenate([F.step_embedding(count), train_feats, valid_feats])

        ps = jax.tree.map(jnp.zeros_like, grads) if params is None else params
        treedef = jax.tree.structure(grads)
        features, inputs = self._all_features(
            treedef, grads, ps, momenta, factored, count, global_feats
        )
        h_leaves = treedef.flatten_up_to(state.lstm_hidden)
        c_leaves = treedef.flatten_up_to(state.lstm_cell)
        new_h, new_c, contexts, steps = self._lstm(theta, h_leaves, c_leaves, inputs)

        new_updates = F.mlp_updates(features, theta, contexts, steps, self.exp_mult)
        new_state = HierarchicalLOptState(
            count=count,
            momenta=momenta,
            factored=factored,
            lstm_hidden=treedef.unflatten(new_h),
            lstm_cell=treedef.unflatten(new_c),
            train_loss=train_loss,
            validation_loss=valid_loss,
        )
        reference = updates if params is None else params
        return _numerics.cast_like(treedef.unflatten(new_updates), reference), new_state

    def _moments(self, updates, state, params):
        """Checked, cleaned, spike-clipped gradients and the new count, momenta, factored."""
        F.check_tree(updates, state.momenta[0], "state")
        if params is not None:
            F.check_tree(updates, params, "params")
        fdecays = self.factored_decays
        grads = jax.tree.map(_numerics.clean_gradient, updates)
        grads = F.spike_clip_factored(grads, state.factored, fdecays, state.count, self.spike_clip)
        count = optax.safe_increment(state.count)
        momenta = F.update_momenta(state.momenta, grads, self.momentum_decays)
        is_fac = lambda x: isinstance(x, F.FactoredMoment)
        factored = tuple(
            jax.tree.map(
                lambda fac, g, d=d: F.update_factored(fac, g, d), tree, grads, is_leaf=is_fac
            )
            for tree, d in zip(state.factored, fdecays, strict=True)
        )
        return grads, count, momenta, factored

    def _all_features(self, treedef, grads, ps, momenta, factored, count, global_feats):
        """Every tensor's per-coordinate features and LSTM input, in leaf order."""
        p_leaves = treedef.flatten_up_to(ps)
        m_leaves = [treedef.flatten_up_to(m) for m in momenta]
        f_leaves = [treedef.flatten_up_to(f) for f in factored]
        m_corr = [F.bias_correction(d, count) for d in self.momentum_decays]
        f_corr = [F.bias_correction(d, count) for d in self.factored_decays]
        features, inputs = [], []
        for i, g in enumerate(treedef.flatten_up_to(grads)):
            dtype = m_leaves[0][i].dtype
            g = g.astype(dtype)
            p = jnp.asarray(p_leaves[i]).astype(dtype)
            ms = [lm[i] * c.astype(dtype) for lm, c in zip(m_leaves, m_corr, strict=True)]
            facs = [lf[i] for lf in f_leaves]
            feats, lstm_input = _tensor_features(p, g, ms, facs, f_corr, global_feats)
            inputs.append(lstm_input)
            features.append(feats)
        return features, inputs

    def _lstm(self, theta, h_leaves, c_leaves, inputs):
        """One batched LSTM step over all tensors (in their widest compute dtype).

        Returns the new hidden and cell leaves, and each tensor's context and step size.
        """
        new_h, new_c, contexts, steps = [], [], [], []
        if not inputs:
            return new_h, new_c, contexts, steps
        hdtype = jnp.result_type(*h_leaves)
        lstm_w = jax.tree.map(lambda a: a.astype(hdtype), theta["lstm"])
        h, c = _lstm_step(
            lstm_w,
            jnp.stack(h_leaves).astype(hdtype),
            jnp.stack(c_leaves).astype(hdtype),
            jnp.stack(inputs).astype(hdtype),
        )
        context = h @ theta["context"]["w"] + theta["context"]["b"]
        log_lr = jnp.clip(
            h @ theta["log_lr"]["w"] + theta["log_lr"]["b"], -_MAX_LOG_LR, _MAX_LOG_LR
        )
        step = self.step_mult * jnp.exp(log_lr)
        for i in range(len(inputs)):
            new_h.append(h[i].astype(h_leaves[i].dtype))
            new_c.append(c[i].astype(c_leaves[i].dtype))
            contexts.append(context[i])
            steps.append(step[i])
        return new_h, new_c, contexts, steps
