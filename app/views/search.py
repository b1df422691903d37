"""Search: one query, the rankings of the representations the user picks side by side, each against a baseline."""

import streamlit as st

from app import ui
from indexer.compare import against_baseline
from indexer.evaluation import per_query_metrics
from indexer.search import query_problem
from indexer.text import describe_surrogate, is_blank

st.title("Search")
searcher = ui.searcher_or_stop()
st.caption(
    f"{searcher.index.n_documents} documents, {searcher.index.n_chunks} chunks · model "
    f"`{searcher.encoder.info.name}` · scores are cosine similarities within one list; across lists compare ranks"
)

# a query handed over by another page (session state) that a text box cannot hold: say why, start empty
handed = st.session_state.get("query")
if isinstance(handed, str) and (why := describe_surrogate(handed, "the query")) is not None:
    st.session_state["query"] = ""
    st.error(f"Cannot search: {why}.")

with st.form("search"):
    left, right = st.columns([5, 1])
    query = left.text_input("Query", key="query", placeholder="e.g. why does my bread come out flat and dense")
    k = int(right.number_input("Documents per list", min_value=1, max_value=100, value=10, key="k"))
    st.form_submit_button("Search", type="primary")

if len(searcher.representations) > 1:
    left, right = st.columns([3, 1])
    with left:
        shown = ui.pick_representations(searcher.representations)
    with right:
        baseline = ui.pick_baseline(shown) if len(shown) > 1 else None
else:
    shown, baseline = list(searcher.representations), None

if is_blank(query or ""):
    st.info(f"Type a query to see the {' and '.join(f'`{r}`' for r in shown)} ranking{'s' if len(shown) > 1 else ''}"
            + (" side by side." if len(shown) > 1 else "."))
    st.stop()
if (problem := query_problem(query)) is not None:
    st.error(f"Cannot search: {problem}.")
    st.stop()

result = searcher.search(query, k=max(k, 10))  # at least 10 for nDCG@10
agreement = against_baseline({r: [h.doc_id for h in result.results[r][:k]] for r in shown}, baseline, k=k)
judged = ui.judgements_for(searcher, query)
if len(shown) == 1:
    held = "This index holds" if len(searcher.representations) == 1 else "You picked"
    st.caption(f"{held} one representation (`{shown[0]}`): there is no other ranking to compare it with.")
if judged:
    st.caption(f"Judged query `{judged[0]}`: :green-badge[:material/check: relevant] marks documents judged relevant (grade ≥ 1).")

for column, r in zip(st.columns(len(shown)), shown):
    hits, against = result.results[r], agreement.get(r)
    with column:
        st.subheader(f"`{r}`")
        if against is not None:
            left, right = st.columns(2)
            # short labels: four columns leave each metric about 100 pixels
            left.metric(f"Overlap@{k}", f"{against.overlap} of {k}", help=f"Documents in the top {k} of both `{r}` and the baseline `{baseline}`.")
            right.metric("RBO", f"{against.rbo:.2f}", help=f"Rank-biased overlap (p = 0.9) of `{r}` with the baseline `{baseline}`: "
                         "1 for the same ranking, 0 for disjoint ones; about 86% of its weight is on the top 10.")
        elif r == baseline:
            st.caption("Baseline: the other columns' arrows and agreement are relative to this ranking.")
        if judged:
            qid, grades = judged
            run = {qid: {h.doc_id: h.score for h in hits}}
            st.metric(f"nDCG@10 {r}", f"{per_query_metrics(run, {qid: grades})[qid]['ndcg@10']:.3f}")
        for hit in hits[:k]:
            grade = judged[1].get(hit.doc_id) if judged else None
            mark = " :green-badge[:material/check: relevant]" if grade else ""
            with st.container(border=True):
                st.markdown(f"**{hit.rank}.** {ui.escape_markdown(hit.title or hit.doc_id)}{mark}")
                st.caption(
                    f"{ui.escape_markdown(hit.doc_id)} · score {hit.score:.3f}"
                    + (f" · in {baseline}: {against.movement(hit.doc_id, hit.rank)}" if against is not None else "")
                    + (f" · grade {grade}" if grade is not None else "")
                )
                st.markdown(ui.highlight(hit.text, query))
