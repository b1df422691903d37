"""Explore: the geometry of the representations the user picks — anisotropy, effective rank, similarity distributions,
a 2-D map with the Search page's query and its hits on it."""

import altair as alt
import pandas as pd
import streamlit as st

from indexer.app import explain, ui
from indexer.explore import MAP_MINIMUM, NEGATIVES, NEGATIVES_PER_QUERY, densities, query_points
from indexer.search import query_problem

#: px of a chart in all. Streamlit's theme spends ~80 px on the axes, more on a title or a legend above or below,
#: so the histograms have neither (the column's heading and a caption say what they show): ~240 px of plot in Chromium.
HEIGHT = 320
COLOURS = {"relevant": "#2a9d8f", "non-relevant": "#e76f51"}
#: How each kind of negatives (explore.NEGATIVES) is named on the page.
NEGATIVE_LABELS = {"random": "random unjudged", "hard": "hard (top-ranked, not relevant)"}
#: What each point on the map is, and its colour.
KINDS = {
    "document": "#9ec9e2", "query": "#000000", "hit": "#f4a261", "hit: relevant": "#2a9d8f",
    "hit: judged not relevant": "#e76f51", "hit: unjudged": "#f4a261", "relevant, not in the top 10": "#6a4c93",
}


def searchable(value: str) -> str:
    """A URL's query, refused when it cannot be searched (blank, a lone surrogate: search.query_problem)."""
    if (problem := query_problem(value)) is not None:
        raise ValueError(problem)
    return value


def histogram(rows: list[dict]) -> alt.Chart:
    """Relevant and non-relevant pairs' cosines as densities on shared bins, overlaid."""
    colours = alt.Scale(domain=list(COLOURS), range=list(COLOURS.values()))
    return (
        alt.Chart(pd.DataFrame(rows, columns=["kind", "start", "end", "density"]))
        .mark_bar(opacity=0.55, binSpacing=0)
        .encode(
            x=alt.X("start:Q", title="cosine similarity", scale=alt.Scale(zero=False)), x2="end:Q",
            y=alt.Y("density:Q", stack=None, title="density"), y2=alt.datum(0),  # bars rise from 0
            color=alt.Color("kind:N", scale=colours, legend=None),  # named in the caption: a legend costs plot height
            tooltip=["kind:N", alt.Tooltip("start:Q", format=".3f"), alt.Tooltip("end:Q", format=".3f"), alt.Tooltip("density:Q", format=".2f")],
        )
        .properties(height=HEIGHT)
    )


def map_points(sample: dict, r: str, placed: dict | None, grades: dict[str, int] | None, chosen: str | None) -> pd.DataFrame:
    """The map's points in representation r: the sample's documents, then the query's hits and the query (when
    there is one), coloured by relevance where the query has judgements."""
    hit_ids = {doc for _, doc, _, _ in placed["hits"]} if placed else set()
    rows = [{"x": x, "y": y, "document": d, "title": t, "kind": "document", "rank": None}
            for (x, y), d, t in zip(sample["maps"][r], sample["doc_ids"], sample["titles"]) if d not in hit_ids]
    if placed:
        for rank, doc, title, (x, y) in placed["hits"]:
            kind = "hit" if grades is None else (
                "hit: unjudged" if doc not in grades else "hit: relevant" if grades[doc] > 0 else "hit: judged not relevant")
            rows.append({"x": x, "y": y, "document": doc, "title": title, "kind": kind, "rank": rank})
        x, y = placed["query"]
        rows.append({"x": x, "y": y, "document": "", "title": st.session_state.get("query", ""), "kind": "query", "rank": None})
    if grades:
        missed = {d for d, g in grades.items() if g > 0} - hit_ids
        for row in rows:
            if row["kind"] == "document" and row["document"] in missed:
                row["kind"] = "relevant, not in the top 10"
    points = pd.DataFrame(rows)
    points["selected"] = points["document"] == chosen
    points["marker"] = ["cross" if k == "query" else "circle" for k in points["kind"]]
    points["size"] = [220 if sel or k == "query" else 20 if k == "document" else 70 for sel, k in zip(points["selected"], points["kind"])]
    return points


def map_chart(points: pd.DataFrame) -> alt.Chart:
    kinds = [k for k in KINDS if k in set(points["kind"])]
    return (
        alt.Chart(points)
        .mark_point(filled=True, opacity=0.85)
        .encode(
            x=alt.X("x:Q", title="PC 1"), y=alt.Y("y:Q", title="PC 2"),
            color=alt.Color("kind:N", scale=alt.Scale(domain=kinds, range=[KINDS[k] for k in kinds]),
                            legend=alt.Legend(orient="bottom", title=None, columns=2)),
            shape=alt.Shape("marker:N", scale=None, legend=None),
            size=alt.Size("size:Q", scale=None, legend=None),
            stroke=alt.condition("datum.selected", alt.value("#d62828"), alt.value("transparent")),
            strokeWidth=alt.value(2),
            order=alt.Order("selected:N"),
            tooltip=["title:N", "document:N", "kind:N", "rank:Q"],
        )
        .properties(height=HEIGHT + 140)  # its legend below takes ~100 px
    )


