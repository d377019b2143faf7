"""Safe file writes: never a half-written file, never a silent overwrite of the user's data."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path, write_fn, *, overwrite: bool = True, suffix: str = ".tmp") -> Path:
    """Call ``write_fn(tmp_path)`` then rename onto ``path``; the temp file is removed on any error.

    With ``overwrite=False`` an existing ``path`` is an error (FileExistsError naming it).
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite it (pass overwrite=True)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write_fn(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path, text: str, *, overwrite: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_text(text), overwrite=overwrite)
