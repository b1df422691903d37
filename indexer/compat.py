"""Whether an index and an encoder fit together: the one rule for searching, reusing and adding to an index.

Every caller (the searcher, `add`, `evaluate --beir` deciding whether to reuse its cached index)
asks `compatibility_problems` with its purpose, so that no two places can disagree.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal, Mapping, Sequence

if TYPE_CHECKING:  # only for annotations: this module needs no model code
    from .encoder import Encoder

from .config import ModelInfo, poolings_of, require_one_of
from .store import Manifest

log = logging.getLogger("indexer.compat")

#: search: query an index; reuse: take a cached index instead of building one; add: write new vectors into it;
#: fit: take an index's vectors (or its fitted transforms) to map vectors of this encoder (evaluate --sts --fit-on).
Purpose = Literal["search", "reuse", "add", "fit"]


def compatibility_problems(
    manifest: Manifest, encoder: "Encoder", purpose: Purpose, representations: Sequence[str] | None = None
) -> list[str]:
    """What stops `encoder` from serving `purpose` on the index `manifest` describes (empty: nothing).

    Always: the same model (weights, config and tokenizer files) and vector dimension; for every
    purpose but `fit` (which only needs the same vector space), the same max length; to add or reuse (whose
    vectors are stored beside the index's), the same precision (fp32 or bf16): queries may be encoded in another,
    which is how a user compares them.
    Representations, one rule for every purpose: each representation the work needs must be held by the
    index and computable by the encoder, that is, the encoder computes its pooling (a transform is the
    index's own, fitted on the stored vectors). What an encoder computes beyond that is not used. The
    representations needed, by purpose:
    - search: those searched (`representations`, default all of the index's);
    - reuse: those wanted (`representations`, default the encoder's); the index may hold more;
    - add: all of the index's, since every new chunk needs a vector in each (`representations` is ignored);
    - fit: none (the caller asks for the poolings it needs).
    """
    require_one_of(purpose, Purpose, "purpose")
    who = "the searcher" if purpose == "search" else "this run"
    info = encoder.info
    problems = []
    model_problem = _model_problem(manifest.model, encoder, purpose, who)
    if model_problem:
        problems.append(model_problem)
    built_max = manifest.chunking.max_tokens
    if built_max != encoder.max_tokens and purpose != "fit":
        problems.append(f"the index was built with a max length of {built_max} tokens, {who}'s is {encoder.max_tokens}")
    built_precision = manifest.encoded_precision
    if purpose in ("add", "reuse") and built_precision != encoder.precision:
        problems.append(f"the index was built with {built_precision} precision, {who} encodes in {encoder.precision}"
                        + (f" (add with --precision {built_precision}, or leave --precision out to take the index's)"
                           if purpose == "add" else ""))
    for p, dim in manifest.poolings.items():  # the poolings' vectors; a transform may change a representation's
        if dim != info.dim:
            problems.append(f"`{p}` vectors have dimension {dim}, the model produces {info.dim}")
    if purpose == "fit":
        return problems
    held = tuple(manifest.representations)
    if purpose == "add":
        needed = held
    else:
        needed = tuple(representations) if representations else (held if purpose == "search" else tuple(encoder.representations))
    missing = [r for r in needed if r not in held]
    if missing:
        problems.append(f"the index has no {_names(missing)} representation")
    not_computed = [p for p in poolings_of([r for r in needed if r in held]) if p not in encoder.poolings]
    if not_computed:
        why = ": a new document needs a vector in every representation of the index" if purpose == "add" else ""
        problems.append(f"the encoder does not compute {_names(not_computed)}{why}")
    return problems


def _model_problem(built: ModelInfo, encoder: "Encoder", purpose: Purpose, who: str) -> str | None:
    """Why the index's model is not the encoder's; for an index from before fingerprints, per purpose."""
    info = encoder.info
    if built.fingerprint is None:  # written before the fingerprint covered config and tokenizer
        if built.weights_sha256 != info.weights_sha256:
            return (
                f"the index was built with model {built.name!r} (weights sha256 {built.weights_sha256[:12]}…), "
                f"but {who} uses {info.name!r} (weights sha256 {info.weights_sha256[:12]}…)"
            )
        legacy = ("the index predates model fingerprints: only its weights can be checked, not its config or tokenizer "
                  "files; rebuild it (`build --overwrite`) to have them checked")
        if purpose == "search":  # read-only: serve it, but say what could not be checked
            log.warning("WARNING: %s", legacy)
            return None
        return legacy  # reuse rebuilds it; add would mix vectors of two possibly different models
    if built.fingerprint == info.fingerprint:
        return None
    differing = _differences(built.files, info.files) if built.files is not None else []
    detail = f": they differ in {', '.join(differing)}" if differing else ""
    return (
        f"the index was built with model {built.name!r} (fingerprint {built.fingerprint[:12]}…), "
        f"but {who} uses {info.name!r} (fingerprint {info.fingerprint[:12]}…){detail}"
    )


def _differences(built: Mapping, files: Mapping[str, str]) -> list[str]:
    """Files whose sha256 differs between the index's model and the encoder's, or that only one has."""
    out = []
    for name in sorted(set(built) | set(files), key=str):
        shown = name if isinstance(name, str) and name.isprintable() and len(name) <= 80 else repr(name)[:80]
        if name not in files:
            out.append(f"{shown} (only the index's model has it)")
        elif name not in built:
            out.append(f"{shown} (the index's model had none)")
        elif built[name] != files[name]:
            out.append(shown)
    return out


def _names(representations) -> str:
    return ", ".join(f"`{r}`" for r in representations) or "no"
