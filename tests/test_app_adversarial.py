"""The app as an attacker and a careless user would use it (issue 12): hostile links, uploads and names on every page
give an escaped one-line message, never a traceback, never a path outside the index folder, never a link."""

import json
import sys

import pytest
from streamlit.testing.v1 import AppTest

from indexer.app.ui import WORD_JOINER
from indexer.pipeline import build_index
from test_app import document_option, hit_captions, hit_heads, texts, unescape
from test_app_build import build_button, entries, index_page, upload_and_build
from test_app_evaluate import page


def messages(at: AppTest) -> list[str]:
    return texts(at.error) + texts(at.warning)


# -- links ----------------------------------------------------------------------------------------------

def test_a_link_naming_a_representation_twice_is_a_message_not_a_traceback(tiny_index):
    for view in ("search", "explore"):
        at = page(tiny_index, view, {"q": "bees", "reps": "pooled,pooled"})
        assert not at.exception, (view, at.exception)
        assert any("reps='pooled,pooled' was ignored: pooled is picked twice" in unescape(m) for m in messages(at)), (view, messages(at))
        if view == "search":
            assert texts(at.subheader) == ["`pooled`", "`mean`"]  # the page's own default pick


# -- the Index page with --allow-build ---------------------------------------------------------------------

def test_a_hidden_upload_is_refused_not_silently_left_out_of_the_index(tiny_index, tmp_path, monkeypatch):
    """The folder reader skips hidden files: a `.notes.txt` among the uploads would be missing from the index unsaid."""
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--allow-build"])
    at = index_page(tiny_index, tmp_path)
    at.file_uploader[0].upload(".notes.txt", b"the comet and the planet", "text/plain")
    at.file_uploader[0].upload("a.txt", b"the bees make honey", "text/plain").run()
    assert not at.exception
    assert unescape(at.error[0].value) == "“.notes.txt” is a hidden file name, which a build would skip; rename it."
    assert build_button(at).disabled and entries(tmp_path) == []


def test_an_uploads_name_in_the_index_table_is_text_not_a_link(tiny_index, tiny_bert, tmp_path, monkeypatch):
    """st.table reads Markdown: the source's name (an upload's, on a built index) must be escaped like the rest."""
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--allow-build"])
    name = "[click](https:evil.example) <b>x.jsonl"
    at = index_page(tiny_index, tmp_path)
    upload_and_build(at, {name: b'{"_id": "a", "text": "the bees make honey"}\n'}, "fresh", tiny_bert)
    assert not at.exception and not at.error
    about = at.table[0].value  # the new index is the current one: its expander is drawn first
    assert unescape(about.loc["source", "value"]).endswith(f"/{name}")  # in full: AppTest's server is loopback
    assert all("](" not in str(v) and "<b>" not in str(v) for v in about["value"])


def test_a_link_with_a_number_too_large_for_a_number_box_is_a_message(tiny_index, five_index):
    """`int()` reads any length of digits; a number box holds a float: 10**400 overflowed it (a traceback)."""
    huge = "1" + "0" * 400
    at = page(tiny_index, "search", {"q": "bees", "k": huge})
    assert not at.exception
    assert any(m.startswith("The link's k='1000") and m.endswith("' was ignored: out of range.") for m in map(unescape, messages(at)))
    hits = [c for c in hit_captions(at) if c.startswith("`pooled` · ")]
    assert len(hits) == 3  # the default k (10), on an index of 3 documents
    at = page(five_index[0], "search", {"q": "bees and honey", "rel": huge})  # a judged query: the grade box is drawn
    assert not at.exception
    assert any(m.startswith("The link's rel='1000") and m.endswith("' was ignored: out of range.") for m in map(unescape, messages(at)))
    assert at.number_input(key="threshold").value == 1


def test_a_long_link_value_is_quoted_short_in_its_message(tiny_index):
    """A link's unusable value is quoted in the warning: a 10,000-character one must not fill the page."""
    long = "<b>x</b>" + "y" * 10_000
    at = page(tiny_index, "explore", {"doc": long, "negatives": long})
    assert not at.exception
    warnings = [unescape(m) for m in messages(at)]
    assert len(warnings) == 2 and all(len(w) < 300 for w in warnings), [len(w) for w in warnings]
    assert all(w.startswith("the link's ") and "='<b>x</b>yyyy" in w and "…' was ignored: no " in w for w in warnings)


def test_a_links_baseline_outside_its_pick_is_said_not_silently_swapped(five_index):
    at = page(five_index[0], "search", {"q": "bees and honey", "reps": "pooled,mean", "baseline": "max"})
    assert not at.exception
    assert "The link's baseline='max' was ignored: not among the representations shown (pooled, mean)." in map(unescape, messages(at))
    assert at.selectbox(key="baseline").value == "pooled" and at.query_params["baseline"] == "pooled"
    # a baseline among the link's pick is taken as it is
    at = page(five_index[0], "search", {"q": "bees and honey", "reps": "pooled,max", "baseline": "max"})
    assert not messages(at) and at.selectbox(key="baseline").value == "max"


