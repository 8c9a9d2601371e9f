"""Orthanc as the PACS in tests: its own JSON configuration, storage and free ports; REST helpers.

The configuration registers our agent in ``DicomModalities`` (re-pointed at each test's agent over REST),
accepts C-ECHO/C-FIND/C-MOVE/C-GET/C-STORE from it, and uses a short ``StableAge``. The DICOMweb plugin
(Debian package ``orthanc-dicomweb``) is loaded: QIDO-RS, WADO-RS and STOW-RS at ``dicomweb_url``. Orthanc
runs with ``TCP_NODELAY=1`` in its environment and is always stopped by the fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.agentproc import wait_until

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
AGENT_AET = "LIVERAGENT"


@dataclass
class Orthanc:
    workdir: Path
    http_port: int
    dicom_port: int
    aet: str = "ORTHANC"
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0
    # HTTP basic users (name -> password); none: no authentication. The REST helpers log in as the first.
    users: dict[str, str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "liver-agent-test",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": dict(self.users or {}),
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "UnknownSopClassAccepted": False,
            "StableAge": 1,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
            "ConcurrentJobs": 2,
            "SynchronousCMove": True,
            "DicomScuTimeout": 10,
            "DicomScpTimeout": 30,
            "DicomModalities": {},
            "SaveJobs": False,
            "StorageAccessOnFind": "Always",
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
        }

    def start(self) -> Orthanc:
        assert self.proc is None
        if not DICOMWEB_PLUGIN.exists():  # a missing fixture is a failure, not a skip
            raise RuntimeError(f"{DICOMWEB_PLUGIN} missing: run scripts/install-system-deps.sh")
        self.runs += 1
        (self.workdir / "storage").mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=1))
        log = (self.workdir / f"orthanc-{self.runs}.log").open("wb")
        self.proc = subprocess.Popen(
            [ORTHANC, str(cfg)],
            cwd=self.workdir,
            env={**os.environ, "TCP_NODELAY": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if not wait_until(lambda: self.proc.poll() is not None or self._alive(), 30, 0.1):
            self.stop()
            raise RuntimeError("Orthanc did not start")
        if self.proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited:\n{self.log_text()}")
        return self

    def _alive(self) -> bool:
        try:
            self.get("/system")
            return True
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_text(self) -> str:
        path = self.workdir / f"orthanc-{self.runs}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- REST --------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if raw is not None:
            req.add_header("Content-Type", "application/dicom")
        if self.users:
            import base64

            credentials = "{}:{}".format(*next(iter(self.users.items())))
            req.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
        with urllib.request.urlopen(req, timeout=60) as rsp:
            payload = rsp.read()
        ctype = rsp.headers.get("Content-Type", "")
        if "json" in ctype:
            return json.loads(payload)
        return payload

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self._request("POST", path, body if body is not None else {})

    def put(self, path: str, body: Any) -> Any:
        return self._request("PUT", path, body)

    def upload(self, path: Path | bytes) -> dict[str, Any]:
        raw = path if isinstance(path, bytes) else Path(path).read_bytes()
        return self._request("POST", "/instances", raw=raw)

    def register_agent(self, port: int, aet: str = AGENT_AET, name: str = "agent") -> None:
        self.put(
            f"/modalities/{name}",
            {
                "AET": aet,
                "Host": "127.0.0.1",
                "Port": port,
                "AllowEcho": True,
                "AllowFind": True,
                "AllowMove": True,
                "AllowGet": True,
                "AllowStore": True,
            },
        )

    def register_agent_dicomweb(self, url: str, token: str, name: str = "agent") -> None:
        """Make the agent's STOW-RS endpoint a DICOMweb server Orthanc can send to (with a bearer token)."""
        self.put(
            f"/dicom-web/servers/{name}", {"Url": url, "HttpHeaders": {"Authorization": f"Bearer {token}"}}
        )

    def stow_to(self, server: str, resources: list[str]) -> Any:
        """Orthanc sends the resources to a DICOMweb server with STOW-RS, as a cloud router would."""
        return self.post(f"/dicom-web/servers/{server}/stow", {"Resources": resources, "Synchronous": True})

    def send_to(self, modality: str, resources: list[str]) -> Any:
        """Orthanc C-STOREs the resources (Orthanc ids) to a modality, as an auto-routing rule would."""
        return self.post(f"/modalities/{modality}/store", {"Resources": resources, "Synchronous": True})

    def study_id(self, study_uid: str) -> str | None:
        res = self.post("/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})
        return res[0] if res else None

    def study_instances(self, study_uid: str) -> list[dict[str, Any]]:
        """Every instance of the study, with its main tags (SOPInstanceUID, SOPClassUID, Modality)."""
        sid = self.study_id(study_uid)
        if sid is None:
            return []
        out = []
        for inst in self.get(f"/studies/{sid}/instances"):
            tags = self.get(f"/instances/{inst['ID']}/simplified-tags")
            out.append({"ID": inst["ID"], **tags})
        return out

    def instance_file(self, orthanc_id: str) -> bytes:
        return self._request("GET", f"/instances/{orthanc_id}/file")
