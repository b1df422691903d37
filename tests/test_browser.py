"""End to end in a real browser: `streamlit run` on a free localhost port, driven by Debian's Chromium."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import running_app
from indexer.store import read_manifest

CHROMIUM = Path("/usr/bin/chromium")
# Flags for a sandboxed, offline machine: no background network calls, no GPU, no setuid sandbox as root.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
QUERY = "why does my homemade bread come out flat and heavy"
#: The small grey line of each hit on the page (a hit is one Markdown block: title, this line, the matched text).
HIT_LINES = ("[...document.querySelectorAll('[data-testid=stMarkdownContainer]')]"
             ".map(e => e.innerText.split('\\n')[1] || '').filter(t => t.includes(' · score '))")

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium); .ci/run installs it"),
]


@pytest.fixture(scope="module")
def server(sample_index, tmp_path_factory):
    with running_app(sample_index[0], tmp_path_factory.mktemp("streamlit") / "server.log") as (url, _):
        yield url


def searched_page(browser, server: str):
    """A page of the app that has searched QUERY and shown its first agreement figure."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(server, wait_until="domcontentloaded")
    box = page.get_by_label("Query")
    box.wait_for(timeout=90_000)
    box.fill(QUERY)
    page.get_by_role("button", name="Search").click()
    page.get_by_text("Overlap@10").first.wait_for(timeout=90_000)
    return page


