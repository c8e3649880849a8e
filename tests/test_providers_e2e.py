"""
Provider sync end to end: the whole daemon in-process, the fake provider of
L{tests.fake_provider} on 127.0.0.1 (M3U and Xtream API, faults, URL
rotation) whose stream URLs redirect to the live streams of
L{tests.upstream}, and real ffmpeg for the tunes.
"""

import json

from twisted.internet import defer

from .fake_provider import FakeChannel, FakeProvider
from .test_streaming_e2e import StreamingTestCase
from .upstream import wait_until

SECRETS = ("hunter2", "s3cretpw")


class ProviderE2ETests(StreamingTestCase):
    """
    Providers as sources of a running daemon.
    """

    timeout = 90

    def start_provider(self, channels, **options):
        """
        The fake provider on 127.0.0.1 serving ``channels``; its streams
        play the upstream stream named by each channel's slug.
        """
        provider = FakeProvider(channels, accounts={"alice": "hunter2", "bob": "s3cretpw"}, **options)
        provider.start()
        self.addCleanup(provider.stop)
        for channel in channels:
            self.add(channel.slug)
            provider.media[channel.stream_id] = self.live(channel.slug)
        return provider

    @defer.inlineCallbacks
    def providers_status(self):
        """
        The parsed /api/providers answer, with no credential in it.
        """
        response, body = yield self.fetch("/api/providers")
        self.assertEqual(response.code, 200, body)
        for secret in SECRETS:
            self.assertNotIn(secret, body.decode())
        return json.loads(body)

    @defer.inlineCallbacks
    def wait_synced(self, count=1):
        """
        Wait for the providers' ``count``-th finished sync round.
        """
        providers = self.parts["providers"]

        def done():
            entries = providers.status()["providers"]
            return all(e["last_sync"] is not None and not e["syncing"] for e in entries)

        yield wait_until(done, timeout=15)

    @defer.inlineCallbacks
    def no_secrets_anywhere(self):
        """
        None of the API answers, nor the log lines, hold a credential.
        """
        for path in ("/api/status", "/api/channels", "/api/providers", "/api/logs?after=0"):
            response, body = yield self.fetch(path)
            self.assertEqual(response.code, 200, path)
            for secret in SECRETS:
                leaks = [line for line in body.decode().split("{") if secret in line]
                self.assertEqual(leaks, [], path)

    @defer.inlineCallbacks
    def test_sync_tune_rotate_while_playing(self):
        """
        At start the M3U provider's channels become rows and play; when the
        provider rotates its URLs, POST /refresh_providers updates the same
        rows (same channels) while the playing stream goes on undisturbed.
        """
        provider = self.start_provider(
            [FakeChannel(101, "Alpha", "alpha.test", "News", 5), FakeChannel(102, "Beta", "beta.test")]
        )
        yield self.serve(
            [], providers=[{"name": "prov", "m3u_url": provider.m3u_url("alice"), "quality": "1"}]
        )
        yield self.wait_synced()
        status = yield self.providers_status()
        entry = status["providers"][0]
        self.assertEqual((entry["last_sync"]["result"], entry["last_sync"]["added"]), ("ok", 2))
        response, body = yield self.fetch("/api/channels")
        channels = {c["channel_id"]: c for c in json.loads(body)["channels"]}
        self.assertEqual(sorted(channels), ["5", "6"])
        self.assertEqual(
            channels["5"]["candidates"][0]["provider"],
            {"name": "prov", "account": "prov#1", "matched": "provider-number"},
        )
        yield self.tune("5")
        yield self.wait_live_on("5", "prov")
        attempt = self.channels.session("5").attempt
        provider.generation += 1
        response, body = yield self.fetch("/refresh_providers", method="POST")
        self.assertEqual(response.code, 200, body)
        last = json.loads(body)["providers"][0]["last_sync"]
        self.assertEqual((last["added"], last["updated"], last["removed"]), (0, 2, 0))
        store = self.parts["store"]
        self.assertEqual(sorted(store.catalog.channels), ["5", "6"])
        self.assertIn("hunter22/101.ts", store.catalog.channels["5"][0].url)
        self.assertIs(self.channels.session("5").attempt, attempt)
        self.assertTrue(self.live_on("5", "prov"))
        yield self.tune("5")
        yield self.no_secrets_anywhere()

    @defer.inlineCallbacks
    def test_down_provider_keeps_rows(self):
        """
        A provider that is down keeps its rows; the error and its time show
        in /api/providers; an HTML answer does the same.
        """
        provider = self.start_provider([FakeChannel(101, "Alpha", "alpha.test")])
        yield self.serve([], providers=[{"name": "prov", "m3u_url": provider.m3u_url("alice")}])
        yield self.wait_synced()
        yield provider.stop()
        response, body = yield self.fetch("/refresh_providers", method="POST")
        entry = json.loads(body)["providers"][0]
        self.assertEqual(entry["last_sync"]["result"], "error")
        self.assertIn("connection refused", entry["accounts"][0]["error"])
        self.assertIsNotNone(entry["accounts"][0]["last_attempt"])
        self.assertEqual(len(self.parts["store"].catalog.candidates), 1)
        provider.start(port=provider.port)
        provider.set_fault("html", "m3u")
        status = yield self.parts["providers"].sync("prov")
        self.assertIn("HTML page", status["accounts"][0]["error"])
        self.assertEqual(len(self.parts["store"].catalog.candidates), 1)
        yield self.no_secrets_anywhere()

    @defer.inlineCallbacks
    def test_pooled_xtream_accounts(self):
        """
        Two Xtream accounts of one provider, one connection each: their
        limits add up, and the second tune plays through the account that
        still has room.
        """
        provider = self.start_provider(
            [FakeChannel(101, "Alpha", "alpha.test"), FakeChannel(102, "Beta", "beta.test")],
            max_connections=1,
        )
        xtream = lambda user: {"url": provider.base(), "username": user, "password": provider.accounts[user]}
        yield self.serve(
            [], providers=[{"name": "pool", "xtream": xtream("alice")}, {"name": "pool", "xtream": xtream("bob")}]
        )
        yield self.wait_synced()
        status = yield self.providers_status()
        entry = status["providers"][0]
        self.assertEqual(entry["limit"], 2)
        self.assertEqual([a["xtream"]["status"] for a in entry["accounts"]], ["Active", "Active"])
        self.assertEqual(len(self.parts["store"].catalog.channels), 2)
        yield self.tune("1")
        yield self.wait_live_on("1", "pool")
        yield self.tune("2")
        yield self.wait_live_on("2", "pool")
        accounts = {self.channels.session(c).attempt.candidate.account for c in ("1", "2")}
        self.assertEqual(accounts, {"pool#1", "pool#2"})
        status = yield self.providers_status()
        entry = status["providers"][0]
        self.assertEqual(entry["in_use"], 2)
        self.assertEqual([(a["in_use"], a["limit"]) for a in entry["accounts"]], [(1, 1), (1, 1)])
        yield self.no_secrets_anywhere()
