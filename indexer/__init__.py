"""Pooling Lab indexer: index a collection once, keep BERT's `pooled` and `mean` vectors side by side."""

__version__ = "0.1.0"
