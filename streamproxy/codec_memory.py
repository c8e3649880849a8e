"""
What each stream carried the last time it played: its video and audio
codec as served (after any transcoding) and its picture height, kept in
memory per row of the table.

Playlists name them (``tvc-stream-vcodec``/``tvc-stream-acodec``, so
Channels DVR skips its own probing) and HDHomeRun lineups too
(``VideoCodec``/``AudioCodec``/``HD``).  Sessions report through the
:class:`~streamproxy.health.HealthListener` interface
(``stream_described``); nothing is written to the database.
"""

from dataclasses import dataclass

from .health import HealthListener

# What ffmpeg makes of a stream it transcodes (streamproxy.ffmpeg).
TRANSCODED_VIDEO = "h264"
TRANSCODED_AUDIO = "aac"


@dataclass(frozen=True)
class StreamMedia:
    """
    A stream's media as served: ``video`` and ``audio`` codec names as
    ffmpeg spells them (``h264``, ``aac``; audio None without audio) and the
    picture ``height`` (None when unknown).
    """

    video: str | None
    audio: str | None
    height: int | None = None


def served_media(facts, encoding):
    """
    The :class:`StreamMedia` a stream with ``facts`` (what ffmpeg or
    ffprobe reported of the input) is served as with ``encoding``
    (transcoded video becomes H.264 and audio AAC); None when the facts
    name no usable video codec.
    """
    if facts is None or not facts.video_codec or facts.video_codec in ("none", "unknown"):
        return None
    video = TRANSCODED_VIDEO if getattr(encoding, "transcode_video", False) else facts.video_codec
    audio = None
    if facts.audio_codecs:
        audio = TRANSCODED_AUDIO if getattr(encoding, "transcode_audio", False) else facts.audio_codecs[0]
    return StreamMedia(video, audio, facts.height)


class CodecMemory(HealthListener):
    """
    ``{rowid: StreamMedia}`` of streams seen playing since the start.
    ``version`` grows with every change, so built playlists know when to
    be built again.
    """

    def __init__(self):
        self._media = {}
        self.version = 0

    def stream_described(self, candidate, facts, encoding):
        """
        ``candidate`` was judged usable with ``facts`` and will be served
        with ``encoding``.
        """
        media = served_media(facts, encoding)
        if media is not None and self._media.get(candidate.rowid) != media:
            self._media[candidate.rowid] = media
            self.version += 1

    def get(self, rowid):
        """
        The :class:`StreamMedia` of row ``rowid``, or None when it has not
        played since the start.
        """
        return self._media.get(rowid)

    def __len__(self):
        return len(self._media)
