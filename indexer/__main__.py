"""Entry point for `python -m indexer`."""

from .cli import main

raise SystemExit(main())
