"""
Tests for streamproxy.urls: the display form of stream URLs, the exact
replacement of the URLs the daemon holds, the masking heuristics for the
others (a table of real-world URL forms), and the scheme rules.
"""

import os
import time

from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from streamproxy.config import parse_config
from streamproxy.ffmpeg import ffmpeg_command
from streamproxy.urls import (
    KNOWN_URLS,
    KnownUrls,
    display_url,
    mask_text,
    mask_urls,
    protocol_whitelist,
    protocol_whitelist_options,
    scheme_problem,
    url_scheme,
)

# Every URL form seen in providers' playlists, ffmpeg's output and error
# texts: (text, the secrets it must hide, what must stay visible).
MASKING_TABLE = [
    # Xtream Codes and clones: the account after a prefix, anywhere.
    ("http://provider.example:8080/live/alice7/Hunter2x/1001.ts",
     ("alice7", "Hunter2x"), ("http://provider.example:8080", "1001.ts")),
    ("http://provider.example:8080/live/alice7/Hunter2x/1001.m3u8",
     ("alice7", "Hunter2x"), ("provider.example:8080", "1001.m3u8")),
    ("http://provider.example/live/alice7/Hunter2x/1001",
     ("alice7", "Hunter2x"), ("provider.example", "1001")),
    ("http://provider.example/live/alice7/Hunter2x",
     ("alice7", "Hunter2x"), ("http://provider.example/live/",)),
    ("http://provider.example/movie/alice7/Hunter2x/777.mkv",
     ("alice7", "Hunter2x"), ("777.mkv",)),
    ("http://provider.example/series/alice7/Hunter2x/888.mp4",
     ("alice7", "Hunter2x"), ("888.mp4",)),
    ("http://provider.example/timeshift/alice7/Hunter2x/120/2024-05-01:20-00/12345.ts",
     ("alice7", "Hunter2x"), ("12345.ts",)),
    ("HTTP://127.0.0.1/LIVE/alice7/Hunter2x/1.ts",
     ("alice7", "Hunter2x"), ("HTTP://127.0.0.1", "1.ts")),
    ("http://cdn.example/hls/alice7/Hunter2x/index.m3u8",
     ("alice7", "Hunter2x"), ("cdn.example", "index.m3u8")),
    ("http://cdn.example/iptv/alice7/Hunter2x/1.ts",
     ("alice7", "Hunter2x"), ("cdn.example", "1.ts")),
    ("http://cdn.example/x/live/alice7/Hunter2x/1.ts",
     ("alice7", "Hunter2x"), ("cdn.example", "1.ts")),
    ("http://cdn.example/panel/v2/alice7/Hunter2x/12345.ts",
     ("alice7", "Hunter2x"), ("cdn.example", "12345.ts")),
    # /USER/PASS/ID with and without a trailing slash.
    ("http://provider.example:8080/alice7/Hunter2x/12345",
     ("alice7", "Hunter2x"), ("provider.example:8080", "12345")),
    ("http://provider.example:8080/alice7/Hunter2x/12345/",
     ("alice7", "Hunter2x"), ("provider.example:8080", "12345")),
    ("https://provider.example/alice7/Hunter2x/news.ts",
     ("alice7", "Hunter2x"), ("https://provider.example", "news.ts")),
    # Userinfo, with the characters badly escaped passwords hold.
    ("http://alice7:Hunter2x@provider.example:8080/stream.ts",
     ("alice7", "Hunter2x"), ("provider.example:8080", "stream.ts")),
    ("Opening 'http://alice7:Hun'ter2x@provider.example/x.ts' for reading",
     ("alice7", "Hun'ter2x", "ter2x"), ("provider.example", "x.ts", "for reading")),
    ("http://alice7:Hunt@r2x@provider.example/x.ts",
     ("alice7", "Hunt@r2x", "r2x"), ("provider.example", "x.ts")),
    ("http://alice7:Hun?ter#2x@provider.example/x.ts",
     ("alice7", "Hun?ter", "ter#2x"), ("provider.example", "x.ts")),
    ("rtsp://alice7@camera.example:554/ch1",
     ("alice7",), ("camera.example:554", "ch1")),
    # Query names, long and short.
    ("http://provider.example/get.php?username=alice7&password=Hunter2x&type=m3u_plus",
     ("alice7", "Hunter2x"), ("get.php", "type=m3u_plus")),
    ("http://provider.example/player_api.php?user=alice7&pass=Hunter2x&action=get_live_streams",
     ("alice7", "Hunter2x"), ("player_api.php", "action=get_live_streams")),
    ("http://provider.example/play.m3u8?u=alice7&p=Hunter2x",
     ("alice7", "Hunter2x"), ("play.m3u8", "u=", "p=")),
    ("http://provider.example/a.ts?pw=Hunter2x&channel=5",
     ("Hunter2x",), ("a.ts", "channel=5")),
    ("https://cdn.example/ch/index.m3u8?token=abc123def&channel=5",
     ("abc123def",), ("index.m3u8", "channel=5")),
    ("https://cdn.example/x.m3u8?key=K1ey&auth=A1uth&sig=S1ig&signature=T1sig&Expires=99",
     ("K1ey", "A1uth", "S1ig", "T1sig"), ("Expires=99",)),
    ("https://cdn.example/x.m3u8?Password=P1w&AUTH_TOKEN=T1k&access_token=A1t&apikey=K1k",
     ("P1w", "T1k", "A1t", "K1k"), ("x.m3u8",)),
    ("http://portal.example/c/portal.php?mac=00:1A:79:12:34:56&type=itv",
     ("00:1A:79:12:34:56",), ("portal.php", "type=itv")),
    ("https://d1.cloudfront.example/live.m3u8?Policy=eyJTdGF0ZW1lbnQ&Signature=Zm9vYmFy&Key-Pair-Id=APKAEIBAERJR",
     ("eyJTdGF0ZW1lbnQ", "Zm9vYmFy", "APKAEIBAERJR"), ("live.m3u8",)),
    ("https://akamai.example/master.m3u8?hdnts=exp=1700000000~acl=/*~hmac=0a1b2c3d4e5f",
     ("0a1b2c3d4e5f", "1700000000"), ("master.m3u8",)),
    ("https://wowza.example/live/ch/playlist.m3u8?wmsAuthSign=c2VydmVyX3RpbWU9MTcw",
     ("c2VydmVyX3RpbWU9MTcw",), ("playlist.m3u8",)),
    ("https://cdn.example/seg.ts?eyJhbGciOiJIUzI1NiJ9abc123XYZ",
     ("eyJhbGciOiJIUzI1NiJ9abc123XYZ",), ("seg.ts",)),
    ("http://cdn.example/watch?email=alice7@example.org",
     ("alice7@example.org",), ("cdn.example",)),
    # Tokens in the path, a session in a matrix parameter.
    ("http://cdn.example:8080/hls/live/5f2b9c0e1d7a4c3b9e8f7a6b5c4d3e2f/index.m3u8",
     ("5f2b9c0e1d7a4c3b9e8f7a6b5c4d3e2f",), ("cdn.example:8080", "index.m3u8")),
    ("http://cdn.example/stream;jsessionid=ABC123DEF456/index.m3u8",
     ("ABC123DEF456",), ("cdn.example", "index.m3u8")),
    # Other protocols: stream keys and passphrases.
    ("rtmp://live.example/app/sk-alice7-Hunter2x",
     ("sk-alice7-Hunter2x", "Hunter2x"), ("rtmp://live.example/app/",)),
    ("srt://relay.example:9000?passphrase=Hunter2xSecret&latency=200",
     ("Hunter2xSecret",), ("relay.example:9000", "latency=200")),
    # URLs inside URLs.
    ("http://proxy.example/fetch?url=http://alice7:Hunter2x@up.example/x.ts",
     ("alice7", "Hunter2x"), ("proxy.example", "fetch")),
    ("http://proxy.example/fetch?src=http%3A%2F%2Falice7%3AHunter2x%40up.example%2Fx",
     ("alice7", "Hunter2x"), ("proxy.example",)),
    ("concat:http://h.example/live/alice7/Hunter2x/1.ts|http://h.example/live/bob8/S3cretz/2.ts",
     ("alice7", "Hunter2x", "bob8", "S3cretz"), ("concat:", "1.ts", "2.ts")),
    # As JSON and as ffmpeg prints them.
    ("{\"url\": \"http:\\/\\/alice7:Hunter2x@h.example\\/live\\/alice7\\/Hunter2x\\/1.ts\"}",
     ("alice7", "Hunter2x"), ("h.example", "1.ts")),
    ("[https @ 0x55e8c34639c0] Opening 'https://cdn.example/hls/alice7/Hunter2x/seg_1.ts?e=1700000000&st=Zx9a' for reading",
     ("alice7", "Hunter2x", "Zx9a"), ("cdn.example", "seg_1.ts", "for reading")),
    ("http://provider.example:8080/alice7/Hunter2x/99: Connection refused",
     ("alice7", "Hunter2x"), ("provider.example:8080", "99: Connection refused")),
    ("failover (http://alice7:Hunter2x@provider.example/x.ts).",
     ("alice7", "Hunter2x"), ("provider.example/x.ts).",)),
]

