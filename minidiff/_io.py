"""Writing files atomically: a reader (or a crash) never sees half a checkpoint, image or download."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

try:
    import fcntl
except ImportError:                  # Windows: no advisory locks; the folder is then not locked
    fcntl = None

LOCK_NAME = ".minidiff.lock"


def atomic_write(path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``, flush it to disk, then rename it over ``path``.

    If ``write`` raises, the temporary file is removed and ``path`` is left as it was. The new file gets the
    permissions a plain ``open(path, "w")`` would give (mkstemp's are 0o600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, plain_file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def plain_file_mode() -> int:
    """The permissions ``open(path, "w")`` would give: 0o666 minus the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def claim_folder(folder) -> Iterator[Path]:
    """Make ``folder`` (and its parents), check that files can be written in it, lock it against a second
    process, and remove the temporary files a killed :func:`atomic_write` left there. The lock is released when
    the ``with`` block ends, or when the process dies. Errors are ``OSError`` naming the folder and the cause
    (not a folder, read-only, no space left, in use by another run)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, plain_file_mode())
    except OSError as e:
        raise OSError(f"cannot write to the output folder {str(folder)!r}: {_cause(e)}") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OSError(f"the output folder {str(folder)!r} is in use by another run (it holds {LOCK_NAME}); "
                              "wait for it or choose another folder") from None
        for stale in folder.glob(".*.tmp"):              # from atomic_write: ".<name>.<random>.tmp"
            stale.unlink(missing_ok=True)
        yield folder
    finally:
        os.close(fd)


def _cause(e: OSError) -> str:
    """What went wrong, in words: "no space left on device", "read-only file system", "not a directory", ..."""
    return os.strerror(e.errno).lower() if e.errno else str(e)
