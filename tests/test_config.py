"""
Tests for loading and validating config.yaml.
"""

import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from streamproxy.config import KEYS, Config, ConfigError, load_config, parse_config

HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED = os.path.join(os.path.dirname(HERE), "config.yaml")


class ConfigTests(SynchronousTestCase):
    """
    Loading config.yaml: defaults, path resolution, and every kind of mistake.
    """

    def write(self, text):
        path = self.mktemp()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def assertError(self, text, *fragments):
        path = self.write(text)
        with self.assertRaises(ConfigError) as caught:
            load_config(path)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith(path), message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message

    def test_shipped_config_is_the_defaults(self):
        """
        The shipped config.yaml names every key and loads to the documented
        defaults (paths resolved next to it).
        """
        config = load_config(SHIPPED)
        defaults = parse_config({}, base_dir=os.path.dirname(SHIPPED))
        self.assertEqual(config, defaults)
        with open(SHIPPED, encoding="utf-8") as f:
            text = f.read()
        for key in KEYS:
            self.assertIn(f"{key}:", text)

    def test_defaults(self):
        """
        An empty file gives the defaults of the issue's table.
        """
        config = load_config(self.write(""))
        self.assertEqual(config.port, 9090)
        self.assertEqual(config.interface, "0.0.0.0")
        self.assertEqual(config.quality_priority, ("1", "2", "3", "4", "5"))
        self.assertEqual(config.source_priority, ())
        self.assertEqual(config.source_limits, {})
        self.assertEqual((config.hls_time, config.hls_list_size), (6, 3))
        self.assertEqual(config.inactivity_timeout, 30)
        self.assertIsNone(config.channels_dvr_url)
        self.assertTrue(os.path.isabs(config.ffmpeg_path))

    def test_relative_db_path_is_next_to_the_config(self):
        """
        A relative db_path is resolved against the config file's folder, not
        the working directory.
        """
        path = self.write("db_path: data/streams.db\n")
        config = load_config(path)
        self.assertEqual(
            config.db_path, os.path.join(os.path.dirname(os.path.abspath(path)), "data", "streams.db")
        )

    def test_values(self):
        """
        Given values are kept, lists and limits normalised to text names.
        """
        config = load_config(
            self.write(
                "port: 8000\nsource_priority: [prov_a, prov_b]\nquality_priority: [1, HD]\n"
                "source_limits: {prov_a: 2, prov_b: 0}\nchannels_dvr_url: http://127.0.0.1:8089/dvr/\n"
                "hls_time: 2.5\n"
            )
        )
        self.assertEqual(config.port, 8000)
        self.assertEqual(config.source_priority, ("prov_a", "prov_b"))
        self.assertEqual(config.quality_priority, ("1", "HD"))
        self.assertEqual(config.source_limits, {"prov_a": 2, "prov_b": 0})
        self.assertEqual(config.channels_dvr_url, "http://127.0.0.1:8089/dvr")
        self.assertEqual(config.hls_time, 2.5)

    def test_missing_file(self):
        """
        A missing file is named.
        """
        with self.assertRaises(ConfigError) as caught:
            load_config("/nonexistent/streamproxy.yaml")
        self.assertEqual(
            str(caught.exception), "/nonexistent/streamproxy.yaml: configuration file not found"
        )

    def test_bad_yaml(self):
        """
        YAML that does not parse names the line.
        """
        self.assertError("port: 9090\nsource_limits: {a: 1\n", "not valid YAML", "line")

    def test_not_a_mapping(self):
        """
        A file that is a list or a scalar is refused.
        """
        self.assertError("- port\n- 9090\n", "must be a mapping")

    def test_unknown_key_suggests(self):
        """
        A misspelt key is named with the key it probably meant.
        """
        message = self.assertError("inactivty_timeout: 20\n")
        self.assertTrue(
            message.endswith("unknown key 'inactivty_timeout'; did you mean 'inactivity_timeout'?"),
            message,
        )

    def test_unknown_key_without_suggestion(self):
        """
        A key like nothing we know is just named.
        """
        message = self.assertError("colour: blue\n")
        self.assertTrue(message.endswith("unknown key 'colour'"), message)

    def test_wrong_types(self):
        """
        Values of the wrong type name the key and the type found.
        """
        self.assertError("port: nine\n", "port:", "'nine'")
        self.assertError("buffer_threshold: three\n", "buffer_threshold:", "whole number")
        self.assertError("hls_time: [6]\n", "hls_time:", "number of seconds")
        self.assertError("source_priority: prov_a\n", "source_priority:", "must be a list")
        self.assertError("source_limits: [1]\n", "source_limits:", "mapping")
        self.assertError("channels_dvr_url: 192.168.1.2\n", "channels_dvr_url:", "http://")
        self.assertError("interface: [a]\n", "interface:", "text")
        self.assertError("stream_start_timeout: true\n", "stream_start_timeout:")

    def test_zero_and_negative_intervals(self):
        """
        Intervals and timeouts must be more than zero.
        """
        for key in (
            "buffer_check_interval",
            "stream_start_timeout",
            "inactivity_timeout",
            "ffprobe_timeout",
            "dvr_poll_interval",
            "hls_time",
        ):
            self.assertError(f"{key}: 0\n", f"{key}: must be more than 0")
            self.assertError(f"{key}: -5\n", f"{key}: must be more than 0")
        self.assertError("hls_list_size: 0\n", "hls_list_size: must be at least 1")
        self.assertError("port: -1\n", "port:")

    def test_limit_not_whole(self):
        """
        A source limit must be a whole number; the message names the source.
        """
        self.assertError("source_limits: {prov_a: 1.5}\n", "source_limits.prov_a", "whole number")
        self.assertError("source_limits: {prov_a: two}\n", "source_limits.prov_a")
        self.assertError("source_limits: {prov_a: -1}\n", "source_limits.prov_a")

    def test_missing_executables(self):
        """
        An ffmpeg_path or ffprobe_path not found on PATH is refused.
        """
        self.assertError("ffmpeg_path: no-such-ffmpeg\n", "ffmpeg_path:", "no-such-ffmpeg", "not found")
        self.assertError("ffprobe_path: /nope/ffprobe\n", "ffprobe_path:", "not found")

    def test_executable_by_path(self):
        """
        A full path to an executable is accepted as it is.
        """
        config = load_config(self.write(f"ffmpeg_path: {sys.executable}\n"))
        self.assertEqual(config.ffmpeg_path, sys.executable)

    def test_null_segment_dir_is_default(self):
        """
        segment_dir: null means the default folder under the temp dir.
        """
        config = load_config(self.write("segment_dir: null\n"))
        self.assertEqual(config.segment_dir, Config().segment_dir)

    def test_allowed_url_schemes(self):
        """
        allowed_url_schemes defaults to http and https, takes other network
        protocols (lower-cased, once each), and refuses local ones, unknown
        names and an empty list, naming the key.
        """
        self.assertEqual(Config().allowed_url_schemes, ("http", "https"))
        config = load_config(self.write("allowed_url_schemes: [HTTP, https, rtmp, udp, rtmp]\n"))
        self.assertEqual(config.allowed_url_schemes, ("http", "https", "rtmp", "udp"))
        for value in ("[http, file]", "[concat]", "[gopher]", "[]", "http", "[1]"):
            self.assertError(f"allowed_url_schemes: {value}\n", "allowed_url_schemes:")
        message = self.assertError("allowed_url_schemes: [http, file]\n", "'file'", "rtmp")
        self.assertIn("not a network protocol", message)

    def test_allowed_hosts(self):
        """
        allowed_hosts is a list of host names, kept lower-cased without a
        trailing dot; a port or a malformed name is refused naming the entry.
        """
        self.assertEqual(Config().allowed_hosts, ())
        config = load_config(self.write("allowed_hosts: [TV.example.lan., streambox]\n"))
        self.assertEqual(config.allowed_hosts, ("tv.example.lan", "streambox"))
        self.assertEqual(load_config(self.write("allowed_hosts: null\n")).allowed_hosts, ())
        self.assertError("allowed_hosts: tv.example.lan\n", "allowed_hosts:", "must be a list")
        self.assertError("allowed_hosts: [tv.example.lan:9090]\n", "allowed_hosts:", "port")
        self.assertError("allowed_hosts: [a..b]\n", "allowed_hosts:", "'a..b'", "empty label")
        self.assertError("allowed_hosts: [7]\n", "allowed_hosts:", "host names")
