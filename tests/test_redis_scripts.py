"""The gate's lean Redis client (levqor_core.redis_scripts) against a real Redis: replies reach the
calls that sent them, and every failure is the redis-py error the gate degrades on."""

import asyncio

import pytest
import redis

from levqor_core import redis_scripts

from .helpers import run_on_own_loop as run

ECHO = "return {ARGV[1], tonumber(ARGV[2]), redis.call('INCR', KEYS[1]), redis.status_reply('OK')}"


def test_pipelined_calls_each_get_their_own_reply(redis_server):
    r = redis.Redis.from_url(redis_server.url)
    r.delete("rs:n")

    async def calls():
        script = redis_scripts.ScriptClient(redis_server.url).register_script(ECHO)
        return await asyncio.gather(*(script(keys=["rs:n"], args=[f"call-{i}", i]) for i in range(300)))

    replies = run(calls())
    assert [reply[:2] for reply in replies] == [[f"call-{i}".encode(), i] for i in range(300)]
    assert sorted(reply[2] for reply in replies) == list(range(1, 301))  # each ran once
    assert {reply[3] for reply in replies} == {b"OK"}
    assert int(r.get("rs:n")) == 300


def test_a_script_redis_forgot_is_sent_again_whole(redis_server):
    r = redis.Redis.from_url(redis_server.url)

    async def calls():
        script = redis_scripts.ScriptClient(redis_server.url).register_script(ECHO)
        first = await script(keys=["rs:m"], args=["a", 1])
        r.script_flush()  # as after Redis restarted empty
        return first, await script(keys=["rs:m"], args=["b", 2])

    first, second = run(calls())
    assert first[:2] == [b"a", 1] and second[:2] == [b"b", 2]


def test_error_replies_raise_response_error_and_the_connection_stays_usable(redis_server):
    async def calls():
        client = redis_scripts.ScriptClient(redis_server.url)
        with pytest.raises(redis.ResponseError, match="boom"):
            await client.register_script("return redis.error_reply('boom')")()
        return await client.register_script("return 7")()

    assert run(calls()) == 7


def test_the_database_and_password_in_the_url_are_used(redis_server):
    r = redis.Redis.from_url(redis_server.url)
    r.config_set("requirepass", "sesame")
    try:
        authed = redis.Redis.from_url(redis_server.url, password="sesame")
        url = f"redis://:sesame@127.0.0.1:{redis_server.port}/3"
        run(redis_scripts.ScriptClient(url).register_script("return redis.call('SET', KEYS[1], 'x')")(keys=["rs:db"]))
        assert authed.exists("rs:db") == 0
        assert redis.Redis(port=redis_server.port, password="sesame", db=3).get("rs:db") == b"x"
        wrong = redis_server.url.replace("redis://", "redis://:wrong@")
        with pytest.raises(redis.AuthenticationError):
            run(redis_scripts.ScriptClient(wrong).register_script("return 1")())
    finally:
        redis.Redis.from_url(redis_server.url, password="sesame").config_set("requirepass", "")


def test_no_server_is_a_connection_error_but_no_lost_reply():
    from tests.servers import free_port

    client = redis_scripts.ScriptClient(f"redis://127.0.0.1:{free_port()}")
    with pytest.raises(redis.ConnectionError) as refused:
        run(client.register_script("return 1")())
    assert not isinstance(refused.value, redis_scripts.ReplyLost)  # never sent: the script did not run


def test_a_connection_closed_after_the_command_went_is_a_lost_reply():
    async def scenario():
        async def hang_up_on_reading(reader, writer):
            await reader.read(1)  # the command arrived
            writer.close()

        server = await asyncio.start_server(hang_up_on_reading, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        script = redis_scripts.ScriptClient(f"redis://127.0.0.1:{port}").register_script("return 1")
        with pytest.raises(redis_scripts.ReplyLost):  # sent: it may have run
            await script()
        server.close()

    run(scenario())


def test_a_silent_server_is_a_timeout_and_the_connection_is_dropped():
    async def scenario():
        accepted = []

        async def never_answer(reader, writer):
            accepted.append(writer)
            await reader.read()  # until the client hangs up

        server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = redis_scripts.ScriptClient(f"redis://127.0.0.1:{port}", timeout=0.2)
        script = client.register_script("return 1")
        results = await asyncio.gather(script(), script(), return_exceptions=True)
        # Both calls in flight fail: the replies that come later could not be matched to them.
        # Both were sent: lost replies (the gate cannot know whether they ran), redis-py's timeout.
        assert [type(r) for r in results] == [redis_scripts.ReplyTimedOut, redis_scripts.ReplyTimedOut]
        assert all(isinstance(r, redis.TimeoutError) for r in results)
        with pytest.raises(redis_scripts.ReplyTimedOut):
            await script()
        assert len(accepted) == 2  # the third call came on a new connection
        server.close()

    run(scenario())
