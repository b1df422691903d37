"""Shared pieces of the app: the current index, cached model and indexes, and safe text display.

Everything cached with `st.cache_resource` is shared by all browser sessions, so it is used
read-only; the encoder guards its tokenizer with a lock and the index its SQLite connection.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Mapping, Sequence

import streamlit as st

from indexer import compare, explore
from indexer.app.serve import LOOPBACK_NAMES
from indexer.config import DEFAULT_BATCH_SIZE, DEFAULT_PRECISION, SAMPLE_INDEX
from indexer.encoder import Encoder, ModelError
from indexer.evaluation import LabelledSet, labelled_sets, load_labels
from indexer.search import Searcher, encoder_for
from indexer.store import StoreError, is_index
from indexer.text import STOP_WORDS

# -- what one build from the browser may take (build.py enforces them; the Index page states them) ------
UPLOAD_LIMIT_MB = 50  # per file; also the app's .streamlit/config.toml server.maxUploadSize, the server's own cap
BUILD_MAX_FILES = 200  # files per build
BUILD_MAX_TOTAL_MB = 100  # all files of one build together
BUILD_MAX_CONCURRENT = 1  # builds running at once, across every session of this server
BUILD_MAX_SECONDS = 600  # a build still running after this is stopped (checked after each forward pass)


# -- which index --------------------------------------------------------------------------------------

def index_dir() -> Path:
    return Path(st.session_state.get("index_dir") or SAMPLE_INDEX)


def index_root() -> Path:
    """Folder where the app looks for indexes and builds new ones."""
    return Path(st.session_state.get("index_root") or index_dir().parent)


def available_indexes() -> list[Path]:
    """Index directories in the index root, and the current one wherever it is."""
    root = index_root()
    found = sorted(p for p in root.iterdir() if is_index(p)) if root.is_dir() else []
    current = index_dir().resolve()
    if is_index(current) and current not in [p.resolve() for p in found]:
        found.insert(0, current)
    return found


# -- state in the URL (permalinks) --------------------------------------------------------------------

#: Characters of a link's unusable value quoted in its message.
QUOTED_CHARS = 80


def url_is_new() -> bool:
    """Whether the address is not the one this session last wrote: a link was opened, the page reloaded, or the
    address edited — then its parameters are read; otherwise the widgets hold the newer state."""
    return st.query_params.to_dict() != st.session_state.get("_url_written")


def restore_from_url(fields: Mapping[str, Callable[[str], object] | tuple[str, Callable[[str], object]]]) -> list[str]:
    """Seed widgets from the URL's parameters before they are drawn, when the URL is not the one this session
    last wrote (a link was opened, the page reloaded, or the address edited); otherwise the widgets keep what the
    user just did. `fields` maps a parameter to its parser (session-state key = parameter name) or to
    (session-state key, parser). Returns one message per value that could not be used (the value is ignored)."""
    if not url_is_new():
        return []
    current = st.query_params.to_dict()
    problems = []
    for param, spec in fields.items():
        key, parse = spec if isinstance(spec, tuple) else (param, spec)
        if param not in current:
            continue
        try:
            st.session_state[key] = parse(current[param])
        except (ValueError, TypeError) as exc:
            value = current[param]
            value = value if len(value) <= QUOTED_CHARS else value[:QUOTED_CHARS] + "…"  # a long one stays a line
            problems.append(f"the link's {param}={value!r} was ignored: {exc}")
    return problems


def one_of(options: Sequence, what: str) -> Callable[[str], object]:
    """A `restore_from_url` parser that accepts only one of `options` (ValueError naming the first few otherwise)."""
    def parse(value: str):
        if value not in options:
            shown = ", ".join(map(str, list(options)[:10])) + (", …" if len(options) > 10 else "")
            raise ValueError(f"no {what} of that name; valid: {shown or 'none'}")
        return value
    return parse


def pick_of(held: Sequence[str]) -> Callable[[str], list[str]]:
    """A `restore_from_url` parser for a comma-separated pick of an index's representations (`held`): each must be
    held, and the pick must pass compare.columns_problem (not empty, none twice, at most MAX_COLUMNS)."""
    def parse(value: str) -> list[str]:
        picked = [r.strip() for r in value.split(",") if r.strip()]
        if unknown := [r for r in picked if r not in held]:
            raise ValueError(f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not in this index, "
                             f"which keeps {', '.join(held)}")
        if (problem := compare.columns_problem(picked)) is not None:
            raise ValueError(problem)
        return picked
    return parse


def write_url(values: Mapping[str, object]) -> None:
    """Make the address bar hold this page's state (lists are comma-joined; empty values are left out), so a
    reload keeps it and a copied link reproduces it. The current index is always part of it."""
    params = {"index": index_dir().name}
    for name, value in values.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        if value is not None and str(value) != "":
            params[name] = str(value)
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)
    st.session_state["_url_written"] = params


def index_from_url() -> str | None:
    """Switch to the index a link names (`?index=NAME`: a name in the index folder, never a path); a message
    when there is no such index."""
    wanted = st.query_params.get("index")
    if not wanted or not url_is_new() or wanted == index_dir().name:
        return None
    for directory in available_indexes():
        if directory.name == wanted:
            st.session_state["index_dir"] = str(directory)
            return None
    return f"The link names an index “{wanted}” that is not here; showing {index_dir().name} instead."


# -- local paths -----------------------------------------------------------------------------------------

def paths_shown() -> bool:
    """Whether this machine's file paths may be shown: only when the app is bound to loopback."""
    return str(st.get_option("server.address") or "").strip() in LOOPBACK_NAMES


