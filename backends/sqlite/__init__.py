"""SQLite backend: ``sqlite:///relative.db`` or ``sqlite:////abs/path.db``.

One file in WAL mode serves every process on one host; several machines need Redis.
"""

from monoq.backends.sqlite._backend import SqliteBackend, SqliteOptions
from monoq.backends.sqlite._schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "SqliteBackend", "SqliteOptions"]
