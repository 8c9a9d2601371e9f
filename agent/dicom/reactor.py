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

# Longest a reactor thread sleeps without an event (timers and kill flags are checked at least this often).
IDLE_WAKE_S = 0.05
# Largest single recv_into when reading a PDU.
RECV_CHUNK = 1 << 20
# Receive buffer per association: a C-STORE command and its dataset usually come in one recv. Large enough
# for a whole PDU at the default maximum PDU size (256 KiB) with its headers; a larger PDU is read past it.
RECV_BUFFER = (1 << 18) + (1 << 12)


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
        # Bytes received and not yet consumed: self._rbuf[self._rpos:self._rend].
        self._rbuf = bytearray(RECV_BUFFER)
        self._rpos = self._rend = 0
        # The last wait saw the socket readable (no need to ask select again before reading).
        self._readable = False

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
                    self.event_queue.put("Evt18")
                try:
                    if self._process_recv_primitive():
                        pass
                    elif self._is_transport_event():
                        self._idle_timer.restart()
                except Exception:
                    self._abort_on_exception()
                    return
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    idle = True
                    continue
                self.state_machine.do_action(event)
                idle = False
        finally:
            self._wake_r.close()
            self._wake_w.close()
            if self._receiving is not None:  # the peer went away in the middle of an instance
                receiving, self._receiving = self._receiving, None
                with contextlib.suppress(Exception):
                    receiving.sink.discard()

    def _abort_on_exception(self) -> None:
        # As pynetdicom does: bypass the state machine, send an A-ABORT and stop both reactors.
        from pynetdicom.pdu import A_ABORT_RQ

        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        with contextlib.suppress(Exception):
            cast(Any, self.socket).send(abort_pdu.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True

    def _store_pdvs(self, body: memoryview) -> memoryview | None:
        return _store_pdvs_impl(self, body)

    def _is_transport_event(self) -> bool:
        """pynetdicom's check, without asking ``select`` again when data is known to be there."""
        if (self._rend > self._rpos or self._readable) and self.state_machine.current_state != "Sta13":
            self._readable = False
            self._read_pdu_data()
            return True
        return bool(super()._is_transport_event())

    def _fill(self, sock: socket.socket, n: int) -> bool:
        """Make at least ``n`` (<= RECV_BUFFER) unconsumed bytes available in the buffer; False at EOF."""
        while self._rend - self._rpos < n:
            if len(self._rbuf) - self._rpos < n:  # move the unconsumed tail to the front
                tail = self._rend - self._rpos
                self._rbuf[:tail] = self._rbuf[self._rpos : self._rend]
                self._rpos, self._rend = 0, tail
            with memoryview(self._rbuf) as view:
                got = sock.recv_into(view[self._rend :])
            if got == 0:
                return False
            self._rend += got
        return True

    def _take(self, sock: socket.socket, n: int) -> bytearray | None:
        """The next ``n`` bytes (from the buffer, then the socket), or None at EOF."""
        if n <= RECV_BUFFER:
            if not self._fill(sock, n):
                return None
            out = self._rbuf[self._rpos : self._rpos + n]
            self._rpos += n
            if self._rpos == self._rend:
                self._rpos = self._rend = 0
            return out
        buffered = self._rbuf[self._rpos : self._rend]
        self._rpos = self._rend = 0
        rest = _recv_exact(sock, n - len(buffered))
        if len(rest) != n - len(buffered):
            return None
        buffered += rest
        return buffered

    def _read_pdu_data(self) -> None:
        """Read one PDU: its 6-byte header, then the body, through the association's receive buffer."""
        sock = cast(Any, self.socket).socket
        try:
            header = self._take(sock, 6)
        except (OSError, TimeoutError):
            self.event_queue.put("Evt17")
            return
        if header is None:
            self.event_queue.put("Evt17")
            return
        pdu_type, _, pdu_length = struct.unpack(">BBL", header)
        if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
            self.event_queue.put("Evt19")
            return
        try:
            body = self._take(sock, pdu_length)
        except (OSError, TimeoutError):
            self.event_queue.put("Evt17")
            return
        if body is None:
            self.event_queue.put("Evt17")
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
        except Exception:
            self.event_queue.put("Evt19")
            return
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


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    """Read exactly ``n`` bytes, or fewer if the peer closes the connection."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        r = sock.recv_into(view[got:], min(n - got, RECV_CHUNK))
        if r == 0:
            del view
            return buf[:got]
        got += r
    return buf


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
    cast(EventDUL, assoc.dul).store_target = getattr(server, "store_target", None)
    for event in server._handlers:
        if event.is_intervention and server._handlers[event]:
            assoc.bind(event, *server._handlers[event])
        elif isinstance(event, evt.NotificationEvent):
            for h in server._handlers[event]:
                assoc.bind(event, h[0], h[1])
    return assoc