def shown_path(path: str | Path) -> str:
    """A path as visitors may see it: in full on a loopback-only app, else only its last part."""
    return str(path) if paths_shown() else Path(path).name


#: An absolute path in a message (up to a space, quote or backquote): shown as its last part on a shared app.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?:[^\s/`'\"]+/)*([^\s/`'\"]+)")


def shown_text(text: str, *paths: str | Path) -> str:
    """A message (e.g. a StoreError's) as visitors may see it: on a shared app, each of `paths` (and what lies
    below it) starts from its last part, and any other absolute path is cut to its last part."""
    if paths_shown():
        return text
    known = {str(p): Path(p).name for path in paths for p in (Path(path), Path(path).resolve())}
    for full in sorted(known, key=len, reverse=True):
        text = text.replace(full, known[full])
    return _ABSOLUTE_PATH.sub(r"\1", text)


# -- cached resources ------------------------------------------------------------------------------------

@st.cache_resource(show_spinner="Loading the model…")
def load_encoder(model: str | None, representations: tuple[str, ...], max_tokens: int | None = None, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, trust_remote_code: bool = False,
                 precision: str = DEFAULT_PRECISION) -> Encoder:
    """One shared encoder per model, representations, max length (None: the model's own) and precision: Encoder.load's
    arguments, so that search.encoder_for can load with it (it passes the index's precision)."""
    return Encoder.load(model, representations=tuple(representations), max_tokens=max_tokens, batch_size=batch_size,
                        trust_remote_code=trust_remote_code, precision=precision)


@st.cache_resource(show_spinner="Opening the index…", max_entries=8)
def load_searcher(directory: str, model: str | None) -> Searcher:
    """The one searcher of an index directory, shared by every session; `model` overrides the index's own (then it
    must match). It switches to a newly published generation itself before its next query, taking a new encoder
    when the generation needs another (search.encoder_for, with the shared model loader), so that one copy of the
    index is held whatever is published."""
    return Searcher(directory, make_encoder=lambda manifest: encoder_for(manifest, model, load=load_encoder))


def searcher_or_stop() -> Searcher:
    """The current index's searcher, or a clear message on the page (never a traceback) and stop."""
    directory = index_dir()
    if not is_index(directory):
        st.error(
            f"No index at `{shown_path(directory)}`. Build one on the **Index** page, or from a terminal: "
            f"`python -m indexer build SOURCE --index {shown_path(directory)}`"
        )
        st.stop()
    try:
        searcher = load_searcher(str(directory.resolve()), st.session_state.get("model"))
        searcher.current()  # a newly published generation, before the page reads the index
        return searcher
    except (StoreError, ModelError, ValueError, OSError) as exc:
        # a manifest's text is not Markdown
        st.error(f"Cannot open the index `{shown_path(directory)}`: {escape_markdown(shown_text(str(exc), directory))}")
        st.stop()


