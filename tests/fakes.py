"""
A fake reactor for process wiring: a Clock whose ``spawnProcess`` records
each child instead of running it, so tests play ffmpeg's part by hand.
"""

from twisted.internet import error
from twisted.internet.task import Clock
from twisted.python.failure import Failure


class FakeProcess:
    """
    The transport of one recorded child.  ``signals`` lists what was sent;
    :meth:`exit` ends it as the real process would.
    """

    def __init__(self, reactor, protocol, argv, env, fds):
        self.reactor = reactor
        self.protocol = protocol
        self.argv = argv
        self.env = env
        self.fds = fds
        self.signals = []
        self.pid = 10000 + len(reactor.processes)
        self.exited = False

    @property
    def program(self):
        """
        The program name, skipping the setpriv wrapper.
        """
        argv = self.argv
        if argv and argv[0].endswith("setpriv"):
            argv = argv[argv.index("--") + 1 :]
        return argv[0].rsplit("/", 1)[-1]

    @property
    def command(self):
        """
        The argv without the setpriv wrapper.
        """
        argv = self.argv
        if argv and argv[0].endswith("setpriv"):
            argv = argv[argv.index("--") + 1 :]
        return argv

    def signalProcess(self, name):
        if self.exited:
            raise error.ProcessExitedAlready()
        self.signals.append(name)
        # KILL cannot be ignored; TERM only when the test says so.
        if self.reactor.obedient or name == "KILL":
            self.exit(signal=15 if name == "TERM" else 9)

    def exit(self, code=0, signal=None):
        """
        End the process with exit ``code`` or by ``signal``.
        """
        if self.exited:
            return
        self.exited = True
        if signal is None and code == 0:
            reason = Failure(error.ProcessDone(0))
        else:
            reason = Failure(error.ProcessTerminated(exitCode=None if signal else code, signal=signal))
        self.protocol.processEnded(reason)

    def stderr(self, text):
        """
        The child writes ``text`` to its standard error.
        """
        self.protocol.childDataReceived(2, text.encode())

    def write_fd(self, fd, text):
        """
        The child writes ``text`` to file descriptor ``fd``.
        """
        self.protocol.childDataReceived(fd, text.encode())

    def closeStdin(self):
        pass

    def loseConnection(self):
        pass


class FakeProcessReactor(Clock):
    """
    A Clock that records spawned processes.  With ``obedient`` set (the
    default) a child exits as soon as it is sent a signal.
    """

    def __init__(self):
        super().__init__()
        self.processes = []
        self.obedient = True

    def spawnProcess(self, protocol, executable, args=(), env=None, path=None,
                     uid=None, gid=None, usePTY=0, childFDs=None):
        process = FakeProcess(self, protocol, list(args), env, childFDs)
        self.processes.append(process)
        protocol.makeConnection(process)
        return process

    def running(self, program=None):
        """
        The children that have not exited, optionally only ``program``.
        """
        return [p for p in self.processes if not p.exited and (program is None or p.program == program)]
