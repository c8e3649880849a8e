"""
Child processes for bench/playback.py: spawned under Twisted with every
output line time-stamped on arrival, stopped TERM-then-KILL with a deadline,
and a final sweep that kills whatever of ours is still alive.

Run on its own it does nothing (``make bench`` runs every bench/*.py).
"""

import ctypes
import os
import shutil
import signal
import sys
import time

import _common  # bench/ is on the path as the script's folder

PR_SET_CHILD_SUBREAPER = 36

_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def with_pdeathsig(argv):
    """
    ``argv`` under ``setpriv --pdeathsig KILL``: the child dies with the
    bench even after a ``kill -9`` of the bench.
    """
    return ([_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []) + list(argv)


def become_subreaper():
    """
    Make this process the parent of its orphaned descendants (Chromium's
    helpers, a daemon's leftover ffmpeg), so :func:`sweep` can find them.
    Returns whether it worked.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stat(pid):
    fields = _common.stat_fields(pid)
    return None if fields is None else (fields[0], int(fields[1]))  # state, parent pid


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def descendants(root=None):
    """
    ``{pid: command line}`` of every live (not zombie) process below
    ``root`` (default: this process).
    """
    root = os.getpid() if root is None else root
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[0] != "Z":
                parents[int(entry)] = stat[1]
    found, frontier = {}, {root}
    while frontier:
        nxt = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        for pid in nxt:
            found[pid] = _cmdline(pid)
        frontier = nxt
    return found


def sweep(grace=3.0):
    """
    TERM every live descendant, KILL those still there after ``grace`` s;
    reap what we can.  Returns ``{pid: command line}`` of what was found.
    """
    found = descendants()
    for pid in found:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and descendants():
        time.sleep(0.1)
    for pid in descendants():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.1)
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    return found


class Child:
    """
    A child process run by the reactor.  ``on_line(fd, wall_time, text)``
    gets every output line (fd 1 or 2) as it arrives (also written to
    ``log_path`` when given); ``ended`` fires with ``(exit code, signal)``.
    """

    def __init__(self, reactor, name, argv, on_line, env=None, path=None, stdin=False, log_path=None):
        from twisted.internet import defer, protocol

        self.reactor = reactor
        self.name = name
        self.ended = defer.Deferred()
        self.exit = None
        self.started = time.time()
        self.ended_at = None
        outer = self
        buffers = {1: b"", 2: b""}
        log = open(log_path, "w", encoding="utf-8") if log_path else None

        def line(fd, t, text):
            if log is not None:
                log.write(f"{t:.3f} {fd} {text}\n")
            on_line(fd, t, text)

        class Proto(protocol.ProcessProtocol):
            def childDataReceived(self, fd, data):
                now = time.time()
                buffers[fd] = buffers.get(fd, b"") + data
                *lines, buffers[fd] = buffers[fd].split(b"\n")
                for raw in lines:
                    line(fd, now, raw.rstrip(b"\r").decode("utf-8", "replace"))

            def processEnded(self, reason):
                now = time.time()
                for fd, rest in buffers.items():
                    if rest.strip():
                        line(fd, now, rest.decode("utf-8", "replace"))
                if log is not None:
                    log.close()
                outer.ended_at = now
                outer.exit = (getattr(reason.value, "exitCode", None), getattr(reason.value, "signal", None))
                outer.ended.callback(outer.exit)

        self.transport = reactor.spawnProcess(
            Proto(), with_pdeathsig(argv)[0], with_pdeathsig(argv),
            env=dict(os.environ) if env is None else env, path=path,
            childFDs={0: "w", 1: "r", 2: "r"})
        if not stdin:
            self.transport.closeStdin()
        self.pid = self.transport.pid

    @property
    def running(self):
        return not self.ended.called

    def write(self, data):
        """Send ``data`` (bytes) to the child's stdin, if it still runs."""
        if self.running:
            self.transport.write(data)

    def signal(self, name):
        try:
            self.transport.signalProcess(name)
        except Exception:  # already gone
            pass

    def stop(self, grace=3.0, first="TERM"):
        """
        Signal ``first``, then KILL after ``grace`` s; a Deferred firing
        with the exit once it has exited (never fails).
        """
        from twisted.internet import defer

        if not self.running:
            return defer.succeed(self.exit)
        self.signal(first)
        killer = self.reactor.callLater(grace, self.signal, "KILL")
        d = defer.Deferred()

        def done(result):
            if killer.active():
                killer.cancel()
            d.callback(result)
            return result

        self.ended.addBoth(done)
        return d


def describe_exit(exit):
    """``(code, signal)`` as words."""
    if exit is None:
        return "still running"
    code, sig = exit
    if sig is not None:
        try:
            return f"ended by {signal.Signals(sig).name}"
        except ValueError:
            return f"ended by signal {sig}"
    return f"exit code {code}"


if __name__ == "__main__":
    print("bench/_procs.py: a helper module of bench/playback.py; nothing to run on its own.")
