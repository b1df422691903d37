"""One encoder rule and one searcher per index (issue 13): every caller (CLI, app, evaluation, the library) takes the
index's own max length through search.encoder_for, and the app holds one Searcher per index directory that serves
each newly published generation itself, holding one copy of the index."""

import gc
import json
import threading
import time
import weakref

import pytest

from indexer.app import ui
from indexer.cli import main
from indexer.encoder import Encoder
from indexer.search import Searcher
from indexer.store import read_manifest
from test_app import app, search, texts

DOCS = {"bee-1": "the bees make honey from nectar and pollen in the hive", "bread-1": "bake bread with flour water and yeast",
        "sky-1": "a comet and a planet orbit the sun in the sky " * 4, "bike-1": "repair the chain brake and tire of the bike"}


@pytest.fixture
def beir(tmp_path):
    """A BEIR folder with a labelled query: its index keeps the set, so `evaluate --index` needs nothing else."""
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in DOCS.items()), encoding="utf-8")
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "bees and honey"}\n', encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tbee-1\t1\n", encoding="utf-8")
    return root


def build(source, directory, model, max_tokens: int, *more: str) -> None:
    assert main(["build", str(source), "--index", str(directory), "--model", str(model), "--max-tokens", str(max_tokens),
                 "--overlap", "2", "--no-progress", *more]) == 0


def test_every_caller_encodes_at_the_max_length_the_index_was_built_with(tmp_path, tiny_bert, beir, monkeypatch, capsys):
    directory = tmp_path / "ix"
    build(beir, directory, tiny_bert, 12)  # the model reads 64 tokens: 12 is the index's own choice
    assert read_manifest(directory).chunking.max_tokens == 12 != Encoder.load(str(tiny_bert)).max_tokens
    seen: dict[str, set[int]] = {}
    caller = ""
    encode_ids = Encoder.encode_ids

    def recording(self, *args, **kwargs):
        seen.setdefault(caller, set()).add(self.max_tokens)
        return encode_ids(self, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode_ids", recording)
    more = tmp_path / "more.jsonl"
    more.write_text('{"_id": "fresh", "text": "bees bees honey"}\n', encoding="utf-8")
    commands = {
        "search": ["search", str(directory), "bees"],
        "search --model": ["search", str(directory), "bees", "--model", str(tiny_bert)],
        "add": ["add", str(directory), str(more), "--no-progress"],
        "evaluate --index": ["evaluate", "--index", str(directory), "--out", str(tmp_path / "eval"), "--no-progress"],
    }
    for caller, command in commands.items():  # noqa: B007  (read by the recording encoder above)
        assert main(command) == 0, capsys.readouterr().err
    caller = "app"
    at = search(app(directory), "bees")
    assert not at.exception and not at.error
    caller = "library"
    Searcher(directory).search("bees")
    assert seen == dict.fromkeys([*commands, "app", "library"], {12})


def test_the_app_serves_each_new_generation_from_its_one_searcher(tmp_path, tiny_bert, beir):
    directory = tmp_path / "ix"
    build(beir, directory, tiny_bert, 12)
    key = (str(directory.resolve()), None)
    at = search(app(directory), "bees")
    assert not at.exception and not at.error and any(t.startswith("4 documents") for t in texts(at.caption))
    searcher = ui.load_searcher(*key)  # the one the page used: shared by every session
    assert (searcher.index.generation, searcher.encoder.max_tokens) == ("gen-000001", 12)
    first = weakref.ref(searcher.index)

    more = tmp_path / "more.jsonl"
    more.write_text('{"_id": "fresh", "text": "bees bees honey"}\n', encoding="utf-8")
    assert main(["add", str(directory), str(more), "--no-progress"]) == 0
    at = search(app(directory), "bees")  # another session, after the add
    assert not at.exception and not at.error and any(t.startswith("5 documents") for t in texts(at.caption))
    assert ui.load_searcher(*key) is searcher and searcher.index.generation == "gen-000002"
    gc.collect()
    assert first() is None  # the previous generation is not held any more: one copy of the index

    # a rebuild with another max length: the same searcher serves it, with an encoder at the new length
    build(beir, directory, tiny_bert, 16, "--overwrite", "--representations", "mean,cls")
    second = weakref.ref(searcher.index)
    at = search(app(directory), "bees")
    assert not at.exception and not at.error and any(t.startswith("4 documents") for t in texts(at.caption))
    assert ui.load_searcher(*key) is searcher
    assert (searcher.index.generation, searcher.encoder.max_tokens, searcher.representations) == ("gen-000003", 16, ("mean", "cls"))
    assert texts(at.subheader) == ["`mean`", "`cls`"]
    gc.collect()
    assert second() is None


def test_searches_from_many_threads_while_rebuilds_change_the_encoder(tmp_path, tiny_bert, beir, monkeypatch):
    """The app's searcher is shared by every session: while generations of other max lengths are published, each
    query is served from one generation with the encoder made for it, and none fails."""
    directory = tmp_path / "ix"
    build(beir, directory, tiny_bert, 12)
    searcher = Searcher(directory)  # follows the index's own model, as the app's does
    fitting, served, errors, stop = [], [], [], threading.Event()
    rank_many = Searcher.rank_many

    def checked(self, queries, k, **options):
        taken = options["served"]
        fitting.append(taken.encoder.max_tokens == taken.index.manifest.chunking.max_tokens)
        return rank_many(self, queries, k, **options)

    monkeypatch.setattr(Searcher, "rank_many", checked)

    def reader():
        while not stop.is_set():
            try:
                served.append(searcher.search("bees and honey", k=3).generation)
            except Exception as exc:  # any failure is a finding
                errors.append(repr(exc))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for max_tokens in (16, 12, 20):
            build(beir, directory, tiny_bert, max_tokens, "--overwrite")
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == [] and all(fitting) and len(set(served)) > 2
    assert (searcher.index.generation, searcher.encoder.max_tokens) == ("gen-000004", 20)


def test_a_generation_the_encoder_does_not_fit_is_tried_once_and_the_next_one_served(tmp_path, tiny_bert, beir, monkeypatch, caplog):
    """With a fixed encoder (search --model, or the app's --model), a generation it does not fit is refused once,
    not opened again on every query; the previous one is served until CURRENT names another."""
    import indexer.search

    directory = tmp_path / "ix"
    build(beir, directory, tiny_bert, 12)
    searcher = Searcher(directory, Encoder.load(str(tiny_bert), max_tokens=12))
    build(beir, directory, tiny_bert, 16, "--overwrite")
    opened = []
    reader = indexer.search.IndexReader
    monkeypatch.setattr(indexer.search, "IndexReader", lambda d: opened.append(d) or reader(d))
    with caplog.at_level("WARNING", logger="indexer.search"):
        assert [searcher.search("bees").generation for _ in range(3)] == ["gen-000001"] * 3
    assert len(opened) == 1 and caplog.text.count("keeping gen-000001") == 1 and "max length of 16" in caplog.text
    build(beir, directory, tiny_bert, 12, "--overwrite")
    assert searcher.search("bees").generation == "gen-000003" and len(opened) == 2
