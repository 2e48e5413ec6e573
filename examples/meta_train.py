r"""Meta-train a learned optimizer on a task family; resumable, shardable over devices.

  python examples/meta_train.py --task=linear_regression --architecture=MLPLOpt \
      --estimator=pes --num_outer_steps=300 --workdir=/tmp/lopt_run

Writes ``<workdir>/metrics.jsonl`` (one JSON object per outer step), orbax checkpoints in
``<workdir>/checkpoints`` and the final weights in ``<workdir>/final`` (read them back with
``optax_lopt.load``). ``--task_mix=general`` (a preset of
``optax_lopt.tasks.task_mix_names()``, or a JSON list of components) trains on a weighted mix
of families instead of ``--task``, one estimator per family combined by
``optax_lopt.meta.Mixture``. Rerun the same command on the same workdir after an interruption
and it continues from the last checkpoint, ending at the same weights as an uninterrupted run.
``--num_devices`` (or all devices with ``--num_devices=-1``) shards the task batch over a
1-D mesh; for several hosts run the same command in every process with ``--distributed``.

References:
  Vicol, Metz, Sohl-Dickstein, "Unbiased Gradient Estimation in Unrolled Computation Graphs
  with Persistent Evolution Strategies", arXiv 2112.13835.
  Metz et al., "Understanding and correcting pathologies in the training of learned
  optimizers", arXiv 1810.10180.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from typing import Any

import jax
import numpy as np
import optax
from absl import app, flags, logging

import optax_lopt
import optax_lopt.tasks
from optax_lopt.meta import MetaTrainer, Mixture, estimator, read_metrics, task_mesh

_TASK = flags.DEFINE_string("task", "linear_regression", "Task family name.")
_TASK_MIX = flags.DEFINE_string(
    "task_mix",
    None,
    "Train on a mix of families instead of --task: a preset name (e.g. 'general', see "
    "optax_lopt.tasks.task_mix_names()) or a JSON list of components, e.g. "
    '\'[{"family": "quadratic", "reparameterize": true, "weight": 2}, {"family": "rosenbrock"}]\'.',
)
_ARCHITECTURE = flags.DEFINE_string("architecture", "MLPLOpt", "Learned optimizer class name.")
_ARCHITECTURE_CONFIG = flags.DEFINE_string(
    "architecture_config",
    "{}",
    "JSON dict of the architecture's constructor kwargs, e.g. '{\"hidden_size\": 64}'.",
)
_ESTIMATOR = flags.DEFINE_string("estimator", "pes", "Gradient estimator module name.")
_NUM_OUTER_STEPS = flags.DEFINE_integer("num_outer_steps", 300, "Outer (meta) steps in total.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/optax_lopt_meta_train", "Run directory.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives the same weights.")
_NUM_TASKS = flags.DEFINE_integer("num_tasks", 8, "Tasks trained in parallel per outer step.")
_TRUNCATION_LENGTH = flags.DEFINE_integer(
    "truncation_length", 20, "Inner steps per outer step (truncated estimators)."
)
_HORIZON = flags.DEFINE_integer(
    "horizon", None, "Inner steps before a task restarts (default: the task's num_steps)."
)
_SIGMA = flags.DEFINE_float("sigma", 0.01, "Perturbation scale (ES-type estimators).")
_META_LOSS = flags.DEFINE_string(
    "meta_loss",
    "mean_normalized",
    "mean_normalized | log_mean_normalized | final | validation.",
)
_META_LEARNING_RATE = flags.DEFINE_float("meta_learning_rate", 3e-3, "Adam meta learning rate.")
_META_LR_DECAY = flags.DEFINE_enum(
    "meta_lr_decay", "constant", ["constant", "cosine"], "Meta learning-rate schedule."
)
_META_LR_ALPHA = flags.DEFINE_float(
    "meta_lr_alpha", 0.05, "With --meta_lr_decay=cosine: final learning rate / initial."
)
_CLIP_NORM = flags.DEFINE_float("clip_norm", 1.0, "Meta-gradient global-norm clip (0: none).")
_CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", 50, "Outer steps per checkpoint.")
_NUM_DEVICES = flags.DEFINE_integer(
    "num_devices", 0, "Shard the task batch over this many devices (0: no mesh, -1: all)."
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (multi-host runs)."
)
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "With --distributed: host:port of process 0 (else auto-detect)."
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "With --distributed: number of processes (else auto-detect)."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "With --distributed: this process's id (else auto-detect)."
)
_PROGRESS = flags.DEFINE_bool("progress", True, "Progress bar on stderr (only on a terminal).")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a meta-training run depends on (the example's flags)."""

    task: str = "linear_regression"
    task_mix: str | None = None
    architecture: str = "MLPLOpt"
    architecture_config: str = "{}"
    estimator: str = "pes"
    num_outer_steps: int = 300
    workdir: str = "/tmp/optax_lopt_meta_train"
    seed: int = 0
    num_tasks: int = 8
    truncation_length: int = 20
    horizon: int | None = None
    sigma: float = 0.01
    meta_loss: str = "mean_normalized"
    meta_learning_rate: float = 3e-3
    meta_lr_decay: str = "constant"
    meta_lr_alpha: float = 0.05
    clip_norm: float = 1.0
    checkpoint_every: int = 50
    num_devices: int = 0
    progress: bool | None = None


