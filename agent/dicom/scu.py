"""The agent as a DICOM client of the PACS: C-ECHO, C-FIND, C-MOVE / C-GET of prior SRs, C-STORE of results.

Every association uses the destination's own settings (``agent.config.PeerSettings``: AE title, host, port,
timeouts, maximum PDU) and has Nagle's algorithm off on its socket. Failures are split in two, because the
outbox treats them differently:

* :class:`TransientError`: no association (refused, rejected, unreachable), timeout, abort. Retry later.
* a DICOM failure status returned by the peer: :func:`classify_status` says whether it is worth retrying
  (out of resources, resource limitation) or permanent (the peer refuses this object).

Nothing here touches the database; retrieved instances are handed to a caller-supplied C-STORE handler
(C-GET) or arrive at our own listener (C-MOVE).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association

from agent.config import PeerSettings
from agent.dicom.transfer import TRANSFER_SYNTAXES
from agent.log import get_logger

log = get_logger(__name__)

Verification = "1.2.840.10008.1.1"
StudyRootQueryRetrieveInformationModelFind = "1.2.840.10008.5.1.4.1.2.2.1"
StudyRootQueryRetrieveInformationModelMove = "1.2.840.10008.5.1.4.1.2.2.2"
StudyRootQueryRetrieveInformationModelGet = "1.2.840.10008.5.1.4.1.2.2.3"
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
# SR storage classes we accept as C-GET storage SCP (the prior reports).
SR_STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.35",  # Extensible SR
)
SUCCESS_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}
# Failure statuses that say "not now" rather than "never": out of resources, resource limitation,
# duplicate invocation.
TRANSIENT_STATUSES = {0x0210, 0x0213}


class Outcome(StrEnum):
    OK = "ok"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


def classify_status(status: int | None) -> Outcome:
    """Success (and warnings), a failure worth retrying, or a permanent refusal."""
    if status is None:
        return Outcome.TRANSIENT
    if status in SUCCESS_STATUSES:
        return Outcome.OK
    if status in TRANSIENT_STATUSES or 0xA700 <= status <= 0xA7FF:
        return Outcome.TRANSIENT
    return Outcome.PERMANENT


class SCUError(Exception):
    """A DICOM operation with a peer did not complete."""


class TransientError(SCUError):
    """No association, a timeout or an abort: the same request may well succeed later."""


class StatusError(SCUError):
    """The peer answered with a failure status."""

    def __init__(self, operation: str, status: int) -> None:
        super().__init__(f"{operation}: status 0x{status:04X}")
        self.status = status
        self.outcome = classify_status(status)


@dataclass(frozen=True, slots=True)
class StudyMatch:
    study_uid: str
    study_date: str | None
    modalities: tuple[str, ...]
    description: str | None


@dataclass(frozen=True, slots=True)
class InstanceMatch:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str | None


@dataclass(frozen=True, slots=True)
class RetrieveResult:
    completed: int
    failed: int
    warning: int


@dataclass(frozen=True, slots=True)
class StoreItem:
    path: Path
    sop_class_uid: str
    sop_uid: str


@dataclass(frozen=True, slots=True)
class StoreResult:
    item: StoreItem
    outcome: Outcome
    status: int | None
    detail: str


def _set_nodelay(assoc: Association) -> None:
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _status(ds: Dataset | None) -> int | None:
    return int(ds.Status) if ds is not None and "Status" in ds else None


def _dicom_date(d: date) -> str:
    return d.strftime("%Y%m%d")


C_FIND_RSP = 0x8020  # Command Field of a C-FIND response


def _hold_reactor(assoc: Association, within_s: float) -> bool:
    """Stop the association's reactor at its checkpoint before a request; False if it did not stop in time.

    pynetdicom's ``send_c_*`` pause the reactor by clearing its checkpoint and waiting for ``_is_paused``;
    right after the previous request's final response sets the checkpoint again, the woken reactor still
    reads as paused, so the next request goes out while the reactor is about to read the response queue once
    more, and a quick answer is taken by it, logged as "Received unexpected C-FIND service message" and
    dropped. Here the checkpoint is cleared and the reactor seen blocked on it (a waiter on the event's
    condition, which only ``set`` wakes) before the request is sent; ``send_c_*`` then find it paused for
    real.
    """
    checkpoint = assoc._reactor_checkpoint
    checkpoint.clear()
    waiters = getattr(getattr(checkpoint, "_cond", None), "_waiters", None)
    deadline = time.monotonic() + within_s
    while not (assoc._is_paused and waiters):
        if not assoc.is_established or time.monotonic() > deadline:
            return False
        time.sleep(0.0002)
    return True


class _FindLedger:
    """What one query association received, counted as each message arrives (before anyone dequeues it).

    pynetdicom hands a C-FIND's responses to the caller through a queue that its association reactor also
    reads between requests; its pause handshake (``_reactor_checkpoint`` / ``_is_paused``) lets the reactor
    take a response that arrives just after the request is sent, log "Received unexpected C-FIND service
    message" and drop it: the C-FIND then ends with one match fewer and a success status. The DUL thread
    reports every decoded message (``EVT_DIMSE_RECV``) before queueing it, so comparing what arrived with
    what the C-FIND yielded tells a complete answer from a lossy one. Each request has its own Message ID,
    so a response to another request (a late one, a stray one) is told apart too.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: dict[int, int] = {}
        self._last_id = 0

    def on_message(self, event: Any) -> None:
        command = getattr(event.message, "command_set", None)
        if command is None or getattr(command, "CommandField", None) != C_FIND_RSP:
            return
        msg_id = int(getattr(command, "MessageIDBeingRespondedTo", None) or 0)
        with self._lock:
            self._received[msg_id] = self._received.get(msg_id, 0) + 1

    def next_id(self) -> int:
        with self._lock:
            self._last_id = self._last_id % 0xFFFF + 1
            return self._last_id

    def check(self, msg_id: int, delivered: int) -> str | None:
        """Why the C-FIND with ``msg_id`` is not known complete (``delivered`` responses), or None."""
        with self._lock:
            received = self._received.pop(msg_id, 0)
            others = sum(self._received.values())
        if others:
            return f"{others} response(s) to another request"
        if received != delivered:
            return f"{received} response(s) received, {delivered} delivered"
        return None


