"""Explore: the geometry of the representations the user picks — anisotropy, effective rank, similarity distributions, a 2-D map."""

import altair as alt
import pandas as pd
import streamlit as st

from app import ui
from indexer.explore import relevance_similarities

st.title("Explore")
searcher = ui.searcher_or_stop()
directory, sha = str(searcher.index.directory), ui.manifest_sha(searcher.index.directory)
reps = ui.pick_representations(searcher.representations)
sample = ui.document_sample(directory, sha)

st.subheader("Geometry")
st.caption(
    f"On the stored vectors of {len(sample['doc_ids'])} documents (a seeded sample, first chunk each). "
    "Anisotropy: mean cosine of random pairs — near 1, vectors crowd into a narrow cone where small score "
    "differences decide the ranking. Effective rank: how many directions the variance really spreads over. "
    "Top-3 variance share: how much the three main directions dominate — what whitening and all-but-the-top remove."
)
if len(sample["doc_ids"]) < 2:
    st.info("The geometry of a space needs at least two documents.")
else:
    for col, r in zip(st.columns(len(reps)), reps):
        g = sample["geometry"][r]
        col.metric(f"`{r}` anisotropy", f"{g['anisotropy']:.3f}")
        col.metric(f"`{r}` effective rank", f"{g['effective_rank']:.1f}")
        col.metric(f"`{r}` top-3 variance share", f"{g['top3_variance']:.1%}")

sets = ui.labelled_sets_of(searcher)
st.subheader("Query–document similarity, relevant vs non-relevant")
if not sets:
    st.info("This index has no labelled queries, so relevant and non-relevant pairs cannot be told apart.")
else:
    name = st.selectbox("Labelled query set", [s.name for s in sets])
    queries, qrels, _ = ui.labels(directory, sha, name)
    sims = relevance_similarities(searcher, queries, qrels, reps, extra_docs=sample["doc_ids"])
    colours = alt.Scale(domain=["relevant", "non-relevant"], range=["#2a9d8f", "#e76f51"])
    for col, r in zip(st.columns(len(reps)), reps):
        data = pd.concat([pd.DataFrame({"cosine": v, "pairs": kind}) for kind, v in sims[r].items()])
        chart = (
            alt.Chart(data)
            .mark_bar(opacity=0.6)
            .encode(
                x=alt.X("cosine:Q", bin=alt.Bin(maxbins=40), title="cosine similarity"),
                y=alt.Y("count():Q", stack=None, title="pairs"),
                color=alt.Color("pairs:N", scale=colours, legend=alt.Legend(orient="bottom", title=None)),
            )
            .properties(title=r, height=240)
        )
        col.altair_chart(chart)
    st.caption("Non-relevant: pairs judged 0 plus 20 random unjudged documents per query. A document scores as its best chunk.")

st.subheader("2-D map (PCA) of the same documents in each space")
labels = [f"{d} · {t}" if t else d for d, t in zip(sample["doc_ids"], sample["titles"])]
chosen = st.selectbox("Highlight a document", range(len(labels)), format_func=lambda i: labels[i])
for col, r in zip(st.columns(len(reps)), reps):
    points = pd.DataFrame(sample["maps"][r], columns=["x", "y"]).assign(
        document=sample["doc_ids"], title=sample["titles"], selected=[i == chosen for i in range(len(labels))]
    )
    chart = (
        alt.Chart(points)
        .mark_circle()
        .encode(
            x=alt.X("x:Q", title="PC 1"),
            y=alt.Y("y:Q", title="PC 2"),
            color=alt.condition("datum.selected", alt.value("#d62828"), alt.value("#8ecae6")),
            size=alt.condition("datum.selected", alt.value(180), alt.value(20)),
            order=alt.Order("selected:N"),
            tooltip=["document:N", "title:N"],
        )
        .properties(title=r, height=360)
    )
    col.altair_chart(chart)