# URLs the heuristics leave alone: nothing in them is an account.
HARMLESS = [
    "http://127.0.0.1:8765/f/in.ts",
    "http://127.0.0.1/index.m3u8",
    "http://127.0.0.1:8080",
    "http://127.0.0.1:8080/",
    "http://127.0.0.1/streams/some_readable_channel_name/hd/index.m3u8",
    "http://127.0.0.1/a/b/c/d/seg_1700000000123_abcdef.ts",
    "http://127.0.0.1/x.ts?auth&a=1",
    "[tcp @ 0x562e2103ef80] Connection to tcp://127.0.0.1:1 failed: Connection refused",
    "[hls @ 0x55fe456c8b80] Opening 'out/name_00000.ts' for writing",
    "no url here: user=alice",
    "",
]


class HeuristicMaskingTests(SynchronousTestCase):
    """
    mask_urls hides the account in every URL form of the table, keeping
    scheme, host, port and the resource name.
    """

    def test_table_is_large_enough(self):
        """
        The table covers at least 30 URL forms.
        """
        self.assertGreaterEqual(len(MASKING_TABLE), 30)

    def test_every_form(self):
        """
        For each form: no secret in the masked text, everything that should
        stay visible still there.
        """
        for text, secrets, visible in MASKING_TABLE:
            masked = mask_urls(text)
            for secret in secrets:
                self.assertNotIn(secret, masked, f"{text} -> {masked}")
            for part in visible:
                self.assertIn(part, masked, f"{text} -> {masked}")

    def test_idempotent(self):
        """
        Masking twice changes nothing more.
        """
        for text, _, _ in MASKING_TABLE:
            self.assertEqual(mask_urls(mask_urls(text)), mask_urls(text), text)

    def test_harmless_text_unchanged(self):
        """
        Credential-free URLs and plain text pass through unchanged.
        """
        for text in HARMLESS:
            self.assertEqual(mask_urls(text), text)

    def test_exact_forms(self):
        """
        What the masked forms look like: the masked parts become ``***``,
        the text around the URL is untouched.
        """
        for text, expected in [
            ("http://127.0.0.1:25461/live/alice/s3cret/12345.ts", "http://127.0.0.1:25461/live/***/***/12345.ts"),
            ("http://127.0.0.1/live/alice/s3cret", "http://127.0.0.1/live/***/***"),
            ("http://127.0.0.1:8080/alice/s3cret/12345/", "http://127.0.0.1:8080/***/***/12345/"),
            ("http://alice:s3cret@127.0.0.1:8080/stream.ts", "http://***:***@127.0.0.1:8080/stream.ts"),
            ("rtsp://admin@127.0.0.1:554/ch1", "rtsp://***@127.0.0.1:554/ch1"),
            ("http://127.0.0.1/x.ts?token=&debug", "http://127.0.0.1/x.ts?token=***&debug"),
            ("http://127.0.0.1/x.ts?a=1#token=frag", "http://127.0.0.1/x.ts?a=1#token=frag"),
            ("http://127.0.0.1/x.m3u8?token=abc: Server returned 403 Forbidden (access denied)",
             "http://127.0.0.1/x.m3u8?token=***: Server returned 403 Forbidden (access denied)"),
            ("failover from http://a:b@127.0.0.1/x.ts to http://127.0.0.1/c/d/e.ts.",
             "failover from http://***:***@127.0.0.1/x.ts to http://127.0.0.1/***/***/e.ts."),
        ]:
            self.assertEqual(mask_urls(text), expected, text)


