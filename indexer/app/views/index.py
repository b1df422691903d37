"""Index: the available indexes with their manifests, and building a new one from uploaded files.

Building is offered only when the app was started with `--allow-build` (the router sets it on every run).
"""

from pathlib import Path

import pandas as pd
import streamlit as st

from indexer.app import build, ui
from indexer.config import DEFAULT_REPRESENTATIONS, POOLINGS, REPRESENTATION_FORMS, parse_representations, poolings_of
from indexer.encoder import ModelError
from indexer.explore import describe_representations
from indexer.loaders import SourceError
from indexer.pipeline import BuildError
from indexer.store import Manifest, StoreError, read_manifest

st.title("Indexes")


def labels_kept(manifest: Manifest) -> str:
    """Which labelled queries an index keeps (the splits of its BEIR folder, copied at build time)."""
    if manifest.labels is not None:
        return f"kept with the index: {', '.join(manifest.labels.qrels)}"
    if manifest.source.format == "beir":
        return "read from the source folder (the index was built before labelled sets were kept)"
    return "none (not built from a BEIR folder)"


indexes = ui.available_indexes()
if not indexes:
    st.info(f"No index in `{ui.shown_path(ui.index_root())}` yet.")
for directory in indexes:
    try:
        manifest = read_manifest(directory)
    except StoreError as exc:
        st.warning(f"`{ui.shown_path(directory)}`: {ui.escape_markdown(ui.shown_text(str(exc), directory))}")
        continue
    model, counts = manifest.model, manifest.counts
    current = directory.resolve() == ui.index_dir().resolve()
    title = ui.escape_markdown(f"{directory.name} — {counts.documents} documents, {model.name}")  # folder and manifest text
    with st.expander(f"{'● ' if current else ''}{title}", expanded=current):
        source = manifest.source.path
        st.table(
            pd.DataFrame(
                {
                    "model": f"{model.name} ({model.source})",
                    "weights sha256": model.weights_sha256,
                    "pooler check": f"{model.pooler}: {model.pooler_note}",
                    "chunking": f"{manifest.chunking.max_tokens} tokens, overlap {manifest.chunking.overlap}",
                    "representations": ", ".join(manifest.representations),
                    "vector index": manifest.vector_index.label,
                    "documents / chunks": f"{counts.documents} / {counts.chunks}",
                    "created": manifest.created_at,
                    "source": ui.shown_path(source) if source else None,
                    "labelled queries": labels_kept(manifest),
                }.items(),
                columns=["", "value"],
            ).set_index("").map(lambda v: "" if v is None else ui.escape_markdown(str(v)))  # st.table reads Markdown
        )
        # st.table wraps long cells (and reads Markdown: every cell is escaped, shown as written)
        st.table(pd.DataFrame(describe_representations(manifest)).map(lambda v: ui.escape_markdown(str(v))).set_index("representation"))
        if model.pooler == "missing" and "pooled" in poolings_of(manifest.representations):
            st.warning("`pooled` vectors of this index come from a randomly initialised pooler.")
        if not current and st.button("Use this index", key=f"use:{directory}"):
            st.session_state["index_dir"] = str(directory)
            st.rerun()

st.header("Build a new index")
if not st.session_state.get("allow_build"):
    st.info(
        "Building from the browser is off. Start the app with `make run APP_ARGS=--allow-build` "
        "(or `pooling-lab app --allow-build`) to turn it on; then anyone who can open this "
        "page can add indexes (never replace one). From a terminal: `python -m indexer build SOURCE --index DIR`."
    )
    st.stop()

if (built := st.session_state.pop("_built", None)) is not None:  # kept across the rerun that switched to it
    st.session_state["build_name"] = build.free_name(ui.index_root(), built["name"])  # that name is taken now
    st.success(built["message"])
    if built["skipped"]:
        st.warning(f"{len(built['skipped'])} files or records were skipped:")
        st.dataframe(pd.DataFrame(built["skipped"]), hide_index=True)
    st.page_link("views/search.py", label="Search the new index", icon=":material/search:")

st.caption(
    f"Upload text, Markdown, HTML, PDF or Word (.docx) files (indexed as a folder), or one JSONL / CSV / TSV file; "
    f"files that cannot be read (an encrypted or scanned PDF, say) are listed and skipped. "
    f"Limits: {ui.BUILD_MAX_FILES} files, {ui.UPLOAD_LIMIT_MB} MB per file and "
    f"{ui.BUILD_MAX_TOTAL_MB} MB in all, {ui.BUILD_MAX_SECONDS // 60} minutes of building, and "
    f"{ui.BUILD_MAX_CONCURRENT} build at a time on this server. A new index needs a new name: the app never replaces one."
)
uploads = st.file_uploader(
    "Documents", accept_multiple_files=True, type=build.UPLOAD_TYPES,
    max_upload_size=ui.UPLOAD_LIMIT_MB,
)
st.session_state.setdefault("build_name", "my-documents")
name = st.text_input("Index name", key="build_name")
poolings = st.multiselect("Poolings", POOLINGS, default=DEFAULT_REPRESENTATIONS)
transformed = st.text_input(
    "Transformed representations (optional, comma-separated)", key="transformed",
    placeholder="e.g. pooled+whiten, mean+abtt3", help=REPRESENTATION_FORMS,
)
try:
    representations = parse_representations([*poolings, *transformed.split(",")])
except ValueError as exc:
    representations = None
    st.error(ui.escape_markdown(str(exc)))  # the message quotes what was typed: shown literally

problem = build.upload_problem(uploads or []) or build.name_problem(ui.index_root(), name)
if problem is not None:
    st.error(ui.escape_markdown(problem))  # names come from the uploads and the name field: shown literally

if st.button("Build", type="primary", disabled=not uploads or representations is None or problem is not None):
    root = ui.index_root()
    bar = st.progress(0.0, text="starting")
    try:
        summary = build.build(
            uploads, root, name, lambda: ui.load_encoder(st.session_state.get("model"), representations, None),
            lambda *args: bar.progress(*build.stage_text(*args)),
        )
    except (build.Refused, build.TimeLimit, SourceError, StoreError, ModelError, BuildError, ValueError, OSError) as exc:
        bar.empty()
        st.error(ui.escape_markdown(ui.shown_text(str(exc), root)))  # may quote an upload's name: shown literally
        st.stop()
    st.session_state["_built"] = {
        "name": name,
        "message": f"Indexed {summary.documents} documents into {summary.chunks} chunks in {summary.seconds:.1f} s: "
                   f"`{ui.shown_path(root / name)}`",
        "skipped": [{"file": Path(i.path).name, "line": i.line, "reason": ui.shown_text(i.reason)} for i in summary.issues],
    }
    st.session_state["index_dir"] = str(root / name)
    ui.write_url({})  # the address names the new index, so a reload stays on it
    st.rerun()  # the sidebar and the list switch to the new index
