"""Reverse-engineer an optimizer: fixed points, linearisation, fitted mechanisms, figures.

Writes ``report.json`` (every fitted number), PNG figures and ``report.md`` (the figures and a
paragraph per mechanism) into ``--workdir``.

Examples::

  python examples/reverse_engineer.py --optimizer=optax:adam --workdir=/tmp/adam
  python examples/reverse_engineer.py \\
      --optimizer=optax:sgd:learning_rate=0.1,momentum=0.9 --task=rosenbrock --workdir=/tmp/sgdm
  python examples/reverse_engineer.py --optimizer=pretrained:rosenbrock --workdir=/tmp/lopt

``--optimizer`` is ``optax:NAME[:key=value,...]`` (any optax optimizer factory; a missing
``learning_rate`` defaults to ``--learning_rate``) or ``pretrained:NAME``, which loads
``optax_lopt.pretrained(NAME)``. ``--task`` is ``quadratic`` (a random ill-conditioned 10-d
quadratic) or ``rosenbrock`` (the 2-D Rosenbrock function from (-1.5, 2)).

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import interpret

FLAGS = flags.FLAGS


# ----------------------------------------------------------------------------- optimizers
def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_optimizer(spec: str, default_learning_rate: float = 0.01) -> optax.GradientTransformation:
    """Builds a transformation from ``optax:NAME[:k=v,...]`` or ``pretrained:NAME``.

    Args:
      spec: the specification.
      default_learning_rate: used when an optax factory takes ``learning_rate`` and the spec
        does not give it.

    Returns:
      An optax transformation.

    Raises:
      ValueError: for a malformed spec, an unknown optax name or a missing pretrained loader.
    """
    kind, _, rest = spec.partition(":")
    if kind == "pretrained":
        if not rest:
            raise ValueError(f"optimizer: expected pretrained:NAME, got {spec!r}.")
        import optax_lopt

        loader = getattr(optax_lopt, "pretrained", None)
        if loader is None:
            raise ValueError(
                f"optimizer: {spec!r} needs optax_lopt.pretrained, which this installation "
                "of optax_lopt does not provide; use optax:NAME instead."
            )
        return loader(rest)
    if kind != "optax" or not rest:
        raise ValueError(
            f"optimizer: expected optax:NAME[:key=value,...] or pretrained:NAME, got {spec!r}."
        )
    name, _, args = rest.partition(":")
    factory = getattr(optax, name, None)
    if not callable(factory):
        raise ValueError(f"optimizer: optax has no optimizer named {name!r} (from {spec!r}).")
    kwargs = {}
    for item in filter(None, args.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"optimizer: expected key=value, got {item!r} in {spec!r}.")
        kwargs[key.strip()] = _parse_value(value.strip())
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if "learning_rate" in params and "learning_rate" not in kwargs:
        kwargs["learning_rate"] = default_learning_rate
    tx = factory(**kwargs)
    if not isinstance(tx, optax.GradientTransformation):
        raise ValueError(
            f"optimizer: optax.{name} returned a {type(tx).__name__}, expected an "
            "optax.GradientTransformation."
        )
    return tx


# ----------------------------------------------------------------------------- tasks
def make_task(name: str, seed: int) -> tuple[Callable[[Any], jax.Array], jax.Array]:
    """Returns ``(loss_fn, initial_params)`` of a small self-contained task."""
    if name == "quadratic":
        key_q, key_x = jax.random.split(jax.random.key(seed))
        q, _ = jnp.linalg.qr(jax.random.normal(key_q, (10, 10)))
        curvature = jnp.logspace(-2, 0, 10)
        hessian = (q * curvature) @ q.T
        x0 = jax.random.normal(key_x, (10,))
        return (lambda x: 0.5 * x @ hessian @ x), x0
    if name == "rosenbrock":
        return (lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2), jnp.array([-1.5, 2.0])
    raise ValueError(f"task: expected 'quadratic' or 'rosenbrock', got {name!r}.")


# ----------------------------------------------------------------------------- analysis
def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray) or isinstance(x, jax.Array):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, (complex, np.complexfloating)):
        return {"re": _jsonable(float(x.real)), "im": _jsonable(float(x.imag))}
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else str(x)
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    return x


def analyse(
    tx: optax.GradientTransformation,
    loss_fn: Callable[[Any], jax.Array],
    params: jax.Array,
    workdir: str,
    *,
    num_steps: int = 200,
    gradient_scale: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Runs every analysis of `interpret` on ``tx``, writes the figures, returns the numbers."""
    os.makedirs(workdir, exist_ok=True)
    timings: dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - t0, 3)
        return out

    system = interpret.scalar_system(tx)
    run = timed("rollout", interpret.rollout, tx, loss_fn, params, num_steps, coordinates=10)
    inputs = gradient_scale * np.linspace(-1.0, 1.0, 21)
    fps = timed("fixed_points", interpret.fixed_points, system, inputs)
    chosen = [0.0, 0.1, 0.5, 1.0]
    lins = []
    for g in chosen:
        h = timed(f"fixed_point_{g}", interpret.fixed_points, system, [g * gradient_scale])
        lins.append(interpret.linearize(system, h.states[0], g * gradient_scale))
    momentum = timed(
        "fit_momentum", interpret.fit_momentum, system, gradient_scale=gradient_scale, seed=seed
    )
    clipping = timed("fit_clipping", interpret.fit_clipping, system)
    schedule = timed(
        "fit_schedule",
        interpret.fit_schedule,
        system,
        num_steps,
        gradient_scale=gradient_scale,
        seed=seed,
    )
    adaptation = timed(
        "lr_adaptation",
        interpret.lr_adaptation,
        system,
        gradient_scale * np.logspace(-2, 0, 5),
        max_recovery_steps=2000,
    )
    distilled = timed(
        "distill",
        interpret.distill,
        system,
        clipping=clipping,
        schedule=schedule,
        adaptation=adaptation,
    )
    kept = timed(
        "advantage_kept", interpret.advantage_kept, tx, distilled.tx, loss_fn, params, num_steps
    )

    # Faithfulness of each linearisation: run it on the task as an optimizer.
    original_final = float(run.losses[-1])
    linear_final = []
    for lin in lins:
        lin_tx = interpret.linearized_optimizer(lin)
        losses = interpret.rollout(lin_tx, loss_fn, params, num_steps, coordinates=1).losses
        linear_final.append(float(losses[-1]))

    figures = {
        "update_functions": interpret.plot_update_functions(
            system,
            fps.states[:: max(1, len(inputs) // 5)],
            os.path.join(workdir, "update_functions.png"),
            gradients=np.linspace(-3, 3, 201) * gradient_scale,
            labels=[f"h*(g*={g:.2g})" for g in inputs[:: max(1, len(inputs) // 5)]],
        ),
        "trajectories": interpret.plot_trajectories(
            run.states, os.path.join(workdir, "trajectories.png"), fixed_points=fps
        ),
        "eigenvalues": interpret.plot_eigenvalues(lins, os.path.join(workdir, "eigenvalues.png")),
        "schedule": interpret.plot_schedule(schedule, os.path.join(workdir, "schedule.png")),
        "lr_adaptation": interpret.plot_lr_adaptation(
            adaptation, os.path.join(workdir, "lr_adaptation.png")
        ),
    }
    figures = {k: os.path.basename(v) for k, v in figures.items()}
    return {
        "state_size": system.size,
        "task": {
            "losses_first_last": [float(run.losses[0]), original_final],
            "num_steps": num_steps,
        },
        "fixed_points": {
            "inputs": fps.inputs,
            "states": fps.states,
            "residuals": fps.residuals,
            "converged": fps.converged,
            "num_distinct": [len(d) for d in fps.distinct],
        },
        "linearizations": [
            {
                "input": lin.input,
                "eigenvalues": lin.eigenvalues,
                "timescales": lin.timescales,
                "alphas": lin.alphas,
                "learning_rate": lin.learning_rate,
            }
            for lin in lins
        ],
        "linearized_optimizer": {
            "inputs": [lin.input for lin in lins],
            "final_losses": linear_final,
            "original_final_loss": original_final,
        },
        "momentum": {
            "beta": momentum.beta,
            "learning_rate": momentum.learning_rate,
            "r2": momentum.r2,
        },
        "clipping": {
            "threshold": clipping.threshold,
            "learning_rate": clipping.learning_rate,
            "shape": clipping.shape,
            "r2": clipping.r2,
            "saturation": clipping.saturation,
        },
        "schedule": {
            "learning_rates": schedule.learning_rates,
            "peak_learning_rate": schedule.peak_learning_rate,
            "warmup_steps": schedule.warmup_steps,
            "decay": schedule.decay,
        },
        "lr_adaptation": {
            "gradients": adaptation.gradients,
            "learning_rates": adaptation.learning_rates,
            "exponent": adaptation.exponent,
            "r2": adaptation.r2,
            "recovery_time": adaptation.recovery_time,
        },
        "distilled": {
            "description": distilled.description,
            "original_loss": kept.original_loss,
            "distilled_loss": kept.distilled_loss,
            "adam_loss": kept.adam_loss,
            "adam_learning_rate": kept.adam_learning_rate,
            "advantage_kept": kept.fraction,
        },
        "figures": figures,
        "timings_s": timings,
    }


def _fmt(x: Any) -> str:
    return f"{float(x):.4g}" if isinstance(x, (float, np.floating, np.integer)) else str(x)


def report_markdown(spec: str, task: str, r: dict[str, Any]) -> str:
    """The report: figures and one paragraph per mechanism."""
    m, c, s, a, d = r["momentum"], r["clipping"], r["schedule"], r["lr_adaptation"], r["distilled"]
    lin0 = r["linearizations"][0]
    eig = np.asarray(lin0["eigenvalues"])
    top = ", ".join(f"{abs(e):.4g}" for e in eig[:4]) or "none (stateless)"
    ts = ", ".join(_fmt(t) for t in np.asarray(lin0["timescales"])[:4]) or "none"
    fp = r["fixed_points"]
    lin_inputs = ", ".join(_fmt(x) for x in r["linearized_optimizer"]["inputs"])
    lin_losses = ", ".join(_fmt(x) for x in r["linearized_optimizer"]["final_losses"])
    if math.isnan(c["saturation"]):
        clip_text = (
            f"The slope -du/dg near g = 0 is {_fmt(c['learning_rate'])}, not a descent step "
            "(or the update is not finite), so there is no linear regime to saturate: "
            "**no clipping fit**."
        )
    elif math.isinf(c["threshold"]):
        clip_text = (
            f"The update function stays linear up to the largest gradient probed "
            f"(|u| / (lr |g|) = {_fmt(c['saturation'])} there): **no clipping**."
        )
    else:
        clip_text = (
            f"The update saturates: threshold **{_fmt(c['threshold'])}** ({c['shape']} shape, "
            f"r2 = {_fmt(c['r2'])}), slope {_fmt(c['learning_rate'])} near g = 0."
        )
    kept = d["advantage_kept"]
    kept_text = (
        f"it keeps {_fmt(100 * kept)}% of the original's advantage over tuned Adam"
        if not math.isnan(kept)
        else "the original is not better than tuned Adam on this task, so there is no "
        "advantage to keep"
    )
    if math.isnan(a["exponent"]):
        lrs = ", ".join(_fmt(x) for x in a["learning_rates"])
        adaptation_text = (
            f"At the fixed points of |g*| = {', '.join(_fmt(x) for x in a['gradients'])} the "
            f"effective learning rate -du/dg is {lrs}: positive at fewer than two of them, so "
            "**no power law** lr ~ |g*|^-p is fitted (where it is negative, the update grows "
            "with g)."
        )
    else:
        adaptation_text = (
            f"At the fixed point of each constant |g*| the effective learning rate follows "
            f"lr ~ |g*|^-{a['exponent']:.3f} (r2 = {_fmt(a['r2'])}; exponent 1 is RMSProp / "
            "Adam normalisation, 0 is none)."
        )
    return f"""# Reverse-engineering report

Optimizer `{spec}`, task `{task}`, {r["task"]["num_steps"]} steps (loss
{_fmt(r["task"]["losses_first_last"][0])} -> {_fmt(r["task"]["losses_first_last"][1])}).
One-coordinate state size: {r["state_size"]}. All numbers are in `report.json`.

![update functions](update_functions.png) ![trajectories](trajectories.png)
![eigenvalues](eigenvalues.png) ![schedule](schedule.png)
![learning-rate adaptation](lr_adaptation.png)

**Fixed points and linearisation.** For {len(fp["inputs"])} constant gradients g* the
optimizer has {sum(fp["converged"])} converged fixed points (largest residual
{_fmt(max(fp["residuals"]))}); they form the curve in the trajectory figure. Around the fixed
point of g* = 0 the Jacobian's largest eigenvalue moduli are {top}, i.e. time-scales of {ts}
steps: each mode is a momentum term with beta = lambda. Run on the task as optimizers, the
linearisations around the fixed points of g* = {lin_inputs} end at losses {lin_losses}, against
{_fmt(r["linearized_optimizer"]["original_final_loss"])} for the original (a linearisation is
faithful only near its fixed point; Adam's at g* = 0 divides by epsilon and diverges).

**Momentum.** Matching the updates under random gradients with `optax.sgd(lr, momentum=beta)`
gives beta = **{_fmt(m["beta"])}** and lr = **{_fmt(m["learning_rate"])}** (r2 =
{_fmt(m["r2"])}; 1 means the optimizer is exactly momentum SGD).

**Gradient clipping.** {clip_text}

**Schedule.** The effective learning rate -du/dg over {r["task"]["num_steps"]} steps peaks at
{_fmt(s["peak_learning_rate"])} after a warm-up of {s["warmup_steps"]} steps and ends at
{_fmt(s["decay"])} of the peak.

**Learning-rate adaptation.** {adaptation_text} After a burst of large gradients it takes
{_fmt(a["recovery_time"])} steps to regain half of its learning rate.

**Distillation.** The fitted mechanisms as an optax chain: `{d["description"]}`. On the task
its final loss is {_fmt(d["distilled_loss"])}, the original's {_fmt(d["original_loss"])}, tuned
Adam's {_fmt(d["adam_loss"])} (lr {_fmt(d["adam_learning_rate"])}); {kept_text}.
"""


def define_flags() -> None:
    """Defines the command-line flags (only when run as a script, so that importing
    this module in tests or notebooks defines no global absl flags)."""
    flags.DEFINE_string("optimizer", "optax:adam", "optax:NAME[:key=value,...] or pretrained:NAME.")
    flags.DEFINE_float(
        "learning_rate", 0.01, "learning_rate for optax:NAME when the spec does not set one."
    )
    flags.DEFINE_enum("task", "quadratic", ["quadratic", "rosenbrock"], "Task to run.")
    flags.DEFINE_string("workdir", "/tmp/reverse_engineer", "Output folder.")
    flags.DEFINE_integer("num_steps", 200, "Steps on the task and of the schedule fit.")
    flags.DEFINE_float(
        "gradient_scale", 1.0, "Scale of the probing gradients and of the fixed-point inputs g*."
    )
    flags.DEFINE_integer("seed", 0, "Seed of the task and probes.")


def main(argv):
    del argv
    tx = parse_optimizer(FLAGS.optimizer, FLAGS.learning_rate)
    loss_fn, params = make_task(FLAGS.task, FLAGS.seed)
    t0 = time.perf_counter()
    result = analyse(
        tx,
        loss_fn,
        params,
        FLAGS.workdir,
        num_steps=FLAGS.num_steps,
        gradient_scale=FLAGS.gradient_scale,
        seed=FLAGS.seed,
    )
    result["optimizer"] = FLAGS.optimizer
    result["task_name"] = FLAGS.task
    result["total_s"] = round(time.perf_counter() - t0, 2)
    with open(os.path.join(FLAGS.workdir, "report.json"), "w") as f:
        json.dump(_jsonable(result), f, indent=1)
    with open(os.path.join(FLAGS.workdir, "report.md"), "w") as f:
        f.write(report_markdown(FLAGS.optimizer, FLAGS.task, result))
    print(f"wrote report.json, report.md and 5 figures to {FLAGS.workdir} in {result['total_s']} s")


if __name__ == "__main__":
    define_flags()
    app.run(main)
