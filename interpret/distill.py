"""Distillation: an optimizer's mechanisms composed into a runnable optax chain.

`distill` drives the optimizer's one-coordinate system with gradient sequences it actually
saw (``gradients=``, e.g. a `interpret.Recording`'s; Gaussian ones at ``gradient_scale``
otherwise), takes its updates, and fits the chain

    clip(c) -> input map -> momentum modes (beta_k, w_k) -> output map -> scale(-lr * s(t)),

optionally wrapped in a step-size adaptation, from a small vocabulary, one choice per
mechanism:

- **clipping** ``clip(c)``: the threshold where the update function saturates
  (`interpret.fit_clipping` at a visited state), kept only if it improves the fit;
- **input map**: none, ``sign`` (sign-SGD-like rules, which a jump at ``g = 0`` reveals) or
  ``normalise`` (division by the root-mean-square gradient, RMSProp's learning-rate
  adaptation, with decay beta_2);
- **momentum** (one to three modes): averages ``m_k = beta_k m_k + (1 - beta_k) x`` whose
  decays are the optimizer's own linearised modes (`interpret.momentum_modes` at its
  convergence fixed point) plus a fixed bank, chosen by forward selection and summed with
  least-squares weights ``w_k`` (``beta = 0`` is the direct term);
- **output map**: none or ``sign`` (Lion-like: the sign of a mix of the gradient and a momentum);
- **schedule** ``s(t)``: the least-squares scale of each step, normalised to peak 1 (held at
  its last value after ``schedule_steps``), or a constant;
- **step adaptation**: the whole update times ``exp(s)``, by one of two rules: ``s`` growing
  while gradients keep opposing the last update and shrinking when they turn
  (`interpret.adapt_step_by_agreement`, Rprop's sign rule), or ``s`` moved toward the line
  minimum that the secant of the last step's slopes predicts (`interpret.adapt_step_by_secant`,
  Quickprop's per-weight secant in the log step size, with its fast start); its rule, rate
  and decay come from a grid, then a finer one around the choice; it is tried on the best
  chain without it of each input map, since a step adaptation can change which input map
  fits best (an RMS-normalised optimizer whose step scale adapts can look sign-like to a
  chain without the adaptation).
  The rule is driven by the chain's own previous updates (a few refits, starting from the
  original's), so a chain is scored as it will run, not with the original's updates steering
  its step.

Every combination is fitted in closed form or by a small grid and the one whose updates match
best (``r2``) wins. `Distilled.ablations` refits with each mechanism removed in turn, so a
benchmark can measure what each one is worth. What the chain cannot reproduce (``1 - r2``) is
what the vocabulary misses; `Distilled.unexplained` says which candidate behaviour
(`interpret.residual`) accounts for that remainder.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
  Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems",
  arXiv 1802.04434; Chen et al., "Symbolic Discovery of Optimization Algorithms" (Lion),
  arXiv 2302.06675.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interpret import _checks
from interpret import system as _system
from interpret.advantage import scale_by_power_rms
from interpret.clipping import fit_clipping
from interpret.momentum import r_squared
from interpret.residual import residual_locations, unexplained
from interpret.secant_step import adapt_step_by_secant, secant_log_scales
from interpret.step_scale import adapt_step_by_agreement, agreement_log_scales

BETA_BANK = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
"""Momentum decays always offered to the fit, besides the optimizer's own modes."""

MECHANISMS = (
    "clipping",
    "sign",
    "normalise",
    "momentum",
    "output sign",
    "schedule",
    "step adaptation",
)
"""The mechanisms `distill` can find; `Distilled.mechanisms` lists those it kept."""

_RMS_DECAYS = (0.9, 0.99, 0.999)
ADAPTATION_RULES = ("agreement", "secant")
"""The step-adaptation rules `distill` can find (`Spec.adaptation_rule`)."""

