"""The DICOMweb peer against Orthanc's DICOMweb plugin: the same answers as the DIMSE peer at study, series
and image level, WADO-RS retrieval filed by a real listener as ``retrieved``, STOW-RS delivery, HTTP basic
authentication with the password from the environment, ``liver-agent echo`` and ``check-config``, and TLS
(verified by default, a private CA through ``ca_file``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pytest
import yaml
from support.agentproc import REPO, free_port
from support.dicomgen import dataset_bytes
from support.orthanc import Orthanc
from support.pki import make_pki
from support.tls_proxy import TLSProxy
from support.worklist import migrated_sessions

from agent.config import DicomSettings, DicomwebPeerSettings, PeerSettings
from agent.dicom.scp import StoreSCP
from agent.dicom.spool import Spool
from agent.peers import Outcome, PeerError, PeerUnreachable, Receiver, StoreItem, build_peer
from agent.peers.dicomweb import DicomwebPeer
from tests.unit.sr.srgen import LesionSpec, ct_image, uid, write_study_sr

pytestmark = [pytest.mark.orthanc, pytest.mark.integration]

PATIENT = "WEBPEER-1"


def web_peer(url: str, **extra: Any) -> DicomwebPeer:
    settings = DicomwebPeerSettings(type="dicomweb", url=url, connect_timeout_s=5, read_timeout_s=20, **extra)
    peer = build_peer("cloud", settings, "LIVERAGENT")
    assert isinstance(peer, DicomwebPeer)
    return peer


@pytest.fixture(scope="module")
def study(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("web-peer-study")
    ct = ct_image(PATIENT, "web-base", date(2024, 1, 10))
    ct.StudyDescription = "CT ABDOMEN"
    ct_path = directory / "ct.dcm"
    ct.save_as(ct_path, enforce_file_format=True)
    sr_path, _ = write_study_sr(
        directory,
        "web-base",
        patient_id=PATIENT,
        study="web-base",
        study_date=date(2024, 1, 10),
        lesions=[LesionSpec("liver seg 7", uid("W1"), long_mm=30.0)],
    )
    orthanc.upload(ct_path)
    orthanc.upload(sr_path)
    orthanc.register_agent(free_port())  # Orthanc answers DIMSE queries of known modalities only
    return {"study_uid": uid("web-base"), "ct": ct, "sr_path": sr_path}


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[StoreSCP]:
    """A real listener (spool and index) whose store path files what the peer retrieves; not started."""
    sessions = migrated_sessions(tmp_path / "agent.db")
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    scp = StoreSCP(DicomSettings(), spool, sessions)
    yield scp
    scp.index.close()
    sessions.kw["bind"].dispose()


def test_queries_answer_as_the_dimse_peer_does(orthanc: Orthanc, study: dict[str, Any]) -> None:
    dimse = build_peer(
        "pacs", PeerSettings(ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port), "LIVERAGENT"
    )
    web = web_peer(orthanc.dicomweb_url)
    web.echo()
    study_uid = study["study_uid"]
    window = (PATIENT, None, date(2023, 1, 1), date(2024, 12, 31), ["CT", "SR"])
    studies = web.find_studies(*window)
    assert [(s.study_uid, s.study_date, set(s.modalities)) for s in studies] == [
        (study_uid, "20240110", {"CT", "SR"})
    ]
    assert [s.study_uid for s in dimse.find_studies(*window)] == [study_uid]
    assert web.find_studies(PATIENT, None, date(2025, 1, 1), None, ["CT"]) == []
    assert web.find_studies(PATIENT, None, None, None, ["MR"]) == []
    keys = ("SeriesNumber",)
    by_uid = lambda found: sorted(found, key=lambda s: s.series_uid)  # noqa: E731
    assert by_uid(web.find_series(study_uid, keys=keys)) == by_uid(dimse.find_series(study_uid, keys=keys))
    assert [s.modality for s in web.find_series(study_uid, "SR")] == ["SR"]
    ct_series = str(study["ct"].SeriesInstanceUID)
    image_keys = ("SliceThickness", "PixelSpacing")
    images = web.find_instances(study_uid, ct_series, image_keys)
    assert images == dimse.find_instances(study_uid, ct_series, image_keys)
    assert [(i.attributes["SliceThickness"], i.attributes["PixelSpacing"]) for i in images] == [
        ("2.5", "1\\1")
    ]
    sop = str(study["ct"].SOPInstanceUID)
    assert [i.sop_uid for i in web.find_instances(study_uid, ct_series, (), [sop])] == [sop]
    assert web.find_instances(study_uid, ct_series, (), ["1.2.3.4"]) == []
    assert web.find_sr_instances(study_uid) == dimse.find_sr_instances(study_uid)


def test_wado_rs_retrieval_is_filed_as_retrieved(
    orthanc: Orthanc, study: dict[str, Any], listener: StoreSCP
) -> None:
    web = web_peer(orthanc.dicomweb_url)
    srs = web.find_sr_instances(study["study_uid"])
    receiver = Receiver("LIVERAGENT", None, listener.store_retrieved)
    result = web.retrieve(srs, receiver)
    assert (result.completed, result.failed) == (1, 0)
    sent = pydicom.dcmread(study["sr_path"], stop_before_pixels=True)
    spooled = listener.spool.root / study["study_uid"] / str(sent.SeriesInstanceUID)
    spooled = spooled / f"{sent.SOPInstanceUID}.dcm"
    assert dataset_bytes(spooled) == dataset_bytes(study["sr_path"])
    engine = listener.sessions.kw["bind"]
    with engine.connect() as c:
        rows = c.exec_driver_sql("SELECT origin, calling_aet FROM instances").all()
        states = c.exec_driver_sql("SELECT state FROM studies").all()
    assert rows == [("retrieved", "cloud")] and states == [("prior",)]
    # Without the listener's store function WADO-RS cannot file anything: a clear, permanent error.
    with pytest.raises(PeerError) as info:
        web.retrieve(srs, Receiver("LIVERAGENT"))
    assert info.value.outcome is Outcome.PERMANENT


def test_stow_rs_store_and_failures(orthanc: Orthanc, tmp_path: Path) -> None:
    ct = ct_image("WEBPEER-2", "web-store", date(2024, 2, 1))
    path = tmp_path / "ct.dcm"
    ct.save_as(path, enforce_file_format=True)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    item = StoreItem(path, str(ct.SOPClassUID), str(ct.SOPInstanceUID))
    results = web_peer(orthanc.dicomweb_url).store([StoreItem(junk, item.sop_class_uid, "1.2.3.9"), item])
    assert [r.outcome for r in results] == [Outcome.PERMANENT, Outcome.OK]
    assert [r.item for r in results] == [StoreItem(junk, item.sop_class_uid, "1.2.3.9"), item]
    assert orthanc.study_id(str(ct.StudyInstanceUID)) is not None
    closed = web_peer(f"http://127.0.0.1:{free_port()}/dicom-web")
    with pytest.raises(PeerUnreachable) as unreachable:
        closed.store([item])
    assert closed.classify_failure(unreachable.value) is Outcome.TRANSIENT
    with pytest.raises(PeerUnreachable):
        closed.echo()


def test_basic_auth_password_from_the_environment(
    own_orthanc: Orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own_orthanc.stop()
    own_orthanc.users = {"agent": "s3cret-pw"}
    own_orthanc.start()
    monkeypatch.setenv("CLOUD_PASSWORD", "s3cret-pw")
    good = web_peer(own_orthanc.dicomweb_url, auth="basic", username="agent", password_env="CLOUD_PASSWORD")
    good.echo()
    assert good.find_studies("NOBODY", None, None, None, []) == []
    bad = web_peer(own_orthanc.dicomweb_url, auth="basic", username="agent", password="wrong")
    with pytest.raises(PeerError) as info:
        bad.echo()
    assert (info.value.status, info.value.outcome) == (401, Outcome.PERMANENT)
    none = web_peer(own_orthanc.dicomweb_url)
    with pytest.raises(PeerError) as info:
        none.echo()
    assert info.value.status == 401

    # liver-agent echo PEER and check-config over the same configuration.
    config = tmp_path / "agent.yaml"
    peer = {"type": "dicomweb", "url": own_orthanc.dicomweb_url, "auth": "basic", "username": "agent"}
    config.write_text(yaml.safe_dump({"peers": {"cloud": {**peer, "password": "s3cret-pw"}}}))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent.cli", *args, "-c", str(config)],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip

    done = cli("echo", "cloud")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"QIDO-RS {own_orthanc.dicomweb_url}: success"
    shown = cli("check-config")
    assert shown.returncode == 0 and "s3cret-pw" not in shown.stdout
    assert yaml.safe_load(shown.stdout)["peers"]["cloud"]["password"] == "**********"
    config.write_text(yaml.safe_dump({"peers": {"cloud": {**peer, "password": "nope"}}}))
    done = cli("echo", "cloud")
    assert done.returncode == 1
    assert done.stdout.strip() == f"QIDO-RS {own_orthanc.dicomweb_url}: failed (HTTP 401)"
    assert json.dumps(done.stdout).count("nope") == 0


def test_tls_is_verified_by_default_and_a_ca_file_is_trusted(orthanc: Orthanc, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    proxy = TLSProxy(orthanc.http_port, pki["server.crt"], pki["server.key"]).start()
    try:
        url = f"https://127.0.0.1:{proxy.port}/dicom-web"
        # A server certificate from a CA the system does not know: refused, and reported as no answer.
        with pytest.raises(PeerUnreachable) as info:
            web_peer(url).echo()
        assert "SSLError" in str(info.value)
        web_peer(url, ca_file=pki["ca.crt"]).echo()
        web_peer(url, tls_verify=False).echo()
        ct = ct_image("WEBTLS", "web-tls", date(2024, 2, 2))
        path = tmp_path / "ct.dcm"
        ct.save_as(path, enforce_file_format=True)
        (result,) = web_peer(url, ca_file=pki["ca.crt"]).store(
            [StoreItem(path, str(ct.SOPClassUID), str(ct.SOPInstanceUID))]
        )
        assert result.outcome is Outcome.OK
        assert orthanc.study_id(str(ct.StudyInstanceUID)) is not None
    finally:
        proxy.stop()


def test_acquisition_context_queries_answer_as_over_dimse(orthanc: Orthanc, tmp_path: Path) -> None:
    """The SERIES and IMAGE level keys the acquisition context asks for (agent.pipeline.acquisition) come
    back the same over QIDO-RS as over C-FIND."""
    from agent.pipeline.acquisition import IMAGE_KEYS, SERIES_KEYS

    ct = ct_image("WEBCTX", "web-ctx", date(2024, 3, 3))
    ct.KVP = 120
    ct.ContrastBolusRoute = "IV"
    ct.ContrastBolusStartTime = "101500"
    ct.AcquisitionTime = "101610"
    ct.ContentTime = "101611"
    ct.BodyPartExamined = "ABDOMEN"
    path = tmp_path / "ct.dcm"
    ct.save_as(path, enforce_file_format=True)
    orthanc.upload(path)
    orthanc.register_agent(free_port())
    dimse = build_peer(
        "pacs", PeerSettings(ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port), "LIVERAGENT"
    )
    web = web_peer(orthanc.dicomweb_url)
    study_uid, series_uid, sop = str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID), str(ct.SOPInstanceUID)
    (series,) = web.find_series(study_uid, None, SERIES_KEYS)
    assert [series] == dimse.find_series(study_uid, None, SERIES_KEYS)
    assert series.attributes["ContrastBolusAgent"] == "Iomeprol"
    assert series.attributes["BodyPartExamined"] == "ABDOMEN"
    (image,) = web.find_instances(study_uid, series_uid, IMAGE_KEYS, [sop])
    assert [image] == dimse.find_instances(study_uid, series_uid, IMAGE_KEYS, [sop])
    # Numbers travel as JSON numbers in QIDO-RS ("120" for a DS sent as "120.0"): equal as numbers.
    assert numeric(image.attributes) == numeric(
        dimse.find_instances(study_uid, series_uid, IMAGE_KEYS, [sop])[0].attributes
    )
    assert (float(image.attributes["KVP"]), image.attributes["ContrastBolusStartTime"]) == (120.0, "101500")


def numeric(attributes: dict[str, str]) -> dict[str, tuple[Any, ...]]:
    def value(v: str) -> Any:
        try:
            return float(v)
        except ValueError:
            return v

    return {k: tuple(value(v) for v in text.split("\\")) for k, text in attributes.items()}


def test_echo_command_checks_a_peer_of_either_kind(orthanc: Orthanc, tmp_path: Path) -> None:
    orthanc.register_agent(free_port())
    closed = free_port()
    peers = {
        "pacs": {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port},
        "cloud": {"type": "dicomweb", "url": orthanc.dicomweb_url},
        "gone": {"type": "dicomweb", "url": f"http://127.0.0.1:{closed}/dicom-web"},
    }
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({"peers": peers}))

    def echo(name: str) -> tuple[int, str]:
        done = subprocess.run(
            [sys.executable, "-m", "agent.cli", "echo", name, "--timeout", "5", "-c", str(config)],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        return done.returncode, done.stdout.strip()

    assert echo("pacs") == (0, f"C-ECHO {orthanc.aet}@127.0.0.1:{orthanc.dicom_port}: success")
    assert echo("cloud") == (0, f"QIDO-RS {orthanc.dicomweb_url}: success")
    assert echo("gone") == (1, f"QIDO-RS http://127.0.0.1:{closed}/dicom-web: no answer")
