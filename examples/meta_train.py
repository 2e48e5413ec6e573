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
import sys
from typing import Any

import jax
import optax
from absl import app, logging

import optax_lopt
import optax_lopt.tasks
from optax_lopt import _checks
from optax_lopt.meta import (
    MetaTrainer,
    Mixture,
    SettingMismatchError,
    estimator,
    estimator_fields,
    estimator_names,
    read_metrics,
    task_mesh,
)
from optax_lopt.meta.config_flags import config_from_flags, define_flags, setting
from optax_lopt.meta.meta_losses import META_LOSS_NAMES
from optax_lopt.meta.metrics_log import summarize
from optax_lopt.meta.outer_loop import FINAL_DIRNAME


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a meta-training run depends on; the flags are generated from it."""

    task: str = setting(
        "linear_regression", "Task family name.", choices=optax_lopt.tasks.family_names()
    )
    task_mix: str | None = setting(
        None,
        "Train on a mix of families instead of --task: a preset name (one of "
        f"{', '.join(optax_lopt.tasks.task_mix_names())}) or a JSON list of components, e.g. "
        '\'[{"family": "quadratic", "reparameterize": true}, {"family": "rosenbrock"}]\'.',
    )
    architecture: str = setting(
        "MLPLOpt", "Learned optimizer class name.", choices=optax_lopt.architectures()
    )
    architecture_config: str = setting(
        "{}", "JSON dict of the architecture's constructor kwargs, e.g. '{\"hidden_size\": 64}'."
    )
    estimator: str = setting("pes", "Gradient estimator.", choices=estimator_names())
    num_outer_steps: int = setting(300, "Outer (meta) steps in total.")
    workdir: str = setting("/tmp/optax_lopt_meta_train", "Run directory.")
    seed: int = setting(0, "Random seed; the same seed gives the same weights.")
    num_tasks: int = setting(8, "Tasks trained in parallel per outer step.")
    truncation_length: int = setting(20, "Inner steps per outer step (truncated estimators).")
    horizon: int | None = setting(
        None, "Inner steps before a task restarts (default: the task's num_steps)."
    )
    sigma: float = setting(0.01, "Perturbation scale (ES-type estimators).")
    meta_loss: str = setting("mean_normalized", "Meta-loss.", choices=META_LOSS_NAMES)
    meta_learning_rate: float = setting(3e-3, "Adam meta learning rate.")
    meta_lr_decay: str = setting(
        "constant", "Meta learning-rate schedule.", choices=("constant", "cosine")
    )
    meta_lr_alpha: float = setting(
        0.05, "With --meta_lr_decay=cosine: final learning rate / initial."
    )
    clip_norm: float = setting(1.0, "Meta-gradient global-norm clip (0: none).")
    checkpoint_every: int = setting(50, "Outer steps per checkpoint.")
    num_devices: int = setting(
        0, "Shard the task batch over this many devices (0: no mesh, -1: all)."
    )
    progress: bool = setting(True, "Progress bar on stderr (only on a terminal).")
    distributed: bool = setting(False, "Call jax.distributed.initialize() first (multi-host runs).")
    coordinator_address: str | None = setting(
        None, "With --distributed: host:port of process 0 (else auto-detect)."
    )
    num_processes: int | None = setting(
        None, "With --distributed: number of processes (else auto-detect)."
    )
    process_id: int | None = setting(
        None, "With --distributed: this process's id (else auto-detect)."
    )


# Flags of `command` in the order they are written: every one that changes the weights.
_COMMAND_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(Config)
    if f.name
    not in {"workdir", "num_devices", "progress", "distributed", "coordinator_address"}
    | {"num_processes", "process_id"}
)
# Settings a resume must share with the checkpoints (num_outer_steps may grow, unless it
# sets the cosine schedule's length).
_RESUME_FIELDS = tuple(
    n for n in _COMMAND_FIELDS if n not in ("num_outer_steps", "checkpoint_every")
)


def check_flags(config: Config) -> None:
    """Refuses a value outside a flag's choices, naming the flag and listing the values."""
    for field in dataclasses.fields(Config):
        choices = field.metadata.get("choices")
        if choices is not None:
            _checks.one_of(f"--{field.name}", getattr(config, field.name), choices)


def build_lopt(config: Config) -> optax_lopt.LearnedOptimizer:
    """``optax_lopt.from_config`` of ``--architecture`` and ``--architecture_config``.

    Raises:
      ValueError: naming ``architecture_config``, for text that is not a JSON object or has
        arguments the architecture does not take.
    """
    try:
        kwargs = json.loads(config.architecture_config)
    except json.JSONDecodeError as err:
        kwargs = err
    if not isinstance(kwargs, dict):
        raise ValueError(
            "architecture_config: expected a JSON object of constructor arguments, got "
            f"{config.architecture_config!r}."
        )
    try:
        return optax_lopt.from_config(config.architecture, kwargs)
    except ValueError as err:
        raise ValueError(f"architecture_config: {err}") from err


