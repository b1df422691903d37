"""Fuzzing the query path: any string through Searcher.search and the CLI's `search` gives rankings or
a ValueError / exit 2 with one line (never another exception, never a traceback).

Examples per test: POOLING_LAB_FUZZ_EXAMPLES (default 100, a few seconds); `make fuzz` raises it.
Each test prints how many inputs it tried (visible with `pytest -s`).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer.cli import main
from indexer.encoder import Encoder
from indexer.pipeline import build_index
from indexer.search import Searcher

EXAMPLES = int(os.environ.get("POOLING_LAB_FUZZ_EXAMPLES", "100"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Inputs an attacker or an unlucky paste would try; Hypothesis mixes them with arbitrary text.
SPECIAL = [
    "\u200b\u200c\u200d\u2060\ufeff",  # zero-width only: blank
    "\u202ebees\u202c", "\u200fעסל\u200e", "مرحبا بالعالم", "שלום עולם",  # bidi marks, RTL scripts
    "🐝🍯" * 50, "👩‍👩‍👧‍👦", "\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F",  # emoji, ZWJ, tags
    "\x00", "bees\x00honey", "\x1b[31mred\x1b[0m", "\r\n\t\x0b\x0c", "\x85\u2028\u2029",  # NUL, control chars, line breaks
    "\ud800", "bees \udcff honey", "\udfff\ud800",  # lone surrogates (JSON escapes, non-UTF-8 argv bytes)
    "x" * 20_000, "bee " * 5_000, "\u0301" * 300, "ﬀ" * 1000, "İ" * 100, "ß" * 1000,  # huge, combining, case folding
    "the", "[CLS]", "[SEP] [PAD] [MASK]", "##ing", "-", "--json", "%s%n{}", "' OR 1=1 --",
]

QUERIES = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=()), max_size=300),  # any code point, surrogates included
    st.text(alphabet=st.characters(categories=["Cc", "Cf", "Cs", "Zs", "Zl", "Zp", "Mn", "So"]), max_size=60),
    st.sampled_from(SPECIAL),
    st.lists(st.one_of(st.sampled_from(SPECIAL), st.text(max_size=20)), max_size=4).map("".join),
)


@pytest.fixture(scope="module")
def fuzz_index(tmp_path_factory, tiny_bert):
    src = tmp_path_factory.mktemp("fuzz-docs") / "docs.jsonl"
    rows = [
        {"_id": "bees", "text": "the bees make honey in the hive"},
        {"_id": "bread", "text": "bake bread with flour and water"},
        {"_id": "sky", "text": "a comet and a planet orbit the sun"},
        {"_id": "river", "text": "rain and snow fill the river"},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    encoder = Encoder.load(str(tiny_bert), representations=("pooled", "mean"))
    return build_index(src, tmp_path_factory.mktemp("fuzz-ix") / "ix", encoder, overlap=4, progress=False).index_dir


@pytest.fixture(scope="module")
def fuzz_searcher(fuzz_index):
    searcher = Searcher(fuzz_index)
    yield searcher
    searcher.close()


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "Traceback" not in message


def test_searcher_search_gives_rankings_or_one_line(fuzz_searcher):
    seen: Counter = Counter()

    @SETTINGS
    @given(QUERIES)
    def one(query: str) -> None:
        try:
            result = fuzz_searcher.search(query, k=3)
        except ValueError as exc:
            assert one_line(str(exc)), repr(str(exc))
            seen["refused"] += 1
            return
        assert set(result.results) == {"pooled", "mean"}
        for hits in result.results.values():
            assert [h.rank for h in hits] == list(range(1, len(hits) + 1)) and 1 <= len(hits) <= 3
            assert all(math.isfinite(h.score) for h in hits)
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        json.dumps(result.to_dict(), ensure_ascii=False).encode("utf-8")  # printable and storable as it is
        seen["ranked"] += 1

    one()
    print(f"\nfuzz, query path (Searcher.search): {sum(seen.values())} inputs tried, {seen['ranked']} ranked, "
          f"{seen['refused']} refused with one line, 0 crashed")
    assert seen["ranked"] and seen["refused"]  # both outcomes were exercised


def test_cli_search_gives_json_or_one_line(fuzz_index):
    seen: Counter = Counter()

    @settings(SETTINGS, max_examples=max(EXAMPLES // 5, 5))  # each call opens the index and the model again
    @given(QUERIES)
    def one(query: str) -> None:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["search", str(fuzz_index), "--json", "-k", "2", "--", query])
        if code == 0:
            result = json.loads(out.getvalue())
            assert result["query"] == query and set(result["results"]) == {"pooled", "mean"}
            seen["ranked"] += 1
        else:
            assert code == 2 and out.getvalue() == "", (code, err.getvalue())
            lines = err.getvalue().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: the query "), err.getvalue()
            seen["refused"] += 1

    one()
    print(f"\nfuzz, query path (python -m indexer search): {sum(seen.values())} inputs tried, {seen['ranked']} ranked, "
          f"{seen['refused']} refused with one line, 0 crashed")
