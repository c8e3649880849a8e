"""
Spawning, stopping and sweeping up the ffmpeg and ffprobe children.

Children must never outlive the daemon: each is started under
``setpriv --pdeathsig KILL`` where available (it dies with the daemon even
after a ``kill -9``), carries a marker in its environment naming the
daemon's segment folder, and at start-up :func:`sweep_leftovers` kills any
marked process an earlier run left behind.
"""

import os
import shutil
import signal
import sys

from twisted.internet import defer, error, protocol
from twisted.logger import Logger

log = Logger()

# The environment variable that marks our children.
MARKER = "STREAMPROXY_SEGMENT_DIR"

# Seconds between TERM and KILL when stopping a child.
STOP_GRACE_SECONDS = 3.0


def child_environment(segment_dir):
    """
    The environment for a child: the few variables ffmpeg needs (locale,
    proxies, TLS roots) and our marker.  Twisted's default is an empty one.
    """
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")
    env = {k: v for k, v in os.environ.items() if k in keep or k.lower().endswith("_proxy")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env[MARKER] = os.path.abspath(segment_dir)
    return env


def _pdeathsig_prefix():
    if not sys.platform.startswith("linux"):
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


_PREFIX = None


def command_line(argv):
    """
    ``argv`` wrapped so the child is killed when the daemon dies.
    """
    global _PREFIX
    if _PREFIX is None:
        _PREFIX = _pdeathsig_prefix()
    return _PREFIX + list(argv)


class ChildProtocol(protocol.ProcessProtocol):
    """
    Base for our children: ``ended`` fires with the exit reason once the
    process has exited and every pipe is closed; :meth:`stop` asks politely
    then forcefully.
    """

    reactor = None

    def __init__(self):
        self.ended = defer.Deferred()
        self.exited = False
        self.exit_code = None
        self.exit_signal = None
        self._kill_call = None

    def processEnded(self, reason):
        self.exited = True
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.exit_signal = getattr(reason.value, "signal", None)
        if self._kill_call is not None and self._kill_call.active():
            self._kill_call.cancel()
        self._kill_call = None
        self.ended.callback(self)

    def signal(self, name):
        """
        Send signal ``name`` ("TERM", "KILL") if the process still runs.
        """
        if self.transport is None or self.exited:
            return
        try:
            self.transport.signalProcess(name)
        except error.ProcessExitedAlready:
            pass

    def stop(self, grace=STOP_GRACE_SECONDS):
        """
        TERM now, KILL after ``grace`` seconds; returns a Deferred that fires
        once the process has exited.
        """
        if self.exited:
            return defer.succeed(self)
        if self._kill_call is None:
            self.signal("TERM")
            self._kill_call = self.reactor.callLater(grace, self.signal, "KILL")
        d = defer.Deferred()
        self.ended.addBoth(lambda result: (d.callback(self), result)[1])
        return d


def spawn(reactor, child, argv, segment_dir, extra_fds=()):
    """
    Start ``argv`` with ``child`` (a :class:`ChildProtocol`) as its protocol.

    Standard input is closed, standard output and error are read, and each of
    ``extra_fds`` is an additional pipe the child writes to.
    """
    child.reactor = reactor
    fds = {0: "w", 1: "r", 2: "r"}
    for fd in extra_fds:
        fds[fd] = "r"
    argv = command_line(argv)
    return reactor.spawnProcess(
        child, argv[0], argv, env=child_environment(segment_dir), childFDs=fds
    )


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def find_leftovers(segment_dir, proc="/proc"):
    """
    The pids of processes whose environment carries our marker for
    ``segment_dir``: children of an earlier run of this daemon.
    """
    wanted = f"{MARKER}={os.path.abspath(segment_dir)}".encode()
    me = os.getpid()
    pids = []
    try:
        entries = os.listdir(proc)
    except OSError:
        return pids
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        environ = _read(os.path.join(proc, entry, "environ"))
        if wanted in environ.split(b"\0"):
            pids.append(int(entry))
    return pids


def sweep_leftovers(segment_dir):
    """
    Kill children an earlier run of this daemon left behind (after a hard
    kill where pdeathsig was unavailable) and empty the segment folder.
    Blocking but quick; runs once at start-up.
    """
    for pid in find_leftovers(segment_dir):
        try:
            os.kill(pid, signal.SIGKILL)
            log.warn("Killed process {pid} left over from an earlier run", pid=pid)
        except OSError:
            pass
    if os.path.isdir(segment_dir):
        for entry in os.listdir(segment_dir):
            path = os.path.join(segment_dir, entry)
            if os.path.isdir(path) and entry.startswith("ch"):
                shutil.rmtree(path, ignore_errors=True)
    os.makedirs(segment_dir, exist_ok=True)
