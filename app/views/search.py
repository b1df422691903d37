"""Search: one query, the rankings of every representation side by side, and how far they agree."""

import streamlit as st

from app import ui
from indexer.compare import counterpart, movement, other_ranks, overlap_at_k, rank_biased_overlap
from indexer.evaluation import per_query_metrics
from indexer.search import query_problem
from indexer.text import describe_surrogate, is_blank

st.title("Search")
searcher = ui.searcher_or_stop()
reps = list(searcher.representations)
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
    k = right.number_input("Documents per list", min_value=1, max_value=100, value=10, key="k")
    st.form_submit_button("Search", type="primary")

if is_blank(query or ""):
    st.info(f"Type a query to see the {' and '.join(f'`{r}`' for r in reps)} ranking{'s' if len(reps) > 1 else ''}"
            + (" side by side." if len(reps) > 1 else "."))
    st.stop()
if (problem := query_problem(query)) is not None:
    st.error(f"Cannot search: {problem}.")
    st.stop()

result = searcher.search(query, k=max(int(k), 10))  # at least 10 for nDCG@10
lists = {r: [h.doc_id for h in hits[: int(k)]] for r, hits in result.results.items()}
judged = ui.judgements_for(searcher, query)

n_metrics = (2 if len(reps) > 1 else 0) + (len(reps) if judged else 0)
cols = st.columns(n_metrics) if n_metrics else []
if len(reps) > 1:
    a, b = reps[:2]
    cols[0].metric(f"Shared documents (overlap@{k})", f"{overlap_at_k(lists[a], lists[b], int(k))} of {int(k)}",
                   help=f"`{a}` and `{b}`")
    cols[1].metric("Rank-biased overlap (p = 0.9)", f"{rank_biased_overlap(lists[a], lists[b]):.2f}", help=f"`{a}` and `{b}`")
else:
    st.caption(f"This index holds one representation (`{reps[0]}`): there is no other ranking to compare it with.")
if judged:
    qid, grades = judged
    run = {r: {qid: {h.doc_id: h.score for h in hits}} for r, hits in result.results.items()}
    for col, r in zip(cols[2 if len(reps) > 1 else 0 :], reps):
        col.metric(f"nDCG@10 {r}", f"{per_query_metrics(run[r], {qid: grades})[qid]['ndcg@10']:.3f}")
    st.caption(f"Judged query `{qid}`: :green-badge[:material/check: relevant] marks documents judged relevant (grade ≥ 1).")

# each list is compared with its counterpart (compare.counterpart): pooled <-> mean, cls -> pooled
for column, (r, hits) in zip(st.columns(len(result.results)), result.results.items()):
    other = counterpart(reps, r)
    with column:
        st.subheader(f"`{r}`")
        where = other_ranks(lists[r], lists[other]) if other is not None else {}
        for hit in hits[: int(k)]:
            grade = judged[1].get(hit.doc_id) if judged else None
            mark = " :green-badge[:material/check: relevant]" if grade else ""
            with st.container(border=True):
                st.markdown(f"**{hit.rank}.** {ui.escape_markdown(hit.title or hit.doc_id)}{mark}")
                st.caption(
                    f"{ui.escape_markdown(hit.doc_id)} · score {hit.score:.3f}"
                    + (f" · in {other}: {movement(hit.rank, where[hit.doc_id])}" if other is not None else "")
                    + (f" · grade {grade}" if grade is not None else "")
                )
                st.markdown(ui.highlight(hit.text, query))
