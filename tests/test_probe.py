"""
Unit tests of the ffprobe validation on a fake process reactor.
"""

from twisted.trial.unittest import SynchronousTestCase

from streamproxy.config import parse_config
from streamproxy.probe import probe

from .fakes import FakeProcessReactor

GOOD = b'{"streams": [{"index": 0, "codec_type": "video", "codec_name": "h264", "width": 640, "height": 360}, {"index": 1, "codec_type": "audio", "codec_name": "aac"}]}'


class ProbeTests(SynchronousTestCase):
    """
    ffprobe's verdict on a candidate, and its timeout.
    """

    def setUp(self):
        self.reactor = FakeProcessReactor()
        self.settings = parse_config({"ffprobe_timeout": 4})

    def start(self, url="http://127.0.0.1:1/live/user/secret/7.ts"):
        d, child = probe(self.reactor, self.settings, url, "/tmp/segments")
        return d, self.reactor.processes[-1]

    def test_command(self):
        """
        The probe reads about a second of the stream, bounded by the timeout.
        """
        d, process = self.start()
        command = process.command
        self.assertEqual(command[command.index("-probesize") + 1], "1000000")
        self.assertEqual(command[command.index("-rw_timeout") + 1], "4000000")
        self.assertEqual(command[-1], "http://127.0.0.1:1/live/user/secret/7.ts")

    def test_protocol_whitelist(self):
        """
        ffprobe may open only the network protocols of allowed_url_schemes,
        never a local file.
        """
        d, process = self.start()
        command = process.command
        self.assertEqual(command[command.index("-protocol_whitelist") + 1], "crypto,http,httpproxy,https,tcp,tls")
        self.settings = parse_config({"allowed_url_schemes": ["http", "rtmp"]})
        d, process = self.start("rtmp://127.0.0.1/app/key")
        command = process.command
        self.assertEqual(command[command.index("-protocol_whitelist") + 1], "crypto,http,rtmp,tcp")

    def test_usable_stream(self):
        """
        A stream with decodable video passes, with its facts.
        """
        d, process = self.start()
        process.protocol.outReceived(GOOD)
        process.exit(0)
        result = self.successResultOf(d)
        self.assertTrue(result.ok)
        self.assertEqual(result.facts.video_codec, "h264")

    def test_audio_only_fails(self):
        """
        A stream without video fails with that reason.
        """
        d, process = self.start()
        process.protocol.outReceived(b'{"streams": [{"index": 0, "codec_type": "audio", "codec_name": "aac"}]}')
        process.exit(0)
        result = self.successResultOf(d)
        self.assertEqual(result.reason, "audio only (no video stream)")
        self.assertFalse(result.connection_problem)

    def test_http_error_is_a_connection_problem(self):
        """
        An HTTP error names the status and is marked as a connection problem,
        without the URL (and so without the credentials in it).
        """
        d, process = self.start()
        process.stderr("[http @ 0x1] HTTP error 403 Forbidden\n"
                       "http://127.0.0.1:1/live/user/secret/7.ts: Server returned 403 Forbidden (access denied)\n")
        process.protocol.outReceived(b"{\n\n}\n")
        process.exit(1)
        result = self.successResultOf(d)
        self.assertEqual(result.reason, "HTTP 403")
        self.assertTrue(result.connection_problem)

    def test_garbage_output(self):
        """
        Output that is not ffprobe's JSON fails the probe with the last error.
        """
        d, process = self.start()
        process.stderr("http://127.0.0.1:1/live/user/secret/7.ts: Invalid data found when processing input\n")
        process.exit(1)
        result = self.successResultOf(d)
        self.assertFalse(result.ok)
        self.assertNotIn("secret", result.reason)

    def test_timeout_kills(self):
        """
        A probe that outlives ffprobe_timeout is sent TERM, then KILL, and
        fails as timed out.
        """
        self.reactor.obedient = False
        d, process = self.start()
        self.reactor.advance(3.9)
        self.assertEqual(process.signals, [])
        self.reactor.advance(0.1)
        self.assertEqual(process.signals, ["TERM"])
        self.assertNoResult(d)
        self.reactor.advance(1.0)
        self.assertEqual(process.signals, ["TERM", "KILL"])
        result = self.successResultOf(d)
        self.assertEqual(result.reason, "ffprobe timed out")
