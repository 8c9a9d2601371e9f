"""The spool: received instances as DICOM files under ``<spool>/<study>/<series>/<sop>.dcm``.

Every write is durable before it returns. A new instance is created directly under its final name
(``O_CREAT|O_EXCL``), written and ``fsync``ed, and its directory is ``fsync``ed too, unless the filesystem
is verified at start (:func:`entry_durability`) to commit a new file's directory entry with the file's own
``fsync``: XFS (its log is mandatory), btrfs (the log tree records the new entry with the inode) and ext4
with an active journal (seen in ``/proc/fs/jbd2``; ext4 without a journal, or any other filesystem, gets the
directory ``fsync``). That directory ``fsync`` starts as soon as the file is created, in the spool's
directory-sync thread, so it runs while the data is written and the file is ``fsync``ed (requests for one
directory that arrive before its sync starts share it); the write returns once both are done. Replacing an
existing copy stays atomic: a
temporary file, ``fsync``, ``rename`` over the final name, ``fsync`` of the directory, so the earlier copy is
never lost to a half-written one. Instances too large to buffer arrive in ``.incoming/`` and are renamed into
place the same way.

The fsynced file is the durable record of an instance; the index is rebuildable from it. A crash before the
answer can leave a file the index does not know (complete, or cut short): the sender never got a success
for it, so a resend replaces it, and the start-up reconciliation after an unclean stop
(:mod:`agent.dicom.reconcile`, detected by the absence of the marker :meth:`Spool.mark_clean` writes at a
clean stop) indexes the complete ones and removes the rest.

Only strings that are valid DICOM UIDs ever become path parts, so nothing a sender writes can escape the
spool. This module never touches the database or the network.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path

UID_MAX = 64
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
PREAMBLE = b"\x00" * 128 + b"DICM"
# Directory (inside the spool, same filesystem) of instances still arriving; never indexed.
INCOMING = ".incoming"
# Longest time has_room() relies on its last look at the filesystem's free space.
FREE_CHECK_S = 0.5
# Written at a clean stop, removed at start: its absence at start means the last stop was not clean.
CLEAN_MARKER = ".clean-stop"
# Filesystems whose fsync of a newly created file makes its directory entry durable as well, whatever
# their mount options (ext4 only with its journal: see entry_durability).
ENTRY_DURABLE_WITH_FILE = frozenset({"xfs", "btrfs"})


def filesystem_of(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> tuple[str, str]:
    """(type, device major:minor) of the filesystem holding ``path``; ("", "") when unknown."""
    target = str(Path(path).resolve())
    best, kind, device = "", "", ""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if " - " not in line or len(fields) < 5:
                    continue
                mount = fields[4].replace("\\040", " ")
                after = line.split(" - ", 1)[1].split()
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best) and after:
                    best, kind, device = mount, after[0], fields[2]
    except OSError:
        return "", ""
    return kind, device


def entry_durability(
    path: Path, mountinfo: Path = Path("/proc/self/mountinfo"), sys_root: Path = Path("/")
) -> tuple[bool, str]:
    """Whether ``fsync`` of a new file under ``path`` also makes its directory entry durable, and why.

    Verified, never assumed from the type alone: ext4 counts only when its journal is active (a jbd2 journal
    for the device under ``/proc/fs/jbd2``); ext4 without a journal, tmpfs, overlay, NFS and anything unknown
    need the directory's own ``fsync``.
    """
    kind, device = filesystem_of(path, mountinfo)
    if kind in ENTRY_DURABLE_WITH_FILE:
        return True, f"{kind}: the new entry is logged with the file"
    if kind == "ext4":
        try:
            name = (sys_root / "sys/dev/block" / device).resolve().name
        except OSError:
            name = ""
        if name and (sys_root / "proc/fs/jbd2" / f"{name}-8").is_dir():
            return True, f"ext4 with an active journal on {name}: the create is journalled with the inode"
        return False, "ext4 without an active journal"
    return False, f"{kind or 'unknown filesystem'}: not known to commit a new entry with the file"


def is_valid_uid(value: object) -> bool:
    """True for a DICOM UID (PS3.5 §9.1): dotted numbers, no leading zeros, at most 64 characters."""
    return isinstance(value, str) and 0 < len(value) <= UID_MAX and _UID.fullmatch(value) is not None


class SpoolError(Exception):
    """Writing to the spool failed (disk full, permissions, I/O error)."""


class DirectorySyncer:
    """``fsync`` of directories on one thread, started early and shared.

    ``request(directory)`` returns a future done once an ``fsync`` of the directory that started after the
    call has completed. Requests for a directory whose sync is queued but not started share it.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._queued: dict[Path, Future[None]] = {}
        self._order: deque[Path] = deque()
        self._thread: threading.Thread | None = None

    def request(self, directory: Path) -> Future[None]:
        with self._lock:
            future = self._queued.get(directory)
            if future is None:
                future = self._queued[directory] = Future()
                self._order.append(directory)
                if self._thread is None or not self._thread.is_alive():  # started lazily (and after a fork)
                    self._thread = threading.Thread(target=self._run, name="spool-dirsync", daemon=True)
                    self._thread.start()
                self._lock.notify()
            return future

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._order:
                    self._lock.wait()
                directory = self._order.popleft()
                future = self._queued.pop(directory)
            try:
                _fsync_dir(directory)
            except OSError as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)