class DisplayFormTests(SynchronousTestCase):
    """
    display_url builds what pages and the API show from the URL's parts.
    """

    def test_parts(self):
        """
        Scheme, host, port, the last path component and the query's names
        without values; the folders before the last component are elided.
        """
        self.assertEqual(
            display_url("http://provider.example:8080/live/alice/hunter2/1001.ts?username=alice&password=hunter2"),
            "http://provider.example:8080/.../1001.ts?username&password",
        )
        self.assertEqual(display_url("https://cdn.example/index.m3u8"), "https://cdn.example/index.m3u8")
        self.assertEqual(display_url("http://alice:hunter2@cdn.example:81/x.ts"), "http://cdn.example:81/x.ts")
        self.assertEqual(display_url("http://cdn.example"), "http://cdn.example")
        self.assertEqual(display_url("HTTP://cdn.example/a/b/"), "http://cdn.example/.../b")
        self.assertEqual(display_url("http://[::1]:8080/a.ts"), "http://[::1]:8080/a.ts")

    def test_secret_last_component(self):
        """
        A last component that is itself the secret is not shown: the
        password of a /live/USER/PASS URL without an id, an rtmp stream
        key, an opaque token without an extension.
        """
        self.assertEqual(display_url("http://p.example/live/alice/hunter2"), "http://p.example/.../***")
        self.assertEqual(display_url("rtmp://live.example/app/sk-abcd-efgh"), "rtmp://live.example/.../***")
        self.assertEqual(display_url("http://p.example/play/5f2b9c0e1d7a4c3b9e8f"), "http://p.example/.../***")

    def test_no_secret_in_any_form(self):
        """
        No secret of the table's URLs is ever part of their display form.
        """
        for text, secrets, _ in MASKING_TABLE:
            if not text.split(":", 1)[0].isalpha() or " " in text or text.startswith(("concat:", "{")):
                continue
            shown = display_url(text)
            for secret in secrets:
                self.assertNotIn(secret, shown, f"{text} -> {shown}")
            self.assertNotIn("@", shown.split("?", 1)[0], shown)

    def test_stable_under_heuristics(self):
        """
        A display form goes through the heuristics unchanged, so a log line
        that holds one is not mangled a second time.
        """
        for text, _, _ in MASKING_TABLE:
            if " " in text or text.startswith(("concat:", "{")):
                continue
            shown = display_url(text)
            self.assertEqual(mask_urls(shown), shown, text)


