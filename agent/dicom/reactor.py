"""Event-driven acceptor associations for pynetdicom: no polling sleeps on the receive path.

pynetdicom runs two threads per association that poll: the DUL reactor sleeps 1 ms whenever its queues and
the socket are idle, and the association reactor sleeps 1 ms between looks at the DIMSE message queue. Each
instance received therefore waits for a few of those sleeps (the data arriving, the handler starting, the
response leaving), and reads every PDU in 4 KiB ``recv`` calls. At a few hundred instances per second that,
not the disk, is the wall.

These subclasses keep pynetdicom's state machine, ACSE, DIMSE and service classes untouched and only change
how the two threads wait:

- the DUL thread blocks in ``select`` on the socket and on a wake-up socket pair written whenever a primitive
  is queued for sending (a response, a release, an abort); it reads a whole PDU with ``recv_into``;
- the association thread blocks on an ``Event`` set whenever a DIMSE message or an ACSE primitive is queued
  for it.

Both still wake at least every ``IDLE_WAKE_S`` to check their timers (ARTIM, network idle) and kill flags.

C-STORE requests take a shorter road when the server has a :class:`StoreTarget`: the DUL thread recognises a
P-DATA-TF PDU that opens a C-STORE request (its command set complete in the first PDV, on an accepted
presentation context), hands every dataset fragment to the target as it arrives (so an instance is streamed
to disk, never held whole), asks the target for the status once the last fragment is in, and sends the
C-STORE response itself. No DIMSE message object, no event, no thread hop and no queue per instance; the
state machine stays in Sta6 as it would for any P-DATA. Everything else (C-ECHO, release, abort, any message
the short road does not recognise) goes through pynetdicom unchanged.

Every peer is treated as hostile, before any AE-title or TLS check can help:

- every read is bounded in time: the A-ASSOCIATE-RQ must be complete within the ACSE timeout of its first
  byte (a connection that sends nothing is closed by the ARTIM timer, the same ACSE timeout), and every
  later PDU within the network timeout of its first byte; a stalled peer is aborted and logged
  (``scp.association.aborted`` with its reason);
- a PDU longer than our maximum PDU (plus its header) is refused with A-ABORT before anything is allocated,
  and the receive buffer of an association is never larger than that;
- a connection that closes or is aborted before its association is established ends its threads at once
  (pynetdicom would keep them waiting out the ACSE timeout);
- connections are admitted within :class:`Admission`: at most ``dicom.max_associations`` per receiver
  process, each holding two threads and one buffer; when every slot is taken, the oldest connection still
  waiting for its association request is evicted to make room, and when every slot holds an association a
  new connection gets the standard A-ASSOCIATE-RJ (transient, local limit exceeded) at once, without a
  thread (:class:`Rejecter`).
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import RequestHandler

from agent.log import get_logger

log = get_logger(__name__)

# Longest a reactor thread sleeps without an event (timers and kill flags are checked at least this often).
IDLE_WAKE_S = 0.05
# Largest receive buffer of an association: a whole PDU at the default maximum PDU size (256 KiB) with its
# header fits; a larger PDU (a larger ``dicom.max_pdu``) is read past it into a buffer of its exact length.
RECV_BUFFER = (1 << 18) + (1 << 12)
PDU_HEADER = 6
# Association-control PDUs (A-ASSOCIATE-RQ above all) may be this long even when the maximum PDU is smaller:
# the maximum PDU bounds P-DATA-TF, and a request with many presentation contexts can exceed a small one.
CONTROL_PDU_MAX = 1 << 16
# The standard rejection when every slot holds an association: A-ASSOCIATE-RJ, rejected-transient (2),
# DICOM UL service-provider, presentation related function (3), local-limit-exceeded (2).
REJECT_LIMIT_PDU = bytes((0x03, 0, 0, 0, 0, 4, 0, 0x02, 0x03, 0x02))
# The A-ABORT PDU we send: source DICOM UL service-provider (2), reason not specified (0).
ABORT_PDU = bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x00))


C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
NO_DATASET = 0x0101
_ELEMENT = struct.Struct("<HHI")


@dataclass(frozen=True, slots=True)
class StoreCommand:
    """The fields of a C-STORE request's command set that the short road needs."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    # Move Originator Application Entity Title (0000,1030): set when the instance answers a C-MOVE.
    move_originator: str = ""


