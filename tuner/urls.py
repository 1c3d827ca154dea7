"""Storage URLs and tracking URIs: the embedded defaults, and hiding credentials."""

from __future__ import annotations

import re
from pathlib import Path

# Embedded defaults: files in the working directory, no server to start.
DEFAULT_STORAGE = "sqlite:///rnn_tuner.db"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*):(?P<secret>[^@/\s]*)@", re.I)
_QUERY_SECRET = re.compile(r"(?P<key>(?:password|passwd|token|secret)=)[^&\s]*", re.I)


def redact(url: str) -> str:
    """`postgresql://bob:s3cret@db/x?password=y` -> `postgresql://bob:***@db/x?password=***`."""
    url = _PASSWORD.sub(r"\g<head>:***@", url)
    return _QUERY_SECRET.sub(r"\g<key>***", url)


def absolute_sqlite(url: str) -> str:
    """`sqlite:///x.db` -> `sqlite:////cwd/x.db`: says where the file is, and keeps one process
    that changes directory from reusing MLflow's cached store of another directory."""
    prefix = "sqlite:///"
    if (
        not url.startswith(prefix)
        or url.startswith(prefix + "/")
        or url[len(prefix) :] in ("", ":memory:")
    ):
        return url
    return prefix + str(Path(url[len(prefix) :]).resolve())


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")
