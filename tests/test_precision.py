"""Precision (issue 14, item 1): `auto` follows the one capability check, bf16 vectors stay close to fp32 ones and
float32 on disk, the manifest records the precision, queries are encoded in the index's, and `add` keeps it."""

import hashlib
import json
import logging

import numpy as np
import pytest

from indexer import encoder as encoder_module
from indexer.cli import main
from indexer.compat import compatibility_problems
from indexer.encoder import Encoder, _cpu_flags, resolve_precision
from indexer.pipeline import add_documents, build_index
from indexer.search import Searcher, encoder_for
from indexer.store import CURRENT, MANIFEST, Manifest, StoreError, read_manifest

REPS = ("pooled", "mean", "cls")
ALL_POOLINGS = ("pooled", "mean", "cls", "max", "first_last")
QUERY = "bees make honey in the hive"


@pytest.fixture
def native(monkeypatch):
    """Simulate a device with (True) or without (False) native bf16: replaces the one capability check."""
    def set_native(value: bool) -> None:
        monkeypatch.setattr(encoder_module, "native_bf16", lambda device: value)
    return set_native


def load(tiny_bert, precision, representations=REPS):
    return Encoder.load(str(tiny_bert), representations=representations, max_tokens=16, batch_size=4, precision=precision)


def test_auto_is_fp32_where_bf16_is_not_native_and_bf16_where_it_is(tiny_bert, native, caplog):
    native(False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert load(tiny_bert, "auto").precision == "fp32"
    native(True)
    assert resolve_precision("auto", "cpu") == "bf16"
    encoder = load(tiny_bert, "auto")
    assert encoder.precision == "bf16" and encoder.with_max_tokens(12).precision == "bf16"
    assert load(tiny_bert, "fp32").precision == "fp32"  # an explicit choice is kept
    native(False)
    with caplog.at_level(logging.WARNING, logger="indexer.encoder"):
        assert resolve_precision("bf16", "cpu") == "bf16"  # works (emulated), with a warning that it is slow
    assert [r.message for r in caplog.records if "no native bf16" in r.message]
    with pytest.raises(ValueError, match=r"unknown precision 'fp16'; valid: auto, fp32, bf16"):
        load(tiny_bert, "fp16")


def test_the_capability_check_reads_the_cpu_flags(fp32_unless_asked, monkeypatch, tmp_path):
    """The real check (not the tests' stand-in): x86 AMX-BF16 (AVX512-BF16 alone is not matrix hardware), ARM BF16; unknown or unreadable: False."""
    real = fp32_unless_asked
    cases = [("x86_64", {"avx512f", "avx512_bf16"}, False), ("x86_64", {"avx512_bf16", "amx_bf16"}, True), ("x86_64", {"amx_bf16"}, True), ("x86_64", {"avx512f", "bf16"}, False),
             ("aarch64", {"fp", "bf16"}, True), ("aarch64", {"avx512_bf16"}, False), ("riscv64", {"bf16"}, False)]
    for machine, flags, expected in cases:
        monkeypatch.setattr(encoder_module.platform, "machine", lambda m=machine: m)
        monkeypatch.setattr(encoder_module, "_cpu_flags", lambda f=flags: set(f))
        assert real("cpu") is expected, (machine, flags)
    assert real("meta") is False
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512_bf16\n\nprocessor\t: 1\n", encoding="utf-8")
    assert _cpu_flags(cpuinfo) == {"fpu", "sse", "avx512_bf16"}
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n", encoding="utf-8")
    assert _cpu_flags(cpuinfo) == {"fp", "asimd", "bf16"}
    assert _cpu_flags(tmp_path / "missing") == set()


def test_the_machine_summary_names_the_cpu_and_its_speed_flags(monkeypatch, tmp_path):
    """What `bench` says it ran on: the first processor's model name and, of its flags, the speed-relevant ones."""
    import os

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
                       "flags\t\t: fpu sse amx_bf16 avx2 fma avx512f\n\n"
                       "processor\t: 1\nmodel name\t: Another CPU\nflags\t\t: fpu avx512_bf16\n", encoding="utf-8")
    for native in (False, True):
        monkeypatch.setattr(encoder_module, "native_bf16", lambda device, n=native: n)
        summary = encoder_module.machine_summary("cpu", cpuinfo)
        assert summary["cpu"] == "AMD EPYC 7B13" and summary["cpus"] == os.cpu_count()
        assert summary["cpu_flags"] == ["avx2", "fma", "avx512f", "amx_bf16"]  # in SPEED_CPU_FLAGS' order
        assert summary["native_bf16"] is native and summary["device"] == "cpu"
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve bf16 crc32\n", encoding="utf-8")
    monkeypatch.setattr(encoder_module.platform, "processor", lambda: "")
    summary = encoder_module.machine_summary("cpu", cpuinfo)
    assert summary["cpu"] == "unknown" and summary["cpu_flags"] == ["asimd", "sve", "bf16"]
    assert encoder_module.machine_summary("cpu", tmp_path / "missing")["cpu_flags"] == []
    assert summary["device_name"] is None
    monkeypatch.setattr(encoder_module.torch.cuda, "get_device_name", lambda device: f"GPU of {device}")
    summary = encoder_module.machine_summary("cuda:0", cpuinfo)  # a GPU's name beside the CPU's
    assert summary["device"] == "cuda:0" and summary["device_name"] == "GPU of cuda:0"


