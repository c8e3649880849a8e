"""
The emulated tuner end to end with real ffmpeg: a channel tuned the way
an HDHomeRun client tunes it (``/auto/v<n>`` with Jellyfin's query
parameter) plays as MPEG-TS; afterwards the lineup and the playlist name
its codecs, and ``hdhomerun_config`` sees the busy tuner.
"""

import json

from twisted.internet import defer, endpoints, reactor
from twisted.internet.utils import getProcessOutputAndValue

from .helpers import row
from .test_clients_e2e import HDHOMERUN_CONFIG, require
from .test_streaming_e2e import StreamingTestCase
from .test_ts_e2e import TSViewerClient, first_units
from .upstream import wait_until


class TunerPlaybackTests(StreamingTestCase):
    """
    Playing through the HDHomeRun routes.
    """

    timeout = 90

    @defer.inlineCallbacks
    def test_auto_plays_and_codecs_are_remembered(self):
        """
        ``/auto/v1?transcode=mobile`` answers MPEG-TS beginning with PAT,
        PMT and a keyframe; once the stream has played, lineup.json gives
        VideoCodec/AudioCodec and the M3U tvc-stream-vcodec/acodec, and
        ``hdhomerun_config 127.0.0.1 get /tuner0/status`` shows the channel.
        """
        require(HDHOMERUN_CONFIG, "hdhomerun-config")
        self.add("a", burst=1.0)
        yield self.serve([row(1, self.live("a"), source="prov_a", uniform_name="One")],
                         source_limits={"prov_a": 2}, hdhomerun={"discovery": True})
        discovery = self.parts["discovery"]
        if "control" not in discovery.ports:
            raise AssertionError(f"port 65001 is held by another program ({discovery.warnings}); "
                                 f"hdhomerun_config needs it")
        _, before = yield self.fetch("/lineup.json")
        self.assertNotIn(b"VideoCodec", before)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5)
        viewer = yield endpoints.connectProtocol(endpoint, TSViewerClient(b"/auto/v1?transcode=mobile"))
        self.addCleanup(viewer.close)
        yield wait_until(lambda: len(viewer.body) > 188 * 50, timeout=15)
        self.assertEqual(viewer.status, 200)
        self.assertEqual(first_units(viewer.body, 3)[2], ("pes", "video", True))
        _, body = yield self.fetch("/lineup.json")
        entry = json.loads(body)[0]
        self.assertEqual((entry["GuideNumber"], entry["VideoCodec"], entry["AudioCodec"]), ("1", "H264", "AAC"))
        _, m3u = yield self.fetch("/m3u/main.m3u?format=ts")
        self.assertIn(b'tvc-stream-vcodec="h264" tvc-stream-acodec="aac"', m3u)
        out, err, _ = yield getProcessOutputAndValue(HDHOMERUN_CONFIG, ["127.0.0.1", "get", "/tuner0/status"],
                                                     env={})
        self.assertRegex(out.decode().strip(), r"^ch=auto:1 lock=auto ss=100 snq=100 seq=100 bps=\d+ pps=0$")
        out, _, _ = yield getProcessOutputAndValue(HDHOMERUN_CONFIG, ["127.0.0.1", "get", "/tuner0/vchannel"],
                                                   env={})
        self.assertEqual(out.decode().strip(), "1")
