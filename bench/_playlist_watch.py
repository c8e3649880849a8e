"""
What bench/playback.py sees of the channel's live playlist, polled like a
fast player: the target durations it states, how much media it lists, and
whether it keeps RFC 8216's promises over time (a discontinuity tag stays in
front of its segment while that segment is listed, the discontinuity
sequence counts the ones that left, a segment keeps its media sequence
number, a segment that left stays fetchable for its duration plus the
playlist's).

:func:`parse_playlist` and :class:`PlaylistChecker` are plain functions over
text and times; :class:`PlaylistWatcher` polls the daemon with them.

Run on its own it does nothing (``make bench`` runs every bench/*.py).
"""

import time


def parse_playlist(text):
    """
    The facts of one media playlist: ``target`` (int or None),
    ``media_sequence``, ``discontinuity_sequence``, ``endlist`` and
    ``segments``: ``[(uri, extinf seconds, discontinuity before it)]``.
    """
    out = {"target": None, "media_sequence": 0, "discontinuity_sequence": 0, "endlist": False,
           "segments": [], "valid": text.startswith("#EXTM3U")}
    extinf, disc = None, False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#EXT-X-TARGETDURATION:"):
            out["target"] = int(float(line.split(":", 1)[1]))
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            out["media_sequence"] = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE:"):
            out["discontinuity_sequence"] = int(line.split(":", 1)[1])
        elif line == "#EXT-X-DISCONTINUITY":
            disc = True
        elif line == "#EXT-X-ENDLIST":
            out["endlist"] = True
        elif line.startswith("#EXTINF:"):
            extinf = float(line[len("#EXTINF:"):].split(",")[0])
        elif not line.startswith("#"):
            out["segments"].append((line, extinf, disc))
            extinf, disc = None, False
    return out


class PlaylistChecker:
    """
    Feeds on successive playlists (``feed(t, text)``) and keeps what a
    report needs; every list holds ``(time, ...)`` tuples.
    """

    def __init__(self):
        self.polls = 0
        self.targets = {}  # target duration -> first time seen
        self.durations = []  # (t, listed seconds, segment count, target)
        self.growth = []  # (t, [EXTINF of every listed segment]) whenever the list changed, first 60 s
        self.over_target = []  # (t, uri, extinf, target)
        self.vanished_discontinuities = []  # (t, uri)
        self.sequence_breaks = []  # (t, text)
        self.discontinuity_sequence_breaks = []  # (t, text)
        self.shrinks = []  # (t, listed, 3 x target) after the window once held 3 targets
        # (uri, t last listed, t first absent, extinf, seconds the playlist
        # listed once it had gone)
        self.left = []
        self.endlist = []  # t
        self.discontinuities = 0
        self._reached_three = False
        self._last = None
        self._last_t = None
        self._sequence = {}  # uri -> media sequence number
        self._tagged = {}  # uri -> whether listed with a discontinuity tag
        self._seen_over = set()

    def feed(self, t, text):
        """
        Take in the playlist fetched at ``t``; returns the list of segments
        that left since the previous one (``self.left`` entries).
        """
        p = parse_playlist(text)
        self.polls += 1
        target = p["target"]
        if target is not None:
            self.targets.setdefault(target, t)
        listed = sum(d or 0.0 for _, d, _ in p["segments"])
        self.durations.append((t, listed, len(p["segments"]), target))
        if p["endlist"]:
            self.endlist.append(t)
        shape = [round(d or 0.0, 2) for _, d, _ in p["segments"]]
        if len(self.growth) < 12 and (not self.growth or self.growth[-1][1] != shape):
            self.growth.append((t, shape))
        if target is not None:
            if listed >= 3 * target - 1e-6:
                self._reached_three = True
            elif self._reached_three and p["segments"]:
                self.shrinks.append((t, listed, 3 * target))
        for index, (uri, extinf, disc) in enumerate(p["segments"]):
            sequence = p["media_sequence"] + index
            if target is not None and extinf is not None and round(extinf) > target \
                    and uri not in self._seen_over:
                self._seen_over.add(uri)
                self.over_target.append((t, uri, extinf, target))
            known = self._sequence.setdefault(uri, sequence)
            if known != sequence:
                self.sequence_breaks.append((t, f"{uri} was #{known}, now #{sequence}"))
                self._sequence[uri] = sequence
            if uri not in self._tagged:
                self._tagged[uri] = disc
                self.discontinuities += disc
            elif self._tagged[uri] and not disc:
                self.vanished_discontinuities.append((t, uri))
                self._tagged[uri] = False
        left = []
        if self._last is not None:
            now_listed = {uri for uri, _, _ in p["segments"]}
            gone = [(uri, d, disc) for uri, d, disc in self._last["segments"] if uri not in now_listed]
            for uri, d, disc in gone:
                entry = (uri, self._last_t, t, d or 0.0, listed)
                self.left.append(entry)
                left.append(entry)
            if p["segments"] and self._last["segments"]:
                expected = self._last["discontinuity_sequence"] + sum(
                    1 for uri, _, _ in gone if self._tagged.get(uri))
                if p["discontinuity_sequence"] != expected:
                    self.discontinuity_sequence_breaks.append(
                        (t, f"DISCONTINUITY-SEQUENCE {self._last['discontinuity_sequence']} -> "
                            f"{p['discontinuity_sequence']} while {len(gone)} segment(s) left "
                            f"(expected {expected})"))
        self._last, self._last_t = p, t
        return left


