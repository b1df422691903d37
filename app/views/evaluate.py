"""Evaluate: metrics of each representation, BM25 and RRF on a labelled query set, with paired significance."""

import pandas as pd
import streamlit as st

from app import ui
from indexer.evaluation import METRIC_NAMES, evaluate, format_p, pair_name

st.title("Evaluate")
searcher = ui.searcher_or_stop()
sets = ui.labelled_sets_of(searcher)
if not sets:
    st.info(
        "This index has no labelled queries: it was not built from a BEIR dataset with `queries.jsonl` "
        "and `qrels/*.tsv`. From a terminal: `python -m indexer evaluate --index DIR --queries FILE --qrels FILE`."
    )
    st.stop()

directory, sha = str(searcher.index.directory), ui.manifest_sha(searcher.index.directory)
name = st.selectbox("Labelled query set", [s.name for s in sets])
queries, qrels, issues = ui.labels(directory, sha, name)
st.caption(f"{len(queries)} queries, {sum(len(j) for j in qrels.values())} judgements")
if issues:
    with st.expander(f"{len(issues)} lines of the labels were skipped"):
        st.text("\n".join(issues))

key = f"evaluation:{directory}:{sha}:{name}"
if st.button("Run evaluation", type="primary") or key in st.session_state:
    if key not in st.session_state:
        bar = st.progress(0.0, text="starting")
        try:
            result = evaluate(
                searcher, queries, qrels, dataset=name, split=name.split(" · ")[-1], progress=False,
                on_step=lambda label, fraction: bar.progress(fraction, text=label),
            )
        except ValueError as exc:
            st.error(str(exc))
            st.stop()
        st.session_state[key] = result.to_dict()
        bar.empty()
    report = st.session_state[key]
else:
    st.stop()

st.subheader(f"{report['queries_evaluated']} queries evaluated")
if report["queries_excluded_no_positive"]:
    st.caption(f"{report['queries_excluded_no_positive']} queries without a relevant document were excluded.")
st.dataframe(pd.DataFrame(report["metrics"]).T[list(METRIC_NAMES)].style.format("{:.4f}"), width="stretch")

reps = report["representations"]
pairs = report["pairs"]
if not pairs:
    st.info(f"This index holds one representation (`{reps[0]}`): there is no paired comparison and no fusion (RRF).")
for a, b in pairs:
    st.subheader(f"{a} vs {b}, paired over queries")
    sig = pd.DataFrame(
        {
            m: {
                a: f"{s[a]:.4f}", b: f"{s[b]:.4f}", f"delta ({a} − {b})": f"{s['delta']:+.4f}",
                "t-test p": format_p(s["t_test_p"]), "randomisation p": format_p(s["randomization_p"]),
                f"{a} wins": s[f"{a}_wins"], f"{b} wins": s[f"{b}_wins"], "ties": s["ties"],
            }
            for m, s in report["significance"][pair_name(a, b)].items()
        }
    ).T
    st.dataframe(sig, width="stretch")

st.subheader("Per query")
st.caption(
    (f"Sorted by the nDCG@10 difference ({report['delta']})" if report["delta"] else "Sorted by nDCG@10")
    + "; click a column to sort, select a row to open the query in Search."
)
table = pd.DataFrame(
    [
        {"query": row["query_id"], "text": row["text"]}
        | {f"{r} nDCG@10": row[r]["ndcg@10"] for r in reps}
        | ({"delta": row["delta"]["ndcg@10"]} if report["delta"] else {})
        for row in report["per_query"]
    ]
)
selection = st.dataframe(table, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row", key="per_query")
rows = selection.selection.rows if selection else []
left, right = st.columns([4, 1], vertical_alignment="bottom")
chosen = left.selectbox("Query to open", range(len(table)), format_func=lambda i: f"{table.iloc[i]['query']} · {table.iloc[i]['text']}")
if rows or right.button("Open in Search"):
    st.session_state["query"] = table.iloc[rows[0] if rows else chosen]["text"]
    st.switch_page("views/search.py")
