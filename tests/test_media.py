"""Tests for streamproxy.media.

Every fixture below is real ffmpeg/ffprobe 5.1.9 output, captured from
lavfi test sources encoded to MPEG-TS and served from 127.0.0.1.  Where a
fixture is shortened, whole lines were dropped, never edited.
"""

from twisted.trial.unittest import SynchronousTestCase

from streamproxy.media import (
    BUFFERING_KINDS,
    Event,
    EventKind,
    LineBuffer,
    MediaError,
    Progress,
    ProgressParser,
    StreamFacts,
    StreamReportParser,
    classify_stderr_line,
    facts_from_ffprobe_json,
    judge,
    needs_transcode,
)

# ---------------------------------------------------------------------------
# ffprobe -v error -print_format json -show_streams

# testsrc2 640x360@25 as libx264 High + 48 kHz stereo AAC, tagged eng.
PROBE_H264_AAC = """\
{
    "streams": [
        {
            "index": 0,
            "codec_name": "h264",
            "codec_long_name": "H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10",
            "profile": "High",
            "codec_type": "video",
            "codec_tag_string": "[27][0][0][0]",
            "codec_tag": "0x001b",
            "width": 640,
            "height": 360,
            "coded_width": 640,
            "coded_height": 360,
            "closed_captions": 0,
            "film_grain": 0,
            "has_b_frames": 2,
            "sample_aspect_ratio": "1:1",
            "display_aspect_ratio": "16:9",
            "pix_fmt": "yuv420p",
            "level": 30,
            "chroma_location": "left",
            "field_order": "progressive",
            "refs": 1,
            "is_avc": "false",
            "nal_length_size": "0",
            "id": "0x100",
            "r_frame_rate": "25/1",
            "avg_frame_rate": "25/1",
            "time_base": "1/90000",
            "start_pts": 133200,
            "start_time": "1.480000",
            "duration_ts": 360000,
            "duration": "4.000000",
            "bits_per_raw_sample": "8",
            "extradata_size": 39,
            "disposition": {
                "default": 0,
                "dub": 0,
                "original": 0,
                "comment": 0,
                "lyrics": 0,
                "karaoke": 0,
                "forced": 0,
                "hearing_impaired": 0,
                "visual_impaired": 0,
                "clean_effects": 0,
                "attached_pic": 0,
                "timed_thumbnails": 0,
                "captions": 0,
                "descriptions": 0,
                "metadata": 0,
                "dependent": 0,
                "still_image": 0
            }
        },
        {
            "index": 1,
            "codec_name": "aac",
            "codec_long_name": "AAC (Advanced Audio Coding)",
            "profile": "LC",
            "codec_type": "audio",
            "codec_tag_string": "[15][0][0][0]",
            "codec_tag": "0x000f",
            "sample_fmt": "fltp",
            "sample_rate": "48000",
            "channels": 2,
            "channel_layout": "stereo",
            "bits_per_sample": 0,
            "id": "0x101",
            "r_frame_rate": "0/0",
            "avg_frame_rate": "0/0",
            "time_base": "1/90000",
            "start_pts": 131280,
            "start_time": "1.458667",
            "duration_ts": 355200,
            "duration": "3.946667",
            "bit_rate": "130484",
            "disposition": {
                "default": 0,
                "dub": 0,
                "original": 0,
                "comment": 0,
                "lyrics": 0,
                "karaoke": 0,
                "forced": 0,
                "hearing_impaired": 0,
                "visual_impaired": 0,
                "clean_effects": 0,
                "attached_pic": 0,
                "timed_thumbnails": 0,
                "captions": 0,
                "descriptions": 0,
                "metadata": 0,
                "dependent": 0,
                "still_image": 0
            },
            "tags": {
                "language": "eng"
            }
        }
    ]
}
"""

# The rest use -print_format json=c=1 (same data, one line per stream).

# 720x480 29.97 interlaced MPEG-2 + MP2: a typical cable/satellite channel.
PROBE_MPEG2_MP2 = """\
{
    "streams": [
        { "index": 0, "codec_name": "mpeg2video", "codec_long_name": "MPEG-2 video", "profile": "Main", "codec_type": "video", "codec_tag_string": "[2][0][0][0]", "codec_tag": "0x0002", "width": 720, "height": 480, "coded_width": 0, "coded_height": 0, "closed_captions": 0, "film_grain": 0, "has_b_frames": 1, "sample_aspect_ratio": "1:1", "display_aspect_ratio": "3:2", "pix_fmt": "yuv420p", "level": 8, "color_range": "tv", "chroma_location": "left", "field_order": "bb", "refs": 1, "id": "0x100", "r_frame_rate": "30000/1001", "avg_frame_rate": "30000/1001", "time_base": "1/90000", "start_pts": 129003, "start_time": "1.433367", "duration_ts": 270270, "duration": "3.003000", "extradata_size": 22,
            "disposition": { "default": 0, "dub": 0, "original": 0, "comment": 0, "lyrics": 0, "karaoke": 0, "forced": 0, "hearing_impaired": 0, "visual_impaired": 0, "clean_effects": 0, "attached_pic": 0, "timed_thumbnails": 0, "captions": 0, "descriptions": 0, "metadata": 0, "dependent": 0, "still_image": 0 },
            "side_data_list": [
                { "side_data_type": "CPB properties", "max_bitrate": 0, "min_bitrate": 0, "avg_bitrate": 0, "buffer_size": 49152, "vbv_delay": -1 }
            ] },
        { "index": 1, "codec_name": "mp2", "codec_long_name": "MP2 (MPEG audio layer 2)", "codec_type": "audio", "codec_tag_string": "[3][0][0][0]", "codec_tag": "0x0003", "sample_fmt": "fltp", "sample_rate": "48000", "channels": 1, "channel_layout": "mono", "bits_per_sample": 0, "id": "0x101", "r_frame_rate": "0/0", "avg_frame_rate": "0/0", "time_base": "1/90000", "start_pts": 128101, "start_time": "1.423344", "duration_ts": 270000, "duration": "3.000000", "bit_rate": "384000",
            "disposition": { "default": 0, "dub": 0, "original": 0, "comment": 0, "lyrics": 0, "karaoke": 0, "forced": 0, "hearing_impaired": 0, "visual_impaired": 0, "clean_effects": 0, "attached_pic": 0, "timed_thumbnails": 0, "captions": 0, "descriptions": 0, "metadata": 0, "dependent": 0, "still_image": 0 } }
    ]
}
"""

PROBE_HEVC_AC3 = """\
{
    "streams": [
        { "index": 0, "codec_name": "hevc", "codec_long_name": "H.265 / HEVC (High Efficiency Video Coding)", "profile": "Main", "codec_type": "video", "codec_tag_string": "HEVC", "codec_tag": "0x43564548", "width": 1280, "height": 720, "coded_width": 1280, "coded_height": 720, "closed_captions": 0, "film_grain": 0, "has_b_frames": 2, "sample_aspect_ratio": "1:1", "display_aspect_ratio": "16:9", "pix_fmt": "yuv420p", "level": 120, "color_range": "tv", "chroma_location": "left", "refs": 1, "id": "0x100", "r_frame_rate": "50/1", "avg_frame_rate": "50/1", "time_base": "1/90000", "start_pts": 129600, "start_time": "1.440000", "duration_ts": 180000, "duration": "2.000000", "extradata_size": 85,
            "disposition": { "default": 0, "dub": 0, "original": 0, "comment": 0, "lyrics": 0, "karaoke": 0, "forced": 0, "hearing_impaired": 0, "visual_impaired": 0, "clean_effects": 0, "attached_pic": 0, "timed_thumbnails": 0, "captions": 0, "descriptions": 0, "metadata": 0, "dependent": 0, "still_image": 0 } },
        { "index": 1, "codec_name": "ac3", "codec_long_name": "ATSC A/52A (AC-3)", "codec_type": "audio", "codec_tag_string": "AC-3", "codec_tag": "0x332d4341", "sample_fmt": "fltp", "sample_rate": "48000", "channels": 1, "channel_layout": "mono", "bits_per_sample": 0, "id": "0x101", "r_frame_rate": "0/0", "avg_frame_rate": "0/0", "time_base": "1/90000", "start_pts": 129120, "start_time": "1.434667", "duration_ts": 164160, "duration": "1.824000", "bit_rate": "96000",
            "disposition": { "default": 0, "dub": 0, "original": 0, "comment": 0, "lyrics": 0, "karaoke": 0, "forced": 0, "hearing_impaired": 0, "visual_impaired": 0, "clean_effects": 0, "attached_pic": 0, "timed_thumbnails": 0, "captions": 0, "descriptions": 0, "metadata": 0, "dependent": 0, "still_image": 0 } }
    ]
}
"""

