"""Several nodes on one database: heartbeats, which node holds a study's files, and fetching what is missing.

Any number of ``serve`` processes, on any number of hosts, may share one PostgreSQL database; each is a node
(``node.name``, default the host name). The spool is per node, so a study's job runs on the node that holds
its files while that node is alive:

* every node writes a heartbeat (:func:`heartbeat`, every ``node.heartbeat_s``);
* before claiming work a node adopts the studies whose files are in its own spool (:func:`adopt`);
* a ``process_study`` job is claimable by the study's node, or by any node once that node has been silent
  for ``node.dead_after_s`` (or when no node adopted the study within that time) (:func:`may_run`);
* the node that takes a study over retrieves what the job reads and it does not hold, one instance per series
  and every SR of the patient, from the PACS through the ``Peer`` interface (:func:`fetch_missing`); the
  files arrive at its own listener and are indexed like any retrieved instance, and the node adopts the study.

Jobs, deliveries and alerts are leased rows (``agent.queue``): each is done by one node at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from agent.config import Settings
from agent.db.models import Instance, Node, Series, Study, StudyState, utcnow
from agent.log import get_logger, uid_hash
from agent.peers import InstanceMatch, PeerError, Receiver, peers_for

log = get_logger(__name__)

SR_ROOT = "1.2.840.10008.5.1.4.1.1.88."
_ACTIVE = (StudyState.RECEIVING.value, StudyState.STABLE.value, StudyState.PROCESSING.value)


def heartbeat(sessions: sessionmaker[Session], name: str, now: datetime | None = None) -> None:
    """Record that node ``name`` is alive."""
    now = now or utcnow()
    with sessions.begin() as session:
        node = session.get(Node, name)
        if node is None:
            session.add(Node(name=name, started_at=now, seen_at=now))
        else:
            node.seen_at = now


def _live(dead_after_s: float, now: datetime) -> Select[Any]:
    return select(Node.name).where(Node.seen_at >= now - timedelta(seconds=dead_after_s))


def adopt(
    sessions: sessionmaker[Session],
    name: str,
    spool_root: Path,
    dead_after_s: float,
    now: datetime | None = None,
) -> int:
    """Claim as ours the active studies without a live holder whose files are in our spool (the count)."""
    now = now or utcnow()
    with sessions() as session:
        rows = session.execute(
            select(
                Study.id,
                Study.node,
                select(func.min(Instance.path))
                .join(Series, Series.id == Instance.series_pk)
                .where(Series.study_pk == Study.id)
                .scalar_subquery(),
            ).where(
                Study.state.in_(_ACTIVE),
                or_(
                    Study.node.is_(None),
                    and_(Study.node != name, Study.node.not_in(_live(dead_after_s, now))),
                ),
            )
        ).all()
    mine = [(pk, holder) for pk, holder, path in rows if path and (spool_root / path).is_file()]
    adopted = 0
    for pk, holder in mine:
        with sessions.begin() as session:
            held = Study.node.is_(None) if holder is None else Study.node == holder
            result = session.execute(
                update(Study)
                .where(Study.id == pk, held)
                .values(node=name)
                .execution_options(synchronize_session=False)
            )
            adopted += result.rowcount  # type: ignore[attr-defined]
    if adopted:
        log.info("node.adopted", node=name, studies=adopted)
    return adopted


def may_run(name: str, dead_after_s: float, now: datetime) -> ColumnElement[bool]:
    """The studies whose job node ``name`` may run: its own, a silent node's, or unadopted for too long."""
    cutoff = now - timedelta(seconds=dead_after_s)
    return or_(
        Study.node == name,
        and_(Study.node.is_not(None), Study.node.not_in(_live(dead_after_s, now))),
        and_(Study.node.is_(None), or_(Study.stable_at.is_(None), Study.stable_at < cutoff)),
    )


def take_over(sessions: sessionmaker[Session], study_pk: int, name: str) -> None:
    """The study's files now come to this node."""
    with sessions.begin() as session:
        session.execute(update(Study).where(Study.id == study_pk).values(node=name))


def needed_instances(session: Session, patient_pk: int) -> list[tuple[str, str, str, str, str]]:
    """(study, series, SOP instance, SOP class, path) of what a job of the patient reads: the first
    instance of each series, and every SR instance."""
    first = (
        select(func.min(Instance.id))
        .join(Series, Series.id == Instance.series_pk)
        .join(Study, Study.id == Series.study_pk)
        .where(Study.patient_pk == patient_pk)
        .group_by(Series.id)
    )
    query = (
        select(Study.study_uid, Series.series_uid, Instance.sop_uid, Instance.sop_class_uid, Instance.path)
        .join(Series, Series.id == Instance.series_pk)
        .join(Study, Study.id == Series.study_pk)
        .where(
            Study.patient_pk == patient_pk,
            or_(Instance.id.in_(first), Instance.sop_class_uid.startswith(SR_ROOT)),
        )
        .order_by(Instance.id)
    )
    return [tuple(r) for r in session.execute(query).all()]  # type: ignore[misc]


def fetch_missing(
    sessions: sessionmaker[Session],
    settings: Settings,
    patient_pk: int,
    store_handler: Callable[[Any], int] | None,
    is_ours: Callable[[str], bool],
    store_file: Callable[[bytes | memoryview, str], int] | None = None,
) -> int:
    """Retrieve from the PACS what a job of the patient reads and this node's spool lacks.

    Returns the number of instances retrieved; raises :class:`agent.peers.PeerError` when no peer could
    provide them (the job is retried later).
    """
    spool_root = Path(settings.storage.spool_dir)
    with sessions() as session:
        rows = needed_instances(session, patient_pk)
    missing = [
        InstanceMatch(study, series, sop, cls)
        for study, series, sop, cls, path in rows
        if not (spool_root / path).is_file() and not is_ours(sop)
    ]
    if not missing:
        return 0
    receiver = Receiver(settings.dicom.ae_title, store_handler, store_file)
    error: PeerError | None = None
    peers = peers_for(settings.peers, settings.dicom.ae_title, query_retrieve=True)
    if not peers:  # nowhere to fetch from: the job reads what there is
        log.warning("node.files_missing", wanted=len(missing), study=uid_hash(missing[0].study_uid))
        return 0
    for peer in peers:
        try:
            result = peer.retrieve(missing, receiver)
        except PeerError as exc:
            error = exc
            continue
        log.info(
            "node.fetched",
            peer=peer.name,
            wanted=len(missing),
            completed=result.completed,
            failed=result.failed,
            study=uid_hash(missing[0].study_uid),
        )
        return result.completed
    assert error is not None
    raise error

