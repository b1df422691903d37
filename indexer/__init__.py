"""Pooling Lab: index a collection once, keep BERT's `pooled` and `mean` (and other) vectors side by side, and
compare what each retrieves.

    from indexer import Index
    with Index.open("indexes/sample") as index:
        index.search("how do vaccines work", k=5)     # {"pooled": [Hit, ...], "mean": [...]}

The names below load on first use, so `import indexer` (and the CLI's start) stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: The public face: name -> module that holds it.
_PUBLIC = {
    "Index": "api",
    "Hit": "search",
    "SearchResult": "search",
    "Document": "loaders",
    "LoadIssue": "loaders",
    "BuildSummary": "pipeline",
    "Evaluation": "evaluation",
    "SourceError": "loaders",
    "StoreError": "store",
    "ModelError": "encoder",
    "BuildError": "pipeline",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
