"""
Shared test helpers: databases with rows, candidates.
"""

import os
import sqlite3

from streamproxy.channels import COLUMNS, Candidate
from streamproxy.store import prepare_database

# The table exactly as the original system created it (its DDL, not ours),
# so tests prove an old database works unchanged.
OLD_STYLE_DDL = """CREATE TABLE "LiveStreams" (
    "Channel-id" INTEGER, "Stream-name" TEXT, "stream-url" TEXT, "Source" TEXT,
    "Stream-quality" TEXT, "M3U" TEXT, "TV-Logo" TEXT, "Group-title" TEXT,
    "Uniform-name" TEXT, "ISO3" TEXT, "TV-guide-id" TEXT, "TV-guide-name" TEXT,
    "Stream-status" TEXT, "Last-checked-time" TEXT, "Uptime" INTEGER, "Downtime" INTEGER
)"""


def make_database(path, rows=(), old_style=False):
    """
    Create an SQLite file at ``path`` holding ``rows`` (mappings of column
    name to value) and return ``path``.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if old_style:
        connection = sqlite3.connect(path)
        connection.execute(OLD_STYLE_DDL)
        connection.commit()
        connection.close()
    else:
        prepare_database(path)
    connection = sqlite3.connect(path)
    with connection:
        for row in rows:
            names = list(row)
            connection.execute(
                "INSERT INTO LiveStreams ({}) VALUES ({})".format(
                    ", ".join(f'"{n}"' for n in names), ", ".join("?" for _ in names)
                ),
                [row[n] for n in names],
            )
    connection.close()
    return path


def row(channel_id, url, source="prov_a", quality="1", m3u="main", **extra):
    """
    A LiveStreams row as a mapping, with keyword names for the common columns.
    """
    values = {
        "Channel-id": channel_id,
        "Stream-name": extra.pop("name", f"Channel {channel_id}"),
        "stream-url": url,
        "Source": source,
        "Stream-quality": quality,
        "M3U": m3u,
    }
    columns = {name.lower().replace("-", "_"): name for name, _ in COLUMNS}
    for key, value in extra.items():
        values[columns[key]] = value
    return values


def candidate(rowid, channel_id="1", source="prov_a", quality="1", **extra):
    """
    A :class:`Candidate` for ranking and selection tests.
    """
    return Candidate(
        rowid=rowid,
        channel_id=channel_id,
        name=extra.pop("name", f"stream {rowid}"),
        url=extra.pop("url", f"http://127.0.0.1:1/{rowid}.ts"),
        source=source,
        quality=quality,
        m3u=extra.pop("m3u", "main"),
        **extra,
    )
