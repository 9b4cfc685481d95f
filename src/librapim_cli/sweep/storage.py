"""Storages: parsing ``--storage`` and opening it (memory, a journal file, SQLite, PostgreSQL, MySQL).

SQLite files are opened in WAL mode with ``synchronous=NORMAL`` and ``BEGIN IMMEDIATE`` transactions: a
commit then costs no fsync (the database stays consistent after a crash of the process or of the machine;
a power loss may drop the last commits, as it may drop the trials still in flight), and concurrent local
workers queue for the write lock instead of failing on a stale snapshot. WAL needs a local file system
(SQLite on a network share is not supported; use a journal file or PostgreSQL there).
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import optuna

from ..errors import InputError
from .workers import owned_lock

JOURNAL_SUFFIXES = (".journal", ".log", ".jsonl")
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
#: SQLite waits this long for another worker's write lock before giving up
SQLITE_BUSY_S = 30.0


class StorageError(InputError):
    """A --storage value that is not a storage, or a storage that cannot be opened or written."""


@dataclass(frozen=True)
class StorageRef:
    """A parsed --storage value."""

    kind: Literal["memory", "rdb", "journal"]
    target: str  # RDB URL or journal file path ('' for memory)
    text: str  # as the user wrote it

    @property
    def shared(self) -> bool:
        """True if other processes can see the study."""
        return self.kind != "memory"

    @property
    def display(self) -> str:
        """The storage for messages, with any password masked."""
        if self.kind == "rdb":
            return mask_password(self.target)
        return self.text if self.kind == "journal" else "memory"


def mask_password(url: str) -> str:
    """An RDB URL with its password replaced by ***."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


def parse_storage(text: str | None) -> StorageRef:
    """Parse --storage: nothing/'memory', an RDB URL (sqlite:///, postgresql://, mysql://), or a journal file
    (``journal:PATH`` or a path ending in .journal/.log/.jsonl)."""
    t = (text or "").strip()
    if t in ("", "memory", ":memory:", "inmemory"):
        return StorageRef("memory", "", "memory")
    if t.startswith("journal:"):
        path = t.removeprefix("journal:")
        _check_parent(path, t)
        return StorageRef("journal", path, t)
    scheme = t.split("://", 1)[0].split("+", 1)[0].lower() if "://" in t else ""
    if scheme in RDB_SCHEMES:
        if scheme in ("postgres", "postgresql"):
            t = _postgres_driver(t)
        if scheme == "sqlite":
            db = t.split(":///", 1)[1] if ":///" in t else ""
            if db and db != ":memory:":
                _check_parent(db, text or t)
        return StorageRef("rdb", t, text or t)
    if t.endswith(JOURNAL_SUFFIXES):
        _check_parent(t, t)
        return StorageRef("journal", t, t)
    raise StorageError(f"--storage '{t}' is not a storage: give sqlite:///FILE.db, a journal file (FILE.journal or "
                       f"journal:FILE), or postgresql://USER@HOST/DB")


def _postgres_driver(url: str) -> str:
    """Name the installed driver in a bare postgresql:// URL.

    SQLAlchemy 2.1 reads a bare postgresql:// as psycopg (3); librapim's ``postgres`` extra installs
    psycopg2, so a bare URL uses psycopg2 unless psycopg 3 is importable. ``postgres://`` (libpq's
    spelling) is accepted too.
    """
    scheme, rest = url.split("://", 1)
    if "+" in scheme:
        return url
    driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
    return f"postgresql+{driver}://{rest}"


def _check_parent(path: str, text: str) -> None:
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise StorageError(f"--storage '{text}': folder {parent} does not exist; create it first")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (of the driver's error for SQLAlchemy errors; the plain
    reason, such as "No space left on device", for an OSError)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_storage(ref: StorageRef) -> optuna.storages.BaseStorage:
    """An optuna storage object for a parsed --storage (one connection; open one per process).

    RDB storages come wrapped in optuna's ``_CachedStorage`` (what ``optuna.create_study`` does with a URL):
    it reads only new and unfinished trials from the database on each ``get_all_trials``.
    """
    if ref.kind == "memory":
        return optuna.storages.InMemoryStorage()
    if ref.kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        path = str(Path(ref.target).expanduser())
        try:
            return optuna.storages.JournalStorage(JournalFileBackend(path, owned_lock(path)))
        except (OSError, ValueError) as exc:
            raise StorageError(f"--storage '{ref.text}': cannot open the journal file ({first_line(exc)})") from None
    try:
        return optuna.storages._CachedStorage(_rdb_storage(ref.target))
    except ImportError as exc:
        missing = getattr(exc.__cause__, "name", None) or getattr(exc, "name", None) or "the driver"
        raise StorageError(f"--storage {ref.display}: the database driver is not installed ({missing}); "
                           f"for PostgreSQL: pip install 'librapim[postgres]'") from None
    except Exception as exc:  # SQLAlchemy's OperationalError & co: one line, not a traceback
        raise StorageError(f"--storage {ref.display}: cannot connect ({first_line(exc)})") from None


def rdb_backend(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage | None:
    """The RDBStorage behind a storage from :func:`open_storage` (None for memory and journal files)."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


# workers started together all create the schema on a fresh database; PostgreSQL lets only one CREATE win
# and the others fail with these messages; the schema exists by then, so opening again succeeds
_SCHEMA_RACE = ("duplicate key value", "already exists")


def _rdb_storage(url: str, attempts: int = 6) -> optuna.storages.RDBStorage:
    """RDBStorage(url), retried with a short backoff when another worker is creating the same schema."""
    sqlite = url.lower().startswith("sqlite")
    kwargs = {"connect_args": {"timeout": SQLITE_BUSY_S}} if sqlite else {}
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            if sqlite:
                _tune_sqlite(storage)
            return storage
        except Exception as exc:
            if attempt == attempts - 1 or not any(m in str(exc) for m in _SCHEMA_RACE):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _tune_sqlite(storage: optuna.storages.RDBStorage) -> None:
    """WAL, synchronous=NORMAL and BEGIN IMMEDIATE on every connection of the storage's engine."""
    from sqlalchemy import event

    def on_connect(dbapi_connection, _record) -> None:
        cur = dbapi_connection.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        finally:
            cur.close()
        # pysqlite opens a transaction before the first write of each; IMMEDIATE takes the write lock then,
        # so a read-then-write transaction never fails on a snapshot another worker made stale
        dbapi_connection.isolation_level = "IMMEDIATE"

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # the connections made while creating the schema predate the listener
