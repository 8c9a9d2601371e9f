"""Certificates made by the tests with openssl: a CA, a server certificate for 127.0.0.1, a client one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def make_pki(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    d.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
            "-keyout", d / "ca.key", "-out", d / "ca.crt")  # fmt: skip
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr")  # fmt: skip
        ext = d / f"{name}.ext"
        ext.write_text(
            "subjectAltName=IP:127.0.0.1\n" if name == "server" else "extendedKeyUsage=clientAuth\n"
        )
        openssl("x509", "-req", "-in", d / f"{name}.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", d / f"{name}.crt")  # fmt: skip
    return {p.stem + p.suffix: p for p in d.iterdir()}
