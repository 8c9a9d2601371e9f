"""The receive path (agent/dicom/reactor.py, agent/dicom/scp.py) replaces parts of pynetdicom 3.0 and relies
on others; the client (agent/dicom/scu.py: the reactor held before each request, C-FIND responses counted)
relies on a few more. pyproject.toml pins pynetdicom to the minor version they were read against; this test
fails when the source of any of those upstream functions changes, so an upgrade cannot silently change the
hot path.

When it fails: read the new upstream source of each function named, carry what changed into our copy (or
check that our copy does not depend on it), then update the fingerprint here and the pin.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect

import pynetdicom

VERIFIED_MINOR = "3.0"

# Upstream function -> first 16 hex digits of the SHA-256 of its source. "replaced": our copy stands in for
# it; "relied": our copy calls it, or depends on its behaviour.
FINGERPRINTS = {
    # replaced by EventDUL.run_reactor (event-driven wait, pre-association end, abort on error)
    "pynetdicom.dul.DULServiceProvider.run_reactor": "e3a10eb3a0931e48",
    # replaced by EventDUL._read_pdu_data (bounded reads, PDU length limit, the C-STORE short road)
    "pynetdicom.dul.DULServiceProvider._read_pdu_data": "19f2d4e38c13c835",
    # relied: EventDUL._is_transport_event falls back to it (Sta13 handling)
    "pynetdicom.dul.DULServiceProvider._is_transport_event": "8725ed03bb8fbdef",
    # replaced by EventDUL.stop_dul (wakes the reactor)
    "pynetdicom.dul.DULServiceProvider.stop_dul": "28a7e0be126e7b30",
    # relied: decodes every PDU the short road does not take
    "pynetdicom.dul.DULServiceProvider._decode_pdu": "fc71dd1bf853e1ce",
    # replaced by EventAssociation._run_reactor
    "pynetdicom.association.Association._run_reactor": "f28838c5559e462a",
    # relied: an acceptor given None while waiting for its request stops and shuts the connection
    "pynetdicom.association.Association.run_reactor": "ed8bbbe3b3d6ddae",
    # relied: EventAssociation.kill wraps it
    "pynetdicom.association.Association.kill": "8f9713666a7f4cff",
    # relied: finish_request creates the association through it and starts its thread
    "pynetdicom.transport.RequestHandler.handle": "034823fb4df3a874",
    # replaced by reactor._create_event_association
    "pynetdicom.transport.RequestHandler._create_association": "05c8d12b79863cdb",
    # replaced by NoDelayAssociationServer.process_request / _serve_connection (admission, TLS)
    "pynetdicom.transport.ThreadedAssociationServer.process_request_thread": "9e76e9b9c8a3d8b1",
    # relied: closing and sending on the association's socket (Evt17 on failure)
    "pynetdicom.transport.AssociationSocket.close": "c726c8db53813d55",
    "pynetdicom.transport.AssociationSocket.send": "1ea8158c0b51faca",
    # relied by scu._hold_reactor / scu._FindLedger: the requestor's reactor pause handshake
    # (_reactor_checkpoint, _is_paused), the C-FIND response loop, EVT_DIMSE_RECV before queueing
    "pynetdicom.association.Association.send_c_find": "5879d593298e14b6",
    "pynetdicom.association.Association._wrap_find_responses": "34436b9c80ccb5f3",
    "pynetdicom.dimse.DIMSEServiceProvider.receive_primitive": "5f99c86b14a15cef",
}


def _resolve(path: str) -> object:
    module_name, cls, attr = path.rsplit(".", 2)
    return getattr(getattr(importlib.import_module(module_name), cls), attr)


def test_pynetdicom_is_the_verified_minor_version() -> None:
    assert pynetdicom.__version__.startswith(VERIFIED_MINOR + "."), pynetdicom.__version__


def test_the_upstream_functions_the_receive_path_replaced_are_unchanged() -> None:
    changed = [
        path
        for path, digest in FINGERPRINTS.items()
        if hashlib.sha256(inspect.getsource(_resolve(path)).encode()).hexdigest()[:16] != digest  # type: ignore[arg-type]
    ]
    assert not changed, f"pynetdicom changed functions our receive path or client relies on: {changed}"
