"""Search: one query, the `pooled` and `mean` rankings side by side, and how far they agree."""

import streamlit as st

from app import ui
from indexer.compare import movement, other_ranks, overlap_at_k, rank_biased_overlap
from indexer.evaluation import per_query_metrics

st.title("Search")
searcher = ui.searcher_or_stop()
st.caption(
    f"{searcher.index.n_documents} documents, {searcher.index.n_chunks} chunks · model "
    f"`{searcher.encoder.info.name}` · scores are cosine similarities within one list; across lists compare ranks"
)

with st.form("search"):
    left, right = st.columns([5, 1])
    query = left.text_input("Query", key="query", placeholder="e.g. why does my bread come out flat and dense")
    k = right.number_input("Documents per list", min_value=1, max_value=100, value=10, key="k")
    st.form_submit_button("Search", type="primary")

if not query.strip():
    st.info("Type a query to see the `pooled` and `mean` rankings side by side.")
    st.stop()

result = searcher.search(query, k=max(int(k), 10))  # at least 10 for nDCG@10
lists = {r: [h.doc_id for h in hits[: int(k)]] for r, hits in result.results.items()}
pooled, mean = lists["pooled"], lists["mean"]
judged = ui.judgements_for(searcher, query)

cols = st.columns(4 if judged else 2)
cols[0].metric(f"Shared documents (overlap@{k})", f"{overlap_at_k(pooled, mean, int(k))} of {int(k)}")
cols[1].metric("Rank-biased overlap (p = 0.9)", f"{rank_biased_overlap(pooled, mean):.2f}")
if judged:
    qid, grades = judged
    run = {r: {qid: {h.doc_id: h.score for h in hits}} for r, hits in result.results.items()}
    for col, r in zip(cols[2:], ("pooled", "mean")):
        col.metric(f"nDCG@10 {r}", f"{per_query_metrics(run[r], {qid: grades})[qid]['ndcg@10']:.3f}")
    st.caption(f"Judged query `{qid}`: :green-badge[:material/check: relevant] marks documents judged relevant (grade ≥ 1).")

# each list is compared with its counterpart: pooled <-> mean, cls -> mean
counterpart = {"pooled": "mean", "mean": "pooled", "cls": "mean"}
for column, (r, hits) in zip(st.columns(len(result.results)), result.results.items()):
    with column:
        st.subheader(f"`{r}`")
        where = other_ranks(lists[r], lists[counterpart[r]])
        for hit in hits[: int(k)]:
            grade = judged[1].get(hit.doc_id) if judged else None
            mark = " :green-badge[:material/check: relevant]" if grade else ""
            with st.container(border=True):
                st.markdown(f"**{hit.rank}.** {ui.escape_markdown(hit.title or hit.doc_id)}{mark}")
                st.caption(
                    f"{ui.escape_markdown(hit.doc_id)} · score {hit.score:.3f} · in {counterpart[r]}: "
                    f"{movement(hit.rank, where[hit.doc_id])}" + (f" · grade {grade}" if grade is not None else "")
                )
                st.markdown(ui.highlight(hit.text, query))
