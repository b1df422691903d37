"""Evaluate: metrics of each representation, BM25 and RRF on a labelled query set, with paired significance;
or semantic textual similarity (STS) on an uploaded file of sentence pairs, which needs no index."""

import hashlib
import json
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from indexer.app import explain, ui
from indexer.config import POOLINGS, REPRESENTATION_FORMS, parse_representation, parse_representations
from indexer.encoder import ModelError
from indexer.evaluation import (
    BM25,
    GEOMETRY_LABELS,
    GEOMETRY_NOTE,
    METRIC_NAMES,
    check_choices,
    evaluate,
    format_p,
    load_labels,
    pair_name,
    per_query_csv,
    trec_run_lines,
)
from indexer.loaders import SourceError
from indexer.search import model_name_for
from indexer.store import StoreError, is_index, read_manifest
from indexer.sts import STS_FORMATS, evaluate_sts, read_sts

RETRIEVAL = "Labelled queries (retrieval)"
STS = "Sentence pairs (STS)"
KINDS = {"retrieval": RETRIEVAL, "sts": STS}  # the URL's `kind` -> the radio's option
UPLOAD = "Upload queries and judgements…"
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


def uploaded_labels(searcher) -> tuple[str, tuple, dict, dict, list[str]] | None:
    """(name, cache key, queries, judgements, skipped-line messages) of an uploaded queries file and qrels file, read
    through evaluation.load_labels in a temporary folder that is removed at once: nothing reaches the index.
    None (with a message on the page) until both are uploaded or when they cannot be read."""
    left, right = st.columns(2)
    help_text = explain.GLOSSARY["labels_upload"]
    qfile = left.file_uploader("Queries (BEIR queries.jsonl)", type=["jsonl"], key="eval_queries_file", help=help_text)
    rfile = right.file_uploader("Judgements (BEIR qrels .tsv)", type=["tsv", "txt"], key="eval_qrels_file", help=help_text)
    if qfile is None or rfile is None:
        st.info("Upload a queries file and a judgements file to evaluate this index on them (this session only).")
        return None
    qdata, rdata = qfile.getvalue(), rfile.getvalue()
    with tempfile.TemporaryDirectory(prefix="pooling-lab-labels-") as tmp:
        qpath, rpath = Path(tmp) / "queries.jsonl", Path(tmp) / "qrels.tsv"
        qpath.write_bytes(qdata)
        rpath.write_bytes(rdata)

        def named(text: str) -> str:  # messages quote the temporary files: name the uploads instead
            return text.replace(str(qpath), qfile.name).replace(str(rpath), rfile.name)

        try:
            queries, qrels, issues = load_labels(qpath, rpath, searcher.index.doc_ids())
        except (SourceError, ValueError, OSError) as exc:
            st.error(ui.escape_markdown(named(str(exc))))
            return None
    key = ("upload", hashlib.sha256(qdata).hexdigest(), hashlib.sha256(rdata).hexdigest())
    return f"{qfile.name} + {rfile.name}", key, queries, qrels, [named(str(i)) for i in issues]


def downloads(result, report: dict) -> None:
    """The per-query table (CSV), the report (JSON, as the CLI's --json prints it) and one TREC run file per system."""
    st.markdown("**Download**")
    shown = dict(report, index=ui.shown_path(report["index"]))  # a local path only on a loopback-only app
    columns = st.columns(2 + len(result.runs))
    columns[0].download_button("per-query.csv", per_query_csv(report), file_name="per-query.csv", mime="text/csv",
                               on_click="ignore", key="download_csv", help="The per-query table: every metric of each representation")
    columns[1].download_button("report.json", json.dumps(shown, indent=2, ensure_ascii=False) + "\n", file_name="report.json",
                               mime="application/json", on_click="ignore", key="download_json",
                               help="The whole report, as `python -m indexer evaluate --json` prints it")
    for column, (system, run) in zip(columns[2:], result.runs.items()):
        column.download_button(f"{system}.run", "".join(trec_run_lines(run, system)), file_name=f"{system}.run",
                               mime="text/plain", on_click="ignore", key=f"download_run_{system}",
                               help="TREC run file (qid Q0 docid rank score tag), as trec_eval reads it")


st.title("Evaluate")
problems = ui.restore_from_url({"kind": ("evaluate_kind", lambda v: KINDS[ui.one_of(list(KINDS), "kind")(v)])})
kind = st.radio("What to evaluate", [RETRIEVAL, STS], horizontal=True, key="evaluate_kind", help=explain.GLOSSARY["sts"])
if kind == STS:
    for problem in problems:
        st.warning(ui.escape_markdown(problem))
    ui.write_url({"kind": "sts"})
    sts_section()
    st.stop()
searcher = ui.searcher_or_stop()
sets = [s.name for s in ui.labelled_sets_of(searcher)]
representations = list(searcher.representations)
problems += ui.restore_from_url({
    "set": ("eval_set", ui.one_of(sets, "labelled query set")),
    "baseline": ("eval_baseline", ui.one_of(representations if len(representations) > 1 else [], "representation")),
    "fuse": ("eval_fuse", lambda v: list(check_choices(representations, fuse=v)[1])),
})
for problem in problems:
    st.warning(ui.escape_markdown(problem))  # the values come from the link: shown literally

