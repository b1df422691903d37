"""The app as an attacker and a careless user would use it (issue 12): hostile links, uploads and names on every page
give an escaped one-line message, never a traceback, never a path outside the index folder, never a link."""

from streamlit.testing.v1 import AppTest

from test_app import texts, unescape
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
