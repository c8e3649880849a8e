"""
Shared pieces of the benchmark scripts: the header, statistics, free ports,
process CPU accounting from /proc, and a temporary streamproxy set-up.

Nothing here changes streamproxy; it only starts it the way tests do.
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FFMPEG = "/usr/bin/ffmpeg"
FFPROBE = "/usr/bin/ffprobe"


def ffmpeg_version():
    """
    The first line of ``ffmpeg -version``, shortened to the version.
    """
    try:
        out = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    first = out.splitlines()[0] if out else "unknown"
    parts = first.split()
    return parts[2] if len(parts) > 2 and parts[:2] == ["ffmpeg", "version"] else first


def cores():
    """
    ``(online cores, cores this process may run on)``.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return os.cpu_count(), usable


def header(title, measured, extra=()):
    """
    Print the bench header: what is measured, ffmpeg version, core count.
    """
    online, usable = cores()
    print(f"== {title} ==")
    for line in measured:
        print(f"   {line}")
    print(f"   ffmpeg {ffmpeg_version()}; python {sys.version.split()[0]}; "
          f"{online} cores online ({usable} usable)")
    for line in extra:
        print(f"   {line}")
    sys.stdout.flush()


def summary(values):
    """
    ``(median, min, max)`` of ``values``.
    """
    return statistics.median(values), min(values), max(values)


def fmt_stats(values, unit="s", digits=2):
    """
    ``median X (min Y, max Z, n=N)``.
    """
    med, lo, hi = summary(values)
    return (f"median {med:.{digits}f} {unit} (min {lo:.{digits}f}, max {hi:.{digits}f}, "
            f"n={len(values)})")


def free_port():
    """
    A TCP port of 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stat_fields(pid):
    """
    The fields of /proc/<pid>/stat after the command name (state, parent
    pid, ...; ``fields[11]`` and ``[12]`` are user and system clock ticks),
    or None if the process is gone.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after it start
    # after the last ")".
    return text[text.rindex(")") + 2:].split()


def cpu_seconds(pid):
    """
    User + system CPU seconds of process ``pid`` (all its threads, not its
    children); None if it is gone.
    """
    split = cpu_split(pid)
    return None if split is None else sum(split)


def children(pid):
    """
    The pids whose parent is ``pid``.
    """
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(entry)
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def process_name(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


class Scratch:
    """
    A temporary folder for one bench run (database, segments, ffmpeg output),
    removed by :meth:`cleanup`.
    """

    def __init__(self, name):
        self.path = tempfile.mkdtemp(prefix=f"streamproxy-bench-{name}-")

    def sub(self, *parts):
        path = os.path.join(self.path, *parts)
        os.makedirs(path, exist_ok=True)
        return path

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


def react(main, events, on_error=None):
    """
    Run ``main(reactor)`` under ``task.react``; when it fails, print the last
    failures logged in ``events`` (and call ``on_error``) before exiting
    with its status.
    """
    from twisted.internet import task

    try:
        task.react(main)
    except SystemExit as e:
        if e.code:
            for event in [e for e in events if e.get("log_failure") is not None][-3:]:
                print(event["log_failure"].getTraceback(), file=sys.stderr)
            if on_error is not None:
                on_error()
            raise


def quiet_twisted_logs():
    """
    Keep Twisted's global log from printing (it prints nothing unless an
    observer is started, but a failure logged before the reactor stops would
    otherwise go to stderr); returns the list collecting every event.
    """
    from twisted.logger import globalLogBeginner

    events = []
    globalLogBeginner.beginLoggingTo([events.append], discardBuffer=True,
                                     redirectStandardIO=False)
    return events


def make_config(scratch, port, db_path, **overrides):
    """
    A streamproxy Config for an in-process service tree on 127.0.0.1.
    """
    from streamproxy.config import parse_config

    data = {
        "db_path": db_path,
        "port": port,
        "interface": "127.0.0.1",
        "segment_dir": scratch.sub("segments"),
        "ffmpeg_path": FFMPEG,
        "ffprobe_path": FFPROBE,
    }
    data.update(overrides)
    return parse_config(data)


def alive(pid):
    """
    Whether ``pid`` exists and is not a zombie.
    """
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def cpu_split(pid):
    """
    ``(user, system)`` CPU seconds of ``pid`` (see :func:`cpu_seconds`).
    """
    fields = stat_fields(pid)
    if fields is None:
        return None
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def daemon_config(folder, extra=""):
    """
    Write ``folder``/config.yaml for a daemon on a free port of 127.0.0.1
    with its database ``streams.db`` and segments in ``folder`` (plus the
    YAML lines ``extra``); returns ``(config path, port)``.
    """
    port = free_port()
    path = os.path.join(folder, "config.yaml")
    with open(path, "w") as f:
        f.write(f"port: {port}\ninterface: 127.0.0.1\ndb_path: streams.db\n"
                f"segment_dir: {os.path.join(folder, 'segments')}\n"
                f"ffmpeg_path: {FFMPEG}\nffprobe_path: {FFPROBE}\n{extra}")
    return path, port


def log_tail_printer(out, lines=20):
    """
    A function printing the last ``lines`` lines of the daemon log named
    by ``out["log"]`` to stderr (for when a bench fails).
    """
    def show():
        log = out.get("log")
        if log and os.path.exists(log):
            print("--- daemon log (last lines) ---", file=sys.stderr)
            with open(log, errors="replace") as f:
                print("".join(f.readlines()[-lines:]), file=sys.stderr)

    return show