# Flags of `command` in the order they are written; ``progress`` and ``num_devices`` only
# change how a run is shown or placed, not its weights, and are left out.
_COMMAND_FIELDS = (
    "task",
    "task_mix",
    "architecture",
    "architecture_config",
    "estimator",
    "num_outer_steps",
    "seed",
    "num_tasks",
    "truncation_length",
    "horizon",
    "sigma",
    "meta_loss",
    "meta_learning_rate",
    "meta_lr_decay",
    "meta_lr_alpha",
    "clip_norm",
    "checkpoint_every",
)


def build_lopt(config: Config) -> optax_lopt.LearnedOptimizer:
    """The architecture named by ``config.architecture`` with ``config.architecture_config``.

    Raises:
      ValueError: ``architecture_config`` is not a JSON object, or has arguments the
        architecture does not take.
    """
    try:
        kwargs = json.loads(config.architecture_config)
    except json.JSONDecodeError as err:
        raise ValueError(
            "architecture_config: expected a JSON object of constructor arguments, got "
            f"{config.architecture_config!r} ({err})."
        ) from err
    if not isinstance(kwargs, dict):
        raise ValueError(
            "architecture_config: expected a JSON object of constructor arguments, got "
            f"{config.architecture_config!r}."
        )
    cls = optax_lopt.architecture(config.architecture)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(
            f"architecture_config: arguments {sorted(kwargs)} do not fit "
            f"{config.architecture}: {err}"
        ) from err


def build_meta_optimizer(config: Config) -> optax.GradientTransformation:
    """Adam at ``meta_learning_rate``, constant or cosine-decayed over the run to ``alpha``."""
    if config.meta_lr_decay == "constant":
        return optax.adam(config.meta_learning_rate)
    if config.meta_lr_decay == "cosine":
        if not 0.0 <= config.meta_lr_alpha <= 1.0:
            raise ValueError(
                f"meta_lr_alpha: expected a number in [0, 1], got {config.meta_lr_alpha!r}."
            )
        schedule = optax.cosine_decay_schedule(
            config.meta_learning_rate, config.num_outer_steps, alpha=config.meta_lr_alpha
        )
        return optax.adam(schedule)
    raise ValueError(
        f"meta_lr_decay: expected 'constant' or 'cosine', got {config.meta_lr_decay!r}."
    )


def command(config: Config, script: str = "examples/meta_train.py") -> str:
    """The shell command that reproduces ``config``'s weights (every weight-relevant flag)."""
    parts = ["python", script]
    for name in _COMMAND_FIELDS:
        value = getattr(config, name)
        if value is None or (name == "task" and config.task_mix):
            continue  # the default, or a task that --task_mix overrides
        parts.append(f"--{name}={shlex.quote(str(value))}")
    parts.append(f"--workdir={shlex.quote(config.workdir)}")
    return " ".join(parts)


def build_estimator(config: Config, lopt: optax_lopt.LearnedOptimizer) -> Any:
    """The estimator named by ``config.estimator``, given only the knobs it takes.

    With ``config.task_mix`` it is an ``optax_lopt.meta.Mixture`` of one such estimator per
    component of the mix (each with ``num_tasks`` tasks), weighted by the components'
    weights; ``config.task`` is then unused.

    Raises:
      ValueError: naming ``task_mix``, for a mix that ``optax_lopt.tasks.parse_mix`` rejects.
    """
    if config.task_mix:
        try:
            components = optax_lopt.tasks.parse_mix(config.task_mix)
        except ValueError as err:
            raise ValueError(f"task_mix: {err}") from err
        return Mixture(
            [_single_estimator(config, lopt, c.build()) for c in components],
            weights=[c.weight for c in components],
            names=[c.name for c in components],
        )
    return _single_estimator(config, lopt, optax_lopt.tasks.family(config.task))


