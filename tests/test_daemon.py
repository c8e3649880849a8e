"""
End-to-end tests of the daemon as users start it: the twistd plugin, real
``twistd -n streamproxy`` processes, and the ``import-m3u`` tool.
"""

import os
import signal
import socket
import sqlite3
import io
import sys

import treq
from twisted.application.service import IServiceMaker
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.utils import getProcessOutputAndValue
from twisted.plugin import getPlugins
from twisted.trial.unittest import TestCase

from streamproxy.__main__ import main as cli_main
from streamproxy.processes import find_leftovers

from .helpers import make_database, row

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = ["-c", "from twisted.scripts.twistd import run; run()"]


def free_port():
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def child_env():
    """
    The environment for a daemon under test: ours, with the working tree
    first on the import path so the code under test is what runs.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


class Collector(protocol.ProcessProtocol):
    """
    Collects a child's output and fires ``ended`` with its exit status.
    """

    def __init__(self):
        self.output = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback((reason.value.exitCode, reason.value.signal))


@defer.inlineCallbacks
def wait_for_http(url, deadline=15.0):
    """
    Poll ``url`` until it answers, for at most ``deadline`` seconds.
    """
    end = reactor.seconds() + deadline
    while True:
        try:
            response = yield treq.get(url, timeout=2, persistent=False)
            return response
        except Exception:
            if reactor.seconds() > end:
                raise
            yield task.deferLater(reactor, 0.1, lambda: None)


class PluginTests(TestCase):
    """
    twistd finds the plugin.
    """

    def test_plugin_is_discovered(self):
        """
        getPlugins(IServiceMaker) yields a service maker named streamproxy
        that points at our tap module.
        """
        makers = [p for p in getPlugins(IServiceMaker) if p.tapname == "streamproxy"]
        self.assertTrue(makers)
        self.assertEqual(makers[0].module, "streamproxy.tap")

    def test_make_service_starts_nothing(self):
        """
        Building the service tree neither listens nor opens the database.
        """
        from streamproxy.config import parse_config
        from streamproxy.tap import build_services

        path = make_database(os.path.abspath(self.mktemp()))
        config = parse_config({"db_path": path, "port": free_port(), "interface": "127.0.0.1"})
        root, parts = build_services(config)
        self.assertFalse(root.running)
        self.assertIsNone(parts["store"]._pool)
        self.assertIsNone(getattr(parts["listener"], "_port", None))


class StartUpTests(TestCase):
    """
    The service tree just started, answering over loopback while its first
    load of the table is still under way.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_no_false_404_before_the_first_load(self):
        """
        Requests sent right after the start, before the table has been
        read, are answered from it: the playlist lists the channel, the
        playlist index names it; never 404.
        """
        from streamproxy.config import parse_config
        from streamproxy.tap import build_services

        path = make_database(os.path.abspath(self.mktemp()),
                             [row(n, f"http://127.0.0.1:1/{n}.ts") for n in range(1, 2001)])
        port = free_port()
        config = parse_config({"db_path": path, "port": port, "interface": "127.0.0.1",
                               "segment_dir": os.path.abspath(self.mktemp())})
        root, parts = build_services(config)
        root.startService()
        self.addCleanup(root.stopService)
        self.assertFalse(parts["store"].loaded)
        base = f"http://127.0.0.1:{port}"
        responses = yield defer.gatherResults([
            treq.get(f"{base}/m3u/main.m3u", persistent=False),
            treq.get(f"{base}/m3u/", persistent=False),
        ])
        bodies = yield defer.gatherResults([r.text() for r in responses])
        self.assertEqual([r.code for r in responses], [200, 200], bodies)
        self.assertEqual(bodies[0].count("#EXTINF"), 2000)
        self.assertIn("/m3u/main.m3u", bodies[1])


