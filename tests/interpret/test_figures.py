import jax.numpy as jnp
import numpy as np
import optax
import pytest

import interpret


def _check_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 2_000 < len(data) < 200_000


def test_all_figures_are_written(tmp_path):
    tx = optax.adam(0.1, b1=0.8, b2=0.9)
    fp = interpret.fixed_points(tx, [-1.0, -0.3, 0.3, 1.0])
    r = interpret.rollout(tx, lambda p: jnp.sum((p - 2.0) ** 2), jnp.zeros(3), 50, coordinates=3)
    lins = [interpret.linearize(tx, h, g) for h, g in zip(fp.states, fp.inputs, strict=True)]
    paths = [
        interpret.plot_update_functions(tx, fp.states, tmp_path / "uf.png"),
        interpret.plot_trajectories(r.states, tmp_path / "traj.png", fixed_points=fp),
        interpret.plot_eigenvalues(lins, tmp_path / "eig.png"),
        interpret.plot_schedule(interpret.fit_schedule(tx, 30, num_samples=2), tmp_path / "s.png"),
        interpret.plot_lr_adaptation(
            interpret.lr_adaptation(tx, [0.1, 1.0], max_recovery_steps=50), tmp_path / "a.png"
        ),
    ]
    for p in paths:
        _check_png(p)


def test_trajectories_of_one_and_zero_dimensional_states(tmp_path):
    fp = interpret.fixed_points(optax.sgd(0.1, momentum=0.9), [1.0])
    _check_png(
        interpret.plot_trajectories(np.ones((10, 2, 1)), tmp_path / "one.png", fixed_points=fp)
    )
    _check_png(interpret.plot_trajectories(np.ones((10, 2, 0)), tmp_path / "zero.png"))
    with pytest.raises(ValueError, match="states"):
        interpret.plot_trajectories(np.ones(10), tmp_path / "bad.png")