PROBE_AUDIO_ONLY = """\
{
    "streams": [
        { "index": 0, "codec_name": "aac", "codec_long_name": "AAC (Advanced Audio Coding)", "profile": "LC", "codec_type": "audio", "codec_tag_string": "[15][0][0][0]", "codec_tag": "0x000f", "sample_fmt": "fltp", "sample_rate": "48000", "channels": 1, "channel_layout": "mono", "bits_per_sample": 0, "id": "0x100", "r_frame_rate": "0/0", "avg_frame_rate": "0/0", "time_base": "1/90000", "start_pts": 126000, "start_time": "1.400000", "duration_ts": 259200, "duration": "2.880000", "bit_rate": "72164",
            "disposition": { "default": 0, "dub": 0, "original": 0, "comment": 0, "lyrics": 0, "karaoke": 0, "forced": 0, "hearing_impaired": 0, "visual_impaired": 0, "clean_effects": 0, "attached_pic": 0, "timed_thumbnails": 0, "captions": 0, "descriptions": 0, "metadata": 0, "dependent": 0, "still_image": 0 } }
    ]
}
"""

# VP8 muxed into MPEG-TS: ffmpeg writes it as private data, so ffprobe
# sees only a data stream.
PROBE_DATA_ONLY = """\
{
    "streams": [
        { "index": 0, "codec_name": "bin_data", "codec_long_name": "binary data", "codec_type": "data", "codec_tag_string": "[6][0][0][0]", "codec_tag": "0x0006", "id": "0x100", "r_frame_rate": "0/0", "avg_frame_rate": "0/0", "time_base": "1/90000", "start_pts": 126000, "start_time": "1.400000", "duration_ts": 176400, "duration": "1.960000",
            "disposition": { "default": 0, "dub": 0, "original": 0, "comment": 0, "lyrics": 0, "karaoke": 0, "forced": 0, "hearing_impaired": 0, "visual_impaired": 0, "clean_effects": 0, "attached_pic": 0, "timed_thumbnails": 0, "captions": 0, "descriptions": 0, "metadata": 0, "dependent": 0, "still_image": 0 } }
    ]
}
"""

# 20 TS packets cut from the middle of the H.264 file: no SPS/PPS, so no
# size, and r_frame_rate degrades to the 90 kHz timebase.  ffprobe exits 0.
PROBE_UNDECODABLE = """\
{
    "streams": [
        { "index": 0, "codec_name": "h264", "codec_long_name": "H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10", "codec_type": "video", "codec_tag_string": "[27][0][0][0]", "codec_tag": "0x001b", "width": 0, "height": 0, "coded_width": 0, "coded_height": 0, "closed_captions": 0, "film_grain": 0, "has_b_frames": 1, "level": -99, "refs": 1, "is_avc": "false", "nal_length_size": "0", "id": "0x100", "r_frame_rate": "90000/1", "avg_frame_rate": "0/0", "time_base": "1/90000", "start_pts": 172800, "start_time": "1.920000", "duration_ts": 1, "duration": "0.000011",
            "disposition": { "default": 0, "dub": 0, "original": 0, "comment": 0, "lyrics": 0, "karaoke": 0, "forced": 0, "hearing_impaired": 0, "visual_impaired": 0, "clean_effects": 0, "attached_pic": 0, "timed_thumbnails": 0, "captions": 0, "descriptions": 0, "metadata": 0, "dependent": 0, "still_image": 0 } },
        { "index": 1, "codec_name": "aac", "codec_long_name": "AAC (Advanced Audio Coding)", "codec_type": "audio", "codec_tag_string": "[15][0][0][0]", "codec_tag": "0x000f", "sample_fmt": "fltp", "sample_rate": "0", "channels": 0, "bits_per_sample": 0, "id": "0x101", "r_frame_rate": "0/0", "avg_frame_rate": "0/0", "time_base": "1/90000", "start_pts": 172800, "start_time": "1.920000", "duration_ts": 1, "duration": "0.000011",
            "disposition": { "default": 0, "dub": 0, "original": 0, "comment": 0, "lyrics": 0, "karaoke": 0, "forced": 0, "hearing_impaired": 0, "visual_impaired": 0, "clean_effects": 0, "attached_pic": 0, "timed_thumbnails": 0, "captions": 0, "descriptions": 0, "metadata": 0, "dependent": 0, "still_image": 0 },
            "tags": { "language": "eng" } }
    ]
}
"""

# An MP3 "radio" stream with cover art: the MJPEG picture is not video.
PROBE_COVER_ART = """\
{
    "streams": [
        { "index": 0, "codec_name": "mp3", "codec_long_name": "MP3 (MPEG audio layer 3)", "codec_type": "audio", "codec_tag_string": "[0][0][0][0]", "codec_tag": "0x0000", "sample_fmt": "fltp", "sample_rate": "44100", "channels": 1, "channel_layout": "mono", "bits_per_sample": 0, "r_frame_rate": "0/0", "avg_frame_rate": "0/0", "time_base": "1/14112000", "start_pts": 353600, "start_time": "0.025057", "duration_ts": 28753920, "duration": "2.037551", "bit_rate": "64000",
            "disposition": { "default": 0, "dub": 0, "original": 0, "comment": 0, "lyrics": 0, "karaoke": 0, "forced": 0, "hearing_impaired": 0, "visual_impaired": 0, "clean_effects": 0, "attached_pic": 0, "timed_thumbnails": 0, "captions": 0, "descriptions": 0, "metadata": 0, "dependent": 0, "still_image": 0 } },
        { "index": 1, "codec_name": "mjpeg", "codec_long_name": "Motion JPEG", "profile": "Baseline", "codec_type": "video", "codec_tag_string": "[0][0][0][0]", "codec_tag": "0x0000", "width": 300, "height": 300, "coded_width": 300, "coded_height": 300, "closed_captions": 0, "film_grain": 0, "has_b_frames": 0, "sample_aspect_ratio": "1:1", "display_aspect_ratio": "1:1", "pix_fmt": "yuvj420p", "level": -99, "color_range": "pc", "color_space": "bt470bg", "chroma_location": "center", "refs": 1, "r_frame_rate": "90000/1", "avg_frame_rate": "0/0", "time_base": "1/90000", "start_pts": 2255, "start_time": "0.025056", "duration_ts": 183380, "duration": "2.037556", "bits_per_raw_sample": "8",
            "disposition": { "default": 0, "dub": 0, "original": 0, "comment": 0, "lyrics": 0, "karaoke": 0, "forced": 0, "hearing_impaired": 0, "visual_impaired": 0, "clean_effects": 0, "attached_pic": 1, "timed_thumbnails": 0, "captions": 0, "descriptions": 0, "metadata": 0, "dependent": 0, "still_image": 0 },
            "tags": { "comment": "Other" } }
    ]
}
"""

# Exact stdout of ffprobe on random bytes or an empty file (exit status 1,
# "Invalid data found when processing input" on stderr).
PROBE_FAILED = "{\n\n}\n"

# ---------------------------------------------------------------------------
# ffmpeg stderr at -loglevel info (the default)

