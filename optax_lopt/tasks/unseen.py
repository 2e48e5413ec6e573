"""Problems no shipped optimizer was trained on: scikit-learn's bundled data and hard synthetics.

These families are the held-out evaluation suite of ``pretrained("general")``
(``benchmarks/general.py``): every one differs from the families of
``optax_lopt.tasks.GENERAL_MIX`` in data, model or dimension. Real data come from
scikit-learn's bundled data sets (``sklearn.datasets.load_*``, installed with the package,
nothing downloaded); the synthetic problems have a known optimum and a stated difficulty.

- `BundledClassifier`: logistic / softmax regression or a ReLU MLP on breast_cancer, wine, iris
  or digits.
- `BundledRegressor`: a ReLU MLP (or linear) regressor on diabetes.
- `DigitsAutoencoder`: an MLP autoencoder of the digits images.
- `IllConditionedQuadratic`: a rotated quadratic whose Hessian has exactly the given condition
  number.
- `ChainedRosenbrock`: the ``dim``-dimensional (chained) Rosenbrock function.

The data-set families draw, per instance, a bootstrap resample of a fixed training split (so
instances differ in their data, not only in their initial weights) and initialise the output
layer to zero, so every instance starts from the same prediction (uniform class probabilities,
or the training mean) and the meta-objective ``mean_t f_t / f_0`` has the same denominator on
every instance.

References:
  Rosenbrock, "An automatic method for finding the greatest or least value of a function",
  The Computer Journal (1960) (the chained form: Dixon and Mills, JOTA 1994).
  Pedregosa et al., "Scikit-learn: Machine Learning in Python", JMLR 12 (2011) (the bundled
  data sets).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_lopt import _checks
from optax_lopt.tasks import _digits
from optax_lopt.tasks.base import TaskFamily, set_checked

CLASSIFICATION_DATASETS = {"breast_cancer": 2, "digits": 10, "iris": 3, "wine": 3}
"""Bundled classification data sets `BundledClassifier` takes, with their class counts."""

REGRESSION_DATASETS = ("diabetes",)
"""Bundled regression data sets `BundledRegressor` takes."""

VALIDATION_FRACTION = 0.2


def _load(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    loaded = getattr(datasets, f"load_{dataset}")()
    return np.asarray(loaded.data, np.float64), np.asarray(loaded.target)


@functools.cache
def bundled_split(dataset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_x, train_y, valid_x, valid_y)`` of a bundled data set, standardised.

    The rows are shuffled once with numpy seed 0 and the last 20% held out. Features are
    standardised with the training split's mean and standard deviation (a constant feature,
    such as a digits border pixel, is only centred); a regression target is standardised the
    same way, so predicting zero gives a training loss near 1. Labels are int32, the rest
    float32.

    Args:
      dataset: a key of `CLASSIFICATION_DATASETS` or an entry of `REGRESSION_DATASETS`.

    Raises:
      ValueError: ``dataset`` is not one of them (the message lists them).
    """
    names = sorted(CLASSIFICATION_DATASETS) + list(REGRESSION_DATASETS)
    _checks.one_of("dataset", dataset, names)
    x, y = _load(dataset)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    cut = len(y) - int(round(VALIDATION_FRACTION * len(y)))
    mean, std = x[:cut].mean(0), x[:cut].std(0)
    x = ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
    if dataset in REGRESSION_DATASETS:
        y = ((y - y[:cut].mean()) / y[:cut].std()).astype(np.float32)
    else:
        y = y.astype(np.int32)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def _optional_batch_size(family: Any) -> None:
    if family.batch_size is not None:
        set_checked(family, "batch_size")


class _MLP(nn.Module):
    """ReLU MLP whose output layer starts at zero (flax defaults elsewhere)."""

    hidden: tuple[int, ...]
    outputs: int

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.outputs, kernel_init=nn.initializers.zeros_init())(x)