@st.cache_data(show_spinner=False, max_entries=16)
def labels(directory: str, sha: str, name: str) -> tuple[dict[str, str], dict[str, dict[str, int]], list[str]]:
    """Queries, judgements and skipped-line messages of one labelled set of an index."""
    searcher = load_searcher(directory, st.session_state.get("model"))
    chosen = next(s for s in labelled_sets(searcher.manifest, searcher.index.directory) if s.name == name)
    queries, qrels, issues = load_labels(chosen.queries, chosen.qrels, searcher.index.doc_ids())
    return queries, qrels, [shown_text(str(i), directory) for i in issues]  # each names its file


def labelled_sets_of(searcher: Searcher) -> list[LabelledSet]:
    """The index's labelled sets (the copy kept with it, checked); a message and none when that copy is damaged."""
    try:
        return labelled_sets(searcher.manifest, searcher.index.directory)
    except StoreError as exc:
        st.error(f"The labelled queries kept with this index cannot be used: "
                 f"{escape_markdown(shown_text(str(exc), searcher.index.directory))}")
        return []


def judgements_for(searcher: Searcher, query: str) -> tuple[str, dict[str, int]] | None:
    """(query id, judgements) when the typed query is one of the index's labelled queries."""
    wanted = " ".join(query.lower().split())
    directory = str(searcher.index.directory)
    for labelled in labelled_sets_of(searcher):
        queries, qrels, _ = labels(directory, searcher.index.manifest_sha256, labelled.name)
        for qid, text in queries.items():
            if qid in qrels and " ".join(text.lower().split()) == wanted:
                return qid, qrels[qid]
    return None


@st.cache_data(show_spinner="Sampling documents…", max_entries=8)
def document_sample(directory: str, sha: str, limit: int = 1500) -> dict:
    """explore.document_sample of the index, for all its representations (cached per generation)."""
    searcher = load_searcher(directory, st.session_state.get("model"))
    return explore.document_sample(searcher.index, searcher.representations, limit=limit)


# -- evaluations (cached per index generation) ----------------------------------------------------------