class PeerClient:
    """Operations against one configured peer; each call opens and releases its own association."""

    def __init__(
        self, name: str, peer: PeerSettings, calling_aet: str, tls: ssl.SSLContext | None = None
    ) -> None:
        self.name = name
        self.peer = peer
        self.calling_aet = calling_aet
        self.tls = tls
        self._find_assoc: Association | None = None
        self._find_ledger = _FindLedger()

    def _ae(self) -> AE:
        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = self.peer.acse_timeout_s
        ae.dimse_timeout = self.peer.dimse_timeout_s
        ae.network_timeout = self.peer.network_timeout_s
        ae.connection_timeout = self.peer.acse_timeout_s
        ae.maximum_pdu_size = self.peer.max_pdu
        return ae

    @contextlib.contextmanager
    def _association(
        self, ae: AE, ext_neg: list[Any] | None = None, handlers: list[Any] | None = None
    ) -> Iterator[Association]:
        p = self.peer
        try:
            assoc = ae.associate(
                p.host,
                p.port,
                ae_title=p.ae_title,
                ext_neg=ext_neg,
                evt_handlers=handlers,
                tls_args=(self.tls, "") if self.tls is not None else None,
            )
        except (OSError, RuntimeError) as exc:
            raise TransientError(f"{self.name}: cannot associate ({type(exc).__name__})") from exc
        if not assoc.is_established:
            reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no association"
            raise TransientError(f"{self.name}: {reason}")
        _set_nodelay(assoc)
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()
            else:
                with contextlib.suppress(Exception):
                    assoc.abort()

    def _ready(self, assoc: Association, operation: str) -> None:
        """Before each request: the association is up and its reactor held (see :func:`_hold_reactor`)."""
        if not _hold_reactor(assoc, self.peer.acse_timeout_s):
            self._check_alive(assoc, operation)
            raise TransientError(f"{self.name}: {operation}: association not ready for a request")

    def _check_alive(self, assoc: Association, operation: str) -> None:
        if not assoc.is_established:
            raise TransientError(f"{self.name}: {operation}: association lost (timeout or abort)")

    # -- verification ------------------------------------------------------------------------------------

    def echo(self) -> None:
        ae = self._ae()
        ae.add_requested_context(Verification)
        with self._association(ae) as assoc:
            self._ready(assoc, "C-ECHO")
            status = _status(assoc.send_c_echo())
            self._check_alive(assoc, "C-ECHO")
        if status != 0x0000:
            raise StatusError("C-ECHO", status if status is not None else 0xFFFF)

    # -- query -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def queries(self) -> Iterator[None]:
        """Run the C-FINDs made inside this block over one association (a search makes a dozen or more).

        A C-FIND that does not end cleanly (timeout, abort, a lost, stray or undecodable response) raises
        :class:`TransientError` and aborts the association: the block's later C-FINDs raise too, none is
        answered over an association whose state is unknown.
        """
        if self._find_assoc is not None:
            yield
            return
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        ledger = _FindLedger()
        with self._association(ae, handlers=[(evt.EVT_DIMSE_RECV, ledger.on_message)]) as assoc:
            self._find_assoc, self._find_ledger = assoc, ledger
            try:
                yield
            finally:
                self._find_assoc = None

    def find(self, identifier: Dataset) -> list[Dataset]:
        """C-FIND (Study Root) with ``identifier`` at its Query/Retrieve Level; the peer's matches."""
        return self._find(identifier)

    def _find(self, identifier: Dataset) -> list[Dataset]:
        if self._find_assoc is not None:
            return self._find_on(self._find_assoc, identifier)
        with self.queries():
            assert self._find_assoc is not None
            return self._find_on(self._find_assoc, identifier)

    def _find_on(self, assoc: Association, identifier: Dataset) -> list[Dataset]:
        """Every match of one C-FIND, or an error; the association is aborted on any error but a status."""
        self._check_alive(assoc, "C-FIND")
        ledger = self._find_ledger
        msg_id = ledger.next_id()
        out: list[Dataset] = []
        delivered = 0
        try:
            self._ready(assoc, "C-FIND")
            for status, ds in assoc.send_c_find(
                identifier, StudyRootQueryRetrieveInformationModelFind, msg_id=msg_id
            ):
                code = _status(status)
                if code is None:
                    raise TransientError(f"{self.name}: C-FIND: no response (timeout or abort)")
                delivered += 1
                if code in (0xFF00, 0xFF01):
                    if ds is None:
                        raise TransientError(f"{self.name}: C-FIND: undecodable match")
                    out.append(ds)
                elif code != 0x0000:
                    self._check_complete(ledger, msg_id, delivered)
                    raise StatusError("C-FIND", code)
            self._check_alive(assoc, "C-FIND")
            self._check_complete(ledger, msg_id, delivered)
        except StatusError:
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                assoc.abort()
            raise
        return out

    def _check_complete(self, ledger: _FindLedger, msg_id: int, delivered: int) -> None:
        problem = ledger.check(msg_id, delivered)
        if problem is not None:
            log.warning("scu.find_incomplete", peer=self.name, problem=problem)
            raise TransientError(f"{self.name}: C-FIND: responses lost or mismatched ({problem})")

    def find_studies(
        self,
        patient_id: str,
        issuer: str | None,
        since: date | None,
        until: date | None,
        modalities: Sequence[str],
    ) -> list[StudyMatch]:
        """Studies of the patient (Patient ID, plus Issuer when known) in the date window with a modality."""
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.PatientID = patient_id
        if issuer:
            q.IssuerOfPatientID = issuer
        q.StudyInstanceUID = ""
        window = f"{_dicom_date(since) if since else ''}-{_dicom_date(until) if until else ''}"
        q.StudyDate = "" if window == "-" else window
        q.ModalitiesInStudy = list(modalities) if modalities else ""
        q.StudyDescription = ""
        wanted = {m.upper() for m in modalities}
        matches = []
        for ds in self._find(q):
            uid = str(ds.get("StudyInstanceUID", "") or "")
            if not uid:
                continue
            mods_value = ds.get("ModalitiesInStudy", "") or []
            mods = tuple(str(m) for m in ([mods_value] if isinstance(mods_value, str) else mods_value))
            mods = tuple(m for m in mods if m)
            # Peers that ignore the modality key are filtered here; an empty list is kept (unknown).
            if wanted and mods and not wanted.intersection(m.upper() for m in mods):
                continue
            matches.append(
                StudyMatch(
                    study_uid=uid,
                    study_date=str(ds.get("StudyDate", "") or "") or None,
                    modalities=mods,
                    description=str(ds.get("StudyDescription", "") or "") or None,
                )
            )
        return matches

    def find_sr_instances(self, study_uid: str) -> list[InstanceMatch]:
        """The SR instances of a study: series level (Modality SR), then instance level for each series."""
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = ""
        q.Modality = "SR"
        series = [str(ds.SeriesInstanceUID) for ds in self._find(q) if ds.get("SeriesInstanceUID")]
        out: list[InstanceMatch] = []
        for series_uid in series:
            q = Dataset()
            q.QueryRetrieveLevel = "IMAGE"
            q.StudyInstanceUID = study_uid
            q.SeriesInstanceUID = series_uid
            q.SOPInstanceUID = ""
            q.SOPClassUID = ""
            for ds in self._find(q):
                sop = str(ds.get("SOPInstanceUID", "") or "")
                if sop:
                    out.append(
                        InstanceMatch(
                            study_uid, series_uid, sop, str(ds.get("SOPClassUID", "") or "") or None
                        )
                    )
        return out

    # -- retrieve ----------------------------------------------------------------------------------------

    @staticmethod
    def _retrieve_identifiers(instances: Sequence[InstanceMatch]) -> Iterator[Dataset]:
        by_series: dict[tuple[str, str], list[str]] = {}
        for inst in instances:
            by_series.setdefault((inst.study_uid, inst.series_uid), []).append(inst.sop_uid)
        for (study_uid, series_uid), sops in by_series.items():
            q = Dataset()
            q.QueryRetrieveLevel = "IMAGE"
            q.StudyInstanceUID = study_uid
            q.SeriesInstanceUID = series_uid
            q.SOPInstanceUID = sops if len(sops) > 1 else sops[0]
            yield q

    def _retrieve_responses(self, responses: Any, operation: str) -> RetrieveResult:
        completed = failed = warning = 0
        final: int | None = None
        for status, _ds in responses:
            code = _status(status)
            if code is None:
                raise TransientError(f"{self.name}: {operation}: no response (timeout or abort)")
            final = code
            if code in (0xFF00, 0xFF01):
                continue
            completed += int(status.get("NumberOfCompletedSuboperations", 0) or 0)
            failed += int(status.get("NumberOfFailedSuboperations", 0) or 0)
            warning += int(status.get("NumberOfWarningSuboperations", 0) or 0)
        if final is None:
            raise TransientError(f"{self.name}: {operation}: no final response")
        if final not in (0x0000, 0xB000) and classify_status(final) is not Outcome.OK:
            raise StatusError(operation, final)
        return RetrieveResult(completed, failed, warning)

    def move(self, instances: Sequence[InstanceMatch], destination: str) -> RetrieveResult:
        """C-MOVE the instances to ``destination`` (our own AE: they arrive at our listener)."""
        if not instances:
            return RetrieveResult(0, 0, 0)
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        total = RetrieveResult(0, 0, 0)
        with self._association(ae) as assoc:
            for q in self._retrieve_identifiers(instances):
                self._ready(assoc, "C-MOVE")
                r = self._retrieve_responses(
                    assoc.send_c_move(q, destination, StudyRootQueryRetrieveInformationModelMove), "C-MOVE"
                )
                total = RetrieveResult(
                    total.completed + r.completed, total.failed + r.failed, total.warning + r.warning
                )
            self._check_alive(assoc, "C-MOVE")
        return total

    def get(self, instances: Sequence[InstanceMatch], on_store: Callable[[Any], int]) -> RetrieveResult:
        """C-GET the instances; each arrives on this association and is handed to ``on_store(event)``."""
        if not instances:
            return RetrieveResult(0, 0, 0)
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        classes = sorted({i.sop_class_uid for i in instances if i.sop_class_uid} | set(SR_STORAGE_CLASSES))
        roles = []
        images = [uid for uid in classes if uid not in SR_STORAGE_CLASSES]
        for uid in classes:
            ae.add_requested_context(uid, list(UNCOMPRESSED))
            roles.append(build_role(uid, scp_role=True))
        # Images (e.g. the CT a prior measurement was made on) also as the PACS holds them: one context per
        # compressed transfer syntax, so the PACS can send each instance without transcoding it (a PACS may
        # not be able to decode a JPEG-LS or JPEG 2000 image it stores). At most 128 contexts in all.
        room = 127 - len(classes)
        for uid in images:
            for syntax in TRANSFER_SYNTAXES:
                if syntax not in UNCOMPRESSED and room > 0:
                    ae.add_requested_context(uid, [syntax])
                    room -= 1
        total = RetrieveResult(0, 0, 0)
        with self._association(ae, ext_neg=roles, handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:
            for q in self._retrieve_identifiers(instances):
                self._ready(assoc, "C-GET")
                r = self._retrieve_responses(
                    assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet), "C-GET"
                )
                total = RetrieveResult(
                    total.completed + r.completed, total.failed + r.failed, total.warning + r.warning
                )
            self._check_alive(assoc, "C-GET")
        return total

    # -- store -------------------------------------------------------------------------------------------

    def store(self, items: Sequence[StoreItem]) -> list[StoreResult]:
        """C-STORE each file over one association; one result per item, in order.

        Raises :class:`TransientError` when no association can be made at all. An item whose SOP class the
        peer did not accept gets a permanent outcome; items left when the association drops are transient.
        """
        if not items:
            return []
        ae = self._ae()
        for uid in dict.fromkeys(i.sop_class_uid for i in items):
            ae.add_requested_context(uid, list(UNCOMPRESSED))
        results: list[StoreResult] = []
        with self._association(ae) as assoc:
            accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
            for item in items:
                if not assoc.is_established or not _hold_reactor(assoc, self.peer.acse_timeout_s):
                    results.append(StoreResult(item, Outcome.TRANSIENT, None, "association lost"))
                    continue
                if item.sop_class_uid not in accepted:
                    results.append(
                        StoreResult(item, Outcome.PERMANENT, None, "SOP class not accepted by peer")
                    )
                    continue
                try:
                    rsp = assoc.send_c_store(item.path)
                except (OSError, ValueError) as exc:
                    results.append(StoreResult(item, Outcome.PERMANENT, None, f"cannot send file: {exc}"))
                    continue
                code = _status(rsp)
                detail = "no response (timeout or abort)" if code is None else f"status 0x{code:04X}"
                results.append(StoreResult(item, classify_status(code), code, detail))
        return results