# ffmpeg -hide_banner -nostdin -i http://127.0.0.1:8765/f/in.ts -t 2 -c copy
#   -f hls -hls_time 1 -hls_segment_filename out/name_%05d.ts out/x.m3u8
# Note the stats line ends in \r and the next message follows it directly.
STDERR_REMUX = (
    b"Input #0, mpegts, from 'http://127.0.0.1:8765/f/in.ts':\n"
    b"  Duration: N/A, start: 1.458667, bitrate: N/A\n"
    b"  Program 1 \n"
    b"    Metadata:\n"
    b"      service_name    : Service01\n"
    b"      service_provider: FFmpeg\n"
    b"  Stream #0:0[0x100]: Video: h264 (High) ([27][0][0][0] / 0x001B), yuv420p(progressive), 640x360 [SAR 1:1 DAR 16:9], 25 fps, 25 tbr, 90k tbn\n"
    b"  Stream #0:1[0x101](eng): Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, stereo, fltp, 130 kb/s\n"
    b"Output #0, hls, to 'out/x.m3u8':\n"
    b"  Metadata:\n"
    b"    encoder         : Lavf59.27.100\n"
    b"  Stream #0:0: Video: h264 (High) ([27][0][0][0] / 0x001B), yuv420p(progressive), 640x360 [SAR 1:1 DAR 16:9], q=2-31, 25 fps, 25 tbr, 90k tbn\n"
    b"  Stream #0:1(eng): Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, stereo, fltp, 130 kb/s\n"
    b"Stream mapping:\n"
    b"  Stream #0:0 -> #0:0 (copy)\n"
    b"  Stream #0:1 -> #0:1 (copy)\n"
    b"frame=    1 fps=0.0 q=-1.0 size=N/A time=00:00:00.00 bitrate=N/A speed=N/A    \r"
    b"[hls @ 0x55fe456c8b80] Opening 'out/name_00000.ts' for writing\n"
    b"[hls @ 0x55fe456c8b80] Opening 'out/x.m3u8.tmp' for writing\n"
    b"[hls @ 0x55fe456c8b80] Opening 'out/name_00001.ts' for writing\n"
    b"[hls @ 0x55fe456c8b80] Opening 'out/x.m3u8.tmp' for writing\n"
    b"[hls @ 0x55fe456c8b80] Opening 'out/name_00002.ts' for writing\n"
    b"[hls @ 0x55fe456c8b80] Opening 'out/x.m3u8.tmp' for writing\n"
    b"frame=   52 fps=0.0 q=-1.0 Lsize=N/A time=00:00:02.02 bitrate=N/A speed=1.64e+03x    \n"
    b"video:201kB audio:32kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown\n"
)

# Same input at -loglevel verbose: codec details and coded size change.
STDERR_VERBOSE = """\
[h264 @ 0x55e027165a00] Reinit context to 640x368, pix_fmt: yuv420p
[mpegts @ 0x55e02715e9c0] max_analyze_duration 5000000 reached at 5000000 microseconds st:0
Input #0, mpegts, from 'in.ts':
  Duration: 00:00:20.02, start: 1.458667, bitrate: 987 kb/s
  Program 1 
    Metadata:
      service_name    : Service01
      service_provider: FFmpeg
  Stream #0:0[0x100]: Video: h264 (High), 1 reference frame ([27][0][0][0] / 0x001B), yuv420p(progressive, left), 640x360 (640x368) [SAR 1:1 DAR 16:9], 25 fps, 25 tbr, 90k tbn
  Stream #0:1[0x101](eng): Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, stereo, fltp, 130 kb/s
[mpegts @ 0x55e02724a300] service 1 using PCR in pid=256, pcr_period=0ms
[mpegts @ 0x55e02724a300] muxrate VBR, sdt every 1073741822000 ms, pat/pmt every 1073741822000 ms
Output #0, hls, to 'out/x.m3u8':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #0:0: Video: h264 (High), 1 reference frame ([27][0][0][0] / 0x001B), yuv420p(progressive, left), 640x360 (0x0) [SAR 1:1 DAR 16:9], q=2-31, 25 fps, 25 tbr, 90k tbn
"""

# -loglevel repeat+level+info: every line gets a [level] tag.
STDERR_LEVEL_TAGS = """\
[info] Input #0, mpegts, from 'in.ts':
[info]   Duration: 00:00:20.02, start: 1.458667, bitrate: 987 kb/s
[info]   Program 1 
[info]     Metadata:
[info]       service_name    : Service01
[info]       service_provider: FFmpeg
[info]   Stream #0:0[0x100]: Video: h264 (High) ([27][0][0][0] / 0x001B), yuv420p(progressive), 640x360 [SAR 1:1 DAR 16:9], 25 fps, 25 tbr, 90k tbn
[info]   Stream #0:1[0x101](eng): Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, stereo, fltp, 130 kb/s
[info] Output #0, hls, to 'out/x.m3u8':
[info]   Metadata:
[info]     encoder         : Lavf59.27.100
[info]   Stream #0:0: Video: h264 (High) ([27][0][0][0] / 0x001B), yuv420p(progressive), 640x360 [SAR 1:1 DAR 16:9], q=2-31, 25 fps, 25 tbr, 90k tbn
"""

# Transcoding mpeg2video/mp2: "Stream mapping:" comes BEFORE "Output #0"
# (libx264's banner lines between them dropped).
STDERR_TRANSCODE = """\
Input #0, mpegts, from 'mpeg2.ts':
  Duration: 00:00:03.01, start: 1.423344, bitrate: 1290 kb/s
  Program 1 
    Metadata:
      service_name    : Service01
      service_provider: FFmpeg
  Stream #0:0[0x100]: Video: mpeg2video (Main) ([2][0][0][0] / 0x0002), yuv420p(tv, bottom first), 720x480 [SAR 1:1 DAR 3:2], 29.97 fps, 29.97 tbr, 90k tbn
    Side data:
      cpb: bitrate max/min/avg: 0/0/0 buffer size: 49152 vbv_delay: N/A
  Stream #0:1[0x101]: Audio: mp2 ([3][0][0][0] / 0x0003), 48000 Hz, mono, fltp, 384 kb/s
Stream mapping:
  Stream #0:0 -> #0:0 (mpeg2video (native) -> h264 (libx264))
  Stream #0:1 -> #0:1 (mp2 (native) -> aac (native))
[libx264 @ 0x55c2e8c01940] using SAR=1/1
[libx264 @ 0x55c2e8c01940] profile High, level 3.0, 4:2:0, 8-bit
Output #0, hls, to 'out/x.m3u8':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #0:0: Video: h264, yuv420p(tv, bottom coded first (swapped)), 720x480 [SAR 1:1 DAR 3:2], q=2-31, 29.97 fps, 90k tbn
"""

# An HLS input: no PIDs in the stream lines, input segments opened first.
STDERR_HLS_INPUT = """\
[hls @ 0x55c66b9c4980] Skip ('#EXT-X-VERSION:3')
[hls @ 0x55c66b9c4980] Opening 'http://127.0.0.1:8765/f/seg1.ts' for reading
[hls @ 0x55c66b9c4980] Opening 'http://127.0.0.1:8765/f/seg2.ts' for reading
Input #0, hls, from 'http://127.0.0.1:8765/live/user1/pass1/chan.m3u8?token=abc':
  Duration: N/A, start: 1.458667, bitrate: N/A
  Program 0 
    Metadata:
      variant_bitrate : 0
  Stream #0:0: Video: h264 (High) ([27][0][0][0] / 0x001B), yuv420p, 640x360 [SAR 1:1 DAR 16:9], 25 fps, 25 tbr, 90k tbn
    Metadata:
      variant_bitrate : 0
  Stream #0:1: Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, stereo, fltp
    Metadata:
      variant_bitrate : 0
Output #0, hls, to 'out/x.m3u8':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #0:0: Video: h264 (High) ([27][0][0][0] / 0x001B), yuv420p, 640x360 [SAR 1:1 DAR 16:9], q=2-31, 25 fps, 25 tbr, 90k tbn
"""

# Audio only: the stats line starts with "size=", not "frame=".
STDERR_AUDIO_ONLY = """\
Input #0, mpegts, from 'audio.ts':
  Duration: 00:00:02.88, start: 1.400000, bitrate: 93 kb/s
  Program 1 
    Metadata:
      service_name    : Service01
      service_provider: FFmpeg
  Stream #0:0[0x100]: Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, mono, fltp, 72 kb/s
[mpegts @ 0x556b5a5c0540] frame size not set
Output #0, hls, to 'out/x.m3u8':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #0:0: Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, mono, fltp, 72 kb/s
Stream mapping:
  Stream #0:0 -> #0:0 (copy)
size=N/A time=00:00:00.02 bitrate=N/A speed=N/A    
"""

# The undecodable cut: "Output #0" never comes; ffmpeg exits 1.
STDERR_UNDECODABLE = """\
[h264 @ 0x55f72e5f2840] non-existing PPS 0 referenced
    Last message repeated 1 times
[h264 @ 0x55f72e5f2840] decode_slice_header error
[h264 @ 0x55f72e5f2840] no frame!
[mpegts @ 0x55f72e5ec9c0] start time for stream 1 is not set in estimate_timings_from_pts
[mpegts @ 0x55f72e5ec9c0] stream 1 : no TS found at start of file, duration not set
[mpegts @ 0x55f72e5ec9c0] Could not find codec parameters for stream 0 (Video: h264 ([27][0][0][0] / 0x001B), none): unspecified size
Consider increasing the value for the 'analyzeduration' (0) and 'probesize' (5000000) options
[mpegts @ 0x55f72e5ec9c0] Could not find codec parameters for stream 1 (Audio: aac ([15][0][0][0] / 0x000F), 0 channels, fltp): unspecified sample rate
Consider increasing the value for the 'analyzeduration' (0) and 'probesize' (5000000) options
Input #0, mpegts, from 'cut.ts':
  Duration: 00:00:00.00, start: 1.920000, bitrate: 2734545 kb/s
  Program 1 
  Stream #0:0[0x100]: Video: h264 ([27][0][0][0] / 0x001B), none, 90k tbr, 90k tbn
  Stream #0:1[0x101](eng): Audio: aac ([15][0][0][0] / 0x000F), 0 channels, fltp
[hls @ 0x55f72e6118c0] sample rate not set
Could not write header for output file #0 (incorrect codec parameters ?): Invalid argument
Error initializing output stream 0:1 -- 
Stream mapping:
  Stream #0:0 -> #0:0 (copy)
  Stream #0:1 -> #0:1 (copy)
"""

