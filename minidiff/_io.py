"""Writing files atomically: a reader (or a crash) never sees half a checkpoint, image, download or result file."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

try:
    import fcntl
except ImportError:                  # Windows: no advisory locks; the folder is then not locked
    fcntl = None


def atomic_write(path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``, flush it to disk, then rename it over ``path``.

    If ``write`` raises, the temporary file is removed and ``path`` is left as it was; a failure of the file
    system (no space left, read-only, ...) becomes an ``OSError`` saying so. The new file gets the permissions a
    plain ``open(path, "w")`` would give (mkstemp's are 0o600).
    """
    path = Path(path)
    reason = _unwritable(path)
    if reason is None:
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as e:
            reason = _cause(e)
    if reason is not None:
        raise OSError(f"cannot write {str(path)!r}: {reason}")
    try:
        os.chmod(tmp, plain_file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_cause(e)
        if cause is not None:            # say what happened, not the serializer's internals (torch's zip writer)
            raise OSError(f"could not write {str(path)!r}: {_cause(cause)}; {str(path)!r} is left as it was") from e
        raise
    _fsync_dir(path.parent)
    return path


def _os_cause(e: BaseException) -> OSError | None:
    """The OSError behind ``e`` (``e`` itself or one in its chain of causes and contexts), if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno is not None:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def check_writable(path) -> Path:
    """Make sure a file can be written at ``path`` before any work is spent on it: its folder is made (with its
    parents) and a file created and removed there. Returns ``path`` as a Path; an ``OSError`` names the cause
    (a file where a folder must be, a folder at ``path``, read-only, no space left)."""
    path = Path(path)
    reason = _unwritable(path) or _probe(path.parent)
    if reason is not None:
        raise OSError(f"cannot write {str(path)!r}: {reason}")
    return path


def _unwritable(path: Path) -> str | None:
    """Why no file can go at ``path``, or None once its folder exists (made with its parents if need be)."""
    if path.is_dir():
        return "it is a folder; give a file name"
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                return f"{str(folder)!r} is a file, not a folder"
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return _cause(e)
    return None


def _probe(folder: Path) -> str | None:
    """Why no file can be created in ``folder`` (read-only, no space left, ...), or None."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as e:
        return _cause(e)


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    text = json.dumps(obj, indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


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
    reason = _unwritable(folder / "ckpt") or _probe(folder)
    if reason is not None:
        raise OSError(f"cannot write to the output folder {str(folder)!r}: {reason}")
    fd = os.open(folder, os.O_RDONLY)                    # the lock is on the folder itself: no lock file
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OSError(f"the output folder {str(folder)!r} is in use by another run; wait for it or choose "
                              "another folder") from None
        for stale in folder.glob(".*.tmp"):              # from atomic_write: ".<name>.<random>.tmp"
            stale.unlink(missing_ok=True)
        yield folder
    finally:
        os.close(fd)


def _cause(e: OSError) -> str:
    """What went wrong, in words: "no space left on device", "read-only file system", "not a directory", ..."""
    return os.strerror(e.errno).lower() if e.errno else str(e)