class KnownUrlTests(SynchronousTestCase):
    """
    KnownUrls replaces the stream URLs the daemon holds by their display
    form wherever they appear, before any heuristic.
    """

    def setUp(self):
        """
        A known-URL table of the test's own.
        """
        self.known = KnownUrls()

    def test_forms_the_heuristics_miss(self):
        """
        A URL whose account no pattern recognises is still hidden when the
        daemon knows it: exact match, not a guess.
        """
        url = "http://cdn.example/streams/alice-hunter2/ch5/index.m3u8"
        self.assertIn("hunter2", mask_urls(f"Opening '{url}' for reading"))
        self.known.remember([url])
        for text in (f"Opening '{url}' for reading", f"{url}: Server returned 403 Forbidden",
                     f"({url})", f"{url}", f"a {url}\nb {url}"):
            replaced = mask_text(text, self.known)
            self.assertNotIn("hunter2", replaced, text)
            self.assertIn("http://cdn.example/.../index.m3u8", replaced, text)

    def test_every_form_of_the_table(self):
        """
        Each URL of the table, once known, appears only as its display form
        in a log line.
        """
        urls = [text for text, _, _ in MASKING_TABLE if " " not in text and not text.startswith(("concat:", "{"))]
        self.known.remember(urls)
        for url in urls:
            line = f"ffmpeg: '{url}': Input/output error"
            self.assertEqual(self.known.replace(line), f"ffmpeg: '{display_url(url)}': Input/output error")

    def test_quote_in_password(self):
        """
        A password holding a quote is replaced whole, even inside ffmpeg's
        own quotes.
        """
        url = "http://alice:hun'ter2@provider.example/x.ts"
        self.known.remember([url])
        self.assertEqual(
            mask_text(f"Opening '{url}' for reading", self.known),
            "Opening 'http://provider.example/x.ts' for reading",
        )

    def test_longer_url_is_not_a_match(self):
        """
        A known URL that is only the start of a longer one is not replaced
        (the rest would be left bare); the heuristics take that one.
        """
        url = "http://p.example/live/alice/hunter2/1.ts"
        self.known.remember([url])
        self.assertEqual(self.known.replace(url + "?token=abcdef123"), url + "?token=abcdef123")
        masked = mask_text(url + "?token=abcdef123", self.known)
        self.assertNotIn("hunter2", masked)
        self.assertNotIn("abcdef123", masked)
        self.assertEqual(self.known.replace(url + "."), display_url(url) + ".")

    def test_previous_load_is_kept(self):
        """
        The URLs of the load before the current one are still replaced (a
        channel started then keeps playing them); older ones are not.
        """
        self.known.remember(["http://a.example/1/2/3.ts"])
        self.known.remember(["http://b.example/1/2/3.ts"])
        self.assertIn("http://a.example/1/2/3.ts", self.known)
        self.known.remember(["http://c.example/1/2/3.ts"])
        self.assertNotIn("http://a.example/1/2/3.ts", self.known)
        self.assertEqual(len(self.known), 2)

    def test_fast_on_a_large_table(self):
        """
        With 40,000 known URLs, replacing in a thousand log lines takes a
        small fraction of a second: each URL in a line costs a few lookups.
        """
        urls = [f"http://p{n % 7}.example:8080/live/user{n}/pw{n * 7}/{n}.ts" for n in range(40_000)]
        self.known.remember(urls)
        lines = [f"ffmpeg [warning] Opening '{urls[n * 37]}' for reading; retrying {urls[n]}" for n in range(1000)]
        started = time.perf_counter()
        out = [self.known.replace(line) for line in lines]
        elapsed = time.perf_counter() - started
        self.assertNotIn("user37/", out[1])
        self.assertLess(elapsed, 1.0)

    def test_process_wide_table(self):
        """
        mask_text uses the process-wide KNOWN_URLS, which the store fills.
        """
        url = "http://cdn.example/streams/alice-hunter2/ch5/index.m3u8"
        saved = (KNOWN_URLS._current, KNOWN_URLS._previous, KNOWN_URLS._lengths)
        self.addCleanup(setattr, KNOWN_URLS, "_current", saved[0])
        self.addCleanup(setattr, KNOWN_URLS, "_previous", saved[1])
        self.addCleanup(setattr, KNOWN_URLS, "_lengths", saved[2])
        KNOWN_URLS.remember([url])
        self.assertEqual(mask_text(f"got {url}"), "got http://cdn.example/.../index.m3u8")


