"""Small file helpers: atomic writes that leave files with the permissions a plain ``open()`` would.

Atomic writes go through a temporary file (``tempfile.mkstemp``, mode 0600) or
folder (``mkdtemp``, 0700) that is renamed into place. Left as they are, a
report published from CI or a store shared by a group would be readable by
its writer only; :func:`apply_umask` gives them the mode ``open()`` and
``mkdir()`` would have given (0666 / 0777 minus the process umask).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["apply_umask", "atomic_path", "atomic_write_bytes", "atomic_write_text", "current_umask"]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read from ``/proc/self/status`` where possible; never changes it there)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: read it by setting it and putting it back, one thread at a time
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the mode a plain ``open()`` (file) or ``mkdir()`` (folder) would have given it.

    Best effort: a file system that refuses ``chmod`` (some network and FUSE mounts) keeps the
    temporary file's mode rather than losing the write."""
    base = 0o777 if os.path.isdir(path) else 0o666
    try:
        os.chmod(path, base & ~current_umask())
    except OSError:
        pass


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it into place.

    Readers see either the old file or the complete new one, never a partial
    file. On an exception the temporary file is removed and ``path`` is left
    untouched. The file gets the permissions of the umask, as ``open()`` would.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        apply_umask(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
