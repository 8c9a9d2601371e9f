"""The dciodvfy warnings we accept on the DICOM objects we write, each with its reason (the only such list).

Any other warning, and every error, fails the validator tests. ``validate(path)`` runs dicom3tools
``dciodvfy`` (messages on stderr; exit 1 when there is an error) and sorts its lines.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

DCIODVFY = shutil.which("dciodvfy") or "/usr/bin/dciodvfy"

#: (pattern of the whole message line, why we accept it)
ACCEPTED_WARNINGS: tuple[tuple[str, str], ...] = (
    (
        r"Warning - Unrecognized defined term <99LIVERAGENT> for value 1 of attribute "
        r"<Coding Scheme Designator>",
        "our private coding scheme (criteria other than RECIST 1.1, response categories, alerts): DICOM "
        "has no codes for them; it is declared in the Coding Scheme Identification Sequence, which "
        "dciodvfy does not consult for the defined terms of Coding Scheme Designator",
    ),
)

_ACCEPTED = [re.compile(p) for p, _ in ACCEPTED_WARNINGS]


@dataclass
class Verdict:
    returncode: int
    iod: str | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # not accepted
    accepted: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.errors and not self.warnings


def validate(path: Path) -> Verdict:
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    verdict = Verdict(proc.returncode)
    for line in (proc.stderr + proc.stdout).splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("Error"):
            verdict.errors.append(line)
        elif line.startswith("Warning"):
            if any(p.fullmatch(line) for p in _ACCEPTED):
                verdict.accepted.append(line)
            else:
                verdict.warnings.append(line)
        elif verdict.iod is None and re.fullmatch(r"[A-Za-z0-9]+", line):
            verdict.iod = line
        else:
            verdict.other.append(line)
    return verdict