STDERR_COVER_ART = """\
Input #0, mp3, from 'cover.mp3':
  Metadata:
    encoder         : Lavf59.27.100
  Duration: 00:00:02.04, start: 0.025056, bitrate: 105 kb/s
  Stream #0:0: Audio: mp3, 44100 Hz, mono, fltp, 64 kb/s
  Stream #0:1: Video: mjpeg (Baseline), yuvj420p(pc, bt470bg/unknown/unknown), 300x300 [SAR 1:1 DAR 1:1], 90k tbr, 90k tbn (attached pic)
    Metadata:
      comment         : Other
Stream mapping:
"""

# ffmpeg -i in.ts -i mpeg2.ts -map 1:v -map 0:a ...
STDERR_TWO_INPUTS = """\
Input #0, mpegts, from 'in.ts':
  Duration: 00:00:20.02, start: 1.458667, bitrate: 987 kb/s
  Program 1 
    Metadata:
      service_name    : Service01
      service_provider: FFmpeg
  Stream #0:0[0x100]: Video: h264 (High) ([27][0][0][0] / 0x001B), yuv420p(progressive), 640x360 [SAR 1:1 DAR 16:9], 25 fps, 25 tbr, 90k tbn
  Stream #0:1[0x101](eng): Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, stereo, fltp, 130 kb/s
Input #1, mpegts, from 'mpeg2.ts':
  Duration: 00:00:03.01, start: 1.423344, bitrate: 1290 kb/s
  Program 1 
    Metadata:
      service_name    : Service01
      service_provider: FFmpeg
  Stream #1:0[0x100]: Video: mpeg2video (Main) ([2][0][0][0] / 0x0002), yuv420p(tv, bottom first), 720x480 [SAR 1:1 DAR 3:2], 29.97 fps, 29.97 tbr, 90k tbn
    Side data:
      cpb: bitrate max/min/avg: 0/0/0 buffer size: 49152 vbv_delay: N/A
  Stream #1:1[0x101]: Audio: mp2 ([3][0][0][0] / 0x0003), 48000 Hz, mono, fltp, 384 kb/s
Output #0, hls, to 'out/x.m3u8':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #0:0: Video: mpeg2video (Main) ([2][0][0][0] / 0x0002), yuv420p(tv, bottom first), 720x480 [SAR 1:1 DAR 3:2], q=2-31, 29.97 fps, 29.97 tbr, 90k tbn
"""

# Printed when stdin interaction is on (no -nostdin), right before stats.
PRESS_Q = "Press [q] to stop, [?] for help"


def _lines(text):
    """Split a str fixture the way LineBuffer would."""
    buffer = LineBuffer()
    return buffer.feed(text.encode()) + buffer.flush()


# ---------------------------------------------------------------------------
# Real stderr lines and what they must classify as: (line, kind, detail, fatal)

CLASSIFIED_LINES = [
    # ffmpeg -i http://127.0.0.1:1/x.ts
    ("[tcp @ 0x562e2103ef80] Connection to tcp://127.0.0.1:1 failed: Connection refused",
     EventKind.CONNECTION_FAILED, "Connection refused", False),
    ("http://127.0.0.1:1/x.ts: Connection refused",
     EventKind.CONNECTION_FAILED, "Connection refused", True),
    # A listening socket whose backlog is full, with -timeout 2000000.
    ("[tcp @ 0x55cb854800c0] Connection to tcp://127.0.0.1:8766 failed: Connection timed out",
     EventKind.CONNECTION_FAILED, "Connection timed out", False),
    ("http://127.0.0.1:8766/x.ts: Connection timed out",
     EventKind.READ_TIMEOUT, "Connection timed out", True),
    # HTTP errors: the [http] line has the status, the final line may not.
    ("[http @ 0x56486305a1c0] HTTP error 404 Not Found", EventKind.HTTP_ERROR, 404, False),
    ("http://127.0.0.1:8765/code/404.ts: Server returned 404 Not Found",
     EventKind.HTTP_ERROR, 404, True),
    ("[http @ 0x55ec93be11c0] HTTP error 403 Forbidden", EventKind.HTTP_ERROR, 403, False),
    ("http://127.0.0.1:8765/code/403.ts: Server returned 403 Forbidden (access denied)",
     EventKind.HTTP_ERROR, 403, True),
    # 401 gets no "HTTP error" line at all in 5.1.
    ("http://127.0.0.1:8765/code/401.ts: Server returned 401 Unauthorized (authorization failed)",
     EventKind.HTTP_ERROR, 401, True),
    ("http://127.0.0.1:8765/code/400.ts: Server returned 400 Bad Request",
     EventKind.HTTP_ERROR, 400, True),
    ("[http @ 0x55979f9e01c0] HTTP error 429 Too Many Requests", EventKind.HTTP_ERROR, 429, False),
    ("http://127.0.0.1:8765/code/429.ts: Server returned 4XX Client Error, but not one of 40{0,1,3,4}",
     EventKind.HTTP_ERROR, None, True),
    ("[http @ 0x5582e45361c0] HTTP error 503 Service Unavailable", EventKind.HTTP_ERROR, 503, False),
    ("http://127.0.0.1:8765/code/503.ts: Server returned 5XX Server Error reply",
     EventKind.HTTP_ERROR, None, True),
    # -reconnect 1 -reconnect_streamed 1 -reconnect_on_network_error 1 ...
    ("[http @ 0x564bce938400] Will reconnect at 0 in 0 second(s).",
     EventKind.RECONNECT, None, False),
    ("[http @ 0x55dfbe5f9400] Will reconnect at 194560 in 0 second(s), error=Connection reset by peer.",
     EventKind.RECONNECT, "Connection reset by peer", False),
    ("[http @ 0x55e4796ca400] Will reconnect at 376000 in 0 second(s), error=Input/output error.",
     EventKind.RECONNECT, "Input/output error", False),
    ("[http @ 0x562e3db49440] Will reconnect at 376000 in 0 second(s), error=Connection timed out.",
     EventKind.RECONNECT, "Connection timed out", False),
    # Mid-stream failures without -reconnect: ffmpeg still exits 0.
    ("http://127.0.0.1:8765/hang/x.ts: Connection timed out",
     EventKind.READ_TIMEOUT, "Connection timed out", True),
    ("http://127.0.0.1:8765/drop/x.ts: Connection reset by peer",
     EventKind.IO_ERROR, "Connection reset by peer", True),
    ("http://127.0.0.1:8765/eof/x.ts: Input/output error",
     EventKind.IO_ERROR, "Input/output error", True),
    ("[http @ 0x55b0c945e1c0] Stream ends prematurely at 376000, should be 18446744073709551615",
     EventKind.IO_ERROR, "Stream ends prematurely", False),
    # Damaged and garbage input.
    ("[mpegts @ 0x55dfbe5f8ac0] Packet corrupt (stream = 0, dts = 270000).",
     EventKind.CORRUPT, None, False),
    ("http://127.0.0.1:8765/drop/x.ts: corrupt input packet in stream 0",
     EventKind.CORRUPT, None, False),
    ("[mpegts @ 0x565050cd8980] PES packet size mismatch", EventKind.CORRUPT, None, False),
    ("[mpegts @ 0x565050d17c40] AAC bitstream not in ADTS format and extradata missing",
     EventKind.CORRUPT, None, False),
    ("[hls @ 0x562c92127680] Non-monotonous DTS in output stream 0:1; previous: 1800960, "
     "current: 1800000; changing to 1800961. This may result in incorrect timestamps in the output file.",
     EventKind.CORRUPT, None, False),
    ("http://127.0.0.1:8765/f/garbage.ts: Invalid data found when processing input",
     EventKind.CORRUPT, None, True),
    ("/tmp/xx/empty.ts: Invalid data found when processing input", EventKind.CORRUPT, None, True),
    # HLS inputs.
    ("[hls @ 0x558f704759c0] Failed to reload playlist 0",
     EventKind.PLAYLIST_RELOAD_FAILED, None, False),
    ("[hls @ 0x55e8c34639c0] Failed to open segment 2 of playlist 0",
     EventKind.SEGMENT_FAILED, None, False),
    ("[hls @ 0x563262cbc980] skipping 19 segments ahead, expired from playlists",
     EventKind.SEGMENT_FAILED, 19, False),
    # Our own output, printed at -loglevel info.
    ("[hls @ 0x55fe456c8b80] Opening 'out/name_00000.ts' for writing",
     EventKind.SEGMENT_OPENED, "out/name_00000.ts", False),
    ("[hls @ 0x55fe456c8b80] Opening 'out/x.m3u8.tmp' for writing",
     EventKind.SEGMENT_OPENED, "out/x.m3u8.tmp", False),
    ("[hls @ 0x560d88983340] Opening '/tmp/xx/out/out0.ts' for writing",
     EventKind.SEGMENT_OPENED, "/tmp/xx/out/out0.ts", False),
    # -loglevel level+info puts the level after the context.
    ("[hls @ 0x555797e09100] [info] Opening 'out/name_00001.ts' for writing",
     EventKind.SEGMENT_OPENED, "out/name_00001.ts", False),
]

