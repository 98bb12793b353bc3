"""The usage card's poll (every 5 s per open dashboard): its SQL, counted on the engine, and the
figures it shows while its database part is held in Redis."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from levqor_core.accounts import service as accounts
from levqor_core.extensions import db
from levqor_core.keys import service as keys
from levqor_core.metering import card as usage_card
from levqor_core.metering import counters as metering

HX = {"HX-Request": "true", "HX-Target": "usage", "HX-Current-URL": "http://testserver/developer/api-keys"}


@pytest.fixture
def statements(app):
    """The SQL statements the engine runs while the fixture is alive."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def poll(p) -> str:
    response = p.client.get("/developer/api-keys/usage", headers=HX)
    assert response.status_code == 200
    return response.text


def sandbox_today(card: str) -> int:
    return int(re.search(r'id="sandbox-today">(\d+)<', card).group(1))


def sandbox_call(client, raw: str) -> None:
    assert client.get("/api/sandbox/v1/workflows", headers={"x-api-key": raw}).status_code == 200


def test_a_warm_poll_runs_one_query_the_sessions_account_and_shows_live_counts(portal, client, statements):
    p = portal().sign_up()
    raw = p.new_key().json()["key"]
    poll(p)  # the first poll reads the card's database part once
    sandbox_call(client, raw)
    sandbox_call(client, raw)
    statements.clear()
    card = poll(p)
    assert sandbox_today(card) == 2
    assert len(statements) == 1, statements
    assert statements[0].lstrip().startswith("SELECT accounts.")  # the session's account, as every page


def test_the_cold_poll_reads_the_cards_database_part_in_one_statement(portal, app, statements):
    p = portal().sign_up()
    p.new_key()
    app.extensions["levqor.redis"].flushdb()  # no counters, no held card: as after a Redis loss
    statements.clear()
    poll(p)
    card_reads = [s for s in statements if "api_keys" in s or "usage_daily" in s]
    # The held part (keys and chart rows, one statement), and the counters' seed from the database.
    assert len(card_reads) == 3, card_reads
    statements.clear()
    poll(p)
    assert len(statements) == 1, statements


def test_a_rolled_key_drops_the_held_card_and_the_new_key_counts_from_zero(portal, client, app):
    p = portal().sign_up()
    old = p.new_key().json()["key"]
    sandbox_call(client, old)
    assert sandbox_today(poll(p)) == 1
    with app.app_context():
        account = accounts.by_email(p.email)
        new = keys.issue(account, keys.Actor(email="test")).raw
    assert sandbox_today(poll(p)) == 0  # the new key's counter, not the held old one's
    sandbox_call(client, new)
    assert sandbox_today(poll(p)) == 1


def test_the_chart_shows_live_day_counters_so_a_flush_changes_nothing_it_shows(portal, client, app, statements):
    p = portal().sign_up()
    raw = p.new_key().json()["key"]
    sandbox_call(client, raw)
    poll(p)
    r = app.extensions["levqor.limits_redis"]
    now = datetime.now(UTC)
    yesterday = now.date() - timedelta(days=1)
    with app.app_context():
        account_id = accounts.by_email(p.email).id
        held = usage_card.state(r, account_id, now.date())
        (key_id,) = held.key_ids
        # Calls counted yesterday, not yet persisted when the card was read.
        r.set(metering.daily_key(account_id, key_id, yesterday), 5)
        r.sadd(metering.dirty_key(account_id), f"{key_id}|{account_id}|{yesterday.isoformat()}")
        before = usage_card.daily_history(r, held, now, account_id)
        metering.flush_usage(r)  # persists yesterday's 5 and today's sandbox call
        statements.clear()
        after = usage_card.daily_history(r, usage_card.state(r, account_id, now.date()), now, account_id)
        assert statements == []  # the held part is still current
        assert after == before
        assert before[-2] == {"day": yesterday.isoformat(), "calls": 5, "sandbox_calls": 0}
        assert before[-1]["sandbox_calls"] == 1
        # And read from the database as a cold card would, the same chart.
        assert (
            usage_card.daily_history(None, usage_card.from_database(account_id, now.date()), now, account_id) == after
        )


def test_a_card_written_after_a_roll_by_a_read_from_before_it_is_not_used(portal, client, app):
    p = portal().sign_up()
    old = p.new_key().json()["key"]
    sandbox_call(client, old)
    assert sandbox_today(poll(p)) == 1
    r = app.extensions["levqor.redis"]
    with app.app_context():
        account = accounts.by_email(p.email)
        read_before_the_roll = r.get(usage_card.card_key(account.id))
        keys.issue(account, keys.Actor(email="test"))
    # The poll that read before the roll writes its card after the roll's drop.
    r.set(usage_card.card_key(account.id), read_before_the_roll)
    assert sandbox_today(poll(p)) == 0  # read again: the new key's counter


def shown_version(card: str) -> str:
    return re.search(r'hx-get="/developer/api-keys/usage\?v=([0-9a-f]+)"', card).group(1)


def test_an_unchanged_card_is_answered_204_with_no_render_and_only_the_sessions_query(portal, client, statements):
    p = portal().sign_up()
    raw = p.new_key().json()["key"]
    version = shown_version(poll(p))
    statements.clear()
    unchanged = p.client.get(f"/developer/api-keys/usage?v={version}", headers=HX)
    assert unchanged.status_code == 204 and unchanged.text == ""  # htmx swaps nothing on a 204
    assert len(statements) == 1 and statements[0].lstrip().startswith("SELECT accounts.")

    sandbox_call(client, raw)
    changed = p.client.get(f"/developer/api-keys/usage?v={version}", headers=HX)
    assert changed.status_code == 200 and sandbox_today(changed.text) == 1
    assert shown_version(changed.text) != version
    # A page that shows an old card (another version, or none) gets the card.
    assert p.client.get("/developer/api-keys/usage?v=0", headers=HX).status_code == 200
    assert shown_version(p.client.get("/developer/api-keys").text) == shown_version(changed.text)