def test_search_in_a_real_browser_shows_both_rankings(server, sample_index, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = searched_page(browser, server)
            for name in ("pooled", "mean"):
                page.locator("h3", has_text=name).wait_for(timeout=60_000)
            # the index keeps three representations; the first two are shown, the first one is the baseline
            assert len(read_manifest(sample_index[0]).representations) == 3
            # the page renders column by column: wait until both columns have their ten hits
            page.wait_for_function(
                f"n => {HIT_LINES}.length >= 10 * n",
                arg=2,
                timeout=60_000,
            )
            columns = [h.strip() for h in page.locator("h3").all_inner_texts() if h.strip() in ("pooled", "mean", "cls")]
            assert columns == ["pooled", "mean"]
            lines = page.evaluate(f"() => {HIT_LINES}")
            in_pooled = re.compile(r"mean · .+ · score \d\.\d{3} · in pooled: (↑\d+|↓\d+|=|rank \d+|not in top \d+) · chunk \d+ of \d+")
            assert sum(bool(in_pooled.fullmatch(t)) for t in lines) == 10  # every `mean` hit says where the baseline puts it
            assert page.get_by_text("Baseline: the other columns").count() == 1
            marked = page.locator("[data-testid=stMarkdownContainer]", has_text=re.compile(r"^\d+\. .*relevant\n"))
            assert marked.count() >= 2  # q08's judged documents carry the "relevant" badge
            assert page.get_by_text("nDCG@10 pooled").count() == 1 and page.get_by_text("nDCG@10 mean").count() == 1
            screenshot = tmp_path / "search.png"
            page.screenshot(path=str(screenshot), full_page=False)
            assert screenshot.stat().st_size > 10_000
            if os.environ.get("POOLING_LAB_SCREENSHOT"):
                shutil.copy(screenshot, os.environ["POOLING_LAB_SCREENSHOT"])
        finally:
            browser.close()


def test_picking_a_column_and_a_baseline_in_a_real_browser(server):
    """The pickers drive the page: a third column appears, and its arrows follow the chosen baseline."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = searched_page(browser, server)
            picker = page.locator("[data-testid=stMultiSelect] input")
            picker.click()
            picker.fill("cls")
            picker.press("Enter")
            page.keyboard.press("Escape")
            page.locator("h3", has_text="cls").wait_for(timeout=60_000)
            page.locator("[data-testid=stSelectbox]").filter(has_text="Baseline").click()
            page.get_by_role("option", name="cls").click()
            # the page re-renders in place: wait until no caption of the previous baseline is left
            page.wait_for_function(
                f"""() => {{
                    const lines = {HIT_LINES};
                    return lines.filter(t => / · in cls: /.test(t)).length >= 20 && !lines.some(t => / · in (pooled|mean): /.test(t));
                }}""",
                timeout=60_000,
            )
            in_cls = re.compile(r"(pooled|mean) · .+ · score \d\.\d{3} · in cls: (↑\d+|↓\d+|=|rank \d+|not in top \d+) · chunk \d+ of \d+")
            lines = page.evaluate(f"() => {HIT_LINES}")
            assert sum(bool(in_cls.fullmatch(t)) for t in lines) == 20  # pooled and mean, ten hits each, against cls
            columns = [h.strip() for h in page.locator("h3").all_inner_texts() if h.strip() in ("pooled", "mean", "cls")]
            assert columns == ["pooled", "mean", "cls"]
        finally:
            browser.close()


def test_a_permalink_on_a_narrow_screen_shows_pairs_of_hits(server):
    """`/?q=…` searches without typing; at 420 px the columns stack rank by rank: pooled 1, mean 1, pooled 2, …"""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from urllib.parse import quote

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 420, "height": 900})
            page.goto(f"{server}/?q={quote(QUERY)}&k=3", wait_until="domcontentloaded")
            page.wait_for_function(
                f"() => {HIT_LINES}.length >= 6",
                timeout=90_000,
            )
            # the text box's code loads lazily: it can appear after the hits, empty at first, then take the value
            # the server sent; wait for that value (a lost query would leave it '' and fail here)
            playwright.expect(page.get_by_label("Query")).to_have_value(QUERY, timeout=30_000)
            # one snapshot of the page: each hit's column (its small line's first word) and where it is drawn
            hits = page.evaluate("""() => [...document.querySelectorAll('[data-testid=stMarkdownContainer]')]
                .map(e => [e.innerText.split('\\n')[1] || '', e.getBoundingClientRect().top])
                .filter(([line]) => line.includes(' · score '))""")
            names = [line.split(" · ")[0].strip() for line, _ in hits]
            tops = [top for _, top in hits]
            assert names == ["pooled", "mean"] * 3
            assert all(a < b for a, b in zip(tops, tops[1:]))  # stacked in that order: pairs, not one column after the other
        finally:
            browser.close()


def test_addresses_in_documents_are_never_links(tiny_bert, tmp_path):
    """Bare URLs, www. names and e-mail addresses in a document are shown as text: the page holds no link to them;
    icon names, `:streamlit:` and arrows made of punctuation stay text too."""
    from indexer.encoder import Encoder
    from indexer.pipeline import build_index

    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    text = ("the bees at http://evil.example/honey and https://evil.example/hive?x=1 or www.evil.example "
            "and mail queen@evil.example about the hive")
    title = ":material_warning: :streamlit: a -- b -> c <- d >= e"
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"_id": f"d{i}", "title": title, "text": text}) + "\n" for i in range(3)), encoding="utf-8")
    build_index(source, tmp_path / "ix", Encoder.load(str(tiny_bert)), progress=False)
    with running_app(tmp_path / "ix", tmp_path / "server.log") as (url, _), playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            box = page.get_by_label("Query")
            box.wait_for(timeout=90_000)
            box.fill("bees hive")
            page.get_by_role("button", name="Search").click()
            page.wait_for_function(
                "() => document.body.innerText.split('evil.example').length > 12", timeout=90_000)  # the text is shown
            links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
            assert not [h for h in links if "evil" in h], links
            # nor icons, images or typographic symbols: the text reads as written
            hits = page.locator("[data-testid=stMarkdownContainer]", has_text="evil.example")
            assert hits.count() >= 3
            assert hits.locator("img, [data-testid=stIconMaterial]").count() == 0
            shown = " ".join(hits.all_inner_texts()).replace("\u2060", "")
            assert ":material_warning: :streamlit: a -- b -> c <- d >= e" in shown
            assert not set("—→←≥") & set(shown)
        finally:
            browser.close()
