"""Storage URLs and tracking URIs: the embedded defaults, checks that need no server, and hiding
credentials.

`redact` is the one redaction function: every text rnn-tuner prints, logs, stores in the study
or sends to MLflow passes through it. It hides the password of any URL it can see, secret query
parameters, and every secret `remember_secrets` was given (the CLI gives it each URL it reads),
so a password also disappears from a driver's message that quotes it without its URL.
"""

from __future__ import annotations

import errno
import re
import tempfile
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

# Embedded defaults: files in the working directory, no server to start. The study is a journal
# file, which the worker processes of `run` on this machine share: it uses every core.
DEFAULT_STORAGE = "journal:///rnn_tuner.log"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# The default of rnn-tuner before the journal: SQLite, one worker process.
OLD_DEFAULT_STORAGE = "sqlite:///rnn_tuner.db"

# user:password@ up to the last @ of the URL, so a password holding @ or / is hidden whole.
_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s'\"]*):(?P<secret>[^\s'\"]*)@", re.I)
_QUERY_SECRET = re.compile(r"(?P<key>(?:password|passwd|pwd|token|secret)=)[^&\s'\"]*", re.I)
_SECRETS: set[str] = set()
MASK = "***"

DATABASES = ("sqlite", "postgresql", "mysql")  # what Optuna's RDB storage supports
TRACKING_SCHEMES = ("", "file", "http", "https", "databricks", "databricks-uc", *DATABASES, "mssql")
_SQLITE_MAGIC = b"SQLite format 3\x00"