class IncomingStore(Protocol):
    """One instance being received: fragments in, a DICOM status out."""

    def write(self, fragment: memoryview) -> None: ...

    def finish(self) -> int: ...

    def after_response(self) -> None: ...

    def discard(self) -> None: ...


class StoreTarget(Protocol):
    def begin(self, assoc: Association, transfer_syntax: str, command: StoreCommand) -> IncomingStore: ...


def parse_command(data: bytes | bytearray | memoryview) -> dict[int, bytes] | None:
    """Elements of a command set (implicit VR little endian, group 0000) by element number; None if broken."""
    out: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if pos + 8 > end:
            return None
        group, elem, length = _ELEMENT.unpack_from(data, pos)
        pos += 8
        if group != 0 or pos + length > end:
            return None
        out[elem] = bytes(data[pos : pos + length])
        pos += length
    return out


def _us(values: dict[int, bytes], elem: int) -> int | None:
    raw = values.get(elem)
    return struct.unpack("<H", raw)[0] if raw is not None and len(raw) == 2 else None


def _uid(values: dict[int, bytes], elem: int) -> str:
    return values.get(elem, b"").decode("ascii", "replace").rstrip("\0 ")


def store_response_pdu(context_id: int, command: StoreCommand, status: int) -> bytes:
    """A P-DATA-TF PDU carrying the complete C-STORE response command set."""

    def ui(elem: int, value: str) -> bytes:
        raw = value.encode("ascii", "replace")
        if len(raw) % 2:
            raw += b"\0"
        return _ELEMENT.pack(0, elem, len(raw)) + raw

    def us(elem: int, value: int) -> bytes:
        return _ELEMENT.pack(0, elem, 2) + struct.pack("<H", value)

    body = b"".join(
        (
            ui(0x0002, command.sop_class_uid),
            us(0x0100, C_STORE_RSP),
            us(0x0120, command.message_id),
            us(0x0800, NO_DATASET),
            us(0x0900, status),
            ui(0x1000, command.sop_instance_uid),
        )
    )
    cmd = _ELEMENT.pack(0, 0, 4) + struct.pack("<I", len(body)) + body
    return struct.pack(">BBIIBB", 0x04, 0, len(cmd) + 6, len(cmd) + 2, context_id, 0x03) + cmd


def associate_rq_problem(body: bytes | bytearray) -> str | None:
    """Why the body of an A-ASSOCIATE-RQ PDU is malformed (PS3.8 §9.3.2), or None when its structure holds.

    Checked before pynetdicom decodes it, so a malformed request is refused with one clear reason instead of
    errors deep in the decoder: fixed fields, printable AE titles, and every item and sub-item inside its
    parent, with the application context, a presentation context and the user information present.
    """
    if len(body) < 68:
        return f"A-ASSOCIATE-RQ of {len(body)} bytes, shorter than its fixed fields"
    if not body[1] & 1:
        return "protocol version without bit 0"
    for name, raw in (("called", body[4:20]), ("calling", body[20:36])):
        if any(c < 0x20 or c > 0x7E or c == 0x5C for c in raw) or not bytes(raw).strip(b" "):
            return f"{name} AE title empty or not printable ASCII"
    pos, end = 68, len(body)
    seen: dict[int, int] = {}
    while pos < end:
        if pos + 4 > end:
            return f"item header cut short at offset {pos}"
        item, length = body[pos], struct.unpack_from(">H", body, pos + 2)[0]
        if pos + 4 + length > end:
            return f"item 0x{item:02X} runs past the PDU"
        value = body[pos + 4 : pos + 4 + length]
        seen[item] = seen.get(item, 0) + 1
        if item == 0x20:
            problem = _sub_items_problem(value[4:], "presentation context") if length >= 4 else "empty"
            if problem:
                return problem
        elif item == 0x50:
            problem = _sub_items_problem(value, "user information")
            if problem:
                return problem
        elif item == 0x10 and not _is_uid_text(value):
            return "application context name is not a UID"
        pos += 4 + length
    if seen.get(0x10) != 1:
        return "no application context item, or more than one"
    if not seen.get(0x20):
        return "no presentation context item"
    if seen.get(0x50) != 1:
        return "no user information item, or more than one"
    return None


