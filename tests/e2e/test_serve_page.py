"""The chat page of `plumb serve` driven in headless Chromium (Debian's /usr/bin/chromium via
playwright; no browser is downloaded): a message is sent, the reply streams in, the stop
button ends a long reply, and the screenshot is kept in tests/e2e/artifacts/.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from serving import Server

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def page_server(plumb_bin, real_model):
    s = Server(plumb_bin, real_model, "--parallel", "2", "-c", "512")
    yield s
    assert s.stop() == 0, s.stderr


def test_chat_page_streams_a_reply(page_server):
    assert shutil.which(CHROMIUM), "Debian's chromium package is missing (scripts/setup.sh installs it)"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.set_default_timeout(60_000)
            external = []
            page.on("request", lambda r: None if r.url.startswith(page_server.url) else external.append(r.url))
            chunks = []
            page.on("response", lambda r: chunks.append(r.url) if "/v1/chat/completions" in r.url else None)
            page.goto(page_server.url + "/")
            expect(page.locator("#status")).to_have_text("ready")
            page.fill("#system", "You are terse.")
            page.fill("#temperature", "0")
            page.fill("#max_tokens", "24")
            page.fill("#input", "Say hello to the ocean.")
            page.click("#send")
            expect(page.locator(".msg.user")).to_have_text("Say hello to the ocean.")
            reply = page.locator(".msg.assistant").first
            expect(reply).to_have_attribute("data-state", "done")
            text = reply.inner_text()
            assert text.strip(), "the reply is empty"
            assert chunks, "the page did not call /v1/chat/completions"
            page.screenshot(path=str(ARTIFACTS / "chat_page.png"), full_page=True)

            # a long reply, stopped with the stop button while it streams
            page.fill("#max_tokens", "400")
            page.fill("#input", "Tell me a long story.")
            page.click("#send")
            second = page.locator(".msg.assistant").nth(1)
            expect(second).not_to_have_text("")
            expect(page.locator("#stop")).to_be_enabled()
            page.click("#stop")
            expect(second).to_have_attribute("data-state", "stopped")
            expect(page.locator("#send")).to_be_enabled()
            assert not external, f"the page loaded external resources: {external}"
        finally:
            browser.close()
    assert (ARTIFACTS / "chat_page.png").stat().st_size > 1000
