"""Index: the available indexes with their manifests, and building a new one from uploaded files."""

import re
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from app import ui
from indexer import vector_index
from indexer.config import DEFAULT_REPRESENTATIONS, POOLINGS, REPRESENTATION_FORMS, parse_representations, poolings_of
from indexer.encoder import ModelError
from indexer.explore import describe_representations
from indexer.loaders import SourceError
from indexer.pipeline import BuildError, build_index
from indexer.store import StoreError, read_manifest

st.title("Indexes")

indexes = ui.available_indexes()
if not indexes:
    st.info(f"No index in `{ui.index_root()}` yet: build one below.")
for directory in indexes:
    try:
        manifest = read_manifest(directory)
    except StoreError as exc:
        st.warning(f"`{directory}`: {ui.escape_markdown(str(exc))}")
        continue
    model, counts, pooler = manifest.get("model", {}), manifest.get("counts", {}), manifest.get("pooler_check", {})
    current = directory.resolve() == ui.index_dir().resolve()
    with st.expander(f"{'● ' if current else ''}{directory.name} — {counts.get('documents')} documents, {model.get('name')}", expanded=current):
        st.table(
            pd.DataFrame(
                {
                    "model": f"{model.get('name')} ({model.get('source')})",
                    "weights sha256": model.get("weights_sha256"),
                    "pooler check": f"{pooler.get('status')}: {pooler.get('note')}",
                    "chunking": f"{manifest.get('chunking', {}).get('max_tokens')} tokens, overlap {manifest.get('chunking', {}).get('overlap')}",
                    "representations": ", ".join(manifest.get("representations", {})),
                    "vector index": vector_index.describe(manifest.get("vector_index")),
                    "documents / chunks": f"{counts.get('documents')} / {counts.get('chunks')}",
                    "created": manifest.get("created_at"),
                    "source": manifest.get("source", {}).get("path"),
                }.items(),
                columns=["", "value"],
            ).set_index("")
        )
        # st.table wraps long cells (and reads Markdown: every cell is escaped, shown as written)
        st.table(pd.DataFrame(describe_representations(manifest)).map(lambda v: ui.escape_markdown(str(v))).set_index("representation"))
        if pooler.get("status") == "missing" and "pooled" in poolings_of(manifest.get("representations", {})):
            st.warning("`pooled` vectors of this index come from a randomly initialised pooler.")
        if not current and st.button("Use this index", key=f"use:{directory}"):
            st.session_state["index_dir"] = str(directory)
            st.rerun()

st.header("Build a new index")
st.caption(
    f"Upload text, Markdown or HTML files (indexed as a folder), or one JSONL / CSV / TSV file. "
    f"Up to {ui.UPLOAD_LIMIT_MB} MB per file. Files that cannot be read are listed and skipped."
)
uploads = st.file_uploader(
    "Documents", accept_multiple_files=True, type=["txt", "md", "markdown", "html", "htm", "jsonl", "csv", "tsv"]
)
name = st.text_input("Index name", value="my-documents")
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
replace = st.checkbox("Replace an index of the same name", value=False)

if st.button("Build", type="primary", disabled=not uploads or representations is None):
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        st.error("Index names use letters, digits, '.', '_' and '-' (up to 64 characters).")
        st.stop()
    records = [u for u in uploads if Path(u.name).suffix.lower() in (".jsonl", ".csv", ".tsv")]
    if records and len(uploads) > 1:
        st.error("Upload either one JSONL / CSV / TSV file, or any number of text, Markdown and HTML files — not both.")
        st.stop()
    target = ui.index_root() / name
    if target.exists() and not replace:
        st.error(f"An index named `{name}` already exists; choose another name or tick “Replace”.")
        st.stop()
    bar = st.progress(0.0, text="loading the model")
    try:
        with tempfile.TemporaryDirectory(prefix="pooling-lab-upload-") as tmp:
            for upload in uploads:
                (Path(tmp) / Path(upload.name).name).write_bytes(upload.getvalue())
            source = Path(tmp) / Path(uploads[0].name).name if records else Path(tmp)
            encoder = ui.load_encoder(st.session_state.get("model"), representations, None)
            summary = build_index(
                source, target, encoder, overwrite=True, progress=False,
                on_progress=lambda done, total: bar.progress(min(done / total, 1.0) if total else 0.5, text=f"{done} documents"),
            )
    except (SourceError, StoreError, ModelError, BuildError, ValueError) as exc:
        bar.empty()
        st.error(ui.escape_markdown(str(exc)))
        st.stop()
    bar.empty()
    st.success(f"Indexed {summary.documents} documents into {summary.chunks} chunks in {summary.seconds:.1f} s: `{target}`")
    if summary.issues:
        st.warning(f"{summary.skipped} files or records were skipped:")
        st.dataframe(
            pd.DataFrame([{"file": Path(i.path).name, "line": i.line, "reason": i.reason} for i in summary.issues]),
            hide_index=True,
        )
    st.session_state["index_dir"] = str(target)
    st.page_link("views/search.py", label="Search the new index", icon=":material/search:")
