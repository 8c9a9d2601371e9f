"""The DICOM listener: C-ECHO and C-STORE SCP on pynetdicom.

The C-STORE handler is the hot path and does only this: read the identifying attributes from the received
bytes (never decoding the dataset), validate them, write the bytes as received to the spool (fsync), index
the instance in one short transaction, and only then answer success. It never parses SR content, queries a
PACS or computes anything; the pipeline picks the study up from the database.

Statuses: 0x0000 success; 0xA700 out of resources (spool under its free-space floor, I/O or database error);
0xA900 data set does not match SOP class (identifying attribute missing, encoded with a VR other than the
dictionary's, or not matching the request); 0xA700 also for a deflated dataset whose identifying attributes
are not within ``dicom.deflated_prefix_max_bytes`` once inflated;
0xC000 cannot understand (bytes that do not parse, or a UID that is not a valid DICOM UID).

:meth:`StoreSCP.store_file` files a whole Part 10 file (a STOW-RS part, a WADO-RS answer) through the same
path: its File Meta Information stands in for the C-STORE request (transfer syntax, SOP Class and Instance
UIDs), a storage class or transfer syntax the listener would not negotiate is refused (0x0122, 0xC122), and
the dataset bytes are stored as received under our own File Meta Information.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import _STORAGE_CLASSES
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.orm import Session, sessionmaker

from agent.config import DicomSettings
from agent.db.index import RETRIEVED, ROUTED, IndexWriter, InstanceRecord
from agent.db.models import utcnow
from agent.dicom.counters import ReceiveCounters
from agent.dicom.header import HeaderError, Identity, PrefixTooLong, WrongVR, read_file_meta, read_identity
from agent.dicom.reactor import Admission, EventRequestHandler, Rejecter, Slot, StoreCommand
from agent.dicom.spool import PREAMBLE, Spool, SpoolError, is_valid_uid, write_all
from agent.dicom.transfer import TRANSFER_SYNTAXES
from agent.log import get_logger, uid_hash

log = get_logger(__name__)

IMPLEMENTATION_CLASS_UID = "2.25.208329370317461296372539217536313711491.1.1"
IMPLEMENTATION_VERSION_NAME = "LIVERAGENT_01"

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
# Failure reasons of a Part 10 file the listener would have refused at association negotiation.
SOP_CLASS_NOT_SUPPORTED = 0x0122
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122

# Storage SOP classes accepted, by family. SR takes every class under the SR root (.88), so new SR
# storage classes known to pynetdicom are accepted without a code change.
_STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."
_SR_ROOT = _STORAGE_ROOT + "88."
ACCEPTED_FAMILIES: dict[str, tuple[str, ...]] = {
    "CT": ("2", "2.1", "2.2"),
    "MR": ("4", "4.1", "4.2", "4.3", "4.4"),
    "Secondary Capture": ("7", "7.1", "7.2", "7.3", "7.4"),
    "Segmentation": ("66.4", "66.5", "66.7", "66.8"),
    "Encapsulated PDF": ("104.1",),
}

VERIFICATION = "1.2.840.10008.1.1"


def accepted_storage_classes() -> dict[str, str]:
    """SOP Class UID -> pynetdicom keyword of every storage class the SCP accepts."""
    wanted = {_STORAGE_ROOT + suffix for suffixes in ACCEPTED_FAMILIES.values() for suffix in suffixes}
    out = {}
    for name, uid in _STORAGE_CLASSES.items():
        if uid in wanted or uid.startswith(_SR_ROOT):
            out[uid] = name
    return dict(sorted(out.items()))


def supported_contexts() -> list[PresentationContext]:
    contexts = [build_context(VERIFICATION, ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])]
    contexts += [build_context(uid, list(TRANSFER_SYNTAXES)) for uid in accepted_storage_classes()]
    return contexts


class NoDelayAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with bounded admission, TCP_NODELAY and TLS off the accept thread.

    Each accepted connection takes a slot of ``admission`` (see ``reactor.Admission``) before any thread is
    started for it; one refused is answered by ``rejecter`` on its single thread. Without TCP_NODELAY, small
    PDUs (C-STORE responses, the last fragment of a dataset) wait for Nagle's algorithm and delayed ACKs,
    capping a peer at a few dozen instances per second. The TLS handshake runs in the connection's own
    thread (bounded by ``handshake_timeout_s``), so a slow or silent client never holds up the accept loop.
    """

    handshake_timeout_s: float = 30.0
    # Receives C-STORE requests on the reactor's short road (None: through pynetdicom's events).
    store_target: Any = None
    admission: Admission
    rejecter: Rejecter
    # The admission slot of the connection being set up, for the association created in the same thread.
    connection: threading.local

    def limit(self, max_associations: int) -> None:
        self.admission = Admission(max_associations)
        self.rejecter = Rejecter()
        self.connection = threading.local()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        with contextlib.suppress(OSError):
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def process_request(self, request: Any, client_address: Any) -> None:
        """In the accept thread: a slot and a thread for the connection, or the standard rejection."""
        peer = str(client_address[0])
        slot = self.admission.admit(request, peer)
        if slot is None:
            self.rejecter.reject(request, peer)
            return
        thread = threading.Thread(
            target=self._serve_connection, args=(request, client_address, slot), name="scp-connection"
        )
        thread.daemon = True
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any, slot: Slot) -> None:
        """The TLS handshake, then the association (whose thread gives the slot back when it ends)."""
        started = False
        try:
            if self.ssl_context:
                raw = request
                try:
                    raw.settimeout(self.handshake_timeout_s)
                    request = self.ssl_context.wrap_socket(
                        raw, server_side=True, do_handshake_on_connect=False
                    )
                    slot.sock = request  # the wrapped socket owns the connection now (eviction shuts it)
                    request.do_handshake()
                    request.settimeout(None)
                except (ssl.SSLError, OSError) as exc:
                    log.warning(
                        "scp.association.rejected",
                        reason="tls_handshake_failed",
                        peer=client_address[0],
                        detail=type(exc).__name__,
                    )
                    for sock in (request, raw):  # the wrapped socket, or the raw one if wrapping failed
                        with contextlib.suppress(OSError):
                            sock.close()
                    return
            self.connection.slot = slot
            try:
                self.finish_request(request, client_address)
                started = slot.dul is not None
            finally:
                self.connection.slot = None
        except Exception as exc:
            log.warning("scp.association.aborted", reason="could not be set up", error=type(exc).__name__)
            with contextlib.suppress(OSError):
                request.close()
        finally:
            if not started:
                slot.release()

    def server_close(self) -> None:
        super().server_close()
        rejecter = getattr(self, "rejecter", None)
        if rejecter is not None:
            rejecter.stop()