class DaemonTests(TestCase):
    """
    The real daemon under twistd.
    """

    timeout = 60

    def start_daemon(self, folder, arguments):
        """
        Run twistd with ``arguments`` in ``folder``; returns the output
        collector and the process, which is killed at clean-up if still up.
        """
        collector = Collector()
        process = reactor.spawnProcess(
            collector,
            sys.executable,
            [sys.executable] + TWISTD + arguments,
            env=child_env(),
            path=folder,
        )
        self.addCleanup(lambda: collector.ended.called or process.signalProcess("KILL"))
        return collector, process

    @defer.inlineCallbacks
    def assert_clean_stop(self, collector, process, name):
        """
        Send signal ``name`` and check twistd shuts down cleanly (it then
        dies of the signal it received, as Unix programs should).
        """
        process.signalProcess(name)
        status = yield collector.ended
        number = getattr(signal, f"SIG{name}")
        self.assertIn(status, [(0, None), (None, number)], collector.output)
        self.assertIn(b"Server Shut Down", collector.output)

    def config_file(self, text):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "config.yaml")
        with open(path, "w") as f:
            f.write(text)
        return folder, path

    @defer.inlineCallbacks
    def test_serves_a_playlist_and_stops_cleanly(self):
        """
        ``twistd -n streamproxy --config PATH`` serves a playlist from a
        database with rows, and SIGTERM stops it with exit status 0.
        """
        port = free_port()
        folder, path = self.config_file(
            f"port: {port}\ninterface: 127.0.0.1\ndb_path: channels.db\n"
            f"segment_dir: {os.path.abspath(self.mktemp())}\n"
        )
        make_database(
            os.path.join(folder, "channels.db"),
            [row(4, "http://127.0.0.1:1/4.ts", m3u="main", uniform_name="Four")],
            old_style=True,
        )
        collector, process = self.start_daemon(folder, ["-n", "--pidfile=", "streamproxy", "--config", path])
        response = yield wait_for_http(f"http://127.0.0.1:{port}/m3u/main.m3u")
        body = yield response.text()
        self.assertEqual(response.code, 200, collector.output)
        self.assertIn(f"http://127.0.0.1:{port}/channel/4/stream.m3u8", body)
        self.assertIn(",Four", body)
        yield self.assert_clean_stop(collector, process, "TERM")

    @defer.inlineCallbacks
    def test_no_child_outlives_a_hard_kill(self):
        """
        When the daemon is killed with SIGKILL while a channel plays, its
        ffmpeg dies with it (parent-death signal) instead of running on,
        holding the provider's connection.
        """
        from .upstream import Upstream

        upstream = Upstream()
        upstream.add_stream("a", burst=1.0)
        upstream.start(reactor)
        self.addCleanup(upstream.stop)
        port = free_port()
        segments = os.path.abspath(self.mktemp())
        folder, path = self.config_file(
            f"port: {port}\ninterface: 127.0.0.1\ndb_path: channels.db\nsegment_dir: {segments}\n"
        )
        make_database(os.path.join(folder, "channels.db"), [row(4, upstream.live_url("a"))])
        collector, process = self.start_daemon(folder, ["-n", "--pidfile=", "streamproxy", "--config", path])
        yield wait_for_http(f"http://127.0.0.1:{port}/m3u/")
        response = yield treq.get(
            f"http://127.0.0.1:{port}/channel/4/stream.m3u8", timeout=20, persistent=False
        )
        self.assertEqual(response.code, 200)
        yield response.text()
        children = find_leftovers(segments)
        self.assertTrue(children)
        process.signalProcess("KILL")
        yield collector.ended
        deadline = reactor.seconds() + 5
        while find_leftovers(segments) and reactor.seconds() < deadline:
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(find_leftovers(segments), [])

    @defer.inlineCallbacks
    def test_new_database_is_created_from_the_default_config(self):
        """
        Started without --config in a folder holding only a config.yaml, the
        daemon reads ./config.yaml and creates the database next to it.
        """
        port = free_port()
        folder, path = self.config_file(f"port: {port}\ninterface: 127.0.0.1\n")
        collector, process = self.start_daemon(folder, ["-n", "--pidfile=", "streamproxy"])
        response = yield wait_for_http(f"http://127.0.0.1:{port}/refresh_db_cache")
        self.assertEqual(response.code, 200)
        body = yield response.json()
        self.assertEqual(body["channels"], 0)
        self.assertTrue(os.path.exists(os.path.join(folder, "streams.db")))
        yield self.assert_clean_stop(collector, process, "INT")

    @defer.inlineCallbacks
    def test_bad_config_is_one_line_and_non_zero(self):
        """
        A configuration mistake stops twistd before it starts: exit status 1
        and one line naming the key, no traceback.
        """
        folder, path = self.config_file("port: 9090\ninactivty_timeout: 20\n")
        out, err, status = yield getProcessOutputAndValue(
            sys.executable,
            TWISTD + ["-n", "--pidfile=", "streamproxy", "--config", path],
            env=child_env(),
            path=folder,
        )
        self.assertEqual(status, 1)
        self.assertEqual(
            err.decode().strip(),
            f"streamproxy: {path}: unknown key 'inactivty_timeout'; did you mean 'inactivity_timeout'?",
        )
        self.assertNotIn(b"Traceback", out + err)

    @defer.inlineCallbacks
    def test_bad_database_is_one_line_and_non_zero(self):
        """
        A db_path that is not an SQLite file stops twistd with one line
        naming the file.
        """
        folder, path = self.config_file("db_path: notes.txt\n")
        with open(os.path.join(folder, "notes.txt"), "w") as f:
            f.write("shopping list " * 100)
        out, err, status = yield getProcessOutputAndValue(
            sys.executable,
            TWISTD + ["-n", "--pidfile=", "streamproxy", "--config", path],
            env=child_env(),
            path=folder,
        )
        self.assertEqual(status, 1)
        self.assertIn("notes.txt: not an SQLite database", err.decode())
        self.assertNotIn(b"Traceback", out + err)

    @defer.inlineCallbacks
    def test_help_lists_the_options(self):
        """
        ``twistd streamproxy --help`` lists --config.
        """
        out, err, status = yield getProcessOutputAndValue(
            sys.executable, TWISTD + ["streamproxy", "--help"], env=child_env(), path=ROOT
        )
        self.assertIn(b"--config", out)


