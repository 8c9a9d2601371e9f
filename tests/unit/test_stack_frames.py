"""An unexpected exception is logged with where it happened (file, line, function), never its message or
locals, which may carry patient data."""

from __future__ import annotations

import io
import json

from agent.log import configure_logging, get_logger, stack_frames


def _read_header(patient_name: str) -> None:
    raise ValueError(f"cannot parse name {patient_name}")


def _process(patient_name: str) -> None:
    try:
        _read_header(patient_name)
    except ValueError as exc:
        raise RuntimeError(f"study of {patient_name} failed") from exc


def test_frames_name_file_line_and_function_and_nothing_of_the_message() -> None:
    try:
        _process("Doe^Jane")
    except RuntimeError as exc:
        frames = stack_frames(exc)
    assert any(
        f.startswith("tests/unit/test_stack_frames.py:") or "test_stack_frames.py:" in f for f in frames
    )
    assert frames[-1].endswith(" _read_header")  # innermost last, after the chained cause
    assert "caused by ValueError" in frames
    assert any(f.endswith(" _process") for f in frames)
    assert not any("Doe" in f or "Jane" in f for f in frames)


def test_the_logged_event_carries_the_frames_only() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:
        _process("Doe^Jane")
    except RuntimeError as exc:
        get_logger("test").error("pipeline.failed", error=type(exc).__name__, frames=stack_frames(exc))
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["event"] == "pipeline.failed" and line["error"] == "RuntimeError"
    assert "Doe" not in stream.getvalue()
    assert any(f.endswith(" _read_header") for f in line["frames"])