class PlaylistWatcher:
    """
    Polls ``url`` every ``interval`` s (each request with a deadline),
    feeds a :class:`PlaylistChecker`, and HEADs every segment that leaves
    the playlist just before the end of the time it must stay fetchable
    (its duration plus the playlist's, counted from the last poll that
    still listed it, so a 404 there breaks the rule for certain).
    """

    def __init__(self, reactor, url, interval=0.5, timeout=20.0):
        self.reactor = reactor
        self.url = url
        self.base = url.rsplit("/", 1)[0]
        self.interval = interval
        self.timeout = timeout
        self.checker = PlaylistChecker()
        self.failures = []  # (t, text)
        self.retention = []  # (t, uri, code, seconds after it was last listed)
        self.first_answer = None
        self._running = False
        self._loop = None
        self._pending = set()

    def start(self, started):
        from twisted.internet import defer, task

        self._running = True
        self.started = started

        @defer.inlineCallbacks
        def loop():
            while self._running:
                begun = time.time()
                yield self._poll()
                wait = max(0.0, self.interval - (time.time() - begun))
                yield task.deferLater(self.reactor, wait, lambda: None)

        self._loop = loop()
        self._loop.addErrback(lambda f: self.failures.append((time.time(), f"watcher stopped: {f.value!r}")))
        return self._loop

    def _poll(self):
        import treq
        from twisted.internet import defer

        @defer.inlineCallbacks
        def go():
            t = time.time()
            try:
                response = yield treq.get(self.url, persistent=False, timeout=self.timeout)
                text = yield response.text()
            except Exception as e:
                self.failures.append((t, f"GET playlist failed after {time.time() - t:.1f} s: "
                                         f"{type(e).__name__}: {e}"))
                return
            now = time.time()
            if response.code != 200:
                self.failures.append((t, f"GET playlist answered {response.code}: {text.strip()[:160]}"))
                return
            if self.first_answer is None:
                self.first_answer = now
            for uri, last_listed, _, extinf, listed in self.checker.feed(now, text):
                due = last_listed + extinf + listed - 0.3
                self._schedule_head(uri, last_listed, max(0.0, due - time.time()))

        return go()

    def _schedule_head(self, uri, last_listed, delay):
        import treq
        from twisted.internet import defer, task

        @defer.inlineCallbacks
        def head():
            yield task.deferLater(self.reactor, delay, lambda: None)
            url = uri if uri.startswith("http") else f"{self.base}/{uri}"
            t = time.time()
            try:
                response = yield treq.head(url, persistent=False, timeout=5)
                yield response.content()
                code = response.code
            except Exception as e:
                code = f"{type(e).__name__}"
            self.retention.append((t, uri, code, t - last_listed))

        d = head()
        self._pending.add(d)
        d.addBoth(lambda r: self._pending.discard(d))

    def stop(self):
        """Stop polling; fires when the poll in flight is done."""
        from twisted.internet import defer

        self._running = False
        for d in list(self._pending):
            d.cancel()
        return self._loop if self._loop is not None else defer.succeed(None)


