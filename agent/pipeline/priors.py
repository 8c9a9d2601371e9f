"""Gather a patient's measurement SRs: the local index first, then the PACS.

1. **Local**: every SR instance of the patient already in the index (the PACS routed it to us, or an
   earlier run retrieved it), in any of the patient's studies, the current one included.
2. **PACS**: on each peer configured for query/retrieve (through the ``agent.peers.Peer`` interface), find
   the patient's studies (Patient ID, plus Issuer of Patient ID when known) in the window
   ``pipeline.prior_years`` before the current study, modalities ``pipeline.prior_modalities``; then their
   SR series and instances; the SR instances not held locally are retrieved into the agent (a DIMSE peer:
   C-MOVE to our own AE, or C-GET handed to the listener's C-STORE handler; a DICOMweb peer: WADO-RS, each
   file handed to the listener's ``store_retrieved``) and indexed like any other retrieved instance.

Our own output (SOP Instance UIDs under ``uids.org_root``) is never an input. Each peer's answer, or its
silence (no association, timeout, abort), is reported to ``agent.pipeline.health`` (``PACS_UNREACHABLE``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from agent.config import Settings
from agent.db.models import Instance, Series, Study
from agent.log import get_logger, uid_hash
from agent.peers import InstanceMatch, Peer, PeerUnreachable, Receiver, build_peer
from agent.pipeline.health import AlertPolicy, peer_answered, peer_unreachable, unreachable_peers
from agent.sr.values import parse_da

log = get_logger(__name__)

SR_ROOT = "1.2.840.10008.5.1.4.1.1.88."


class StoreHandler(Protocol):
    def __call__(self, event: Any) -> int: ...


class StoreFile(Protocol):
    def __call__(self, data: bytes | memoryview, source: str) -> int: ...


@dataclass(frozen=True, slots=True)
class LocalSR:
    study_uid: str
    study_date: str | None
    sop_uid: str
    path: Path


@dataclass
class PriorSearch:
    reports: list[LocalSR]
    studies_found: int = 0
    retrieved: int = 0
    find_s: float = 0.0
    retrieve_s: float = 0.0
    warnings: list[str] = field(default_factory=list)


def is_ours(sop_uid: str, org_root: str) -> bool:
    return sop_uid.startswith(org_root)


def local_srs(session: Session, patient_pk: int, spool_root: Path, org_root: str) -> list[LocalSR]:
    rows = session.execute(
        select(Study.study_uid, Study.study_date, Instance.sop_uid, Instance.path)
        .join(Series, Series.study_pk == Study.id)
        .join(Instance, Instance.series_pk == Series.id)
        .where(Study.patient_pk == patient_pk, Instance.sop_class_uid.startswith(SR_ROOT))
        .order_by(Study.study_date, Instance.sop_uid)
    ).all()
    return [
        LocalSR(study_uid, study_date, sop_uid, spool_root / path)
        for study_uid, study_date, sop_uid, path in rows
        if not is_ours(sop_uid, org_root)
    ]


def gather(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    patient_pk: int,
    patient_id: str,
    issuer: str | None,
    study_uid: str,
    study_date: str | None,
    store_handler: StoreHandler | None,
    policy: AlertPolicy | None = None,
    store_file: StoreFile | None = None,
) -> PriorSearch:
    """All usable SRs of the patient after looking in the index and on every query/retrieve peer.

    Raises :class:`agent.peers.PeerError` when a peer cannot be queried or retrieval fails: the caller
    retries the job later rather than assessing without the priors.
    """
    spool_root = Path(settings.storage.spool_dir)
    org_root = settings.uids.org_root
    policy = policy or AlertPolicy.from_settings(settings)
    with sessions() as session:
        local = local_srs(session, patient_pk, spool_root, org_root)
        silent = unreachable_peers(session)
    known = {r.sop_uid for r in local}
    search = PriorSearch(reports=local)
    until = parse_da(study_date) or date.today()
    since = until - timedelta(days=round(365.25 * settings.pipeline.prior_years))
    for name, peer in settings.peers.items():
        if not peer.query_retrieve:
            continue
        try:
            _search_peer(
                build_peer(name, peer, settings.dicom.ae_title),
                search,
                known,
                settings,
                patient_id=patient_id,
                issuer=issuer,
                study_uid=study_uid,
                window=(since, until),
                receiver=Receiver(settings.dicom.ae_title, store_handler, store_file),
            )
        except PeerUnreachable as exc:
            with sessions.begin() as session:
                peer_unreachable(session, name, str(exc), policy)
            raise
        if name in silent:
            with sessions.begin() as session:
                peer_answered(session, name)
    if search.retrieved:
        with sessions() as session:
            search.reports = local_srs(session, patient_pk, spool_root, org_root)
    return search


def _search_peer(
    client: Peer,
    search: PriorSearch,
    known: set[str],
    settings: Settings,
    *,
    patient_id: str,
    issuer: str | None,
    study_uid: str,
    window: tuple[date, date],
    receiver: Receiver,
) -> None:
    """Find the patient's SR instances on one peer and retrieve those we do not hold (into ``search``)."""
    org_root = settings.uids.org_root
    t0 = time.perf_counter()
    wanted: list[InstanceMatch] = []
    with client.session():  # every query of the search over one association
        studies = client.find_studies(
            patient_id, issuer or None, window[0], window[1], settings.pipeline.prior_modalities
        )
        for match in studies:
            if match.modalities and "SR" not in {m.upper() for m in match.modalities}:
                continue
            for inst in client.find_sr_instances(match.study_uid):
                if inst.sop_uid in known or is_ours(inst.sop_uid, org_root):
                    continue
                known.add(inst.sop_uid)
                wanted.append(inst)
    search.find_s += time.perf_counter() - t0
    search.studies_found += len(studies)
    if not wanted:
        return
    t0 = time.perf_counter()
    result = client.retrieve(wanted, receiver)
    search.retrieve_s += time.perf_counter() - t0
    search.retrieved += result.completed
    if result.failed:
        search.warnings.append(f"{client.name}: {result.failed} prior SR(s) could not be retrieved")
    log.info(
        "priors.retrieved",
        peer=client.name,
        type=client.kind,
        study=uid_hash(study_uid),
        wanted=len(wanted),
        completed=result.completed,
        failed=result.failed,
    )