class SchemeTests(SynchronousTestCase):
    """
    Only network URLs of allowed_url_schemes may be played.
    """

    def test_scheme_as_ffmpeg_reads_it(self):
        """
        The scheme is what comes before the first colon, lower-cased, as
        ffmpeg picks its protocol.
        """
        for url, scheme in [("http://x/y", "http"), ("HTTPS://x", "https"), ("file:///etc/passwd", "file"),
                            ("concat:a.ts|b.ts", "concat"), ("/tmp/x.ts", ""), ("", "")]:
            self.assertEqual(url_scheme(url), scheme, url)

    def test_problems(self):
        """
        http and https pass by default; local files, ffmpeg's own prefixes
        and other schemes are refused with a reason naming the key.
        """
        self.assertIsNone(scheme_problem("http://x/y.ts"))
        self.assertIsNone(scheme_problem("HTTPS://x/y.ts"))
        for url in ("file:///etc/passwd", "concat:http://x/a.ts|http://x/b.ts", "subfile:,start,0,end,0,:/etc/x",
                    "pipe:0", "rtmp://x/app/key"):
            problem = scheme_problem(url)
            self.assertIn("allowed_url_schemes", problem, url)
        self.assertIn("no scheme", scheme_problem("/local/file.ts"))
        self.assertIn("not a network URL", scheme_problem("http:x.ts"))
        self.assertIsNone(scheme_problem("rtmp://x/app/key", ("http", "https", "rtmp")))

    def test_whitelist(self):
        """
        The ffmpeg whitelist holds the allowed protocols and those under
        them, never file or another local one.
        """
        self.assertEqual(protocol_whitelist(), "crypto,http,httpproxy,https,tcp,tls")
        self.assertEqual(protocol_whitelist(("http",)), "crypto,http,tcp")
        wide = protocol_whitelist(("http", "rtsp", "udp", "rtmp")).split(",")
        for protocol in ("rtmp", "udp", "rtp", "tcp"):
            self.assertIn(protocol, wide)
        for local in ("file", "pipe", "fd", "concat", "subfile", "data", "cache"):
            self.assertNotIn(local, wide)
        self.assertEqual(protocol_whitelist_options(("http",)), ["-protocol_whitelist", "crypto,http,tcp"])