class _Bootstrapped(TaskFamily):
    """Shared data handling: a bootstrap resample per instance, minibatches or full batch.

    Subclasses are frozen dataclasses with a ``batch_size`` field (None: full batch) and
    provide ``_split`` (train and validation arrays), ``_net`` and ``_sample_loss``.
    """

    batch_size: int | None

    @property
    def _split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    @property
    def _net(self) -> nn.Module:
        raise NotImplementedError

    def _sample_loss(self, outputs: jax.Array, targets: jax.Array) -> jax.Array:
        raise NotImplementedError

    def sample_data(self, key: chex.PRNGKey) -> dict[str, jax.Array]:
        num_train = self._split[0].shape[0]
        return {"index": jax.random.randint(key, (num_train,), 0, num_train)}

    def init_params(self, data, key):
        return self._net.init(key, jnp.zeros((1, self._split[0].shape[1]), jnp.float32))["params"]

    def _mean_loss(self, params, inputs, targets):
        outputs = self._net.apply({"params": params}, inputs)
        return jnp.mean(self._sample_loss(outputs, targets))

    def loss_fn(self, data, params, key):
        train_x, train_y, _, _ = self._split
        index = data["index"]
        if self.batch_size is not None:
            index = index[jax.random.randint(key, (self.batch_size,), 0, index.shape[0])]
        return self._mean_loss(params, jnp.asarray(train_x)[index], jnp.asarray(train_y)[index])

    def validation_loss_fn(self, data, params, key):
        del data, key
        _, _, valid_x, valid_y = self._split
        return self._mean_loss(params, jnp.asarray(valid_x), jnp.asarray(valid_y))


@dataclasses.dataclass(frozen=True)
class BundledClassifier(_Bootstrapped):
    """Softmax classification of a scikit-learn bundled data set by a ReLU MLP.

    With ``hidden=()`` this is logistic (two classes) or softmax regression, a convex problem;
    with hidden widths, a ReLU MLP. Data: `bundled_split` (standardised features, fixed 80/20
    split). Distribution per instance: a bootstrap resample of the training split (as many
    rows, drawn with replacement) and the hidden layers' initial weights from the
    ``Task.init`` key (flax defaults); the output layer starts at zero, so every instance's
    initial loss is exactly ``log(num_classes)``. Loss: mean softmax cross-entropy over the
    whole resample (``batch_size=None``) or over ``batch_size`` of its rows drawn with
    replacement from the loss key. Validation loss: on the whole validation split.

    Args:
      dataset: "breast_cancer" (569 rows, 30 features, 2 classes), "wine" (178, 13, 3),
        "iris" (150, 4, 3) or "digits" (1797, 64, 10).
      hidden: hidden-layer widths (empty: a linear model).
      batch_size: minibatch size, or None for full batch.
      num_steps: default inner horizon.
    """

    dataset: str = "breast_cancer"
    hidden: tuple[int, ...] = ()
    batch_size: int | None = None
    num_steps: int = 200

    def __post_init__(self) -> None:
        set_checked(self, "dataset", _checks.one_of, choices=sorted(CLASSIFICATION_DATASETS))
        set_checked(self, "hidden", _checks.positive_ints, allow_empty=True)  # (): no hidden layer
        _optional_batch_size(self)
        set_checked(self, "num_steps")

    @property
    def num_classes(self) -> int:
        """Number of classes of ``dataset``."""
        return CLASSIFICATION_DATASETS[self.dataset]

    @property
    def _split(self):
        return bundled_split(self.dataset)

    @property
    def _net(self) -> _MLP:
        return _MLP(self.hidden, self.num_classes)

    def _sample_loss(self, outputs, targets):
        return optax.softmax_cross_entropy_with_integer_labels(outputs, targets)


@dataclasses.dataclass(frozen=True)
class BundledRegressor(_Bootstrapped):
    """Least-squares regression of a scikit-learn bundled data set by a ReLU MLP.

    Data: `bundled_split` (standardised features and target, fixed 80/20 split).
    Distribution per instance, initialisation and batching as `BundledClassifier`; the output
    layer starts at zero, so the initial loss is the mean squared standardised target of the
    resample (near 1). Loss: mean squared error. Validation loss: on the validation split.

    Args:
      dataset: "diabetes" (442 rows, 10 features).
      hidden: hidden-layer widths (empty: linear least squares).
      batch_size: minibatch size, or None for full batch.
      num_steps: default inner horizon.
    """

    dataset: str = "diabetes"
    hidden: tuple[int, ...] = (32, 32)
    batch_size: int | None = None
    num_steps: int = 200

    def __post_init__(self) -> None:
        set_checked(self, "dataset", _checks.one_of, choices=REGRESSION_DATASETS)
        set_checked(self, "hidden", _checks.positive_ints, allow_empty=True)  # (): no hidden layer
        _optional_batch_size(self)
        set_checked(self, "num_steps")

    @property
    def _split(self):
        return bundled_split(self.dataset)

    @property
    def _net(self) -> _MLP:
        return _MLP(self.hidden, 1)

    def _sample_loss(self, outputs, targets):
        return jnp.square(outputs[..., 0] - targets)