UNCLASSIFIED_LINES = [
    "frame=    1 fps=0.0 q=-1.0 size=N/A time=00:00:00.00 bitrate=N/A speed=N/A",
    "size=N/A time=00:00:03.02 bitrate=N/A speed=2.83e+03x",
    "Input #0, hls, from 'http://127.0.0.1:8765/live/user1/pass1/chan.m3u8?token=abc':",
    "  Duration: N/A, start: 1.458667, bitrate: N/A",
    "      service_name    : Service01",
    "Stream mapping:",
    "  Stream #0:0 -> #0:0 (copy)",
    # The demuxer reading input segments is not our output.
    "[hls @ 0x55e8c34639c0] Opening 'http://127.0.0.1:8765/f/seg2.ts' for reading",
    "[hls @ 0x55e8c34639c0] Skip ('#EXT-X-VERSION:3')",
    # A retry notice repeating the HTTP error line just before it.
    "[hls @ 0x55e8c34639c0] keepalive request failed for 'http://127.0.0.1:8765/f/seg2.ts' with "
    "error: 'Server returned 404 Not Found' when opening url, retrying with new connection",
    "    Last message repeated 1 times",
    "video:201kB audio:32kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown",
    "[mpegts @ 0x556b5a5c0540] frame size not set",
    "EXT-X-MEDIA-SEQUENCE:0",
    # What ffmpeg says when we stop it.
    "http://127.0.0.1:8766/x.ts: Immediate exit requested",
    "Exiting normally, received signal 15.",
    "Could not write header for output file #0 (incorrect codec parameters ?): Invalid argument",
    "",
    "   ",
]

# ---------------------------------------------------------------------------
# ffmpeg -progress pipe:1 -stats_period 0.5 (the option exists in 5.1)

# ffmpeg -nostdin -re -f lavfi -i testsrc2=size=320x180:rate=25 -t 3
#   -c:v libx264 -f hls -hls_time 1 /tmp/xx/out/out.m3u8 -progress pipe:1
#   -stats_period 0.5
PROGRESS_HLS_X264 = b"""\
frame=1
fps=0.00
stream_0_0_q=0.0
bitrate=N/A
total_size=N/A
out_time_us=0
out_time_ms=0
out_time=00:00:00.000000
dup_frames=0
drop_frames=0
speed=N/A
progress=continue
frame=13
fps=0.00
stream_0_0_q=0.0
bitrate=N/A
total_size=N/A
out_time_us=0
out_time_ms=0
out_time=00:00:00.000000
dup_frames=0
drop_frames=0
speed=   0x
progress=continue
frame=26
fps=25.70
stream_0_0_q=0.0
bitrate=N/A
total_size=N/A
out_time_us=0
out_time_ms=0
out_time=00:00:00.000000
dup_frames=0
drop_frames=0
speed=   0x
progress=continue
frame=38
fps=25.03
stream_0_0_q=0.0
bitrate=N/A
total_size=N/A
out_time_us=0
out_time_ms=0
out_time=00:00:00.000000
dup_frames=0
drop_frames=0
speed=   0x
progress=continue
frame=51
fps=25.22
stream_0_0_q=28.0
bitrate=N/A
total_size=N/A
out_time_us=80000
out_time_ms=80000
out_time=00:00:00.080000
dup_frames=0
drop_frames=0
speed=0.0396x
progress=continue
frame=64
fps=25.33
stream_0_0_q=28.0
bitrate=N/A
total_size=N/A
out_time_us=600000
out_time_ms=600000
out_time=00:00:00.600000
dup_frames=0
drop_frames=0
speed=0.237x
progress=continue
frame=75
fps=24.45
stream_0_0_q=-1.0
bitrate=N/A
total_size=N/A
out_time_us=2920000
out_time_ms=2920000
out_time=00:00:02.920000
dup_frames=0
drop_frames=0
speed=0.952x
progress=end
"""

# -re -c copy to an mpegts file: the only case with a real bitrate and size.
PROGRESS_MPEGTS = b"""\
frame=28
fps=27.55
stream_0_0_q=-1.0
bitrate=1036.9kbits/s
total_size=132728
out_time_us=1024000
out_time_ms=1024000
out_time=00:00:01.024000
dup_frames=0
drop_frames=0
speed=1.01x
progress=continue
"""

# Without -re: the speed is printed in exponent form, bitrate space-padded.
PROGRESS_FAST = b"""\
frame=252
fps=0.00
stream_0_0_q=-1.0
bitrate= 996.9kbits/s
total_size=1246816
out_time_us=10005333
out_time_ms=10005333
out_time=00:00:10.005333
dup_frames=0
drop_frames=0
speed=3.8e+03x
progress=end
"""

# -copyts on an input starting at 1.4 s: negative time, negative bitrate.
PROGRESS_COPYTS = b"""\
frame=1
fps=0.00
stream_0_0_q=-1.0
bitrate=  -0.0kbits/s
total_size=0
out_time_us=-1400011
out_time_ms=-1400011
out_time=-00:00:01.400011
dup_frames=0
drop_frames=0
speed=N/A
progress=continue
"""


# ---------------------------------------------------------------------------


class LineBufferTests(SynchronousTestCase):
    """LineBuffer turns stderr bytes into clean lines."""

    def test_newline_and_carriage_return_both_end_lines(self):
        """\\n, \\r and \\r\\n all end a line; no empty lines come out."""
        buffer = LineBuffer()
        self.assertEqual(buffer.feed(b"one\ntwo\rthree\r\nfour\n\n\r\n"), ["one", "two", "three", "four"])

    def test_partial_line_waits_for_its_end(self):
        """A line split across chunks is returned once, when it ends."""
        buffer = LineBuffer()
        self.assertEqual(buffer.feed(b"Stream mapp"), [])
        self.assertEqual(buffer.feed(b"ing:"), [])
        self.assertEqual(buffer.feed(b"\nnext"), ["Stream mapping:"])

    def test_crlf_split_across_chunks_gives_one_line(self):
        """A \\r\\n pair cut between two chunks does not yield a blank line."""
        buffer = LineBuffer()
        self.assertEqual(buffer.feed(b"a\r"), ["a"])
        self.assertEqual(buffer.feed(b"\nb\n"), ["b"])

    def test_stats_line_then_log_message(self):
        """ffmpeg's \\r-terminated stats line and the message glued after it
        come out as two lines, with the stats padding stripped."""
        lines = LineBuffer().feed(STDERR_REMUX)
        index = lines.index(
            "frame=    1 fps=0.0 q=-1.0 size=N/A time=00:00:00.00 bitrate=N/A speed=N/A"
        )
        self.assertEqual(lines[index + 1], "[hls @ 0x55fe456c8b80] Opening 'out/name_00000.ts' for writing")

    def test_byte_by_byte_equals_whole(self):
        """Feeding one byte at a time gives exactly the same lines."""
        whole = LineBuffer().feed(STDERR_REMUX)
        buffer = LineBuffer()
        pieces = []
        for index in range(len(STDERR_REMUX)):
            pieces += buffer.feed(STDERR_REMUX[index:index + 1])
        self.assertEqual(pieces, whole)

    def test_leading_indentation_kept(self):
        """Indentation survives (the stream report relies on it), trailing
        blanks do not."""
        self.assertEqual(LineBuffer().feed(b"  Stream #0:0 -> #0:0 (copy)  \n"), ["  Stream #0:0 -> #0:0 (copy)"])

    def test_invalid_utf8_is_replaced(self):
        """Latin-1 bytes (a common service name encoding) do not raise."""
        lines = LineBuffer().feed(b"      service_name    : Caf\xe9 TV\n")
        self.assertEqual(lines, ["      service_name    : Caf\ufffd TV"])

    def test_multibyte_character_split_across_chunks(self):
        """A UTF-8 character cut between chunks still decodes correctly."""
        buffer = LineBuffer()
        data = "      service_name    : Café\n".encode()
        cut = data.index(b"\xa9")
        self.assertEqual(buffer.feed(data[:cut]), [])
        self.assertEqual(buffer.feed(data[cut:]), ["      service_name    : Café"])

    def test_flush_returns_unterminated_tail_once(self):
        """At EOF, flush hands over the last unterminated line, then nothing."""
        buffer = LineBuffer()
        buffer.feed(b"done\nvideo:201kB audio:32kB")
        self.assertEqual(buffer.flush(), ["video:201kB audio:32kB"])
        self.assertEqual(buffer.flush(), [])

    def test_overlong_line_is_cut_off(self):
        """A stream with no line ends cannot grow the buffer forever."""
        buffer = LineBuffer(max_line_bytes=10)
        self.assertEqual(buffer.feed(b"x" * 25), ["x" * 25])
        self.assertEqual(buffer.feed(b"y\n"), ["y"])


