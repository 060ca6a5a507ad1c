"""curatune: curate instruction data, fine-tune on nested subsets, measure learning vs forgetting."""

__version__ = "0.1.0"
