"""Shared fixtures: tiny random BERT-family models saved to disk, the bundled model, small collections."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

# Tests never touch the network; the hub client reads this when it is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
MSMARCO = ROOT.parent / "shared" / "datasets" / "msmarco-5k"
STSB = ROOT.parent / "shared" / "datasets" / "stsb-test-part"

WORDS = (
    "the a of and to in is was it for on with as by at from that this be are or an not "
    "bees honey hive queen wax flower pollen nectar colony swarm "
    "bread flour yeast dough oven bake crust water salt sugar "
    "star planet moon sun orbit comet galaxy light telescope sky "
    "river sea rain cloud storm wind snow ice lake fish "
    "bike wheel chain brake tire gear pedal road ride repair "
    "un ##believ ##able ##ly ##s ##ed ##ing ##er"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _tiny_tokenizer(directory: Path):
    from transformers import BertTokenizer

    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + WORDS + list(".,!?;:-'\"()")) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer.from_pretrained(directory, do_lower_case=True, model_max_length=64)
    tokenizer.save_pretrained(directory)
    return tokenizer


def random_corpus(path: Path, n: int, seed: int = 0, prefix: str = "d") -> Path:
    """A JSONL file of `n` short documents of random tiny-vocabulary words: enough chunks to fit transforms on."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = [w for w in WORDS if not w.startswith("#")]
    rows = [{"_id": f"{prefix}{i}", "text": " ".join(rng.choice(words, size=int(rng.integers(6, 12))))} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_random(directory: Path, encoder, n: int, seed: int = 0) -> Path:
    """An index of `n` random tiny-vocabulary documents in 16-token chunks (enough to fit transforms on)."""
    from indexer.pipeline import build_index

    build_index(random_corpus(directory.parent / f"{directory.name}.jsonl", n, seed), directory, encoder, overlap=2, progress=False)
    return directory


@contextlib.contextmanager
def running_app(index_dir: Path, log: Path, *, address: str | None = "127.0.0.1", app_args: tuple[str, ...] = ()):
    """`streamlit run` of the app on `index_dir` and a free port (app.serve.serving); yields (URL, port) once its
    health check answers, and fails the test with the server's log when it does not start.

    `address=None` leaves the listening address to the project's .streamlit/config.toml; `app_args` go to the
    app's own arguments (e.g. `--allow-build`).
    """
    from indexer.app.serve import ServeError, serving

    try:
        with serving(index_dir, log, address=address, app_args=app_args) as (url, port):
            yield url, port
    except ServeError as exc:
        pytest.fail(str(exc))


@contextlib.contextmanager
def forward_pre_hook(encoder, hook, **options):
    """`hook` before every forward pass of `encoder`'s model, whichever layout runs it: the model's own (batches) or
    encoder.small_input_model's copy (a single short sequence: a query). `options` go to register_forward_pre_hook
    (with_kwargs=True: `hook(module, args, kwargs)`)."""
    from indexer.encoder import small_input_model

    handles = [m.register_forward_pre_hook(hook, **options) for m in (encoder.model, small_input_model(encoder.model))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def make_tiny_bert(directory: Path, *, seed: int = 0, with_pooler: bool = True) -> Path:
    """A 2-layer random BERT with a small vocabulary, saved as safetensors (no pooler weights if asked)."""
    from transformers import BertConfig, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer(directory)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, initializer_range=0.2,
    )
    BertModel(config, add_pooling_layer=with_pooler).save_pretrained(directory)
    return directory


def make_tiny_distilbert(directory: Path) -> Path:
    """A model class with no pooler layer at all."""
    from transformers import DistilBertConfig, DistilBertModel

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer(directory)
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64)
    DistilBertModel(config).save_pretrained(directory)
    return directory


def edited_copy(model_dir: Path, target: Path, name: str, edit) -> Path:
    """A copy of a model directory with one of its files rewritten by `edit(text) -> text`: same weights, other model."""
    shutil.copytree(model_dir, target)
    path = target / name
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    return target


def relu_one_layer(text: str) -> str:
    """config.json edit: one layer and relu, loaded from the same weights file."""
    return json.dumps(json.loads(text) | {"hidden_act": "relu", "num_hidden_layers": 1})


def swap_bees_and_honey(text: str) -> str:
    """tokenizer.json edit: two words trade token ids."""
    tokenizer = json.loads(text)
    vocab = tokenizer["model"]["vocab"]
    vocab["bees"], vocab["honey"] = vocab["honey"], vocab["bees"]
    return json.dumps(tokenizer)


