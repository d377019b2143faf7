"""tox plugin (loaded by tox 4 from the project root): make the pyenv interpreters discoverable.

On the project's machines Python 3.10-3.13 are installed with pyenv; their shims only answer for the
selected version, so tox could not find the others. Put each installed 3.x ``bin`` folder on PATH
(for this tox process only) so that ``py310`` ... ``py313`` resolve to real interpreters.
"""
from __future__ import annotations

import glob
import os

from tox.plugin import impl


def _pyenv_bins() -> list[str]:
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = []
    for minor in ("10", "11", "12", "13"):
        cands = sorted(glob.glob(os.path.join(root, "versions", f"3.{minor}.*", "bin")))
        if cands:
            found.append(cands[-1])
    return found


def _extend_path() -> None:
    path = os.environ.get("PATH", "").split(os.pathsep)
    extra = [b for b in _pyenv_bins() if b not in path]
    if extra:
        os.environ["PATH"] = os.pathsep.join(extra + path)


@impl
def tox_add_option(parser) -> None:  # the earliest hook: runs before any environment is resolved
    _extend_path()
