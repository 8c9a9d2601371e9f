"""Configuration as the service sees it: defaults with no file, environment overrides, invalid files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_without_any_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("LIVER_AGENT_")]:
        monkeypatch.delenv(key)
    s = load_settings(None)
    assert (s.dicom.host, s.dicom.port, s.dicom.ae_title) == ("127.0.0.1", 11112, "LIVERAGENT")
    assert s.database.url.get_secret_value() == "sqlite:///var/agent.db"
    assert s.storage.spool_dir == Path("var/spool")


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("dicom:\n  port: 104\n  ae_title: FROMFILE\nstability:\n  stable_after_s: 30\n")
    monkeypatch.setenv("LIVER_AGENT_DICOM__PORT", "11113")
    monkeypatch.setenv("LIVER_AGENT_STORAGE__SPOOL_DIR", str(tmp_path / "x"))
    monkeypatch.setenv("LIVER_AGENT_DATABASE__URL", "sqlite:////tmp/x.db")
    monkeypatch.setenv("LIVER_AGENT_DICOM__ACCEPTED_CALLING_AETS", '["PACS", "MODALITY"]')
    s = load_settings(cfg)
    assert s.dicom.port == 11113
    assert s.dicom.ae_title == "FROMFILE"
    assert s.stability.stable_after_s == 30
    assert s.storage.spool_dir == tmp_path / "x"
    assert s.database.url.get_secret_value() == "sqlite:////tmp/x.db"
    assert s.dicom.accepted_calling_aets == ["PACS", "MODALITY"]


def test_invalid_values_name_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dicom:\n  port: 70000\n")
    with pytest.raises(ConfigError, match=r"dicom\.port"):
        load_settings(cfg)


@pytest.mark.parametrize(
    "content",
    [
        "dicom:\n  port: [\n",
        "dicom:\n  ae_title: THIS_TITLE_IS_FAR_TOO_LONG\n",
        "nonsense_section: 1\n",
        "- a\n",
    ],
)
def test_check_config_exits_2_on_an_invalid_file(tmp_path: Path, content: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "check-config", "-c", str(cfg)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "invalid configuration" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_example_configuration_is_valid_and_documents_every_option() -> None:
    import yaml

    from agent.config import Settings

    example = REPO / "config" / "agent.example.yaml"
    settings = load_settings(example)
    text = example.read_text()
    data = yaml.safe_load(text)

    def keys(model: type, prefix: str = "") -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                out += keys(ann, f"{prefix}{name}.")
            else:
                out.append(f"{prefix}{name}")
        return out

    def present(path: str) -> bool:
        node = data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    documented = [k for k in keys(Settings) if k != "peers"]
    missing = [k for k in documented if not present(k)]
    assert missing == [], f"options missing from config/agent.example.yaml: {missing}"
    assert "peers:" in text and settings.peers, "the example shows at least one peer"
