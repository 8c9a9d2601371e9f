"""The spool: received instances as DICOM files under ``<spool>/<study>/<series>/<sop>.dcm``.

Every write is atomic and durable: a temporary file in the target directory, ``fsync``, ``rename`` over the
final name, then ``fsync`` of the directory. Only strings that are valid DICOM UIDs ever become path parts,
so nothing a sender writes can escape the spool. This module never touches the database or the network.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path

UID_MAX = 64
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
PREAMBLE = b"\x00" * 128 + b"DICM"


def is_valid_uid(value: object) -> bool:
    """True for a DICOM UID (PS3.5 §9.1): dotted numbers, no leading zeros, at most 64 characters."""
    return isinstance(value, str) and 0 < len(value) <= UID_MAX and _UID.fullmatch(value) is not None


class SpoolError(Exception):
    """Writing to the spool failed (disk full, permissions, I/O error)."""


class Spool:
    """Atomic, durable file storage for received instances."""

    def __init__(self, root: Path | str, min_free_mb: int = 0) -> None:
        self.root = Path(root).absolute()
        self.min_free_bytes = min_free_mb * 1024 * 1024
        self._known_dirs: set[Path] = set()
        self._dirs_lock = threading.Lock()

    def prepare(self) -> None:
        """Create the spool directory (at start-up, so a permission problem shows before any association)."""
        self.root.mkdir(parents=True, exist_ok=True)

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def has_room(self, incoming: int = 0) -> bool:
        """True when, after writing ``incoming`` bytes, free space stays at or above the floor."""
        return self.free_bytes() - incoming >= self.min_free_bytes

    def relative_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        for uid in (study_uid, series_uid, sop_uid):
            if not is_valid_uid(uid):
                raise ValueError("not a valid DICOM UID")
        return Path(study_uid, series_uid, f"{sop_uid}.dcm")

    def write(self, relative: Path, chunks: Iterable[bytes]) -> int:
        """Write ``chunks`` atomically and durably to ``relative``; return the number of bytes written.

        An existing file of the same name is replaced only once the new one is complete on disk.
        """
        target = self.root / relative
        directory = target.parent
        self._ensure_dir(directory)
        tmp = directory / f".{target.name}.{threading.get_ident()}.tmp"
        size = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                        size += n
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


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
