"""``make demo``: the agent beside a local PACS, with one patient to look at.

It starts Orthanc as the PACS and ``liver-agent serve`` configured against it, each on free ports of
127.0.0.1 and with its files under ``var/demo/`` (emptied at each start); loads a synthetic patient into the
PACS: a baseline and two follow-up liver CTs (a few slices each, with two liver lesions drawn in the pixels)
and the radiologist's measurement SR of each (TID 1500: long axis and mean attenuation per lesion); then
sends the latest study to the agent with a C-MOVE, as a viewer's "send to" or a routing rule would. The
agent finds the priors on the PACS, assesses, sends its response SR and PDF summary to the PACS and shows
the patient on its worklist. The patient has a metastatic GIST on imatinib with a pseudoprogression: the
lesions grow while their density falls (RECIST 1.1 says progression, Choi says partial response).

It prints the worklist address and a demo login, then waits; Ctrl-C stops the agent and Orthanc (the two
processes it started, nothing else). ``--screenshots DIR`` instead writes PNGs of the worklist and of the PDF
summary's first page (headless Chromium and pdftoppm) and stops; ``--check`` stops once the results are in
the PACS.

Everything here is made on the spot; nothing is read from outside the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AGENT_AET = "LIVERAGENT"
PACS_AET = "DEMOPACS"
VIEWER_AET = "DEMOVIEWER"
DEMO_USER = "demo"
DEMO_PASSWORD = "liver-demo"
PATIENT_ID = "DEMO-GIST-001"
PATIENT_NAME = "Demo^Gisela"
UID_ROOT = "2.25."
PDF_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"


def uid(*parts: object) -> str:
    """A deterministic UID (2.25 form) for the demo's objects."""
    return UID_ROOT + str(int(hashlib.sha256(".".join(map(str, parts)).encode()).hexdigest()[:30], 16))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


# -- the patient ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lesion:
    name: str
    centre: tuple[float, float]  # mm from the image's top-left corner
    long_mm: float
    short_mm: float
    hu: float


@dataclass(frozen=True)
class Visit:
    key: str
    day: date
    description: str
    lesions: tuple[Lesion, Lesion]


def visits() -> list[Visit]:
    """Baseline, then two follow-ups on imatinib: lesions grow, their attenuation falls (cystic change)."""

    def pair(l1: float, s1: float, hu1: float, l2: float, s2: float, hu2: float) -> tuple[Lesion, Lesion]:
        return (
            Lesion("liver lesion 1 (segment 7)", (150.0, 110.0), l1, s1, hu1),
            Lesion("liver lesion 2 (segment 4)", (95.0, 85.0), l2, s2, hu2),
        )

    return [
        Visit("bl", date(2024, 1, 10), "CT ABDOMEN LIVER GIST BASELINE", pair(42, 33, 82, 31, 24, 76)),
        Visit("fu1", date(2024, 3, 12), "CT ABDOMEN LIVER GIST FOLLOW-UP", pair(52, 41, 38, 38, 29, 35)),
        Visit("fu2", date(2024, 5, 14), "CT ABDOMEN LIVER GIST FOLLOW-UP", pair(53, 42, 29, 39, 30, 27)),
    ]


SIZE = 256
SPACING = 0.8  # mm per pixel: a 205 mm field of view, enough for the liver
SLICES = 3