class Spool:
    """Atomic, durable file storage for received instances."""

    def __init__(self, root: Path | str, min_free_mb: int = 0) -> None:
        self.root = Path(root).absolute()
        self.min_free_bytes = min_free_mb * 1024 * 1024
        self._known_dirs: set[Path] = set()
        # Free space at the last check, bytes written since, and when to check again (see has_room()).
        self._free = 0
        self._written = 0
        self._free_until = 0.0
        self._dirs_lock = threading.Lock()
        # Whether a new file's directory needs its own fsync, and why (decided by prepare()).
        self.sync_new_entries = True
        self.durability = "not checked yet"
        self._dirsync = DirectorySyncer()

    def prepare(self) -> bool:
        """Create the spool directories (at start-up, so a permission problem shows before any association).

        Returns True when the previous run stopped cleanly (or the spool is new), and removes the marker so
        that a crash of this run is seen at the next start.
        """
        fresh = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        durable, self.durability = entry_durability(self.root)
        self.sync_new_entries = not durable
        incoming = self.root / INCOMING
        incoming.mkdir(exist_ok=True)
        for leftover in incoming.iterdir():  # never acknowledged: the sender was not answered
            with contextlib.suppress(OSError):
                leftover.unlink()
        marker = self.root / CLEAN_MARKER
        clean = fresh or marker.exists()
        if marker.exists():
            marker.unlink()
            _fsync_dir(self.root)
        return clean

    def mark_clean(self) -> None:
        """Record a clean stop (every acknowledged instance is indexed and committed)."""
        marker = self.root / CLEAN_MARKER
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.root)

    def files(self) -> Iterator[Path]:
        """Relative paths of every spooled instance (``<study>/<series>/<sop>.dcm``)."""
        for study in sorted(self.root.iterdir()):
            if study.name.startswith(".") or not study.is_dir():
                continue
            for series in sorted(study.iterdir()):
                if not series.is_dir():
                    continue
                for f in sorted(series.iterdir()):
                    if f.suffix == ".dcm" and not f.name.startswith("."):
                        yield f.relative_to(self.root)

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def has_room(self, incoming: int = 0) -> bool:
        """True when, after writing ``incoming`` bytes, free space stays at or above the floor.

        The free space is asked of the filesystem at most every ``FREE_CHECK_S``; in between, the bytes this
        spool wrote since are taken off the last answer.
        """
        now = time.monotonic()
        if now >= self._free_until:
            self._free = self.free_bytes()
            self._written = 0
            self._free_until = now + FREE_CHECK_S
        return self._free - self._written - incoming >= self.min_free_bytes

    def relative_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        for uid in (study_uid, series_uid, sop_uid):
            if not is_valid_uid(uid):
                raise ValueError("not a valid DICOM UID")
        return Path(study_uid, series_uid, f"{sop_uid}.dcm")

    def write(
        self,
        relative: Path,
        chunks: Iterable[bytes | bytearray | memoryview],
        before_sync: Callable[[], None] | None = None,
    ) -> int:
        """Write ``chunks`` durably to ``relative``; return the number of bytes written.

        A new file is created under its final name; an existing file of the same name is replaced only once
        the new one is complete on disk. ``before_sync`` is called once every byte is written and before the
        ``fsync`` (the listener starts its index commit there, so the two overlap).
        """
        target = self.root / relative
        directory = target.parent
        self._ensure_dir(directory)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        except FileExistsError:
            return self._replace(target, chunks, before_sync)
        except OSError as exc:
            raise SpoolError(f"{exc.strerror or exc}") from exc
        # The new entry's directory sync runs while the data is written and synced.
        entry = self._dirsync.request(directory) if self.sync_new_entries else None
        try:
            try:
                size = write_all(fd, chunks)
                self._written += size
                if before_sync is not None:
                    before_sync()
                os.fsync(fd)
            finally:
                os.close(fd)
            if entry is not None:
                entry.result()
        except OSError as exc:
            with contextlib.suppress(OSError):
                target.unlink(missing_ok=True)
            raise SpoolError(f"{exc.strerror or exc}") from exc
        return size

    def _replace(
        self,
        target: Path,
        chunks: Iterable[bytes | bytearray | memoryview],
        before_sync: Callable[[], None] | None,
    ) -> int:
        directory = target.parent
        tmp = directory / f".{target.name}.{threading.get_ident()}.tmp"
        size = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
            try:
                size = write_all(fd, chunks)
                if before_sync is not None:
                    before_sync()
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            _fsync_dir(directory)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise SpoolError(f"{exc.strerror or exc}") from exc
        return size

    def incoming(self) -> tuple[int, Path]:
        """Open a new file in ``.incoming/`` for an instance too large to buffer: (descriptor, path)."""
        path = self.root / INCOMING / f"{uuid.uuid4().hex}.part"
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640), path
        except OSError as exc:
            raise SpoolError(f"{exc.strerror or exc}") from exc

    def move_in(
        self, fd: int, path: Path, relative: Path, before_sync: Callable[[], None] | None = None
    ) -> None:
        """Make the complete file ``path`` (open as ``fd``, closed here) durable under ``relative``."""
        target = self.root / relative
        try:
            try:
                if before_sync is not None:
                    before_sync()
                os.fsync(fd)
            finally:
                os.close(fd)
            self._ensure_dir(target.parent)
            os.replace(path, target)
            _fsync_dir(target.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            raise SpoolError(f"{exc.strerror or exc}") from exc

    def remove(self, relative: str | Path) -> None:
        """Remove a spooled file (an earlier copy filed under another study or series)."""
        path = self.root / relative
        try:
            path.unlink(missing_ok=True)
            _fsync_dir(path.parent)
        except OSError:
            pass

    def _ensure_dir(self, directory: Path) -> None:
        if directory in self._known_dirs:
            return
        with self._dirs_lock:
            # Create each missing level and fsync its parent, so the new entry survives a crash.
            missing = []
            d = directory
            while d != self.root and not d.is_dir():
                missing.append(d)
                d = d.parent
            for d in reversed(missing):
                with contextlib.suppress(FileExistsError):
                    d.mkdir()
                _fsync_dir(d.parent)
            self._known_dirs.add(directory)


def write_all(fd: int, chunks: Iterable[bytes | bytearray | memoryview]) -> int:
    """Write every chunk, in one ``writev`` call when the system takes it whole."""
    views = [memoryview(c) for c in chunks if len(c)]
    size = 0
    while views:
        n = os.writev(fd, views[:_IOV_MAX])
        size += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]
    return size


_IOV_MAX = 512


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
