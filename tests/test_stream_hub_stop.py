"""A stopping process ends its streams through the hub (levqor_core.streams.hub.stop_streams): every
stream open on the event loop, one that was still subscribing, and one that subscribes after.
As shipped, tests/test_web_shutdown.py and tests/test_embedded_default.py see the `end` events."""

import asyncio

import pytest

from levqor_core.streams import hub as hubs

from .helpers import run_on_own_loop


def test_stop_streams_ends_the_open_ones_one_subscribing_and_any_after(redis_server, monkeypatch):
    async def scenario():
        hub = hubs.hub(redis_server.url, False, 2.0)
        open_ones = [
            await hub.subscribe({"lvq:{stop}:a": "0-0"}),
            await hub.subscribe({"lvq:{stop}:b": "0-0", "lvq:{stop}:c": "0-0"}),
        ]
        assert await open_ones[0].next(0.05) == []  # open, nothing to read

        ended = []
        find_reader = hub._reader_for

        async def reader_while_the_process_stops(key):
            ended.append(hubs.stop_streams())  # the server stops while this stream subscribes
            return await find_reader(key)

        monkeypatch.setattr(hub, "_reader_for", reader_while_the_process_stops)
        subscribing = await hub.subscribe({"lvq:{stop}:d": "0-0"})
        after = await hub.subscribe({"lvq:{stop}:e": "0-0"})
        assert ended == [2]  # the two open ones; the one subscribing was not in a reader yet

        for subscription in [*open_ones, subscribing, after]:
            with pytest.raises(hubs.Stopping):
                await subscription.next(1)
            hub.unsubscribe(subscription)
        reader = hub.readers[None]
        await asyncio.wait_for(reader.task, 15)  # no stream left: the reader ends and closes
        assert not reader.keys

    run_on_own_loop(scenario())
