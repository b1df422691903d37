"""Search: one query, the rankings of the representations the user picks side by side, each against a baseline.

The page's state (query, k, columns, baseline, relevance threshold) lives in the URL, so that a reload keeps it
and a link reproduces the view; hits are drawn rank by rank, so that a narrow screen stacks them in pairs.
"""

import re

import streamlit as st

from indexer.app import explain, ui
from indexer.compare import AGREEMENT_DEPTH, MISSED_LISTED, SEARCH_DEPTH, against_baseline, missed_relevant
from indexer.evaluation import per_query_metrics
from indexer.search import query_cut, query_problem
from indexer.text import describe_surrogate, is_blank

#: Most documents a list shows: every ranking is searched this deep, so a rank in another list is known.
MAX_K = SEARCH_DEPTH
DEFAULT_K = 10
#: Characters of a document "Whole document" shows at once (around the matched chunk in a longer document).
DOCUMENT_CHARS = 30_000
#: The query and k boxes, and the session-state keys that keep their values while another page is shown.
KEPT_ACROSS_PAGES = {"query": "kept_query", "k": "kept_k"}
#: Session-state keys that remember a choice across pages and links, and the widget each one seeds.
REMEMBERED = {"shown": "columns", "baseline_of_columns": "baseline", "relevant_from": "threshold"}


#: The largest whole number a number box holds exactly (JavaScript's Number.MAX_SAFE_INTEGER); past about 1e308 a
#: link's number would not even convert to the box's float.
LARGEST_NUMBER = 2**53 - 1


