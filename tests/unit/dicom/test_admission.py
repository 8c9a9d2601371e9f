"""Admission of connections and the structure check of association requests, without a network."""

from __future__ import annotations

import socket
import struct
from types import SimpleNamespace

from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification

from agent.dicom.reactor import Admission, associate_rq_problem


def pair() -> socket.socket:
    a, b = socket.socketpair()
    b.close()
    return a


def established(slot) -> None:
    slot.dul = SimpleNamespace(awaiting_request=False)


def test_a_full_listener_evicts_the_oldest_connection_without_a_request() -> None:
    admission = Admission(2)
    first, second = admission.admit(pair(), "a"), admission.admit(pair(), "b")
    assert first is not None and second is not None
    established(second)
    third = admission.admit(pair(), "c")
    assert third is not None and first.released and not second.released
    assert len(admission) == 2


def test_a_listener_full_of_associations_refuses_and_frees_slots_when_they_end() -> None:
    admission = Admission(2)
    slots = [admission.admit(pair(), p) for p in ("a", "b")]
    for slot in slots:
        established(slot)
    assert admission.full()
    assert admission.admit(pair(), "c") is None
    slots[0].release()
    slots[0].release()  # once only
    assert len(admission) == 1 and not admission.full()
    assert admission.admit(pair(), "d") is not None


def request_body() -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "STORESCU"
    primitive.called_ae_title = "LIVERAGENT"
    item = MaximumLengthNotification()
    item.maximum_length_received = 16384
    primitive.user_information = [item]
    ae = AE()
    ae.add_requested_context("1.2.840.10008.1.1")
    contexts = ae.requested_contexts
    contexts[0].context_id = 1
    primitive.presentation_context_definition_list = contexts
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()[6:]


def test_a_well_formed_request_passes_and_broken_ones_say_why() -> None:
    body = request_body()
    assert associate_rq_problem(body) is None
    assert "shorter" in str(associate_rq_problem(body[:40]))
    called = body[:4] + b"\xff" * 16 + body[20:]
    assert "called AE title" in str(associate_rq_problem(called))
    blank = body[:20] + b" " * 16 + body[36:]
    assert "calling AE title" in str(associate_rq_problem(blank))
    runs_past = body[:68] + bytes((0x10, 0)) + struct.pack(">H", 60000) + body[72:]
    assert "runs past" in str(associate_rq_problem(runs_past))
    assert associate_rq_problem(without_item(body, 0x50)) == "no user information item, or more than one"
    assert associate_rq_problem(without_item(body, 0x20)) == "no presentation context item"
    no_items = body[:68]
    assert "application context" in str(associate_rq_problem(no_items))


def without_item(body: bytes, item_type: int) -> bytes:
    out, pos = bytearray(body[:68]), 68
    while pos < len(body):
        length = struct.unpack_from(">H", body, pos + 2)[0]
        if body[pos] != item_type:
            out += body[pos : pos + 4 + length]
        pos += 4 + length
    return bytes(out)
