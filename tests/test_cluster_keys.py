"""Cluster-correct keys: every script, multi-key command and transaction of the API's path stays
in one slot (what a Redis Cluster requires), checked on what Redis is really sent (MONITOR)."""

import re
import socket
import threading
import time

from redis.crc import key_slot

from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.keys import service as keys
from levqor_core.limits import gate as gate_module
from levqor_core.limits.key_cache import Owner
from levqor_core.metering import counters as metering

_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
_CLIENT = re.compile(r"\[\d+ ([^\]]+)\]")
# Commands whose every argument after the name is a key (when more than one).
_ALL_KEYS = {"MGET", "DEL", "UNLINK", "EXISTS", "SUNIONSTORE", "SINTERSTORE", "RENAME", "TOUCH"}


class Monitor:
    """What a real Redis executes, as MONITOR reports it (read off a plain socket: redis-py drops a
    connection whose read times out, and a quiet moment would end the watch)."""

    def __init__(self, port: int):
        self._socket = socket.create_connection(("127.0.0.1", port), timeout=0.2)
        self._socket.sendall(b"MONITOR\r\n")
        self._data = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop.is_set():
            try:
                chunk = self._socket.recv(1 << 16)
            except TimeoutError:
                continue
            if not chunk:
                return
            self._data += chunk

    def stop(self) -> list[tuple[str, list[str]]]:
        """(client, [command, args…]) in the order executed."""
        time.sleep(0.3)  # the last replies reach the socket
        self._stop.set()
        self._thread.join(5)
        self._socket.close()
        lines = self._data.decode(errors="replace").split("\r\n")
        return [(_CLIENT.search(line).group(1), _ARG.findall(line)) for line in lines if _CLIENT.search(line)]


def _key_groups(commands: list[tuple[str, list[str]]]) -> list[list[str]]:
    """The keys each script, multi-key command or MULTI…EXEC block touches together."""
    groups, open_blocks = [], {}
    for client, (name, *args) in ((c, a) for c, a in commands if a):
        name = name.upper()
        keys_of = []
        if name in ("EVAL", "EVALSHA"):
            keys_of = args[2 : 2 + int(args[1])] if len(args) > 1 else []
        elif name in _ALL_KEYS:
            keys_of = args
        if name == "MULTI":
            open_blocks[client] = []
        elif name == "EXEC":
            groups.append(open_blocks.pop(client, []))
        elif client in open_blocks and args and name not in ("EVAL", "EVALSHA"):
            open_blocks[client].append(args[0])
        if client in open_blocks and keys_of:
            open_blocks[client].extend(keys_of)
        elif keys_of:
            groups.append(keys_of)
    return [g for g in groups if len(g) > 1]


def test_every_gate_call_names_keys_of_one_slot():
    for account_id in (1, 2, 1023, 1024, 99_999):
        owner = Owner(account_id, "key_0123456789abcdef")
        names = gate_module.script_keys(owner, "ab" * 32, 1_796_644_871.5, "2026-12")
        assert len({key_slot(n.encode()) for n in names}) == 1, names
        assert all(metering.tag(account_id) in n for n in names)


def test_the_api_path_sends_no_cross_slot_script_command_or_transaction(app, cx, make_account, redis_server):
    account_id, key = make_account(tier="pro")
    other_id, other_key = make_account(tier="sandbox")
    headers = {"x-api-key": key}
    monitor = Monitor(redis_server.port)
    with cx.test_client() as client:
        for path in ("/api/v1/workflows", "/api/sandbox/v1/workflows", "/api/usage"):
            assert client.get(path, headers=headers).status_code == 200
        assert client.get("/api/v1/workflows", headers={"x-api-key": other_key}).status_code == 200
        job = client.post("/api/sandbox/v1/jobs", headers=headers, json={"workflow": "delay", "input": {"seconds": 5}})
        assert job.status_code == 202
        assert client.get("/api/sandbox/v1/jobs", headers=headers).status_code == 200
        assert client.post(f"/api/sandbox/v1/jobs/{job.json()['id']}/cancel", headers=headers).status_code == 200
        for _ in range(3):  # an unknown key: the address's throttle, a call of its own
            unknown = client.get("/api/v1/workflows", headers={"x-api-key": "lvq_" + "1" * 32 + "_000000"})
            assert unknown.status_code == 401
        r = app.extensions["levqor.limits_redis"]
        with app.app_context():
            assert metering.flush_usage(r) == 2
            r.flushdb()  # Redis emptied: the journal replays what it lost
            app.extensions["levqor.gate"].flusher.tick()
            keys.revoke(db.session.get(Account, account_id), keys.Actor(email="test"))
        assert client.get("/api/v1/workflows", headers=headers).status_code == 401
    groups = _key_groups(monitor.stop())
    assert any(len(g) >= 8 for g in groups)  # gate.lua's calls were seen
    # RQ's own transactions (a sandbox delay job schedules its end's stream on the webhook queue)
    # go to REDIS_URL, a plain Redis by rule (RQ does not run on a cluster: docs/operating/sizing.md);
    # here one Redis plays both roles.
    queued = [g for g in groups if all(k.startswith("rq:") for k in g)]
    assert queued, "the delay job's end was scheduled on RQ"
    crossing = [g for g in groups if g not in queued and len({key_slot(k.encode()) for k in g}) > 1]
    assert crossing == []
