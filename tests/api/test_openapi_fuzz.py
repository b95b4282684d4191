"""schemathesis against the app's own OpenAPI document: no input makes the API answer 5xx."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings

from api.app import create_app
from haochaping.domain.records import Role
from haochaping.settings import Settings
from tests.api.conftest import UNIT_A, Seed

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("role", "unit"), [(Role.SUPERVISOR, None), (Role.UNIT_OFFICER, UNIT_A), (Role.AUDITOR, None)]
)
def test_no_input_gives_a_server_error(
    settings: Settings, seeded: Seed, token: Callable, role: Role, unit: str | None
) -> None:
    settings.api.command_wait_seconds = 0.2  # no broker in this test: actions must still not fail with 5xx
    app = create_app(settings, start_feed=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = token(role, unit)
    failures: list[str] = []
    for operation in schema.get_all_operations():
        op = operation.ok()
        if op.path in ("/v1/live", "/readyz"):
            continue  # a never-ending stream; readiness is 503 by design without a broker

        @hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def check(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} {case.query}: {response.status_code} {response.text[:200]}"
                )

        check()
    assert not failures, "\n".join(failures[:10])
