"""examples/reverse_engineer.py: its parsing, and the report on each shipped optimizer."""

import json
import os

import optax
import pytest

import interpret
import optax_lopt
from tests._examples import load_example


@pytest.fixture(scope="module")
def example():
    return load_example("reverse_engineer")


def test_parse_optimizer(example):
    tx = example.parse_optimizer("optax:sgd:learning_rate=0.1,momentum=0.9,nesterov=false")
    assert isinstance(tx, optax.GradientTransformation)
    example.parse_optimizer("optax:adam")  # learning_rate from the default
    bad_specs = [
        "adam",
        "optax:no_such_optimizer",
        "optax:sgd:momentum",
        "pretrained:",
        "optax:sgd:learning_rate=abc",
        "optax:sgd:momentum=fast",
        "optax:sgd:no_such_argument=1",
    ]
    for bad in bad_specs:
        with pytest.raises(ValueError, match="optimizer"):
            example.parse_optimizer(bad)


def test_make_baseline(example):
    assert example.make_baseline("none", "pretrained:rosenbrock", "rosenbrock") is None
    assert example.make_baseline("auto", "optax:adam", "rosenbrock") is None
    tuned = example.make_baseline("auto", "pretrained:rosenbrock", "rosenbrock")
    assert isinstance(tuned, optax.GradientTransformation)
    # The shipped optimizer has no tuned baseline on another family.
    assert example.make_baseline("auto", "pretrained:rosenbrock", "quadratic") is None


def test_make_problem_reads_the_family(example):
    problem, hessian_range = example.make_problem("linear_regression", num_steps=12)
    assert problem.num_steps == 12 and problem.name == "linear_regression"
    assert hessian_range is not None and hessian_range[0] < hessian_range[1]
    assert example.make_problem("two_moons")[1] is None


def test_report_of_momentum_sgd_finds_its_momentum(example, tmp_path):
    tx = optax.sgd(0.1, momentum=0.8)
    problem, _ = example.make_problem("linear_regression", num_steps=40)
    report = interpret.reverse_engineer(
        tx, problem, str(tmp_path), num_instances=2, coordinates=2, num_held_out=2
    )
    assert report.modes.betas[0] == pytest.approx(0.8, abs=5e-3)
    assert report.modes.impulse_r2 > 0.99
    assert report.shapes["initial state"].kind == "linear"
    assert "momentum" in report.distilled.mechanisms
    assert "clipping" not in report.distilled.mechanisms


@pytest.mark.slow
@pytest.mark.parametrize("name", ["linear_regression", "rosenbrock", "two_moons", "general"])
def test_report_on_each_shipped_optimizer(example, tmp_path, name):
    task = "digits_mlp" if name == "general" else name
    tx = example.parse_optimizer(f"pretrained:{name}")
    problem, hessian_range = example.make_problem(task, num_steps=16)
    report = interpret.reverse_engineer(
        tx,
        problem,
        str(tmp_path),
        name=name,
        baseline=example.make_baseline("auto", f"pretrained:{name}", task) or optax.adam(1e-3),
        hessian_range=hessian_range,
        num_instances=2,
        coordinates=2,
        num_held_out=2,
    )
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["name"] == name and summary["problem"] == task
    assert set(summary["kept"]) >= {"original", "baseline", "distilled"}
    assert summary["kept"]["original"] in (1.0, "nan")
    text = (tmp_path / "report.md").read_text()
    assert name in text and "optax" not in text.split("\n")[0].lower()
    for figure in ["update_functions", "trajectories", "schedule"]:
        assert os.path.getsize(tmp_path / f"{figure}.png") > 2000
    # The probes are scaled from the recorded gradients, not from 1.
    assert report.stats.low < report.stats.scale < report.stats.high
    assert optax_lopt.pretrained_metadata(name)