class FfprobeTests(SynchronousTestCase):
    """facts_from_ffprobe_json reads ffprobe's JSON."""

    def test_h264_aac(self):
        """The full (non-compact) output of a normal channel."""
        self.assertEqual(
            facts_from_ffprobe_json(PROBE_H264_AAC),
            StreamFacts(video_codec="h264", audio_codecs=("aac",), width=640, height=360, fps=25.0),
        )

    def test_mpeg2_ntsc_frame_rate(self):
        """30000/1001 becomes 29.97 fps; codecs are kept as ffprobe names them."""
        facts = facts_from_ffprobe_json(PROBE_MPEG2_MP2)
        self.assertEqual((facts.video_codec, facts.audio_codecs), ("mpeg2video", ("mp2",)))
        self.assertEqual((facts.width, facts.height), (720, 480))
        self.assertAlmostEqual(facts.fps, 29.97, places=2)

    def test_hevc_ac3(self):
        """HEVC 720p50 with AC-3."""
        facts = facts_from_ffprobe_json(PROBE_HEVC_AC3)
        self.assertEqual(facts, StreamFacts("hevc", ("ac3",), (), 1280, 720, 50.0))

    def test_audio_only(self):
        """No video stream: video_codec is None and has_video is False."""
        facts = facts_from_ffprobe_json(PROBE_AUDIO_ONLY)
        self.assertIsNone(facts.video_codec)
        self.assertFalse(facts.has_video)
        self.assertTrue(facts.has_audio)
        self.assertEqual(facts.audio_codecs, ("aac",))

    def test_data_only(self):
        """A private data stream is neither video nor audio."""
        facts = facts_from_ffprobe_json(PROBE_DATA_ONLY)
        self.assertEqual(facts, StreamFacts(other_codecs=("bin_data",)))

    def test_undecodable_video_has_no_size_or_rate(self):
        """width 0 and the 90000/1 timebase guess are not taken as facts."""
        facts = facts_from_ffprobe_json(PROBE_UNDECODABLE)
        self.assertEqual(facts.video_codec, "h264")
        self.assertIsNone(facts.width)
        self.assertIsNone(facts.height)
        self.assertIsNone(facts.fps)

    def test_cover_art_is_not_video(self):
        """An attached picture (disposition attached_pic=1) is not a video stream."""
        facts = facts_from_ffprobe_json(PROBE_COVER_ART)
        self.assertFalse(facts.has_video)
        self.assertEqual(facts.audio_codecs, ("mp3",))
        self.assertEqual(facts.other_codecs, ("mjpeg",))

    def test_failed_probe_means_no_streams(self):
        """ffprobe's '{}' on an unreadable input is no streams, not an error."""
        self.assertEqual(facts_from_ffprobe_json(PROBE_FAILED), StreamFacts())

    def test_missing_codec_name_is_none(self):
        """A video stream without codec_name is kept, with codec 'none'."""
        facts = facts_from_ffprobe_json('{"streams": [{"codec_type": "video", "width": 720, "height": 576}]}')
        self.assertTrue(facts.has_video)
        self.assertEqual(facts.video_codec, "none")

    def test_second_video_stream_is_other(self):
        """Only the first video stream describes the input."""
        text = (
            '{"streams": [{"codec_type": "video", "codec_name": "h264", "width": 1920, "height": 1080},'
            ' {"codec_type": "video", "codec_name": "h264", "width": 640, "height": 360}]}'
        )
        facts = facts_from_ffprobe_json(text)
        self.assertEqual((facts.width, facts.other_codecs), (1920, ("h264",)))

    def test_not_json(self):
        """Garbage raises MediaError (a ValueError) saying it is not JSON."""
        for text in ["", "garbage.ts: Invalid data found when processing input", '{"streams": [', b"\xff"]:
            error = self.assertRaises(MediaError, facts_from_ffprobe_json, text)
            self.assertIn("not JSON", str(error))
        self.assertTrue(issubclass(MediaError, ValueError))

    def test_wrong_shape(self):
        """JSON that is not shaped like ffprobe output raises MediaError."""
        for text in ["[]", "42", '{"streams": {}}', '{"streams": [1]}', '{"streams": ["video"]}']:
            self.assertRaises(MediaError, facts_from_ffprobe_json, text)