def test_bf16_vectors_are_float32_and_close_to_the_fp32_ones(tiny_bert, native):
    native(True)
    texts = ["the bees make honey from nectar and pollen in the hive", "bake bread with flour water salt and yeast",
             "a comet and a planet orbit the sun in the sky", "rain"]
    fp32 = load(tiny_bert, "fp32", ALL_POOLINGS).encode_texts(texts)
    bf16 = load(tiny_bert, "bf16", ALL_POOLINGS).encode_texts(texts)
    for p in ALL_POOLINGS:
        assert bf16[p].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(bf16[p], axis=1), 1.0, rtol=1e-5)
        cosine = (fp32[p] * bf16[p]).sum(axis=1)
        assert cosine.min() > 0.999, p
        assert np.abs(fp32[p] - bf16[p]).max() > 1e-5, p  # computed in bf16 indeed, not fp32 again


def test_bf16_is_the_forward_pass_only_pooling_is_float32(tiny_bert, native):
    """The model runs under autocast; its outputs are pooled and normalised in float32 (not rounded to bf16 first)."""
    import torch

    native(True)
    encoder = load(tiny_bert, "bf16", ("pooled", "mean"))
    text = "the bees make honey from nectar and pollen in the hive"
    batch = encoder.tokenizer([text], return_tensors="pt")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = encoder.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    hidden = output.last_hidden_state.float()
    mean = hidden.sum(1) / batch["attention_mask"].sum()
    expected = {"pooled": output.pooler_output.float(), "mean": mean}
    got = encoder.encode_texts([text])
    for p, vector in expected.items():
        vector = (vector / vector.norm(dim=1, keepdim=True)).numpy()
        np.testing.assert_allclose(got[p], vector, atol=2e-6, err_msg=p)


def build(tiny_bert, source, directory, precision):
    return build_index(source, directory, load(tiny_bert, precision), overlap=2, progress=False)


def test_the_manifest_records_the_precision_and_info_shows_it(tmp_path, tiny_bert, small_jsonl, native, capsys):
    native(True)
    build(tiny_bert, small_jsonl, tmp_path / "bf16", "bf16")
    build(tiny_bert, small_jsonl, tmp_path / "fp32", "fp32")
    assert read_manifest(tmp_path / "bf16").precision == "bf16" and read_manifest(tmp_path / "fp32").precision == "fp32"
    written = json.loads(_manifest_text(tmp_path / "bf16"))
    assert list(written)[list(written).index("metric") + 1] == "precision" and written["precision"] == "bf16"
    assert main(["info", str(tmp_path / "bf16")]) == 0
    assert "precision:      bf16 (the forward pass; vectors are stored as float32)" in capsys.readouterr().out
    # a manifest written before precision was recorded: read as None (fp32), written back byte for byte
    old = json.loads(_manifest_text(tmp_path / "fp32"))
    del old["precision"]
    text = json.dumps(old, indent=2) + "\n"
    manifest = Manifest.from_dict(json.loads(text))
    assert manifest.precision is None and manifest.encoded_precision == "fp32"
    assert json.dumps(manifest.to_dict(), indent=2) + "\n" == text
    with pytest.raises(StoreError, match=r"invalid precision settings: unknown precision 'fp16'; valid: fp32, bf16"):
        Manifest.from_dict(old | {"precision": "fp16"})


def _manifest_text(directory) -> str:
    return (directory / json.loads((directory / CURRENT).read_text())["generation"] / MANIFEST).read_text()


def test_a_bf16_index_is_searched_with_bf16_queries(tmp_path, tiny_bert, small_jsonl, native):
    native(False)  # auto would be fp32 here: the index's precision decides, not the machine's
    build(tiny_bert, small_jsonl, tmp_path / "ix", "bf16")
    manifest = read_manifest(tmp_path / "ix")
    assert encoder_for(manifest, str(tiny_bert)).precision == "bf16"
    assert encoder_for(manifest, str(tiny_bert), precision="fp32").precision == "fp32"  # a user comparing
    searcher = Searcher(tmp_path / "ix", make_encoder=lambda m: encoder_for(m, str(tiny_bert)))
    try:
        assert searcher.encoder.precision == "bf16"
        result = searcher.search(QUERY, k=8)
        # the scores are the index's vectors against an independent bf16 encoding of the query, not an fp32 one
        for precision, same in (("bf16", True), ("fp32", False)):
            query = load(tiny_bert, precision).encode_texts([QUERY])
            for r in REPS:
                scores, ids = searcher.index.search(r, query[r], 1)
                best = result.results[r][0]
                assert (best.chunk_id, abs(best.score - float(scores[0][0])) < 1e-6) == (int(ids[0][0]), same), (precision, r)
        # rebuilt in fp32: the searcher follows the index's precision for its next query
        build_index(small_jsonl, tmp_path / "ix", load(tiny_bert, "fp32"), overlap=2, overwrite=True, progress=False)
        searcher.search(QUERY, k=2)
        assert searcher.encoder.precision == "fp32"
    finally:
        searcher.close()


