"""docs/conformance-statement.md stays true: its tables against the code and against a real association.

The storage SOP class and transfer syntax tables must list exactly what ``agent.dicom.scp`` accepts, the
status table exactly the statuses the C-STORE handler returns, and the association policy table the
defaults of ``DicomSettings``. Then a pynetdicom requestor proposes every documented context (plus some
that are not documented) to a running ``StoreSCP`` on 127.0.0.1, and what is accepted and rejected must be
what the document says.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE, build_context

from agent.config import DicomSettings
from agent.db import make_engine, session_factory
from agent.dicom import scp as scp_module
from agent.dicom.scp import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    TRANSFER_SYNTAXES,
    VERIFICATION,
    StoreSCP,
    accepted_storage_classes,
)
from agent.dicom.spool import Spool

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance-statement.md"

# Not accepted, whatever the document says: a sample the real association must reject.
UNLISTED_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan Storage
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Query/Retrieve - FIND
)
UNLISTED_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.4.100",  # MPEG2 Main Profile / Main Level
    "1.2.840.10008.1.2.4.107",  # HEVC/H.265 Main Profile
    "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
)
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _section(name: str) -> str:
    text = DOC.read_text()
    match = re.search(rf"<!-- {name}:start -->(.*?)<!-- {name}:end -->", text, re.S)
    assert match, f"{name} table markers missing from {DOC.name}"
    return match.group(1)


def _rows(name: str) -> list[list[str]]:
    rows = []
    for line in _section(name).strip().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if set("".join(cells)) <= set("-: ") or cells[0] in {"SOP Class", "Transfer Syntax", "Status"}:
            continue
        rows.append(cells)
    return rows


def documented_sop_classes() -> list[str]:
    return [uid for _, uid in _rows("storage-sop-classes")]


def documented_transfer_syntaxes() -> list[str]:
    return [uid for _, uid in _rows("transfer-syntaxes")]


def test_storage_sop_class_table_is_what_the_code_accepts() -> None:
    documented = documented_sop_classes()
    assert len(documented) == len(set(documented)), "a SOP class is listed twice"
    assert set(documented) == set(accepted_storage_classes())


def test_transfer_syntax_table_is_what_the_code_accepts_in_order() -> None:
    assert documented_transfer_syntaxes() == list(TRANSFER_SYNTAXES)


def test_status_table_is_every_status_the_store_handler_returns() -> None:
    documented = {int(row[0], 16) for row in _rows("store-statuses")}
    returned = {
        scp_module.SUCCESS,
        scp_module.OUT_OF_RESOURCES,
        scp_module.DATASET_DOES_NOT_MATCH,
        scp_module.CANNOT_UNDERSTAND,
    }
    assert documented == returned
    # STOW-RS FailureReasons: the C-STORE refusals, plus the two a Part 10 file gets instead of a rejected
    # presentation context.
    stow = {int(row[0], 16) for row in _rows("stow-failure-reasons")}
    assert stow == (returned - {scp_module.SUCCESS}) | {
        scp_module.SOP_CLASS_NOT_SUPPORTED,
        scp_module.TRANSFER_SYNTAX_NOT_SUPPORTED,
    }
    # Every status constant the handler module defines (0xNNNN integers) is documented.
    source = Path(scp_module.__file__).read_text()
    constants = {int(v, 16) for v in re.findall(r"^[A-Z_]+ = (0x[0-9A-F]{4})$", source, re.M)}
    assert constants == documented | stow


def test_identity_and_association_defaults_match_the_settings() -> None:
    text = DOC.read_text()
    d = DicomSettings()
    assert f"`{IMPLEMENTATION_CLASS_UID}`" in text
    assert f"`{IMPLEMENTATION_VERSION_NAME}`" in text
    assert f"`{d.ae_title}`" in text
    assert f"`{d.port}`" in text
    policy = text.split("##### 2.2.1.2 Association policies", 1)[1].split("#####", 1)[0]
    assert f"default {d.max_associations};" in policy
    assert f"default {d.max_pdu} bytes" in policy
    assert f"`dicom.acse_timeout_s`, default {d.acse_timeout_s:g} s" in policy
    assert f"`dicom.dimse_timeout_s`, default {d.dimse_timeout_s:g} s" in policy
    assert f"`dicom.network_timeout_s`, default {d.network_timeout_s:g} s" in policy
    assert f"(default {d.shutdown_grace_s:g} s)" in policy


@pytest.fixture
def running_scp(tmp_path: Path) -> Iterator[tuple[str, int, str]]:
    settings = DicomSettings(host="127.0.0.1", port=_free_port())
    engine = make_engine(f"sqlite:///{tmp_path / 'agent.db'}")
    scp = StoreSCP(settings, Spool(tmp_path / "spool"), session_factory(engine))
    scp.start()
    try:
        host, port = scp.address
        yield host, port, settings.ae_title
    finally:
        scp.stop(2)
        engine.dispose()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _negotiate(address: tuple[str, int, str], contexts: list) -> tuple[list, list]:
    """Associate proposing ``contexts``; return (accepted, rejected) presentation contexts."""
    host, port, aet = address
    ae = AE(ae_title="CONFTEST")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.requested_contexts = contexts
    assoc = ae.associate(host, port, ae_title=aet)
    try:
        assert assoc.is_established, "the association was not established"
        return list(assoc.accepted_contexts), list(assoc.rejected_contexts)
    finally:
        assoc.release()


def test_a_real_association_accepts_exactly_the_documented_sop_classes(running_scp) -> None:
    documented_ts = documented_transfer_syntaxes()
    proposals = [VERIFICATION, *documented_sop_classes(), *UNLISTED_SOP_CLASSES]
    accepted: dict[str, str] = {}
    rejected: set[str] = set()
    # At most 128 presentation contexts per association (PS3.8 §9.3.2.2: odd IDs 1..255).
    for start in range(0, len(proposals), 120):
        batch = proposals[start : start + 120]
        # Propose our transfer syntaxes in reverse, so the choice shows whose preference wins.
        contexts = [build_context(uid, list(reversed(documented_ts))) for uid in batch]
        ok, refused = _negotiate(running_scp, contexts)
        accepted.update({str(cx.abstract_syntax): str(cx.transfer_syntax[0]) for cx in ok})
        rejected.update(str(cx.abstract_syntax) for cx in refused)
    assert set(accepted) == {VERIFICATION, *documented_sop_classes()}
    assert rejected == set(UNLISTED_SOP_CLASSES)
    # Storage contexts get the first documented transfer syntax the peer proposed (the document's order).
    for uid in documented_sop_classes():
        assert accepted[uid] == documented_ts[0], uid


def test_a_real_association_accepts_exactly_the_documented_transfer_syntaxes(running_scp) -> None:
    proposals = [*documented_transfer_syntaxes(), *UNLISTED_TRANSFER_SYNTAXES]
    contexts = [build_context(CT_IMAGE_STORAGE, [ts]) for ts in proposals]
    ok, refused = _negotiate(running_scp, contexts)
    assert {str(cx.transfer_syntax[0]) for cx in ok} == set(documented_transfer_syntaxes())
    assert {str(cx.transfer_syntax[0]) for cx in refused} == set(UNLISTED_TRANSFER_SYNTAXES)
    assert all(cx.result == 0x04 for cx in refused)  # transfer syntaxes not supported


def test_verification_is_answered(running_scp) -> None:
    host, port, aet = running_scp
    ae = AE(ae_title="CONFTEST")
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate(host, port, ae_title=aet)
    try:
        assert assoc.is_established
        status = assoc.send_c_echo()
        assert status.Status == 0x0000
    finally:
        assoc.release()
