"""The shared argument checks: accepted values come back normalised, the rest are named."""

import numpy as np
import pytest

from optax_lopt import _checks


@pytest.mark.parametrize("value", [1, 7, np.int64(4), np.int32(1)])
def test_positive_int_accepts_python_and_numpy_integers(value):
    out = _checks.positive_int("num_tasks", value)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [0, -3, True, 2.0, "4", None, np.float32(3)])
def test_positive_int_names_the_argument(value):
    with pytest.raises(ValueError, match=r"^num_tasks: expected a positive integer, got"):
        _checks.positive_int("num_tasks", value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -1, True, "0.9"])
def test_positive_refuses_non_finite_non_positive_and_non_numbers(value):
    with pytest.raises(ValueError, match=r"^lr: expected a finite positive number"):
        _checks.positive("lr", value)


def test_unit_interval_ends():
    assert _checks.in_unit_interval("beta", 0.0, closed_low=True) == 0.0
    with pytest.raises(ValueError, match=r"beta: expected a number in \(0, 1\)"):
        _checks.in_unit_interval("beta", 0.0)
    with pytest.raises(ValueError, match=r"beta: expected a number in \(0, 1\]"):
        _checks.in_unit_interval("beta", 1.5, closed_high=True)
    assert _checks.in_unit_interval("beta", np.float32(0.5)) == 0.5


def test_one_of_lists_the_choices():
    assert _checks.one_of("--task", "a", ["a", "b"]) == "a"
    with pytest.raises(ValueError, match=r"--task: expected one of 'a', 'b'; got 'c'"):
        _checks.one_of("--task", "c", ["a", "b"])


def test_integer_minimum_and_non_negative():
    assert _checks.integer("step", -2) == -2
    assert _checks.non_negative_int("step", np.int64(0)) == 0
    with pytest.raises(ValueError, match=r"step: expected an integer >= 3"):
        _checks.integer("step", 2, minimum=3)
    with pytest.raises(ValueError, match=r"step: expected a non-negative integer"):
        _checks.non_negative_int("step", -1)
    assert _checks.finite("x", -1e30) == -1e30


def test_path_accepts_str_and_pathlike_only(tmp_path):
    assert _checks.path("path", tmp_path) == str(tmp_path)
    assert _checks.path("path", "a/b") == "a/b"
    for bad in (None, 3, b"a", "", True):
        with pytest.raises(ValueError, match=r"^path: expected a non-empty str or os.PathLike"):
            _checks.path("path", bad)


def test_instance_names_the_argument_what_was_expected_and_what_came():
    assert _checks.instance("n", 3, int, "an int") == 3
    assert _checks.instance("n", 3, lambda v: v > 2, "more than 2") == 3
    with pytest.raises(ValueError, match=r"^n: expected an int, got str\.$"):
        _checks.instance("n", "3", int, "an int")
    with pytest.raises(TypeError, match=r"^n: expected more than 2, got int\.$"):
        _checks.instance("n", 1, lambda v: v > 2, "more than 2", error=TypeError)


def test_named_instance_checks():
    import optax

    import optax_lopt
    from optax_lopt import tasks

    lopt = optax_lopt.LearnableSGDM()
    assert _checks.learned_optimizer("lopt", lopt) is lopt
    with pytest.raises(TypeError, match=r"^lopt: expected a LearnedOptimizer, got dict"):
        _checks.learned_optimizer("lopt", {}, error=TypeError)
    with pytest.raises(ValueError, match=r"^base: expected a TaskFamily, got str"):
        _checks.task_family("base", "rosenbrock")
    sgd = optax.sgd(0.1)
    assert _checks.transforms("opts", {"sgd": sgd}) == {"sgd": sgd}
    with pytest.raises(ValueError, match=r"^opts\['a'\]: expected an optax.GradientTransformation"):
        _checks.transforms("opts", {"a": optax.sgd})
    assert _checks.task_family("family", tasks.Rosenbrock()) == tasks.Rosenbrock()


def test_optional_passes_none_through():
    assert _checks.optional(_checks.positive_int, "num_steps", None) is None
    assert _checks.optional(_checks.positive_int, "num_steps", np.int64(3)) == 3
    with pytest.raises(ValueError, match=r"^num_steps: expected a positive integer"):
        _checks.optional(_checks.positive_int, "num_steps", 0)


def test_value_range_and_positive_ints():
    assert _checks.value_range("r", [np.float32(0.5), 2]) == (0.5, 2.0)
    assert _checks.value_range("r", (-1, 1), positive=False) == (-1.0, 1.0)
    for bad in ((0, 1), (2, 1), (1, float("inf")), (1,), "ab"):
        with pytest.raises(ValueError, match=r"^r: expected a pair \(low, high\) of finite"):
            _checks.value_range("r", bad)
    assert _checks.positive_ints("w", [np.int64(4), 2]) == (4, 2)
    assert _checks.positive_ints("w", [], allow_empty=True) == ()
    for bad in ((), 3, "ab"):
        with pytest.raises(ValueError, match=r"^w: expected a non-empty tuple of positive"):
            _checks.positive_ints("w", bad)
    for bad in ((0,), (True,), (2.0,)):
        with pytest.raises(ValueError, match=r"^w\[0\]: expected a positive integer"):
            _checks.positive_ints("w", bad)


def test_tuples_of_numbers_name_the_entry_that_is_wrong():
    assert _checks.positives("t", [1, np.float32(2.5)]) == (1.0, 2.5)
    assert _checks.decay_rates("d", (0.9, 0.99)) == (0.9, 0.99)
    assert _checks.decay_rates("d", (), allow_empty=True) == ()
    with pytest.raises(ValueError, match=r"^t\[1\]: expected a finite positive number"):
        _checks.positives("t", (1.0, 0.0))
    with pytest.raises(ValueError, match=r"^d\[0\]: expected"):
        _checks.decay_rates("d", (1.0,))
    with pytest.raises(ValueError, match=r"^d: expected a non-empty tuple of decay rates"):
        _checks.decay_rates("d", ())
    with pytest.raises(ValueError, match=r"^t: expected a non-empty tuple of finite positive"):
        _checks.positives("t", 3.0)
