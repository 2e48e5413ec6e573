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
``--init_from`` starts from saved or shipped weights instead of a fresh init, for a second
phase of meta-training (its weights file's SHA-256 goes in the final metadata).
``--num_devices`` (or all devices with ``--num_devices=-1``) shards the task batch over a
1-D mesh; for several hosts run the same command in every process with ``--distributed``.
The settings that change the weights, their defaults and the builders are the library's
``optax_lopt.meta.MetaTrainingRecipe`` (``optax_lopt.meta.meta_training_recipe``), which
``benchmarks/meta_training.py`` shares; this script adds where and how to run.

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
from absl import app, logging

import optax_lopt
from optax_lopt.meta import (
    MetaTrainer,
    MetaTrainingRecipe,
    SettingMismatchError,
    read_metrics,
    task_mesh,
)
from optax_lopt.meta.config_flags import config_from_flags, define_flags, setting
from optax_lopt.meta.meta_training_recipe import (
    build_estimator,
    build_initial_theta,
    build_lopt,
    build_meta_optimizer,
)
from optax_lopt.meta.metrics_log import summarize
from optax_lopt.meta.outer_loop import FINAL_DIRNAME


@dataclasses.dataclass(frozen=True)
class Config(MetaTrainingRecipe):
    """Everything a meta-training run depends on; the flags are generated from it.

    The recipe's fields change the weights; these say where and how the run goes.
    """

    workdir: str = setting("/tmp/optax_lopt_meta_train", "Run directory.")
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


# Flags of `command` in the order they are written: the recipe's (every one that changes the
# weights), then checkpoint_every.
_COMMAND_FIELDS = tuple(f.name for f in dataclasses.fields(MetaTrainingRecipe)) + (
    "checkpoint_every",
)
# Settings a resume must share with the checkpoints (num_outer_steps may grow, unless it
# sets the cosine schedule's length).
_RESUME_FIELDS = tuple(
    n for n in _COMMAND_FIELDS if n not in ("num_outer_steps", "checkpoint_every")
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
        checkpoints' (a value outside a flag's choices is refused when ``config`` is made).
    """
    lopt = build_lopt(config)
    theta, init_sha256 = build_initial_theta(config, lopt)
    metadata = {"command": command(config), "meta_train_config": dataclasses.asdict(config)}
    if init_sha256 is not None:
        metadata["init_from_weights_sha256"] = init_sha256
    trainer = MetaTrainer(
        build_estimator(config, lopt),
        build_meta_optimizer(config),
        lopt=lopt,
        theta=theta,
        workdir=config.workdir,
        seed=config.seed,
        clip_norm=config.clip_norm or None,
        checkpoint_every=config.checkpoint_every,
        mesh=_mesh(config),
        num_tasks=config.num_tasks,
        progress=None if config.progress else False,
        config=_resume_settings(config),
        final_metadata=metadata,
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