_ADAPTATION_RATES = {"agreement": (0.01, 0.03, 0.1, 0.3), "secant": (0.1, 0.3, 1.0)}
_STEEPENINGS = {"agreement": (0.0,), "secant": (0.0, float(np.log(2.0)))}
_FINE_DECAYS = (0.0, 0.003, 0.01, 0.03, 0.1)
_ADAPTATION_DECAYS = _FINE_DECAYS[::2]  # (0, 0.01, 0.1): the coarse grid's decays
_PARSIMONY = 2e-3
_INPUT_MAPS = ("none", "sign", "normalise")
_SELF_CONSISTENT_FITS = 4  # fits of a chain with step adaptation (see `_fit`)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One member of the vocabulary (see module docstring)."""

    clip: float | None = None
    input_map: str = "none"  # "none", "sign" or "normalise"
    rms_decay: float = 0.99
    betas: tuple[float, ...] = (0.0,)
    output_sign: bool = False
    schedule: bool = True
    adaptation: tuple[float, float] | None = None  # (rate, decay) of the step adaptation
    adaptation_rule: str = "agreement"  # one of ADAPTATION_RULES, when adaptation is set
    adaptation_steepening: float = 0.0  # the secant rule's steepening (secant_log_multiplier)

    @property
    def mechanisms(self) -> tuple[str, ...]:
        found = []
        if self.clip is not None:
            found.append("clipping")
        if self.input_map != "none":
            found.append(self.input_map)
        if any(b > 0 for b in self.betas):
            found.append("momentum")
        if self.output_sign:
            found.append("output sign")
        if self.schedule:
            found.append("schedule")
        if self.adaptation is not None:
            found.append("step adaptation")
        return tuple(found)


@dataclasses.dataclass(frozen=True)
class Distilled:
    """A distilled optimizer.

    Attributes:
      tx: the optax chain, wrapped in `interpret.adapt_step_by_agreement` or
        `interpret.adapt_step_by_secant` when the step adaptation is kept (a drop-in
        ``GradientTransformation``).
      description: the chain in words.
      mechanisms: the mechanisms it has (names from `MECHANISMS`).
      r2: how well its updates match the original's on the fitting sequences (1: exactly).
      betas: the momentum decays of its modes; ``weights``: their weights (with the sign that
        makes ``u = -lr * s(t) * sum_k w_k m_k`` a descent step, times ``exp(s_t)`` with a
        step adaptation).
      learning_rate: ``lr``.
      schedule: ``s(t)`` per step, peak 1 (None: constant).
      spec: the vocabulary choice.
      ablations: mechanism -> the `Distilled` refitted without it (empty for an ablation).
      unexplained: candidate behaviour -> the fraction of the residual updates it explains
        (`interpret.unexplained`; empty for an ablation): what the chain misses.
      residual_locations: `interpret.residual_locations` of the residual (empty for an
        ablation): where the chain misses it.
    """

    tx: optax.GradientTransformation
    description: str
    mechanisms: tuple[str, ...]
    r2: float
    betas: tuple[float, ...]
    weights: tuple[float, ...]
    learning_rate: float
    schedule: np.ndarray | None
    spec: Spec
    ablations: dict[str, Distilled] = dataclasses.field(default_factory=dict)
    unexplained: dict[str, float] = dataclasses.field(default_factory=dict)
    residual_locations: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)


class ModesState(NamedTuple):
    """State of `scale_by_modes`: one average per mode, trailing dimension ``len(betas)``."""

    averages: Any


def scale_by_modes(
    betas: Sequence[float], weights: Sequence[float]
) -> optax.GradientTransformation:
    """``sum_k w_k m_k`` with ``m_k = beta_k m_k + (1 - beta_k) g``: several momenta at once.

    Args:
      betas: decays in ``[0, 1)`` (0 is the gradient itself).
      weights: one weight per decay.

    Returns:
      An ``optax.GradientTransformation``; non-finite gradients count as zero.
    """
    b = np.asarray(betas, np.float64)
    w = np.asarray(weights, np.float64)
    if b.ndim != 1 or b.shape != w.shape or b.size == 0 or np.any((b < 0) | (b >= 1)):
        raise ValueError(
            f"betas, weights: expected equal-length lists with betas in [0, 1), got {betas!r}, "
            f"{weights!r}."
        )
    b32, w32 = jnp.asarray(b, jnp.float32), jnp.asarray(w, jnp.float32)

    def init_fn(params):
        return ModesState(
            jax.tree.map(lambda p: jnp.zeros(jnp.shape(p) + b.shape, jnp.float32), params)
        )

    def update_fn(updates, state, params=None):
        del params

        def one(g, m):
            x = jnp.where(jnp.isfinite(g), g, 0.0).astype(jnp.float32)[..., None]
            m = b32 * m + (1 - b32) * x
            return (m @ w32).astype(jnp.asarray(g).dtype), m

        pairs = jax.tree.map(one, updates, state.averages)
        outer = jax.tree.structure(updates)
        new_updates, averages = jax.tree.transpose(outer, jax.tree.structure((0, 0)), pairs)
        return new_updates, ModesState(averages)

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------- fitting
def _ema(x: np.ndarray, beta: float) -> np.ndarray:
    if beta == 0:
        return x
    out, m = np.empty_like(x), np.zeros(x.shape[1:])
    for t in range(x.shape[0]):
        m = beta * m + (1 - beta) * x[t]
        out[t] = m
    return out