def build_meta_optimizer(config: Config) -> optax.GradientTransformation:
    """Adam at ``meta_learning_rate``, constant or cosine-decayed over the run to ``alpha``."""
    _checks.one_of("meta_lr_decay", config.meta_lr_decay, ("constant", "cosine"))
    if config.meta_lr_decay == "constant":
        return optax.adam(config.meta_learning_rate)
    alpha = _checks.between("meta_lr_alpha", config.meta_lr_alpha, 0.0, 1.0)
    schedule = optax.cosine_decay_schedule(
        config.meta_learning_rate, config.num_outer_steps, alpha=alpha
    )
    return optax.adam(schedule)


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
    """The estimator named by ``config.estimator``, given only the fields it takes.

    With ``config.task_mix`` it is an ``optax_lopt.meta.Mixture`` of one such estimator per
    component of the mix (each with ``num_tasks`` tasks), weighted by the components'
    weights; ``config.task`` is then unused.

    Raises:
      ValueError: naming ``task_mix``, for a mix that ``optax_lopt.tasks.parse_mix`` rejects.
    """
    knobs = {
        "num_tasks": config.num_tasks,
        "truncation_length": config.truncation_length,
        "horizon": config.horizon,
        "sigma": config.sigma,
        "meta_loss": config.meta_loss,
    }
    fields = estimator_fields(config.estimator)
    knobs = {k: v for k, v in knobs.items() if k in fields}

    def make(family):
        return estimator(config.estimator, lopt, family, **knobs)

    if not config.task_mix:
        return make(optax_lopt.tasks.family(config.task))
    try:
        components = optax_lopt.tasks.parse_mix(config.task_mix)
    except ValueError as err:
        raise ValueError(f"task_mix: {err}") from err
    return Mixture.from_mix(components, make)


def _mesh(config: Config) -> Any:
    if config.num_devices and config.task_mix:
        raise ValueError(
            f"num_devices: expected 0 with --task_mix (a mixture is not sharded), got "
            f"{config.num_devices!r}."
        )
    if not config.num_devices:
        return None
    devices = jax.devices()
    return task_mesh(devices[: config.num_devices] if config.num_devices > 0 else devices)


def _resume_settings(config: Config) -> dict[str, Any]:
    names = _RESUME_FIELDS + (("num_outer_steps",) if config.meta_lr_decay == "cosine" else ())
    return {name: getattr(config, name) for name in names}


def run(config: Config) -> tuple[optax_lopt.LearnedOptimizer, Any, list[dict[str, Any]]]:
    """Meta-trains (or resumes) the run described by ``config``.

    Returns:
      ``(lopt, theta, records)``: the architecture, the final meta-parameters (also in
      ``<workdir>/final`` with the command that reproduces them) and ``metrics.jsonl``.

    Raises:
      ValueError: naming the flag, for a bad value or a resume whose flags differ from the
        checkpoints'.
    """
    check_flags(config)
    lopt = build_lopt(config)
    trainer = MetaTrainer(
        build_estimator(config, lopt),
        build_meta_optimizer(config),
        lopt=lopt,
        workdir=config.workdir,
        seed=config.seed,
        clip_norm=config.clip_norm or None,
        checkpoint_every=config.checkpoint_every,
        mesh=_mesh(config),
        num_tasks=config.num_tasks,
        progress=None if config.progress else False,
        config=_resume_settings(config),
        final_metadata={
            "command": command(config),
            "meta_train_config": dataclasses.asdict(config),
        },
    )
    try:
        theta = trainer.train(config.num_outer_steps)
    except SettingMismatchError as err:
        raise ValueError(
            f"--{err.name}: the checkpoints in {config.workdir} were written with "
            f"--{err.name}={err.recorded}, got --{err.name}={err.given}; rerun with the same "
            "flag or a new --workdir."
        ) from None
    return lopt, theta, read_metrics(config.workdir)


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
    config = config_from_flags(Config)
    if config.distributed:  # None arguments are detected from the cluster
        jax.distributed.initialize(
            config.coordinator_address, config.num_processes, config.process_id
        )
    try:
        _, _, records = run(config)
    except ValueError as err:
        sys.exit(f"error: {err}")
    if jax.process_index() == 0:
        summary = summarize(records)
        summary["final_weights"] = os.path.join(config.workdir, FINAL_DIRNAME)
        print(json.dumps(summary))


if __name__ == "__main__":
    define_flags(Config)
    app.run(main)
