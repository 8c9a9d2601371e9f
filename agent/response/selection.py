"""Which criteria apply to a patient (docs/criteria.md §0), and the primary / therapy words that decide it.

RECIST 1.1 always; + Choi for GIST; + Chun for colorectal metastases on bevacizumab; + iRECIST on immune
checkpoint inhibition; mRECIST and EASL for hepatocellular carcinoma. Pure: the caller brings the text (study
description, admitting diagnoses, reason for the procedure) and the site's list of immunotherapy names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from agent.response.model import Criterion

# Primary tumour names and the words that reveal them in free text, first match wins.
PRIMARY_WORDS: tuple[tuple[str, str], ...] = (
    ("GIST", r"\bGIST\b|gastro-?intestinal stromal"),
    ("HCC", r"\bHCC\b|hepatocellular"),
    ("CRC", r"\bCRC\b|\bCRLM\b|colo-?rectal|\bcolon\b|\brectal\b"),
)
BEVACIZUMAB = r"bevacizumab|avastin"


def _found(pattern: str, text: str) -> bool:
    return bool(pattern) and bool(text) and re.search(pattern, text, re.IGNORECASE) is not None


def primary_in_text(text: str) -> str | None:
    """The primary tumour named in ``text`` (GIST, HCC, CRC), or None."""
    return next((name for name, pattern in PRIMARY_WORDS if _found(pattern, text)), None)


def therapy_in_text(text: str, immunotherapy: Sequence[str]) -> list[str]:
    """The immunotherapy names and bevacizumab found in ``text`` (whole words, any case)."""
    found = [t for t in immunotherapy if _found(rf"\b{re.escape(t)}\b", text)]
    if _found(BEVACIZUMAB, text):
        found.append("bevacizumab")
    return found


def default_criteria(
    primary: str, therapy: Sequence[str], immunotherapy: Sequence[str]
) -> tuple[Criterion, ...]:
    """RECIST 1.1; + Choi (GIST), Chun (CRC + bevacizumab), iRECIST (immunotherapy), mRECIST/EASL (HCC)."""
    p = primary.upper()
    lowered = {t.lower() for t in therapy}
    out = [Criterion.RECIST]
    if p == "GIST":
        out.append(Criterion.CHOI)
    if p in ("CRC", "CRLM") and any(re.search(BEVACIZUMAB, t) for t in lowered):
        out.append(Criterion.CHUN)
    if lowered.intersection(i.lower() for i in immunotherapy):
        out.append(Criterion.IRECIST)
    if p == "HCC":
        out += [Criterion.MRECIST, Criterion.EASL]
    return tuple(out)
