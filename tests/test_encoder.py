"""Encoder on a tiny random BERT: one pass, padding invariance, order, pooler check, model loading errors."""

import hashlib
import logging
import shutil

import numpy as np
import pytest
import torch

import indexer.encoder
from conftest import edited_copy, forward_pre_hook, make_tiny_bert, make_tiny_distilbert, relu_one_layer, swap_bees_and_honey
from indexer.encoder import IDENTITY_FILES, Encoder, ModelError, length_batches, resolve_model, weights_digest

TEXTS = [
    "the bees make honey",
    "bake bread with flour water salt and yeast in a hot oven " * 3,
    "a comet",
    "rain and snow fill the river and the lake",
    "unbelievable",
]


def reference(encoder, text):
    """Independent computation: the model's own outputs for one unpadded text."""
    batch = encoder.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        out = encoder.model(**batch)
    mask = batch["attention_mask"][..., None].float()
    mean = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
    def norm(t):
        return torch.nn.functional.normalize(t, dim=-1)[0].numpy()
    return {"pooled": norm(out.pooler_output), "mean": norm(mean), "cls": norm(out.last_hidden_state[:, 0])}


def test_all_representations_match_the_models_own_outputs(tiny_encoder):
    vectors = tiny_encoder.encode_texts(TEXTS)
    for i, text in enumerate(TEXTS):
        ref = reference(tiny_encoder, text)
        for r in ("pooled", "mean", "cls"):
            np.testing.assert_allclose(vectors[r][i], ref[r], atol=1e-5, err_msg=f"{r} of {text!r}")


def test_vectors_are_unit_float32(tiny_encoder):
    vectors = tiny_encoder.encode_texts(TEXTS)
    for v in vectors.values():
        assert v.dtype == np.float32 and v.shape == (len(TEXTS), 32)
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)


def widths_of_passes(encoder, texts):
    """(rows, width) of each forward pass that encoding `texts` makes, and the vectors."""
    shapes = []
    with forward_pre_hook(encoder, lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
                          with_kwargs=True):
        vectors = encoder.encode_texts(texts)
    return shapes, vectors


def test_padding_invariance_and_order_restored(tiny_encoder, monkeypatch):
    monkeypatch.setattr(indexer.encoder, "BATCH_OVERHEAD_TOKENS", 10**6)  # full batches: rows padded to the longest
    shapes, together = widths_of_passes(tiny_encoder, TEXTS)  # batch_size 4: sorted by length, padded
    lengths = [len(t.ids) for t in tiny_encoder.tokenizer(TEXTS, add_special_tokens=True).encodings]
    assert sum(r * w for r, w in shapes) > sum(lengths)  # padding happened
    for i, text in enumerate(TEXTS):
        alone = tiny_encoder.encode_texts([text])
        for r in together:
            np.testing.assert_allclose(together[r][i], alone[r][0], atol=1e-5)


def test_max_and_first_last_match_an_independent_computation(tiny_bert):
    encoder = Encoder.load(str(tiny_bert), representations=("max", "first_last"), batch_size=2)
    vectors = encoder.encode_texts(TEXTS)  # batched, sorted by length, padded
    for i, text in enumerate(TEXTS):
        batch = encoder.tokenizer([text], return_tensors="pt")  # one text: no padding at all
        with torch.no_grad():
            out = encoder.model(**batch, output_hidden_states=True)
        layers = out.hidden_states  # (embeddings, layer 1, layer 2)
        assert len(layers) == 3
        expected_max = out.last_hidden_state[0].max(dim=0).values
        expected_first_last = ((layers[1] + layers[2]) / 2)[0].mean(dim=0)
        def norm(t):
            return torch.nn.functional.normalize(t, dim=-1).numpy()
        np.testing.assert_allclose(vectors["max"][i], norm(expected_max), atol=1e-5)
        np.testing.assert_allclose(vectors["first_last"][i], norm(expected_first_last), atol=1e-5)


