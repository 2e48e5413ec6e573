"""interpret: reverse-engineer any component-wise optax optimizer.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

__all__: list[str] = []
