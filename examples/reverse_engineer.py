"""Reverse-engineer an optimizer on its own task: a small absl main around the library.

Runs `interpret.reverse_engineer` (record the optimizer on instances of an ``optax_lopt``
task family, scale every probe from the gradients it saw, fit and distill its mechanisms)
and writes ``report.md``, ``report.json`` and the figures into ``--workdir``.

Examples::

  python examples/reverse_engineer.py --optimizer=pretrained:rosenbrock --task=rosenbrock
  python examples/reverse_engineer.py --optimizer=pretrained:two_moons --task=two_moons
  python examples/reverse_engineer.py --optimizer=optax:sgd:learning_rate=0.1,momentum=0.9 \\
      --task=linear_regression --baseline=optax:adam:learning_rate=0.1

``--optimizer`` is ``optax:NAME[:key=value,...]`` (a missing ``learning_rate`` defaults to
``--learning_rate``) or ``pretrained:NAME`` (``optax_lopt.pretrained(NAME)``). ``--baseline``
is ``auto`` (a shipped optimizer's best tuned baseline on its own family, from its metadata;
none otherwise), ``none`` or an ``optax:`` spec.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import jax
import optax
from absl import app, flags

import interpret
import optax_lopt
from optax_lopt import baselines, tasks

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


def _is_numeric(parameter: inspect.Parameter) -> bool:
    """Whether an optax factory's parameter takes a number (by its default or annotation)."""
    default = parameter.default
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return True
    annotation = str(parameter.annotation)
    return any(word in annotation for word in ("float", "int", "Scalar", "Numeric"))


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
    for key, value in kwargs.items():
        if isinstance(value, str) and key in params and _is_numeric(params[key]):
            raise ValueError(f"optimizer: {key} of optax.{name} expects a number, got {value!r}.")
    try:
        tx = factory(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"optimizer: optax.{name}(**{kwargs}) failed: {err}") from err
    if not isinstance(tx, optax.GradientTransformation):
        raise ValueError(
            f"optimizer: optax.{name} returned a {type(tx).__name__}, expected an "
            "optax.GradientTransformation."
        )
    return tx


# ----------------------------------------------------------------------------- tasks
def make_problem(task: str, num_steps: int | None = None) -> tuple[interpret.Problem, Any]:
    """The `interpret.Problem` of an ``optax_lopt`` task family, and its Hessian range.

    The Hessian range (for the heavy-ball comparison) is the eigenvalue range of
    ``linear_regression``; None for the other families.
    """
    family = tasks.family(task) if num_steps is None else tasks.family(task, num_steps=num_steps)

    def sample(key):
        k_task, k_init = jax.random.split(key)
        instance = family.sample(k_task)
        return instance.init(k_init), instance.data

    problem = interpret.Problem(
        sample, lambda p, d, k: family.loss_fn(d, p, k), family.num_steps, name=task
    )
    return problem, getattr(family, "eigenvalue_range", None)


def make_baseline(spec: str, optimizer: str, task: str) -> optax.GradientTransformation | None:
    """``--baseline``: auto (a shipped optimizer's tuned best on its family), none, or optax:."""
    if spec == "none":
        return None
    if spec != "auto":
        return parse_optimizer(spec)
    kind, _, name = optimizer.partition(":")
    if kind != "pretrained":
        return None
    for row in optax_lopt.pretrained_metadata(name).get("evaluation", []):
        if row.get("family") == task and not row.get("family_kwargs"):
            best = row["best_baseline"]
            return baselines.make(best, **row["baseline_hyperparams"][best])
    return None


def define_flags() -> None:
    """Defines the flags (only when run as a script: importing defines none)."""
    flags.DEFINE_string("optimizer", "optax:adam", "optax:NAME[:key=value,...] or pretrained:NAME.")
    flags.DEFINE_float("learning_rate", 0.01, "learning_rate for optax:NAME when not in the spec.")
    flags.DEFINE_enum("task", "rosenbrock", list(tasks.family_names()), "Task family to run on.")
    flags.DEFINE_string("workdir", "/tmp/reverse_engineer", "Output folder.")
    flags.DEFINE_integer("num_steps", None, "Horizon (default: the family's).")
    flags.DEFINE_string("baseline", "auto", "auto, none or optax:NAME[:key=value,...].")
    flags.DEFINE_integer("num_instances", 8, "Instances recorded.")
    flags.DEFINE_integer("coordinates", 16, "Coordinates recorded per instance.")
    flags.DEFINE_integer("num_held_out", 16, "Held-out instances for the advantage.")
    flags.DEFINE_bool("ablations", False, "Also measure each ablation's held-out advantage.")
    flags.DEFINE_integer("seed", 0, "Seed of the instances and probes.")


def main(argv):
    del argv
    start = time.perf_counter()
    tx = parse_optimizer(FLAGS.optimizer, FLAGS.learning_rate)
    problem, hessian_range = make_problem(FLAGS.task, FLAGS.num_steps)
    report = interpret.reverse_engineer(
        tx,
        problem,
        FLAGS.workdir,
        name=FLAGS.optimizer,
        baseline=make_baseline(FLAGS.baseline, FLAGS.optimizer, FLAGS.task),
        hessian_range=hessian_range,
        num_instances=FLAGS.num_instances,
        coordinates=FLAGS.coordinates,
        num_held_out=FLAGS.num_held_out,
        held_out_ablations=FLAGS.ablations,
        seed=FLAGS.seed,
    )
    seconds = time.perf_counter() - start
    print(f"{report.distilled.description}\nwrote the report to {FLAGS.workdir} in {seconds:.1f} s")


if __name__ == "__main__":
    define_flags()
    app.run(main)
