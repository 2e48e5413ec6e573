"""optax-lopt: learned optimizers that speak optax.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

from optax_lopt.architectures.componentwise_rnn import ComponentwiseRNN
from optax_lopt.architectures.learnable import LearnableAdam, LearnableSGDM
from optax_lopt.base import LearnedOptimizer, MetaParams, architecture, architectures, from_config
from optax_lopt.serialization import load, save

__version__ = "0.1.0"

__all__ = [
    "ComponentwiseRNN",
    "LearnableAdam",
    "LearnableSGDM",
    "LearnedOptimizer",
    "MetaParams",
    "architecture",
    "architectures",
    "from_config",
    "load",
    "save",
]
