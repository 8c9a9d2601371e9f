"""Schemathesis over the OpenAPI description: generated requests (with a valid acknowledge token, so that the
handlers run rather than the auth check) never meet a server error and match the documented responses."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from support.worklist import add_result, add_study, gist_timeline, migrated_sessions
from test_api import ACK, ROUTING, web_settings

from agent.web.app import Readiness, create_app


def _app():
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="liver-agent-fuzz-"))
    sessions = migrated_sessions(directory / "agent.db")
    study = add_study(sessions, "1.2.826.0.3.1", accession="ACC-F")
    add_result(sessions, study, gist_timeline(), ROUTING)
    return create_app(web_settings(), sessions, Readiness({"scheduler": lambda: True}))


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_has_no_server_error(case) -> None:
    response = case.call(headers={"Authorization": f"Bearer {ACK}"})
    case.validate_response(response, checks=(not_a_server_error,))
    assert response.status_code < 500


@pytest.mark.parametrize("path", ["/api/alerts", "/api/studies/1.2.826.0.3.1/response"])
def test_schema_lists_the_api(path: str) -> None:
    template = path if path == "/api/alerts" else "/api/studies/{study_uid}/response"
    assert template in schema.raw_schema["paths"]