directory, sha = str(searcher.index.directory), searcher.index.manifest_sha256
if not sets:
    st.info(
        "This index has no labelled queries: it was not built from a BEIR dataset with `queries.jsonl` "
        "and `qrels/*.tsv`. Upload a queries file and a judgements file below to evaluate it, or from a terminal: "
        "`python -m indexer evaluate --index DIR --queries FILE --qrels FILE`."
    )
name = st.selectbox("Labelled query set", [*sets, UPLOAD], key="eval_set",
                    help="The index's own labelled sets, or queries and judgements you upload") if sets else UPLOAD
if name == UPLOAD:
    ui.write_url({})
    uploaded = uploaded_labels(searcher)
    if uploaded is None:
        st.stop()
    name, set_key, queries, qrels, issues = uploaded
    cache = ui.session_evaluations()  # an upload's evaluation stays in this session
else:
    queries, qrels, issues = ui.labels(directory, sha, name)
    set_key, cache = ("set", name), ui.evaluations()
st.caption(f"{len(queries)} queries, {sum(len(j) for j in qrels.values())} judgements")
if issues:
    with st.expander(f"{len(issues)} lines of the labels were skipped"):
        st.text("\n".join(issues))

left, right = st.columns(2)
baseline = left.selectbox("Compare against", [EVERY_PAIR, *representations], key="eval_baseline",
                          help="Each other representation against this one, or every pair. "
                               + explain.GLOSSARY["paired"] + " " + explain.GLOSSARY["holm"]) if len(representations) > 1 else EVERY_PAIR
baseline = None if baseline == EVERY_PAIR else baseline
st.session_state.setdefault("eval_fuse", [])
fuse = right.multiselect("Fuse (reciprocal-rank fusion)", [*representations, BM25], key="eval_fuse",
                         help="Two or more rankings to fuse into one more system, `rrf`; none: no fusion. " + explain.GLOSSARY["rrf"])
if set_key[0] == "set":
    ui.write_url({"set": name, "baseline": baseline, "fuse": fuse})
if len(fuse) == 1:
    st.warning("Fusion needs two or more rankings; pick another one or none.")
    st.stop()

# Cached per (index directory, generation, model, labelled set): a link to an evaluation already made shows it, and
# a new baseline or fusion reuses the runs (BM25 and each representation's) of an earlier evaluation of the set.
prefix = (directory, sha, st.session_state.get("model"), set_key)
key = prefix + (baseline, tuple(fuse))
entry = cache.get(key)
earlier = cache.same_set(prefix)
pressed = st.button("Run evaluation", type="primary",
                    help="Ranks every judged query in each representation and with BM25; the runs are kept for this index generation.")
if entry is None and (pressed or earlier is not None):
    bar = st.progress(0.0, text="starting")
    try:
        result = evaluate(
            searcher, queries, qrels, dataset=name, split=name.split(" · ")[-1], progress=False,
            on_step=lambda label, fraction: bar.progress(fraction, text=label), baseline=baseline, fuse=fuse or None,
            reuse=earlier[0] if earlier is not None else None,
        )
    except ValueError as exc:
        bar.empty()
        st.error(ui.escape_markdown(str(exc)))
        st.stop()
    entry = (result, result.to_dict())
    cache.put(key, entry)
    bar.empty()
if entry is None:
    st.stop()
result, report = entry

st.subheader(f"{report['queries_evaluated']} queries evaluated")
if report["queries_excluded_no_positive"]:
    st.caption(f"{report['queries_excluded_no_positive']} queries without a relevant document were excluded.")
metrics = pd.DataFrame(report["metrics"]).T[list(METRIC_NAMES)]
geometry = pd.DataFrame({s: report["geometry"].get(s) or {} for s in metrics.index}).T.reindex(columns=list(GEOMETRY_LABELS))
st.dataframe(pd.concat([metrics, geometry.rename(columns=GEOMETRY_LABELS)], axis=1).astype(float).style.format("{:.4f}", na_rep="—"),
             width="stretch")
st.caption(" ".join([explain.GLOSSARY["ndcg"], explain.GLOSSARY["metrics"], explain.GLOSSARY["bm25"]]))
st.caption(ui.escape_markdown(GEOMETRY_NOTE))
if (sentence := explain.most_anisotropic(report["geometry"])) is not None:
    st.markdown(sentence)
st.caption(f"Fused (rrf): {', '.join(report['fusion']['of'])}" if report.get("fusion") else "No fusion (choose rankings to fuse above).")
for sentence in explain.verdicts(report):
    st.markdown(sentence)

reps = report["representations"]
pairs = report["pairs"]
corrected = report["correction"]["applied"]
if not pairs:
    st.info(f"This index holds one representation (`{reps[0]}`): there is no paired comparison.")
else:
    st.caption(explain.GLOSSARY["paired"])
if corrected:
    st.caption(f"{len(pairs)} pairs tested: p-values are also given Holm-corrected over the pairs (per metric). "
               + explain.GLOSSARY["holm"])
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
downloads(result, report)