class _Autoencoder(nn.Module):
    hidden: tuple[int, ...]
    code_size: int
    outputs: int

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        x = nn.Dense(self.code_size)(x)
        return _MLP(tuple(reversed(self.hidden)), self.outputs)(x)


@dataclasses.dataclass(frozen=True)
class DigitsAutoencoder(_Bootstrapped):
    """An MLP autoencoder of scikit-learn's 8x8 digits (64 pixels in [0, 1]).

    Encoder: ReLU layers of widths ``hidden``, then a linear code of ``code_size`` units;
    decoder: the mirrored ReLU layers, then a linear layer back to 64 pixels that starts at
    zero (so the initial reconstruction is blank and the initial loss the mean squared pixel).
    Data: the digits split of `DigitsMLP` (pixels scaled to [0, 1], not standardised, 80/20);
    per instance a bootstrap resample of the training images and the initial weights from the
    ``Task.init`` key. Loss: mean squared reconstruction error over a minibatch of
    ``batch_size`` images (None: the whole resample); validation loss on the validation split.

    Args:
      hidden: encoder widths (the decoder mirrors them).
      code_size: width of the bottleneck.
      batch_size: minibatch size, or None for full batch.
      num_steps: default inner horizon.
    """

    hidden: tuple[int, ...] = (32,)
    code_size: int = 8
    batch_size: int | None = 128
    num_steps: int = 200

    def __post_init__(self) -> None:
        set_checked(self, "hidden", _checks.positive_ints, allow_empty=True)  # (): no hidden layer
        set_checked(self, "code_size")
        _optional_batch_size(self)
        set_checked(self, "num_steps")

    @property
    def _split(self):
        train_x, _, valid_x, _ = _digits.digits_split()
        train_x = train_x.reshape(train_x.shape[0], -1)
        valid_x = valid_x.reshape(valid_x.shape[0], -1)
        return train_x, train_x, valid_x, valid_x

    @property
    def _net(self) -> _Autoencoder:
        return _Autoencoder(self.hidden, self.code_size, self._split[0].shape[1])

    def _sample_loss(self, outputs, targets):
        return jnp.mean(jnp.square(outputs - targets), axis=-1)


def log_spaced_spectrum(dim: int, condition: float) -> jax.Array:
    """``dim`` eigenvalues log-spaced from 1 down to ``1 / condition`` (both ends included)."""
    return jnp.logspace(0.0, -math.log10(condition), dim)


@dataclasses.dataclass(frozen=True)
class IllConditionedQuadratic(TaskFamily):
    """``f(x) = 1/2 (x - x*)^T Q diag(lambda) Q^T (x - x*)`` with condition number exactly
    ``condition``.

    Unlike `LinearRegression` (random eigenvalues, dimension 5) the spectrum is fixed: the
    ``dim`` eigenvalues are log-spaced from 1 down to ``1 / condition``
    (`log_spaced_spectrum`), so the difficulty is the same on every instance and known.
    Distribution per instance: the eigenbasis ``Q`` (Haar-random orthogonal, QR of a standard
    normal matrix with signs fixed), the optimum ``x* ~ N(0, I)`` and the start point
    ``x0 ~ N(0, I)``; the loss is deterministic, its minimum 0 at ``x*``, and ``Task.init``
    ignores its key.

    Args:
      dim: dimension of ``x``.
      condition: ratio of the largest to the smallest Hessian eigenvalue (>= 1).
      num_steps: default inner horizon.
    """

    dim: int = 100
    condition: float = 1e4
    num_steps: int = 200

    def __post_init__(self) -> None:
        set_checked(self, "dim")
        set_checked(self, "condition", _checks.at_least, bound=1.0)
        set_checked(self, "num_steps")

    def sample_data(self, key: chex.PRNGKey) -> dict[str, jax.Array]:
        kq, ks, kx = jax.random.split(key, 3)
        q, r = jnp.linalg.qr(jax.random.normal(kq, (self.dim, self.dim)))
        q = q * jnp.sign(jnp.diag(r))[None, :]
        eig = log_spaced_spectrum(self.dim, self.condition)
        return {
            "hessian": (q * eig[None, :]) @ q.T,
            "x_star": jax.random.normal(ks, (self.dim,)),
            "x0": jax.random.normal(kx, (self.dim,)),
        }

    def init_params(self, data, key):
        del key
        return data["x0"]

    def loss_fn(self, data, params, key):
        del key
        diff = params - data["x_star"]
        return 0.5 * diff @ (data["hessian"] @ diff)