def _input(g: np.ndarray, spec: Spec) -> np.ndarray:
    x = g if spec.clip is None else np.clip(g, -spec.clip, spec.clip)
    if spec.input_map == "sign":
        return np.sign(x)
    if spec.input_map == "normalise":
        v = _ema(x * x, spec.rms_decay)
        correction = 1 - spec.rms_decay ** np.arange(1, len(x) + 1)
        return x / np.sqrt(v / correction[:, None] + 1e-12)
    return x


def _scales(u: np.ndarray, f: np.ndarray, per_step: bool) -> np.ndarray:
    return _scales_from_sums(np.sum(u * f, 1), np.sum(f * f, 1), per_step)


def _scales_from_sums(uf: np.ndarray, ff: np.ndarray, per_step: bool) -> np.ndarray:
    """Least-squares scales of ``f`` toward ``u`` from each step's ``sum u f`` and ``sum f f``:
    one per step, or one for the whole run."""
    if per_step:
        return uf / np.maximum(ff, 1e-300)
    return np.full(len(uf), np.sum(uf) / max(np.sum(ff), 1e-300))


def _fit_weights(u, feats, per_step, iterations=12):
    """Weights w and per-step scales s with u_t ~ s_t * sum_k w_k f_k,t (alternating LS).

    Each step's inner products over coordinates are taken once, so every iteration solves
    the small normal equations instead of touching the ``(T, K)`` arrays again."""
    f = np.stack(feats)  # (n, T, K)
    gram = np.einsum("itk,jtk->tij", f, f)  # per step: sum over coordinates of f_i f_j
    cross = np.einsum("itk,tk->ti", f, u)  # per step: sum over coordinates of f_i u
    s = np.ones(len(u))
    for _ in range(iterations if per_step else 1):
        w, *_ = np.linalg.lstsq(np.einsum("t,tij->ij", s * s, gram), cross.T @ s, rcond=None)
        s = _scales_from_sums(cross @ w, np.einsum("i,tij,j->t", w, gram, w), per_step)
    return w, s, s[:, None] * np.tensordot(w, f, 1)


def _fit_linear(u, feats, betas, per_step, max_modes=3, min_gain=2e-3):
    """Forward selection of at most ``max_modes`` decays, then their weights and scales."""
    chosen, best = [], (-np.inf, None)
    while len(chosen) < min(max_modes, len(feats)):
        trials = []
        for k in set(range(len(feats))) - set(chosen):
            w, s, pred = _fit_weights(u, [feats[i] for i in chosen + [k]], per_step)
            trials.append((r_squared(u, pred), k, w, s, pred))
        r2, k, w, s, pred = max(trials, key=lambda t: t[0])
        if chosen and r2 < best[0] + min_gain:
            break
        chosen.append(k)
        best = (r2, (w, s, pred))
    w, s, pred = best[1]
    order = np.argsort([betas[i] for i in chosen])
    return tuple(betas[chosen[i]] for i in order), w[order], s, pred