def _sub_items_problem(data: bytes | bytearray, parent: str) -> str | None:
    pos, end = 0, len(data)
    while pos < end:
        if pos + 4 > end:
            return f"{parent} sub-item header cut short"
        item, length = data[pos], struct.unpack_from(">H", data, pos + 2)[0]
        if pos + 4 + length > end:
            return f"{parent} sub-item 0x{item:02X} runs past its item"
        if item in (0x30, 0x40) and not _is_uid_text(data[pos + 4 : pos + 4 + length]):
            return f"{parent} syntax name is not a UID"
        pos += 4 + length
    return None


def _is_uid_text(raw: bytes | bytearray) -> bool:
    text = bytes(raw).rstrip(b"\0 ")
    return 0 < len(text) <= 64 and all(c == 0x2E or 0x30 <= c <= 0x39 for c in text)


@dataclass(slots=True)
class _Receiving:
    context_id: int
    command: StoreCommand
    sink: IncomingStore


class _SignalQueue(queue.Queue):  # type: ignore[type-arg]
    """A FIFO queue that calls ``notify`` after every put."""

    def __init__(self, notify: Any) -> None:
        super().__init__()
        self._notify = notify

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._notify()


class EventDUL(DULServiceProvider):
    """DUL service provider whose reactor blocks on the socket instead of sleeping between polls."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.to_provider_queue = _SignalQueue(self._wake)
        # The short road for C-STORE (None: everything through pynetdicom).
        self.store_target: StoreTarget | None = None
        self._receiving: _Receiving | None = None
        # Bytes received and not yet consumed: self._rbuf[self._rpos:self._rend]. Sized by limit_pdu().
        self._rbuf = bytearray(0)
        self._rpos = self._rend = 0
        # Longest PDU body accepted (see limit_pdu()).
        self._pdu_max = CONTROL_PDU_MAX
        # The last wait saw the socket readable (no need to ask select again before reading).
        self._readable = False
        # Until a complete A-ASSOCIATE-RQ is read: the ACSE timeout runs from the first byte received.
        self.awaiting_request = True
        self._first_byte_at: float | None = None
        # The connection's admission slot (None outside a listener with admission control).
        self.slot: Slot | None = None

    def limit_pdu(self, max_pdu: int) -> None:
        """Bound every PDU read by ``max_pdu`` (our advertised maximum) plus its header."""
        self._pdu_max = max(max_pdu or (1 << 18), 1)
        self._rbuf = bytearray(min(PDU_HEADER + max(self._pdu_max, CONTROL_PDU_MAX), RECV_BUFFER))

    def _wake(self) -> None:
        # OSError: the buffer is full (already awake) or the pair is closed (the reactor has ended).
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _wait(self) -> None:
        """Block until the socket is readable, a primitive is queued to send, or IDLE_WAKE_S passes."""
        if self.to_provider_queue.qsize() or self.event_queue.qsize() or self._rend > self._rpos:
            return
        sock = self.socket.socket if self.socket is not None else None
        if sock is None or sock.fileno() < 0:
            time.sleep(self._run_loop_delay)
            return
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return
        try:
            ready, _, _ = select.select([sock, self._wake_r], [], [], IDLE_WAKE_S)
        except (OSError, ValueError):
            time.sleep(self._run_loop_delay)
            return
        self._readable = sock in ready
        if self._wake_r in ready:
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:
                pass

    def run_reactor(self) -> None:
        """pynetdicom's reactor loop, with ``_wait`` in place of the fixed sleep."""
        self._idle_timer.start()
        idle = False
        try:
            while True:
                if not self.assoc._dul_ready.is_set():
                    self.assoc._dul_ready.set()
                    idle = True
                if idle:
                    self._wait()
                if self._kill_thread:
                    break
                if self.artim_timer.expired:
                    if self.awaiting_request and self.state_machine.current_state == "Sta2":
                        log.warning(
                            "scp.association.aborted",
                            reason="no association request within the ACSE timeout",
                            peer=self._peer(),
                        )
                    self.event_queue.put("Evt18")
                try:
                    if self._process_recv_primitive():
                        pass
                    elif self._is_transport_event():
                        self._idle_timer.restart()
                except Exception:
                    self._abort_on_exception()
                    return
                if self._kill_thread:  # aborted while reading
                    break
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    idle = True
                    continue
                try:
                    self.state_machine.do_action(event)
                except Exception:
                    self._abort_on_exception()
                    return
                idle = False
                if self.awaiting_request and self.state_machine.current_state == "Sta1":
                    # Closed (by the peer, the ARTIM timer or an abort) before a request: the association
                    # thread stops waiting for one now rather than at the end of the ACSE timeout.
                    self._no_request()
        finally:
            self._wake_r.close()
            self._wake_w.close()
            if self._receiving is not None:  # the peer went away in the middle of an instance
                receiving, self._receiving = self._receiving, None
                with contextlib.suppress(Exception):
                    receiving.sink.discard()
            if self.awaiting_request:
                self._no_request()

    def _no_request(self) -> None:
        self.awaiting_request = False
        self.to_user_queue.put(None)  # type: ignore[arg-type]

    def stop_dul(self) -> bool:
        """pynetdicom's, waking the reactor instead of waiting out its idle wait."""
        if self.state_machine.current_state != "Sta1":
            return False
        self._kill_thread = True
        self._wake()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()
        return True

    def _peer(self) -> str:
        with contextlib.suppress(Exception):
            return str(self.assoc.requestor.address)
        return ""

    def _abort_on_exception(self) -> None:
        # As pynetdicom does: bypass the state machine, send an A-ABORT and stop both reactors.
        log.warning("scp.association.aborted", reason="internal error in the upper layer", peer=self._peer())
        log.debug("scp.association.aborted_detail", exc_info=True)
        self._hard_abort()

    def _abort(self, reason: str, event: str = "scp.association.aborted", **fields: Any) -> None:
        """Refuse a hostile, broken or stalled peer: A-ABORT, close, stop both reactors, one log line."""
        log.warning(event, reason=reason, peer=self._peer(), **fields)
        self._hard_abort()

    def _hard_abort(self) -> None:
        sock = cast(Any, self.socket).socket if self.socket is not None else None
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.setblocking(False)  # never wait on a peer that does not read
                sock.send(ABORT_PDU)
            with contextlib.suppress(Exception):
                cast(Any, self.socket).close()
        with contextlib.suppress(Exception):
            self.state_machine.transition("Sta1")
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True
        wakeup = getattr(self.assoc, "_wakeup", None)
        if wakeup is not None:
            wakeup.set()

    def _store_pdvs(self, body: memoryview) -> memoryview | None:
        return _store_pdvs_impl(self, body)

    def _is_transport_event(self) -> bool:
        """pynetdicom's check, without asking ``select`` again when data is known to be there."""
        if (self._rend > self._rpos or self._readable) and self.state_machine.current_state != "Sta13":
            self._readable = False
            self._read_pdu_data()
            return True
        return bool(super()._is_transport_event())

    def _deadline(self) -> tuple[float, str]:
        """When the PDU about to be read must be complete, and the reason given if it is not."""
        now = time.monotonic()
        if self.awaiting_request:
            if self._first_byte_at is None:
                self._first_byte_at = now
            acse = self.assoc.acse_timeout
            return self._first_byte_at + (
                acse if acse else 1e9
            ), "association request not complete within the ACSE timeout"
        network = self.assoc.network_timeout
        return now + (network if network else 1e9), "PDU not complete within the network timeout"

    def _recv_into(self, sock: socket.socket, view: memoryview, deadline: float) -> int:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        return sock.recv_into(view)

    def _fill(self, sock: socket.socket, n: int, deadline: float) -> bool:
        """Make at least ``n`` (<= the buffer) unconsumed bytes available in the buffer; False at EOF."""
        while self._rend - self._rpos < n:
            if len(self._rbuf) - self._rpos < n:  # move the unconsumed tail to the front
                tail = self._rend - self._rpos
                self._rbuf[:tail] = self._rbuf[self._rpos : self._rend]
                self._rpos, self._rend = 0, tail
            with memoryview(self._rbuf) as view:
                got = self._recv_into(sock, view[self._rend :], deadline)
            if got == 0:
                return False
            self._rend += got
        return True

    def _take(self, sock: socket.socket, n: int, deadline: float) -> bytearray | None:
        """The next ``n`` bytes (from the buffer, then the socket), or None at EOF.

        ``n`` is never more than the PDU bound, so no read allocates more than the peer may send.
        """
        if n <= len(self._rbuf):
            if not self._fill(sock, n, deadline):
                return None
            out = self._rbuf[self._rpos : self._rpos + n]
            self._rpos += n
            if self._rpos == self._rend:
                self._rpos = self._rend = 0
            return out
        out = bytearray(n)
        got = self._rend - self._rpos
        out[:got] = self._rbuf[self._rpos : self._rend]
        self._rpos = self._rend = 0
        with memoryview(out) as view:
            while got < n:
                r = self._recv_into(sock, view[got:], deadline)
                if r == 0:
                    return None
                got += r
        return out

    def _read_pdu_data(self) -> None:
        """Read one PDU: its 6-byte header, then the body, through the association's receive buffer."""
        sock = cast(Any, self.socket).socket
        deadline, late = self._deadline()
        body: bytearray | None = None
        try:
            header = self._take(sock, PDU_HEADER, deadline)
            if header is not None:
                pdu_type, _, pdu_length = struct.unpack(">BBL", header)
                if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
                    if self.awaiting_request:
                        self._abort(f"unknown PDU type 0x{pdu_type:02X}", "scp.association.malformed")
                    else:
                        self.event_queue.put("Evt19")
                    return
                bound = (
                    self._pdu_max + PDU_HEADER if pdu_type == 0x04 else max(self._pdu_max, CONTROL_PDU_MAX)
                )
                if pdu_length > bound:
                    self._abort(
                        "PDU longer than the maximum PDU", pdu_type=pdu_type, length=pdu_length, limit=bound
                    )
                    return
                body = self._take(sock, pdu_length, deadline)
        except TimeoutError:
            self._abort(late)
            return
        except OSError:
            body = None
        else:
            with contextlib.suppress(OSError):
                sock.settimeout(self.assoc.network_timeout)  # sends stay bounded too
        if header is None or body is None:
            self.event_queue.put("Evt17")
            return
        if self.awaiting_request and pdu_type == 0x01:
            problem = associate_rq_problem(body)
            if problem is not None:
                self._abort(problem, "scp.association.malformed")
                return
        if pdu_type == 0x04 and self.store_target is not None and self.state_machine.current_state == "Sta6":
            rest = self._store_pdvs(memoryview(body))
            if rest is None:
                return
            if len(rest) != len(body):  # a message the short road does not take follows in this PDU
                header = bytearray(struct.pack(">BBL", 0x04, 0, len(rest)))
                body = bytearray(rest)
            del rest
        try:
            pdu, event = self._decode_pdu(header + body)
        except Exception as exc:
            if pdu_type == 0x01:
                log.debug("scp.association.malformed_detail", error=repr(exc))
                self._abort("A-ASSOCIATE-RQ does not decode", "scp.association.malformed")
            else:
                self.event_queue.put("Evt19")
            return
        if pdu_type == 0x01:
            self.awaiting_request = False  # no longer evictable: the association is being negotiated
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)


