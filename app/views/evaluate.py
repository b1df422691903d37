"""Evaluate: metrics of each representation, BM25 and RRF on a labelled query set, with paired significance;
or semantic textual similarity (STS) on an uploaded file of sentence pairs, which needs no index."""

import hashlib
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from app import ui
from indexer.config import POOLINGS, REPRESENTATION_FORMS, parse_representation, parse_representations
from indexer.encoder import ModelError
from indexer.evaluation import BM25, GEOMETRY_LABELS, GEOMETRY_NOTE, METRIC_NAMES, evaluate, format_p, pair_name
from indexer.loaders import SourceError
from indexer.search import model_name_for
from indexer.store import StoreError, is_index, read_manifest
from indexer.sts import STS_FORMATS, evaluate_sts, read_sts

STS = "Sentence pairs (STS)"
#: Offered in the picker (any other valid name can be typed); the default shows what whitening does to each.
STS_CHOICES = list(POOLINGS) + [f"{p}+whiten" for p in POOLINGS] + [f"{p}+abtt3" for p in POOLINGS]
STS_DEFAULT = ["pooled", "mean", "pooled+whiten", "mean+whiten"]
EVERY_PAIR = "(every pair)"


def sts_model() -> str | None:
    """The app's --model, else the current index's model when there is one, else the bundled model (None)."""
    model = st.session_state.get("model")
    if model is not None or not is_index(ui.index_dir()):
        return model
    try:
        return model_name_for(read_manifest(ui.index_dir()))
    except (StoreError, OSError, ValueError):
        return None


def sts_section() -> None:
    """Upload a file of scored sentence pairs, pick representations, and show correlations, geometry and paired tests."""
    upload = st.file_uploader(
        "STS file", type=[s.lstrip(".") for s in STS_FORMATS], key="sts_file",
        help="STS Benchmark layout (.tsv/.txt: genre, file, year, id, score, sentence 1, sentence 2; tab-separated, "
             "no header, no quoting), or .csv / .jsonl with fields sentence1, sentence2, score",
    )
    chosen = st.multiselect("Representations", STS_CHOICES, default=STS_DEFAULT, key="sts_representations", accept_new_options=True,
                            help=f"Any other name can be typed: {REPRESENTATION_FORMS}")
    try:
        representations = parse_representations(chosen)
    except ValueError as exc:
        st.error(ui.escape_markdown(str(exc)))
        return
    baseline = st.selectbox("Compare against", [EVERY_PAIR, *representations], key="sts_baseline")
    baseline = None if baseline == EVERY_PAIR else baseline
    fit_on = None
    if any(parse_representation(r).transform for r in representations) and is_index(ui.index_dir()):
        where = ui.escape_markdown(ui.index_dir().name)
        if st.checkbox(f"Fit the transforms on the current index ({where}) instead of the STS sentences", key="sts_fit_on"):
            fit_on = ui.index_dir()
    model = sts_model()
    st.caption(f"Model: {ui.escape_markdown(model or 'bundled all-MiniLM-L6-v2')}")
    if upload is None:
        st.info("Upload a file of sentence pairs with gold similarity scores to compare the representations on it.")
        return
    data = upload.getvalue()
    key = ("sts", hashlib.sha256(data).hexdigest(), upload.name, representations, baseline, str(fit_on), model)
    if st.button("Run STS evaluation", type="primary", key="sts_run"):
        bar = st.progress(0.0, text="reading")
        path = Path("upload")
        try:
            with tempfile.TemporaryDirectory(prefix="pooling-lab-sts-") as tmp:
                path = Path(tmp) / f"upload{Path(upload.name).suffix.lower()}"
                path.write_bytes(data)
                pairs = read_sts(path)
            encoder = ui.load_encoder(model, representations, None)
            result = evaluate_sts(pairs, encoder, representations, fit_on=fit_on, baseline=baseline, progress=False,
                                  on_step=lambda label, fraction: bar.progress(fraction, text=label))
        except (SourceError, StoreError, ModelError, ValueError, OSError) as exc:
            bar.empty()
            st.error(ui.escape_markdown(str(exc).replace(str(path), upload.name)))  # a message may quote the file
            return
        bar.empty()
        st.session_state["sts_report"] = (key, result.to_dict())
    stored = st.session_state.get("sts_report")
    if stored is None or stored[0] != key:
        return
    report = stored[1]
    st.subheader(f"{report['pairs']} sentence pairs")
    st.caption(f"{report['sentences']} unique sentences; cosine against the gold scores, correlations ×100; 95% interval: "
               f"bootstrap over pairs ({report['bootstrap']['resamples']} resamples).")
    st.dataframe(pd.DataFrame([
        {"representation": r, "Spearman": m["spearman"], "95% CI": _interval(m["spearman_ci95"]), "Pearson": m["pearson"],
         "anisotropy": m["anisotropy"], "effective rank": m["effective_rank"], "top-3 variance": m["top3_variance"]}
        for r, m in report["metrics"].items()
    ]).set_index("representation"), width="stretch")
    for r, fitted in report["transforms"].items():
        st.text(f"{r}: {fitted['description']}")
    if report["comparisons"]:
        against = f"each against {report['baseline']}" if report["baseline"] else "every pair"
        st.subheader(f"Paired bootstrap of the Spearman difference ({against})")
        st.dataframe(pd.DataFrame([
            {"comparison": c["pair"], "Δ Spearman": c["delta"], "95% CI": _interval(c["delta_ci95"]), "p": format_p(c["p"]),
             "Holm p" if len(report["comparisons"]) > 1 else "p (one test)": format_p(c["p_holm"])}
            for c in report["comparisons"]
        ]).set_index("comparison"), width="stretch")
    else:
        st.info(f"One representation ({report['representations'][0]}): no paired comparison.")
    if report["skipped"]:
        with st.expander(f"{len(report['skipped'])} lines of {ui.escape_markdown(upload.name)} were skipped"):
            st.dataframe(pd.DataFrame([{"line": s["line"], "reason": s["reason"]} for s in report["skipped"]]), hide_index=True)