def _fit_sign_output(u, feats, betas, per_step, factor):
    """The best ``factor * sign(cos a * f_0 + sin a * f_k)`` over modes ``k`` and angles ``a``."""

    def score(k, a):
        o = factor * np.sign(np.cos(a) * feats[0] + np.sin(a) * feats[k])
        s = _scales(u, o, per_step)
        return r_squared(u, s[:, None] * o), s, s[:, None] * o

    grid = np.linspace(0, np.pi, 48, endpoint=False)
    _, k, a = max((score(k, a)[0], k, a) for k in range(1, len(feats)) for a in grid)
    lo, hi = a - np.pi / 48, a + np.pi / 48
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(30):  # golden section on the angle
        x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if score(k, x1)[0] > score(k, x2)[0]:
            hi = x2
        else:
            lo = x1
    a = 0.5 * (lo + hi)
    _, s, pred = score(k, a)
    return (betas[0], betas[k]), np.array([np.cos(a), np.sin(a)]), s, pred


def _fit(spec: Spec, g: np.ndarray, u: np.ndarray, fits: int = _SELF_CONSISTENT_FITS):
    """Fits ``spec``'s weights and scales; returns ``(r2, betas, weights, scales, fitted)``.

    With a step adaptation, the rule's factor depends on the chain's own previous updates,
    which depend on the weights: the first fit drives the rule with the original's updates
    ``u``, each refit with the updates the previous fit predicts (``fits`` in all), and the
    result is scored with the factor its own updates produce. Driving the rule with ``u``
    alone leaks the original's updates into the chain's features: such a fit can match every
    recorded update and still run away once the chain's own updates drive it. ``fits=1``
    returns that first fit as it is (an optimistic score, for `_best_candidate`'s pruning).
    """
    feats = [_ema(_input(g, spec), b) for b in spec.betas]
    if spec.adaptation is None:
        return _fit_weighted(spec, feats, u, 1.0)
    fit = (None, None, None, None, u)  # the original's updates drive the first fit
    for _ in range(fits):
        fit = _fit_weighted(spec, feats, u, _step_factor(spec, g, fit[4]))
    if fits == 1:
        return fit
    _, betas, w, s, fitted = fit
    pred = _predict(spec, feats, betas, w, s, _step_factor(spec, g, fitted))
    return r_squared(u, pred), betas, w, s, pred


def _step_factor(spec: Spec, g: np.ndarray, driver: np.ndarray) -> np.ndarray:
    """``exp(s_t)`` of ``spec``'s step adaptation when ``driver`` are the previous updates."""
    if spec.adaptation_rule == "secant":
        rate, decay = spec.adaptation
        return np.exp(
            secant_log_scales(g, driver, rate, decay, steepening=spec.adaptation_steepening)
        )
    return np.exp(agreement_log_scales(g, driver, *spec.adaptation))


def _sign_output(spec: Spec, feats: list[np.ndarray]) -> bool:
    return spec.output_sign and len(feats) > 1


def _fit_weighted(spec: Spec, feats: list[np.ndarray], u: np.ndarray, factor):
    """`_fit` with the step factor ``factor`` (``(T, K)`` or 1) given."""
    if _sign_output(spec, feats):
        betas, w, s, pred = _fit_sign_output(u, feats, spec.betas, spec.schedule, factor)
    else:
        betas, w, s, pred = _fit_linear(u, [factor * f for f in feats], spec.betas, spec.schedule)
    return r_squared(u, pred), tuple(betas), np.asarray(w), s, pred


def _predict(spec: Spec, feats, betas, w, s, factor) -> np.ndarray:
    """The fitted chain's updates: ``s_t * factor * z`` with ``z`` the weighted modes (their
    sign with a sign output)."""
    z = sum(wk * feats[spec.betas.index(b)] for wk, b in zip(w, betas, strict=True))
    return s[:, None] * factor * (np.sign(z) if _sign_output(spec, feats) else z)