def ct_series(visit: Visit) -> list[Any]:
    """A few axial slices of a portal-venous liver CT with the two lesions at their size and density."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    study = uid(PATIENT_ID, visit.key)
    series = uid(PATIENT_ID, visit.key, "ct")
    rng = np.random.default_rng(int(visit.day.strftime("%Y%m%d")))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] * SPACING
    images = []
    for index in range(SLICES):
        z = -100.0 - 5.0 * index
        hu = np.full((SIZE, SIZE), -1000.0)
        body = ((xx - 102) / 100) ** 2 + ((yy - 110) / 80) ** 2 <= 1
        hu[body] = -90  # subcutaneous fat
        hu[((xx - 102) / 92) ** 2 + ((yy - 110) / 72) ** 2 <= 1] = 45  # muscle and bowel
        liver = ((xx - 130) / 62) ** 2 + ((yy - 100) / 48) ** 2 <= 1
        hu[liver] = 105  # enhancing parenchyma, portal venous phase
        hu[((xx - 60) / 10) ** 2 + ((yy - 150) / 10) ** 2 <= 1] = 180  # aorta
        for lesion in visit.lesions:
            a, b = lesion.long_mm / 2, lesion.short_mm / 2
            shrink = 1 - 0.15 * abs(index - SLICES // 2)  # smaller away from the largest slice
            inside = ((xx - lesion.centre[0]) / (a * shrink)) ** 2 + (
                (yy - lesion.centre[1]) / (b * shrink)
            ) ** 2
            hu[inside <= 1] = lesion.hu
        hu += rng.normal(0, 8, hu.shape)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = uid(series, index)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = uid(PATIENT_ID, visit.key, "frame")
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.PatientBirthDate = "19580317"
        ds.PatientSex = "F"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = visit.day.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
        ds.AccessionNumber = f"DEMO{visit.day.strftime('%y%m%d')}"
        ds.ReferringPhysicianName = "Oncology^Clinic"
        ds.StudyID = visit.key.upper()
        ds.StudyDescription = visit.description
        ds.Modality = "CT"
        ds.Manufacturer = "liver-agent demo"
        ds.BodyPartExamined = "ABDOMEN"
        ds.SeriesNumber = 3
        ds.SeriesDescription = "Portal venous 70s 2.5mm"
        ds.ContrastBolusAgent = "Iomeprol"
        ds.InstanceNumber = index + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SliceThickness = "2.5"
        ds.KVP = "120"
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = z
        ds.PixelSpacing = [SPACING, SPACING]
        ds.Rows = ds.Columns = SIZE
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter, ds.WindowWidth = 60, 400
        ds.PixelData = np.clip(np.round(hu + 1024), -32768, 32767).astype(np.int16).tobytes()
        images.append(ds)
    return images


def measurement_sr(visit: Visit, images: list[Any]) -> Any:
    """The radiologist's TID 1500 report of the visit: per lesion a tracked group (the same Tracking UID at
    every visit) with the long and short axis drawn on the middle slice and the lesion's mean attenuation."""
    import highdicom as hd
    import numpy as np
    from pydicom.sr.codedict import codes

    from agent.sr import codes as ours

    image = images[SLICES // 2]
    mm = hd.sr.CodedConcept("mm", "UCUM", "millimeter")
    hu = hd.sr.CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit")
    groups = []
    for number, lesion in enumerate(visit.lesions, 1):
        cx, cy = (c / SPACING for c in lesion.centre)
        half = lesion.long_mm / 2 / SPACING
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=uid(PATIENT_ID, "lesion", number), identifier=lesion.name
                ),
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=np.array([[cx - half, cy], [cx + half, cy]]),
                    source_image=hd.sr.SourceImageForRegion.from_source_image(image),
                ),
                finding_type=codes.SCT.Lesion,
                finding_sites=[hd.sr.FindingSite(codes.SCT.Liver)],
                measurements=[
                    hd.sr.Measurement(name=codes.SCT.LongAxis, value=lesion.long_mm, unit=mm),
                    hd.sr.Measurement(name=codes.SCT.ShortAxis, value=lesion.short_mm, unit=mm),
                    hd.sr.Measurement(
                        name=ours.ATTENUATION_COEFFICIENT, value=lesion.hu, unit=hu, derivation=codes.SCT.Mean
                    ),
                ],
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(ours.BASELINE_CATEGORY, ours.TARGET_LESION_AT_BASELINE)
                ],
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="Reader^Demo"),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=hd.sr.CodedConcept("25045-6", "LN", "CT unspecified body region"),
        imaging_measurements=groups,
        title=ours.ONCOLOGY_MEASUREMENT_REPORT,
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=images,
        content=report[0],
        series_instance_uid=uid(PATIENT_ID, visit.key, "sr"),
        series_number=100,
        sop_instance_uid=uid(PATIENT_ID, visit.key, "sr", 1),
        instance_number=1,
        manufacturer="liver-agent demo viewer",
        is_complete=True,
        is_verified=True,
        verifying_observer_name="Reader^Demo",
        verifying_organization="Demo Hospital",
        series_description="Lesion measurements",
    )
    sr.ContentDate = visit.day.strftime("%Y%m%d")
    sr.ContentTime = "101500"
    return sr


