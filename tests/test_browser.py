"""
The status and log pages in a real headless Chromium, against the whole
daemon (real ffmpeg, the fake provider of L{tests.upstream}).

Playwright's sync API must not run in the reactor's thread: each test runs
its browser session in one worker thread (``deferToThread``) while the
reactor serves the daemon, and the session calls back into the reactor
with ``blockingCallFromThread`` when it needs to (to log a line).

Screenshots of both pages, at desktop and phone sizes, are written to
``tests/_screenshots/`` for people to look at.
"""

import os
import time

from twisted.internet import defer, reactor, threads
from twisted.logger import Logger

from .test_streaming_e2e import StreamingTestCase
from .helpers import row
from .upstream import wait_until

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError as e:  # reported by each test, not skipped
    sync_playwright = None
    PLAYWRIGHT_ERROR = str(e)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_screenshots")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# Milliseconds a page may take to show what a step waits for.  The status
# page polls every 2 s and a switch takes a second or two.
SHOW_MS = 15000

log = Logger(namespace="tests.browser")


class BrowserTests(StreamingTestCase):
    """
    The pages as a person sees them, in Chromium.
    """

    timeout = 90

    def setUp(self):
        if sync_playwright is None:
            self.fail(
                f"the playwright package is missing ({PLAYWRIGHT_ERROR}); "
                "`make test` installs it (pip install .[test])"
            )
        if not os.access(CHROMIUM, os.X_OK):
            self.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (.ci/run does)")
        os.makedirs(SCREENSHOTS, exist_ok=True)
        super().setUp()

    def browse(self, scenario):
        """
        Run ``scenario(browser)`` with a fresh headless Chromium in a worker
        thread; a Deferred firing with its result.
        """

        def run():
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=30000
                )
                try:
                    return scenario(browser)
                finally:
                    browser.close()

        return threads.deferToThread(run)

    def watch(self, page):
        """
        A list that collects the page's script errors and console errors
        (a blocked resource or a Content-Security-Policy violation shows
        there); the tests expect it to stay empty.
        """
        problems = []
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.on(
            "console",
            lambda message: problems.append(f"console: {message.text}") if message.type == "error" else None,
        )
        return problems

    def shoot(self, page, name):
        """
        Save a full-page screenshot as ``tests/_screenshots/<name>.png``.
        """
        page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True)

    @defer.inlineCallbacks
    def test_status_page_and_force_switch(self):
        """
        The status page shows the running channel live on its preferred
        source, with the provider's password masked, its source's slot bar
        and the channel list; clicking "Force switch" makes the page show
        the other source without a reload; the preview player gets the
        channel's playlist.
        """
        self.add("a")
        self.add("b")
        secret_a = self.live("a").replace("http://", "http://alice:hunter2@")
        yield self.serve(
            [
                row(1, secret_a, source="prov_a", name="Browser One"),
                row(1, self.live("b"), source="prov_b", name="Browser One"),
                row(2, self.live("b"), source="prov_b", name="Second Channel", quality="2"),
            ],
            source_priority=["prov_a", "prov_b"],
            source_limits={"prov_a": 2, "prov_b": 3},
        )
        yield self.tune("1")
        base = self.url("")

        def scenario(browser):
            page = browser.new_page(viewport=DESKTOP)
            problems = self.watch(page)
            page.goto(f"{base}/status")
            card = page.locator('article.chan-card[data-channel="1"]')
            expect(card.locator('[data-f="stream"]')).to_contain_text("prov_a", timeout=SHOW_MS)
            expect(card.locator('[data-f="state"]')).to_have_text("live", timeout=SHOW_MS)
            expect(card.locator('[data-f="url"]')).to_contain_text("127.0.0.1")
            expect(page.locator('.source[data-source="prov_a"] .source-count')).to_have_text("1 / 2")
            expect(page.locator('#channels .chan[data-channel="2"]')).to_contain_text("Second Channel")
            expect(page.locator("#dvr")).to_contain_text("not configured")
            # Wait for a measured bitrate so the screenshot shows one.
            expect(card.locator('[data-f="ffmpeg"]')).to_contain_text("kbit/s", timeout=SHOW_MS)
            self.assertNotIn("hunter2", page.content())
            page.evaluate("window.notReloaded = true")

            card.locator("button.switch-btn").click()
            expect(page.locator("#notice")).to_contain_text("switching away from prov_a", timeout=SHOW_MS)
            expect(card.locator('[data-f="stream"]')).to_contain_text("prov_b", timeout=SHOW_MS)
            expect(card.locator('[data-f="failovers"]')).to_contain_text("switched by request", timeout=SHOW_MS)
            expect(card.locator('[data-f="state"]')).to_have_text("live", timeout=SHOW_MS)
            playing = page.locator('#channels .chan[data-channel="1"] .cand.playing')
            expect(playing).to_contain_text("prov_b", timeout=SHOW_MS)
            assert page.evaluate("window.notReloaded === true"), "the page reloaded"

            page.locator('#filter').fill("second")
            expect(page.locator("#channels .chan")).to_have_count(1)
            page.locator('#filter').fill("")
            expect(page.locator("#channels .chan")).to_have_count(2)
            self.shoot(page, "status-desktop")

            card.locator("button.preview-btn").click()
            expect(page.locator("#preview")).to_be_visible()
            playable = page.evaluate(
                "document.getElementById('player').canPlayType('application/vnd.apple.mpegurl')"
            )
            if playable:
                expect(page.locator("#player")).to_have_attribute("src", "/channel/1/stream.m3u8")
            else:
                expect(page.locator("#preview-note")).to_contain_text("/channel/1/stream.m3u8")
            page.locator("#preview-close").click()

            phone = browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
            problems.extend(self.watch(phone))
            phone.goto(f"{base}/status")
            expect(phone.locator('article.chan-card[data-channel="1"] [data-f="stream"]')).to_contain_text(
                "prov_b", timeout=SHOW_MS
            )
            width = phone.evaluate("document.documentElement.scrollWidth")
            self.shoot(phone, "status-phone")
            return width, problems

        started = time.monotonic()
        width, problems = yield self.browse(scenario)
        log.info("browser status test took {s:.1f} s", s=time.monotonic() - started)
        self.assertEqual(problems, [])
        self.assertLessEqual(width, PHONE["width"], "the status page scrolls sideways on a phone")
        self.assertTrue(self.live_on("1", "prov_b"))

    @defer.inlineCallbacks
    def test_logs_page_follows_new_lines(self):
        """
        The log page shows the daemon's recent lines, and a line logged
        after it loaded appears without a reload; the channel filter keeps
        only that channel's lines; credentials never show.
        """
        self.add("a")
        yield self.serve([row(3, self.live("a").replace("http://", "http://bob:sesame123@"), source="prov_a")])
        yield self.tune("3")
        base = self.url("")
        marker = f"browser-marker-{os.getpid()}"

        def log_marker():
            # The channel travels as a log field, as the daemon's own lines carry it.
            log.warn("channel {channel_id}: {marker} from {url}", channel_id="3", marker=marker,
                     url="http://u:topsecret@example.com/live/u/topsecret/3.ts")

        def scenario(browser):
            page = browser.new_page(viewport=DESKTOP)
            problems = self.watch(page)
            page.goto(f"{base}/logs")
            expect(page.locator(".line", has_text="live on prov_a")).to_have_count(1, timeout=SHOW_MS)
            page.evaluate("window.notReloaded = true")
            threads.blockingCallFromThread(reactor, log_marker)
            line = page.locator(".line", has_text=marker)
            expect(line).to_be_visible(timeout=SHOW_MS)
            expect(line).to_have_class("line lvl-warn")
            assert page.evaluate("window.notReloaded === true"), "the page reloaded"
            self.assertNotIn("topsecret", page.content())
            self.assertNotIn("sesame123", page.content())
            self.shoot(page, "logs-desktop")

            page.select_option("#channel", "3")
            expect(page.locator(".line", has_text=marker)).to_be_visible(timeout=SHOW_MS)
            texts = page.locator(".line .ch").all_inner_texts()
            assert texts and all(t == "ch 3" for t in texts), texts
            page.select_option("#level", "warn")
            expect(page.locator(".line.lvl-info")).to_have_count(0, timeout=SHOW_MS)

            phone = browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
            problems.extend(self.watch(phone))
            phone.goto(f"{base}/logs")
            expect(phone.locator(".line", has_text=marker)).to_be_visible(timeout=SHOW_MS)
            width = phone.evaluate("document.documentElement.scrollWidth")
            self.shoot(phone, "logs-phone")
            return width, problems

        started = time.monotonic()
        width, problems = yield self.browse(scenario)
        log.info("browser logs test took {s:.1f} s", s=time.monotonic() - started)
        self.assertEqual(problems, [])
        self.assertLessEqual(width, PHONE["width"], "the log page scrolls sideways on a phone")

    @defer.inlineCallbacks
    def test_providers_card(self):
        """
        The status page's providers card shows each provider's last sync
        with its counts, connections against its limit and, for Xtream, the
        account's status and expiry; a failing account shows its error;
        "Sync providers now" syncs and the card shows the rotated URLs'
        updates; no credential shows anywhere on the page.
        """
        from .fake_provider import FakeChannel, FakeProvider

        provider = FakeProvider(
            [FakeChannel(101, "Alpha", "alpha.test", "News"), FakeChannel(102, "Beta", "beta.test", "News")],
            accounts={"alice": "hunter2", "bob": "s3cretpw"},
        )
        provider.start()
        self.addCleanup(provider.stop)
        yield self.serve(
            [],
            providers=[
                {"name": "prov_m3u", "m3u_url": provider.m3u_url("alice")},
                {"name": "prov_x", "xtream": {"url": provider.base(), "username": "bob", "password": "wrong"}},
            ],
        )
        yield wait_until(
            lambda: all(p["last_sync"] for p in self.parts["providers"].status()["providers"]), timeout=15
        )
        base = self.url("")

        def scenario(browser):
            page = browser.new_page(viewport=DESKTOP)
            problems = self.watch(page)
            page.goto(f"{base}/status")
            card = page.locator('.provider[data-provider="prov_m3u"]')
            expect(card).to_contain_text("2 added", timeout=SHOW_MS)
            expect(card.locator(".badge")).to_have_text("ok")
            failing = page.locator('.provider[data-provider="prov_x"]')
            expect(failing.locator(".badge")).to_have_text("error")
            expect(failing).to_contain_text("auth 0")
            threads.blockingCallFromThread(reactor, lambda: setattr(provider, "generation", 2))
            page.locator("#refresh-providers").click()
            expect(page.locator("#notice")).to_contain_text("prov_m3u: ok (+0 ~2 -0)", timeout=SHOW_MS)
            expect(card).to_contain_text("2 updated", timeout=SHOW_MS)
            expect(page.locator('#channels .chan[data-channel="1"]')).to_contain_text("matched by", timeout=SHOW_MS)
            for secret in ("hunter2", "s3cretpw", "wrong"):
                self.assertNotIn(secret, page.content())
            self.shoot(page, "status-providers")
            return problems

        problems = yield self.browse(scenario)
        self.assertEqual(problems, [])