def _build(spec: Spec, betas, weights, scales, schedule_steps) -> Distilled:
    """The optax chain of a fitted spec."""
    parts, words = [], []
    if spec.clip is not None:
        parts.append(optax.clip(spec.clip))
        words.append(f"clip({spec.clip:.3g})")
    if spec.input_map == "sign":
        parts.append(optax.scale_by_sign())
        words.append("sign")
    elif spec.input_map == "normalise":
        parts.append(scale_by_power_rms(1.0, spec.rms_decay))
        words.append(f"normalise(rms decay {spec.rms_decay:g})")
    # u = s_t * sum_k w_k m_k  ==  -lr * profile_t * sum_k (-c w_k) m_k, with lr > 0 and
    # profile = c * s / lr peaking at 1, c the sign of the typical scale
    lr = float(np.max(np.abs(scales))) or 1.0
    c = float(np.sign(np.mean(scales)) or 1.0)
    profile = c * scales / lr
    weights = -c * np.asarray(weights, np.float64)
    norm = float(np.sum(np.abs(weights))) or 1.0  # weights sum to 1 in magnitude
    lr, weights = (lr if spec.output_sign else lr * norm), weights / norm
    parts.append(scale_by_modes(betas, weights))
    words.append(
        "modes(" + ", ".join(f"{w:.3g}*m[{b:g}]" for b, w in zip(betas, weights, strict=True)) + ")"
    )
    if spec.output_sign:
        parts.append(optax.scale_by_sign())
        words.append("sign")
    if spec.schedule:
        steps = len(profile) if schedule_steps is None else min(schedule_steps, len(profile))
        table = jnp.asarray(profile[:steps], jnp.float32)
        parts.append(optax.scale_by_schedule(lambda c: -lr * table[jnp.minimum(c, steps - 1)]))
        words.append(f"scale(-{lr:.3g} * schedule[{steps} steps])")
        schedule = np.asarray(profile[:steps])
    else:
        parts.append(optax.scale(-lr))
        words.append(f"scale(-{lr:.3g})")
        schedule = None
    tx = optax.chain(*parts)
    description = " -> ".join(words)
    if spec.adaptation is not None:
        rate, decay = spec.adaptation
        rule, steepening = spec.adaptation_rule, spec.adaptation_steepening
        if rule == "secant":
            tx = adapt_step_by_secant(tx, rate, decay, steepening=steepening)
        else:
            tx = adapt_step_by_agreement(tx, rate, decay)
        knobs = f"rate {rate:.3g}, decay {decay:.3g}"
        if steepening:
            knobs += f", steepening {steepening:.3g}"
        description = f"adapt_step_by_{rule}({knobs}; {description})"
    return Distilled(
        tx=tx,
        description=description,
        mechanisms=spec.mechanisms,
        r2=float("nan"),
        betas=tuple(float(b) for b in betas),
        weights=tuple(float(w) for w in weights),
        learning_rate=float(lr),
        schedule=schedule,
        spec=spec,
    )


def _without(spec: Spec, mechanism: str) -> Spec:
    if mechanism == "clipping":
        return dataclasses.replace(spec, clip=None)
    if mechanism in ("sign", "normalise"):
        return dataclasses.replace(spec, input_map="none")
    if mechanism == "output sign":
        return dataclasses.replace(spec, output_sign=False)
    if mechanism == "schedule":
        return dataclasses.replace(spec, schedule=False)
    if mechanism == "momentum":  # no memory: the (mapped) gradient itself
        return dataclasses.replace(spec, betas=(0.0,))
    if mechanism == "step adaptation":
        return dataclasses.replace(
            spec, adaptation=None, adaptation_rule="agreement", adaptation_steepening=0.0
        )
    raise ValueError(f"mechanism: expected one of {MECHANISMS}, got {mechanism!r}.")


def _candidates(clip, betas, schedule_allowed):
    for clip_, input_map, output_sign in itertools.product(
        (None, clip) if clip is not None else (None,), _INPUT_MAPS, (False, True)
    ):
        decays = _RMS_DECAYS if input_map == "normalise" else (0.99,)
        for decay in decays:
            yield Spec(clip_, input_map, decay, betas, output_sign, schedule_allowed)


def _streams(system, gradients, gradient_scale, steps, seed):
    if gradients is None:
        g = gradient_scale * jax.random.normal(jax.random.key(seed), (steps, 64), system.dtype)
    else:
        g = np.asarray(gradients, np.float64)
        if g.ndim == 1:
            g = g[:, None]
        if g.ndim != 2 or g.shape[0] < 3 or not np.all(np.isfinite(g)):
            raise ValueError(
                f"gradients: expected a finite (num_steps >= 3, K) array, got shape {g.shape}."
            )
        g = jnp.asarray(g, system.dtype)
    _, u = jax.jit(jax.vmap(system.run, in_axes=1, out_axes=1))(g)
    return np.asarray(g, np.float64), np.asarray(u, np.float64)


