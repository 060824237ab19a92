"""Files written so that a crash at any moment leaves either the previous version or the new one, whole.

Every file a later run reads (checkpoints, the replay, throughput.json, status.json, exports)
goes through here. The new content is written to a temporary file in the target's own
directory, flushed to disk (fsync), then renamed over the target with ``os.replace``, and
the directory entry is flushed too. A rename is atomic only within one filesystem: a temporary
file in /tmp moved onto a scratch disk, NFS or a Docker volume is a copy into the target, and a
kill during that copy leaves the target truncated.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (a rename or a new file in it) to disk; a no-op where the
    filesystem cannot open directories for it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_beside(path: Path) -> Path:
    """The temporary name a write of ``path`` uses: hidden, in the same directory, unique to this process."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


@contextlib.contextmanager
def flushed(path: str | Path) -> Iterator[BinaryIO]:
    """A new binary file at ``path`` (not yet anyone's to read), on disk when the block ends."""
    with open(path, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[BinaryIO]:
    """An open binary file whose content replaces ``path`` when the block ends without error.

    On an error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        with flushed(tmp) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, atomically."""
    with replacing(path) as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8), atomically."""
    write_bytes(path, text.encode())


def write_with(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` with what ``write`` writes into the open file it is given, atomically."""
    with replacing(path) as f:
        write(f)


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Make ``dst`` hold what ``src`` holds, atomically: a hard link where the filesystem has them
    (no second copy of a large checkpoint), else a flushed copy; either is renamed over ``dst``."""
    src, dst = Path(src), Path(dst)
    tmp = temp_beside(dst)
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        with replacing(dst) as f, open(src, "rb") as source:
            shutil.copyfileobj(source, f, 1 << 20)
        return
    try:
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dst.parent)