@pytest.fixture(scope="session", autouse=True)
def app_config():
    """The settings of the app's own .streamlit/config.toml for AppTest, which reads only the current folder's
    (streamlit run reads the one beside the script): the loopback address decides whether paths are shown."""
    import tomllib

    from streamlit import config

    from indexer.app.serve import APP

    settings = tomllib.loads((APP.parent / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    config.set_option("server.address", settings["server"]["address"])


@pytest.fixture(scope="session", autouse=True)
def fp32_unless_asked():
    """`auto` precision resolves as on a device without native bf16, whatever this machine has, so that every test's
    vectors are fp32 unless it asks for bf16 (test_precision.py replaces the check itself). Yields the real check."""
    from indexer import encoder

    real = encoder.native_bf16
    patch = pytest.MonkeyPatch()
    patch.setattr(encoder, "native_bf16", lambda device: False)
    yield real
    patch.undo()


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_bert_other(tmp_path_factory) -> Path:
    """Same architecture, other weights: stands for 'another model'."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert-other"), seed=1)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_bert):
    from indexer.encoder import Encoder

    return Encoder.load(str(tiny_bert), representations=("pooled", "mean", "cls"), batch_size=4)


@pytest.fixture(scope="session")
def bundled_encoder():
    from indexer.encoder import Encoder

    return Encoder.load(None, representations=("pooled", "mean", "cls"))


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory, bundled_encoder):
    """data/sample indexed with the bundled model: (directory, build summary)."""
    from indexer.pipeline import build_index

    directory = tmp_path_factory.mktemp("sample") / "ix"
    summary = build_index(SAMPLE, directory, bundled_encoder, progress=False)
    return directory, summary


@pytest.fixture
def small_jsonl(tmp_path) -> Path:
    """Eight documents, two of them long enough to span several chunks of the tiny model."""
    rows = [
        {"_id": "bee-1", "title": "bees", "text": "the bees make honey from nectar and pollen in the hive"},
        {"_id": "bee-2", "title": "", "text": "a queen and her colony swarm from the hive in spring"},
        {"_id": "bread-1", "title": "bread", "text": "bake bread with flour water salt and yeast in a hot oven"},
        {"_id": "bread-2", "title": "", "text": "the dough and the crust of the bread"},
        {"_id": "star-1", "title": "sky", "text": "a comet and a planet orbit the sun in the sky " * 6},
        {"_id": "river-1", "title": "", "text": "rain and snow fill the river and the lake with water " * 5},
        {"_id": "bike-1", "title": "bike", "text": "repair the chain brake and tire of the bike"},
        {"_id": "bike-2", "title": "", "text": "ride the road on a bike with gear and pedal"},
    ]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- small indexes the app's tests share (one per test module that asks) ------------------------------

@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory, tiny_bert):
    """Documents whose text tries Markdown, HTML and LaTeX: the page must show it literally."""
    from indexer.encoder import Encoder
    from indexer.pipeline import build_index

    src = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    rows = [
        {"_id": "evil", "title": "<b>bold</b>", "text": "the bees <script>alert(1)</script> [link](http://x) **honey** $x$"},
        {"_id": "ok", "title": "bread", "text": "bake bread with flour and water"},
        {"_id": "sky", "title": "", "text": "a comet and a planet orbit the sun"},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    encoder = Encoder.load(str(tiny_bert))  # 64 tokens: each document is one chunk
    return build_index(src, tmp_path_factory.mktemp("ix") / "tiny", encoder, overlap=4, progress=False).index_dir


TINY_DOCS = {
    "bee-1": "the bees make honey from nectar and pollen in the hive",
    "bee-2": "a queen and her colony swarm from the hive in spring",
    "bread-1": "bake bread with flour water salt and yeast in a hot oven",
    "star-1": "a comet and a planet orbit the sun in the sky",
    "bike-1": "repair the chain brake and tire of the bike",
}


FIVE = ("pooled", "mean", "mean+whiten", "max", "first_last")  # the index's (canonical) order
MORE_DOCS = TINY_DOCS | {
    "bee-3": "wax and honey from the hive of the bees",
    "bread-2": "the dough and the crust of the bread",
    "bread-3": "sugar and yeast make the dough rise in the oven",
    "star-2": "the moon and the stars light the sky",
    "river-1": "rain and snow fill the river and the lake with water",
    "river-2": "a storm with wind and rain on the sea",
    "bike-2": "ride the road on a bike with gear and pedal",
    "fish-1": "fish swim in the lake under the ice",
}


@pytest.fixture(scope="module")
def five_index(tmp_path_factory, tiny_bert):
    """Thirteen documents (enough for whitening to span several dimensions) in five representations, with labels."""
    from indexer.encoder import Encoder
    from indexer.pipeline import build_index

    root = tmp_path_factory.mktemp("beir5")
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in MORE_DOCS.items()), encoding="utf-8")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "qa", "text": "bees and honey"}) + "\n", encoding="utf-8")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nqa\tbee-1\t1\nqa\tbee-3\t1\n", encoding="utf-8")
    encoder = Encoder.load(str(tiny_bert), representations=FIVE)
    return build_index(root, tmp_path_factory.mktemp("ix") / "five", encoder, overlap=4, progress=False).index_dir, encoder