def distill(
    tx: optax.GradientTransformation | _system.ScalarSystem,
    *,
    gradients: Any = None,
    gradient_scale: float = 1.0,
    schedule_steps: int | None = None,
    betas: Sequence[float] | None = None,
    ablate: bool = True,
    seed: int = 0,
) -> Distilled:
    """Fits the chain of the module docstring to ``tx``'s updates on ``gradients``.

    Args:
      tx: an optax transformation (or a `ScalarSystem`).
      gradients: gradient sequences the optimizer saw, ``(T, K)`` (a `interpret.Recording`'s
        ``gradients``); None: ``K = 64`` Gaussian sequences of standard deviation
        ``gradient_scale`` and length ``schedule_steps`` (200 when that is None).
      gradient_scale: see ``gradients``.
      schedule_steps: steps of schedule to fit (None: a constant learning rate; otherwise at
        most ``T``).
      betas: extra momentum decays to offer the fit besides the fixed bank, e.g. the
        ``momentum_modes(...).betas[:2]`` a caller already has; None: the decays of the
        optimizer's own two strongest modes, found here (one more fixed-point search).
      ablate: also refit without each mechanism found (`Distilled.ablations`).
      seed: seed of the Gaussian sequences.

    Returns:
      A `Distilled`.
    """
    system = _system.as_system(tx)
    if schedule_steps is not None:
        schedule_steps = _checks.positive_int("schedule_steps", schedule_steps)
    _checks.positive("gradient_scale", gradient_scale)
    steps = schedule_steps or 200
    g, u = _streams(system, gradients, gradient_scale, steps, seed)
    if schedule_steps is not None:
        g, u = g[:schedule_steps], u[:schedule_steps]
    if not np.all(np.isfinite(u)):
        raise ValueError("tx: its updates on these gradients are not all finite; cannot distill.")
    found = _own_modes(system, g) if betas is None else betas
    extra = [float(b) for b in np.asarray(found, np.float64).ravel() if 0 < b < 1]
    bank = tuple(sorted(set(BETA_BANK) | {round(b, 6) for b in extra}))
    candidates = list(_candidates(_clip_threshold(system, g), bank, schedule_steps is not None))
    bases = [
        _best_candidate([c for c in candidates if c.input_map == m], g, u) for m in _INPUT_MAPS
    ]
    best = max(bases, key=_penalised)
    adapted = [a for base in bases for a in _adaptations(base[1], bank, _coarse())]
    best = _best_candidate(adapted, g, u, incumbent=best)
    if best[1].adaptation is not None:
        chosen = best[1]
        finer = _finer(chosen.adaptation_rule, *chosen.adaptation, chosen.adaptation_steepening)
        best = _best_candidate(_adaptations(best[1], bank, finer), g, u, incumbent=best)
    r2, spec, w, s, fitted = best
    best = dataclasses.replace(
        _build(spec, spec.betas, w, s, schedule_steps),
        r2=float(r2),
        unexplained=unexplained(g, u, fitted),
        residual_locations=residual_locations(g, u, fitted),
    )
    if not ablate:
        return best
    return dataclasses.replace(
        best, ablations=_ablations(spec, best.mechanisms, g, u, schedule_steps)
    )


def _best_candidate(candidates, g: np.ndarray, u: np.ndarray, incumbent=None):
    """``(r2, spec, w, s, fitted)`` of the candidate with the best parsimony-penalised fit;
    ``incumbent`` (such a tuple, already fitted) wins ties.

    Candidates with a step adaptation are first scored by their one fit driven by the
    original's updates, which is optimistic, and fitted in full in that order only while that
    score could still beat the best full score so far.
    """
    scored = []
    if incumbent is not None:
        scored.append((_penalised(incumbent), *incumbent))
    candidates = list(candidates)
    adapted = [c for c in candidates if c.adaptation is not None]
    for spec in [c for c in candidates if c.adaptation is None]:
        scored.append(_scored(spec, _fit(spec, g, u)))
    optimistic = sorted(((_scored(c, _fit(c, g, u, fits=1))[0], c) for c in adapted),
                        key=lambda item: -item[0])  # fmt: skip
    for bound, spec in optimistic:
        if scored and bound <= max(item[0] for item in scored):
            break
        scored.append(_scored(spec, _fit(spec, g, u)))
    return max(scored, key=lambda item: item[0])[1:]


