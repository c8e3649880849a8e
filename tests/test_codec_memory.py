"""
What each stream was served with (codecs, height), remembered from the
session's report for playlists and tuner lineups; and the fan-out of
health events to several listeners.
"""

from twisted.trial.unittest import SynchronousTestCase

from streamproxy.codec_memory import CodecMemory, StreamMedia, served_media
from streamproxy.ffmpeg import Encoding
from streamproxy.health import HealthListener, HealthListeners
from streamproxy.media import StreamFacts

from .helpers import candidate
from .test_session import Harness

HD = StreamFacts("h264", ("aac", "ac3"), (), 1280, 720, 50.0)


class ServedMediaTests(SynchronousTestCase):
    """
    The media as served, from the input's facts and the encoding.
    """

    def test_copied(self):
        """
        Copied streams keep their codecs; the first audio track counts.
        """
        self.assertEqual(served_media(HD, Encoding()), StreamMedia("h264", "aac", 720))

    def test_transcoded(self):
        """
        Transcoded video is H.264 and transcoded audio AAC.
        """
        facts = StreamFacts("mpeg2video", ("mp2",), (), 720, 576, 25.0)
        self.assertEqual(served_media(facts, Encoding(True, False)), StreamMedia("h264", "mp2", 576))
        self.assertEqual(served_media(facts, Encoding(True, True)), StreamMedia("h264", "aac", 576))

    def test_unknown(self):
        """
        No facts, no video or an unidentified codec tell nothing; no audio
        is None.
        """
        self.assertIsNone(served_media(None, Encoding()))
        self.assertIsNone(served_media(StreamFacts(None, ("aac",)), Encoding()))
        self.assertIsNone(served_media(StreamFacts("none"), Encoding()))
        self.assertEqual(served_media(StreamFacts("hevc"), Encoding()), StreamMedia("hevc", None, None))


class CodecMemoryTests(SynchronousTestCase):
    """
    The memory per row.
    """

    def test_remembered_per_row_with_a_version(self):
        """
        A described stream is remembered by rowid; the version grows only
        when something changes.
        """
        memory = CodecMemory()
        self.assertIsNone(memory.get(1))
        memory.stream_described(candidate(1), HD, Encoding())
        self.assertEqual(memory.get(1), StreamMedia("h264", "aac", 720))
        version = memory.version
        memory.stream_described(candidate(1), HD, Encoding())
        self.assertEqual(memory.version, version)
        memory.stream_described(candidate(1), StreamFacts("hevc", ("aac",), (), 1920, 1080, 50.0), Encoding())
        self.assertEqual(memory.version, version + 1)
        self.assertEqual(memory.get(1), StreamMedia("hevc", "aac", 1080))
        memory.stream_described(candidate(2), None, Encoding())
        self.assertEqual(len(memory), 1)

    def test_other_health_events_do_nothing(self):
        """
        It is a HealthListener: the other events are accepted and ignored.
        """
        memory = CodecMemory()
        memory.stream_started(candidate(1))
        memory.stream_failed(candidate(1), "gone", 1.0)
        self.assertEqual(len(memory), 0)


class Recorder(HealthListener):
    """
    Records the events it hears.
    """

    def __init__(self):
        self.heard = []

    def stream_started(self, candidate):
        self.heard.append(("started", candidate.rowid))

    def stream_described(self, candidate, facts, encoding):
        self.heard.append(("described", candidate.rowid))


class Broken(HealthListener):
    """
    Raises at every event.
    """

    def stream_started(self, candidate):
        raise RuntimeError("broken listener")


class FanOutTests(SynchronousTestCase):
    """
    HealthListeners tells every listener.
    """

    def test_every_listener_is_told_despite_one_failing(self):
        """
        Each listener hears each event, in order; one that raises is logged
        and the next is still told.
        """
        first, second = Recorder(), Recorder()
        listeners = HealthListeners(first, Broken(), None, second)
        listeners.stream_started(candidate(3))
        listeners.stream_described(candidate(3), HD, Encoding())
        listeners.stream_failed(candidate(3), "x")
        listeners.stream_stopped(candidate(3))
        listeners.stream_validated(candidate(3))
        listeners.stream_buffering(candidate(3))
        self.assertEqual(first.heard, [("started", 3), ("described", 3)])
        self.assertEqual(second.heard, first.heard)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class SessionHookTests(Harness):
    """
    The session tells its listener how each stream it judged usable is served.
    """

    def test_ready_stream_is_described(self):
        """
        When a stream is ready, its facts and encoding go to the listener:
        the codec memory then knows the row's codecs and height.
        """
        manager = self.make([candidate(1, "7", url="http://127.0.0.1:1/a7.ts")], source_limits={"prov_a": 1})
        memory = CodecMemory()
        manager.health = HealthListeners(HealthListener(), memory)
        self.tune("7")
        self.go_live(self.ffmpegs()[0])
        self.assertEqual(memory.get(1), StreamMedia("h264", "aac", 180))