def _store_pdvs_impl(dul: EventDUL, body: memoryview) -> memoryview | None:
    """Consume the PDVs of a P-DATA-TF body that belong to C-STORE requests on the short road.

    Returns None when every PDV was consumed, else the unconsumed tail (from the first PDV of a message the
    short road does not take), for pynetdicom to decode as usual.
    """
    pos, end = 0, len(body)
    while pos < end:
        if pos + 6 > end:
            _protocol_error(dul)
            return None
        (length,) = struct.unpack_from(">I", body, pos)
        if length < 2 or pos + 4 + length > end:
            _protocol_error(dul)
            return None
        context_id, control = body[pos + 4], body[pos + 5]
        data = body[pos + 6 : pos + 4 + length]
        receiving = dul._receiving
        if receiving is None:
            started = _start_store(dul, context_id, control, data)
            if started is None:
                return body[pos:]
            dul._receiving = started
        elif control & 1 or context_id != receiving.context_id:
            _protocol_error(dul)  # a command, or another context, in the middle of a dataset
            return None
        else:
            receiving.sink.write(data)
            if control & 2:
                dul._receiving = None
                status = receiving.sink.finish()
                pdu = store_response_pdu(receiving.context_id, receiving.command, status)
                cast(Any, dul.socket).send(pdu)
                receiving.sink.after_response()  # logging and counting, while the peer sends the next
        pos += 4 + length
    return None