def _single_estimator(config: Config, lopt: optax_lopt.LearnedOptimizer, family: Any) -> Any:
    knobs = {
        "num_tasks": config.num_tasks,
        "truncation_length": config.truncation_length,
        "horizon": config.horizon,
        "sigma": config.sigma,
        "meta_loss": config.meta_loss,
    }
    cls = type(estimator(config.estimator, lopt, family))
    accepted = {f.name for f in dataclasses.fields(cls)}
    return estimator(
        config.estimator, lopt, family, **{k: v for k, v in knobs.items() if k in accepted}
    )


def run(config: Config) -> tuple[optax_lopt.LearnedOptimizer, Any, list[dict[str, Any]]]:
    """Meta-trains (or resumes) the run described by ``config``.

    Args:
      config: the run's configuration.

    Returns:
      ``(lopt, theta, records)``: the architecture, the final meta-parameters and the
      records of ``metrics.jsonl``.
    """
    lopt = build_lopt(config)
    est = build_estimator(config, lopt)
    mesh = None
    if config.num_devices and config.task_mix:
        raise ValueError(
            f"num_devices: expected 0 with --task_mix (a mixture is not sharded), got "
            f"{config.num_devices!r}."
        )
    if config.num_devices:
        devices = jax.devices()
        if config.num_devices > 0:
            devices = devices[: config.num_devices]
        mesh = task_mesh(devices)
    trainer = MetaTrainer(
        est,
        build_meta_optimizer(config),
        lopt=lopt,
        workdir=config.workdir,
        seed=config.seed,
        clip_norm=config.clip_norm or None,
        checkpoint_every=config.checkpoint_every,
        mesh=mesh,
        num_tasks=config.num_tasks,
        progress=config.progress,
    )
    theta = trainer.train(config.num_outer_steps)
    records = read_metrics(config.workdir)
    if jax.process_index() == 0:
        # Rewrite the final weights with what reproduces them: the command and the config.
        optax_lopt.save(
            os.path.join(config.workdir, "final"),
            lopt,
            jax.device_get(theta),
            metadata={
                "command": command(config),
                "meta_train_config": dataclasses.asdict(config),
                "step": config.num_outer_steps,
                "seed": config.seed,
                "summary": summarize(records),
            },
        )
    return lopt, theta, records


def summarize(records: list[dict[str, Any]], window: int = 20) -> dict[str, Any]:
    """Mean meta-loss over the first and last ``window`` outer steps, and the cut between."""
    losses = np.asarray([r["meta_loss"] for r in records if r["meta_loss"] is not None], np.float64)
    if losses.size == 0:
        return {"steps": len(records)}
    window = max(1, min(window, losses.size // 2 or 1))
    first, last = float(losses[:window].mean()), float(losses[-window:].mean())
    return {
        "steps": len(records),
        "meta_loss_first": first,
        "meta_loss_last": last,
        "reduction": 1.0 - last / first if first else None,
        "num_skipped": records[-1].get("num_skipped", 0),
    }


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
    if _DISTRIBUTED.value:
        # None arguments are detected from the cluster (SLURM, Open MPI, Kubernetes, TPU).
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR_ADDRESS.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    config = Config(
        task=_TASK.value,
        task_mix=_TASK_MIX.value,
        architecture=_ARCHITECTURE.value,
        architecture_config=_ARCHITECTURE_CONFIG.value,
        estimator=_ESTIMATOR.value,
        num_outer_steps=_NUM_OUTER_STEPS.value,
        workdir=_WORKDIR.value,
        seed=_SEED.value,
        num_tasks=_NUM_TASKS.value,
        truncation_length=_TRUNCATION_LENGTH.value,
        horizon=_HORIZON.value,
        sigma=_SIGMA.value,
        meta_loss=_META_LOSS.value,
        meta_learning_rate=_META_LEARNING_RATE.value,
        meta_lr_decay=_META_LR_DECAY.value,
        meta_lr_alpha=_META_LR_ALPHA.value,
        clip_norm=_CLIP_NORM.value,
        checkpoint_every=_CHECKPOINT_EVERY.value,
        num_devices=_NUM_DEVICES.value,
        progress=None if _PROGRESS.value else False,
    )
    _, _, records = run(config)
    if jax.process_index() == 0:
        summary = summarize(records)
        summary["final_weights"] = os.path.join(config.workdir, "final")
        print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