def test_hidden_states_are_asked_for_only_when_first_last_needs_them(tiny_bert):
    asked = {}
    for reps in (("pooled", "mean", "cls", "max"), ("mean", "first_last")):
        encoder = Encoder.load(str(tiny_bert), representations=reps, batch_size=8)
        hook = encoder.model.register_forward_hook(lambda m, args, kwargs, out, reps=reps: asked.setdefault(reps, set()).add(
            (kwargs.get("output_hidden_states"), out.hidden_states is not None)), with_kwargs=True)
        try:
            encoder.encode_texts(TEXTS)
        finally:
            hook.remove()
    assert list(asked.values()) == [{(False, False)}, {(True, True)}]  # in every forward pass


def test_transformed_representations_need_only_their_pooling(tiny_bert):
    encoder = Encoder.load(str(tiny_bert), representations=("mean+whiten", "pooled+abtt2", "mean"))
    assert encoder.representations == ("pooled+abtt2", "mean", "mean+whiten")
    assert encoder.poolings == ("pooled", "mean")
    assert set(encoder.encode_texts(TEXTS)) == {"pooled", "mean"}


def test_one_forward_pass_per_batch(tiny_bert):
    encoder = Encoder.load(str(tiny_bert), representations=("pooled", "mean", "cls"), batch_size=2)
    calls = []
    hook = encoder.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        encoder.encode_texts(TEXTS)
    finally:
        hook.remove()
    assert len(calls) == len(length_batches(
        [len(e.ids) for e in encoder.tokenizer(TEXTS).encodings], 2, indexer.encoder.BATCH_OVERHEAD_TOKENS))
    assert len(calls) == 3  # whatever the number of representations


def partitions(items):
    """Every way of splitting `items` into groups (set partitions), an independent enumeration."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in partitions(rest):
        for k in range(len(part)):
            yield part[:k] + [[first, *part[k]]] + part[k + 1 :]
        yield [[first], *part]


def cost(groups, lengths, overhead):
    return sum(max(lengths[i] for i in g) * len(g) + overhead for g in groups)


@pytest.mark.parametrize("seed", range(40))
def test_length_batches_are_the_cheapest_grouping_longest_first(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 8))
    lengths = [int(x) for x in rng.integers(1, 40, n)]
    if seed % 4 == 0 and n:
        lengths[-1] = lengths[0]  # ties
    batch_size = int(rng.integers(1, 5))
    for overhead in (0, 3, 25, 10**6):
        batches = length_batches(lengths, batch_size, overhead)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(n)) and all(1 <= len(b) <= batch_size for b in batches)
        assert flat == sorted(range(n), key=lambda i: -lengths[i])  # longest first, ties in input order
        cheapest = min(cost(p, lengths, overhead) for p in partitions(list(range(n))) if all(len(g) <= batch_size for g in p))
        assert cost(batches, lengths, overhead) == cheapest
        if overhead == 10**6:
            assert len(batches) == -(-n // batch_size)  # the fewest batches
    assert length_batches(lengths, batch_size, 25) == length_batches(lengths, batch_size, 25)


def test_a_batch_ends_early_where_lengths_fall_steeply_and_encoding_pads_accordingly(tiny_bert, monkeypatch):
    encoder = Encoder.load(str(tiny_bert), representations=("pooled", "mean"), batch_size=4)
    texts = ["bake bread with flour water salt and yeast in a hot oven " * 3, "a comet", "the bees", "unbelievable"]
    lengths = [len(e.ids) for e in encoder.tokenizer(texts).encodings]
    shapes, vectors = widths_of_passes(encoder, texts)
    assert sorted(shapes) == sorted([(1, max(lengths)), (3, sorted(lengths)[-2])])  # the long text alone
    monkeypatch.setattr(indexer.encoder, "BATCH_OVERHEAD_TOKENS", 10**6)
    full, padded = widths_of_passes(encoder, texts)
    assert full == [(4, max(lengths))]
    for r in vectors:
        np.testing.assert_allclose(vectors[r], padded[r], atol=1e-5)


def test_a_single_short_sequence_runs_on_the_transposed_copy_and_gets_the_models_vectors(tiny_encoder, monkeypatch):
    """A query (one sequence of at most SMALL_INPUT_TOKENS) is run by small_input_model: the linear weights stored
    transposed, every other tensor shared; its vectors are the model's own (the independent `reference`). A batch,
    or one sequence longer than SMALL_INPUT_TOKENS, runs on the model's own layout."""
    import indexer.encoder
    from conftest import forward_pre_hook
    from indexer.encoder import small_input_model

    small = small_input_model(tiny_encoder.model)
    assert small is small_input_model(tiny_encoder.model) and small is not tiny_encoder.model
    own = dict(tiny_encoder.model.named_parameters())
    linears = 0
    for name, p in small.named_parameters():
        module = small.get_submodule(name.rpartition(".")[0])
        if isinstance(module, torch.nn.Linear) and name.endswith(".weight"):
            linears += 1
            assert p.T.is_contiguous() and not p.is_contiguous() and p.data_ptr() != own[name].data_ptr()
            assert torch.equal(p, own[name])
        else:
            assert p is own[name]
    assert linears > 0

    ran = []
    monkeypatch.setattr(indexer.encoder, "SMALL_INPUT_TOKENS", 8)  # the tiny model's window is shorter than 64
    short, longer = TEXTS[0], TEXTS[1]  # 4 and 33 words: with [CLS] and [SEP], at most 8 tokens and more
    with forward_pre_hook(tiny_encoder, lambda module, *_: ran.append(module is small)):
        one = tiny_encoder.encode_texts([short])
        assert ran == [True]
        tiny_encoder.encode_texts([short, short])
        tiny_encoder.encode_texts([longer])
        assert ran == [True, False, False]
    for r in ("pooled", "mean", "cls"):
        np.testing.assert_allclose(one[r][0], reference(tiny_encoder, short)[r], atol=1e-5, err_msg=r)


