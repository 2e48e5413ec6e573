"""optax-lopt: learned optimizers that speak optax.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

# the subpackages, so that ``import optax_lopt`` is enough for ``optax_lopt.tasks.family(...)``
from optax_lopt import baselines as baselines
from optax_lopt import convergence as convergence
from optax_lopt import evaluation as evaluation
from optax_lopt import meta as meta
from optax_lopt import tasks as tasks
from optax_lopt.architectures.componentwise_rnn import ComponentwiseRNN
from optax_lopt.architectures.factored_mlp_lopt import FactoredMLPLOpt
from optax_lopt.architectures.hierarchical import HierarchicalLOpt
from optax_lopt.architectures.learnable import LearnableAdam, LearnableSGDM
from optax_lopt.architectures.mlp_lopt import MLPLOpt
from optax_lopt.base import (
    LearnedOptimizer,
    MetaParams,
    architecture,
    architecture_names,
    from_config,
)
from optax_lopt.pretrained import (
    load_pretrained,
    pretrained,
    pretrained_metadata,
    pretrained_names,
)
from optax_lopt.serialization import load, save


def _version() -> str:
    """The installed distribution's version; the source tree's when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("optax-lopt")
    except metadata.PackageNotFoundError:  # imported from a checkout that was never installed
        return "0.1.0"


__version__ = _version()

__all__ = [
    "ComponentwiseRNN",
    "FactoredMLPLOpt",
    "HierarchicalLOpt",
    "LearnableAdam",
    "LearnableSGDM",
    "LearnedOptimizer",
    "MLPLOpt",
    "MetaParams",
    "architecture",
    "architecture_names",
    "from_config",
    "load",
    "load_pretrained",
    "pretrained",
    "pretrained_metadata",
    "pretrained_names",
    "save",
]