class EvaluationCache:
    """Finished evaluations by key, least recently used dropped past `size`. Keys start with (index directory,
    manifest sha, model, labelled set), so a new index generation never meets an old entry, and `same_set`
    finds an earlier evaluation of the set whose runs (BM25 and each representation's) can be reused."""

    def __init__(self, size: int = 16):
        self.size = size
        self._items: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            return self._items.get(key)

    def put(self, key: tuple, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def same_set(self, prefix: tuple):
        """The most recent entry whose key starts with `prefix` (None when none does)."""
        with self._lock:
            return next((v for k, v in reversed(self._items.items()) if k[: len(prefix)] == prefix), None)


@st.cache_resource
def evaluations() -> EvaluationCache:
    """Evaluations of the indexes' own labelled sets, shared by every session (a link to one shows it at once).
    Evaluations of uploaded labels stay in the uploading session (`session_evaluations`)."""
    return EvaluationCache(size=8)  # entries of one set share its runs (reuse), so memory grows mostly per set


def session_evaluations() -> EvaluationCache:
    """This browser session's own evaluations (of uploaded labels): never shared."""
    return st.session_state.setdefault("_evaluations", EvaluationCache(size=4))


@st.cache_data(show_spinner="Comparing query–document similarities…", max_entries=16)
def relevance_similarities(directory: str, sha: str, name: str, representations: tuple[str, ...], negatives: str,
                           extra_docs: tuple[str, ...] = ()) -> dict:
    """explore.relevance_similarities on one labelled set of the index (cached per generation and choice)."""
    searcher = load_searcher(directory, st.session_state.get("model"))
    queries, qrels, _ = labels(directory, sha, name)
    return explore.relevance_similarities(searcher, queries, qrels, list(representations), extra_docs=extra_docs,
                                          negatives=negatives)


# -- which representations a page shows ------------------------------------------------------------------

def pick_representations(representations: Sequence[str]) -> list[str]:
    """The representations this page shows, as the user picked them (remembered across pages);
    an index with one representation shows it without asking. Stops with a message on a bad pick."""
    reps = list(representations)
    if len(reps) == 1:
        return reps
    picked = st.multiselect(
        "Representations to show", reps, default=remembered_representations(reps), key="columns",
        help=f"Up to {compare.MAX_COLUMNS}, side by side.",
    )
    if (problem := compare.columns_problem(picked)) is not None:
        st.error(f"{problem[0].upper()}{problem[1:]}.")
        st.stop()
    st.session_state["shown"] = picked
    return picked


def remembered_representations(representations: Sequence[str]) -> list[str]:
    """The pick a page starts from: the one remembered across pages (and links), else compare.default_columns."""
    reps = list(representations)
    return [r for r in st.session_state.get("shown", ()) if r in reps] or list(compare.default_columns(reps))


def pick_baseline(picked: Sequence[str]) -> str:
    """The ranking the other columns are compared with (default: the first picked; remembered while picked)."""
    remembered = st.session_state.get("baseline_of_columns")
    chosen = st.selectbox(
        "Baseline", picked, index=picked.index(remembered) if remembered in picked else 0, key="baseline",
        help="Arrows and agreement numbers of the other columns are relative to this ranking.",
    )
    st.session_state["baseline_of_columns"] = chosen
    return chosen


# -- safe text -----------------------------------------------------------------------------------------

# Every ASCII punctuation character may be backslash-escaped in Markdown; escaping all of them
# means document text can never become a link, an image, HTML, LaTeX or a Streamlit directive.
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


#: Where Streamlit's Markdown turns plain text into something else after escapes are resolved, so that escaping
#: cannot stop it: GitHub-flavoured autolinks (`http://`, `https://`, `www.`, e-mail addresses), icons and images
#: (`:material_warning:`, `:streamlit:`) and typographic symbols (`--` `->` `<-` `>=` `<=` `~=` become — → ← ≥ ≤ ≈).
#: An invisible WORD JOINER (U+2060) inside each marker stops it and leaves the text as it reads.
_RENDERED_MARKERS = re.compile(r"(?<=:)(?=//|material_|streamlit:)|(?<=www)(?=\.)|(?<=@)|(?<=[-<>~])(?=[-=>])", re.IGNORECASE)
WORD_JOINER = "\u2060"


def _escape(text: str) -> str:
    return _PUNCTUATION.sub(r"\\\1", _RENDERED_MARKERS.sub(WORD_JOINER, text))


#: Unicode's explicit direction controls (marks, embeddings, overrides, isolates): in text from outside, one of
#: them can reorder what the page prints after it (a title's U+202E reversed the grade badge beside it).
_BIDI_CONTROL = re.compile("[\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]")
FIRST_STRONG_ISOLATE, POP_DIRECTIONAL_ISOLATE = "\u2068", "\u2069"


def isolated(text: str) -> str:
    """`text` unable to reorder its surroundings: when it holds a direction control, it is wrapped in an isolate
    (after removing any isolate-closing character of its own, which would end the wrapper early)."""
    if not _BIDI_CONTROL.search(text):
        return text
    return FIRST_STRONG_ISOLATE + text.replace(POP_DIRECTIONAL_ISOLATE, "") + POP_DIRECTIONAL_ISOLATE


def escape_markdown(text: str) -> str:
    """Text shown literally by st.markdown (on one line), whatever it contains."""
    return isolated(_escape(" ".join(text.split())))


def highlight(text: str, query: str) -> str:
    """Escaped text with the query's words (stop words aside: text.STOP_WORDS, which BM25 ignores too) in bold,
    for st.markdown."""
    words = {w for w in re.findall(r"\w+", query.lower()) if len(w) > 2 and w not in STOP_WORDS}
    if not words:
        return escape_markdown(text)
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\w*", re.IGNORECASE)
    text = " ".join(text.split())
    parts, last = [], 0
    for match in pattern.finditer(text):
        parts.append(_escape(text[last : match.start()]))
        parts.append(f"**{_escape(match.group(0))}**")
        last = match.end()
    parts.append(_escape(text[last:]))
    return isolated("".join(parts))