def _interval(pair) -> str:
    lo, hi = pair
    return "—" if lo is None or hi is None else f"{lo:.2f} – {hi:.2f}"


st.title("Evaluate")
if st.radio("What to evaluate", ["Labelled queries (retrieval)", STS], horizontal=True, key="evaluate_kind") == STS:
    sts_section()
    st.stop()
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

representations = list(searcher.representations)
left, right = st.columns(2)
baseline = left.selectbox("Compare against", [EVERY_PAIR, *representations], key="eval_baseline",
                          help="Each other representation against this one, or every pair; p-values are Holm-corrected "
                               "when more than one pair is tested.") if len(representations) > 1 else EVERY_PAIR
baseline = None if baseline == EVERY_PAIR else baseline
fuse = right.multiselect("Fuse (reciprocal-rank fusion)", [*representations, BM25], default=[], key="eval_fuse",
                         help="Two or more rankings to fuse into one more system, `rrf`; none: no fusion.")
if len(fuse) == 1:
    st.warning("Fusion needs two or more rankings; pick another one or none.")
    st.stop()

key = f"evaluation:{directory}:{sha}:{name}:{baseline}:{','.join(fuse)}"
if st.button("Run evaluation", type="primary") or key in st.session_state:
    if key not in st.session_state:
        bar = st.progress(0.0, text="starting")
        try:
            result = evaluate(
                searcher, queries, qrels, dataset=name, split=name.split(" · ")[-1], progress=False,
                on_step=lambda label, fraction: bar.progress(fraction, text=label), baseline=baseline, fuse=fuse or None,
            )
        except ValueError as exc:
            st.error(ui.escape_markdown(str(exc)))
            st.stop()
        st.session_state[key] = result.to_dict()
        bar.empty()
    report = st.session_state[key]
else:
    st.stop()

st.subheader(f"{report['queries_evaluated']} queries evaluated")
if report["queries_excluded_no_positive"]:
    st.caption(f"{report['queries_excluded_no_positive']} queries without a relevant document were excluded.")
metrics = pd.DataFrame(report["metrics"]).T[list(METRIC_NAMES)]
geometry = pd.DataFrame({s: report["geometry"].get(s) or {} for s in metrics.index}).T.reindex(columns=list(GEOMETRY_LABELS))
st.dataframe(pd.concat([metrics, geometry.rename(columns=GEOMETRY_LABELS)], axis=1).style.format("{:.4f}", na_rep="—"),
             width="stretch")
st.caption(ui.escape_markdown(GEOMETRY_NOTE))
st.caption(f"Fused (rrf): {', '.join(report['fusion']['of'])}" if report.get("fusion") else "No fusion (choose rankings to fuse above).")

reps = report["representations"]
pairs = report["pairs"]
corrected = report["correction"]["applied"]
if not pairs:
    st.info(f"This index holds one representation (`{reps[0]}`): there is no paired comparison.")
elif corrected:
    st.caption(f"{len(pairs)} pairs tested: p-values are also given Holm-corrected over the pairs (per metric).")
for a, b in pairs:
    st.subheader(f"{a} vs {b}, paired over queries")
    sig = pd.DataFrame(
        {
            m: {
                a: f"{s[a]:.4f}", b: f"{s[b]:.4f}", f"delta ({a} − {b})": f"{s['delta']:+.4f}",
                "t-test p": format_p(s["t_test_p"]), "randomisation p": format_p(s["randomization_p"]),
            }
            | ({"t-test p (Holm)": format_p(s["t_test_p_holm"]), "randomisation p (Holm)": format_p(s["randomization_p_holm"])}
               if corrected else {})
            | {f"{a} wins": s[f"{a}_wins"], f"{b} wins": s[f"{b}_wins"], "ties": s["ties"]}
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