st.title("Explore")
searcher = ui.searcher_or_stop()
directory, sha = str(searcher.index.directory), searcher.index.manifest_sha256
sample = ui.document_sample(directory, sha)
everyone = list(searcher.representations)
sets = [s.name for s in ui.labelled_sets_of(searcher)]
before = st.session_state.get("shown")
problems = ui.restore_from_url({
    "reps": ("shown", ui.pick_of(everyone)),
    "set": ("explore_set", ui.one_of(sets, "labelled query set")),
    "doc": ("explore_doc", ui.one_of(sample["doc_ids"], "document in the map's sample")),
    "negatives": ("explore_negatives", ui.one_of(NEGATIVES, "kind of negatives")),
    "q": ("query", searchable),  # the Search page's query, placed on the map
})
if st.session_state.get("shown") != before:
    st.session_state.pop("columns", None)  # the link's pick, not the widget's last value
for problem in problems:
    st.warning(ui.escape_markdown(problem))  # the values come from the link: shown literally
# the Search page's query, kept while this page reruns (a widget's value is dropped on pages that do not draw it)
if "query" in st.session_state:
    st.session_state["query"] = st.session_state["query"]
reps = ui.pick_representations(everyone)
n = len(sample["doc_ids"])

st.subheader("Geometry")
if n < 2:
    st.info(f"This index holds {n} document{'s' if n != 1 else ''}: anisotropy, effective rank and the top-3 variance "
            f"share need at least 2 documents, and the map at least {MAP_MINIMUM}. Add documents to explore the space "
            "(the Index page, or `python -m indexer add`).")
else:
    st.caption(f"On the stored vectors of {n} documents (a seeded sample, first chunk each).")
    for col, r in zip(st.columns(len(reps)), reps):
        g = sample["geometry"][r]
        col.metric(f"`{r}` anisotropy", f"{g['anisotropy']:.3f}", help=explain.GLOSSARY["anisotropy"])
        col.metric(f"`{r}` effective rank", f"{g['effective_rank']:.1f}", help=explain.GLOSSARY["effective_rank"])
        col.metric(f"`{r}` top-3 variance share", f"{g['top3_variance']:.1%}", help=explain.GLOSSARY["top3_variance"])
    if (sentence := explain.most_anisotropic({r: sample["geometry"][r] for r in reps})) is not None:
        st.markdown(sentence)

st.subheader("Query–document similarity, relevant vs non-relevant")
name = negatives = None
if not sets:
    st.info("This index has no labelled queries, so relevant and non-relevant pairs cannot be told apart.")
else:
    left, right = st.columns([2, 3])
    name = left.selectbox("Labelled query set", sets, key="explore_set")
    st.session_state.setdefault("explore_negatives", "random")
    negatives = right.radio("Non-relevant pairs", NEGATIVES, format_func=NEGATIVE_LABELS.get, horizontal=True,
                            key="explore_negatives", help=explain.GLOSSARY["negatives"])
    sims = ui.relevance_similarities(directory, sha, name, tuple(reps), negatives, tuple(sample["doc_ids"]))
    for col, r in zip(st.columns(len(reps)), reps):
        col.markdown(f"**`{r}`**")
        col.altair_chart(histogram(densities(sims[r])))
    st.caption(f"Green: relevant pairs (judged ≥ 1). Orange: non-relevant pairs, judged 0 plus {NEGATIVES_PER_QUERY} "
               f"{NEGATIVE_LABELS[negatives]} documents per query. A document scores as its best chunk. "
               + explain.GLOSSARY["densities"])

st.subheader("2-D map (PCA) of the same documents in each space")
labels = {d: f"{d} · {t}" if t else d for d, t in zip(sample["doc_ids"], sample["titles"])}
chosen = st.selectbox("Highlight a document", sample["doc_ids"], format_func=labels.get, key="explore_doc") if n else None
query = st.session_state.get("query") or ""
query = query if isinstance(query, str) and query.strip() and query_problem(query) is None else ""
ui.write_url({"reps": reps if len(everyone) > 1 else None, "set": name, "doc": chosen, "negatives": negatives, "q": query})
if n < MAP_MINIMUM:
    st.info(f"A map needs at least {MAP_MINIMUM} documents; this index holds {n}.")
    st.stop()
placed = grades = None
if query:
    placed = query_points(searcher, query, reps, sample["axes"])
    judged = ui.judgements_for(searcher, query)
    grades = judged[1] if judged else None
    st.caption(f"With the Search page's query (the cross) and its top 10 in each space"
               f"{', coloured by their judgements' if grades else ''}: “{ui.escape_markdown(query)}”. "
               "Hover a point for its title.")
else:
    st.caption("Search for a query on the Search page to see it and its hits on the map. Hover a point for its title.")
st.caption(explain.GLOSSARY["pca_map"])
for col, r in zip(st.columns(len(reps)), reps):
    col.markdown(f"**`{r}`**")
    col.altair_chart(map_chart(map_points(sample, r, placed and placed[r], grades, chosen)))
