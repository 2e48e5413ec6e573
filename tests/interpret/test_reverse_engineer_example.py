import importlib.util
import json
import os

import optax
import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "reverse_engineer.py")


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("reverse_engineer", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_optimizer(example):
    tx = example.parse_optimizer("optax:sgd:learning_rate=0.1,momentum=0.9,nesterov=false")
    assert isinstance(tx, optax.GradientTransformation)
    example.parse_optimizer("optax:adam")  # learning_rate from the default
    for bad in ["adam", "optax:no_such_optimizer", "optax:sgd:momentum", "pretrained:"]:
        with pytest.raises(ValueError, match="optimizer"):
            example.parse_optimizer(bad)


def test_pretrained_gives_a_clear_error_or_a_transform(example):
    import optax_lopt

    if hasattr(optax_lopt, "pretrained"):
        pytest.skip("optax_lopt.pretrained exists; covered by its own tests")
    with pytest.raises(ValueError, match="optax_lopt.pretrained"):
        example.parse_optimizer("pretrained:rosenbrock")


def test_report_of_momentum_sgd_on_rosenbrock(example, tmp_path):
    tx = example.parse_optimizer("optax:sgd:learning_rate=0.001,momentum=0.8")
    loss_fn, params = example.make_task("rosenbrock", 0)
    result = example.analyse(tx, loss_fn, params, str(tmp_path), num_steps=40)
    assert abs(result["momentum"]["beta"] - 0.8) < 0.005
    assert result["clipping"]["shape"] == "none"
    text = example.report_markdown("optax:sgd", "rosenbrock", result)
    for word in ["Momentum", "clipping", "Schedule", "adaptation", "Distillation"]:
        assert word in text
    json.dumps(example._jsonable(result), allow_nan=False)
    for name in result["figures"].values():
        assert os.path.getsize(tmp_path / name) > 2000


def test_report_says_when_there_is_no_power_law(example, tmp_path):
    tx = optax.sgd(-0.001, momentum=0.5)  # ascends: -du/dg < 0 at every fixed point
    loss_fn, params = example.make_task("quadratic", 0)
    result = example.analyse(tx, loss_fn, params, str(tmp_path), num_steps=20)
    text = example.report_markdown("ascent", "quadratic", result)
    adaptation = text.split("**Learning-rate adaptation.**")[1].split("**Distillation.**")[0]
    assert "**no power law**" in adaptation and "-0.001" in adaptation
    assert "nan" not in adaptation.lower()
    clipping = text.split("**Gradient clipping.**")[1].split("**")[0]
    assert result["clipping"]["learning_rate"] < 0
    assert "not a descent step" in clipping and "nan" not in clipping.lower()
    assert "**no clipping fit**" in text
