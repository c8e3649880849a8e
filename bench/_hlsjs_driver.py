"""
hls.js in headless Chromium, driven by Playwright, as a child process of
bench/playback.py (so the browser's driver never shares the bench's
interpreter and reactor).

    python bench/_hlsjs_driver.py --page http://127.0.0.1:P/ [--chromium /usr/bin/chromium]

It opens ``--page`` (served by the bench: :data:`PAGE_HTML` plus hls.js),
prints one JSON object per line on stdout: first ``{"type": "ready", ...}``
(Chromium and hls.js versions, whether MSE takes H.264/AAC), then every
event the page recorded (``{"t": epoch seconds, "type": ..., "data": ...}``).
It reads commands on stdin: ``go <url>`` starts playback of ``url``,
``stop`` (or end of input, or SIGTERM) closes the browser and exits.

Run without arguments (``make bench`` runs every bench/*.py) it does nothing.
"""

import argparse
import json
import select
import signal
import sys
import time

CHROMIUM = "/usr/bin/chromium"
# As tests/test_browser.py, plus autoplay without a gesture (the video is
# muted anyway) and no throttling of a page nobody looks at.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
DRAIN_SECONDS = 0.25

# The page records what a viewer would see: media element events, a 10 Hz
# sample of currentTime / readyState / buffer end, the first presented frame
# (requestVideoFrameCallback), and hls.js's errors, level reloads and
# fragment changes.  Times are Date.now() / 1000 (the same clock as the
# bench's time.time()).  hls.js runs with its defaults; fatal errors get the
# recovery its documentation recommends, as web players do.
PAGE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>hls.js playback bench</title></head>
<body>
<video id="v" muted autoplay playsinline width="320" height="180"></video>
<script src="/hls.min.js"></script>
<script>
(function () {
  "use strict";
  const events = [];
  window.__events = events;
  const now = () => Date.now() / 1000;
  const rec = (type, data) => events.push({t: now(), type: type, data: data === undefined ? null : data});
  const video = document.getElementById("v");
  const bufferEnd = () => {
    const b = video.buffered;
    for (let i = 0; i < b.length; i++) {
      if (b.start(i) <= video.currentTime + 0.1 && video.currentTime <= b.end(i)) return b.end(i);
    }
    return null;
  };
  ["waiting", "playing", "stalled", "pause", "play", "seeking", "seeked", "ended", "loadeddata",
   "canplay", "ratechange"].forEach((name) => {
    video.addEventListener(name, () => rec(name, {ct: video.currentTime}));
  });
  video.addEventListener("error", () => rec("video-error", {
    code: video.error ? video.error.code : null, message: video.error ? video.error.message : null}));
  window.__info = () => ({
    hlsjs: window.Hls ? Hls.version : null,
    hlsjs_supported: window.Hls ? Hls.isSupported() : false,
    h264_aac: window.MediaSource ? MediaSource.isTypeSupported('video/mp4; codecs="avc1.42E01E,mp4a.40.2"') : false,
    frame_callback: typeof video.requestVideoFrameCallback === "function",
    user_agent: navigator.userAgent,
  });
  window.__start = (url) => {
    rec("load", {url: url});
    let frames = 0;
    if (typeof video.requestVideoFrameCallback === "function") {
      const onFrame = (when, meta) => {
        frames += 1;
        if (frames === 1) rec("frame", {ct: video.currentTime, media_time: meta.mediaTime});
        video.requestVideoFrameCallback(onFrame);
      };
      video.requestVideoFrameCallback(onFrame);
    }
    setInterval(() => {
      const end = bufferEnd();
      rec("sample", {ct: video.currentTime, paused: video.paused, rs: video.readyState,
                     ahead: end === null ? 0 : end - video.currentTime, frames: frames});
    }, 100);
    const hls = new Hls();
    window.__hls = hls;
    let mediaRecoveries = 0;
    hls.on(Hls.Events.ERROR, (event, d) => {
      rec("hls-error", {type: d.type, details: d.details, fatal: d.fatal,
                        reason: d.reason || (d.error ? String(d.error) : null),
                        url: d.frag ? d.frag.url : (d.url || null),
                        code: d.response ? d.response.code : null});
      if (!d.fatal) return;
      if (d.type === Hls.ErrorTypes.NETWORK_ERROR) { rec("recovery", "startLoad"); hls.startLoad(); }
      else if (d.type === Hls.ErrorTypes.MEDIA_ERROR && mediaRecoveries < 3) {
        mediaRecoveries += 1; rec("recovery", "recoverMediaError"); hls.recoverMediaError();
      }
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      rec("manifest", null);
      video.play().catch((e) => rec("play-rejected", String(e)));
    });
    hls.on(Hls.Events.LEVEL_LOADED, (event, d) => {
      const det = d.details;
      rec("level", {td: det.targetduration, n: det.fragments.length, total: det.totalduration,
                    start_sn: det.startSN, end_sn: det.endSN, live: det.live,
                    start_cc: det.startCC, end_cc: det.endCC});
    });
    hls.on(Hls.Events.FRAG_CHANGED, (event, d) => {
      rec("frag", {sn: d.frag.sn, cc: d.frag.cc, start: d.frag.start, duration: d.frag.duration});
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  };
  rec("page", null);
})();
</script>
</body></html>
"""


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description="hls.js player for bench/playback.py")
    parser.add_argument("--page", help="URL of the bench's player page")
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args()
    if not args.page:
        print("bench/_hlsjs_driver.py: a helper of bench/playback.py; nothing to run on its own.")
        return 0

    def terminate(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS,
                                             headless=True, timeout=60000)
        try:
            page = browser.new_page()
            page.on("console", lambda m: emit({"t": time.time(), "type": "console",
                                               "data": {"level": m.type, "text": m.text}})
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: emit({"t": time.time(), "type": "pageerror", "data": str(e)}))
            page.on("crash", lambda p: emit({"t": time.time(), "type": "crash", "data": None}))
            page.goto(args.page, timeout=30000)
            page.wait_for_function("() => window.__info !== undefined", timeout=30000)
            info = page.evaluate("() => window.__info()")
            emit({"t": time.time(), "type": "ready", "data": dict(info, chromium=browser.version)})
            while True:
                for event in page.evaluate("() => window.__events.splice(0)"):
                    emit(event)
                readable, _, _ = select.select([sys.stdin], [], [], DRAIN_SECONDS)
                if not readable:
                    continue
                line = sys.stdin.readline()
                if not line or line.strip() == "stop":
                    break
                command, _, rest = line.strip().partition(" ")
                if command == "go":
                    page.evaluate("(url) => window.__start(url)", rest)
            for event in page.evaluate("() => window.__events.splice(0)"):
                emit(event)
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
