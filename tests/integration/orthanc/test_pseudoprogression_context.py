"""Pseudoprogression in context, end to end: a laboratory sends CEA results over HL7 (the ``hl7`` library's
MLLP client), the PACS (Orthanc) holds the baseline and first follow-up and routes the second follow-up CT
to the agent. The liver targets grow while the lung target shrinks and the CEA falls: the response SR the
agent stores in Orthanc carries RECIST PD with the site-discordant and the marker-discordant alerts, and the
PDF summary draws the CEA curve under the spider plot (read with pdftotext and rendered with pdftoppm).

Figures (sum of diameters): baseline liver 40 + 30 and lung 30 = 100 mm; FU1 liver 32 + 24, lung 24 = 80 mm
(-20 %, SD: the nadir); FU2 liver 48 + 36, lung 16 = 100 mm (+25 % and +20 mm over the nadir: RECIST PD).
Liver alone 70 -> 56 -> 84 mm (+50 % over its nadir: PD); lung 30 -> 24 -> 16 mm (-46.7 %: PR). CEA (ULN
5 ng/mL) 40 before treatment -> 25 -> 14 ng/mL at FU2 (-65 %: marker response).
"""

from __future__ import annotations

import io
import json
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import hl7
import pydicom
import pytest
from hl7.client import MLLPClient
from support.agentproc import free_port
from support.choigen import Lesion, Visit, write_visit
from support.dciodvfy_accepted import validate
from support.orthanc import Orthanc, wait_until

from tests.integration.orthanc.test_pipeline_orthanc import (
    PDF,
    is_pre_read,
    our_srs,
    ours,
    route,
    start_agent,
    text_values,
)

pytestmark = [pytest.mark.orthanc, pytest.mark.integration]

PATIENT = "SITES-CEA-1"
LAB = "CITYLAB"
VISITS = {
    "bl": (date(2024, 1, 10), ((40, 28), (30, 22), (30, 20))),
    "fu1": (date(2024, 3, 20), ((32, 22), (24, 18), (24, 16))),
    "fu2": (date(2024, 5, 29), ((48, 34), (36, 25), (16, 11))),
}
LESIONS = (("liver seg 7", "L1", "liver"), ("liver seg 4", "L2", "liver"), ("lung RLL", "P1", "lung"))
CEA = (("20240112", "40"), ("20240318", "25"), ("20240527", "14"))


def visits() -> dict[str, Visit]:
    return {
        name: Visit(
            PATIENT,
            name,
            day,
            "CT THORAX ABDOMEN PV 2.5",
            tuple(
                Lesion(ident, seed, long_mm, short_mm, 60, organ=organ)
                for (ident, seed, organ), (long_mm, short_mm) in zip(LESIONS, sizes, strict=True)
            ),
            study_description="CT THORAX ABDOMEN FOLLOW-UP",
        )
        for name, (day, sizes) in VISITS.items()
    }


def oru(control: str, day: str, value: str) -> str:
    return (
        "\r".join(
            [
                f"MSH|^~\\&|{LAB}|HOSP|LIVERAGENT|RAD|{day}120000||ORU^R01^ORU_R01|{control}|P|2.5",
                f"PID|1||{PATIENT}^^^^MR||Doe^Jane",
                f"OBR|1||{control}|2039-6^CEA^LN|||{day}0800",
                f"OBX|1|NM|2039-6^Carcinoembryonic Ag^LN||{value}|ng/mL|0-5|H|||F|||{day}0800",
            ]
        )
        + "\r"
    )


def _pdf(orthanc: Orthanc, study_uid: str, tmp_path: Path) -> Path:
    pdfs = [i for i in ours(orthanc, study_uid) if i.get("SOPClassUID") == PDF]
    ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(pdfs[-1]["ID"])))
    path = tmp_path / "summary.pdf"
    path.write_bytes(bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)])
    return path


def _final(orthanc: Orthanc, study_uid: str) -> pydicom.Dataset | None:
    return next((ds for ds in our_srs(orthanc, study_uid) if not is_pre_read(ds)), None)