class StreamReportTests(SynchronousTestCase):
    """StreamReportParser reads the input report from ffmpeg's stderr."""

    def feed_all(self, lines, parser=None):
        """Feed lines; return (parser, facts returned, the completing line)."""
        parser = parser or StreamReportParser()
        returned, completing = [], None
        for line in lines:
            facts = parser.feed_line(line)
            if facts is not None:
                returned.append(facts)
                completing = completing or line
        return parser, returned, completing

    def test_remux_report(self):
        """Input streams are read; facts come back once, on 'Output #0'."""
        parser, returned, completing = self.feed_all(LineBuffer().feed(STDERR_REMUX))
        self.assertEqual(returned, [StreamFacts("h264", ("aac",), (), 640, 360, 25.0)])
        self.assertEqual(completing, "Output #0, hls, to 'out/x.m3u8':")
        self.assertTrue(parser.complete)

    def test_output_streams_ignored(self):
        """The Output #0 section's 'Stream #0:0' lines never change the facts."""
        parser, _, _ = self.feed_all(_lines(STDERR_REMUX.decode()))
        before = parser.facts
        self.assertIsNone(parser.feed_line(
            "  Stream #0:0: Video: mpeg2video (Main), yuv420p, 720x480, q=2-31, 29.97 fps, 90k tbn"))
        self.assertEqual(parser.facts, before)

    def test_not_complete_until_the_end_of_the_input(self):
        """Before the completing line facts are partial and complete is False."""
        lines = _lines(STDERR_REMUX.decode())
        end = lines.index("Output #0, hls, to 'out/x.m3u8':")
        parser, returned, _ = self.feed_all(lines[:end])
        self.assertEqual(returned, [])
        self.assertFalse(parser.complete)
        self.assertEqual(parser.facts.video_codec, "h264")

    def test_transcode_report_completes_at_stream_mapping(self):
        """When transcoding 5.1 prints 'Stream mapping:' before 'Output #0'."""
        _, returned, completing = self.feed_all(_lines(STDERR_TRANSCODE))
        self.assertEqual(completing, "Stream mapping:")
        [facts] = returned
        self.assertEqual((facts.video_codec, facts.audio_codecs, facts.width, facts.height), ("mpeg2video", ("mp2",), 720, 480))
        self.assertAlmostEqual(facts.fps, 29.97)

    def test_verbose_report(self):
        """At -loglevel verbose the display size wins over the coded size."""
        _, returned, _ = self.feed_all(_lines(STDERR_VERBOSE))
        self.assertEqual(returned, [StreamFacts("h264", ("aac",), (), 640, 360, 25.0)])

    def test_level_tags(self):
        """'[info] ' prefixes from -loglevel level+info are ignored."""
        _, returned, completing = self.feed_all(_lines(STDERR_LEVEL_TAGS))
        self.assertEqual(returned, [StreamFacts("h264", ("aac",), (), 640, 360, 25.0)])
        self.assertEqual(completing, "[info] Output #0, hls, to 'out/x.m3u8':")

    def test_hls_input(self):
        """Stream lines without a [0x...] PID, between Metadata blocks."""
        _, returned, _ = self.feed_all(_lines(STDERR_HLS_INPUT))
        self.assertEqual(returned, [StreamFacts("h264", ("aac",), (), 640, 360, 25.0)])

    def test_audio_only(self):
        """An audio-only report gives facts without video."""
        _, [facts], _ = self.feed_all(_lines(STDERR_AUDIO_ONLY))
        self.assertEqual(facts, StreamFacts(audio_codecs=("aac",)))

    def test_undecodable_input(self):
        """Codec-parameter warnings before 'Input #0' are not streams; a
        stream printed with pixel format 'none' and no size has no size, and
        its '90k tbr' is not a frame rate."""
        _, returned, completing = self.feed_all(_lines(STDERR_UNDECODABLE))
        self.assertEqual(returned, [StreamFacts("h264", ("aac",), (), None, None, None)])
        self.assertEqual(completing, "Stream mapping:")

    def test_cover_art(self):
        """'(attached pic)' video is not video."""
        _, [facts], _ = self.feed_all(_lines(STDERR_COVER_ART))
        self.assertEqual(facts, StreamFacts(audio_codecs=("mp3",), other_codecs=("mjpeg",)))

    def test_first_of_two_inputs(self):
        """With two inputs the report of input 0 ends where 'Input #1' begins."""
        _, returned, completing = self.feed_all(_lines(STDERR_TWO_INPUTS))
        self.assertEqual(returned, [StreamFacts("h264", ("aac",), (), 640, 360, 25.0)])
        self.assertEqual(completing, "Input #1, mpegts, from 'mpeg2.ts':")

    def test_second_of_two_inputs(self):
        """input_index selects another input's streams."""
        _, [facts], _ = self.feed_all(_lines(STDERR_TWO_INPUTS), StreamReportParser(input_index=1))
        self.assertEqual((facts.video_codec, facts.audio_codecs), ("mpeg2video", ("mp2",)))

    def test_press_q_completes(self):
        """'Press [q] to stop' ends the report when no other marker came."""
        lines = _lines(STDERR_REMUX.decode())[:8] + [PRESS_Q]
        _, returned, completing = self.feed_all(lines)
        self.assertEqual(len(returned), 1)
        self.assertEqual(completing, PRESS_Q)

    def test_stats_line_completes(self):
        """A first 'frame=' stats line ends the report too."""
        lines = _lines(STDERR_REMUX.decode())
        lines = lines[:8] + [line for line in lines if line.startswith("frame=")]
        _, returned, completing = self.feed_all(lines)
        self.assertEqual(len(returned), 1)
        self.assertTrue(completing.startswith("frame=    1 "))

    def test_audio_stats_line_completes(self):
        """Audio-only stats lines start with 'size=' and end the report too."""
        lines = _lines(STDERR_AUDIO_ONLY)
        lines = lines[:7] + [lines[-1]]
        _, returned, completing = self.feed_all(lines)
        self.assertEqual(returned, [StreamFacts(audio_codecs=("aac",))])
        self.assertTrue(completing.startswith("size=N/A time=00:00:00.02 "))

    def test_markers_before_any_input_are_ignored(self):
        """Without an 'Input #0' line nothing completes (e.g. open failed)."""
        parser, returned, _ = self.feed_all(
            ["[tcp @ 0x562e2103ef80] Connection to tcp://127.0.0.1:1 failed: Connection refused",
             "http://127.0.0.1:1/x.ts: Connection refused", "Stream mapping:", PRESS_Q])
        self.assertEqual(returned, [])
        self.assertFalse(parser.complete)
        self.assertEqual(parser.facts, StreamFacts())

    def test_odd_spacing(self):
        """Extra indentation and trailing blanks do not matter."""
        _, [facts], _ = self.feed_all([
            "Input #0, mpegts, from 'x':",
            "      Stream #0:0[0x100]: Video: h264 (Main),yuv420p(tv, top first),1920x1080 [SAR 1:1 DAR 16:9],50 fps, 50 tbr, 90k tbn   ",
            "\tStream #0:1[0x101](deu): Audio: mp2, 48000 Hz, stereo, fltp, 192 kb/s",
            "Stream mapping:",
        ])
        self.assertEqual(facts, StreamFacts("h264", ("mp2",), (), 1920, 1080, 50.0))


class JudgeTests(SynchronousTestCase):
    """judge says whether an input is usable, and why not."""

    def test_usable(self):
        """Normal channels (copyable or not) pass."""
        for text in [PROBE_H264_AAC, PROBE_MPEG2_MP2, PROBE_HEVC_AC3]:
            self.assertIsNone(judge(facts_from_ffprobe_json(text)))

    def test_no_streams(self):
        """Nothing at all."""
        self.assertEqual(judge(StreamFacts()), "no streams")
        self.assertEqual(judge(facts_from_ffprobe_json(PROBE_FAILED)), "no streams")

    def test_audio_only(self):
        """Radio streams are not TV channels, cover art or not."""
        self.assertEqual(judge(facts_from_ffprobe_json(PROBE_AUDIO_ONLY)), "audio only (no video stream)")
        self.assertEqual(judge(facts_from_ffprobe_json(PROBE_COVER_ART)), "audio only (no video stream)")

    def test_data_only(self):
        """Only data streams."""
        self.assertEqual(judge(facts_from_ffprobe_json(PROBE_DATA_ONLY)), "no audio or video streams (data only)")

    def test_unknown_video_codec(self):
        """'none', 'unknown' and a missing codec name are rejected."""
        for codec in ["none", "unknown", ""]:
            facts = StreamFacts(video_codec=codec, audio_codecs=("aac",), width=720, height=576)
            self.assertEqual(judge(facts), "unknown video codec")

    def test_no_picture_size(self):
        """A video stream ffmpeg could not decode a picture from is rejected."""
        self.assertEqual(judge(facts_from_ffprobe_json(PROBE_UNDECODABLE)), "video size unknown (no decodable picture)")

    def test_video_without_audio_is_usable(self):
        """A silent channel still plays."""
        self.assertIsNone(judge(StreamFacts(video_codec="h264", width=640, height=360)))


class NeedsTranscodeTests(SynchronousTestCase):
    """needs_transcode says what cannot be copied into HLS."""

    def test_copyable(self):
        """h264/hevc with aac/mp3/ac3/eac3 are copied."""
        for video in ["h264", "hevc"]:
            for audio in ["aac", "mp3", "ac3", "eac3"]:
                facts = StreamFacts(video_codec=video, audio_codecs=(audio,))
                self.assertEqual(needs_transcode(facts), (False, False), (video, audio))

    def test_broadcast_mpeg2(self):
        """MPEG-2 video and MP2 audio both need re-encoding."""
        self.assertEqual(needs_transcode(facts_from_ffprobe_json(PROBE_MPEG2_MP2)), (True, True))

    def test_one_bad_audio_track(self):
        """One non-HLS audio track is enough to re-encode audio."""
        facts = StreamFacts(video_codec="h264", audio_codecs=("aac", "mp2"))
        self.assertEqual(needs_transcode(facts), (False, True))

    def test_other_audio_codecs(self):
        """LATM AAC, Opus and DTS are not carried as-is."""
        for audio in ["aac_latm", "opus", "dts"]:
            self.assertEqual(needs_transcode(StreamFacts("h264", (audio,))), (False, True))

    def test_missing_kinds_need_nothing(self):
        """No video or no audio: nothing to re-encode for that kind."""
        self.assertEqual(needs_transcode(facts_from_ffprobe_json(PROBE_AUDIO_ONLY)), (False, False))
        self.assertEqual(needs_transcode(StreamFacts(video_codec="mpeg2video")), (True, False))
        self.assertEqual(needs_transcode(StreamFacts()), (False, False))


