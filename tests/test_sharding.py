"""Sharding the task batch over a 1-D device mesh gives the 1-device meta-gradient.

The multi-device checks run in a subprocess with 4 host CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before jax is imported);
this file is that subprocess's script: ``python tests/test_sharding.py WORKDIR``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lopt
from optax_lopt.meta import MetaTrainer, task_mesh, task_shardings
from optax_lopt.meta.base import GradientEstimator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOPT = optax_lopt.LearnableSGDM(learning_rate=0.05, momentum=0.5)
LOPT_PES = optax_lopt.LearnableAdam(learning_rate=0.01)
DIM = 3


class QuadraticBPTTEstimator(GradientEstimator):
    """Truncated backprop through ``unroll`` inner steps of random quadratics, vmapped.

    Each task is ``f(x) = 0.5 sum(a * x^2)``; the persistent state holds every task's
    curvature, parameters and inner optimizer state, all with a leading ``num_tasks`` axis.
    """

    def __init__(self, num_tasks=8, unroll=4):
        self.num_tasks = num_tasks
        self.unroll = unroll

    def init(self, theta, key):
        ka, kx = jax.random.split(key)
        curv = jax.random.uniform(ka, (self.num_tasks, DIM), minval=0.5, maxval=2.0)
        x = jax.random.normal(kx, (self.num_tasks, DIM))
        inner = jax.vmap(LOPT.transform(theta).init)(x)
        return {"curv": curv, "x": x, "inner": inner}

    def meta_gradient(self, theta, state, key):
        del key

        def unroll_one(theta, curv, x, inner):
            tx = LOPT.transform(theta)

            def body(carry, _):
                x, inner = carry
                loss, g = jax.value_and_grad(lambda x: 0.5 * jnp.sum(curv * x**2))(x)
                u, inner = tx.update(g, inner, x, value=loss)
                return (x + u, inner), loss

            (x, inner), losses = jax.lax.scan(body, (x, inner), None, length=self.unroll)
            return jnp.mean(losses), (x, inner)

        def meta_loss(theta):
            losses, (x, inner) = jax.vmap(unroll_one, in_axes=(None, 0, 0, 0))(
                theta, state["curv"], state["x"], state["inner"]
            )
            return jnp.mean(losses), (x, inner)

        (loss, (x, inner)), grad = jax.value_and_grad(meta_loss, has_aux=True)(theta)
        new_state = {"curv": state["curv"], "x": jax.lax.stop_gradient(x), "inner": inner}
        return grad, new_state, {"meta_loss": loss}


def _trainer(mesh, workdir=None):
    return MetaTrainer(
        QuadraticBPTTEstimator(), optax.sgd(1.0), lopt=LOPT, mesh=mesh, workdir=workdir
    )


def _meta_gradient(trainer):
    state0 = trainer.init_state()
    state1, metrics = trainer.step(state0)
    grad = jax.tree.map(lambda a, b: np.asarray(a - b), state0.theta, state1.theta)  # sgd(1.0)
    return grad, state1, float(metrics["meta_loss"])


def _main(workdir):
    devices = jax.devices()
    assert len(devices) == 4, devices
    grad_none, _, loss_none = _meta_gradient(_trainer(None))
    grad_one, _, loss_one = _meta_gradient(_trainer(task_mesh(devices[:1])))
    four = _trainer(task_mesh(devices), os.path.join(workdir, "full"))
    grad_four, state_four, loss_four = _meta_gradient(four)
    x = state_four.estimator_state["x"]
    # Checkpoint and resume on the 4-device mesh (one trainer, so one compilation): the
    # second train() call restores the sharded state written by the first.
    full = four.train(4)
    four.workdir = os.path.join(workdir, "split")
    four.train(2)
    resumed = four.train(4)
    resumed_x = four.state.estimator_state["x"]
    result = {
        "grad_none": jax.tree.map(float, grad_none),
        "grad_one": jax.tree.map(float, grad_one),
        "grad_four": jax.tree.map(float, grad_four),
        "losses": [loss_none, loss_one, loss_four],
        "x_devices": len(x.sharding.device_set),
        "x_shard_shape": list(x.addressable_shards[0].data.shape),
        "theta_replicated": state_four.theta["momentum_logit"].sharding.is_fully_replicated,
        "resumed_x_devices": len(resumed_x.sharding.device_set),
        "resume_max_diff": max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True)
        ),
    }
    print(json.dumps(result))


def test_four_devices_match_one_device(tmp_path):
    env = dict(
        os.environ,
        PYTHONPATH=REPO,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
    )
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), str(tmp_path / "run")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("log_learning_rate", "momentum_logit"):
        ref = result["grad_none"][name]
        assert ref != 0.0
        np.testing.assert_allclose(result["grad_one"][name], ref, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(result["grad_four"][name], ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result["losses"], result["losses"][0], rtol=1e-6)
    assert result["x_devices"] == 4
    assert result["x_shard_shape"] == [2, DIM]  # 8 tasks over 4 devices
    assert result["theta_replicated"]
    assert result["resumed_x_devices"] == 4
    assert result["resume_max_diff"] < 1e-6


def _pes_main():
    # The real PES estimator: one and four devices take the same two meta-steps.
    from optax_lopt.meta import estimator
    from optax_lopt.tasks import family

    fam = family("linear_regression", num_steps=20)
    est = estimator("pes", LOPT_PES, fam, num_tasks=8, truncation_length=5, sigma=0.01)
    result = {}
    for name, devices in (("one", jax.devices()[:1]), ("four", jax.devices())):
        trainer = MetaTrainer(est, optax.sgd(1.0), lopt=LOPT_PES, mesh=task_mesh(devices))
        state1, _ = trainer.step(trainer.init_state())
        state2, _ = trainer.step(state1)
        result[name] = jax.tree.map(lambda a, b: float(a - b), state1.theta, state2.theta)
    print(json.dumps(result))


@pytest.mark.slow
def test_pes_four_devices_match_one_device():
    env = dict(
        os.environ,
        PYTHONPATH=REPO,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
    )
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--pes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, ref in result["one"].items():
        assert ref != 0.0
        np.testing.assert_allclose(result["four"][name], ref, rtol=1e-4, atol=1e-7)


def test_task_shardings_split_only_task_leaves():
    mesh = task_mesh()
    tree = {"tasks": jnp.zeros((4, 3)), "scalar": jnp.zeros(()), "other": jnp.zeros((5,))}
    shardings = task_shardings(tree, mesh, num_tasks=4)
    assert shardings["tasks"].spec == jax.sharding.PartitionSpec("tasks")
    assert shardings["scalar"].spec == jax.sharding.PartitionSpec()
    assert shardings["other"].spec == jax.sharding.PartitionSpec()


def test_sharding_rejects_bad_arguments():
    mesh = task_mesh()
    with pytest.raises(ValueError, match="num_tasks"):
        task_shardings({}, mesh, num_tasks=0)
    other = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("batch",))
    with pytest.raises(ValueError, match="mesh"):
        task_shardings({}, other, num_tasks=1)
    with pytest.raises(ValueError, match="devices"):
        task_mesh([])
    estimator = QuadraticBPTTEstimator()
    del estimator.num_tasks
    with pytest.raises(ValueError, match="num_tasks"):
        MetaTrainer(estimator, optax.sgd(0.1), lopt=LOPT, mesh=mesh)


if __name__ == "__main__":
    if sys.argv[1] == "--pes":
        _pes_main()
    else:
        _main(sys.argv[1])
