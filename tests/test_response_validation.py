"""Responses are checked against the spec wherever a developer or the suite can see a mismatch
(the suite, `make run`), and left unchecked in served processes, where it cost ~9% of every call
(README "Speed")."""

import pytest

from levqor_core import config
from levqor_core.app import create_app


@pytest.fixture
def app_with(redis_server, database_url):
    def build(validate_responses: bool):
        return create_app(
            {
                "TESTING": True,
                "SQLALCHEMY_DATABASE_URI": database_url.replace("postgresql://", "postgresql+psycopg://"),
                "REDIS_URL": redis_server.url,
                "RATELIMIT_STORAGE_URI": redis_server.url,
                "SECRET_KEY": "test-secret",
                "USAGE_FLUSH_SECONDS": 0,
                "VALIDATE_RESPONSES": validate_responses,
            }
        )

    return build


def _health_with_a_version_the_spec_refuses(cx):
    cx.app.config["API_VERSION"] = 110  # the spec's HealthStatus.version is a string
    return cx.test_client().get("/api/health")


def test_a_response_the_spec_refuses_is_a_500_where_responses_are_validated(app_with):
    answer = _health_with_a_version_the_spec_refuses(app_with(validate_responses=True))
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"


def test_served_processes_skip_response_validation(app_with):
    answer = _health_with_a_version_the_spec_refuses(app_with(validate_responses=False))
    assert answer.status_code == 200 and answer.json()["version"] == 110


def test_the_suite_validates_every_response_and_production_does_not_by_default(monkeypatch, cx):
    assert cx.app.config["VALIDATE_RESPONSES"] is True  # tests/conftest.py sets it for every app and server
    monkeypatch.delenv("VALIDATE_RESPONSES")
    assert config.from_env()["VALIDATE_RESPONSES"] is False
    monkeypatch.setenv("VALIDATE_RESPONSES", "1")
    assert config.from_env()["VALIDATE_RESPONSES"] is True
