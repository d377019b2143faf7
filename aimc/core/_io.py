"""Safe file writes: never a half-written file, never a silent overwrite of the user's data.

``atomic_write`` writes to a temporary file next to the destination, ``fsync``s it, then puts it in place:
with ``overwrite=False`` by a hard link that fails if the name exists (two processes saving to one path
cannot both succeed), else by ``os.replace``; finally it ``fsync``s the directory, so a reported success
survives a power cut. Temporary files are named ``.<name>.<host>.<pid>.<token>.aimc-tmp``; those left by
killed writers (their process gone) are removed by a process's first write into the same folder. New files
get the permissions the user's umask gives (0666 & ~umask), as ``open()`` would.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import socket
from pathlib import Path

from device_models.cards import read_regular_text as _read_regular_text

TMP_TAG = ".aimc-tmp"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


_TMP_NAME = re.compile(rf"^\..+\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[0-9a-f]+{re.escape(TMP_TAG)}$")
_swept: set[str] = set()   # folders whose stale temp files this process has removed (once per folder)


def stale_temp_files(folder) -> list[Path]:
    """Temporary files in ``folder`` left behind by aimc writers on this host whose process no longer exists."""
    folder = Path(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    host, me = _host(), os.getpid()
    out = []
    for n in names:
        m = _TMP_NAME.match(n) if n.endswith(TMP_TAG) else None
        if m and m["host"] == host and int(m["pid"]) != me and not _pid_alive(int(m["pid"])):
            out.append(folder / n)
    return out


def _sweep_once(folder: Path) -> None:
    """Remove the stale temp files of ``folder`` on this process's first write there (listing a folder on
    every write would make a sweep's record writes quadratic in the number of records)."""
    key = os.path.realpath(folder)
    if key in _swept:
        return
    for old in stale_temp_files(folder):
        try:
            old.unlink()
        except OSError:
            pass
    _swept.add(key)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_destination(path, *, overwrite: bool, what: str = "output") -> Path:
    """Check before any work is done that ``path`` can be written: not a folder, not an existing file
    (unless ``overwrite``), a folder we may write into. Returns the path; raises an error naming it."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {str(path)!r} is a folder; give a file name")
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{what} {str(path)!r} exists; refusing to overwrite it (pass overwrite)")
    parent = path.parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"{what} {str(path)!r}: {str(probe)!r} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {str(path)!r}: folder {str(probe)!r} is not writable")
    return path


def atomic_write(path, write_fn, *, overwrite: bool = True, suffix: str = "") -> Path:
    """Call ``write_fn(tmp_path)``, fsync, then put the file at ``path``; the temp file is removed on error.

    With ``overwrite=False`` an existing ``path`` is an error (FileExistsError naming it), checked before
    writing and again, atomically, when the file is put in place. ``suffix`` is kept for compatibility.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder; give a file name")
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path} exists; refusing to overwrite it (pass overwrite=True)")
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(path.parent)
    tmp = path.parent / f".{path.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}{TMP_TAG}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode & ~umask, like open()
    os.close(fd)
    try:
        write_fn(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_exclusive(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path


def _link_exclusive(tmp: Path, path: Path) -> None:
    """Put ``tmp`` at ``path`` only if ``path`` does not exist (atomic), then drop ``tmp``."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} exists; refusing to overwrite it (pass overwrite=True)") from None
    except OSError as e:  # a file system without hard links: reserve the name exclusively, then replace
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise FileExistsError(f"{path} exists; refusing to overwrite it (pass overwrite=True)") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write_text(path, text: str, *, overwrite: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_text(text), overwrite=overwrite)


def read_regular_text(path, what: str = "file", limit: int = 16 * 2**20) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes, or a clear error (one rule with the cards:
    ``device_models.cards.read_regular_text``)."""
    return _read_regular_text(path, what, limit)
