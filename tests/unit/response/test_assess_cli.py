"""``liver-agent assess``: JSON and table output, and exit 2 with the field named on invalid input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from recist_factories import case, new, target

from agent.cli import main


def _write(tmp_path: Path, data: object) -> str:
    path = tmp_path / "timeline.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def test_json_output_mirrors_the_expected_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = case([target("T1", 18.0), target("T2", 15.0)], [target("T1", 12.1), target("T2", 11.0)])
    assert main(["assess", _write(tmp_path, data)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recist"]["timepoint_responses"] == [None, "PR"]
    assert out["recist"]["target_sums_mm"] == [33, 23.1]
    assert out["recist"]["provisional_timepoint_responses"] == [None, "PR"]
    assert {t["category"] for t in out["recist"]["next_thresholds"]} == {"PD", "PR"}
    assert isinstance(out["alerts"], list)


def test_criteria_option_and_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = case([target("T1", 30)], [target("T1", 29), new("N1")])
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(data)))
    assert main(["assess", "-", "--criteria", "RECIST1.1,iRECIST"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["irecist"]["timepoint_responses"] == [None, "iUPD"]
    assert out["recist"]["timepoint_responses"] == [None, "PD"]


def test_table_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = case([target("T1", 60), target("T2", 40)], [target("T1", 24), target("T2", 16)])
    assert main(["assess", _write(tmp_path, data), "--format", "table"]) == 0
    text = capsys.readouterr().out
    assert "T1" in text and "Sum" in text and "-60%" in text and "PR" in text


def test_table_output_says_sites_markers_and_pet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    data = case(
        [target("L1", 40), target("P1", 30, organ="lung")],
        [target("L1", 32), target("P1", 24, organ="lung")],
        [target("L1", 52), target("P1", 16, organ="lung")],
    )
    data["markers"] = [
        {"marker": "CEA", "date": "2024-01-12", "value": 40, "unit": "ng/mL", "upper_limit": 5},
        {"marker": "CEA", "date": "2024-04-25", "value": 14, "unit": "ng/mL", "upper_limit": 5},
    ]
    data["pet"] = [
        {"date": "2024-01-11", "lesions": [{"id": "L1", "sul_peak": 10}]},
        {"date": "2024-04-20", "lesions": [{"id": "L1", "sul_peak": 5}]},
    ]
    assert main(["assess", _write(tmp_path, data), "--format", "table"]) == 0
    text = capsys.readouterr().out
    assert "By site: Liver targets 52 mm: +30.0 % vs baseline 40 mm, +62.5 % vs nadir 32 mm (FU1); PD." in (
        text
    )
    assert "Tumour marker: CEA: response" in text and "PET 2024-04-20: PMR by PERCIST 1.0" in text
    for code in ("SITE_DISCORDANT_PROGRESSION", "MARKER_FALLING_RECIST_PD", "METABOLIC_RESPONSE_RECIST_PD"):
        assert code in text


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["timepoints"][1]["lesions"][0].update(long_axis_cm=4.1),
            "timepoints[1].lesions[0].long_axis_cm: unknown key",
        ),
        (lambda d: d["timepoints"][1].update(slice_mm=5), "timepoints[1].slice_mm: unknown key"),
        (lambda d: d["timepoints"][0].update(date="yesterday"), "timepoints[0].date"),
        (
            lambda d: d["timepoints"][1]["lesions"][0].update(status="vanished"),
            "timepoints[1].lesions[0].status",
        ),
        (lambda d: d["context"].update(criteria=["RECIST2"]), "context.criteria[0]"),
        (lambda d: d.pop("timepoints"), "timepoints"),
    ],
)
def test_invalid_input_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate: object, message: str
) -> None:
    data = case([target("T1", 30)], [target("T1", 29)])
    mutate(data)  # type: ignore[operator]
    assert main(["assess", _write(tmp_path, data)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unreadable_and_malformed_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["assess", str(tmp_path / "missing.json")]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    assert main(["assess", str(bad)]) == 2
    assert main(["assess", _write(tmp_path, case([target("T1", 30)])), "--criteria", "WHO"]) == 2
