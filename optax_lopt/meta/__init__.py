"""Meta-training: inner unrolls, gradient estimators, the meta-trainer."""

__all__: list[str] = []