def summarize(watcher, t0):
    """
    Report lines (strings) about the playlist seen by ``watcher``; ``t0``
    is the moment playback was requested.
    """
    c = watcher.checker
    lines = []
    if not c.durations:
        lines.append("no playlist was ever answered")
        for t, text in watcher.failures[:5]:
            lines.append(f"  +{t - t0:.1f} s {text}")
        return lines
    targets = ", ".join(f"{k} (first at +{v - t0:.1f} s)" for k, v in sorted(c.targets.items(), key=lambda kv: kv[1]))
    lines.append(f"polled {c.polls} times; EXT-X-TARGETDURATION seen: {targets or 'none'}"
                 + ("  <- CHANGED" if len(c.targets) > 1 else ""))
    listed = [d for _, d, _, _ in c.durations]
    steady = [d for t, d, _, _ in c.durations if t - t0 > 30]
    lines.append(f"listed duration: min {min(listed):.1f} s, max {max(listed):.1f} s over the run"
                 + (f"; after the first 30 s min {min(steady):.1f} s, max {max(steady):.1f} s" if steady else ""))
    target = max(c.targets) if c.targets else None
    if target is not None:
        reached = next((t for t, d, _, td in c.durations if td and d >= 3 * td - 1e-6), None)
        lines.append(f"3 x target ({3 * target} s) first listed "
                     + (f"at +{reached - t0:.1f} s" if reached else "never"))
    lines.append("window at start-up (when it changed; EXTINF of each listed segment): " + "; ".join(
        f"+{t - t0:.1f} s [{', '.join('%g' % d for d in shape)}]" for t, shape in c.growth[:8]))
    if c.shrinks:
        worst = min(c.shrinks, key=lambda s: s[1])
        lines.append(f"window fell below 3 target durations after having reached it in {len(c.shrinks)} "
                     f"poll(s); lowest {worst[1]:.1f} s at +{worst[0] - t0:.1f} s  <- RFC 8216 6.2.2")
    else:
        lines.append("window never fell below 3 target durations once it had reached them")
    if c.over_target:
        t, uri, extinf, td = c.over_target[0]
        lines.append(f"{len(c.over_target)} segment(s) with EXTINF rounding above the target, first "
                     f"{uri} {extinf:.3f} s > {td} at +{t - t0:.1f} s  <- RFC 8216 4.3.3.1")
    else:
        lines.append("every EXTINF rounds to at most the target duration")
    lines.append(f"discontinuity tags seen: {c.discontinuities}; vanished while their segment was still "
                 f"listed: {len(c.vanished_discontinuities)}"
                 + "".join(f"; {uri} at +{t - t0:.1f} s" for t, uri in c.vanished_discontinuities[:3]))
    for t, text in (c.discontinuity_sequence_breaks[:3] + c.sequence_breaks[:3]):
        lines.append(f"  +{t - t0:.1f} s {text}")
    if c.endlist:
        lines.append(f"#EXT-X-ENDLIST appeared (first at +{c.endlist[0] - t0:.1f} s)")
    checked = watcher.retention
    bad = [r for r in checked if r[2] != 200]
    lines.append(f"segments that left, HEAD just before their retention ends: {len(checked)} checked, "
                 f"{len(bad)} not fetchable"
                 + "".join(f"; {uri} {code} at {ago:.1f} s after last listed" for _, uri, code, ago in bad[:3]))
    if watcher.failures:
        lines.append(f"{len(watcher.failures)} failed playlist request(s):")
        for t, text in watcher.failures[:5]:
            lines.append(f"  +{t - t0:.1f} s {text}")
    return lines


if __name__ == "__main__":
    print("bench/_playlist_watch.py: a helper module of bench/playback.py; nothing to run on its own.")
