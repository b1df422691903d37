"""One encoder rule (issue 13): every caller (CLI, app, evaluation, the library) takes the index's own max length
through search.encoder_for."""

import json

import pytest

from indexer.cli import main
from indexer.encoder import Encoder
from indexer.search import Searcher
from indexer.store import read_manifest
from test_app import app, search

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
    for caller, command in commands.items():
        assert main(command) == 0, capsys.readouterr().err
    caller = "app"
    at = search(app(directory), "bees")
    assert not at.exception and not at.error
    caller = "library"
    Searcher(directory).search("bees")
    assert seen == dict.fromkeys([*commands, "app", "library"], {12})
