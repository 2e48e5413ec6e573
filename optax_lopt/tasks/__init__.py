"""Tasks and task families for meta-training and evaluation."""

__all__: list[str] = []
