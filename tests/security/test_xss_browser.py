"""Script in artist names and tags, rendered by the pages in real Chromium: nothing executes.

A demo-mode ``tastemaker serve`` whose bundle names every artist
``<script>...</script><img src=x onerror=...>`` and tags it ``<img src=x onerror=...>``; the
listener view and the new-listener mode show them as text. The listener's click goes out with
the token the listener API handed the page."""

from __future__ import annotations

import pytest
from attack_world import XSS_NAME, XSS_TAG, make_workspace, start_server, stop_server


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    srv = start_server(make_workspace(tmp_path_factory.mktemp("xss")), demo=True)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def browser(chromium: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"],
        )
        yield b
        b.close()


def test_script_in_names_and_tags_never_runs(demo_server, browser) -> None:
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    before = demo_server.settled_lines()

    page.goto(f"{demo_server.base}/")
    page.fill("#account", "alice")
    page.click("#find button")
    page.wait_for_selector("ol.recs li")
    first = page.locator("ol.recs li a.name").first.inner_text()
    assert XSS_NAME in first, "the name is shown as text, verbatim"
    assert XSS_TAG in page.locator("ol.recs li .chips").first.inner_text()
    assert page.locator("ol.recs img").count() == 0 and page.locator("ol.recs script").count() == 0
    page.locator("ol.recs li a.name").first.click()
    page.wait_for_selector("li.clicked")
    assert "click recorded" in page.locator("li.clicked .done").inner_text()

    page.goto(f"{demo_server.base}/new")
    page.fill("#q", "script")
    page.click("#search button")
    page.wait_for_selector("#hits button")
    page.click("#hits button >> nth=0")
    page.wait_for_selector("ol.recs li")
    assert page.locator("main img, main script:not([src])").count() == 0

    assert page.evaluate("window.__pwned") is None, "injected script ran"
    assert not dialogs
    new = demo_server.settled_lines()[len(before) :]
    assert len(new) == 1 and b'"event_type":"click"' in new[0], "the click, no page impressions"
