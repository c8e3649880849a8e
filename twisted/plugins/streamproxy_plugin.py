"""
Registers ``twistd streamproxy``.  Nothing of ours is imported until twistd
actually uses the plugin.
"""

from twisted.application.service import ServiceMaker

streamproxy = ServiceMaker(
    "streamproxy",
    "streamproxy.tap",
    "Live-stream proxy for Channels DVR: best source, HLS remux, seamless failover.",
    "streamproxy",
)
