"""Short explanations shown in place on the app's pages (tooltips, captions): one home for every one of them,
so a newcomer can read a page without the README and two pages never explain a word differently.

Plain text (no Markdown beyond backticks): pages show them with `help=` or `st.caption`.
"""

from __future__ import annotations

from indexer.compare import AGREEMENT_DEPTH, SEARCH_DEPTH
from indexer.config import parse_representation

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
}


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