def whole_number(value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ValueError("not a whole number") from None
    if abs(number) > LARGEST_NUMBER:
        raise ValueError("out of range")
    return number


def url_state(searcher) -> dict:
    """The URL parameters this page reads: parameter -> (session-state key, parser)."""
    held = searcher.representations

    def baseline(value: str) -> str:
        if value not in held:
            raise ValueError(f"not in this index, which keeps {', '.join(held)}")
        if value not in (shown := ui.remembered_representations(held)):  # the link's reps, read just before
            raise ValueError(f"not among the representations shown ({', '.join(shown)})")
        return value

    return {"q": ("query", str), "k": ("k", whole_number), "reps": ("shown", ui.pick_of(held)),
            "baseline": ("baseline_of_columns", baseline), "rel": ("relevant_from", whole_number)}


def restore(searcher) -> list[str]:
    """Seed the page from a link (see ui.restore_from_url); a remembered choice the link changed restarts its widget."""
    before = {key: st.session_state.get(key) for key in REMEMBERED}
    problems = ui.restore_from_url(url_state(searcher))
    for key, widget in REMEMBERED.items():
        if st.session_state.get(key) != before[key]:
            st.session_state.pop(widget, None)
    return problems


def clamp(value: int, low: int, high: int) -> int:
    return min(max(int(value), low), high)


def paragraphs(text: str) -> str:
    """Document text for st.markdown: escaped, its blank-line paragraphs kept."""
    return "\n\n".join(ui.escape_markdown(p) for p in re.split(r"\n\s*\n", text) if p.strip())


#: The whole-document picker's first option: no document open (a real option, so Close can select it; None
#: would make the picker show Streamlit's "Choose an option" instead).
NO_DOCUMENT = ""


def title_of(title: str | None, doc_id: str) -> str:
    """A hit's title as shown: its document id when the title is empty, blank or invisible."""
    return doc_id if not title or is_blank(title) else title


def document_choice(option) -> str:
    """How the whole-document picker names a hit: its column, rank and title (plain text, not Markdown)."""
    if option == NO_DOCUMENT:
        return "—"
    r, rank, doc_id, title = option
    shown = " ".join(title_of(title, doc_id).split())
    shown = shown if len(shown) <= 80 else shown[:80] + "…"
    titled = title_of(title, doc_id) != doc_id  # the id is added only beside a real title
    return f"{r} · {rank}. {ui.isolated(shown)}" + (f" ({ui.isolated(doc_id)})" if titled else "")


def close_document() -> None:
    st.session_state["document"] = NO_DOCUMENT


def hit_markdown(hit, meta: str, badge: str, query: str) -> str:
    """One hit as ONE Markdown block: its rank, title and grade; its column, id, score, place in the baseline
    and chunk in small type; the matched chunk's text with the query's words in bold. One element per hit (not a
    title, a caption, a text and a button) keeps the page quick to draw: the browser's work grows with elements."""
    head = f"**{hit.rank}.** {ui.escape_markdown(title_of(hit.title, hit.doc_id))}{badge}"
    return f"{head}  \n:small[:gray[{meta}]]  \n{ui.highlight(hit.text, query)}"


def show_document(index, hit, place) -> None:
    """The whole text of a hit's document (around its matched chunk when long), the matched chunk framed."""
    with st.container(border=True):
        head, close = st.columns([6, 1], vertical_alignment="center")
        head.markdown(f"**Whole document** · {ui.escape_markdown(title_of(hit.title, hit.doc_id))} · {ui.escape_markdown(hit.doc_id)}")
        close.button("Close", key="close-document", on_click=close_document)
        if place is None:
            st.caption("This document is no longer in the index.")
            return
        # from the start when the matched chunk lies in the first window, else from a little before the chunk
        lo = 0 if place.char_end <= DOCUMENT_CHARS else max(0, place.char_start - DOCUMENT_CHARS // 4)
        span = index.content_span(hit.doc_id, lo, lo + DOCUMENT_CHARS)
        if span is None:
            st.caption("This document is no longer in the index.")
            return
        text, total = span
        hi = lo + len(text)
        notes = []
        if lo > 0 or hi < total:
            notes.append(f"Characters {lo + 1:,}–{hi:,} of {total:,}, around the matched chunk.")
        if place.n_chunks > 1:
            notes.append("The text is shown once although its chunks overlap by a few tokens; the matched chunk is framed.")
        if notes:
            st.caption(" ".join(notes))
        start, end = place.char_start - lo, place.char_end - lo
        if text[:start].strip():
            st.markdown(paragraphs(text[:start]))
        with st.container(border=True):
            st.caption(f"Matched: chunk {place.position + 1} of {place.n_chunks}")
            st.markdown(paragraphs(text[start:end]))
        if text[end:].strip():
            st.markdown(paragraphs(text[end:]))


@st.fragment
def search_view(searcher) -> None:
    """Everything below the page's title: a new query, k or pick reruns only this part, so the browser redraws
    the results and nothing else (the sidebar, title and any message about the link stay as they are)."""
    served = searcher.served()  # a newly published generation (with its encoder), before its counts are shown
    current = served.index
    st.caption(f"{current.n_documents} documents, {current.n_chunks} chunks · model "
               f"`{served.encoder.info.name}` · {explain.GLOSSARY['cosine']}")
    # Streamlit drops a widget's value when another page runs: coming back, the boxes start from what this page
    # last showed (a link or another page that set them first wins)
    for widget, kept in KEPT_ACROSS_PAGES.items():
        if widget not in st.session_state and kept in st.session_state:
            st.session_state[widget] = st.session_state[kept]
    # a query handed over by another page (session state) that a text box cannot hold: say why, start empty
    handed = st.session_state.get("query")
    if isinstance(handed, str) and (why := describe_surrogate(handed, "the query")) is not None:
        st.session_state["query"] = ""
        st.error(f"Cannot search: {why}.")

    # no form: a new k applies at once, and Enter in the query box searches
    st.session_state.setdefault("k", DEFAULT_K)
    left, middle, right = st.columns([6, 1, 1], vertical_alignment="bottom")
    query = left.text_input("Query", key="query", placeholder="e.g. why does my bread come out flat and dense")
    asked = middle.number_input("Documents per list", step=1, key="k", help=f"1 to {MAX_K}; applies at once.")
    right.button("Search", type="primary", use_container_width=True)
    k = clamp(asked, 1, MAX_K)
    st.session_state.update({KEPT_ACROSS_PAGES["query"]: query, KEPT_ACROSS_PAGES["k"]: asked})
    if k != asked:
        st.warning(f"Showing {k} document{'' if k == 1 else 's'} per list: k is between 1 and {MAX_K}.")

    if len(searcher.representations) > 1:
        left, right = st.columns([3, 1])
        with left:
            shown = ui.pick_representations(searcher.representations)
        with right:
            baseline = ui.pick_baseline(shown) if len(shown) > 1 else None
    else:
        shown, baseline = list(searcher.representations), None

    query = query or ""
    searchable = not is_blank(query) and query_problem(query) is None
    judged = ui.judgements_for(searcher, query) if searchable else None
    threshold = None
    if judged:
        st.session_state.setdefault("threshold", st.session_state.get("relevant_from", 1))
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        asked_threshold = right.number_input("Relevant from grade", step=1, key="threshold",
                                             help=f"{explain.GLOSSARY['threshold']} {explain.GLOSSARY['grades']}")
        threshold = max(1, int(asked_threshold))
        st.session_state["relevant_from"] = threshold
        left.caption(f"Judged query {ui.escape_markdown(judged[0])}: each hit shows its grade; grade ≥ {threshold} "
                     "counts as relevant; unjudged hits are marked as such.")
        if threshold != asked_threshold:
            st.warning("Relevance starts at grade 1: grade 0 means judged not relevant.")
    ui.write_url({"q": query, "k": k, "reps": shown if len(searcher.representations) > 1 else None,
                  "baseline": baseline, "rel": threshold})

    if is_blank(query):
        st.info(f"Type a query to see the {' and '.join(f'`{r}`' for r in shown)} ranking{'s' if len(shown) > 1 else ''}"
                + (" side by side." if len(shown) > 1 else "."))
        st.stop()
    if (problem := query_problem(query)) is not None:
        st.error(f"Cannot search: {problem}.")
        st.stop()
    if (cut := query_cut(searcher.encoder, query)) is not None:
        st.warning(f"Only the start of the query was searched: {cut}. {explain.GLOSSARY['query_cut']}")

    result = searcher.search(query, k=SEARCH_DEPTH)  # deep: ranks in the other lists, nDCG@10, missed documents
    deep = {r: [h.doc_id for h in result.results[r]] for r in shown}
    agreement = against_baseline(deep, baseline, k=AGREEMENT_DEPTH) if baseline else {}
    index = searcher.index
    places = index.chunk_places({h.chunk_id for r in shown for h in result.results[r][:k]})
    if k > index.n_documents:
        st.caption(f"The index holds {index.n_documents} documents: each list shows all of them.")
    if len(shown) == 1:
        held = "This index holds" if len(searcher.representations) == 1 else "You picked"
        st.caption(f"{held} one representation (`{shown[0]}`): there is no other ranking to compare it with.")
    elif baseline:
        st.caption(f"Agreement is measured on the first {AGREEMENT_DEPTH} of each list, whatever k. {explain.GLOSSARY['arrows']}")

    for column, r in zip(st.columns(len(shown)), shown):
        against = agreement.get(r)
        with column:
            st.subheader(f"`{r}`", help=explain.representation(r))
            if against is not None:
                left, right = st.columns(2)
                # short labels: four columns leave each metric about 100 pixels
                left.metric(f"Overlap@{AGREEMENT_DEPTH}", f"{against.overlap} of {against.k}",
                            help=f"{explain.GLOSSARY['overlap']} Here: `{r}` against the baseline `{baseline}`.")
                right.metric(f"RBO@{AGREEMENT_DEPTH}", f"{against.rbo:.2f}",
                             help=f"{explain.GLOSSARY['rbo']} Here: `{r}` against the baseline `{baseline}`, "
                                  f"on the first {AGREEMENT_DEPTH} of each.")
            elif r == baseline:
                st.caption("Baseline: the other columns' arrows and agreement are relative to this ranking.")
            if judged:
                qid, grades = judged
                run = {qid: {h.doc_id: h.score for h in result.results[r]}}
                st.metric(f"nDCG@10 {r}", f"{per_query_metrics(run, {qid: grades})[qid]['ndcg@10']:.3f}",
                          help=explain.GLOSSARY["ndcg"])

    rows = [[result.results[r][i] if i < len(result.results[r]) else None for r in shown] for i in range(k)]
    rows = [row for row in rows if any(row)]
    # one picker for every hit shown (a button per hit would double the elements the browser draws per query)
    choices = [(r, hit.rank, hit.doc_id, hit.title) for r in shown for hit in result.results[r][:k]]
    opened = st.selectbox("Read a whole document", [NO_DOCUMENT, *choices], key="document", format_func=document_choice,
                          help="Any hit shown here: its document's whole text, the matched chunk framed.")
    if opened != NO_DOCUMENT:
        r, rank, doc_id, _ = opened
        hit = result.results[r][rank - 1]
        show_document(index, hit, places.get(hit.chunk_id) or index.chunk_places([hit.chunk_id]).get(hit.chunk_id))
    st.caption(explain.GLOSSARY["chunk"])
    for row in rows:
        for column, r, hit in zip(st.columns(len(shown)), shown, row):
            if hit is None:
                continue
            against, place = agreement.get(r), places.get(hit.chunk_id)
            if judged:
                grade = judged[1].get(hit.doc_id)
                colour = "gray" if grade is None else ("green" if grade >= threshold else "orange")
                icon = ":material/check: " if grade is not None and grade >= threshold else ""
                badge = f" :{colour}-badge[{icon}{'unjudged' if grade is None else explain.grade(grade)}]"
            else:
                badge = ""
            meta = (f"`{r}` · {ui.escape_markdown(hit.doc_id)} · score {hit.score:.3f}"
                    + (f" · in {baseline}: {against.movement(hit.doc_id, hit.rank, shown=k)}" if against is not None else "")
                    + (f" · chunk {place.position + 1} of {place.n_chunks}" if place is not None else "")
                    + (f" · page {hit.page}" if hit.page is not None else ""))
            column.markdown(hit_markdown(hit, meta, badge, query))

    if judged:
        qid, grades = judged
        everywhere = {h.doc_id: h.title for r in shown for h in result.results[r]}
        for column, r in zip(st.columns(len(shown)), shown):
            missed = missed_relevant(deep[r], grades, k, threshold)
            listed = missed[:MISSED_LISTED]
            titles = index.titles([m.doc_id for m in listed if m.doc_id not in everywhere])
            lines = []
            for m in listed:
                where = f"rank {m.rank}" if m.rank is not None else f"not in top {len(deep[r])}"
                title = everywhere.get(m.doc_id) or titles.get(m.doc_id) or ""
                lines.append(f"{ui.escape_markdown(m.doc_id)} · {ui.escape_markdown(title) or '(no title)'} · "
                             f"{explain.grade(m.grade)} · {where}")
            if rest := missed[MISSED_LISTED:]:
                ranked = sum(m.rank is not None for m in rest)
                lines.append(f"and {len(rest)} more: {ranked} ranked within the first {len(deep[r])}, "
                             f"{len(rest) - ranked} not")
            with column:
                st.markdown(f"**Relevant, not in `{r}`'s top {k}: {len(missed)}**", help=explain.GLOSSARY["missed"])
                if lines:  # one element for the whole list: a labelled set may judge hundreds of documents relevant
                    st.caption("  \n".join(lines))


st.title("Search")
searcher = ui.searcher_or_stop()
for problem in restore(searcher):
    st.warning(ui.escape_markdown(f"{problem[0].upper()}{problem[1:]}."))  # a link's values are shown literally
search_view(searcher)
