"""Frozen settings for encoding, chunking and index layout, saved into the manifest as JSON."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, get_args

#: The demo collection and its index, relative to the folder the command runs in (the checkout's root for
#: `make run`, `make demo` and the app's default): one home for the CLI's demo and bench and the app.
SAMPLE_SOURCE = Path("data") / "sample"
SAMPLE_INDEX = Path("indexes") / "sample"

Pooling = Literal["pooled", "mean", "cls", "max", "first_last"]
#: How token vectors become one vector, each computed from the same forward pass (see pooling.py).
POOLINGS: tuple[str, ...] = get_args(Pooling)
TransformKind = Literal["whiten", "abtt"]
#: Post-processing fitted on a collection's vectors of one pooling (see transforms.py).
TRANSFORMS: tuple[str, ...] = get_args(TransformKind)
#: Kept for callers that list the plain representations (the poolings themselves).
REPRESENTATIONS: tuple[str, ...] = POOLINGS
DEFAULT_REPRESENTATIONS: tuple[str, ...] = ("pooled", "mean")

#: What a representation name may look like: lower-case words of letters, digits and `_`, joined
#: by `+` (`mean`, `first_last`, `pooled+whiten128`). A name becomes part of a file name
#: (`<name>.faiss`), so a name read from a manifest is checked against this before any path is built.
REPRESENTATION_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}(?:\+[a-z0-9_]{1,32}){0,3}")
_TRANSFORM = re.compile(rf"({'|'.join(TRANSFORMS)})([1-9][0-9]{{0,4}})?")
#: The valid forms, for messages that refuse a name.
REPRESENTATION_FORMS = (
    f"POOLING or POOLING+TRANSFORM, where POOLING is one of {', '.join(POOLINGS)} and TRANSFORM is "
    "whiten (BERT-whitening, all dimensions), whitenK (keep K dimensions, e.g. whiten128) or abttD "
    "(all-but-the-top: remove the top D principal directions, e.g. abtt3)"
)


def require_one_of(value: Any, choices: Any, what: str) -> Any:
    """`value` when it is one of `choices` (a `Literal` type, or the values themselves); else ValueError naming
    the value and the valid ones: "unknown index type 'annoy'; valid: flat, hnsw, ivf". The one check of a Literal choice."""
    valid = get_args(choices) or tuple(choices)
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")
    return value


@dataclass(frozen=True)
class RepresentationSpec:
    """A representation name taken apart: its pooling and the optional transform fitted on top of it.

    `param` is K of `whitenK` (None: keep every dimension) or D of `abttD`.
    """

    name: str
    pooling: str
    transform: str | None = None
    param: int | None = None


def parse_representation(name: str) -> RepresentationSpec:
    """`mean` -> (mean); `pooled+whiten128` -> (pooled, whiten, 128); ValueError listing the valid forms."""
    if not isinstance(name, str):
        raise ValueError(f"a representation name must be text, got {type(name).__name__}")
    pooling, plus, rest = name.strip().partition("+")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown representation {name!r} (unknown pooling {pooling!r}); valid: {REPRESENTATION_FORMS}")
    if not plus:
        return RepresentationSpec(pooling, pooling)
    match = _TRANSFORM.fullmatch(rest)
    if match is None or (match.group(1) == "abtt" and match.group(2) is None):
        raise ValueError(f"unknown representation {name!r} (unknown transform {rest!r}); valid: {REPRESENTATION_FORMS}")
    kind, param = match.group(1), match.group(2)
    return RepresentationSpec(f"{pooling}+{kind}{param or ''}", pooling, kind, int(param) if param else None)


def representation_order(name: str) -> tuple:
    """Canonical order: by pooling (POOLINGS order), the plain pooling before its transforms."""
    spec = parse_representation(name)
    return (POOLINGS.index(spec.pooling), spec.transform is not None, spec.transform or "", spec.param or 0)


def parse_representations(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Turn "pooled,mean+whiten" (or a sequence) into a validated, de-duplicated tuple in canonical order."""
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    if not names:
        raise ValueError(f"no representation given; valid: {REPRESENTATION_FORMS}")
    specs = {}
    for n in names:
        spec = parse_representation(n)
        specs[spec.name] = spec
    return tuple(sorted(specs, key=representation_order))


def poolings_of(representations) -> tuple[str, ...]:
    """The poolings a forward pass must compute (and a store keep) to serve `representations`."""
    return tuple(p for p in POOLINGS if any(parse_representation(r).pooling == p for r in representations))


Precision = Literal["auto", "fp32", "bf16"]
#: What `--precision` takes: `auto` is bf16 where the device computes it natively (encoder.native_bf16), else fp32.
PRECISIONS: tuple[str, ...] = get_args(Precision)
EncodedPrecision = Literal["fp32", "bf16"]
#: What an encoder computes in (a resolved `Precision`) and a manifest records; vectors are float32 on disk either way.
ENCODED_PRECISIONS: tuple[str, ...] = get_args(EncodedPrecision)
DEFAULT_PRECISION = "auto"
#: The precision of an index whose manifest records none: written before precision was a choice, always fp32.
UNRECORDED_PRECISION = "fp32"

#: Name under which the embedded all-MiniLM-L6-v2 is known to `--model`.
BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_OVERLAP = 32
DEFAULT_BATCH_SIZE = 32


def default_overlap(max_tokens: int) -> int:
    """32 tokens, or an eighth of the chunk when chunks are shorter than 256 tokens."""
    return min(DEFAULT_OVERLAP, max_tokens // 8)


@dataclass(frozen=True)
class ChunkingConfig:
    """Token windows: `max_tokens` includes the model's special tokens; `overlap` tokens are shared by neighbours
    (None: `default_overlap(max_tokens)`, so that any valid `max_tokens` alone makes a valid configuration)."""

    max_tokens: int
    overlap: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 8:
            raise ValueError(f"max_tokens must be at least 8, got {self.max_tokens}")
        if self.overlap is None:
            object.__setattr__(self, "overlap", default_overlap(self.max_tokens))
        if not 0 <= self.overlap < self.max_tokens // 2:
            raise ValueError(
                f"overlap must be between 0 and half of max_tokens ({self.max_tokens // 2 - 1}), got {self.overlap}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


PoolerStatus = Literal["loaded", "missing", "absent"]
ModelSource = Literal["bundled", "local", "hub"]


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """Where a model came from and what it can produce; recorded in every manifest (encoder.py fills it in).

    `fingerprint` and `files` are None only in the record of an index built before fingerprints."""

    name: str  # what the user named (or the bundled model's hub id)
    source: ModelSource
    location: str  # directory the files were read from
    weights_sha256: str  # shown to users; identity is `fingerprint`
    fingerprint: str | None = None  # sha256 over `files`: weights, config and tokenizer together
    files: Mapping[str, str] | None = None  # sha256 of each file that determines the vectors (see encoder.IDENTITY_FILES)
    pooler: PoolerStatus
    pooler_note: str
    tokenizer: str
    max_tokens: int  # the model's own sequence limit, special tokens included
    dim: int
    architecture: str

    def to_dict(self) -> dict:
        """The manifest's "model" record (an index's record from before fingerprints stays without them)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("fingerprint", "files")}