# File meta Private Information (0002,0102) of an instance we retrieved, under our Private Information
# Creator UID (0002,0100): lets the start-up reconciliation re-index it with its origin.
RETRIEVED_MARK = b"retrieved\0"


def file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_aet: str, origin: str = ROUTED
) -> bytes:
    """Preamble, ``DICM`` and an encoded File Meta Information group (PS3.10 §7.1)."""
    private = b""
    if origin == RETRIEVED:
        private = _meta_element(0x0100, b"UI", _ui(IMPLEMENTATION_CLASS_UID)) + _meta_element(
            0x0102, b"OB", RETRIEVED_MARK
        )
    body = b"".join(
        (
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", _ui(sop_class_uid)),
            _meta_element(0x0003, b"UI", _ui(sop_instance_uid)),
            _meta_element(0x0010, b"UI", _ui(transfer_syntax)),
            _meta_element(0x0012, b"UI", _ui(IMPLEMENTATION_CLASS_UID)),
            _meta_element(0x0013, b"SH", _text(IMPLEMENTATION_VERSION_NAME)),
            _meta_element(0x0016, b"AE", _text(source_aet)) if source_aet else b"",
            private,
        )
    )
    return PREAMBLE + struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(body)) + body


def _meta_element(elem: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2s2xI", 2, elem, vr, len(value)) + value
    return struct.pack("<HH2sH", 2, elem, vr, len(value)) + value


def _ui(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


class Refusal(Exception):
    """The instance is refused with a DICOM failure status; ``reason`` goes to the log (no patient data)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class SharedSocketAssociationServer(NoDelayAssociationServer):
    """The server of one of several receiver processes accepting on one listening socket (made before the
    fork, non-blocking). Every idle process is woken by a new connection and the first to ``accept`` takes it,
    so a process busy with an association leaves the next one to another process; the others find nothing
    to accept and wait again.
    """

    listener: socket.socket | None = None

    def server_bind(self) -> None:
        assert self.socket is not None and self.listener is not None
        self.socket.close()
        self.socket = self.listener
        self.server_address = self.listener.getsockname()

    def server_activate(self) -> None:
        pass  # listening since before the fork

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        if self.admission.full():
            # Every slot holds an association: leave the connection to a process with room, if any is
            # quick enough; else take it, and refuse it with the standard rejection.
            time.sleep(FULL_PROCESS_DEFERS_S)
        client, address = super().get_request()  # BlockingIOError: another process took it
        client.setblocking(True)
        return client, address

    def server_close(self) -> None:
        # close, never shutdown(): the listening socket is the other receiver processes' as well
        assert self.socket is not None
        self.socket.close()
        self.rejecter.stop()


# How long a receiver process with every slot taken waits before accepting (another process may take it).
FULL_PROCESS_DEFERS_S = 0.02


def shared_listener(host: str, port: int) -> socket.socket:
    """The listening socket the receiver processes share (``serve`` makes it before forking them)."""
    sock = socket.create_server((host, port), backlog=128)
    sock.setblocking(False)
    return sock


class StoreSCP:
    """The listening AE: owns the pynetdicom server, the spool and the per-instance indexing.

    ``listener``: a listening socket shared with other receiver processes (see ``dicom.receiver_processes``);
    ``writer_lock``: a file whose ``flock`` the index writers of those processes take around each commit.
    """

    def __init__(
        self,
        settings: DicomSettings,
        spool: Spool,
        sessions: sessionmaker[Session],
        listener: socket.socket | None = None,
        writer_lock: Path | None = None,
        counters: ReceiveCounters | None = None,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.sessions = sessions
        self.listener = listener
        self.counters = counters or ReceiveCounters()
        self.server: NoDelayAssociationServer | None = None
        self._thread: threading.Thread | None = None
        # Concurrent associations share index commits instead of queueing on the database write lock.
        self.index = IndexWriter(sessions.kw["bind"], utcnow, lock_path=writer_lock)
        self.own_aet = settings.ae_title.strip()
        self.ae = self._build_ae()

    def _build_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        # The listener's admission control holds the limit (reactor.Admission); pynetdicom's own count of
        # association threads may briefly include connections just evicted, so it only backs it up.
        ae.maximum_associations = 2 * s.max_associations
        ae.maximum_pdu_size = s.max_pdu
        ae.acse_timeout = s.acse_timeout_s
        ae.dimse_timeout = s.dimse_timeout_s
        ae.network_timeout = s.network_timeout_s
        ae.require_called_aet = True
        ae.require_calling_aet = list(s.accepted_calling_aets)
        ae.supported_contexts = supported_contexts()
        return ae

    def _server_class(self) -> type[NoDelayAssociationServer]:
        if self.listener is None:
            return NoDelayAssociationServer
        return type("ReceiverServer", (SharedSocketAssociationServer,), {"listener": self.listener})

    def ssl_context(self) -> ssl.SSLContext | None:
        tls = self.settings.tls
        if not tls.enabled:
            return None
        if tls.certificate is None or tls.private_key is None:
            raise ValueError("dicom.tls.enabled needs dicom.tls.certificate and dicom.tls.private_key")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(certfile=str(tls.certificate), keyfile=str(tls.private_key))
        if tls.ca_certificate is not None:
            ctx.load_verify_locations(cafile=str(tls.ca_certificate))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    @property
    def listening(self) -> bool:
        """The listener is accepting associations (readiness)."""
        return self.server is not None and self._thread is not None and self._thread.is_alive()

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ABORTED, self._on_aborted),
        ]
        server = cast(
            NoDelayAssociationServer,
            self.ae.make_server(
                (self.settings.host, self.settings.port),
                evt_handlers=handlers,
                ssl_context=self.ssl_context(),
                server_class=self._server_class(),
                request_handler=EventRequestHandler,
            ),
        )
        server.handshake_timeout_s = self.settings.acse_timeout_s
        server.limit(self.settings.max_associations)
        server.store_target = self
        self.ae._servers.append(server)
        self._thread = threading.Thread(target=server.serve_forever, name="scp-acceptor", daemon=True)
        self._thread.start()
        self.server = server
        host, port = self.address
        log.info(
            "scp.listening",
            ae_title=self.settings.ae_title,
            host=host,
            port=port,
            tls=self.settings.tls.enabled,
            storage_classes=len(accepted_storage_classes()),
            pid=os.getpid(),
        )

    def stop(self, grace_s: float) -> int:
        """Stop accepting, wait up to ``grace_s`` for in-flight associations, abort the rest.

        Returns the number of associations aborted.
        """
        if self.server is None:
            return 0
        server, self.server = self.server, None
        server.shutdown()
        deadline = time.monotonic() + grace_s
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        remaining = server.active_associations
        for assoc in remaining:
            assoc.abort()
        for assoc in remaining:
            assoc.join(timeout=5)
        log.info("scp.stopped", aborted=len(remaining))
        return len(remaining)

    # -- handlers ----------------------------------------------------------------------------------------

    def _on_echo(self, event: Any) -> int:
        return SUCCESS

    def _on_accepted(self, event: Any) -> None:
        self.counters.association_accepted()
        req = event.assoc.requestor
        log.info(
            "scp.association.accepted",
            calling_aet=req.ae_title,
            peer=req.address,
            contexts=len(event.assoc.accepted_contexts),
            pid=os.getpid(),
        )

    def _on_rejected(self, event: Any) -> None:
        self.counters.association_rejected()
        req = event.assoc.requestor
        log.warning(
            "scp.association.rejected",
            calling_aet=req.ae_title,
            called_aet=event.assoc.acceptor.ae_title,
            peer=req.address,
        )

    def _on_aborted(self, event: Any) -> None:
        log.warning(
            "scp.association.aborted",
            reason="aborted by the peer",
            calling_aet=event.assoc.requestor.ae_title,
        )

    def origin(self, command: StoreCommand) -> str:
        """``retrieved`` when the request answers a C-MOVE we issued (its Move Originator is our AE title)."""
        return RETRIEVED if command.move_originator.strip() == self.own_aet else ROUTED

    def handle_store(self, event: Any) -> int:
        """pynetdicom's C-STORE event (associations we open, like C-GET, and requests off the short road).

        Every instance arriving on an association we requested answers our own retrieval (C-GET).
        """
        req = event.request
        calling = event.assoc.requestor.ae_title
        data: bytes = req.DataSet.getvalue()
        command = StoreCommand(
            0,
            str(req.AffectedSOPClassUID or ""),
            str(req.AffectedSOPInstanceUID or ""),
            str(req.MoveOriginatorApplicationEntityTitle or ""),
        )
        origin = RETRIEVED if event.assoc.is_requestor else self.origin(command)
        syntax = event.context.transfer_syntax
        return self._answer(
            calling, command, lambda: self._file(data, None, syntax, calling, command, origin)
        )

    def store_file(self, data: bytes | memoryview, source: str = "", origin: str = ROUTED) -> int:
        """File one Part 10 file (preamble, File Meta Information, dataset); return the DICOM status.

        ``source`` names the sender in the log and the index (``calling_aet``): a token name for STOW-RS, a
        peer name for WADO-RS. Success means the dataset is on disk (fsync) and indexed.
        """
        view = memoryview(data)
        source = "".join(c for c in source if c.isprintable() and c != "\\")[:16].strip()
        try:
            meta = read_file_meta(view)
        except HeaderError as exc:
            reason = f"unparseable file meta: {exc}"
            unknown = StoreCommand(0, "", "", "")
            return self._answer(source, unknown, lambda: _refuse(CANNOT_UNDERSTAND, reason))
        command = StoreCommand(0, meta.sop_class_uid or "", meta.sop_instance_uid or "", "")
        if command.sop_class_uid not in _ACCEPTED:
            return self._answer(
                source, command, lambda: _refuse(SOP_CLASS_NOT_SUPPORTED, "storage class not accepted")
            )
        if meta.transfer_syntax not in TRANSFER_SYNTAXES:
            return self._answer(
                source,
                command,
                lambda: _refuse(TRANSFER_SYNTAX_NOT_SUPPORTED, "transfer syntax not accepted"),
            )
        dataset = view[meta.dataset_offset :]
        return self._answer(
            source,
            command,
            lambda: self._file(dataset, None, meta.transfer_syntax, source, command, origin),
        )

    def store_retrieved(self, data: bytes | memoryview, source: str) -> int:
        """File a Part 10 file we retrieved ourselves (WADO-RS): origin ``retrieved``, like C-MOVE/C-GET."""
        return self.store_file(data, source, RETRIEVED)

    def begin(self, assoc: Any, transfer_syntax: str, command: StoreCommand) -> IncomingInstance:
        """Start receiving one instance on the reactor's short road (``reactor.StoreTarget``)."""
        return IncomingInstance(
            self, str(assoc.requestor.ae_title), transfer_syntax, command, self.origin(command)
        )

    def _answer(self, calling: str, command: StoreCommand, store: Callable[[], int]) -> int:
        """Run ``store`` and turn a refusal or an unexpected error into its status and log event."""
        try:
            return store()
        except Refusal as refusal:
            log.warning(
                "scp.store.refused",
                status=f"0x{refusal.status:04X}",
                reason=refusal.reason,
                calling_aet=calling,
                sop_class=command.sop_class_uid,
            )
            self.counters.refused(f"0x{refusal.status:04X}")
            return refusal.status
        except Exception as exc:  # a bug must not take the association (or the service) down
            log.error("scp.store.failed", error=type(exc).__name__, calling_aet=calling)
            self.counters.refused(f"0x{OUT_OF_RESOURCES:04X}")
            return OUT_OF_RESOURCES

    def _file(
        self,
        data: bytes | bytearray | memoryview | None,
        spilled: IncomingInstance | None,
        transfer_syntax: str,
        calling: str,
        command: StoreCommand,
        origin: str = ROUTED,
        after: list[Callable[[], None]] | None = None,
    ) -> int:
        """Validate, spool durably and index one received instance; return the status to answer.

        ``data`` is the whole dataset in memory, or ``spilled`` the instance already written (file meta and
        dataset) to a file in the spool's ``.incoming/``. The log event and counters of a stored instance go
        to ``after`` when given (run once the response is sent), else they are done here.
        """
        if spilled is not None:
            ident = spilled.identity()
        else:
            assert data is not None
            try:
                ident = read_identity(data, transfer_syntax, self.settings.deflated_prefix_max_bytes)
            except HeaderError as exc:
                raise header_refusal(exc) from None
        uids = {
            "sop_instance_uid": ident.sop_instance_uid,
            "study_uid": ident.study_uid,
            "series_uid": ident.series_uid,
            "sop_class_uid": ident.sop_class_uid,
        }
        for name, value in uids.items():
            if value is None:
                raise Refusal(DATASET_DOES_NOT_MATCH, f"missing {name}")
            if not is_valid_uid(value):
                raise Refusal(CANNOT_UNDERSTAND, f"invalid {name}")
        if not ident.patient_id:
            raise Refusal(DATASET_DOES_NOT_MATCH, "missing patient_id")
        if ident.sop_instance_uid != command.sop_instance_uid:
            raise Refusal(DATASET_DOES_NOT_MATCH, "sop_instance_uid differs from the request")
        if ident.sop_class_uid != command.sop_class_uid:
            raise Refusal(DATASET_DOES_NOT_MATCH, "sop_class_uid differs from the request")
        assert ident.study_uid and ident.series_uid and ident.sop_instance_uid and ident.sop_class_uid

        relative = self.spool.relative_path(ident.study_uid, ident.series_uid, ident.sop_instance_uid)
        meta = b""
        if spilled is not None:
            size = spilled.size
            incoming = 0
        else:
            assert data is not None
            meta = file_meta(ident.sop_class_uid, ident.sop_instance_uid, transfer_syntax, calling, origin)
            size = incoming = len(meta) + len(data)
        if not self.spool.has_room(incoming):
            raise Refusal(OUT_OF_RESOURCES, "spool below its free-space floor")
        record = InstanceRecord(
            patient_id=ident.patient_id,
            issuer_of_patient_id=ident.issuer_of_patient_id or "",
            patient_name=ident.patient_name,
            patient_birth_date=ident.patient_birth_date,
            study_uid=ident.study_uid,
            study_date=ident.study_date,
            study_time=ident.study_time,
            accession_number=ident.accession_number,
            study_description=ident.study_description,
            series_uid=ident.series_uid,
            modality=ident.modality,
            series_number=ident.series_number,
            series_description=ident.series_description,
            body_part=ident.body_part,
            sop_uid=ident.sop_instance_uid,
            sop_class_uid=ident.sop_class_uid,
            transfer_syntax_uid=transfer_syntax,
            instance_number=ident.instance_number,
            path=relative.as_posix(),
            size=size,
            calling_aet=calling or None,
            origin=origin,
        )
        # The index commit runs in the writer thread while this one waits for the file's fsync; the answer
        # waits for both. A crash in between leaves a row for an unanswered instance whose file may not be
        # durable: the start-up reconciliation drops such rows (see agent.dicom.reconcile).
        pending: list[Any] = []

        def index_now() -> None:
            pending.append(self.index.submit(record))

        try:
            if spilled is not None:
                spilled.move_in(relative, index_now)
            else:
                assert data is not None
                self.spool.write(relative, (meta, data), index_now)
        except SpoolError as exc:
            if pending:  # the row may be committed: take it back, the file is gone
                with contextlib.suppress(Exception):
                    pending[0].wait()
                    self.index.drop(record.sop_uid, record.path)
            raise Refusal(OUT_OF_RESOURCES, f"spool write failed: {exc}") from None
        try:
            recorded = pending[0].wait() if pending else self.index.record(record)
        except Exception as exc:
            # The file is on disk; a retry by the sender replaces it and indexes it.
            raise Refusal(OUT_OF_RESOURCES, f"index write failed: {type(exc).__name__}") from None
        sop_class = _STORAGE_CLASSES_BY_UID.get(ident.sop_class_uid, ident.sop_class_uid)

        def bookkeeping() -> None:
            # Nothing here bears on the instance's durability: the short road runs it after the response.
            if recorded.replaced_path:
                self.spool.remove(recorded.replaced_path)
            if recorded.reopened:
                log.info(
                    "study.reopened",
                    study=uid_hash(record.study_uid),
                    previous_state=recorded.previous_state,
                )
            self.counters.received(sop_class, size)
            log.info(
                "scp.stored",
                study=uid_hash(record.study_uid),
                series=uid_hash(record.series_uid),
                sop=uid_hash(record.sop_uid),
                sop_class=sop_class,
                transfer_syntax=transfer_syntax,
                bytes=size,
                replaced=recorded.replaced,
                calling_aet=calling,
                origin=origin,
            )

        if after is not None:
            after.append(bookkeeping)
        else:
            bookkeeping()
        return SUCCESS


_STORAGE_CLASSES_BY_UID = {uid: name for name, uid in _STORAGE_CLASSES.items()}
_ACCEPTED = frozenset(accepted_storage_classes())


def _refuse(status: int, reason: str) -> int:
    raise Refusal(status, reason)


# An instance larger than this is streamed to a file in the spool as it arrives instead of being buffered.
SPILL_BYTES = 1 << 20


class IncomingInstance:
    """One instance arriving on the reactor's short road: buffered up to ``SPILL_BYTES``, then streamed.

    A small instance is validated from memory and written under its final name. A larger one is written,
    fragment by fragment, to a file in the spool's ``.incoming/`` (file meta first, from the request), then
    validated from that file (element headers only, through a memory map) and renamed into place. Memory use
    per association is therefore bounded whatever the instance size.
    """

    __slots__ = (
        "_after",
        "_buf",
        "_failed",
        "_fd",
        "_path",
        "calling",
        "command",
        "origin",
        "scp",
        "size",
        "transfer_syntax",
    )

    def __init__(
        self, scp: StoreSCP, calling: str, transfer_syntax: str, command: StoreCommand, origin: str = ROUTED
    ) -> None:
        self.scp = scp
        self.calling = calling
        self.origin = origin
        # Bookkeeping of the stored instance, run after the response is on its way (after_response()).
        self._after: list[Callable[[], None]] = []
        self.transfer_syntax = transfer_syntax
        self.command = command
        self._buf = bytearray()
        self._fd: int | None = None
        self._path: Path | None = None
        self._failed: str | None = None
        self.size = 0

    def write(self, fragment: memoryview) -> None:
        if self._failed is not None:
            return
        if self._fd is None:
            if len(self._buf) + len(fragment) <= SPILL_BYTES:
                self._buf += fragment
                return
            self._spill()
            if self._failed is not None:
                return
        try:
            self.size += write_all(cast(int, self._fd), (fragment,))
        except OSError as exc:
            self._fail(f"spool write failed: {exc.strerror or exc}")

    def _spill(self) -> None:
        cmd = self.command
        meta = file_meta(
            cmd.sop_class_uid, cmd.sop_instance_uid, self.transfer_syntax, self.calling, self.origin
        )
        try:
            if not self.scp.spool.has_room(len(meta) + SPILL_BYTES):
                self._fail("spool below its free-space floor")
                return
            self._fd, self._path = self.scp.spool.incoming()
            self.size = write_all(self._fd, (meta, self._buf))
        except (OSError, SpoolError) as exc:
            self._fail(f"spool write failed: {exc}")
        self._buf = bytearray()

    def _fail(self, reason: str) -> None:
        self._failed = reason
        self.discard()

    def finish(self) -> int:
        scp, cmd = self.scp, self.command
        try:
            if self._failed is not None:
                failed = self._failed

                def refuse() -> int:
                    raise Refusal(OUT_OF_RESOURCES, failed)

                return scp._answer(self.calling, cmd, refuse)
            if self._fd is None:
                return scp._answer(
                    self.calling,
                    cmd,
                    lambda: scp._file(
                        self._buf, None, self.transfer_syntax, self.calling, cmd, self.origin, self._after
                    ),
                )
            return scp._answer(
                self.calling,
                cmd,
                lambda: scp._file(
                    None, self, self.transfer_syntax, self.calling, cmd, self.origin, self._after
                ),
            )
        finally:
            self.discard()

    def after_response(self) -> None:
        """Log and count the stored instance (called by the reactor once the response is sent)."""
        work, self._after = self._after, []
        for job in work:
            try:
                job()
            except Exception as exc:  # bookkeeping must not take the association down
                log.error("scp.store.bookkeeping_failed", error=type(exc).__name__)

    def identity(self) -> Identity:
        """The identifying attributes of the spilled dataset (:class:`Refusal` if it is not complete)."""
        fd = cast(int, self._fd)
        offset = len(
            file_meta(
                self.command.sop_class_uid,
                self.command.sop_instance_uid,
                self.transfer_syntax,
                self.calling,
                self.origin,
            )
        )
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as m:
            result = _identity_of(
                m, offset, self.transfer_syntax, self.scp.settings.deflated_prefix_max_bytes
            )
        if isinstance(result, HeaderError):
            raise header_refusal(result)
        return result

    def move_in(self, relative: Path, before_sync: Callable[[], None] | None = None) -> None:
        fd, path = cast(int, self._fd), cast(Path, self._path)
        self._fd = self._path = None
        self.scp.spool.move_in(fd, path, relative, before_sync)

    def discard(self) -> None:
        self._buf = bytearray()
        fd, path = self._fd, self._path
        self._fd = self._path = None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()


def _identity_of(m: mmap.mmap, offset: int, transfer_syntax: str, prefix_max: int) -> Identity | HeaderError:
    # No view of the map may outlive this call (the caller closes it), hence no exception escapes with one.
    try:
        return read_identity(memoryview(m)[offset:], transfer_syntax, prefix_max)
    except HeaderError as exc:
        return type(exc)(str(exc))


def header_refusal(exc: HeaderError) -> Refusal:
    """The status of an instance whose identifying attributes cannot be read."""
    if isinstance(exc, WrongVR):
        return Refusal(DATASET_DOES_NOT_MATCH, f"identifying attribute with a non-standard VR: {exc}")
    if isinstance(exc, PrefixTooLong):
        return Refusal(OUT_OF_RESOURCES, str(exc))
    return Refusal(CANNOT_UNDERSTAND, f"unparseable: {exc}")
