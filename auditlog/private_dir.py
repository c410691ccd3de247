"""Keep the embedded data (chDB files, logs, the generated JWT secret) readable by its owner only.

Contract:
- :func:`make_private` creates a directory if missing and removes every group/other permission bit from it and
  from everything below it (directories end up 0700, our files 0600; an owner's execute bit is kept). Symbolic
  links are neither followed nor changed. Returns how many entries it changed.
- :func:`open_private_append` opens a text file for appending, created 0600 (an existing one is tightened).
- :func:`chdb_directory` is the local directory of a ``chdb://`` store URL (None for a server URL).
- :data:`PRIVATE_UMASK` is the umask the embedded commands run with, so files created later are private too;
  :func:`keep_private` sets it and makes a directory private (``up``'s data directory, or the local directory of
  a ``chdb://`` store of ``consume``/``api``; a server URL changes nothing).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TextIO
from urllib.parse import unquote, urlsplit

from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.server.private_dir")
PRIVATE_UMASK = 0o077
_OPEN_BITS = stat.S_IRWXG | stat.S_IRWXO


def _tighten(path: str) -> bool:
    """Remove group/other bits from ``path`` (not a symlink); True if it changed."""
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode) or not mode & _OPEN_BITS:
        return False
    os.chmod(path, stat.S_IMODE(mode) & ~_OPEN_BITS)
    return True


def make_private(directory: Path) -> int:
    """Create ``directory`` (0700) if missing; strip group/other access from it and its whole tree."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    changed = int(_tighten(str(directory)))
    for root, dirs, files in os.walk(directory):  # does not descend into symlinked directories
        for name in (*dirs, *files):
            try:
                changed += _tighten(os.path.join(root, name))
            except FileNotFoundError:  # removed meanwhile (e.g. a chDB temporary part)
                continue
    if changed:
        log.info("data_dir.tightened", path=str(directory), entries=changed)
    return changed


def open_private_append(path: Path) -> TextIO:
    """``path`` opened for appending (line-buffered UTF-8 text), created 0600; an existing file loses
    group/other access."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & ~_OPEN_BITS)
    return os.fdopen(fd, "a", buffering=1, encoding="utf-8")


def keep_private(directory: Path | None) -> None:
    """Run with :data:`PRIVATE_UMASK` and make ``directory`` private (nothing when it is None)."""
    if directory is not None:
        os.umask(PRIVATE_UMASK)
        make_private(directory)


def chdb_directory(url: str) -> Path | None:
    """The local directory of a ``chdb:///dir`` URL; None for any other URL (``chdb://memory`` included)."""
    parts = urlsplit(url)
    if parts.scheme != "chdb" or parts.netloc or not parts.path:
        return None
    return Path(unquote(parts.path))
