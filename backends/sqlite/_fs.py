"""Filesystem checks for the SQLite file: network filesystems are refused, files are private."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Final

from monoq.errors import BackendError

# WAL needs a shared-memory index (mmap of the -shm file) and POSIX locks that every process
# sees; network filesystems provide neither reliably, so SQLite documents that WAL "does not
# work over a network filesystem". Refusing up front beats a silently corrupted queue.
NETWORK_FS_TYPES: Final = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smbfs",
        "smb3",
        "sshfs",
        "fuse.sshfs",
        "afs",
        "ncpfs",
        "9p",
        "davfs",
        "fuse.davfs2",
        "glusterfs",
        "fuse.glusterfs",
        "ceph",
        "fuse.ceph",
        "lustre",
        "gpfs",
    }
)

MOUNTS_FILE: Final = "/proc/mounts"
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def read_mounts() -> list[tuple[str, str]]:
    """The (mount point, filesystem type) pairs of ``/proc/mounts``; empty where there is none."""
    try:
        text = Path(MOUNTS_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            # The kernel escapes blanks in mount points as octal (\040 for a space).
            point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[1])
            mounts.append((point, fields[2]))
    return mounts


def filesystem_type(path: Path, mounts: list[tuple[str, str]]) -> str | None:
    """The type of the filesystem holding ``path``: the longest mount point that contains it.

    A later line for the same mount point wins, as it is mounted over the earlier one.
    """
    best: tuple[int, str] | None = None
    parts = path.parts
    for point, fstype in mounts:
        point_parts = Path(point).parts
        if parts[: len(point_parts)] == point_parts and (
            best is None or len(point_parts) >= best[0]
        ):
            best = (len(point_parts), fstype)
    return None if best is None else best[1]


def refuse_network_fs(path: Path) -> None:
    """Raise ``BackendError`` if ``path`` lies on a network filesystem, where WAL cannot work."""
    # The directory decides (the file may not exist yet); resolve symlinks to the real place.
    real = Path(os.path.realpath(path.parent)) / path.name
    fstype = filesystem_type(real, read_mounts())
    if fstype is not None and fstype.lower() in NETWORK_FS_TYPES:
        raise BackendError(
            f"sqlite: {path} is on a network filesystem ({fstype}); SQLite's WAL mode needs "
            "shared memory and file locks that network filesystems do not provide, so monoq "
            "refuses it. Put the database on a local disk, or use the redis backend to share "
            "a queue between machines."
        )


def create_private_file(path: Path) -> None:
    """Create ``path`` with mode 0600 unless it exists.

    SQLite creates the ``-wal`` and ``-shm`` files with the database file's permissions, so
    they are private too.
    """
    if not path.parent.is_dir():
        raise BackendError(f"sqlite: directory {path.parent} does not exist")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise BackendError(f"sqlite: cannot create {path}: {exc.strerror}") from exc
        raise BackendError(f"sqlite: cannot create {path}: {exc}") from exc
    os.close(fd)
