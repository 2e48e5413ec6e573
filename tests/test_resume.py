"""Checkpoint and resume: a resumed run, even one killed by SIGKILL, ends at the same theta.

This file doubles as the script the kill test runs in a subprocess:
``python tests/test_resume.py WORKDIR NUM_STEPS [--slow]``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import optax_lopt
from optax_lopt.meta import Checkpointer, MetaTrainer, read_metrics
from optax_lopt.meta.base import GradientEstimator

LOPT = optax_lopt.LearnableSGDM(learning_rate=0.01, momentum=0.9)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NoisyQuadraticEstimator(GradientEstimator):
    """A stateful, random estimator: each task drifts; the gradient depends on the drift.

    Resuming is only exact if the estimator state, the meta-optimizer state and the keys of
    every step are restored exactly.
    """

    num_tasks = 4

    def init(self, theta, key):
        del theta
        return {"drift": jax.random.normal(key, (self.num_tasks,)), "key": key}

    def meta_gradient(self, theta, state, key):
        drift = 0.9 * state["drift"] + 0.1 * jax.random.normal(key, (self.num_tasks,))
        target = jnp.mean(drift)
        diff = jax.tree.map(lambda t: t - target, theta)
        loss = 0.5 * sum(jnp.sum(d**2) for d in jax.tree.leaves(diff))
        new_key = jax.random.fold_in(state["key"], 1)
        return diff, {"drift": drift, "key": new_key}, {"meta_loss": loss}


def _trainer(workdir, seed=0, checkpoint_every=3, on_step=None):
    return MetaTrainer(
        NoisyQuadraticEstimator(),
        optax.adam(0.05),
        lopt=LOPT,
        workdir=workdir,
        seed=seed,
        checkpoint_every=checkpoint_every,
        on_step=on_step,
    )


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    full_trainer = _trainer(tmp_path / "full")
    full = full_trainer.train(8)
    _trainer(tmp_path / "split").train(5)  # checkpoints at 3 and at the end (5)
    assert Checkpointer(tmp_path / "split").all_steps() == (3, 5)
    resumed_trainer = _trainer(tmp_path / "split")
    resumed = resumed_trainer.train(8)
    chex.assert_trees_all_equal(resumed, full)
    chex.assert_trees_all_equal(resumed_trainer.state, full_trainer.state)
    steps = [r["step"] for r in read_metrics(tmp_path / "split")]
    assert steps == list(range(1, 9))
    losses_full = [r["meta_loss"] for r in read_metrics(tmp_path / "full")]
    losses_split = [r["meta_loss"] for r in read_metrics(tmp_path / "split")]
    assert losses_full == losses_split


def test_resume_drops_metrics_past_the_checkpoint_and_partial_lines(tmp_path):
    _trainer(tmp_path, checkpoint_every=2).train(4)
    # Simulate a run killed after logging steps 5 and 6 (no checkpoint) mid-way through a line.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "meta_loss": 1.0}) + "\n")
        f.write(json.dumps({"step": 6, "meta_loss": 1.0}) + "\n")
        f.write('{"step": 7, "meta_lo')
    _trainer(tmp_path, checkpoint_every=2).train(6)
    with open(tmp_path / "metrics.jsonl") as f:
        lines = f.read().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert all(json.loads(line)["meta_loss"] != 1.0 for line in lines)


def test_finished_run_is_not_rerun(tmp_path):
    calls = []
    theta = _trainer(tmp_path).train(4)
    again = _trainer(tmp_path, on_step=lambda s, r: calls.append(s)).train(4)
    assert calls == []
    chex.assert_trees_all_equal(theta, again)


def test_keeps_only_the_newest_checkpoints(tmp_path):
    trainer = MetaTrainer(
        NoisyQuadraticEstimator(),
        optax.sgd(0.1),
        lopt=LOPT,
        workdir=tmp_path,
        checkpoint_every=1,
        max_to_keep=2,
    )
    trainer.train(5)
    assert Checkpointer(tmp_path).all_steps() == (4, 5)


def test_resume_with_another_seed_is_refused(tmp_path):
    _trainer(tmp_path, seed=0).train(3)
    with pytest.raises(ValueError, match="seed"):
        _trainer(tmp_path, seed=1).train(4)


def test_checkpointer_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep"):
        Checkpointer(tmp_path, max_to_keep=0)
    with pytest.raises(FileNotFoundError, match="step"):
        Checkpointer(tmp_path).restore({"a": jax.ShapeDtypeStruct((), jnp.float32)})


# ------------------------------------------------------------------ the real kill


def _script(workdir, num_steps, slow, log):
    cmd = [sys.executable, os.path.abspath(__file__), str(workdir), str(num_steps)]
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    with open(log, "ab") as stderr:  # a file, not a pipe: a full pipe would block the run
        return subprocess.Popen(
            cmd + (["--slow"] if slow else []),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def _tail(log):
    with open(log, "rb") as f:
        return f.read().decode(errors="replace")[-2000:]


def _checkpoint_steps(workdir):
    # Finished orbax checkpoints are directories named by their step; temporary ones are not.
    path = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(path):
        return []
    return sorted(int(name) for name in os.listdir(path) if name.isdigit())


def test_sigkilled_run_resumes_to_the_same_theta(tmp_path):
    num_steps = 40
    killed_dir, full_dir = tmp_path / "killed", tmp_path / "full"
    log = tmp_path / "stderr.txt"
    full = _script(full_dir, num_steps, slow=False, log=log)
    victim = _script(killed_dir, num_steps, slow=True, log=log)
    resumed = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            records = read_metrics(killed_dir)
            if _checkpoint_steps(killed_dir) and records and records[-1]["step"] >= 12:
                break
            assert victim.poll() is None, _tail(log)
            time.sleep(0.05)
        else:
            pytest.fail("the run wrote no checkpoint within 60 s")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = time.time()
        assert victim.returncode == -signal.SIGKILL
        logged_before_kill = read_metrics(killed_dir)[-1]["step"]
        assert logged_before_kill < num_steps
        assert not os.path.exists(killed_dir / "final")
        checkpointed = _checkpoint_steps(killed_dir)[-1]

        resumed = _script(killed_dir, num_steps, slow=False, log=log)
        assert resumed.wait(timeout=120) == 0, _tail(log)
        assert full.wait(timeout=120) == 0, _tail(log)
    finally:
        for proc in (victim, full, resumed):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    _, theta_resumed = optax_lopt.load(killed_dir / "final")
    _, theta_full = optax_lopt.load(full_dir / "final")
    chex.assert_trees_all_equal(theta_resumed, theta_full)
    records = read_metrics(killed_dir)
    assert [r["step"] for r in records] == list(range(1, num_steps + 1))
    # It resumed: steps up to the checkpoint were logged before the kill, the rest after.
    assert all(r["time"] < killed_at for r in records[:checkpointed])
    assert all(r["time"] > killed_at for r in records[checkpointed:])
    losses = [r["meta_loss"] for r in read_metrics(killed_dir)]
    assert losses == [r["meta_loss"] for r in read_metrics(full_dir)]


if __name__ == "__main__":
    _workdir, _num_steps = sys.argv[1], int(sys.argv[2])
    _slow = "--slow" in sys.argv[3:]
    _trainer(
        _workdir, checkpoint_every=5, on_step=(lambda s, r: time.sleep(0.1)) if _slow else None
    ).train(_num_steps)


def test_metrics_writer_and_reader(tmp_path):
    from optax_lopt.meta import metrics_log

    assert read_metrics(tmp_path) == []
    with metrics_log.MetricsWriter(tmp_path) as writer:
        writer.write({"step": 1, "meta_loss": float("inf"), "values": [1.0, float("nan")]})
        with pytest.raises(ValueError, match="record"):
            writer.write({"meta_loss": 1.0})
    assert read_metrics(tmp_path) == [{"step": 1, "meta_loss": None, "values": [1.0, None]}]
    assert metrics_log.truncate_metrics(tmp_path, 0) == 0
    assert read_metrics(tmp_path) == []


# ------------------------------------------------------------------ fault injection


def _largest_file(directory):
    files = [os.path.join(d, f) for d, _, names in os.walk(directory) for f in names]
    return max(files, key=os.path.getsize)


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path):
    full = _trainer(tmp_path / "full").train(9)
    work = tmp_path / "cut"
    _trainer(work).train(6)  # checkpoints at 3 and 6
    # Checkpoint 6 cut mid-write: its largest array file loses its second half.
    victim = _largest_file(work / "checkpoints" / "6" / "state")
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) // 2)
    resumed = _trainer(work)
    theta = resumed.train(9)
    chex.assert_trees_all_equal(theta, full)
    records = read_metrics(work)
    assert [r["step"] for r in records] == list(range(1, 10))
    assert [r["meta_loss"] for r in records] == [
        r["meta_loss"] for r in read_metrics(tmp_path / "full")
    ]
    assert os.path.isdir(work / "unreadable_checkpoints" / "6")  # set aside, not deleted
    assert 9 in Checkpointer(work).all_steps()


def test_cut_last_metrics_line_is_recomputed_not_lost(tmp_path):
    full = _trainer(tmp_path / "full").train(8)
    work = tmp_path / "cut"
    _trainer(work).train(6)  # checkpoints at 3 and 6; the log ends with step 6
    path = work / "metrics.jsonl"
    text = path.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[-1]
    path.write_text(text[: len(text) - len(last) // 2 - 1])  # the line of step 6, cut
    assert [r["step"] for r in read_metrics(work)] == [1, 2, 3, 4, 5]
    theta = _trainer(work).train(8)
    chex.assert_trees_all_equal(theta, full)
    records = read_metrics(work)
    assert [r["step"] for r in records] == list(range(1, 9))
    assert [r["meta_loss"] for r in records] == [
        r["meta_loss"] for r in read_metrics(tmp_path / "full")
    ]


def test_resume_says_so_and_from_which_step(tmp_path):
    import io

    _trainer(tmp_path).train(3)
    stream = io.StringIO()
    MetaTrainer(
        NoisyQuadraticEstimator(),
        optax.adam(0.05),
        lopt=LOPT,
        workdir=tmp_path,
        checkpoint_every=3,
        progress_stream=stream,
    ).train(4)
    assert f"Resumed {tmp_path} from the checkpoint at step 3." in stream.getvalue()


def test_changed_recorded_setting_is_named_before_any_array_is_read(tmp_path):
    def make(config):
        return MetaTrainer(
            NoisyQuadraticEstimator(),
            optax.adam(0.05),
            lopt=LOPT,
            workdir=tmp_path,
            config=config,
        )

    make({"estimator": "pes", "architecture": "MLPLOpt"}).train(2)
    with pytest.raises(optax_lopt.meta.SettingMismatchError, match="estimator") as info:
        make({"estimator": "es", "architecture": "MLPLOpt"}).train(3)
    assert (info.value.name, info.value.recorded, info.value.given) == ("estimator", "pes", "es")
    assert len(str(info.value).splitlines()) == 1
    make({"estimator": "pes", "architecture": "MLPLOpt"}).train(3)  # same settings resume
