"""Property-based fuzz of the served spec (schemathesis) against the app, with a valid key.

Every operation is exercised with generated requests, valid and invalid ones; no response may be
a server error or disagree with the spec (status code, content type, headers, body schema).
"""

from pathlib import Path

import pytest
import schemathesis
import sqlalchemy as sa
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from levqor.extensions import db

from .fakes.stripe_server import FakeStripe

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Revoking the key would end the key's run (it is fuzzed from a portal session below, like key
# creation and billing); the webhook only answers signed Stripe events (its own tests).
SKIPPED = {"revoke_key", "create_key", "create_checkout_session", "create_portal_session", "stripe_webhook"}
SPEC = yaml.safe_load((Path(__file__).resolve().parent.parent / "openapi" / "openapi.yaml").read_text())
OPERATIONS = {
    op["operationId"]: bool(op.get("parameters") or op.get("requestBody"))
    for item in SPEC["paths"].values()
    for op in item.values()
    if isinstance(op, dict) and "operationId" in op and op["operationId"] not in SKIPPED
}
# Negative cases need something to break: operations without parameters or a body get none.
CASES = [
    (operation_id, mode)
    for operation_id, has_inputs in sorted(OPERATIONS.items())
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if has_inputs or mode is GenerationMode.POSITIVE
]


@pytest.fixture(scope="module")
def api_schema(cx):
    return schemathesis.openapi.from_asgi("/api/openapi.json", cx)


@pytest.mark.parametrize(("operation_id", "mode"), CASES, ids=[f"{o}-{m.value}" for o, m in CASES])
def test_operation_conforms_to_the_spec(api_schema, make_account, operation_id, mode):
    # Enterprise: the fuzz meets the spec, not the burst limit (429s are documented anyway).
    _, key = make_account(tier="enterprise")
    operation = api_schema.find_operation_by_id(operation_id)

    @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case):
        case.call_and_validate(headers={"x-api-key": key}, checks=CHECKS)

    exercise()


SESSION_OPERATIONS = ["create_key", "revoke_key", "create_checkout_session", "create_portal_session"]
SESSION_CASES = [
    (operation_id, mode)
    for operation_id in SESSION_OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if operation_id != "revoke_key" or mode is GenerationMode.POSITIVE  # nothing in it to break
]


@pytest.mark.parametrize(("operation_id", "mode"), SESSION_CASES, ids=[f"{o}-{m.value}" for o, m in SESSION_CASES])
def test_session_operation_conforms_to_the_spec(api_schema, app, portal, monkeypatch, operation_id, mode):
    """The portal-session operations, fuzzed as a signed-in developer with a valid CSRF token,
    with billing pointed at the fake Stripe server (the real client, real HTTP)."""
    with FakeStripe() as stripe_server:
        monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "sk_test_fuzz")
        monkeypatch.setitem(app.config, "STRIPE_API_BASE", stripe_server.url)
        assert app.test_cli_runner().invoke(args=["billing", "sync-products"]).exit_code == 0
        _fuzz_as_developer(api_schema, portal, operation_id, mode)


def _fuzz_as_developer(api_schema, portal, operation_id, mode):
    dev = portal().sign_up()
    if operation_id == "revoke_key":
        assert dev.new_key().status_code == 201  # something to revoke: 200 first, then 404
    cookies = {"session": dev.client.cookies["session"]}
    operation = api_schema.find_operation_by_id(operation_id)

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case):
        case.call_and_validate(headers={"X-CSRFToken": dev.csrf}, cookies=cookies, checks=CHECKS)

    exercise()


# -- stateful: the spec's links (create a job -> read -> list -> cancel), v1 and sandbox -----------------

STATEFUL_OPERATIONS = [
    f"{area}{name}"
    for area in ("", "sandbox_")
    for name in ("create_job", "get_job", "list_jobs", "cancel_job", "list_workflows", "get_workflow")
]


def test_stateful_sequences_over_the_specs_links_conform(api_schema, app, make_account):
    """schemathesis' stateful phase: sequences that follow the spec's links from a created job to
    reading, listing and cancelling it, on v1 and the sandbox; every step is checked like above."""
    _, key = make_account(tier="enterprise")
    redis_client = app.extensions["levqor.redis"]
    jobs_schema = api_schema.include(operation_id=STATEFUL_OPERATIONS)
    links_followed = []

    class Jobs(jobs_schema.as_state_machine()):
        def setup(self):
            # Each sequence starts from no jobs, so that replaying one (Hypothesis does) meets the
            # same answers; and the sandbox's 100 calls a day start again (its own tests cover it).
            with app.app_context():
                db.session.execute(sa.text("TRUNCATE jobs"))
                db.session.commit()
            redis_client.flushdb()

        def before_call(self, case):
            # A generated workflow id is almost never a real one: name a real workflow (its input
            # stays generated) so that most sequences have a job to follow the links to.
            if case.operation.label.endswith("/jobs") and case.method == "POST" and isinstance(case.body, dict):
                case.body["workflow"] = "echo"

        def get_call_kwargs(self, case):
            return {"headers": {"x-api-key": key}}

        def after_call(self, response, case):
            reads_a_job = case.operation.label.endswith(("/jobs/{job_id}", "/cancel"))
            if reads_a_job and response.status_code in (200, 409):
                links_followed.append(case.operation.label)

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS, additional_checks=additional_checks)

    Jobs.run(
        settings=settings(
            max_examples=60,
            stateful_step_count=6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    # The links were followed to real jobs, in both areas (not only 404s for made-up ids).
    assert {label.split("/")[1] for label in links_followed} >= {"v1", "sandbox"}, links_followed
