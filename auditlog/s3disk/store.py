"""The files behind s3disk: object ``<bucket>/<key>`` is the file ``<root>/<bucket>/<key>``.

A write goes to a uniquely named temp file in ``<root>/.s3disk-tmp/``, is fsynced, then renamed (overwrite) or
hard-linked (create-only: atomic, fails if the key exists) into place, and the target directory is fsynced (new
directories are fsynced into their parents) before :meth:`DiskStore.write` returns. Temp files left by a kill are
removed at start. A directory holding only files (Tansu's ``records/``) gets an in-memory sorted index of its
names, so a listing page is a bisect. Files are created 0600 and directories 0700 (broker data is private).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import itertools
import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass

TMP_DIR = ".s3disk-tmp"
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
MAX_KEY_BYTES = 1024
MAX_NAME_BYTES = 255


class InvalidKey(ValueError):
    """A bucket or key that cannot name a file here (``..``, empty segments, too long, bad bucket name)."""


class KeyConflict(Exception):
    """The key needs a directory where a file is, or names a directory (``a`` and ``a/b`` both as objects)."""


@dataclass(frozen=True)
class Entry:
    key: str
    size: int
    mtime: float


def etag_of(body: bytes) -> str:
    """The quoted MD5 of the content: the same after a restart, as Tansu caches ETags."""
    return '"' + hashlib.md5(body, usedforsecurity=False).hexdigest() + '"'


def fsync_dir(d: str) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_bucket(bucket: str) -> None:
    if not BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise InvalidKey(bucket)


class DiskStore:
    """Durable objects as files; every method is safe to call from several threads at once."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.tmp = os.path.join(self.root, TMP_DIR)
        shutil.rmtree(self.tmp, ignore_errors=True)  # temp files of writes cut short by a kill
        os.makedirs(self.tmp, mode=0o700)
        fsync_dir(self.root)
        self._seq = itertools.count()
        self._seq_lock = threading.Lock()
        self._leaf: dict[str, list[str]] = {}  # sorted file names of directories that hold only files
        self._meta: dict[str, dict[str, tuple[int, float]]] = {}  # (size, mtime) by name, for those directories
        self._ilock = threading.Lock()

    # --- keys and paths ---

    def path(self, bucket: str, key: str) -> str:
        """The file of ``bucket``/``key``; :class:`InvalidKey` for anything that could leave the bucket."""
        check_bucket(bucket)
        if not key or len(key.encode()) > MAX_KEY_BYTES or "\x00" in key:
            raise InvalidKey(key)
        parts = key.split("/")
        if any(p in ("", ".", "..") or len(p.encode()) > MAX_NAME_BYTES for p in parts):
            raise InvalidKey(key)
        return os.path.join(self.root, bucket, *parts)

    def dir_of_prefix(self, bucket: str, prefix: str) -> str | None:
        """The directory of a listing prefix ending in ``/``, or None if it cannot be one."""
        try:
            return os.path.dirname(self.path(bucket, prefix + "x"))
        except InvalidKey:
            return None

    # --- reads and writes ---

    def read(self, path: str) -> tuple[bytes, float] | None:
        """(content, mtime) of an object, None if it does not exist."""
        try:
            with open(path, "rb") as f:
                return f.read(), os.fstat(f.fileno()).st_mtime
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _mkdirs(self, d: str) -> None:
        if os.path.isdir(d):
            return
        parent = os.path.dirname(d)
        self._mkdirs(parent)
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            if not os.path.isdir(d):
                raise KeyConflict(d) from None
            return
        except NotADirectoryError:
            raise KeyConflict(d) from None
        with self._ilock:
            self._leaf.pop(parent, None)  # it now holds a directory
            self._meta.pop(parent, None)
        fsync_dir(parent)

    def _temp_name(self) -> str:
        with self._seq_lock:
            n = next(self._seq)
        return os.path.join(self.tmp, f"{os.getpid()}-{threading.get_ident()}-{n}")

    def write(self, path: str, body: bytes, create_only: bool,
              mtime: Callable[[str, str], float | None] | None = None) -> bool:
        """Durably store ``body`` at ``path``; False if ``create_only`` and the key exists. ``mtime(dir, name)``
        may choose the file's modification time (None: now)."""
        d = os.path.dirname(path)
        self._mkdirs(d)
        if os.path.isdir(path):
            raise KeyConflict(path)
        tmp = self._temp_name()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            if mtime is not None and (t := mtime(d, os.path.basename(path))) is not None:
                os.utime(fd, (t, t))
            os.fsync(fd)
            st = os.fstat(fd)  # a link or rename keeps size and mtime
        finally:
            os.close(fd)
        try:
            if create_only:
                try:
                    os.link(tmp, path)  # atomic; fails if the key exists
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._index(d, os.path.basename(path), add=True, meta=(st.st_size, st.st_mtime))
        fsync_dir(d)
        return True

    def delete(self, path: str) -> bool:
        """Remove an object (durably); False if it did not exist."""
        d = os.path.dirname(path)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return False
        self._index(d, os.path.basename(path), add=False)
        fsync_dir(d)
        return True

    def delete_many(self, d: str, names: list[str]) -> int:
        """Remove files ``names`` of directory ``d`` with one directory fsync; how many existed."""
        done = 0
        for n in names:
            try:
                os.unlink(os.path.join(d, n))
            except FileNotFoundError:
                continue
            done += 1
            self._index(d, n, add=False)
        if done:
            fsync_dir(d)
        return done

    # --- listing ---

    def _index(self, d: str, name: str, add: bool, meta: tuple[int, float] | None = None) -> None:
        with self._ilock:
            names = self._leaf.get(d)
            if names is None:
                return
            if meta is not None:
                self._meta[d][name] = meta
            elif not add:
                self._meta[d].pop(name, None)
            i = bisect.bisect_left(names, name)
            present = i < len(names) and names[i] == name
            if add and not present:
                names.insert(i, name)
            elif not add and present:
                del names[i]

    def leaf_names(self, d: str, after: str = "", stop: str | None = None, limit: int | None = None) -> list[str] | None:
        """Sorted names in ``d`` that are > ``after`` and < ``stop``; None if ``d`` is missing or has subdirectories."""
        with self._ilock:
            names = self._leaf.get(d)
            if names is None:
                try:
                    with os.scandir(d) as it:
                        entries = list(it)
                except (FileNotFoundError, NotADirectoryError):
                    return None
                if any(e.is_dir(follow_symlinks=False) for e in entries):
                    return None
                names = self._leaf[d] = sorted(e.name for e in entries)
                self._meta[d] = {}
            i = bisect.bisect_right(names, after) if after else 0
            j = bisect.bisect_left(names, stop) if stop is not None else len(names)
            if limit is not None:
                j = min(j, i + limit)
            return names[i:j]

    def list_keys(self, bucket: str, prefix: str, after: str, limit: int, stop: str | None = None) -> list[Entry]:
        """Keys under ``prefix`` with ``after`` < key < ``stop``, sorted; at most ``limit`` in a leaf directory
        (a walk of a wider prefix returns all of them)."""
        check_bucket(bucket)
        base = os.path.join(self.root, bucket)
        if prefix.endswith("/") and (d := self.dir_of_prefix(bucket, prefix)) is not None:
            if after and not after.startswith(prefix) and after > prefix:
                return []  # ``after`` is past every key under the prefix
            if stop is not None and not stop.startswith(prefix) and stop <= prefix:
                return []  # ``stop`` is before every key under the prefix
            rest = after[len(prefix):] if after.startswith(prefix) else ""
            stop_rest = stop[len(prefix):] if stop is not None and stop.startswith(prefix) else None
            names = self.leaf_names(d, rest, stop_rest, limit)
            if names is not None or not os.path.isdir(d):
                return self._entries(d, prefix, names or [])
        start = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = os.path.join(base, *start.split("/")) if start else base
        keys: list[str] = []
        for d, dirs, files in os.walk(top):
            rel = os.path.relpath(d, base)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            if prefix and not (rel.startswith(prefix) or prefix.startswith(rel)):
                dirs[:] = []
                continue
            keys.extend(k for f in files if (k := rel + f).startswith(prefix) and k > after
                        and (stop is None or k < stop))
        keys.sort()
        out = []
        for k in keys:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                st = os.stat(os.path.join(base, *k.split("/")))
                out.append(Entry(k, st.st_size, st.st_mtime))
        return out

    def next_entry(self, d: str, name: str) -> Entry | None:
        """The entry after ``name`` in an indexed directory ``d`` (key: the bare name), None if none."""
        after = self.leaf_names(d, name, None, 1)
        entries = self._entries(d, "", after) if after else []
        return entries[0] if entries else None

    def _entries(self, d: str, prefix: str, names: list[str]) -> list[Entry]:
        """Entries of ``names`` in an indexed directory; sizes and mtimes are remembered (objects change only
        through :meth:`write`, which updates them)."""
        with self._ilock:
            meta = self._meta.get(d, {})
            known = [meta.get(n) for n in names]
        out = []
        for n, m in zip(names, known, strict=True):
            if m is None:
                try:
                    st = os.stat(os.path.join(d, n))
                except FileNotFoundError:
                    continue
                m = (st.st_size, st.st_mtime)
                with self._ilock:
                    names_now, meta_now = self._leaf.get(d), self._meta.get(d)
                    if names_now is not None and meta_now is not None:
                        i = bisect.bisect_left(names_now, n)
                        if i < len(names_now) and names_now[i] == n:  # not deleted meanwhile
                            m = meta_now.setdefault(n, m)  # a write meanwhile knows better
            out.append(Entry(prefix + n, m[0], m[1]))
        return out

    @staticmethod
    def subdirs(top: str) -> list[str]:
        """Sorted sub-directory names of ``top`` (none if it is missing)."""
        try:
            with os.scandir(top) as it:
                return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return []
