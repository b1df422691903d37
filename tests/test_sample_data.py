"""The shipped sample collection is a valid BEIR dataset of the promised size."""

import collections

from conftest import SAMPLE
from indexer.loaders import LoadReport, iter_documents, load_qrels, load_queries, open_beir


def test_sample_is_a_complete_beir_dataset():
    dataset = open_beir(SAMPLE)
    report = LoadReport()
    docs = list(iter_documents(SAMPLE, report))
    queries = load_queries(dataset.queries, report)
    qrels = load_qrels(dataset.qrels["test"], report)
    assert report.issues == []
    assert len(docs) >= 200 and len(queries) >= 30
    topics = collections.Counter(d.doc_id.split("-")[0] for d in docs)
    assert len(topics) >= 12
    doc_ids = {d.doc_id for d in docs}
    assert set(qrels) <= set(queries)
    grades = [g for judged in qrels.values() for g in judged.values()]
    assert set(grades) <= {0, 1, 2} and {0, 1, 2} <= set(grades)
    for qid, judged in qrels.items():
        assert set(judged) <= doc_ids, qid
        assert 2 in judged.values(), f"query {qid} has no fully relevant document"
    assert all(d.text.strip() for d in docs)
