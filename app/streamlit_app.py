"""Pooling Lab app: `streamlit run app/streamlit_app.py -- --index DIR [--model M] [--allow-build]`.

A router only: it settles which index this browser session uses and hands over to the pages.
"""

import argparse
import sys
from pathlib import Path

# `streamlit run` puts app/ on the path, not the repository root that holds `indexer` and `app`.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import ui  # noqa: E402
from app.ui import DEFAULT_INDEX  # noqa: E402

parser = argparse.ArgumentParser(prog="streamlit run app/streamlit_app.py --")
parser.add_argument("--index", type=Path, default=DEFAULT_INDEX, help="index directory to open first")
parser.add_argument("--indexes", type=Path, default=None, help="folder of indexes to list and build into (default: the index's parent)")
parser.add_argument("--model", default=None, help="search every index with this model (default: each index's own)")
parser.add_argument("--allow-build", action="store_true",
                    help="let visitors build new indexes from uploaded files on the Index page (off by default)")
args, _ = parser.parse_known_args(sys.argv[1:])

st.set_page_config(page_title="Pooling Lab", page_icon="🔎", layout="wide")
st.session_state.setdefault("index_dir", str(args.index))
st.session_state.setdefault("index_root", str(args.indexes or Path(st.session_state["index_dir"]).parent))
st.session_state.setdefault("model", args.model)
st.session_state["allow_build"] = args.allow_build  # from the command line on every run: no session can turn it on
if (problem := ui.index_from_url()) is not None:  # a permalink's ?index=NAME
    st.warning(ui.escape_markdown(problem))  # the name comes from the link: shown literally

# Page scripts live in views/, not pages/: a pages/ folder would also switch on Streamlit's older
# automatic multipage mode, which shows its own file-name navigation on direct URL loads.
pages = [
    st.Page("views/search.py", title="Search", icon=":material/search:", default=True),
    st.Page("views/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    st.Page("views/explore.py", title="Explore", icon=":material/scatter_plot:"),
    st.Page("views/index.py", title="Index", icon=":material/database:"),
]
with st.sidebar:
    st.caption(f"Index: {ui.escape_markdown(Path(st.session_state['index_dir']).name)}")  # a folder name: shown literally
st.navigation(pages).run()