def test_site_and_marker_discordance_reach_the_pacs(
    orthanc: Orthanc, make_agent: Any, tmp_path: Path
) -> None:
    hl7_port = free_port()
    rules = [
        {
            "match": {"patient_id": PATIENT},
            "primary": "CRC",
            "therapy": ["FOLFOX"],
            "treatment_start": "2024-01-15",
        }
    ]
    vs = visits()
    files = {name: write_visit(tmp_path / name, v, with_hu=True) for name, v in vs.items()}
    for name in ("bl", "fu1"):
        images, sr = files[name]
        for path in [*images, sr]:
            orthanc.upload(path)
    agent = start_agent(
        make_agent,
        orthanc,
        "move",
        LIVER_AGENT_MARKERS__HL7__ENABLED="true",
        LIVER_AGENT_MARKERS__HL7__PORT=str(hl7_port),
        LIVER_AGENT_MARKERS__HL7__ALLOWED_APPLICATIONS=json.dumps([LAB]),
        LIVER_AGENT_PIPELINE__ASSESS__RULES=json.dumps(rules),
    )
    # The laboratory sends the CEA results as they come: each is acknowledged once stored.
    with MLLPClient("127.0.0.1", hl7_port) as client:
        for n, (day, value) in enumerate(CEA):
            answer = hl7.parse(client.send_message(oru(f"CEA{n}", day, value)).decode().strip("\x0b\x1c\r"))
            assert str(answer.segment("MSA")[1]) == "AA", str(answer)
    assert agent.scalar("SELECT count(*) FROM markers WHERE patient_id = :p", p=PATIENT) == 3

    images, sr = files["fu2"]
    route(orthanc, *images)
    fu2 = vs["fu2"].study_uid
    assert wait_until(lambda: len(our_srs(orthanc, fu2)) >= 1, 60), agent.all_logs()[-4000:]
    route(orthanc, sr)
    assert wait_until(lambda: _final(orthanc, fu2) is not None, 60), agent.all_logs()[-4000:]
    final = _final(orthanc, fu2)
    assert final is not None
    texts = " | ".join(text_values(final))
    assert "SITE_DISCORDANT_PROGRESSION" in texts, texts
    assert "MARKER_FALLING_RECIST_PD" in texts, texts
    assert (
        "Site-discordant progression: the liver progresses (liver targets 84 mm (+50.0 % vs nadir 56 mm"
        in texts
    )
    assert "extrahepatic targets 16 mm" in texts and "-46.7 % vs baseline 30 mm" in texts
    assert "CEA 14 ng/mL on 2024-05-27" in texts and "-65.0 % vs pre-treatment 40 ng/mL (2024-01-12)" in texts
    assert (
        "By site: Liver targets 84 mm: +20.0 % vs baseline 70 mm, +50.0 % vs nadir 56 mm (FU1); PD." in texts
    )
    assert "Tumour marker: CEA: response" in texts

    # The objects pass dciodvfy.
    for inst in ours(orthanc, fu2):
        path = tmp_path / f"{inst['ID']}.dcm"
        path.write_bytes(orthanc.instance_file(inst["ID"]))
        verdict = validate(path)
        assert verdict.errors == [] and verdict.warnings == [], (inst["SOPClassUID"], verdict)

    # The PDF: the CEA curve under the spider plot, read as text and rendered as a picture.
    pdf = _pdf(orthanc, fu2, tmp_path)
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    lines = text.splitlines()
    spider = next(i for i, line in enumerate(lines) if "SPIDER PLOT" in line)
    markers = next(i for i, line in enumerate(lines) if "TUMOUR MARKERS" in line)
    assert spider < markers and "CEA (ng/mL)" in text and "ULN 5" in text
    assert "CEA: response (CEA response: 14 ng/mL is <= -50 % from the pre-treatment 40 (2024-01-12))" in text
    assert "SITE_DISCORDANT_PROGRESSION" in text and "MARKER_FALLING_RECIST_PD" in text
    subprocess.run(
        ["pdftoppm", "-r", "110", "-png", str(pdf), str(tmp_path / "page")], check=True, timeout=60
    )
    page = tmp_path / "page-1.png"
    assert page.stat().st_size > 50_000
    # the curve is drawn: CEA's blue series pixels in the right column, below the spider plot
    from PIL import Image

    image = Image.open(page).convert("RGB")
    width, height = image.size
    blue = sum(
        1
        for x in range(width // 2, width)
        for y in range(height // 3, 2 * height // 3)
        if image.getpixel((x, y))[2] > 150 and image.getpixel((x, y))[0] < 60
    )
    assert blue > 100, blue
    agent.stop()