class FfmpegWhitelistTests(TestCase):
    """
    ffmpeg itself is kept to the allowed network protocols, so a local URL
    that slipped past the table's check still reads nothing.
    """

    timeout = 30

    def test_command(self):
        """
        The whitelist is an input option: it comes before ``-i``.
        """
        settings = parse_config({})
        argv = ffmpeg_command(settings, "http://127.0.0.1:1/x.ts")
        at = argv.index("-protocol_whitelist")
        self.assertEqual(argv[at + 1], "crypto,http,httpproxy,https,tcp,tls")
        self.assertLess(at, argv.index("-i"))

    @defer.inlineCallbacks
    def test_real_ffmpeg_refuses_local_files(self):
        """
        The real ffmpeg, given our command for a file:// or concat: URL of
        a readable file, refuses to open it.
        """
        settings = parse_config({})
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        secret = os.path.join(folder, "secret.ts")
        with open(secret, "wb") as f:
            f.write(b"\x47" + b"\x00" * 187)
        for url in (f"file://{secret}", f"concat:{secret}|{secret}", secret):
            argv = ffmpeg_command(settings, url)
            out, err, code = yield getProcessOutputAndValue(argv[0], argv[1:], env=dict(os.environ))
            self.assertNotEqual(code, 0, url)
            self.assertIn(b"not on whitelist", err, url)
        self.assertEqual(sorted(os.listdir(folder)), ["secret.ts"])
