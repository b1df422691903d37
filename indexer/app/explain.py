"""Short explanations shown in place on the app's pages (tooltips, captions): one home for every one of them,
so a newcomer can read a page without the README and two pages never explain a word differently.

Plain text (no Markdown beyond backticks): pages show them with `help=` or `st.caption`.
"""

from __future__ import annotations

from typing import Mapping

from indexer.compare import AGREEMENT_DEPTH, SEARCH_DEPTH
from indexer.config import parse_representation
from indexer.evaluation import pair_name

#: What each pooling turns the model's token vectors into (one vector per chunk).
POOLINGS = {
    "pooled": "BERT's pooler output: the [CLS] token's last hidden state passed through the dense + tanh layer "
              "trained for next-sentence prediction (not for similarity).",
    "mean": "The mean of the last layer's token vectors (padding excluded): what sentence-transformers models "
            "such as all-MiniLM-L6-v2 are trained to use.",
    "cls": "The [CLS] token's last hidden state, without the pooler layer.",
    "max": "The element-wise maximum over the last layer's token vectors (padding excluded).",
    "first_last": "The mean over tokens of the first and the last transformer layers, averaged.",
}

#: What each transform does to a pooling's vectors (fitted on this collection's own vectors).
TRANSFORMS = {
    "whiten": "whitening: centred and rotated so every direction has the same variance (BERT-whitening); "
              "`whitenK` keeps the K directions of largest variance.",
    "abtt": "all-but-the-top: centred, with the D directions of largest variance removed (`abttD`).",
}

GLOSSARY = {
    "cosine": "Scores are cosine similarities within one list; across lists compare ranks, not scores.",
    "arrows": "Beside each hit: its place in the baseline's ranking. ↑2 = the baseline ranks it 2 places higher "
              "(better), ↓3 = 3 places lower, = the same place; \"rank 57\" = the baseline has it below the hits "
              f"shown, at rank 57; \"not in top {SEARCH_DEPTH}\" = not among the baseline's first {SEARCH_DEPTH} "
              "documents.",
    "overlap": "Overlap: how many documents the top of this list shares with the top of the baseline's, counted "
               f"on the first {AGREEMENT_DEPTH} of each whatever number of hits is shown (all documents on a smaller "
               "index).",
    "rbo": "Rank-biased overlap (p = 0.9): agreement of two rankings weighted towards the top; 1 for the same "
           "ranking, 0 for disjoint ones; about 86% of its weight lies on the first 10 ranks.",
    "anisotropy": "Anisotropy: the mean cosine of random pairs of vectors. Near 1, vectors crowd into a narrow "
                  "cone, and small score differences decide the ranking.",
    "effective_rank": "Effective rank: how many directions the variance really spreads over (exp of the entropy "
                      "of the covariance spectrum).",
    "top3_variance": "Top-3 variance share: how much the three main directions dominate — what whitening and "
                     "all-but-the-top remove.",
    "ndcg": "nDCG@10: graded relevance of the top 10, discounted by rank, divided by the best possible; 1 is a "
            "perfect ranking.",
    "rrf": "Reciprocal-rank fusion: one ranking made from several by summing 1 / (60 + rank) per document.",
    "paired": "Paired tests compare two systems query by query: the t-test on the per-query differences, and a "
              "randomisation test that swaps the two systems' scores at random. A small p (below 0.05) says the "
              "difference is unlikely to be chance on this query set; it says nothing about its size.",
    "holm": "Holm correction: when several pairs are tested, each p-value is adjusted so that the chance of any "
            "false alarm stays at the stated level.",
    "grades": "Grades are the labelled set's judgements: in TREC's scale 0 = not relevant, 1 = related, "
              "2 = highly relevant, 3 = perfectly relevant. Unjudged documents have no grade: not known to be "
              "irrelevant.",
    "threshold": "Which grades count as relevant: a hit graded at least this is marked relevant, and the ones a "
                 "list misses are listed under it. nDCG uses the grades themselves.",
    "missed": "Judged-relevant documents that this list leaves out of the hits shown, with the rank it gives them.",
    "chunk": "Documents are split into overlapping chunks of the model's window; a document ranks by its best "
             "chunk, and \"chunk 2 of 5\" says which one matched.",
    "query_cut": "The model reads a limited number of tokens; words beyond them do not count in the ranking.",
    "sts": "STS: sentence pairs with human similarity scores; each representation's cosines are ranked against "
           "them (Spearman correlation ×100; higher is better).",
    "metrics": "MRR@10: 1 / the rank of the first relevant hit in the top 10. Recall@k: the share of the relevant "
               "documents found in the top k. MAP@100: the mean precision at each relevant hit in the top 100. "
               "Means over the queries; these count grade ≥ 1 as relevant, nDCG uses the grades.",
    "bm25": "`bm25`: the classic lexical baseline (word matches weighted by rarity), no model involved.",
    "labels_upload": "Queries: BEIR queries.jsonl (one JSON object per line with `_id` and `text`). Judgements: "
                     "BEIR qrels TSV (query-id, corpus-id, score; a header line is allowed). Used in this session "
                     "only: never written into the index.",
    "densities": "Each kind of pair is drawn as a density (its bars' area sums to 1), so the few relevant pairs "
                 "show as clearly as the many non-relevant ones. The less the two shapes overlap, the better the "
                 "representation separates relevant from non-relevant documents.",
    "negatives": "Random: unjudged documents drawn at random, mostly easy to reject. Hard: each representation's "
                 "own top-ranked documents not judged relevant — the ones it actually confuses with the answers "
                 "(unjudged documents are not known to be irrelevant). Pairs judged 0 are included in both.",
    "pca_map": "Each document's first chunk projected on the two directions of largest variance of the sample "
               "(PCA); the Search page's query and its hits are projected the same way. Close points are similar "
               "in this space, but two dimensions keep only part of it.",
}

