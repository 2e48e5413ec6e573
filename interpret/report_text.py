"""The words of the reverse-engineering report: one paragraph per mechanism, with its fit.

Every number comes with the goodness of fit that says how far to trust it, and a mechanism
whose fit is poor is called absent. Paragraphs speak only of the optimizer analysed.
"""

from __future__ import annotations

import math

import numpy as np

from interpret.report import Report

_TRUST_R2 = 0.5
"""Below this goodness of fit a fitted mechanism is reported as absent."""


def _f(x: float) -> str:
    return f"{float(x):.3g}" if np.isfinite(x) else str(float(x))


def markdown(report: Report) -> str:
    """The report as markdown: header, figures, and a paragraph per mechanism."""
    parts = [
        _header(report),
        _momentum(report),
        _shape(report),
        _schedule(report),
        _adaptation(report),
        _coupling(report),
        _distillation(report),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _header(r: Report) -> str:
    q = r.stats.quantiles
    losses = r.recording.losses
    figures = [
        ("update_functions.png", "update functions over the histogram of gradients seen"),
        ("modes.png", "momentum modes"),
        ("eigenvalues.png", "eigenvalues at the convergence fixed point"),
        ("trajectories.png", "state trajectories"),
        ("schedule.png", "zero-gradient schedule"),
        ("lr_adaptation.png", "learning-rate adaptation"),
    ]
    if r.modes is None:
        figures = [f for f in figures if f[0] not in ("modes.png", "eigenvalues.png")]
    images = "\n".join(f"![{text}]({name})" for name, text in figures)
    return (
        f"# Reverse-engineering report: `{r.name}` on `{r.problem}`\n\n"
        f"Recorded on {losses.shape[0]} instances of `{r.problem}` for {losses.shape[1] - 1} "
        f"steps (mean loss {_f(losses[:, 0].mean())} -> {_f(losses[:, -1].mean())}). The "
        f"gradients it saw have |g| quantiles 5% {_f(q[5])}, 50% {_f(q[50])}, 95% {_f(q[95])}; "
        f"every probe below is scaled from them (finite differences at |g| = {_f(r.stats.scale)}"
        f"). One-coordinate state size: {r.state_size}. All numbers are in `report.json`.\n\n"
        + images
    )


def _momentum(r: Report) -> str:
    m = r.modes
    if m is None:
        return "**Momentum.** The optimizer has no state: **no momentum**."
    top = [
        f"beta = {_f(b)} (alpha = {_f(a)}, {100 * f:.0f}% of the update)"
        for b, a, f in zip(m.betas[:3], m.alphas[:3], m.fraction[:3], strict=False)
    ]
    trust = (
        "the linear model reproduces the optimizer's response to one gradient"
        if m.impulse_r2 >= _TRUST_R2
        else "the linear model does **not** reproduce the optimizer's response to one gradient, "
        "so these modes describe it only near its fixed point"
    )
    where = (
        "At the convergence fixed point (g* = 0, found from visited states; "
        if m.input == 0
        else "The Jacobians at the convergence fixed point (g* = 0) are not finite: the update "
        "is normalised by a state that vanishes without gradients. At the fixed point of the "
        f"small constant gradient g* = {_f(m.input)} instead (5% quantile of the |g| seen; "
    )
    text = (
        f"**Momentum.** {where}"
        f"residual {_f(m.fixed_point_residual)}) the modes that carry most of the update are "
        f"{'; '.join(top)}; the memoryless direct term is {_f(m.direct)}. Impulse-response "
        f"r2 = {_f(m.impulse_r2)}: {trust}."
    )
    if r.heavy_ball is not None:
        hb = r.heavy_ball
        text += (
            f" For this quadratic family the optimal heavy-ball parameters are beta* = "
            f"{_f(hb.beta)}, alpha* = {_f(hb.alpha)}; the dominant mode is at beta = "
            f"{_f(m.betas[0])} ({_f(m.betas[0] - hb.beta)} from beta*), alpha = "
            f"{_f(m.alphas[0])} (ratio {_f(m.alphas[0] / hb.alpha)})."
        )
    return text


def _shape(r: Report) -> str:
    rows = [
        "| state | kind | jump at g = 0 | sign fraction | secant lr at median g "
        "| saturates at abs(g) (quantile seen) | linear r2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, s in r.shapes.items():
        sat = "never" if not np.isfinite(s.saturation) else (
            f"{_f(s.saturation)} ({100 * s.saturation_quantile:.0f}%)")  # fmt: skip
        rows.append(f"| {label} | {s.kind} | {_f(s.jump)} | {_f(s.sign_fraction)} | "
                    f"{_f(s.learning_rate)} | {sat} | {_f(s.linear_r2)} |")  # fmt: skip
    kinds = [s.kind for s in r.shapes.values()]
    common = max(set(kinds), key=kinds.count)
    meaning = {
        "sign": "a **sign-like** rule: it takes a step of fixed size however small the gradient "
        "(a jump at g = 0), so clipping and learning rates read as derivatives would be wrong",
        "saturating": "**clipping**: the update saturates inside the range of gradients seen",
        "linear": "linear in the gradient over the range seen: **no clipping**",
        "ascending": "not a descent step at the median gradient: **no clipping fit**",
        "mixed": "neither linear, sign-like nor saturating over the range seen",
    }[common]
    return (
        f"**Clipping and sign-likeness.** At most probed states ({kinds.count(common)} of "
        f"{len(kinds)}) the update function is {meaning}.\n\n" + "\n".join(rows)
    )


def _schedule(r: Report) -> str:
    s = r.schedule
    if not s.peak_learning_rate > 0:
        return (
            "**Schedule.** Driven by zero gradients from its initial state, the optimizer never "
            "takes a descent step at the median gradient: **no schedule** can be read."
        )
    shape = "no decay" if s.decay > 0.9 else f"decays to {_f(s.decay)} of the peak"
    warm = "no warm-up" if s.warmup_steps == 0 else f"a warm-up of {s.warmup_steps} steps"
    return (
        f"**Schedule.** Driven by zero gradients from its initial state (the paper's probe), "
        f"the effective learning rate at the median gradient peaks at "
        f"{_f(s.peak_learning_rate)} after {warm} and {shape} by step {len(s.learning_rates)}."
    )


def _adaptation(r: Report) -> str:
    a = r.adaptation
    if a is None:
        return "**Learning-rate adaptation.** The optimizer has no state: **no adaptation**."
    pairs = ", ".join(
        f"{_f(g)}: {_f(lr)}" for g, lr in zip(a.gradients, a.learning_rates, strict=True)
    )
    if math.isnan(a.exponent) or not a.r2 >= _TRUST_R2 or abs(a.exponent) < 0.1:
        verdict = (
            "no power law fits (r2 "
            f"{_f(a.r2)}, exponent {_f(a.exponent)}): **no RMS-style adaptation**"
        )
    else:
        verdict = (
            f"lr ~ |g*|^-{a.exponent:.2f} (r2 = {_f(a.r2)}; 1 is RMSProp/Adam normalisation): "
            "**learning-rate adaptation**"
        )
    return (
        f"**Learning-rate adaptation.** Effective learning rate at the fixed point of each "
        f"constant |g*| over the 5%-95% range of gradients seen ({pairs}): {verdict}."
    )


def _distillation(r: Report) -> str:
    d = r.distilled
    abl = ", ".join(f"without {k}: {_f(v.r2)}" for k, v in d.ablations.items()) or "none"
    text = (
        f"**Distillation.** The mechanisms found, fitted to the recorded gradient sequences, "
        f"compose into `{d.description}` (update r2 = {_f(d.r2)}; refitted {abl})."
    )
    if not r.objectives:
        return text + " No baseline was given, so no held-out advantage was measured."
    rows = ["| optimizer | held-out meta-objective | advantage kept |", "|---|---|---|"]
    for k, v in r.objectives.items():
        rows.append(f"| {k} | {_f(v)} | {_f(r.kept.get(k, float('nan')))} |")
    kept = r.kept.get("distilled", float("nan"))
    if math.isnan(kept):
        verdict = (
            "The original is not better than the baseline here, so there is no advantage to keep."
        )
    elif kept >= 0.5:
        verdict = f"The chain keeps {_f(kept)} of the original's advantage over the baseline."
    else:
        verdict = f"The chain keeps only {_f(kept)} of the advantage. " + missing(r)
    return text + "\n\n" + "\n".join(rows) + "\n\n" + verdict


def _coupling(r: Report) -> str:
    c = r.coupling
    if c is None:
        return ""
    head = (
        f"**Coupling.** Run as the {c.num_coordinates} entries of one tensor, the recorded "
        f"gradient sequences get updates that each sequence alone reproduces with r2 = "
        f"{_f(c.r2)}: "
    )
    if c.component_wise:
        return head + "the optimizer is **component-wise**, as the analyses above assume."
    return head + (
        "the optimizer is **not component-wise** (it reads whole tensors), so the "
        "one-coordinate analyses above, and the chain distilled from them, see it only as one "
        "coordinate alone sees it."
    )


_BEHAVIOURS = {
    "gradient magnitude": "takes steps that grow with the gradient's size",
    "sign agreement": "takes a larger step when the gradient keeps its sign",
    "agreement run": "keeps growing its step while the gradient keeps its sign (as Rprop does)",
    "magnitude trend": "responds to the gradient growing or shrinking",
}
_WHERE = {
    "first 10% of steps": "in the first tenth of training (a transient the chain's schedule "
    "and momenta do not follow)",
    "last half of steps": "in the second half of training",
    "largest 10% of |g|": "at the largest tenth of gradients (how it saturates or clips)",
    "smallest 25% of |g|": "at the smallest quarter of gradients (how it treats gradients "
    "near zero)",
    "sign flips": "at steps where the gradient changes sign (how it reverses)",
}
_CONCENTRATED = 1.5
"""A location with this many times its share of the entries is named as where the chain errs."""
_CANDIDATE_R2 = 0.2
"""A candidate behaviour that explains at least this much of the residual is named."""


def _where(locations: dict) -> str:
    ratios = {k: share / frac for k, (share, frac) in locations.items() if frac > 0}
    if not ratios:
        return ""
    top = max(ratios, key=ratios.get)
    if ratios[top] < _CONCENTRATED:
        return "The rest is spread evenly over steps and gradient sizes. "
    share, frac = locations[top]
    return (
        f"{100 * share:.0f}% of the squared residual lies {_WHERE[top]}, which holds "
        f"{100 * frac:.0f}% of the steps. "
    )


def missing(r: Report) -> str:
    """What the distilled chain does not capture, from its residual and its ablations."""
    d = r.distilled
    text = f"The chain reproduces r2 = {_f(d.r2)} of the recorded updates. "
    if d.unexplained:
        top = max(d.unexplained, key=d.unexplained.get)
        share = d.unexplained[top]
        if share >= _CANDIDATE_R2:
            text += (
                f"Of the rest, {_f(share)} is explained by *{top}*: the optimizer also "
                f"{_BEHAVIOURS[top]}, which the found mechanisms lack. That is the candidate "
                "novel mechanism. "
            )
        else:
            text += (
                f"No candidate behaviour explains much of the rest (best: *{top}*, "
                f"{_f(share)}), so what is missing lies outside the known mechanisms and the "
                "candidates tried. "
            )
    text += _where(d.residual_locations)
    if r.coupling is not None and not r.coupling.component_wise:
        text += (
            f"The optimizer is not component-wise (coupling r2 {_f(r.coupling.r2)}): on the "
            "task every coordinate's update also depends on the rest of its tensor, which a "
            "component-wise chain cannot follow. "
        )
    elif d.r2 > 0.9:
        text += (
            "The per-step match is close, so small differences compound over the trajectory "
            "into the lost advantage. "
        )
    ablations = {k: v for k, v in r.kept.items() if k.startswith("without ")}
    if ablations:
        worst = min(ablations, key=ablations.get)
        text += (
            f"Of the mechanisms found, {worst[8:]} matters most (kept without it: "
            f"{_f(ablations[worst])})."
        )
    return text.strip()
