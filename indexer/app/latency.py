"""How fast the app feels, measured in a real browser (Playwright with Debian's Chromium):

    python -m indexer.app.latency --index DIR [--queries 15] [--json]

Starts the app as `make run` does on DIR, then times, from the browser's side:
- first page load: a new visitor opening the Search page until it is drawn and idle (the first visitor after
  the server starts also opens the index and loads the model: reported apart);
- query to rendered results: pressing Enter in the query box until every column's hits for that query are on
  the page and Streamlit's script run has finished (median and 90th percentile over the labelled queries);
- evaluation: "Run evaluation" on the index's first labelled set, once in a fresh session and again in another
  fresh session (the second reuses the runs cached for this index generation).

A measurement, not a test: it prints figures and asserts nothing. Needs playwright (requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from indexer.app.serve import serving

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
#: Streamlit marks its root with the script's state; a finished run leaves no element marked stale.
IDLE_NOW = ("document.querySelector('[data-testid=stApp]')?.dataset.testScriptState === 'notRunning' "
            "&& !document.querySelector('[data-stale=true]')")
IDLE = f"() => {IDLE_NOW}"


def labelled_queries(index_dir: Path, n: int) -> list[str]:
    """The texts of the first `n` judged queries of the index's first labelled set."""
    from indexer.evaluation import labelled_sets, load_labels
    from indexer.store import IndexReader, read_manifest

    sets = labelled_sets(read_manifest(index_dir))
    if not sets:
        raise SystemExit(f"{index_dir}: the index has no labelled queries to search with (build it from a BEIR dataset)")
    reader = IndexReader(index_dir)
    try:
        queries, qrels, _ = load_labels(sets[0].queries, sets[0].qrels, reader.doc_ids())
    finally:
        reader.close()
    return [queries[q] for q in sorted(qrels) if q in queries][:n]


def wait_idle(page, timeout_ms: int = 120_000) -> None:
    page.wait_for_function(IDLE, timeout=timeout_ms, polling="raf")


def first_load(browser, url: str) -> float:
    """Seconds from navigation to the Search page drawn, with its query box, and idle."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    start = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.get_by_label("Query").wait_for(timeout=180_000)
    wait_idle(page, 180_000)
    seconds = time.perf_counter() - start
    page.close()
    return seconds


def query_seconds(page, query: str) -> float:
    """Seconds from Enter in the query box until this query's results are drawn (its permalink is written at
    the end of the run) and the run is over."""
    box = page.get_by_label("Query")
    box.fill(query)
    start = time.perf_counter()
    box.press("Enter")
    page.wait_for_function(
        f"q => new URLSearchParams(location.search).get('q') === q && {IDLE_NOW}", arg=query, timeout=120_000, polling="raf"
    )
    return time.perf_counter() - start


def evaluation_seconds(browser, url: str) -> float:
    """Seconds from pressing "Run evaluation" in a fresh session until the metrics table is drawn."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/evaluate", wait_until="domcontentloaded")
    button = page.get_by_role("button", name="Run evaluation")
    button.wait_for(timeout=180_000)
    wait_idle(page)
    start = time.perf_counter()
    button.click()
    page.get_by_text("queries evaluated").first.wait_for(timeout=600_000)
    wait_idle(page, 600_000)
    seconds = time.perf_counter() - start
    page.close()
    return seconds


def measure(index_dir: Path, n_queries: int) -> dict:
    from playwright.sync_api import sync_playwright

    queries = labelled_queries(index_dir, n_queries)
    with tempfile.TemporaryDirectory(prefix="pooling-lab-latency-") as tmp, \
            serving(index_dir, Path(tmp) / "server.log") as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            cold = first_load(browser, url)
            warm = [first_load(browser, url) for _ in range(3)]
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_label("Query").wait_for(timeout=180_000)
            wait_idle(page)
            first_query = query_seconds(page, queries[0])
            times = [query_seconds(page, q) for q in queries[1:] + queries[:1]]
            page.close()
            evaluations = [evaluation_seconds(browser, url) for _ in range(2)]
        finally:
            browser.close()
    return {
        "index": str(index_dir), "queries": len(times),
        "first_load_s": {"first_visitor_after_start": round(cold, 3), "later_visitors_median": round(statistics.median(warm), 3)},
        "query_to_results_ms": {"first_query": round(first_query * 1000), "p50": round(statistics.median(times) * 1000),
                                "p90": round(statistics.quantiles(times, n=10)[-1] * 1000), "max": round(max(times) * 1000)},
        "evaluation_s": {"first": round(evaluations[0], 2), "second": round(evaluations[1], 2)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m indexer.app.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="an index built from a BEIR dataset (labelled queries)")
    parser.add_argument("--queries", type=int, default=15, help="labelled queries to time (default 15)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    figures = measure(args.index, max(args.queries, 2))
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        load, query, evaluation = figures["first_load_s"], figures["query_to_results_ms"], figures["evaluation_s"]
        print(f"first page load: {load['later_visitors_median']:.2f} s (first visitor after start: {load['first_visitor_after_start']:.2f} s)")
        print(f"query to rendered results over {figures['queries']} queries: p50 {query['p50']} ms, p90 {query['p90']} ms, "
              f"max {query['max']} ms (first query {query['first_query']} ms)")
        print(f"evaluation of the first labelled set: {evaluation['first']:.2f} s, again in a new session {evaluation['second']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
