"""Start-up reconciliation of the index with the spool, after an unclean stop.

The spooled files are the durable record of what was acknowledged; the index commits of the listener may
roll back after a power loss (see :mod:`agent.db.index`). After a stop that did not write the spool's clean
marker, :func:`reconcile` walks the whole spool before the listener opens and:

- indexes every complete instance file that has no row (an acknowledged instance whose commit was lost, or
  one written just before a crash and never answered: indexing it is harmless, a resend replaces it), with
  the origin the listener marked in its file meta (a retrieved prior never reopens its study);
- removes files cut short (never acknowledged) and leftover temporary files;
- drops every row whose file is missing or not of the size recorded: the listener commits the row while
  the file's ``fsync`` runs and answers only once both are done, so after a power loss a row may point at a
  file that never reached the disk (its instance was never answered; the sender resends it). A series or
  study left without any instance, job, result or alert by that goes too;
- when a SOP Instance has a row pointing at another file (a replacement interrupted between its commit and
  the removal of the earlier copy, or whose commit was lost), keeps the newer file and removes the other.

Each instance is indexed at most once (upsert on the SOP Instance UID), so running it twice changes nothing.
It never talks to the network.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, select

from agent.db.index import RETRIEVED, ROUTED, InstanceRecord, record_instance
from agent.db.models import (
    AlertRecord,
    Instance,
    Job,
    OutboxItem,
    OutputVersion,
    Series,
    Study,
    utcnow,
)
from agent.dicom.header import FileMeta, HeaderError, Identity, read_file_meta, read_identity
from agent.dicom.scp import IMPLEMENTATION_CLASS_UID, RETRIEVED_MARK
from agent.dicom.spool import Spool, is_valid_uid
from agent.log import get_logger

log = get_logger(__name__)

_BATCH = 500


@dataclass
class Reconciled:
    files: int = 0
    indexed: int = 0
    removed: int = 0
    # Index rows dropped because their file is missing or cut short.
    dropped: int = 0


def reconcile(spool: Spool, engine: Engine) -> Reconciled:
    """Make the index agree with the spool (see the module docstring). Returns what it did."""
    result = Reconciled()
    _drop_rows_without_files(spool, engine, result)
    by_series: dict[Path, list[Path]] = {}
    for relative in spool.files():
        by_series.setdefault(relative.parent, []).append(relative)
    _remove_temporaries(spool, by_series)
    for paths in by_series.values():
        for start in range(0, len(paths), _BATCH):
            _reconcile_batch(spool, engine, paths[start : start + _BATCH], result)
    log.info(
        "spool.reconciled",
        files=result.files,
        indexed=result.indexed,
        removed=result.removed,
        dropped=result.dropped,
    )
    return result


def _drop_rows_without_files(spool: Spool, engine: Engine, result: Reconciled) -> None:
    """Delete the rows whose file is missing or of another size, and the series and studies left empty."""
    gone: list[tuple[int, int]] = []
    with engine.connect() as conn:
        rows = conn.execution_options(yield_per=2000).execute(
            select(Instance.id, Instance.series_pk, Instance.path, Instance.size)
        )
        for pk, series_pk, path, size in rows:
            try:
                if os.stat(spool.root / path).st_size == size:
                    continue
            except FileNotFoundError:
                pass
            except OSError:
                continue
            gone.append((pk, series_pk))
    if not gone:
        return
    series_pks = sorted({s for _, s in gone})
    with engine.begin() as conn:
        for start in range(0, len(gone), _BATCH):
            ids = [pk for pk, _ in gone[start : start + _BATCH]]
            conn.execute(delete(Instance).where(Instance.id.in_(ids)))
        left = conn.execute(select(Series.id, Series.study_pk).where(Series.id.in_(series_pks))).all()
        empty = [(pk, study_pk) for pk, study_pk in left if not _exists(conn, Instance.series_pk, pk)]
        if empty:
            conn.execute(delete(Series).where(Series.id.in_([pk for pk, _ in empty])))
        for study_pk in sorted({study_pk for _, study_pk in empty}):
            if not any(_exists(conn, column, study_pk) for column in _STUDY_REFERENCES):
                conn.execute(delete(Study).where(Study.id == study_pk))
    result.dropped = len(gone)


# Rows that keep a study worth keeping even without any instance left.
_STUDY_REFERENCES = (
    Series.study_pk,
    Job.study_pk,
    OutputVersion.study_pk,
    OutboxItem.study_pk,
    AlertRecord.study_pk,
)


def _exists(conn: Connection, column: Any, value: int) -> bool:
    return conn.execute(select(column).where(column == value).limit(1)).first() is not None


def _remove_temporaries(spool: Spool, series_dirs: Iterable[Path]) -> None:
    for relative in series_dirs:
        for f in (spool.root / relative).iterdir():
            if f.name.startswith(".") and f.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    f.unlink()


def _reconcile_batch(spool: Spool, engine: Engine, paths: list[Path], result: Reconciled) -> None:
    sops = {p.stem: p for p in paths}
    with engine.connect() as conn:
        rows = conn.execute(
            select(Instance.sop_uid, Instance.path).where(Instance.sop_uid.in_(list(sops)))
        ).all()
    indexed = {sop: path for sop, path in rows}
    for sop, relative in sops.items():
        result.files += 1
        known = indexed.get(sop)
        if known == relative.as_posix():
            continue
        if known is not None and _newer_or_same(spool.root / known, spool.root / relative):
            spool.remove(relative)  # an earlier copy whose removal did not reach the disk
            result.removed += 1
            continue
        record = _record_from_file(spool.root / relative, relative)
        if record is None:
            spool.remove(relative)  # cut short: never acknowledged
            result.removed += 1
            continue
        with engine.begin() as conn:
            record_instance(conn, record, utcnow())
        result.indexed += 1
        if known is not None:
            spool.remove(known)
            result.removed += 1


def _newer_or_same(indexed: Path, candidate: Path) -> bool:
    """True when the indexed file exists and is at least as recent as ``candidate``."""
    try:
        return indexed.stat().st_mtime_ns >= candidate.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def _parse(m: mmap.mmap) -> tuple[FileMeta, Identity] | None:
    # Only element headers are touched, so a large file costs no resident memory. No view of the map
    # outlives this call (the map is closed by the caller).
    try:
        meta = read_file_meta(m)
        return meta, read_identity(memoryview(m)[meta.dataset_offset :], meta.transfer_syntax)
    except (HeaderError, ValueError):
        return None


def _record_from_file(path: Path, relative: Path) -> InstanceRecord | None:
    """The index record of a complete spool file, or None when it is cut short or not ours."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return None
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                parsed = _parse(m)
    except OSError:
        return None
    if parsed is None:
        return None
    meta, ident = parsed
    study, series, sop = relative.parts[0], relative.parts[1], relative.stem
    if (ident.study_uid, ident.series_uid, ident.sop_instance_uid) != (study, series, sop):
        return None
    if not ident.patient_id or not ident.sop_class_uid or not is_valid_uid(ident.sop_class_uid):
        return None
    return InstanceRecord(
        patient_id=ident.patient_id,
        issuer_of_patient_id=ident.issuer_of_patient_id or "",
        patient_name=ident.patient_name,
        patient_birth_date=ident.patient_birth_date,
        study_uid=study,
        study_date=ident.study_date,
        study_time=ident.study_time,
        accession_number=ident.accession_number,
        study_description=ident.study_description,
        series_uid=series,
        modality=ident.modality,
        series_number=ident.series_number,
        series_description=ident.series_description,
        body_part=ident.body_part,
        sop_uid=sop,
        sop_class_uid=ident.sop_class_uid,
        transfer_syntax_uid=meta.transfer_syntax,
        instance_number=ident.instance_number,
        path=relative.as_posix(),
        size=size,
        calling_aet=meta.source_aet,
        origin=_origin(meta),
    )


def _origin(meta: FileMeta) -> str:
    """``retrieved`` when the listener marked the file as the answer to our own retrieval (scp.file_meta)."""
    if meta.private_creator == IMPLEMENTATION_CLASS_UID and meta.private_information == RETRIEVED_MARK:
        return RETRIEVED
    return ROUTED