def test_add_keeps_the_indexs_precision_and_refuses_another(tmp_path, tiny_bert, small_jsonl, native, capsys):
    native(True)
    directory = tmp_path / "ix"
    build(tiny_bert, small_jsonl, directory, "bf16")
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"_id": "new-1", "text": "a new flower with nectar"}) + "\n", encoding="utf-8")
    fp32 = load(tiny_bert, "fp32")
    problems = compatibility_problems(read_manifest(directory), fp32, "add")
    assert problems == ["the index was built with bf16 precision, this run encodes in fp32 (add with --precision bf16, "
                        "or leave --precision out to take the index's)"]
    assert compatibility_problems(read_manifest(directory), fp32, "search") == []  # queries may be encoded in another
    with pytest.raises(StoreError, match="built with bf16 precision, this run encodes in fp32"):
        add_documents(directory, more, fp32, progress=False)
    assert main(["add", str(directory), str(more), "--precision", "fp32", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot add to") and "built with bf16 precision" in err and err.count("\n") == 1
    native(False)  # without --precision, add takes the index's precision whatever auto would be
    assert main(["add", str(directory), str(more), "--no-progress"]) == 0
    manifest = read_manifest(directory)
    assert manifest.precision == "bf16" and manifest.counts.documents == 9


def test_an_add_to_an_index_without_a_recorded_precision_records_fp32(tmp_path, tiny_bert, small_jsonl):
    directory = tmp_path / "ix"
    build(tiny_bert, small_jsonl, directory, "fp32")
    pointer = json.loads((directory / CURRENT).read_text())
    path = directory / pointer["generation"] / MANIFEST
    old = json.loads(path.read_text())
    del old["precision"]
    data = (json.dumps(old, indent=2) + "\n").encode()
    path.write_bytes(data)
    (directory / CURRENT).write_text(json.dumps(pointer | {"manifest_sha256": hashlib.sha256(data).hexdigest()}))
    assert read_manifest(directory).precision is None
    assert compatibility_problems(read_manifest(directory), load(tiny_bert, "bf16"), "add")  # its vectors are fp32
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"_id": "new-1", "text": "a new flower"}) + "\n", encoding="utf-8")
    add_documents(directory, more, encoder_for(read_manifest(directory), str(tiny_bert)), progress=False)
    assert read_manifest(directory).precision == "fp32"


def test_a_build_in_another_precision_is_not_the_same_build(tmp_path, tiny_bert, small_jsonl, native):
    native(True)
    first = build(tiny_bert, small_jsonl, tmp_path / "ix", "fp32")
    assert build(tiny_bert, small_jsonl, tmp_path / "ix", "fp32").already_complete  # the same command again
    with pytest.raises(StoreError, match="already exists"):
        build(tiny_bert, small_jsonl, tmp_path / "ix", "bf16")
    again = build_index(small_jsonl, tmp_path / "ix", load(tiny_bert, "bf16"), overlap=2, overwrite=True, progress=False)
    assert not again.already_complete and again.generation != first.generation
    assert read_manifest(tmp_path / "ix").precision == "bf16"


@pytest.mark.parametrize("command", [["build", "SRC", "--index", "IX"], ["add", "IX", "SRC"], ["search", "IX", "q"],
                                     ["evaluate", "--index", "IX"]])
def test_an_unknown_precision_is_one_line_exit_2(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([*command, "--precision", "bogus"])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: argument --precision: invalid choice: 'bogus' (choose from 'auto', 'fp32', 'bf16')")


def test_the_library_takes_a_precision_too(tmp_path, tiny_bert, small_jsonl, native):
    from indexer import Index

    native(False)
    Index.build(small_jsonl, tmp_path / "ix", model=str(tiny_bert), max_tokens=16, overlap=2, precision="bf16").close()
    assert read_manifest(tmp_path / "ix").precision == "bf16"
    with Index.open(tmp_path / "ix", model=str(tiny_bert)) as index:
        assert index._searcher.encoder.precision == "bf16"  # the index's
    more = [{"_id": "new-1", "text": "a new flower"}]
    with Index.open(tmp_path / "ix", model=str(tiny_bert), precision="fp32") as index:
        assert index._searcher.encoder.precision == "fp32" and index.search("bees", k=1)  # queries in fp32, to compare
        with pytest.raises(StoreError, match="built with bf16 precision"):
            index.add(more)
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        Index.build(small_jsonl, tmp_path / "other", model=str(tiny_bert), precision="half")