SIGNIFICANCE_LEVEL = 0.05  # the p below which a difference is called unlikely to be chance
_METRIC_LABELS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "recall@10": "Recall@10", "recall@100": "Recall@100",
                  "map@100": "MAP@100"}


#: Names of the grades on TREC's scale (GLOSSARY["grades"]), shown beside a judged hit; other grades are shown bare.
GRADE_NAMES = {0: "not relevant", 1: "related", 2: "highly relevant", 3: "perfectly relevant"}


def grade(value: int) -> str:
    """A grade as shown beside a hit: "grade 2 · highly relevant"."""
    name = GRADE_NAMES.get(value)
    return f"grade {value} · {name}" if name else f"grade {value}"


def representation(name: str) -> str:
    """One or two sentences saying what a representation is: its pooling, then its transform if any."""
    spec = parse_representation(name)
    text = f"`{spec.pooling}`: {POOLINGS[spec.pooling]}"
    if spec.transform:
        text += f" Then {TRANSFORMS[spec.transform]}"
    return text


def representations(names) -> str:
    """The explanation of each of several representations, one per line."""
    return "\n\n".join(representation(n) for n in names)


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def verdict(report: Mapping, a: str, b: str, metric: str = "ndcg@10") -> str:
    """One sentence on what an evaluation report says about the pair (a, b) on `metric`: which scores higher,
    by how much, and whether the paired randomisation test (Holm-corrected over the pairs when several are
    tested) calls the difference unlikely to be chance."""
    tests = report["significance"][pair_name(a, b)][metric]
    n, label, delta = report["queries_evaluated"], _METRIC_LABELS.get(metric, metric), tests["delta"]
    corrected = report["correction"]["applied"]
    p = tests["randomization_p_holm" if corrected else "randomization_p"]
    if abs(delta) <= 1e-12:
        return f"On these {n} queries `{a}` and `{b}` score the same on {label} ({tests[a]:.2f})."
    winner, loser = (a, b) if delta > 0 else (b, a)
    how = f"{_p_text(p)}{' after Holm' if corrected else ''}, paired randomisation test"
    if p < SIGNIFICANCE_LEVEL:
        return f"On these {n} queries `{winner}` beats `{loser}` on {label} by {abs(delta):.2f} ({how}): the difference is unlikely to be chance."
    return (f"On these {n} queries `{winner}` scores {abs(delta):.2f} higher than `{loser}` on {label} ({how}): not "
            "significant — on this query set the difference could be chance.")


def verdicts(report: Mapping, metric: str = "ndcg@10") -> list[str]:
    """`verdict` for every pair the report tested (none with one representation)."""
    return [verdict(report, a, b, metric) for a, b in report["pairs"]]


def most_anisotropic(geometry: Mapping[str, Mapping[str, float] | None]) -> str | None:
    """One sentence naming the most (and least) anisotropic representation of those measured; None when none was."""
    values = {r: g["anisotropy"] for r, g in geometry.items() if g}
    if not values:
        return None
    ranked = sorted(values, key=lambda r: -values[r])
    top = ranked[0]
    if len(ranked) == 1:
        return f"`{top}`: anisotropy {values[top]:.2f} — the mean cosine of two random documents in this space."
    low = ranked[-1]
    return (f"Most anisotropic here: `{top}` (two random documents have cosine {values[top]:.2f} on average): its "
            f"vectors crowd into the narrowest cone, so small score differences decide its rankings. "
            f"Least: `{low}` ({values[low]:.2f}).")