def test_a_model_that_cannot_be_copied_runs_queries_on_its_own_layout_and_is_not_kept(tiny_bert, monkeypatch, caplog):
    """small_input_model falls back to the model itself, with one warning, when it cannot be deep-copied (custom
    code); the vectors are still the model's, and the fallback does not keep a dropped model alive."""
    import copy
    import gc
    import weakref

    from indexer.encoder import small_input_model

    encoder = Encoder.load(str(tiny_bert), representations=("pooled", "mean", "cls"))

    def refuse(*_args, **_kwargs):
        raise TypeError("cannot pickle this module")

    monkeypatch.setattr(copy, "deepcopy", refuse)
    with caplog.at_level(logging.WARNING, logger="indexer.encoder"):
        one = encoder.encode_texts([TEXTS[0]])
        assert small_input_model(encoder.model) is encoder.model
    assert [r.getMessage() for r in caplog.records] == [
        "queries run on the model's own weight layout: it cannot be copied (TypeError: cannot pickle this module)"]
    for r in ("pooled", "mean", "cls"):
        np.testing.assert_allclose(one[r][0], reference(encoder, TEXTS[0])[r], atol=1e-5, err_msg=r)
    model = weakref.ref(encoder.model)
    del encoder
    gc.collect()
    assert model() is None


def test_long_query_is_cut_to_the_window_with_a_warning(tiny_encoder, caplog):
    with caplog.at_level(logging.WARNING, logger="indexer.encoder"):
        v = tiny_encoder.encode_texts(["the bees " * 100])
    assert "cut to the model's window" in caplog.text
    assert v["mean"].shape == (1, 32)


def test_encode_ids_refuses_a_sequence_longer_than_the_window(tiny_encoder):
    with pytest.raises(ValueError, match="window"):
        tiny_encoder.encode_ids([[5] * (tiny_encoder.window + 1)])


def test_max_tokens_comes_from_the_model_and_cannot_exceed_it(tiny_bert):
    encoder = Encoder.load(str(tiny_bert))
    assert encoder.max_tokens == 64 and encoder.window == 62
    with pytest.raises(ValueError, match="model's limit 64"):
        Encoder.load(str(tiny_bert), max_tokens=65)


def test_pooler_loaded_is_reported(tiny_encoder):
    assert tiny_encoder.info.pooler == "loaded"


