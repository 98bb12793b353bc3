"""Deprecated operations answer with Deprecation (RFC 9745) and Sunset (RFC 8594) headers, dated
from the spec; the app is built on a copy of the spec with one operation marked deprecated."""

import datetime as dt

import pytest
import yaml

from levqor_core import app as app_factory
from levqor_core.web import deprecation

SPEC = yaml.safe_load(app_factory.SPEC.read_text())


def _deprecated_spec() -> dict:
    spec = yaml.safe_load(app_factory.SPEC.read_text())
    health = spec["paths"]["/health"]["get"]
    health.update({"deprecated": True, "x-deprecated-at": dt.date(2026, 12, 1), "x-sunset": "2027-06-01"})
    return spec


def test_headers_carry_the_spec_dates():
    headers = deprecation.headers_by_operation(_deprecated_spec(), "https://developers.example/docs/changelog")
    assert headers == {
        "get_health": {
            "Deprecation": "@1796083200",  # 2026-12-01T00:00:00Z
            "Sunset": "Tue, 01 Jun 2027 00:00:00 GMT",
            "Link": '<https://developers.example/docs/changelog>; rel="deprecation"; type="text/html"',
        }
    }


def test_the_current_spec_deprecates_nothing_without_dates():
    deprecation.headers_by_operation(SPEC)  # raises for a deprecated operation without x-deprecated-at


def test_a_deprecation_without_a_date_is_refused_at_start_up():
    spec = _deprecated_spec()
    del spec["paths"]["/health"]["get"]["x-deprecated-at"]
    with pytest.raises(ValueError, match="x-deprecated-at"):
        deprecation.headers_by_operation(spec)


@pytest.fixture
def deprecated_cx(tmp_path, monkeypatch, redis_server, database_url):
    """An app built from a spec copy in which GET /health is deprecated."""
    spec_path = tmp_path / "openapi.yaml"
    spec_path.write_text(yaml.safe_dump(_deprecated_spec(), sort_keys=False, allow_unicode=True))
    monkeypatch.setattr(app_factory, "SPEC", spec_path)
    return app_factory.create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": database_url.replace("postgresql://", "postgresql+psycopg://"),
            "REDIS_URL": redis_server.url,
            "SECRET_KEY": "test-secret",
            "RATELIMIT_STORAGE_URI": redis_server.url,
            "PUBLIC_BASE_URL": "https://developers.example",
        }
    )


def test_a_deprecated_operation_answers_with_deprecation_and_sunset(deprecated_cx):
    response = deprecated_cx.test_client().get("/api/health")
    assert response.status_code == 200
    assert response.headers["Deprecation"] == "@1796083200"
    assert response.headers["Sunset"] == "Tue, 01 Jun 2027 00:00:00 GMT"
    assert 'rel="deprecation"' in response.headers["Link"]
    ready = deprecated_cx.test_client().get("/api/health/ready")  # not deprecated
    assert "Deprecation" not in ready.headers and "Sunset" not in ready.headers


def test_operations_of_the_real_spec_carry_no_deprecation(cx):
    response = cx.test_client().get("/api/health")
    assert response.status_code == 200
    assert "Deprecation" not in response.headers


def test_the_api_reference_marks_a_deprecated_operation(deprecated_cx, monkeypatch):
    from portal import snippets

    spec = _deprecated_spec()
    monkeypatch.setattr(snippets, "load_spec", lambda: spec)
    page = deprecated_cx.test_client().get("/docs/api").text
    assert 'class="badge badge-deprecated">Deprecated: stops on 2027-06-01</span>' in page
    # Swagger UI marks it too: the live document it renders says so.
    assert deprecated_cx.test_client().get("/api/openapi.json").json()["paths"]["/health"]["get"]["deprecated"] is True