@dataclasses.dataclass(frozen=True)
class ChainedRosenbrock(TaskFamily):
    """``f(x) = sum_{i<d} 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``, minimum 0 at all ones.

    The chained generalisation of `Rosenbrock` to ``dim`` coordinates: a curved valley whose
    coupling runs through every coordinate (for ``dim >= 4`` there is also a local minimum
    near ``x_1 = -1``). Distribution per instance: the start point only, every coordinate
    ``U[-2, 2]``; the loss is deterministic and ``Task.init`` ignores its key.

    Args:
      dim: number of coordinates (>= 2).
      num_steps: default inner horizon.
    """

    dim: int = 10
    num_steps: int = 200

    def __post_init__(self) -> None:
        set_checked(self, "dim", _checks.integer, minimum=2)
        set_checked(self, "num_steps")

    def sample_data(self, key: chex.PRNGKey) -> dict[str, jax.Array]:
        return {"x0": jax.random.uniform(key, (self.dim,), minval=-2.0, maxval=2.0)}

    def init_params(self, data, key):
        del key
        return data["x0"]

    def loss_fn(self, data, params, key):
        del data, key
        head, tail = params[:-1], params[1:]
        return jnp.sum(100.0 * jnp.square(tail - head**2) + jnp.square(1.0 - head))


def unseen_suite() -> dict[str, TaskFamily]:
    """The named problems of the unseen-problem benchmark (``benchmarks/general.py``).

    None of them is a family of ``GENERAL_MIX``, the mix ``pretrained("general")`` was
    meta-trained on: logistic and softmax regression, MLP classifiers and regressors of several
    widths and depths, an autoencoder and a small convnet (`DigitsConv`, never in a training
    mix) on bundled data, plus ill-conditioned quadratics and chained Rosenbrock functions.
    Every family's ``num_steps`` is 1000; the benchmark chooses each problem's horizons
    (300, 1,000 and, where steps are cheap, 5,000) itself.

    Returns:
      problem name -> `TaskFamily`, in the benchmark's order.
    """
    from optax_lopt.tasks.digits_conv import DigitsConv

    steps = {"num_steps": 1000}
    return {
        "logistic_breast_cancer": BundledClassifier("breast_cancer", batch_size=64, **steps),
        "softmax_iris": BundledClassifier("iris", **steps),
        "softmax_wine": BundledClassifier("wine", **steps),
        "softmax_digits": BundledClassifier("digits", batch_size=128, **steps),
        "mlp_wine_32": BundledClassifier("wine", hidden=(32,), **steps),
        "mlp_breast_cancer_64x64": BundledClassifier(
            "breast_cancer", hidden=(64, 64), batch_size=64, **steps
        ),
        "mlp_breast_cancer_16x16x16": BundledClassifier(
            "breast_cancer", hidden=(16, 16, 16), batch_size=64, **steps
        ),
        "mlp_diabetes_32x32": BundledRegressor("diabetes", hidden=(32, 32), **steps),
        "mlp_diabetes_128": BundledRegressor("diabetes", hidden=(128,), **steps),
        "autoencoder_digits": DigitsAutoencoder(hidden=(32,), code_size=8, **steps),
        "convnet_digits": DigitsConv(channels=(8,), num_layers=2, batch_sizes=(32,), **steps),
        "quadratic_cond1e2": IllConditionedQuadratic(dim=100, condition=1e2, **steps),
        "quadratic_cond1e4": IllConditionedQuadratic(dim=100, condition=1e4, **steps),
        "rosenbrock_10d": ChainedRosenbrock(dim=10, **steps),
        "rosenbrock_30d": ChainedRosenbrock(dim=30, **steps),
    }
