"""CLI round trip (build -> search -> info) and the clear one-line errors of bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, edited_copy, relu_one_layer
from indexer.cli import main
from indexer.store import read_manifest


@pytest.fixture
def build_args(tiny_bert):
    return ["--model", str(tiny_bert), "--max-tokens", "12", "--overlap", "2", "--no-progress"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_build_search_info_round_trip(tmp_path, small_jsonl, build_args, capsys):
    code, out, _ = run(capsys, "build", small_jsonl, "--index", tmp_path / "ix", *build_args)
    assert code == 0
    manifest = read_manifest(tmp_path / "ix")
    assert f"indexed 8 documents into {manifest.counts.chunks} chunks" in out
    assert "skipped records: 0" in out

    code, out, _ = run(capsys, "search", tmp_path / "ix", "bees and honey", "-k", "3", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["query"] == "bees and honey" and result["k"] == 3
    assert set(result["results"]) == {"pooled", "mean"}
    for hits in result["results"].values():
        assert [h["rank"] for h in hits] == [1, 2, 3]
        assert all(set(h) == {"rank", "doc_id", "title", "chunk_id", "text", "score", "page"} for h in hits)
        assert all(h["page"] is None for h in hits)  # documents without pages (a PDF's are in test_documents.py)

    code, out, _ = run(capsys, "search", tmp_path / "ix", "bees and honey", "-k", "3")
    assert code == 0 and "pooled" in out and "mean" in out and "in both top-3" in out

    code, out, _ = run(capsys, "info", tmp_path / "ix", "--json")
    info = json.loads(out)
    assert info == {"directory": str((tmp_path / "ix").resolve())} | manifest.to_dict()
    assert info["counts"]["chunks"] == manifest.counts.chunks and info["model"]["weights_sha256"] == manifest.model.weights_sha256
    assert info["pooler_check"]["status"] == "loaded"
    assert info["chunking"]["max_tokens"] == 12 and info["chunking"]["overlap"] == 2
    code, out, _ = run(capsys, "info", tmp_path / "ix")
    assert code == 0 and "documents:      8" in out and "pooler:         loaded" in out


def test_info_shows_disk_per_chunk_from_the_files_on_disk(tmp_path, small_jsonl, build_args, capsys):
    from indexer.loaders import format_bytes

    assert run(capsys, "build", small_jsonl, "--index", tmp_path / "ix", *build_args, "--representations", "pooled,mean,mean+whiten2")[0] == 0
    code, out, _ = run(capsys, "info", tmp_path / "ix")
    generation = tmp_path / "ix" / read_manifest(tmp_path / "ix").generation
    chunks = json.loads((generation / "manifest.json").read_text())["counts"]["chunks"]
    files = [p for p in generation.iterdir() if p.name != "manifest.json"]
    per_chunk = {p.name: format_bytes(round(p.stat().st_size / chunks)) for p in files}
    for representation in ("pooled", "mean", "mean+whiten2"):
        assert f"{representation}.faiss ({format_bytes((generation / f'{representation}.faiss').stat().st_size)}, " \
               f"{per_chunk[representation + '.faiss']} per chunk)" in out
    assert f"metadata.sqlite ({format_bytes((generation / 'metadata.sqlite').stat().st_size)}, {per_chunk['metadata.sqlite']} per chunk" in out
    assert "float32: pooled 128 bytes, mean 128 bytes)" in out  # the tiny model's 32 dimensions, once per stored pooling
    total = sum(p.stat().st_size for p in files)
    assert f"disk:           {format_bytes(round(total / chunks))} per chunk ({format_bytes(total)} in {len(files)} files)" in out


def test_skipped_records_are_named_and_counted(tmp_path, build_args, capsys):
    src = tmp_path / "docs.jsonl"
    src.write_text('{"_id": "a", "text": "the bees"}\n{"_id": broken\n{"_id": "c", "text": ""}\n{"_id": "a", "text": "again"}\n', encoding="utf-8")
    code, out, err = run(capsys, "build", src, "--index", tmp_path / "ix", *build_args)
    assert code == 0
    assert "indexed 1 documents" in out and "skipped records: 3" in out
    assert f"{src}:2: malformed JSON" in out and f"{src}:3:" in out and f"{src}:4: duplicate id 'a'" in out


def test_missing_source_is_one_line_exit_2(tmp_path, build_args, capsys):
    code, out, err = run(capsys, "build", tmp_path / "nope", "--index", tmp_path / "ix", *build_args)
    assert code == 2 and err.startswith("error: ") and "does not exist" in err and err.count("\n") == 1
    assert not (tmp_path / "ix").exists()


def test_unknown_format_is_one_line_exit_2(tmp_path, build_args, capsys):
    (tmp_path / "slides.pdf").write_bytes(b"%PDF-1.4")
    code, _, err = run(capsys, "build", tmp_path / "slides.pdf", "--index", tmp_path / "ix", *build_args)
    assert code == 2 and "slides.pdf" in err and err.count("\n") == 1


def test_nothing_indexable_exits_2_and_keeps_the_existing_index(tmp_path, small_jsonl, build_args, capsys):
    assert run(capsys, "build", small_jsonl, "--index", tmp_path / "ix", *build_args)[0] == 0
    before = read_manifest(tmp_path / "ix")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n", encoding="utf-8")
    code, _, err = run(capsys, "build", bad, "--index", tmp_path / "ix", "--overwrite", *build_args)
    assert code == 2 and "no document could be indexed" in err
    assert read_manifest(tmp_path / "ix") == before


def test_existing_index_needs_overwrite(tmp_path, small_jsonl, build_args, capsys):
    assert run(capsys, "build", small_jsonl, "--index", tmp_path / "ix", *build_args)[0] == 0
    code, out, err = run(capsys, "build", small_jsonl, "--index", tmp_path / "ix", *build_args)
    assert code == 0 and "already complete" in out  # the same command again: nothing to do
    other = tmp_path / "other.jsonl"
    other.write_text('{"_id": "x", "text": "the sky"}\n', encoding="utf-8")
    code, _, err = run(capsys, "build", other, "--index", tmp_path / "ix", *build_args)
    assert code == 2 and "already exists; pass --overwrite" in err
    assert run(capsys, "build", other, "--index", tmp_path / "ix", *build_args, "--overwrite")[0] == 0
    assert read_manifest(tmp_path / "ix").counts.documents == 1


def test_search_with_another_model_is_refused(tmp_path, small_jsonl, build_args, tiny_bert_other, capsys):
    assert run(capsys, "build", small_jsonl, "--index", tmp_path / "ix", *build_args)[0] == 0
    code, _, err = run(capsys, "search", tmp_path / "ix", "bees", "--model", tiny_bert_other)
    assert code == 2 and "was built with model" in err and "Rebuild the index" in err


def test_bad_representation_and_model_without_pooler(tmp_path, small_jsonl, build_args, capsys):
    code, _, err = run(capsys, "build", small_jsonl, "--index", tmp_path / "ix", *build_args, "--representations", "pooled,median")
    assert code == 2 and "unknown representation 'median'" in err


def test_folder_source_with_html_and_a_binary_file(tmp_path, build_args, capsys):
    src = tmp_path / "docs"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("the bees make honey", encoding="utf-8")
    (src / "sub" / "b.md").write_text("# bread\n\nbake bread in the oven", encoding="utf-8")
    (src / "c.html").write_text("<html><head><title>Sky</title><script>x=1</script></head><body><p>a comet</p></body></html>", encoding="utf-8")
    (src / "d.txt").write_bytes(b"\x00\x01binary")
    code, out, _ = run(capsys, "build", src, "--index", tmp_path / "ix", *build_args)
    assert code == 0 and "indexed 3 documents" in out and "d.txt: binary file" in out
    code, out, _ = run(capsys, "search", tmp_path / "ix", "comet", "--json", "-k", "3")
    titles = {h["doc_id"]: h["title"] for h in json.loads(out)["results"]["mean"]}
    assert titles == {"a.txt": "", "sub/b.md": "", "c.html": "Sky"}


def test_python_dash_m_entry_point(tmp_path, small_jsonl, build_args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "indexer"]
    build = subprocess.run(cmd + ["build", str(small_jsonl), "--index", str(tmp_path / "ix"), *build_args],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    search = subprocess.run(cmd + ["search", str(tmp_path / "ix"), "bread", "--json", "-k", "2"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert search.returncode == 0, search.stderr
    assert len(json.loads(search.stdout)["results"]["pooled"]) == 2
    missing = subprocess.run(cmd + ["info", str(tmp_path / "none")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_missing_pooler_weights_are_recorded_and_shown_by_info(tmp_path, small_jsonl, capsys):
    from conftest import make_tiny_bert

    model = make_tiny_bert(tmp_path / "nopooler", with_pooler=False)
    args = ["--model", model, "--max-tokens", "12", "--overlap", "2", "--no-progress"]
    assert run(capsys, "build", small_jsonl, "--index", tmp_path / "ix", *args)[0] == 0
    assert read_manifest(tmp_path / "ix").model.pooler == "missing"
    code, out, _ = run(capsys, "info", tmp_path / "ix")
    assert code == 0 and out.startswith("WARNING: `pooled` vectors of this index come from a randomly initialised pooler")


# -- output that is not valid Unicode, and faults that are not the input's (issue 10, item 2) -------------

def cli_bytes(*argv: bytes | str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m indexer` with raw bytes in argv (Python decodes them with surrogateescape), and the
    strict UTF-8 stdout of a UTF-8 locale such as en_US.UTF-8 (C.UTF-8 would escape surrogates itself)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUTF8"}
    env.update(HF_HUB_OFFLINE="1", PYTHONIOENCODING="utf-8:strict")
    args = [a if isinstance(a, bytes) else str(a).encode() for a in argv]
    return subprocess.run([sys.executable.encode(), b"-m", b"indexer", *args], cwd=ROOT, env=env, capture_output=True, timeout=timeout)


def test_non_utf8_bytes_in_paths_and_queries_give_output_or_one_line(tmp_path, small_jsonl, build_args, capsys):
    missing = bytes(tmp_path) + b"/ix-\xff"
    verified = cli_bytes(b"verify", missing)  # prints the path on stdout
    assert verified.returncode == 1 and b"Traceback" not in verified.stderr, verified.stderr.decode(errors="replace")
    assert verified.stdout.decode("utf-8").endswith(f"{tmp_path}/ix-\\udcff: 1 problems; do not serve this index\n")
    index = tmp_path / "ix"
    assert run(capsys, "build", small_jsonl, "--index", index, *build_args)[0] == 0
    searched = cli_bytes(b"search", index, b"bees \xff honey")
    assert searched.returncode == 2 and searched.stdout == b""
    assert searched.stderr == b"error: the query holds a lone surrogate (U+DCFF) at character 5: it is not valid Unicode text\n"


def test_blank_queries_are_refused_with_one_line(tmp_path, small_jsonl, build_args, capsys):
    assert run(capsys, "build", small_jsonl, "--index", tmp_path / "ix", *build_args)[0] == 0
    for query in ("", "   ", "\u200b\u200d\ufeff", "\u2060\u200e\n"):
        code, out, err = run(capsys, "search", tmp_path / "ix", query)
        assert (code, out, err) == (2, "", "error: the query is empty\n")


def test_an_unexpected_fault_is_one_line_and_a_traceback_with_verbose(monkeypatch, capsys, tmp_path):
    import indexer.cli as cli

    def broken(args):
        raise RuntimeError("something inside\nbroke")

    monkeypatch.setattr(cli, "cmd_info", broken)
    code, out, err = run(capsys, "info", tmp_path)
    assert code == 1 and out == ""
    assert err == "error: unexpected RuntimeError: something inside broke (run with -v for the traceback)\n"
    with pytest.raises(RuntimeError):
        main(["-v", "info", str(tmp_path)])


def test_an_os_error_is_one_line_naming_the_path(monkeypatch, capsys, tmp_path):
    import indexer.cli as cli

    def denied(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked"))

    monkeypatch.setattr(cli, "cmd_info", denied)
    code, out, err = run(capsys, "info", tmp_path)
    assert (code, out, err) == (2, "", f"error: {tmp_path / 'locked'}: Permission denied\n")


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["search"])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "(see: python -m indexer search --help)" in err


def test_choices_come_from_their_literal_types_and_a_wrong_one_is_named_with_the_valid_ones(tmp_path):
    """Allowed values are taken from the Literal types (typing.get_args), by the CLI as by the library, and a wrong
    value raises ValueError naming it and the valid ones, from one check (config.require_one_of; issue 13, item 4)."""
    import argparse
    from typing import get_args

    from indexer.cli import build_parser
    from indexer.compat import Purpose, compatibility_problems
    from indexer.config import Precision
    from indexer.encoder import resolve_precision
    from indexer.explore import Negatives, relevance_similarities
    from indexer.loaders import Format, LoadReport, iter_documents
    from indexer.vector_index import IndexSpec, IndexType

    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    offered = {(name, option): tuple(action.choices) for name, sub in commands.choices.items()
               for action in sub._actions if action.choices is not None for option in action.option_strings}
    assert offered == {(c, "--format"): get_args(Format) for c in ("build", "add")} | {
        (c, "--index-type"): get_args(IndexType) for c in ("build", "convert", "bench")} | {
        (c, "--precision"): get_args(Precision) for c in ("build", "add", "search", "evaluate")}
    refused = {
        ("index type", "annoy", IndexType): lambda: IndexSpec(type="annoy"),
        ("format", "pdf", Format): lambda: iter_documents(tmp_path, LoadReport(), format="pdf"),
        ("purpose", "serve", Purpose): lambda: compatibility_problems({}, None, "serve"),
        ("precision", "fp16", Precision): lambda: resolve_precision("fp16", "cpu"),
        ("kind of negatives", "easy", Negatives): lambda: relevance_similarities(None, {}, {}, [], negatives="easy"),
    }
    for (what, value, choices), call in refused.items():
        with pytest.raises(ValueError) as error:
            call()
        assert str(error.value) == f"unknown {what} {value!r}; valid: {', '.join(get_args(choices))}"


def test_search_with_the_indexs_own_model_accepts_its_max_tokens(tmp_path, small_jsonl, build_args, tiny_bert, capsys):
    assert run(capsys, "build", small_jsonl, "--index", tmp_path / "ix", *build_args)[0] == 0  # --max-tokens 12
    code, named, err = run(capsys, "search", tmp_path / "ix", "bees and honey", "--model", tiny_bert, "--json")
    assert code == 0, err
    code, own, _ = run(capsys, "search", tmp_path / "ix", "bees and honey", "--json")  # the index's own encoder
    assert code == 0 and json.loads(named) == json.loads(own)


def test_search_with_a_changed_config_is_refused_naming_it(tmp_path, small_jsonl, tiny_bert, capsys):
    relu = edited_copy(tiny_bert, tmp_path / "relu", "config.json", relu_one_layer)  # same weights file
    assert run(capsys, "build", small_jsonl, "--index", tmp_path / "ix", "--model", tiny_bert, "--no-progress")[0] == 0
    code, out, err = run(capsys, "search", tmp_path / "ix", "bees", "--model", relu)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "they differ in config.json" in err and "Rebuild the index" in err


def tiny_beir(root, corpus_jsonl):
    """A BEIR folder over the small collection: four queries with graded judgements."""
    (root / "qrels").mkdir(parents=True)
    shutil.copyfile(corpus_jsonl, root / "corpus.jsonl")
    queries = {"q1": "bees and honey in the hive", "q2": "bake bread", "q3": "repair the bike", "q4": "rain and snow"}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()), encoding="utf-8")
    judged = [("q1", "bee-1", 2), ("q1", "bee-2", 1), ("q2", "bread-1", 1), ("q3", "bike-1", 1), ("q4", "river-1", 1)]
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in judged), encoding="utf-8")
    return root


def test_evaluate_beir_reuses_a_cached_index_with_an_extra_representation(tmp_path, small_jsonl, tiny_bert, capsys):
    data, cached = tiny_beir(tmp_path / "beir", small_jsonl), tmp_path / "cached"
    model = ["--model", tiny_bert, "--no-progress"]
    assert run(capsys, "build", data, "--index", cached, "--representations", "pooled,mean,cls", *model)[0] == 0
    generation = read_manifest(cached).generation
    code, out, err = run(capsys, "evaluate", "--beir", data, "--index", cached, "--json", "--out", tmp_path / "o1", *model)
    assert code == 0, err
    assert f"reusing the index at {cached}" in err and read_manifest(cached).generation == generation
    reused = json.loads(out)
    assert {"pooled", "mean"} <= set(reused["metrics"]) and "cls" not in reused["metrics"]
    # independent: the same evaluation over an index built with exactly pooled and mean
    code, out, err = run(capsys, "evaluate", "--beir", data, "--index", tmp_path / "fresh", "--json", "--out", tmp_path / "o2", *model)
    assert code == 0 and "building the index" in err
    assert reused["metrics"] == json.loads(out)["metrics"]


def test_build_from_or_into_a_path_that_is_not_utf8_is_one_line(tmp_path, small_jsonl):
    odd_source = bytes(tmp_path) + b"/src-\xff.jsonl"
    with open(odd_source, "wb") as f, open(small_jsonl, "rb") as g:
        f.write(g.read())
    built = cli_bytes(b"build", odd_source, b"--index", bytes(tmp_path / "ix"), b"--no-progress")
    assert built.returncode == 2 and built.stderr.count(b"\n") == 1, built.stderr
    assert b"source path" in built.stderr and b"not valid UTF-8 (byte 0xFF" in built.stderr
    assert not (tmp_path / "ix").exists()  # refused before anything was written
    into = cli_bytes(b"build", bytes(small_jsonl), b"--index", bytes(tmp_path) + b"/ix-\xfe", b"--no-progress")
    assert into.returncode == 2 and b"index path" in into.stderr and b"(byte 0xFE" in into.stderr
    assert {p.name for p in tmp_path.iterdir()} == {small_jsonl.name, "src-\udcff.jsonl"}  # no index folder either


def test_transformed_representations_info_and_refit(tmp_path, small_jsonl, build_args, capsys):
    ix = tmp_path / "ix"
    code, _, err = run(capsys, "build", small_jsonl, "--index", ix, *build_args, "--representations", "mean,max+abtt1")
    assert code == 0, err
    manifest = read_manifest(ix)
    chunks = manifest.counts.chunks
    code, out, _ = run(capsys, "info", ix)
    assert code == 0
    assert f"abtt1 of `max` (32 -> 32 dims), fitted on {chunks} chunks in {manifest.generation}, at this generation" in out
    code, out, _ = run(capsys, "refit", ix, "--representations", "mean,mean+whiten4")
    assert code == 0 and "representations: mean, mean+whiten4" in out
    refitted = read_manifest(ix)
    assert refitted.generation != manifest.generation and refitted.representations["mean+whiten4"].dim == 4
    code, _, err = run(capsys, "refit", ix, "--representations", "mean+whiten0")
    assert code == 2 and err.count("\n") == 1 and "whitenK (keep K dimensions" in err
    code, _, err = run(capsys, "refit", ix, "--representations", "cls")
    assert code == 2 and "stores no `cls` vectors" in err
    code, out, _ = run(capsys, "search", ix, "bees", "-k", "2", "--json")
    assert code == 0 and set(json.loads(out)["results"]) == {"mean", "mean+whiten4"}


def test_without_ray_nothing_imports_it(tmp_path, small_jsonl, tiny_bert):
    """Ray is optional (issue 15): the CLI's start, its help and a whole local build never import it."""
    code = ("import sys\nfrom indexer.cli import main\n"
            "assert 'ray' not in sys.modules, 'import'\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'ray' not in sys.modules, '--help'\n"
            "assert main(sys.argv[1:]) == 0\n"
            "assert 'ray' not in sys.modules, 'build'\n")
    done = subprocess.run([sys.executable, "-c", code, "build", str(small_jsonl), "--index", str(tmp_path / "ix"), "--model", str(tiny_bert),
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "indexed 8 documents" in done.stdout


def test_ray_options_without_ray_are_refused(tmp_path, small_jsonl, build_args, capsys):
    code, _, err = run(capsys, "build", small_jsonl, "--index", tmp_path / "ix", *build_args, "--ray-actors", "2")
    assert code == 2 and "--ray-actors goes with --ray [ADDRESS]" in err and not (tmp_path / "ix").exists()
