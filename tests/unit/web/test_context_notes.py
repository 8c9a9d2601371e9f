"""The study page lists what the acquisition context could not tell and how each computed HU was obtained."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.alerts.results import StoredResult
from agent.web.views import context_notes

COMPUTED = (
    "mean HU computed by liver-agent inside the ellipse spanned by the measured axes on image 4c5, 9 pixels"
)


def test_phase_unknown_and_computed_hu_notes_are_listed_per_visit_and_lesion() -> None:
    timeline = {
        "timepoints": [
            {
                "date": "2024-01-10",
                "lesions": [
                    {
                        "id": "L1",
                        "notes": [
                            "linked to L1 at 2024-01-10: tracking UID",
                            COMPUTED,
                        ],
                    }
                ],
            },
            {
                "date": "2024-03-20",
                "lesions": [
                    {"id": "L1", "notes": ["contrast phase unknown: series description 'CT ABDOMEN 2.5'"]},
                    {"id": "L2", "notes": ["contrast phase unknown: series description 'CT ABDOMEN 2.5'"]},
                ],
            },
        ]
    }
    result = StoredResult(1, 1, "final", datetime(2024, 3, 20, tzinfo=UTC), {}, timeline, 1)
    assert context_notes(result) == [
        f"BL 2024-01-10, L1: {COMPUTED}",
        "FU1 2024-03-20, L1: contrast phase unknown: series description 'CT ABDOMEN 2.5'",
        "FU1 2024-03-20, L2: contrast phase unknown: series description 'CT ABDOMEN 2.5'",
    ]
    assert context_notes(StoredResult(1, 1, "final", datetime(2024, 3, 20, tzinfo=UTC), {}, None, 0)) == []
