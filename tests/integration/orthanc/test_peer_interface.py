"""The ``Peer`` interface against Orthanc as the PACS: echo, find at study / series / image level, retrieve by
C-GET and C-MOVE, store, and the transient / permanent split of failures."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pytest
from support.agentproc import free_port
from support.dicom_peer import DicomPeer
from support.orthanc import Orthanc

from agent.config import PeerSettings
from agent.peers import (
    Outcome,
    Peer,
    PeerError,
    PeerUnreachable,
    Receiver,
    StoreItem,
    build_peer,
)
from agent.peers.dimse import DimsePeer
from tests.unit.sr.srgen import LesionSpec, ct_image, uid, write_study_sr

pytestmark = [pytest.mark.orthanc, pytest.mark.integration]

PATIENT = "PEER-1"


def peer_for(orthanc: Orthanc, method: str = "get", port: int | None = None) -> Peer:
    settings = PeerSettings(
        ae_title=orthanc.aet,
        host="127.0.0.1",
        port=port or orthanc.dicom_port,
        retrieve_method=method,
        acse_timeout_s=5,
        dimse_timeout_s=20,
        network_timeout_s=20,
    )
    return build_peer("pacs", settings, "LIVERAGENT")


@pytest.fixture(scope="module")
def study(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("peer-study")
    ct = ct_image(PATIENT, "peer-base", date(2024, 1, 10))
    ct.StudyDescription = "CT ABDOMEN"
    ct_path = directory / "ct.dcm"
    ct.save_as(ct_path, enforce_file_format=True)
    sr_path, _ = write_study_sr(
        directory,
        "peer-base",
        patient_id=PATIENT,
        study="peer-base",
        study_date=date(2024, 1, 10),
        lesions=[LesionSpec("liver seg 7", uid("P1"), long_mm=30.0)],
    )
    orthanc.upload(ct_path)
    orthanc.upload(sr_path)
    orthanc.register_agent(free_port())  # Orthanc answers queries and retrievals of known modalities only
    return {
        "study_uid": uid("peer-base"),
        "ct": ct,
        "sr": pydicom.dcmread(sr_path, stop_before_pixels=True),
        "directory": directory,
    }


def test_the_registry_gives_the_dimse_peer_by_default(orthanc: Orthanc) -> None:
    peer = peer_for(orthanc)
    assert isinstance(peer, DimsePeer)
    assert Peer.registry["dimse"] is DimsePeer
    assert PeerSettings(ae_title="A", host="h", port=104).type == "dimse"


def test_echo_succeeds_and_a_closed_port_is_a_transient_failure(orthanc: Orthanc) -> None:
    peer_for(orthanc).echo()
    closed = peer_for(orthanc, port=free_port())
    with pytest.raises(PeerUnreachable) as info:
        closed.echo()
    assert closed.classify_failure(info.value) is Outcome.TRANSIENT


def test_find_at_study_series_and_image_level_with_extra_keys(
    orthanc: Orthanc, study: dict[str, Any]
) -> None:
    peer = peer_for(orthanc)
    with peer.session():
        studies = peer.find_studies(PATIENT, None, date(2023, 1, 1), date(2024, 12, 31), ["CT", "SR"])
        assert [s.study_uid for s in studies] == [study["study_uid"]]
        assert set(studies[0].modalities) == {"CT", "SR"}
        assert studies[0].study_date == "20240110"
        assert peer.find_studies(PATIENT, None, date(2025, 1, 1), None, ["CT"]) == []

        series = peer.find_series(study["study_uid"], keys=("SeriesNumber",))
        by_modality = {s.modality: s for s in series}
        assert set(by_modality) == {"CT", "SR"}
        ct_series = by_modality["CT"]
        assert ct_series.series_uid == study["ct"].SeriesInstanceUID
        assert ct_series.description == "Portal venous 70s"
        assert ct_series.attributes == {"SeriesNumber": "1"}
        assert [s.modality for s in peer.find_series(study["study_uid"], "SR")] == ["SR"]

        images = peer.find_instances(
            study["study_uid"], ct_series.series_uid, keys=("SliceThickness", "PixelSpacing")
        )
        assert [i.sop_uid for i in images] == [study["ct"].SOPInstanceUID]
        assert float(images[0].attributes["SliceThickness"]) == 2.5
        assert [float(v) for v in images[0].attributes["PixelSpacing"].split("\\")] == [1.0, 1.0]

        srs = peer.find_sr_instances(study["study_uid"])
        assert [i.sop_uid for i in srs] == [study["sr"].SOPInstanceUID]


def test_retrieve_by_c_get_hands_each_instance_to_the_receiver(
    orthanc: Orthanc, study: dict[str, Any]
) -> None:
    peer = peer_for(orthanc, "get")
    got: list[str] = []
    lock = threading.Lock()

    def handle_store(event: Any) -> int:
        with lock:
            got.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    srs = peer.find_sr_instances(study["study_uid"])
    result = peer.retrieve(srs, Receiver("LIVERAGENT", handle_store))
    assert (result.completed, result.failed) == (1, 0)
    assert got == [study["sr"].SOPInstanceUID]


def test_retrieve_by_c_move_sends_to_our_ae(orthanc: Orthanc, study: dict[str, Any]) -> None:
    listener = DicomPeer(ae_title="MOVEDEST").start()
    try:
        orthanc.put(
            "/modalities/movedest",
            {"AET": "MOVEDEST", "Host": "127.0.0.1", "Port": listener.port, "AllowStore": True},
        )
        peer = peer_for(orthanc, "move")
        srs = peer.find_sr_instances(study["study_uid"])
        result = peer.retrieve(srs, Receiver("MOVEDEST"))
        assert (result.completed, result.failed) == (1, 0)
        assert listener.received == [study["sr"].SOPInstanceUID]
    finally:
        listener.stop()


def test_store_reports_each_item_and_a_refused_class_is_permanent(orthanc: Orthanc, tmp_path: Path) -> None:
    ct = ct_image("PEER-2", "peer-store", date(2024, 2, 1))
    path = tmp_path / "ct.dcm"
    ct.save_as(path, enforce_file_format=True)
    bogus = StoreItem(path, "1.2.3.4.5.6.7", "1.2.3.4.5.6.8")  # a SOP class no PACS accepts
    peer = peer_for(orthanc)
    results = peer.store([StoreItem(path, str(ct.SOPClassUID), str(ct.SOPInstanceUID)), bogus])
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.PERMANENT]
    assert results[0].status == 0x0000
    assert orthanc.study_id(ct.StudyInstanceUID) is not None
    with pytest.raises(PeerError) as info:
        peer_for(orthanc, port=free_port()).store([results[0].item])
    assert info.value.transient