def _penalised(candidate) -> float:
    """The parsimony-penalised r2 of an ``(r2, spec, ...)`` tuple (ties: the first wins)."""
    return candidate[0] - _PARSIMONY * len(candidate[1].mechanisms)


def _scored(spec: Spec, fit) -> tuple:
    """``(penalised r2, r2, spec with its fitted decays, w, s, fitted)`` of one `_fit`."""
    r2, fitted_betas, w, s, fitted = fit
    spec = dataclasses.replace(spec, betas=fitted_betas)
    r2 = r2 if np.isfinite(r2) else -np.inf
    # parsimony: a mechanism must buy at least _PARSIMONY of r2 to be kept
    return (r2 - _PARSIMONY * len(spec.mechanisms), r2, spec, w, s, fitted)


def _adaptations(spec: Spec, bank: tuple[float, ...], choices):
    """``spec``, refitted over the whole bank of decays, with each
    ``(rule, (rate, decay), steepening)`` of ``choices`` as its step adaptation."""
    base = dataclasses.replace(spec, betas=bank)
    for rule, pair, steepening in choices:
        yield dataclasses.replace(
            base, adaptation=pair, adaptation_rule=rule, adaptation_steepening=steepening
        )


def _coarse():
    """Every rule with each of its coarse rates, the coarse decays and its steepenings."""
    for rule in ADAPTATION_RULES:
        grid = itertools.product(_ADAPTATION_RATES[rule], _ADAPTATION_DECAYS, _STEEPENINGS[rule])
        for rate, decay, steepening in grid:
            yield rule, (rate, decay), steepening


def _finer(rule: str, rate: float, decay: float, steepening: float):
    """Rates within a factor 2 of ``rate`` (quarter octaves) and the decays next to ``decay``,
    same rule and steepening: the coarse grid's choice made finer, without that choice itself
    (already fitted)."""
    i = _FINE_DECAYS.index(decay)
    for k, d in itertools.product(range(-4, 5), _FINE_DECAYS[max(0, i - 1) : i + 2]):
        if (k, d) != (0, decay):
            yield rule, (float(rate * 2.0 ** (k / 4)), d), steepening


def _ablations(spec: Spec, mechanisms, g, u, schedule_steps) -> dict[str, Distilled]:
    """The chain refitted without each of ``mechanisms``, by mechanism."""
    ablations = {}
    for mechanism in mechanisms:
        reduced = _without(spec, mechanism)
        r2_m, b_m, w_m, s_m, _ = _fit(reduced, g, u)
        ablations[mechanism] = dataclasses.replace(
            _build(reduced, b_m, w_m, s_m, schedule_steps), r2=float(r2_m)
        )
    return ablations


def _own_modes(system, g: np.ndarray, count: int = 2) -> list[float]:
    """The decays of the optimizer's strongest linearised modes at its convergence point."""
    if system.size == 0:
        return []
    from interpret.modes import momentum_modes  # noqa: PLC0415 (modes imports fitting code)
    from interpret.problem import gradient_stats

    try:
        modes = momentum_modes(system, gradient_stats(g), horizon=len(g), num_starts=4)
    except ValueError:
        return []
    return [float(b) for b in modes.betas[:count] if 0 < b < 1 and np.isfinite(b)]


def _clip_threshold(system, g: np.ndarray) -> float | None:
    """The saturation threshold at a mid-run state, if it lies inside the gradients seen."""
    mags = np.abs(g[np.isfinite(g) & (g != 0)])
    if mags.size == 0:
        return None
    low, high = np.percentile(mags, [1, 99.9])
    probe = np.geomspace(low / 10, high * 10, 81)
    column = jnp.asarray(g[:, int(np.argmax(np.abs(g).sum(0)))], system.dtype)
    hs, _ = jax.jit(system.run)(column[: max(1, len(column) // 2)])
    fit = fit_clipping(system, state=np.asarray(hs[-1]), step=max(0, len(hs) - 1), gradients=probe)
    if fit.shape == "none" or not (low < fit.threshold < high):
        return None
    return float(fit.threshold)
