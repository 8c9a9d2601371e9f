"""A PACS that refuses the acquisition-context queries: for good (the context stays unknown and the result
says so) or for now (the job is retried later). A real pynetdicom C-FIND SCP on 127.0.0.1 answers."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from support.choigen import Lesion, Visit, write_visit
from support.dicom_peer import DicomPeer

from agent.config import PeerSettings, Settings
from agent.db import make_engine, session_factory, upgrade
from agent.peers import PeerError, Receiver, build_peer
from agent.pipeline.acquisition import AcquisitionIndex, resolve
from agent.sr.context import DEFAULT_PHASE_RULES
from agent.sr.read import read_sr

pytestmark = pytest.mark.integration


@pytest.fixture
def peer():
    server = DicomPeer().start()
    yield server
    server.stop()


def run(peer: DicomPeer, tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'agent.db'}")
    upgrade(engine)
    try:
        lesions = (Lesion("liver seg 7", "L1", 40, 28, 62),)
        _, sr = write_visit(
            tmp_path / "in", Visit("REFUSE", "bl", date(2024, 1, 10), "ABD PV", lesions), True
        )
        settings = PeerSettings(ae_title=peer.ae_title, host="127.0.0.1", port=peer.port, dimse_timeout_s=5)
        pacs = build_peer("pacs", settings, "LIVERAGENT")
        index = AcquisitionIndex(session_factory(engine), tmp_path / "spool")
        return resolve(
            index, [read_sr(sr)], Settings(), Receiver("LIVERAGENT"), DEFAULT_PHASE_RULES, peers=[pacs]
        )
    finally:
        engine.dispose()


def test_a_refusal_for_good_leaves_the_context_unknown_with_a_warning(
    peer: DicomPeer, tmp_path: Path
) -> None:
    peer.find_statuses = [0xC000, 0xC000]  # unable to process
    out = run(peer, tmp_path)
    assert peer.finds >= 1
    assert any("pacs: acquisition context not available" in w for w in out.warnings), out.warnings
    assert any("the PACS could not tell its modality" in w for w in out.warnings), out.warnings


def test_a_busy_pacs_makes_the_job_wait(peer: DicomPeer, tmp_path: Path) -> None:
    peer.find_statuses = [0xA700]  # out of resources: not now
    with pytest.raises(PeerError) as caught:
        run(peer, tmp_path)
    assert caught.value.transient