def redact(text: str) -> str:
    """`postgresql://bob:s3cret@db/x?password=y` -> `postgresql://bob:***@db/x?password=***`;
    any remembered secret -> `***` wherever it appears."""
    text = _PASSWORD.sub(_mask_password, text)
    text = _QUERY_SECRET.sub(rf"\g<key>{MASK}", text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _mask_password(m: re.Match[str]) -> str:
    placeholder = m.group("secret") in ("PASSWORD", MASK)  # in our own advice, e.g. USER:PASSWORD@
    return m.group(0) if placeholder else f"{m.group('head')}:{MASK}@"


def remember_secrets(*urls: str | None) -> None:
    """Hide these URLs' passwords and secret query values from every later `redact`, also where
    a library quotes them without their URL (plain and percent-encoded)."""
    for url in urls:
        if not url:
            continue
        found = [m.group("secret") for m in _PASSWORD.finditer(url)]
        found += [m.group(0).split("=", 1)[1] for m in _QUERY_SECRET.finditer(url)]
        for secret in found:
            for form in {secret, unquote(secret), quote(unquote(secret), safe="")}:
                if len(form) >= 3:  # a one- or two-letter password would mask half the output
                    _SECRETS.add(form)


def remember_secret(value: str | None) -> None:
    """A secret given on its own (e.g. MLFLOW_TRACKING_PASSWORD)."""
    if value and len(value) >= 3:
        _SECRETS.add(value)


def absolute_sqlite(url: str) -> str:
    """`sqlite:///x.db` -> `sqlite:////cwd/x.db` (and `journal:///x` likewise): says where the
    file is, and keeps one process that changes directory from reusing MLflow's cached store of
    another directory."""
    prefix = next((p for p in ("sqlite:///", f"{JOURNAL}:///") if url.startswith(p)), None)
    if prefix is None or url.startswith(prefix + "/") or url[len(prefix) :] in ("", ":memory:"):
        return url
    return prefix + str(Path(url[len(prefix) :]).resolve())


def embedded_storage() -> tuple[str, str | None]:
    """The storage when none is given, and a notice when it is not DEFAULT_STORAGE: a directory
    holding an older rnn-tuner's rnn_tuner.db and no journal keeps its studies there, rather
    than a run starting an empty study in a new journal beside them."""
    old, new = sqlite_path(OLD_DEFAULT_STORAGE), journal_file(DEFAULT_STORAGE)
    if old is None or new is None or not old.is_file() or Path(new).exists():
        return DEFAULT_STORAGE, None
    return OLD_DEFAULT_STORAGE, (
        f"note: using {old.resolve()}, the study database of an rnn-tuner from before the "
        f"default became a journal file ({DEFAULT_STORAGE}), on which `run` uses every core; "
        "SQLite runs one worker. To move your studies to the journal: rnn-tuner migrate NAME "
        f"--from {OLD_DEFAULT_STORAGE}, for each study (once the journal exists it is the "
        f"default, and this note stops). To keep SQLite: --storage {OLD_DEFAULT_STORAGE}, or export "
        f"RNN_TUNER_STORAGE={OLD_DEFAULT_STORAGE}."
    )


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


# ---------------------------------------------------------------- journal storage URLs
# `journal:///FILE`: Optuna's journal in a file on this machine (several local workers).
# `journal+postgresql+psycopg://USER@HOST/DB`: the journal in a PostgreSQL table; the part after
# `journal+` is the database's own SQLAlchemy URL (a `postgresql+journal` driver would clash
# with SQLAlchemy's `dialect+driver`).
JOURNAL = "journal"


def is_journal(url: str) -> bool:
    return url.startswith((f"{JOURNAL}:", f"{JOURNAL}+"))


def journal_file(url: str) -> str | None:
    """The log file of a `journal:///FILE` URL; None for a journal in a database."""
    if not url.startswith(f"{JOURNAL}:"):
        return None
    rest = url.split("://", 1)[1] if "://" in url else ""
    return rest[1:] if rest.startswith("/") else rest


def journal_database(url: str) -> str:
    """`journal+postgresql+psycopg://...` -> `postgresql+psycopg://...`."""
    return url[len(JOURNAL) + 1 :]


def shared_by_processes(url: str) -> bool:
    """Whether several worker processes may write this storage at once (SQLite: one only)."""
    return not is_sqlite(url)


# ---------------------------------------------------------------- checks without a server


def storage_problem(url: str, *, must_exist: bool = False) -> str | None:
    """What makes `url` unusable as the study database, found without connecting; None if
    nothing. `must_exist`: a command that only reads (status, best, report) creates nothing."""
    if not url.strip():
        return f"is empty; give a database URL such as {DEFAULT_STORAGE}"
    if is_journal(url):
        return _journal_problem(url, must_exist)
    if "://" not in url:
        return (
            f"{redact(url)!r} is not a database URL; for a file write sqlite:///{redact(url)}, "
            "for a server postgresql+psycopg://USER:PASSWORD@HOST:5432/DB"
        )
    backend = url.split("://", 1)[0].split("+", 1)[0].lower()
    if backend not in DATABASES:
        return (
            f"{backend!r} is not a database rnn-tuner can store a study in; use {DEFAULT_STORAGE} "
            f"(a file, several workers), {OLD_DEFAULT_STORAGE} (a file, one worker) or "
            "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB (a server)"
        )
    return _driver_problem(url) or _sqlite_file_problem(url, must_exist, "study database")


def _journal_problem(url: str, must_exist: bool) -> str | None:
    path = journal_file(url)
    if path is None:
        database = journal_database(url)
        if not database.startswith("postgresql"):
            return (
                f"{redact(url)}: a journal is kept in a file (journal:///FILE) or in PostgreSQL "
                "(journal+postgresql+psycopg://USER:PASSWORD@HOST:5432/DB)"
            )
        return _driver_problem(database)
    if not path or not url.startswith(f"{JOURNAL}:///"):
        return f"{redact(url)} names no file; write journal:///FILE, e.g. journal:///rnn_tuner.log"
    file = Path(path)
    if file.is_dir():
        return f"{file.resolve()} is a directory; name a file in it"
    if must_exist and not file.exists():
        return f"no study journal at {file.resolve()} (nothing was created); check the path"
    if not file.parent.is_dir():
        return f"the directory {file.parent.resolve()} does not exist; create it or fix the path"
    return None if must_exist else _unwritable(file.parent)


def tracking_problem(uri: str, *, must_exist: bool = False) -> str | None:
    """What makes `uri` unusable as the MLflow tracking store, found without connecting."""
    if not uri.strip():
        return f"is empty; give a tracking URI such as {DEFAULT_TRACKING_URI}"
    scheme = urlsplit(uri).scheme.lower() if "://" in uri or ":" in uri[:12] else ""
    backend = scheme.split("+", 1)[0]
    if backend not in TRACKING_SCHEMES:
        return (
            f"unknown tracking URI scheme {scheme!r}; use {DEFAULT_TRACKING_URI} (a file), "
            "http://HOST:5000 (a server) or a database URL"
        )
    if backend in ("", "file"):
        return _directory_problem(uri, must_exist)
    if backend in (*DATABASES, "mssql"):
        return _driver_problem(uri) or _sqlite_file_problem(
            uri, must_exist, "MLflow tracking store"
        )
    return None


def same_database(storage: str, tracking_uri: str) -> bool:
    """Whether the study and MLflow would share one database (their tables collide)."""
    return _database_identity(storage) is not None and _database_identity(
        storage
    ) == _database_identity(tracking_uri)


def _database_identity(url: str) -> tuple[str, ...] | None:
    if is_journal(url):
        return None if journal_file(url) is not None else _database_identity(journal_database(url))
    if is_sqlite(url):
        path = sqlite_path(url)
        return None if path is None else ("sqlite", str(path.resolve()))
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a database URL: reported elsewhere
        return None
    return (
        parsed.get_backend_name(),
        parsed.host or "",
        str(parsed.port or ""),
        parsed.database or "",
    )


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL; None for an in-memory database."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    path = rest[1:] if rest.startswith("/") else rest
    path = path.split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def _driver_problem(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception as e:  # noqa: BLE001 - ArgumentError, or ValueError for a bad port
        what = "the port is not a number" if "int()" in str(e) else "it cannot be parsed"
        return f"{redact(url)} is not a valid database URL: {what}"
    try:
        parsed.get_dialect().import_dbapi()
    except Exception:  # noqa: BLE001 - NoSuchModuleError, ImportError
        return (
            f"no database driver {parsed.drivername!r} is installed for {redact(url)}; use "
            "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB or sqlite:///FILE"
        )
    return None


def _sqlite_file_problem(url: str, must_exist: bool, what: str) -> str | None:
    if not is_sqlite(url):
        return None
    path = sqlite_path(url)
    if path is None:
        return f"{url} is an in-memory database, which keeps nothing; use sqlite:///FILE"
    shown = path.resolve()
    if path.is_dir():
        return f"{shown} is a directory; name a file in it, e.g. sqlite:///{shown}/rnn_tuner.db"
    if path.exists():
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
        if head and head != _SQLITE_MAGIC:
            return f"{shown} is not an SQLite database; name another file"
        return None if must_exist else _unwritable(path.parent)
    if must_exist:
        return f"no {what} at {shown} (nothing was created); check the path"
    if not path.parent.is_dir():
        return f"the directory {path.parent.resolve()} does not exist; create it or fix the path"
    return _unwritable(path.parent)


def _directory_problem(uri: str, must_exist: bool) -> str | None:
    """A file store (a path or file:// URI): its directory, or the nearest existing parent."""
    path = Path(unquote(urlsplit(uri).path) if uri.startswith("file:") else uri)
    if path.exists():
        if not path.is_dir():
            return f"{path.resolve()} is not a directory"
        return None if must_exist else _unwritable(path)
    if must_exist:
        return f"no MLflow tracking store at {path.resolve()} (nothing was created)"
    parent = next(p for p in path.resolve().parents if p.exists())
    return _unwritable(parent)


def _unwritable(directory: Path) -> str | None:
    """Whether a file can be created in `directory` (tried: permission bits lie to root)."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            return None
    except OSError as e:
        reason = "read-only" if e.errno in (None, errno.ENOENT, errno.EROFS) else e.strerror
        return f"the directory {directory.resolve()} cannot be written ({reason}); choose another"


# ---------------------------------------------------------------- the logging boundary


def hide_secrets(*urls: str | None) -> None:
    """At the start of every process that runs rnn-tuner's code (the command, each `--workers`
    process, each Ray actor: none inherits another's settings): these URLs' passwords and the
    MLflow login's secret are hidden from every later `redact` and log line, and libraries'
    tracebacks of failed trials are left out of the log."""
    import os

    remember_secrets(*urls)
    remember_secret(os.environ.get("MLFLOW_TRACKING_PASSWORD"))
    remember_secret(os.environ.get("MLFLOW_TRACKING_TOKEN"))
    redact_logs()


def redact_logs() -> None:
    """Pass every log record, ours and every library's, through `redact` as it is made; a
    library's traceback of a failed trial is left out (the trial's reason is logged on its own
    line, and the user gave no code to debug)."""
    import logging

    make = logging.getLogRecordFactory()
    if getattr(make, "redacts", False):
        return

    def redacted(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and record.name.startswith("optuna"):
            record.exc_info, record.exc_text = None, None
        return record

    redacted.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacted)
