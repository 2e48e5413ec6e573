"""interpret._checks: every check accepts good values and names the argument on bad ones.

Also the two rules about the package's shape that the checks module exists for: no interpret
module reaches into another module's private (underscore) names, and importing interpret
never imports optax_lopt.
"""

import ast
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import interpret
from interpret import _checks

PACKAGE = pathlib.Path(interpret.__file__).parent


def _raises_naming(name, check, *args, **kwargs):
    with pytest.raises(ValueError, match=rf"^{name}: expected .+, got "):
        check(name, *args, **kwargs)


@pytest.mark.parametrize(
    "value, expected",
    [(1, True), (np.int64(3), True), (-2, True), (True, False), (np.bool_(1), False),
     (2.0, False), ("3", False)],
)  # fmt: skip
def test_is_int(value, expected):
    assert _checks.is_int(value) is expected


def test_is_float():
    assert _checks.is_float(jnp.zeros(3))
    assert _checks.is_float(np.float16(1))
    assert not _checks.is_float(jnp.zeros((), jnp.int32))
    assert not _checks.is_float(np.bool_(True))


def test_gradient_transformation():
    _checks.gradient_transformation(optax.sgd(0.1))
    _checks.gradient_transformation(optax.adam(0.1), "baseline")
    with pytest.raises(ValueError, match=r"^baseline: expected an optax\.GradientTransformation"):
        _checks.gradient_transformation("adam", "baseline")
    with pytest.raises(ValueError, match=r"^tx: .*got function"):
        _checks.gradient_transformation(optax.sgd)


def test_function_and_instance():
    assert _checks.function("loss_fn", len) is len
    _raises_naming("loss_fn", _checks.function, 3)
    got = _checks.instance("stats", 1.5, float, "a float")
    assert got == 1.5
    with pytest.raises(ValueError, match=r"^stats: expected a float, got int\.$"):
        _checks.instance("stats", 1, float, "a float")


def test_integers():
    assert _checks.positive_int("num_steps", np.int32(7)) == 7
    assert type(_checks.positive_int("num_steps", np.int32(7))) is int
    assert _checks.non_negative_int("step", 0) == 0
    assert _checks.integer("num_steps", 3, minimum=3) == 3
    for bad in (0, -1, 2.0, True, "2", None):
        _raises_naming("num_steps", _checks.positive_int, bad)
    for bad in (-1, 1.0, False):
        _raises_naming("step", _checks.non_negative_int, bad)
    with pytest.raises(ValueError, match=r"^num_steps: expected an integer >= 3, got 2\.$"):
        _checks.integer("num_steps", 2, minimum=3)
    with pytest.raises(ValueError, match=r"expected a positive integer, got 0\."):
        _checks.positive_int("num_steps", 0)
    with pytest.raises(ValueError, match=r"expected a non-negative integer, got -1\."):
        _checks.non_negative_int("step", -1)


def test_positive_numbers():
    assert _checks.positive("gradient_scale", 1e-3) == 1e-3
    assert _checks.positive("gradient_scale", np.float32(2)) == 2.0
    assert _checks.optional_positive("input_step", None) is None
    assert _checks.optional_positive("input_step", 4) == 4.0
    for bad in (0.0, -1.0, np.inf, np.nan):
        _raises_naming("gradient_scale", _checks.positive, bad)
        _raises_naming("input_step", _checks.optional_positive, bad)


def test_in_unit_interval():
    assert _checks.in_unit_interval("decay", 0.9) == 0.9
    assert _checks.in_unit_interval("decay", np.float64(1e-6)) == 1e-6
    for bad in (0.0, 1.0, -0.5, 1.5, np.nan):
        _raises_naming("decay", _checks.in_unit_interval, bad)
    with pytest.raises(ValueError, match=r"^decay: expected a number in \(0, 1\), got 1\.0\.$"):
        _checks.in_unit_interval("decay", 1.0)


def test_vector():
    np.testing.assert_array_equal(_checks.vector("inputs", 2), [2.0])
    got = _checks.vector("inputs", jnp.arange(3, dtype=jnp.int32))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [0.0, 1.0, 2.0])
    assert _checks.vector("states", [[1.0, 2.0]], ndim=2).shape == (1, 2)
    for bad in ([], [[1.0]], [1.0, np.nan], [np.inf]):
        _raises_naming("inputs", _checks.vector, bad)
    _raises_naming("states", _checks.vector, [1.0], ndim=2)


def test_magnitudes():
    np.testing.assert_array_equal(_checks.magnitudes("gradients", [1e-3, 2.0]), [1e-3, 2.0])
    for bad in ([0.0, 1.0], [-1.0], [np.nan]):
        _raises_naming("gradients", _checks.magnitudes, bad)
    _checks.magnitudes("gradients", [1.0], minimum_size=1)
    with pytest.raises(ValueError, match=r"^gradients: expected at least 2 positive magnitudes"):
        _checks.magnitudes("gradients", [1.0], minimum_size=2)


def test_coordinates():
    params = {"a": jnp.zeros((2, 3)), "b": jnp.zeros(4)}  # flat: a -> 0..5, b -> 6..9
    assert _checks.coordinates(params, [0, 5, 6, 9]) == [(0, 0, 0), (5, 0, 5), (6, 1, 0), (9, 1, 3)]
    assert [c for c, _, _ in _checks.coordinates(params, 4)] == [0, 3, 6, 9]
    assert len(_checks.coordinates(params, None)) == 8
    assert len(_checks.coordinates(params, 100)) == 10  # at most every entry once
    for bad in (0, [], [10], [-1]):
        with pytest.raises(ValueError, match="^coordinates: expected"):
            _checks.coordinates(params, bad)
    with pytest.raises(ValueError, match="^params: expected"):
        _checks.coordinates({}, 2)


def _private_attribute_uses(path):
    """``(line, "alias._name")`` wherever a module reads an underscore name of another module."""
    tree = ast.parse(path.read_text())
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "interpret":
            aliases |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name.startswith("interpret")}
    attributes = [
        (node.lineno, f"{node.value.id}.{node.attr}")
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in aliases
        and node.attr.startswith("_")
    ]
    imported = [  # from interpret.<module> import _name (interpret._checks itself is allowed)
        (node.lineno, f"{node.module}.{a.name}")
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("interpret.")
        for a in node.names
        if a.name.startswith("_")
    ]
    return sorted(attributes + imported)


def test_no_module_reads_another_modules_private_names():
    found = {
        p.name: uses for p in sorted(PACKAGE.glob("*.py")) if (uses := _private_attribute_uses(p))
    }
    assert not found, f"cross-module private names (move them to interpret/_checks.py): {found}"


def test_private_use_is_detected(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from interpret import system as _system\n_system._hidden(1)\n")
    assert _private_attribute_uses(bad) == [(2, "_system._hidden")]
    bad.write_text("from interpret.system import _hidden, visible\n")
    assert _private_attribute_uses(bad) == [(1, "interpret.system._hidden")]


def test_import_interpret_never_imports_optax_lopt():
    code = "import sys, interpret; sys.exit(any(m.startswith('optax_lopt') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    sources = {p.name for p in PACKAGE.rglob("*.py") if "optax_lopt" in _imports(p)}
    assert not sources, f"interpret modules that import optax_lopt: {sorted(sources)}"


def _imports(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names