def test_missing_pooler_weights_warn_loudly(tmp_path, caplog):
    path = make_tiny_bert(tmp_path / "nopooler", with_pooler=False)
    with caplog.at_level(logging.WARNING, logger="indexer.encoder"):
        encoder = Encoder.load(str(path))
    assert encoder.info.pooler == "missing"
    assert "pooler.dense.weight" in encoder.info.pooler_note
    assert "WARNING" in caplog.text and "randomly" in caplog.text


def test_model_without_pooler_refuses_pooled_but_builds_mean(tmp_path):
    path = make_tiny_distilbert(tmp_path / "distil")
    with pytest.raises(ModelError, match="no pooler layer.*--representations mean"):
        Encoder.load(str(path))
    encoder = Encoder.load(str(path), representations=("mean",))
    assert encoder.info.pooler == "absent"
    assert set(encoder.encode_texts(["the bees"])) == {"mean"}


def test_pickle_weights_are_refused(tiny_bert, tmp_path):
    copy = tmp_path / "pickled"
    shutil.copytree(tiny_bert, copy)
    (copy / "model.safetensors").rename(copy / "pytorch_model.bin")
    with pytest.raises(ModelError, match="no safetensors weights.*pytorch_model.bin.*refused"):
        Encoder.load(str(copy))


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nowhere"))


def test_hub_model_unreachable_is_a_clear_error():
    # HF_HUB_OFFLINE=1 in tests: the real hub path runs and fails without any network access
    with pytest.raises(ModelError, match="could not fetch model 'someone/some-model'.*local model directory"):
        resolve_model("someone/some-model")


def test_weights_digest_identifies_the_weights(tiny_bert, tiny_bert_other):
    assert weights_digest(tiny_bert) != weights_digest(tiny_bert_other)
    assert weights_digest(tiny_bert) == weights_digest(tiny_bert)


def test_invalid_representation_lists_valid_ones(tiny_bert):
    with pytest.raises(ValueError, match=r"unknown representation 'median'.*pooled, mean, cls, max, first_last.*whitenK.*abttD"):
        Encoder.load(str(tiny_bert), representations=("median",))
    with pytest.raises(ValueError, match=r"unknown representation 'mean\+whiten0' \(unknown transform 'whiten0'\)"):
        Encoder.load(str(tiny_bert), representations=("mean+whiten0",))


def test_empty_batches_are_fine(tiny_encoder):
    assert tiny_encoder.tokenize([]) == []
    assert {r: v.shape for r, v in tiny_encoder.encode_ids([]).items()} == {"pooled": (0, 32), "mean": (0, 32), "cls": (0, 32)}


def test_fingerprint_covers_weights_config_and_tokenizer_files(tiny_bert, tmp_path):
    original = Encoder.load(str(tiny_bert))
    info = original.info
    # independent computation of each file's digest
    for name in ("model.safetensors", "config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        assert info.files[name] == hashlib.sha256((tiny_bert / name).read_bytes()).hexdigest()
    assert info.weights_sha256 == info.files["model.safetensors"]
    assert set(info.files) <= {"model.safetensors", *IDENTITY_FILES}

    assert Encoder.load(str(shutil.copytree(tiny_bert, tmp_path / "same"))).info.fingerprint == info.fingerprint

    config = Encoder.load(str(edited_copy(tiny_bert, tmp_path / "config", "config.json", relu_one_layer)))
    assert config.info.weights_sha256 == info.weights_sha256 and config.info.fingerprint != info.fingerprint
    assert [n for n in info.files if config.info.files[n] != info.files[n]] == ["config.json"]
    assert len(config.model.encoder.layer) == 1  # the edit is real: another network from the same weights

    tokenizer = Encoder.load(str(edited_copy(tiny_bert, tmp_path / "tok", "tokenizer.json", swap_bees_and_honey)))
    assert tokenizer.info.weights_sha256 == info.weights_sha256 and tokenizer.info.fingerprint != info.fingerprint
    assert [n for n in info.files if tokenizer.info.files[n] != info.files[n]] == ["tokenizer.json"]
    assert tokenizer.tokenize(["bees honey"])[0].ids == original.tokenize(["bees honey"])[0].ids[::-1]