class ImportToolTests(TestCase):
    """
    ``python -m streamproxy import-m3u`` fills the table from a provider playlist.
    """

    def test_import_groups_sources_into_channels(self):
        """
        Two providers' playlists for the same channels land as candidates of
        the same Channel-id; importing again updates rather than duplicates.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        db = os.path.join(folder, "streams.db")
        playlist = os.path.join(folder, "a.m3u")
        with open(playlist, "w") as f:
            f.write(
                "#EXTM3U\n"
                '#EXTINF:-1 tvg-id="abc.us" tvg-name="ABC" tvg-logo="http://l/abc.png" '
                'group-title="News" tvg-chno="7",ABC\nhttp://127.0.0.1:1/live/u/p/7.ts\n'
                '#EXTINF:-1 tvg-id="nbc.us",NBC\nhttp://127.0.0.1:1/live/u/p/4.ts\n'
            )
        other = os.path.join(folder, "b.m3u")
        with open(other, "w") as f:
            f.write('#EXTM3U\n#EXTINF:-1 tvg-id="abc.us",ABC East\nhttp://127.0.0.1:2/abc\n')
        out = io.StringIO()
        run = lambda *args: cli_main(["import-m3u", *args, "--db", db], out=out)
        self.assertEqual(run(playlist, "--source", "a"), 0)
        self.assertEqual(run(other, "--source", "b", "--quality", "2", "--m3u", "a"), 0)
        self.assertEqual(run(playlist, "--source", "a"), 0)
        self.assertIn("0 streams added, 0 updated, 2 unchanged", out.getvalue().splitlines()[-1])
        connection = sqlite3.connect(db)
        rows = connection.execute(
            'SELECT "Channel-id", "Source", "Stream-quality", "M3U", "Uniform-name", "TV-Logo" '
            "FROM LiveStreams ORDER BY rowid"
        ).fetchall()
        connection.close()
        self.assertEqual(
            rows,
            [
                (7, "a", "1", "a", "ABC", "http://l/abc.png"),
                (8, "a", "1", "a", "NBC", ""),
                (7, "b", "2", "a", "ABC East", ""),
            ],
        )

    def test_missing_file_is_an_error(self):
        """
        A missing playlist file is named and the exit status is 1.
        """
        db = os.path.abspath(self.mktemp())
        os.makedirs(os.path.dirname(db), exist_ok=True)
        err = io.StringIO()
        status = cli_main(["import-m3u", "/nonexistent.m3u", "--source", "a", "--db", db], err=err)
        self.assertEqual(status, 1)
        self.assertEqual(err.getvalue(), "streamproxy: /nonexistent.m3u: cannot read: No such file or directory\n")