HOSTILE_INDEX = ["../..", "/etc", "..", "notindex", ".hidden", "", "[x](http://evil.example)"]


@pytest.mark.parametrize("view", ["search", "evaluate", "explore", "index"])
def test_a_link_naming_no_index_of_the_folder_opens_none_and_says_so_escaped(view, tiny_index):
    """?index= is a name in the index folder: a path, a parent, a non-index folder beside the index, or nothing,
    leaves the current index in place (with an escaped message when a name was given)."""
    for name in ("notindex", ".hidden"):
        (tiny_index.parent / name).mkdir(exist_ok=True)
    for wanted in HOSTILE_INDEX:
        at = page(tiny_index, view, {"index": wanted, "q": "[a](javascript:alert(1)) <img src=x> http://evil.example"})
        assert not at.exception, (view, wanted)
        assert at.session_state["index_dir"] == str(tiny_index), (view, wanted)
        shown = messages(at)
        assert all("](" not in m and "<" not in m.replace("\\<", "") for m in shown), shown
        assert any(unescape(m).replace(WORD_JOINER, "") == f"The link names an index “{wanted}” that is not here; showing tiny instead."
                   for m in shown) == bool(wanted), (view, wanted, shown)


# -- Search: the whole document of a hit deleted between runs ---------------------------------------------------

def test_an_open_document_deleted_from_the_index_closes_and_its_hit_goes(tiny_encoder, tmp_path):
    from conftest import build_random
    from indexer.pipeline import delete_documents

    directory = build_random(tmp_path / "ix", tiny_encoder, 6)
    at = page(directory, "search", {"q": "the", "reps": "pooled,mean"})
    first = next(c for c in hit_captions(at) if c.startswith("`pooled` · ")).split(" · ")[1]
    at.selectbox(key="document").select_index(document_option(at, "pooled", 1)).run()
    assert any(m.startswith("**Whole document** ·") and m.endswith(first) for m in texts(at.markdown))
    assert delete_documents(directory, [unescape(first)]).removed == [unescape(first)]
    at.run()  # any next run: the page searches the new generation
    assert not at.exception and not at.error
    assert not any(m.startswith("**Whole document**") for m in texts(at.markdown))
    assert not any(c.split(" · ")[1] == first for c in hit_captions(at) if c.startswith(("`pooled` · ", "`mean` · ")))
    assert at.selectbox(key="document").value == ""  # the picker closed with it
    at.selectbox(key="document").select_index(document_option(at, "pooled", 1)).run()  # the next hit opens
    assert not at.exception and sum(m.startswith("**Whole document** ·") for m in texts(at.markdown)) == 1


def test_a_folder_name_holding_markdown_is_shown_literally_in_the_sidebar_and_the_index_list(tiny_index, tmp_path):
    """Folders made outside the app (a CLI build, a copy) may be named anything a file system allows."""
    import shutil

    from test_app import app

    name = "[x](https:evil.example) **b**"
    shutil.copytree(tiny_index, tmp_path / name)
    at = app(tmp_path / name).switch_page("views/index.py").run()
    assert not at.exception
    assert unescape(at.sidebar.caption[0].value) == f"Index: {name}"
    assert [unescape(e.label).split(" — ")[0] for e in at.expander] == [f"● {name}"]


def test_direction_controls_in_a_title_or_id_cannot_reorder_the_hit_around_them(tiny_encoder, tmp_path):
    """A title holding U+202E (right-to-left override) reversed the grade badge and the id drawn after it: text from
    outside that holds a direction control is wrapped in an isolate, without a closing character of its own."""
    from indexer.app.ui import FIRST_STRONG_ISOLATE as FSI
    from indexer.app.ui import POP_DIRECTIONAL_ISOLATE as PDI

    rows = [{"_id": f"d{i}", "title": f"\u202eevil title {i}\u2069 and more", "text": "the bees make honey in the hive"}
            for i in range(3)]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    directory = build_index(source, tmp_path / "ix", tiny_encoder, progress=False).index_dir
    at = page(directory, "search", {"q": "bees"})
    assert not at.exception and not at.error
    heads = hit_heads(at)
    assert len(heads) == 6
    for head in heads:
        title = head.split("** ", 1)[1]
        assert title.startswith(FSI + "\u202e") and title.endswith(PDI) and title.count(PDI) == 1
        assert unescape(title).replace(FSI, "").replace(PDI, "").startswith("\u202eevil title")
    labels = list(at.selectbox(key="document").options)[1:]
    assert len(labels) == 6 and all(FSI + "\u202eevil" in label and label.count(PDI) == 1 for label in labels)