def _start_store(dul: EventDUL, context_id: int, control: int, data: memoryview) -> _Receiving | None:
    """A receiving state when ``data`` is a complete C-STORE request command set on an accepted context."""
    assoc = dul.assoc
    if control & 3 != 3 or assoc.dimse.message is not None:
        return None
    context = assoc._accepted_cx.get(context_id)
    values = parse_command(data)
    if context is None or values is None:
        return None
    if _us(values, 0x0100) != C_STORE_RQ or _us(values, 0x0800) in (None, NO_DATASET):
        return None
    message_id = _us(values, 0x0110)
    if message_id is None:
        return None
    command = StoreCommand(message_id, _uid(values, 0x0002), _uid(values, 0x1000), _uid(values, 0x1030))
    target = cast(StoreTarget, dul.store_target)
    return _Receiving(context_id, command, target.begin(assoc, str(context.transfer_syntax[0]), command))


def _protocol_error(dul: EventDUL) -> None:
    """An invalid P-DATA-TF: drop the instance being received and let the state machine abort."""
    receiving, dul._receiving = dul._receiving, None
    if receiving is not None:
        with contextlib.suppress(Exception):
            receiving.sink.discard()
    dul.event_queue.put("Evt19")


class EventAssociation(Association):
    """Acceptor association whose reactor waits on an event instead of polling every millisecond."""

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self._wakeup = threading.Event()
        self.dul = EventDUL(self)
        # The timeouts were applied to the DUL created by Association.__init__: apply them again.
        self.acse_timeout = self.acse_timeout
        self.dimse_timeout = self.dimse_timeout
        self.network_timeout = self.network_timeout
        self.dul.to_user_queue = _SignalQueue(self._wakeup.set)
        self.dimse.msg_queue = _SignalQueue(self._wakeup.set)

    def run(self) -> None:
        """The association thread; whatever happens, its admission slot is given back when it ends."""
        try:
            super().run()
        except Exception as exc:  # a request pynetdicom cannot negotiate: never a traceback above DEBUG
            log.warning(
                "scp.association.malformed",
                reason=f"association request could not be negotiated ({type(exc).__name__})",
                peer=cast(EventDUL, self.dul)._peer(),
            )
            log.debug("scp.association.malformed_detail", error=repr(exc))
            with contextlib.suppress(Exception):
                cast(EventDUL, self.dul)._hard_abort()
            with contextlib.suppress(Exception):
                self.kill()
        finally:
            slot = cast(EventDUL, self.dul).slot
            if slot is not None:
                slot.release()

    def kill(self) -> None:
        self._wakeup.set()
        super().kill()

    def _run_reactor(self) -> None:
        """pynetdicom's acceptor loop, waiting on ``_wakeup`` in place of ``time.sleep(0.001)``."""
        self._is_paused = False
        busy = True
        while not self._kill:
            if not busy:
                self._wakeup.wait(IDLE_WAKE_S)
            self._wakeup.clear()
            busy = False

            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))
                busy = True

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class Slot:
    """One admitted connection: its socket, and its DUL once the association exists."""

    __slots__ = ("_admission", "dul", "peer", "released", "since", "sock")

    def __init__(self, admission: Admission, sock: socket.socket, peer: str) -> None:
        self._admission = admission
        self.sock = sock
        self.peer = peer
        self.since = time.monotonic()
        self.dul: EventDUL | None = None
        self.released = False

    @property
    def awaiting_request(self) -> bool:
        """No complete association request yet (a TLS handshake, or the request itself, still under way)."""
        return self.dul is None or self.dul.awaiting_request

    def release(self) -> None:
        self._admission.release(self)

    def evict(self) -> None:
        """Make room: shut the connection, so its reads end at once (the DUL then ends both threads)."""
        log.warning(
            "scp.association.aborted",
            reason="evicted: every slot taken, this connection the oldest without an association request",
            peer=self.peer,
            waited_s=round(time.monotonic() - self.since, 3),
        )
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class Admission:
    """The connection slots of one listener: at most ``limit`` connections hold threads and buffers.

    A new connection takes a free slot; when there is none, it takes the slot of the oldest connection that
    has not yet sent a complete association request (a silent or stalled peer), which is shut; when every
    slot holds an association, the new connection is refused (``admit`` returns None).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._slots: dict[Slot, None] = {}  # in admission order

    def __len__(self) -> int:
        return len(self._slots)

    def admit(self, sock: socket.socket, peer: str) -> Slot | None:
        with self._lock:
            if len(self._slots) >= self.limit:
                victim = next((s for s in self._slots if s.awaiting_request), None)
                if victim is None:
                    return None
                del self._slots[victim]
                victim.released = True
                victim.evict()
            slot = Slot(self, sock, peer)
            self._slots[slot] = None
            return slot

    def full(self) -> bool:
        """Every slot holds an association (a new connection would be refused)."""
        with self._lock:
            return len(self._slots) >= self.limit and not any(s.awaiting_request for s in self._slots)

    def release(self, slot: Slot) -> None:
        with self._lock:
            if not slot.released:
                slot.released = True
                self._slots.pop(slot, None)


# Longest a refused connection is kept to let the peer read the rejection (then it is closed regardless),
# and how many may wait at once (beyond that a refused connection is closed at once).
REJECT_LINGER_S = 2.0
REJECT_PENDING_MAX = 256


class Rejecter:
    """Sends the standard rejection to connections beyond the limit and closes them, on one thread.

    The A-ASSOCIATE-RJ is written at once and the write side shut; the connection is closed when the peer
    closes its side or after ``REJECT_LINGER_S`` (closing with the peer's request unread would reset the
    connection, and the peer could lose the rejection).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[socket.socket, float] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopped = False
        self._refused = 0
        self._logged_at = 0.0
        self._thread = threading.Thread(target=self._run, name="scp-rejecter", daemon=True)
        self._thread.start()

    def reject(self, sock: socket.socket, peer: str) -> None:
        self._log(peer)
        try:
            sock.setblocking(False)
            sock.send(REJECT_LIMIT_PDU)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            _close(sock)
            return
        with self._lock:
            if len(self._pending) >= REJECT_PENDING_MAX or self._stopped:
                _close(sock)
                return
            self._pending[sock] = time.monotonic() + REJECT_LINGER_S
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _log(self, peer: str) -> None:
        # One line per second at most during a flood, with the count since the last line.
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= 1.0:
            log.warning(
                "scp.association.rejected", reason="local limit exceeded", peer=peer, refused=self._refused
            )
            self._refused = 0
            self._logged_at = now

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopped:
                    for sock in self._pending:
                        _close(sock)
                    self._pending.clear()
                    break
                socks = list(self._pending)
            try:
                ready, _, _ = select.select([self._wake_r, *socks], [], [], 0.25)
            except (OSError, ValueError):
                ready = socks  # a socket went bad: drop it below
            now = time.monotonic()
            for sock in socks:
                done = self._pending[sock] <= now
                if sock in ready:
                    try:
                        done |= not sock.recv(65536)
                    except BlockingIOError:
                        pass
                    except OSError:
                        done = True
                if done:
                    with self._lock:
                        self._pending.pop(sock, None)
                    _close(sock)
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    while self._wake_r.recv(4096):
                        pass
        self._wake_r.close()
        self._wake_w.close()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        self._thread.join(timeout=2)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


