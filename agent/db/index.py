"""Insert-or-update of the index for one received instance, in one short transaction.

Used by the C-STORE handler after the file is safely in the spool. A repeated SOP Instance UID updates its
row (never a second row); a routed instance for a study that is no longer receiving reopens the study. A
retrieved instance (the answer to our own C-MOVE or C-GET) is indexed but leaves its study's state and
timestamps alone; a study it creates starts in the state ``prior``, which stability never picks up.

Durability: the spooled file, fsynced before the index is touched, is the durable record of an instance;
the index is rebuildable from the spool. So the :class:`IndexWriter` commits on SQLite with
``synchronous=NORMAL`` on its own connection (WAL: a commit survives a crash of the process; after a power
loss or kernel crash the last commits may roll back) and the start-up reconciliation
(:mod:`agent.dicom.reconcile`) re-indexes every spool file that has no row after an unclean stop. An
acknowledged instance is therefore never lost: either its row survived, or its file did and is re-indexed
before the listener opens. Every other connection keeps ``synchronous=FULL`` (jobs, alerts, outbox).

The listener submits the row (:meth:`IndexWriter.submit`) once the file's bytes are written and waits for
the commit only after the file's ``fsync``, so the two overlap; a crash in between can leave a committed row
for an unanswered instance whose file is not durable, which the reconciliation drops.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from agent.db.models import Instance, InstanceOrigin, Patient, Series, Study, StudyState

ROUTED = InstanceOrigin.ROUTED.value
RETRIEVED = InstanceOrigin.RETRIEVED.value


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """What the index stores about one instance (values already validated by the receiver)."""

    patient_id: str
    issuer_of_patient_id: str
    patient_name: str | None
    patient_birth_date: str | None
    study_uid: str
    study_date: str | None
    study_time: str | None
    accession_number: str | None
    study_description: str | None
    series_uid: str
    modality: str | None
    series_number: str | None
    series_description: str | None
    body_part: str | None
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    instance_number: str | None
    path: str
    size: int
    calling_aet: str | None
    # ``InstanceOrigin``: a retrieved instance never reopens its study.
    origin: str = ROUTED


@dataclass(frozen=True, slots=True)
class Recorded:
    study_pk: int
    # State of the study before this instance (None: the study is new).
    previous_state: str | None
    # Spool path of an earlier copy of this SOP Instance filed elsewhere (to remove), if any.
    replaced_path: str | None
    replaced: bool
    # The study was stable or further along and this (routed) instance moved it back to receiving.
    reopened: bool = False


def _insert(dialect: str, model: Any) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"database dialect {dialect!r} is not supported")


def _study_insert(dialect: str, state: StudyState) -> Any:
    """INSERT of a new study row in ``state``, its values bound by name (the ON CONFLICT part differs)."""
    b = bindparam
    return _insert(dialect, Study).values(
        study_uid=b("study_uid"),
        patient_pk=b("patient_pk"),
        study_date=b("study_date"),
        study_time=b("study_time"),
        accession_number=b("accession_number"),
        description=b("study_description"),
        state=state.value,
        first_received_at=b("now"),
        last_received_at=b("now"),
        receiving_since=b("now"),
        updated_at=b("now"),
    )


def _clip(value: str | None, n: int) -> str | None:
    return None if value is None else value[:n]


@dataclass(frozen=True, slots=True)
class _Statements:
    patient: Any
    study_state: Any
    study: Any
    study_retrieved: Any
    series: Any
    instance_path: Any
    instance: Any


_STATEMENTS: dict[str, _Statements] = {}


def _statements(dialect: str) -> _Statements:
    """The upserts, built once per dialect with bound parameters so SQLAlchemy compiles them only once.

    The C-STORE handler runs them for every instance; building them per call (values inlined) spent most
    of the handler's time generating cache keys.
    """
    cached = _STATEMENTS.get(dialect)
    if cached is not None:
        return cached
    b = bindparam
    ins = _insert(dialect, Patient).values(
        patient_id=b("patient_id"),
        issuer=b("issuer"),
        name=b("patient_name"),
        birth_date=b("birth_date"),
        created_at=b("now"),
    )
    patient = ins.on_conflict_do_update(
        index_elements=[Patient.patient_id, Patient.issuer],
        set_={"name": ins.excluded.name, "birth_date": ins.excluded.birth_date},
    ).returning(Patient.id)

    ins = _study_insert(dialect, StudyState.RECEIVING)
    receiving = Study.state == StudyState.RECEIVING.value
    study = ins.on_conflict_do_update(
        index_elements=[Study.study_uid],
        set_={
            "last_received_at": ins.excluded.last_received_at,
            "receiving_since": case((receiving, Study.receiving_since), else_=ins.excluded.receiving_since),
            "stable_at": case((receiving, Study.stable_at), else_=None),
            "state": StudyState.RECEIVING.value,
            "updated_at": ins.excluded.updated_at,
        },
    ).returning(Study.id)

    ins = _study_insert(dialect, StudyState.PRIOR)
    # A retrieval touches neither the state nor the receiving clock of a study that exists.
    study_retrieved = ins.on_conflict_do_update(
        index_elements=[Study.study_uid], set_={"patient_pk": Study.patient_pk}
    ).returning(Study.id)

    ins = _insert(dialect, Series).values(
        series_uid=b("series_uid"),
        study_pk=b("study_pk"),
        modality=b("modality"),
        series_number=b("series_number"),
        description=b("series_description"),
        body_part=b("body_part"),
    )
    series = ins.on_conflict_do_update(
        index_elements=[Series.series_uid], set_={"study_pk": ins.excluded.study_pk}
    ).returning(Series.id)

    ins = _insert(dialect, Instance).values(
        sop_uid=b("sop_uid"),
        series_pk=b("series_pk"),
        sop_class_uid=b("sop_class_uid"),
        transfer_syntax_uid=b("transfer_syntax_uid"),
        instance_number=b("instance_number"),
        path=b("path"),
        size=b("size"),
        calling_aet=b("calling_aet"),
        origin=b("origin"),
        received_at=b("now"),
    )
    ex = ins.excluded
    instance = ins.on_conflict_do_update(
        index_elements=[Instance.sop_uid],
        set_={
            "series_pk": ex.series_pk,
            "sop_class_uid": ex.sop_class_uid,
            "transfer_syntax_uid": ex.transfer_syntax_uid,
            "instance_number": ex.instance_number,
            "path": ex.path,
            "size": ex.size,
            "calling_aet": ex.calling_aet,
            "origin": ex.origin,
            "received_at": ex.received_at,
        },
    )
    built = _Statements(
        patient=patient,
        study_state=select(Study.state).where(Study.study_uid == b("study_uid")),
        study=study,
        study_retrieved=study_retrieved,
        series=series,
        instance_path=select(Instance.path).where(Instance.sop_uid == b("sop_uid")),
        instance=instance,
    )
    _STATEMENTS[dialect] = built
    return built


def record_instance(session: Session | Connection, rec: InstanceRecord, now: datetime) -> Recorded:
    """Index ``rec`` (the caller commits). Returns what changed, for logging and clean-up.

    The statements run on the Core connection (a session's own, within its transaction): the ORM's bulk
    insert path costs several times more per statement and this runs once per instance received.
    """
    conn = session.connection() if isinstance(session, Session) else session
    st = _statements(conn.dialect.name)
    patient_pk = conn.execute(
        st.patient,
        {
            "patient_id": rec.patient_id[:64],
            "issuer": rec.issuer_of_patient_id[:64],
            "patient_name": _clip(rec.patient_name, 324),
            "birth_date": _clip(rec.patient_birth_date, 8),
            "now": now,
        },
    ).scalar_one()
    previous_state = conn.execute(st.study_state, {"study_uid": rec.study_uid}).scalar()
    routed = rec.origin != RETRIEVED
    study_pk = conn.execute(
        st.study if routed else st.study_retrieved,
        {
            "study_uid": rec.study_uid,
            "patient_pk": patient_pk,
            "study_date": _clip(rec.study_date, 8),
            "study_time": _clip(rec.study_time, 16),
            "accession_number": _clip(rec.accession_number, 16),
            "study_description": _clip(rec.study_description, 64),
            "now": now,
        },
    ).scalar_one()
    series_pk = conn.execute(
        st.series,
        {
            "series_uid": rec.series_uid,
            "study_pk": study_pk,
            "modality": _clip(rec.modality, 16),
            "series_number": _clip(rec.series_number, 12),
            "series_description": _clip(rec.series_description, 64),
            "body_part": _clip(rec.body_part, 16),
        },
    ).scalar_one()
    old_path = conn.execute(st.instance_path, {"sop_uid": rec.sop_uid}).scalar()
    conn.execute(
        st.instance,
        {
            "sop_uid": rec.sop_uid,
            "series_pk": series_pk,
            "sop_class_uid": rec.sop_class_uid,
            "transfer_syntax_uid": rec.transfer_syntax_uid,
            "instance_number": _clip(rec.instance_number, 12),
            "path": rec.path,
            "size": rec.size,
            "calling_aet": rec.calling_aet,
            "origin": rec.origin,
            "now": now,
        },
    )
    return Recorded(
        study_pk=study_pk,
        previous_state=previous_state,
        replaced_path=old_path if old_path is not None and old_path != rec.path else None,
        replaced=old_path is not None,
        reopened=routed and previous_state not in (None, StudyState.RECEIVING.value),
    )


def _sqlite_time(now: datetime) -> str:
    """``now`` as SQLAlchemy stores a ``UTCDateTime`` in SQLite (naive UTC, microseconds)."""
    return now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


_SQLITE_PATIENT = (
    "INSERT INTO patients (patient_id, issuer, name, birth_date, created_at) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (patient_id, issuer) DO UPDATE SET name = excluded.name, birth_date = excluded.birth_date"
    " RETURNING id"
)
_SQLITE_STUDY_STATE = "SELECT id, state FROM studies WHERE study_uid = ?"
_SQLITE_STUDY_COLUMNS = (
    "INSERT INTO studies (study_uid, patient_pk, study_date, study_time, accession_number, description,"
    " state, first_received_at, last_received_at, receiving_since, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_STUDY_ROUTED = (
    _SQLITE_STUDY_COLUMNS
    + " ON CONFLICT (study_uid) DO UPDATE SET last_received_at = excluded.last_received_at,"
    " receiving_since = CASE WHEN studies.state = 'receiving' THEN studies.receiving_since"
    " ELSE excluded.receiving_since END,"
    " stable_at = CASE WHEN studies.state = 'receiving' THEN studies.stable_at ELSE NULL END,"
    " state = 'receiving', updated_at = excluded.updated_at RETURNING id"
)
_SQLITE_STUDY_RETRIEVED = _SQLITE_STUDY_COLUMNS + " RETURNING id"
_SQLITE_SERIES = (
    "INSERT INTO series (series_uid, study_pk, modality, series_number, description, body_part)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (series_uid) DO UPDATE SET study_pk = excluded.study_pk"
    " RETURNING id"
)
_SQLITE_INSTANCE_PATH = "SELECT path FROM instances WHERE sop_uid = ?"
_SQLITE_INSTANCE = (
    "INSERT INTO instances (sop_uid, series_pk, sop_class_uid, transfer_syntax_uid, instance_number, path,"
    " size, calling_aet, origin, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (sop_uid) DO UPDATE SET series_pk = excluded.series_pk,"
    " sop_class_uid = excluded.sop_class_uid, transfer_syntax_uid = excluded.transfer_syntax_uid,"
    " instance_number = excluded.instance_number, path = excluded.path, size = excluded.size,"
    " calling_aet = excluded.calling_aet, origin = excluded.origin, received_at = excluded.received_at"
)
_RECEIVING = StudyState.RECEIVING.value


class _SqliteRecorder:
    """:func:`record_instance` for the listener's own SQLite connection, on the driver directly.

    The same rows as :func:`record_instance` (a test compares the two), in a quarter of the time: prepared
    statements of the ``sqlite3`` module instead of SQLAlchemy's execution path, and no statement for what
    cannot have changed since the previous instance of the series (the patient row with the same name and
    birth date, the series row under the same study). Rows of patients and series are never deleted, so
    their primary keys stay valid; the study's state is read for every instance, since others change it.
    """

    def __init__(self, db: Any) -> None:
        self.db = db
        self._patients: dict[tuple[str, str], tuple[int, str | None, str | None]] = {}
        self._series: dict[str, tuple[int, int]] = {}

    def forget(self) -> None:
        """Drop the cached keys (after a rolled back transaction that may have created them)."""
        self._patients.clear()
        self._series.clear()

    def record(self, rec: InstanceRecord, ts: str) -> Recorded:
        db = self.db
        key = (rec.patient_id[:64], rec.issuer_of_patient_id[:64])
        name, birth = _clip(rec.patient_name, 324), _clip(rec.patient_birth_date, 8)
        cached = self._patients.get(key)
        if cached is not None and cached[1] == name and cached[2] == birth:
            patient_pk = cached[0]
        else:
            patient_pk = db.execute(_SQLITE_PATIENT, (key[0], key[1], name, birth, ts)).fetchone()[0]
            self._patients[key] = (patient_pk, name, birth)
        row = db.execute(_SQLITE_STUDY_STATE, (rec.study_uid,)).fetchone()
        previous_state = None if row is None else row[1]
        routed = rec.origin != RETRIEVED
        if routed or row is None:
            values = (
                rec.study_uid,
                patient_pk,
                _clip(rec.study_date, 8),
                _clip(rec.study_time, 16),
                _clip(rec.accession_number, 16),
                _clip(rec.study_description, 64),
                _RECEIVING if routed else StudyState.PRIOR.value,
                ts,
                ts,
                ts,
                ts,
            )
            # Inside the writer's BEGIN IMMEDIATE nobody else inserts the study between the two statements.
            study_pk = db.execute(
                _SQLITE_STUDY_ROUTED if routed else _SQLITE_STUDY_RETRIEVED, values
            ).fetchone()[0]
        else:
            study_pk = row[0]
        series = self._series.get(rec.series_uid)
        if series is not None and series[1] == study_pk:
            series_pk = series[0]
        else:
            series_pk = db.execute(
                _SQLITE_SERIES,
                (
                    rec.series_uid,
                    study_pk,
                    _clip(rec.modality, 16),
                    _clip(rec.series_number, 12),
                    _clip(rec.series_description, 64),
                    _clip(rec.body_part, 16),
                ),
            ).fetchone()[0]
            self._series[rec.series_uid] = (series_pk, study_pk)
        old = db.execute(_SQLITE_INSTANCE_PATH, (rec.sop_uid,)).fetchone()
        old_path = None if old is None else old[0]
        db.execute(
            _SQLITE_INSTANCE,
            (
                rec.sop_uid,
                series_pk,
                rec.sop_class_uid,
                rec.transfer_syntax_uid,
                _clip(rec.instance_number, 12),
                rec.path,
                rec.size,
                rec.calling_aet,
                rec.origin,
                ts,
            ),
        )
        return Recorded(
            study_pk=study_pk,
            previous_state=previous_state,
            replaced_path=old_path if old_path is not None and old_path != rec.path else None,
            replaced=old_path is not None,
            reopened=routed and previous_state not in (None, _RECEIVING),
        )


class IndexWriter:
    """One thread that indexes instances for every association, committing concurrent ones together.

    ``record(rec)`` blocks until ``rec`` is committed and returns its :class:`Recorded`, or raises the error
    that prevented it. Requests that arrive while a commit is under way are written in the next transaction,
    each inside its own savepoint (a failing one does not take the others down), so several associations
    share one commit instead of queueing on the database's write lock.

    The writer keeps one connection of its own. On SQLite it sets ``synchronous=NORMAL`` on that connection
    only when ``relaxed_sync`` is true (see the module docstring for why that loses no acknowledged
    instance); on PostgreSQL every commit is durable as configured by the server.
    """

    MAX_BATCH = 64

    def __init__(
        self,
        engine: Engine,
        now: Callable[[], datetime],
        relaxed_sync: bool = True,
        lock_path: Path | None = None,
    ) -> None:
        self._engine = engine
        self._now = now
        self._relaxed_sync = relaxed_sync
        # SQLite shared by several receiver processes: their writers take turns through this file's flock,
        # which waits in the kernel, instead of SQLite's busy handler, which sleeps 1 ms and more per retry.
        self._lock_fd: int | None = None
        if lock_path is not None and engine.dialect.name == "sqlite":
            self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._conn: Connection | None = None
        # SQLite: the driver's own connection and the recorder on it (see _SqliteRecorder).
        self._raw: Any = None
        self._recorder: _SqliteRecorder | None = None
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="index-writer", daemon=True)
        self._thread.start()

    def record(self, rec: InstanceRecord) -> Recorded:
        return self.submit(rec).wait()

    def submit(self, rec: InstanceRecord) -> _Pending:
        """Queue ``rec`` for the next commit; ``wait()`` on the result blocks until it is committed."""
        pending = _Pending(rec)
        self._queue.put(pending)
        return pending

    def drop(self, sop_uid: str, path: str) -> None:
        """Delete the row of ``sop_uid`` if it still points at ``path`` (its file could not be written)."""
        with self._engine.begin() as conn:
            conn.execute(delete(Instance).where(Instance.sop_uid == sop_uid, Instance.path == path))

    def close(self) -> None:
        """Stop the writer thread, then make every commit it made durable (see :meth:`sync`)."""
        self._queue.put(None)
        self._thread.join(timeout=10)
        self.sync()

    def sync(self) -> None:
        """Force the commits made with ``synchronous=NORMAL`` to disk: fsync of the SQLite write-ahead log.

        Every committed transaction is in the log; syncing it is what ``synchronous=FULL`` would have done at
        each commit. Called before the spool's clean-stop marker is written, so a clean stop never needs
        the reconciliation walk.
        """
        if self._engine.dialect.name != "sqlite":
            return
        database = self._engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return
        try:
            fd = os.open(f"{database}-wal", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.invalidated or self._conn.closed:
            conn = self._engine.connect()
            if self._relaxed_sync and conn.dialect.name == "sqlite":
                # Outside any transaction (SQLite refuses to change the level inside one).
                conn.connection.dbapi_connection.execute("PRAGMA synchronous=NORMAL")  # type: ignore[union-attr]
            self._conn = conn
        return self._conn

    def _run(self) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < self.MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                self._commit(batch)
                if stop:
                    return
        finally:
            if self._conn is not None:
                self._conn.close()
            if self._raw is not None:
                self._raw.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _commit(self, batch: list[_Pending]) -> None:
        if self._engine.dialect.name == "sqlite":
            self._commit_sqlite(batch)
            return
        try:
            conn = self._connection()
            with conn.begin():
                now = self._now()
                for p in batch:
                    if len(batch) == 1:
                        p.result = record_instance(conn, p.rec, now)
                        continue
                    try:
                        with conn.begin_nested():
                            p.result = record_instance(conn, p.rec, now)
                    except Exception as exc:
                        p.error = exc
        except Exception as exc:
            for p in batch:
                p.result = None
                p.error = p.error or exc
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        for p in batch:
            p.done.set()

    def _sqlite(self) -> tuple[Any, _SqliteRecorder]:
        if self._raw is None or self._recorder is None:
            raw = self._engine.raw_connection()  # the engine's pragmas applied, isolation_level None
            if self._relaxed_sync:
                raw.dbapi_connection.execute("PRAGMA synchronous=NORMAL")  # type: ignore[union-attr]
            self._raw = raw
            self._recorder = _SqliteRecorder(raw.dbapi_connection)
        return self._raw.dbapi_connection, self._recorder

    def _commit_sqlite(self, batch: list[_Pending]) -> None:
        """As :meth:`_commit` on the driver's connection: BEGIN IMMEDIATE, a savepoint per request, COMMIT."""
        recorder: _SqliteRecorder | None = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            db, recorder = self._sqlite()
            db.execute("BEGIN IMMEDIATE")
            try:
                ts = _sqlite_time(self._now())
                for p in batch:
                    if len(batch) == 1:
                        p.result = recorder.record(p.rec, ts)
                        continue
                    db.execute("SAVEPOINT instance")
                    try:
                        p.result = recorder.record(p.rec, ts)
                    except Exception as exc:
                        p.error = exc
                        db.execute("ROLLBACK TO instance")
                        recorder.forget()
                    db.execute("RELEASE instance")
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    db.execute("ROLLBACK")
                raise
        except Exception as exc:
            for p in batch:
                p.result = None
                p.error = p.error or exc
            if recorder is not None:
                recorder.forget()
            if self._raw is not None:
                with contextlib.suppress(Exception):
                    self._raw.invalidate()
                self._raw = self._recorder = None
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        for p in batch:
            p.done.set()


@dataclass(slots=True)
class _Pending:
    rec: InstanceRecord
    done: threading.Event = field(default_factory=threading.Event)
    result: Recorded | None = None
    error: Exception | None = None

    def wait(self) -> Recorded:
        """The committed :class:`Recorded`, or the error that prevented the commit."""
        self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result