def write_patient(directory: Path) -> dict[str, list[Path]]:
    """Every visit's CT slices and SR as DICOM files; visit key -> files."""
    out: dict[str, list[Path]] = {}
    for visit in visits():
        folder = directory / visit.key
        folder.mkdir(parents=True)
        images = ct_series(visit)
        files = []
        for ds in [*images, measurement_sr(visit, images)]:
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
        out[visit.key] = files
    return out


# -- the processes -------------------------------------------------------------------------------------


class Started:
    """A process this demo started: its log file, and a stop that waits for it (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Orthanc:
    def __init__(self, workdir: Path, agent_port: int) -> None:
        self.workdir = workdir
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.agent_port = agent_port
        self.url = f"http://127.0.0.1:{self.http_port}"

    def config(self) -> dict[str, Any]:
        node = {"Host": "127.0.0.1", "AllowEcho": True, "AllowFind": True, "AllowMove": True}
        return {
            "Name": "liver-agent demo PACS",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": PACS_AET,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "StableAge": 2,
            "Plugins": [],
            "SynchronousCMove": True,
            "SaveJobs": False,
            "StorageAccessOnFind": "Always",
            "DicomModalities": {
                "agent": {
                    **node,
                    "AET": AGENT_AET,
                    "Port": self.agent_port,
                    "AllowGet": True,
                    "AllowStore": True,
                },
                "viewer": {**node, "AET": VIEWER_AET, "Port": free_port()},
            },
        }

    def start(self, env: dict[str, str]) -> Started:
        binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        if not Path(binary).exists():
            raise RuntimeError("Orthanc is not installed (apt-get install orthanc, or make system-deps)")
        (self.workdir / "storage").mkdir(parents=True)
        config = self.workdir / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=1))
        started = Started("Orthanc", [binary, str(config)], env, self.workdir, self.workdir / "orthanc.log")
        wait_for(lambda: not started.alive() or self._answers(), 60, "Orthanc to answer")
        if not started.alive():
            raise RuntimeError(f"Orthanc exited; see {started.log}")
        return started

    def _answers(self) -> bool:
        try:
            self.request("GET", "/system")
            return True
        except OSError:
            return False

    def request(self, method: str, path: str, body: bytes | None = None, json_body: Any = None) -> Any:
        if json_body is not None:
            body = json.dumps(json_body).encode()
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if method == "POST" and json_body is None:
            req.add_header("Content-Type", "application/dicom")
        with urllib.request.urlopen(req, timeout=60) as response:
            payload = response.read()
            return json.loads(payload) if "json" in response.headers.get("Content-Type", "") else payload

    def study_sop_classes(self, study_uid: str) -> list[str]:
        found = self.request(
            "POST", "/tools/find", json_body={"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
        )
        if not found:
            return []
        instances = self.request("GET", f"/studies/{found[0]}/instances")
        return [
            str(self.request("GET", f"/instances/{i['ID']}/simplified-tags").get("SOPClassUID"))
            for i in instances
        ]


def c_move(orthanc: Orthanc, study_uid: str) -> None:
    """Ask the PACS to send the study to the agent (C-MOVE, destination LIVERAGENT)."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

    ae = AE(ae_title=VIEWER_AET)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title=PACS_AET)
    if not assoc.is_established:
        raise RuntimeError("the PACS refused the association for the C-MOVE")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    try:
        statuses = [
            s.Status
            for s, _ in assoc.send_c_move(query, AGENT_AET, StudyRootQueryRetrieveInformationModelMove)
            if s
        ]
    finally:
        assoc.release()
    if not statuses or statuses[-1] != 0x0000:
        raise RuntimeError(f"C-MOVE to {AGENT_AET} ended with status {statuses[-1:]}")