class EventRequestHandler(RequestHandler):
    """Creates :class:`EventAssociation` acceptors (otherwise pynetdicom's request handler)."""

    def _create_association(self) -> Association:
        return _create_event_association(self)


def _create_event_association(handler: RequestHandler) -> Association:
    """As pynetdicom's ``RequestHandler._create_association``, with :class:`EventAssociation`."""
    from copy import deepcopy
    from datetime import datetime

    from pynetdicom._globals import MODE_ACCEPTOR
    from pynetdicom.transport import AssociationSocket

    server = cast(Any, handler.server)
    ae = handler.ae
    assoc = EventAssociation(ae, MODE_ACCEPTOR)
    assoc._server = server
    assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
    sock = AssociationSocket(assoc, client_socket=cast(Any, handler.request))
    assoc.set_socket(sock)
    assoc.acceptor.maximum_length = ae.maximum_pdu_size
    assoc.acceptor.ae_title = server.ae_title
    assoc.acceptor.address_info = handler.local
    assoc.acceptor.implementation_class_uid = ae.implementation_class_uid
    assoc.acceptor.implementation_version_name = ae.implementation_version_name
    assoc.acceptor.supported_contexts = deepcopy(server.contexts)
    assoc.requestor.address_info = handler.remote
    dul = cast(EventDUL, assoc.dul)
    dul.store_target = getattr(server, "store_target", None)
    dul.limit_pdu(ae.maximum_pdu_size)
    connection = getattr(server, "connection", None)
    slot = getattr(connection, "slot", None)
    if slot is not None:
        dul.slot = slot
        slot.dul = dul
    for event in server._handlers:
        if event.is_intervention and server._handlers[event]:
            assoc.bind(event, *server._handlers[event])
        elif isinstance(event, evt.NotificationEvent):
            for h in server._handlers[event]:
                assoc.bind(event, h[0], h[1])
    return assoc
