"""Frozen settings for encoding, chunking and index layout, saved into the manifest as JSON."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal, get_args

Representation = Literal["pooled", "mean", "cls"]
REPRESENTATIONS: tuple[str, ...] = get_args(Representation)
DEFAULT_REPRESENTATIONS: tuple[str, ...] = ("pooled", "mean")

#: What a representation name may look like: lower-case words of letters, digits and `_`, joined
#: by `+` (`mean`, `first_last`, `pooled+whiten128`). A name becomes part of a file name
#: (`<name>.faiss`), so a name read from a manifest is checked against this before any path is built.
REPRESENTATION_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}(?:\+[a-z0-9_]{1,32}){0,3}")

#: Name under which the embedded all-MiniLM-L6-v2 is known to `--model`.
BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_OVERLAP = 32
DEFAULT_BATCH_SIZE = 32


def parse_representations(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Turn "pooled,mean" (or a sequence) into a validated, de-duplicated tuple in canonical order."""
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    if not names:
        raise ValueError(f"no representation given; choose from {', '.join(REPRESENTATIONS)}")
    unknown = [n for n in names if n not in REPRESENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown representation {', '.join(map(repr, unknown))}; valid: {', '.join(REPRESENTATIONS)}"
        )
    return tuple(r for r in REPRESENTATIONS if r in names)


def default_overlap(max_tokens: int) -> int:
    """32 tokens, or an eighth of the chunk when chunks are shorter than 256 tokens."""
    return min(DEFAULT_OVERLAP, max_tokens // 8)


@dataclass(frozen=True)
class ChunkingConfig:
    """Token windows: `max_tokens` includes the model's special tokens; `overlap` tokens are shared by neighbours."""

    max_tokens: int
    overlap: int = DEFAULT_OVERLAP

    def __post_init__(self) -> None:
        if self.max_tokens < 8:
            raise ValueError(f"max_tokens must be at least 8, got {self.max_tokens}")
        if not 0 <= self.overlap < self.max_tokens // 2:
            raise ValueError(
                f"overlap must be between 0 and half of max_tokens ({self.max_tokens // 2 - 1}), got {self.overlap}"
            )

    def to_dict(self) -> dict:
        return asdict(self)