def agent_env(workdir: Path, orthanc: Orthanc, dicom_port: int, web_port: int) -> dict[str, str]:
    peers = {
        "pacs": {
            "ae_title": PACS_AET,
            "host": "127.0.0.1",
            "port": orthanc.dicom_port,
            "retrieve_method": "move",
        }
    }
    rules = [
        {
            "match": {"patient_id": "^DEMO-GIST"},
            "primary": "GIST",
            "therapy": ["imatinib"],
            "treatment_start": "2024-01-15",
        }
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVER_AGENT_")}
    env.update(
        {
            "LIVER_AGENT_DICOM__HOST": "127.0.0.1",
            "LIVER_AGENT_DICOM__PORT": str(dicom_port),
            "LIVER_AGENT_DICOM__AE_TITLE": AGENT_AET,
            "LIVER_AGENT_STORAGE__SPOOL_DIR": str(workdir / "spool"),
            "LIVER_AGENT_DATABASE__URL": f"sqlite:///{workdir / 'agent.db'}",
            "LIVER_AGENT_PIPELINE__RESULTS_DIR": str(workdir / "results"),
            "LIVER_AGENT_PIPELINE__POLL_INTERVAL_S": "0.5",
            "LIVER_AGENT_PIPELINE__ASSESS__RULES": json.dumps(rules),
            "LIVER_AGENT_STABILITY__STABLE_AFTER_S": "2",
            "LIVER_AGENT_STABILITY__CHECK_INTERVAL_S": "0.5",
            "LIVER_AGENT_OUTBOX__INTERVAL_S": "0.5",
            "LIVER_AGENT_PEERS": json.dumps(peers),
            "LIVER_AGENT_WEB__ENABLED": "true",
            "LIVER_AGENT_WEB__HOST": "127.0.0.1",
            "LIVER_AGENT_WEB__PORT": str(web_port),
            "LIVER_AGENT_WEB__SESSION_SECRET": secrets.token_hex(32),
            "LIVER_AGENT_LOG__FORMAT": "json",
            "TCP_NODELAY": "1",
        }
    )
    return env


def summary_pdf(results: Path, out: Path) -> Path | None:
    """The PDF inside the newest Encapsulated PDF object the agent wrote, saved as ``out``."""
    import pydicom

    for path in sorted(results.rglob("*.dcm"), key=lambda p: p.stat().st_mtime, reverse=True):
        ds = pydicom.dcmread(path)
        if ds.SOPClassUID == PDF_SOP_CLASS:
            out.write_bytes(bytes(ds.EncapsulatedDocument))
            return out
    return None


# -- screenshots ---------------------------------------------------------------------------------------


def screenshots(web: str, pdf: Path, out: Path) -> list[Path]:
    """PNGs of the worklist (headless Chromium, logged in) and of the PDF's first page (pdftoppm), reduced
    to a small palette so they stay small in the repository."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    worklist, summary = out / "demo-worklist.png", out / "demo-summary.png"
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 320})
        page.goto(f"{web}/login")
        page.fill("input[name=username]", DEMO_USER)
        page.fill("input[name=password]", DEMO_PASSWORD)
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_url("**/worklist**")
        page.screenshot(path=str(worklist))
        browser.close()
    subprocess.run(
        [
            "pdftoppm",
            "-png",
            "-r",
            "70",
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            str(pdf),
            str(summary.with_suffix("")),
        ],
        check=True,
        timeout=60,
    )
    for png in (worklist, summary):
        Image.open(png).convert("RGB").quantize(colors=64).save(png, optimize=True)
    return [worklist, summary]


# -- main ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "demo", help="emptied, then used")
    parser.add_argument(
        "--screenshots", type=Path, help="write PNGs of the worklist and the summary, then stop"
    )
    parser.add_argument("--check", action="store_true", help="stop once the results are in the PACS (exit 0)")
    args = parser.parse_args(argv)

    workdir: Path = args.workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "agent").mkdir(parents=True)
    (workdir / "pacs").mkdir()
    started: list[Started] = []
    interrupted = False

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C (even when started where SIGINT is ignored, as in a background job) and SIGTERM stop the demo.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        say("writing a synthetic patient: baseline + two follow-up liver CTs with measurement SRs")
        files = write_patient(workdir / "patient")
        latest = visits()[-1]
        latest_uid = uid(PATIENT_ID, latest.key)

        dicom_port, web_port = free_port(), free_port()
        orthanc = Orthanc(workdir / "pacs", dicom_port)
        started.append(orthanc.start({**os.environ, "TCP_NODELAY": "1"}))
        say(f"PACS (Orthanc) up: {PACS_AET}@127.0.0.1:{orthanc.dicom_port}, {orthanc.url}")

        env = agent_env(workdir / "agent", orthanc, dicom_port, web_port)
        cli = [sys.executable, "-m", "agent.cli"]
        add = subprocess.run(
            [*cli, "web", "add-user", DEMO_USER],
            input=DEMO_PASSWORD + "\n",
            env=env,
            cwd=workdir / "agent",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if add.returncode != 0:
            raise RuntimeError(f"could not add the demo user: {add.stderr.strip()}")
        agent = Started(
            "liver-agent", [*cli, "serve"], env, workdir / "agent", workdir / "agent" / "agent.log"
        )
        started.append(agent)
        web = f"http://127.0.0.1:{web_port}"

        def agent_ready() -> bool:
            if not agent.alive():
                raise RuntimeError(f"liver-agent exited; see {agent.log}")
            try:
                with urllib.request.urlopen(f"{web}/readyz", timeout=5) as r:
                    return bool(r.status == 200)
            except (OSError, urllib.error.HTTPError):
                return False

        wait_for(agent_ready, 120, "the agent to be ready")
        say(f"agent up: {AGENT_AET}@127.0.0.1:{dicom_port}, worklist {web}/worklist")

        for key, paths in files.items():
            for path in paths:
                orthanc.request("POST", "/instances", path.read_bytes())
            say(f"loaded the {key} study into the PACS ({len(paths)} instances)")
        say("PACS sends the latest follow-up to the agent (C-MOVE to LIVERAGENT)")
        c_move(orthanc, latest_uid)

        def results_back() -> bool:
            if not agent.alive():
                raise RuntimeError(f"liver-agent exited; see {agent.log}")
            return PDF_SOP_CLASS in orthanc.study_sop_classes(latest_uid)

        wait_for(results_back, 300, "the agent's response SR and PDF summary in the PACS")
        say("the agent's response SR and PDF summary are in the PACS")
        pdf = summary_pdf(workdir / "agent" / "results", workdir / "summary.pdf")

        if args.screenshots:
            if pdf is None:
                raise RuntimeError("no PDF summary among the agent's results")
            for shot in screenshots(web, pdf, args.screenshots):
                say(f"wrote {shot}")
            return 0

        if args.check:
            say(f"check passed: worklist {web}/worklist, PDF summary {pdf}")
            return 0
        netns = os.environ.get("DEMO_NETNS") == "1"
        print()
        print(f"  worklist     {web}/worklist   (login {DEMO_USER} / {DEMO_PASSWORD})")
        print(f"  PACS         {orthanc.url}   ({PACS_AET}@127.0.0.1:{orthanc.dicom_port})")
        print(f"  agent        {AGENT_AET}@127.0.0.1:{dicom_port}")
        if pdf is not None:
            print(f"  PDF summary  {pdf}")
        print(f"  logs         {agent.log}, {started[0].log}")
        if netns:
            print(
                "\n  These addresses live in the demo's own network namespace (it runs as root). Reach them\n"
                f"  from another shell with: nsenter --net=/proc/{os.getpid()}/ns/net <command>, e.g.\n"
                f"  nsenter --net=/proc/{os.getpid()}/ns/net chromium --no-sandbox {web}/worklist"
            )
        print("\n  Ctrl-C stops the agent and the PACS.\n", flush=True)
        while all(s.alive() for s in started):
            time.sleep(1)
        say("a process stopped by itself; stopping the rest")
        return 1
    except KeyboardInterrupt:
        interrupted = True
        return 0
    except RuntimeError as exc:
        say(f"failed: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for process in reversed(started):
            process.stop()
        if started:
            say(
                "stopped "
                + " and ".join(s.name for s in reversed(started))
                + (" (interrupted)" if interrupted else "")
            )


if __name__ == "__main__":
    sys.exit(main())
