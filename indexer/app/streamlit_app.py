"""Pooling Lab app: `pooling-lab app [--index DIR] [--model M] [--allow-build]` (indexer/app/serve.py starts it).

A router only: it settles which index this browser session uses and hands over to the pages.
"""

import argparse
import sys
from pathlib import Path

# `streamlit run` puts this file's folder on the path; from a checkout, the folder that holds `indexer` must be
# there too (an installed package is importable already).
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from indexer.app import ui  # noqa: E402
from indexer.app.serve import add_app_arguments  # noqa: E402

parser = add_app_arguments(argparse.ArgumentParser(prog="pooling-lab app"))
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
