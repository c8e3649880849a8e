"""
Failover time: from the moment the playing upstream stalls until the
channel's playlist lists the first segment of the next candidate.

Channel 1 has two candidates on two local upstream streams (tests/upstream.py,
keyframe every 2 s): provider_a quality 1 (tried first) and provider_b
quality 2.  Once the channel is live, provider_a's stream is switched to
``Fault.stall()`` (the connection stays open, no more bytes); a viewer polls
/channel/1/stream.m3u8 every 50 ms, and the clock stops when the playlist
lists a segment whose name carries a new attempt prefix (checked to come
after an #EXT-X-DISCONTINUITY).  Each repetition uses a fresh service tree
(so the failure memory of the last one does not reorder the candidates) and
fresh upstream streams, and stalls at a different point of the stream.
Default settings throughout (buffer_check_interval 5, buffer_threshold 3...).

    python bench/failover_time.py [--runs 3] [--burst 0]   (from the repo root)
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import time  # noqa: E402

import _common  # noqa: E402  (bench/ is on the path as the script's folder)

TARGET_SECONDS = 8.0
POLL = 0.05
RUN_TIMEOUT = 30.0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--burst", type=float, default=0.0,
                        help="seconds the upstream streams send at once on connect (default 0)")
    return parser.parse_args()


def segment_names(text):
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def prefix_of(name):
    return name.rsplit("_", 1)[0]


def main():
    args = parse_args()
    _common.header(
        "failover_time: upstream stall -> playlist lists the next candidate's first segment",
        ["channel 1 = provider_a/1 on upstream stream A, provider_b/2 on stream B "
         f"(local upstream, keyframe every 2 s, burst {args.burst:g} s)",
         "stall = tests.upstream Fault.stall() on A; viewer polls the playlist every 50 ms",
         f"default settings; target: under {TARGET_SECONDS:g} s"],
    )
    events = _common.quiet_twisted_logs()
    scratch = _common.Scratch("failover")
    results = []

    try:
        _common.react(lambda reactor: run_all(reactor, args, scratch, results, events), events)
    finally:
        scratch.cleanup()
    totals = [r["total"] for r in results]
    med, lo, hi = _common.summary(totals)
    print("\n== failover summary ==")
    print(f"failover (stall -> next candidate's first segment in the playlist): median {med:.2f} s, "
          f"max {hi:.2f} s (min {lo:.2f}, n={len(totals)}) -> "
          f"{'OK' if hi < TARGET_SECONDS else 'MISSED'} (target < {TARGET_SECONDS:g} s)")
    detect = [r["detected"] for r in results if r["detected"] is not None]
    start = [r["total"] - r["detected"] for r in results if r["detected"] is not None]
    if detect:
        print(f"  of which stall detection: median {_common.summary(detect)[0]:.2f} s "
              f"(max {max(detect):.2f}); next candidate start to its first segment listed: "
              f"median {_common.summary(start)[0]:.2f} s (max {max(start):.2f})")
    print(f"  viewer-visible gap (last segment of A listed -> first of B listed): median "
          f"{_common.summary([r['gap'] for r in results])[0]:.2f} s; "
          f"discontinuity tag present in every run: "
          f"{'yes' if all(r['discontinuity'] for r in results) else 'NO'}")


def run_all(reactor, args, scratch, results, events):
    from twisted.internet import defer

    from tests.upstream import Upstream

    @defer.inlineCallbacks
    def go():
        upstream = Upstream()
        for i in range(args.runs):
            upstream.add_stream(f"a{i}", burst=args.burst)
            upstream.add_stream(f"b{i}", burst=args.burst)
        upstream.start(reactor)
        try:
            for i in range(args.runs):
                # Stall 3 s, 5 s, 7 s... after going live, so the stall falls at
                # different points of a 6 s segment.
                live_for = 3.0 + 2.0 * (i % 3)
                result = yield one_run(reactor, upstream, scratch, i, live_for, events)
                results.append(result)
                detected = (f"stall detected after {result['detected']:.2f} s ({result['reason']}), "
                            if result["detected"] is not None else "")
                print(f"run {i + 1} (stall {live_for:g} s after going live): {result['total']:.2f} s "
                      f"to {result['new_segment']} | {detected}"
                      f"playlist gap {result['gap']:.2f} s, discontinuity "
                      f"{'yes' if result['discontinuity'] else 'NO'}")
                sys.stdout.flush()
        finally:
            yield upstream.stop()

    return go()


def one_run(reactor, upstream, scratch, index, live_for, events):
    import treq
    from twisted.internet import defer, task

    from streamproxy.tap import build_services
    from tests.helpers import make_database, row
    from tests.upstream import Fault

    @defer.inlineCallbacks
    def go():
        base = scratch.sub(f"run{index}")
        a, b = f"a{index}", f"b{index}"
        db = make_database(os.path.join(base, "streams.db"), [
            row(1, upstream.live_url(a), source="provider_a", quality="1", uniform_name="Bench"),
            row(1, upstream.live_url(b), source="provider_b", quality="2", uniform_name="Bench"),
        ])
        port = _common.free_port()
        config = _common.make_config(scratch, port, db, segment_dir=os.path.join(base, "segments"))
        root, parts = build_services(config, reactor)
        root.startService()
        url = f"http://127.0.0.1:{port}/channel/1/stream.m3u8"
        try:
            while not len(parts["store"].catalog):
                yield task.deferLater(reactor, 0.01, lambda: None)
            response = yield treq.get(url, persistent=False)
            text = yield response.text()
            if response.code != 200:
                raise RuntimeError(f"tune: {response.code} {text.strip()}")
            first_prefix = prefix_of(segment_names(text)[0])
            live_at = reactor.seconds()
            last_a_listed = live_at
            seen = set(segment_names(text))
            # Play normally for a while (polling, as a player does).
            while reactor.seconds() - live_at < live_for:
                yield task.deferLater(reactor, POLL, lambda: None)
                response = yield treq.get(url, persistent=False)
                text = yield response.text()
                for name in segment_names(text):
                    if name not in seen:
                        seen.add(name)
                        last_a_listed = reactor.seconds()
            mark = len(events)
            t_stall = reactor.seconds()
            upstream.set_fault(a, Fault.stall())
            while True:
                now = reactor.seconds()
                if now - t_stall > RUN_TIMEOUT:
                    raise RuntimeError(f"no segment of the next candidate within {RUN_TIMEOUT:g} s")
                response = yield treq.get(url, persistent=False)
                text = yield response.text()
                now = reactor.seconds()
                names = segment_names(text)
                new = [n for n in names if prefix_of(n) != first_prefix]
                if new:
                    break
                for name in names:
                    if name not in seen:
                        seen.add(name)
                        last_a_listed = now
                yield task.deferLater(reactor, POLL, lambda: None)
            lines = text.splitlines()
            position = lines.index(new[0])
            discontinuity = "#EXT-X-DISCONTINUITY" in lines[:position]
            detected, reason = None, None
            for event in events[mark:]:
                if "failed" in event.get("log_format", "") and event.get("reason"):
                    detected, reason = event["log_time"] - t_stall, event["reason"]
                    break
            return {"total": now - t_stall, "new_segment": new[0], "detected": detected,
                    "reason": reason, "gap": now - last_a_listed,
                    "discontinuity": discontinuity}
        finally:
            yield root.stopService()
            end = time.monotonic() + 10
            while (upstream.streams[a].open or upstream.streams[b].open) and time.monotonic() < end:
                yield task.deferLater(reactor, 0.05, lambda: None)

    return go()


if __name__ == "__main__":
    main()
