"""The app as a team leaves it running, in a real browser: reachable from this machine only, and it asks no
other host for anything (fonts, icons, scripts)."""

import socket
from urllib.parse import urlparse

import pytest

from conftest import running_app
from test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium); .ci/run installs it"),
]
PAGES = {"": "Search", "evaluate": "Evaluate", "explore": "Explore", "index": "Indexes"}


def outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent: UDP connect only picks the interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith(("127.", "0.")) else address


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def default_server(sample_index, tmp_path_factory):
    """The app as `make run` starts it: the listening address is left to the project's configuration."""
    with running_app(sample_index[0], tmp_path_factory.mktemp("team") / "server.log", address=None) as (url, port):
        yield url, port


def test_the_default_bind_answers_on_loopback_and_refuses_the_network(browser, default_server):
    url, port = default_server
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    page = browser.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("heading", name="Search").wait_for(timeout=90_000)
    from playwright.sync_api import Error

    with pytest.raises(Error, match="ERR_CONNECTION_REFUSED"):
        page.goto(f"http://{address}:{port}/", wait_until="domcontentloaded", timeout=30_000)
    page.close()


def test_every_page_loads_everything_from_the_app_itself(browser, default_server):
    """No font, icon or script from another host (a `:material/…:` page icon once made the favicon a Google URL)."""
    url, _ = default_server
    origin = urlparse(url).netloc
    elsewhere = []
    page = browser.new_page()
    page.on("request", lambda r: elsewhere.append(r.url) if urlparse(r.url).scheme in ("http", "https", "ws", "wss")
            and urlparse(r.url).netloc != origin else None)
    for path, title in PAGES.items():
        page.goto(f"{url}/{path}", wait_until="domcontentloaded")
        page.get_by_role("heading", name=title).first.wait_for(timeout=90_000)
        page.wait_for_load_state("networkidle")
        icon = page.evaluate("document.querySelector(\"link[rel='shortcut icon']\")?.href || ''")
        assert urlparse(icon).scheme in ("data", "") or urlparse(icon).netloc == origin, icon
    page.close()
    assert elsewhere == []
