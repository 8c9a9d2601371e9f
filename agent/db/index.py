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
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, case, select
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

    ins = _insert(dialect, Study).values(
        study_uid=b("study_uid"),
        patient_pk=b("patient_pk"),
        study_date=b("study_date"),
        study_time=b("study_time"),
        accession_number=b("accession_number"),
        description=b("study_description"),
        state=StudyState.RECEIVING.value,
        first_received_at=b("now"),
        last_received_at=b("now"),
        receiving_since=b("now"),
        updated_at=b("now"),
    )
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

    ins = _insert(dialect, Study).values(
        study_uid=b("study_uid"),
        patient_pk=b("patient_pk"),
        study_date=b("study_date"),
        study_time=b("study_time"),
        accession_number=b("accession_number"),
        description=b("study_description"),
        state=StudyState.PRIOR.value,
        first_received_at=b("now"),
        last_received_at=b("now"),
        receiving_since=b("now"),
        updated_at=b("now"),
    )
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

    def __init__(self, engine: Engine, now: Callable[[], datetime], relaxed_sync: bool = True) -> None:
        self._engine = engine
        self._now = now
        self._relaxed_sync = relaxed_sync
        self._conn: Connection | None = None
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="index-writer", daemon=True)
        self._thread.start()

    def record(self, rec: InstanceRecord) -> Recorded:
        pending = _Pending(rec)
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

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

    def _commit(self, batch: list[_Pending]) -> None:
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


@dataclass(slots=True)
class _Pending:
    rec: InstanceRecord
    done: threading.Event = field(default_factory=threading.Event)
    result: Recorded | None = None
    error: Exception | None = None