class ClassifyTests(SynchronousTestCase):
    """classify_stderr_line turns ffmpeg messages into events."""

    def test_real_lines(self):
        """Each captured line gets the expected kind, detail and fatality."""
        for line, kind, detail, fatal in CLASSIFIED_LINES:
            event = classify_stderr_line(line)
            self.assertIsInstance(event, Event, line)
            self.assertEqual((event.kind, event.detail, event.fatal), (kind, detail, fatal), line)

    def test_uninteresting_lines(self):
        """Report, stats, reading-side and shutdown lines are not events."""
        for line in UNCLASSIFIED_LINES:
            self.assertIsNone(classify_stderr_line(line), line)

    def test_every_kind_is_covered(self):
        """The fixtures exercise every event kind."""
        self.assertEqual({kind for _, kind, _, _ in CLASSIFIED_LINES}, set(EventKind))

    def test_event_line_is_masked(self):
        """Event.line keeps the whole message but never the credentials."""
        event = classify_stderr_line(
            "http://127.0.0.1:8080/live/alice/s3cret/1234.ts: Server returned 403 Forbidden (access denied)")
        self.assertEqual(event.line, "http://127.0.0.1:8080/live/***/***/1234.ts: Server returned 403 Forbidden (access denied)")
        event = classify_stderr_line(
            "[http @ 0x56486305a1c0] Will reconnect at 0 in 0 second(s), error=Connection reset by peer.")
        self.assertEqual(event.line, "[http @ 0x56486305a1c0] Will reconnect at 0 in 0 second(s), error=Connection reset by peer.")

    def test_level_tags(self):
        """'[error] ' and '[warning] ' tags change nothing, fatality included."""
        event = classify_stderr_line("[error] http://127.0.0.1:1/x.ts: Connection refused")
        self.assertEqual((event.kind, event.fatal), (EventKind.CONNECTION_FAILED, True))
        event = classify_stderr_line("[mpegts @ 0x55dfbe5f8ac0] [warning] Packet corrupt (stream = 0, dts = 270000).")
        self.assertEqual((event.kind, event.fatal), (EventKind.CORRUPT, False))

    def test_component_lines_are_not_input_reports(self):
        """Only ffmpeg's own context-free '<input>: <error>' line gives up on
        the input; a component message of that shape is not read as one.
        (Synthetic line: 5.1 printed none of this shape in our captures.)"""
        self.assertIsNone(classify_stderr_line("[tls @ 0x55dfbe5f9400] 127.0.0.1:443: Connection reset by peer"))

    def test_surrounding_whitespace(self):
        """A line with its \\r or padding still attached classifies the same."""
        event = classify_stderr_line("  [hls @ 0x558f704759c0] Failed to reload playlist 0  \r\n")
        self.assertEqual(event.kind, EventKind.PLAYLIST_RELOAD_FAILED)

    def test_newer_ffmpeg_spellings(self):
        """'Non-monotonic DTS' and the 6.1+ input error lines are understood."""
        event = classify_stderr_line(
            "[mpegts @ 0x55bd47520f40] Non-monotonic DTS in output stream 0:0; previous: 1922400, "
            "current: 126000; changing to 1922401. This may result in incorrect timestamps in the output file.")
        self.assertEqual(event.kind, EventKind.CORRUPT)
        event = classify_stderr_line("[in#0 @ 0x5581d2c3e340] Error opening input: Connection refused")
        self.assertEqual((event.kind, event.fatal), (EventKind.CONNECTION_FAILED, True))
        event = classify_stderr_line("[in#0/mpegts @ 0x5581d2c3e340] Error during demuxing: Input/output error")
        self.assertEqual((event.kind, event.detail, event.fatal), (EventKind.IO_ERROR, "Input/output error", True))

    def test_other_io_messages(self):
        """Other spellings of timeouts and I/O errors."""
        cases = [
            ("http://127.0.0.1:8765/x.ts: Operation timed out", EventKind.READ_TIMEOUT),
            ("http://127.0.0.1:8765/x.ts: End of file", EventKind.IO_ERROR),
            ("[tcp @ 0x55cb854800c0] Connection to tcp://127.0.0.1:8766 failed (Connection refused), trying next address",
             EventKind.CONNECTION_FAILED),
            ("[tcp @ 0x55cb854800c0] Failed to resolve hostname tv.invalid: Name or service not known",
             EventKind.CONNECTION_FAILED),
        ]
        for line, kind in cases:
            self.assertEqual(classify_stderr_line(line).kind, kind, line)

    def test_buffering_kinds(self):
        """Stalls count as buffering; failures, corruption and output do not."""
        self.assertEqual(
            BUFFERING_KINDS,
            {EventKind.RECONNECT, EventKind.READ_TIMEOUT, EventKind.IO_ERROR,
             EventKind.PLAYLIST_RELOAD_FAILED, EventKind.SEGMENT_FAILED},
        )
        self.assertIsInstance(BUFFERING_KINDS, frozenset)

    def test_whole_session(self):
        """A captured remux yields only SEGMENT_OPENED events, in order."""
        events = [classify_stderr_line(line) for line in LineBuffer().feed(STDERR_REMUX)]
        paths = [event.detail for event in events if event is not None]
        self.assertEqual(paths, ["out/name_00000.ts", "out/x.m3u8.tmp", "out/name_00001.ts",
                                 "out/x.m3u8.tmp", "out/name_00002.ts", "out/x.m3u8.tmp"])


class ProgressTests(SynchronousTestCase):
    """ProgressParser reads ffmpeg -progress output."""

    def test_hls_sample(self):
        """Seven blocks; N/A becomes None; only the last one is 'ended'."""
        blocks = ProgressParser().feed(PROGRESS_HLS_X264)
        self.assertEqual(len(blocks), 7)
        self.assertEqual(blocks[0], Progress(frame=1, fps=0.0, out_time_us=0))
        self.assertEqual(blocks[1].speed, 0.0)  # "speed=   0x"
        self.assertEqual(
            blocks[-1],
            Progress(frame=75, fps=24.45, bitrate_kbps=None, total_size=None,
                     out_time_us=2920000, speed=0.952, ended=True),
        )
        self.assertEqual([block.ended for block in blocks], [False] * 6 + [True])

    def test_any_chunking(self):
        """Byte-by-byte and odd-sized chunks give the same blocks as one feed."""
        whole = ProgressParser().feed(PROGRESS_HLS_X264)
        for size in [1, 7, 100]:
            parser = ProgressParser()
            blocks = []
            for index in range(0, len(PROGRESS_HLS_X264), size):
                blocks += parser.feed(PROGRESS_HLS_X264[index:index + size])
            self.assertEqual(blocks, whole, size)

    def test_block_emitted_only_when_complete(self):
        """Nothing comes out until 'progress=' ends the block."""
        parser = ProgressParser()
        head, tail = PROGRESS_MPEGTS.split(b"progress=")
        self.assertEqual(parser.feed(head), [])
        self.assertEqual(parser.feed(b"progress="), [])
        self.assertEqual(len(parser.feed(tail)), 1)

    def test_bitrate_and_size(self):
        """kbits/s and total_size are parsed when the muxer reports them."""
        [block] = ProgressParser().feed(PROGRESS_MPEGTS)
        self.assertEqual(block, Progress(28, 27.55, 1036.9, 132728, 1024000, 1.01, False))

    def test_padding_and_exponent(self):
        """' 996.9kbits/s' and '3.8e+03x' parse."""
        [block] = ProgressParser().feed(PROGRESS_FAST)
        self.assertEqual((block.bitrate_kbps, block.speed, block.ended), (996.9, 3800.0, True))

    def test_negative_times(self):
        """-copyts can give negative out_time_us; it is kept as is."""
        [block] = ProgressParser().feed(PROGRESS_COPYTS)
        self.assertEqual((block.out_time_us, block.total_size, block.speed), (-1400011, 0, None))

    def test_all_not_available(self):
        """Every field can be N/A (or missing) without raising."""
        [block] = ProgressParser().feed(
            b"frame=N/A\nfps=N/A\nbitrate=N/A\ntotal_size=N/A\nout_time_us=N/A\nspeed=N/A\nprogress=continue\n")
        self.assertEqual(block, Progress())
        self.assertEqual(ProgressParser().feed(b"progress=end\n"), [Progress(ended=True)])

    def test_garbage_is_ignored(self):
        """Lines without '=' and unparseable values do not break parsing."""
        [block] = ProgressParser().feed(
            b"\x00\xffjunk\nframe=12\nfps=fast\n=\nspeed=x\r\nprogress=continue\r\n")
        self.assertEqual((block.frame, block.fps, block.speed), (12, None, None))

    def test_blocks_do_not_leak(self):
        """A value from one block is not carried into the next."""
        blocks = ProgressParser().feed(PROGRESS_MPEGTS + b"frame=29\nprogress=continue\n")
        self.assertEqual(blocks[1], Progress(frame=29))
