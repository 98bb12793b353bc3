"""`levqor`, the command line of the Python SDK (hand-written; copied into the generated package).

    levqor listen --forward-to localhost:3000/webhooks [--events job.succeeded,job.failed] [--sandbox]
    levqor listen --print-secret [--sandbox]
    levqor trigger job.failed [--sandbox]
    levqor logs tail [--status 4xx] [--path /api/v1/jobs]
    levqor jobs create text-stats --input '{"text": "hi"}' [--wait] [--sandbox]
    levqor jobs get job_… [--sandbox]
    levqor workflows [--sandbox]

The key comes from --api-key or LEVQOR_API_KEY, the server from --base-url or LEVQOR_BASE_URL
(as `Levqor` reads them). Output is one line per event, flushed as it is written (a pipe sees each
line at once); --json prints each as a JSON object instead. Exit codes: 0 done, 1 the API refused,
2 bad usage, 3 no key, a wrong key or a revoked one, 4 the server could not be reached, 130 Ctrl-C.
Streams reconnect after a dropped connection with Last-Event-ID, so no event is lost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import urlencode, urlsplit

import urllib3

from . import __version__
from .client import PRODUCTION_URL, SANDBOX_SUFFIX, retry_policy

EXIT_API, EXIT_USAGE, EXIT_AUTH, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
FINISHED = ("succeeded", "failed", "canceled")
RECONNECT_ATTEMPTS = 8  # in a row, without one event between them
FORWARD_TIMEOUT = 10.0


class CliError(Exception):
    """Ends the command with a message on stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_API):
        super().__init__(message)
        self.code = code


def say(text: str) -> None:
    print(text, flush=True)


def warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _now() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


class Api:
    """Plain HTTP to the API with the SDK's retry policy; problems become CliErrors."""

    def __init__(self, args: argparse.Namespace):
        self.key = args.api_key or os.environ.get("LEVQOR_API_KEY")
        if not self.key:
            raise CliError("No API key: set LEVQOR_API_KEY or pass --api-key.", EXIT_AUTH)
        self.base = (args.base_url or os.environ.get("LEVQOR_BASE_URL") or PRODUCTION_URL).rstrip("/")
        self.http = urllib3.PoolManager(retries=retry_policy(3), timeout=urllib3.Timeout(connect=5, read=30))
        self.headers = {"x-api-key": self.key, "user-agent": f"levqor-cli/{__version__}"}

    def url(self, path: str, sandbox: bool = False) -> str:
        return self.base + (SANDBOX_SUFFIX if sandbox else "") + path

    def call(self, method: str, path: str, *, sandbox: bool = False, body=None, headers=None) -> dict:
        sent = self.headers | (headers or {})
        if body is not None:
            sent["content-type"] = "application/json"
        try:
            encoded = json.dumps(body).encode() if body is not None else None
            response = self.http.request(method, self.url(path, sandbox), body=encoded, headers=sent)
        except urllib3.exceptions.HTTPError as err:
            raise unreachable(self.base, err) from None
        if response.status >= 400:
            raise refusal(response.status, response.data)
        return json.loads(response.data) if response.data else {}


def unreachable(base: str, err: Exception) -> CliError:
    return CliError(f"Could not reach the Levqor API at {base}: {err}", EXIT_UNREACHABLE)


def refusal(status: int, body: bytes) -> CliError:
    """The API's problem as a message: a wrong key says so, and exits 3."""
    try:
        problem = json.loads(body)
    except ValueError:
        problem = {}
    detail = problem.get("detail") or problem.get("title") or body[:200].decode("utf-8", "replace")
    slug = (problem.get("type") or "").rstrip("/").rsplit("/", 1)[-1]
    request_id = f" [{problem['request_id']}]" if problem.get("request_id") else ""
    if status == 401:
        return CliError(f"The API key was refused ({slug or status}): {detail}{request_id}", EXIT_AUTH)
    return CliError(f"{status} {slug or 'error'}: {detail}{request_id}", EXIT_API)


# -- streams -------------------------------------------------------------------------------------


class Revoked(CliError):
    def __init__(self, detail: str):
        super().__init__(f"The API key was revoked; the stream ended. {detail}", EXIT_AUTH)


def _events(response) -> Iterator[tuple[str, str | None, dict]]:
    """(event, id, data) for each Server-Sent Event, as its chunks arrive."""
    buffer = b""
    chunks = response.read_chunked() if response.chunked else response.stream(1)
    event, event_id, data = None, None, []
    for chunk in chunks:
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.decode("utf-8").rstrip("\r")
            if line == "":
                if event:
                    yield event, event_id, json.loads("\n".join(data)) if data else {}
                event, event_id, data = None, None, []
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))


def follow(api: Api, path: str, params: dict, *, sandbox: bool = False) -> Iterator[tuple[str, dict]]:
    """The stream's events, (event, data), across reconnections: a dropped connection (or the
    server's `end`) is resumed from the last id received, so nothing is lost."""
    last_id, failures, heartbeat, connected = None, 0, 15.0, False
    query = urlencode({k: v for k, v in params.items() if v})
    url = api.url(path, sandbox) + (f"?{query}" if query else "")
    stream_http = urllib3.PoolManager(retries=False)
    while True:
        headers = api.headers | {"accept": "text/event-stream"} | ({"last-event-id": last_id} if last_id else {})
        try:
            # A silent connection is a dead one after three missed heartbeats.
            response = stream_http.request(
                "GET", url, headers=headers, preload_content=False,
                timeout=urllib3.Timeout(connect=5, read=heartbeat * 3),
            )  # fmt: skip
            if response.status >= 400:
                body = response.read()
                if response.status in (429, 502, 503, 504) and failures < RECONNECT_ATTEMPTS:
                    raise urllib3.exceptions.ProtocolError(refusal(response.status, body))
                raise refusal(response.status, body)
            connected = True
            for event, event_id, data in _events(response):
                failures = 0
                if event_id:
                    last_id = event_id
                if event == "ready":
                    heartbeat = float(data.get("heartbeat_seconds", heartbeat))
                if event == "revoked":
                    raise Revoked(data.get("detail", ""))
                if event == "end":
                    break  # idle or unavailable: reconnect and go on
                yield event, data
        except (urllib3.exceptions.HTTPError, OSError) as err:
            failures += 1
            if failures > RECONNECT_ATTEMPTS:
                raise unreachable(api.base, err) from None
            if not connected:
                raise unreachable(api.base, err) from None  # never connected: say so at once
            warn(f"{_now()}  connection lost ({type(err).__name__}); reconnecting…")
            time.sleep(min(2 ** (failures - 1), 10))


def _forward_url(target: str) -> str:
    return target if urlsplit(target).scheme in ("http", "https") else f"http://{target}"


def listen(api: Api, args: argparse.Namespace) -> int:
    """Forward each event, signed and unchanged, to the local URL; one line per delivery."""
    if not args.forward_to and not args.print_secret:
        raise CliError("Say where to forward events: --forward-to localhost:3000/webhooks", EXIT_USAGE)
    target = _forward_url(args.forward_to) if args.forward_to else None
    local = urllib3.PoolManager(retries=False, timeout=FORWARD_TIMEOUT)
    params = {"events": args.events, "forward_to": target}
    for event, data in follow(api, "/v1/events/stream", params, sandbox=args.sandbox):
        if event == "ready":
            if args.print_secret:
                say(data["secret"])
                return 0
            if args.json:
                say(json.dumps({"ready": True, "secret": data["secret"], "sandbox": data["sandbox"]}))
            else:
                mode = "sandbox" if data["sandbox"] else "live"
                say(f"Ready! Forwarding {mode} events to {target}. Your webhook signing secret is {data['secret']}")
                say("(Ctrl-C to quit)")
            continue
        if event != "webhook":
            continue
        started = time.perf_counter()
        try:
            answer = local.request("POST", target, body=data["body"].encode(), headers=data["headers"])
            status, error = answer.status, None
        except urllib3.exceptions.HTTPError as err:
            status, error = None, f"{type(err).__name__}"
        ms = round((time.perf_counter() - started) * 1000)
        if args.json:
            say(json.dumps({"at": _now(), "type": data["type"], "webhook_id": data["webhook_id"],
                            "status": status, "error": error, "latency_ms": ms}))  # fmt: skip
        else:
            outcome = f"[{status}]" if status else f"[failed: {error}]"
            say(f"{_now()}  --> {data['type']} [{data['webhook_id']}]  <-- {outcome} POST {target} ({ms} ms)")
    return 0


def logs_tail(api: Api, args: argparse.Namespace) -> int:
    """One line per call as it is recorded."""
    for event, call in follow(api, "/v1/request_log/stream", {"status": args.status, "path": args.path}):
        if event == "ready":
            warn("Tailing the request log… (Ctrl-C to quit)")  # stderr: stdout carries only calls
        if event != "request":
            continue
        if args.json:
            say(json.dumps(call))
        else:
            at = call["at"][:19].replace("T", " ")
            path = call["path"] + (f"?{call['query']}" if call.get("query") else "")
            latency = f"{call['latency_ms']:.0f} ms"
            say(f"{at}  {call['method']:<6} {path}  {call['status']}  {latency}  {call['request_id']}")
    return 0


# -- one-shot commands ---------------------------------------------------------------------------


def trigger(api: Api, args: argparse.Namespace) -> int:
    event = api.call("POST", "/v1/events/trigger", sandbox=args.sandbox, body={"type": args.event})
    if args.json:
        say(json.dumps(event))
    else:
        mode = "sandbox" if args.sandbox else "live"
        say(f"Triggered {event['type']} ({mode}); every endpoint and listening session subscribed to it gets it.")
    return 0


def _show_job(job: dict, as_json: bool) -> None:
    if as_json:
        say(json.dumps(job))
        return
    say(f"{job['id']}  {job['workflow']}  {job['status']}")
    if job.get("result") is not None:
        say(json.dumps(job["result"], indent=2))
    if job.get("error"):
        say(f"error: {job['error'].get('message')}")


def jobs_create(api: Api, args: argparse.Namespace) -> int:
    try:
        job_input = json.loads(args.input)
    except ValueError as err:
        raise CliError(f"--input is not JSON: {err}", EXIT_USAGE) from None
    body = {"workflow": args.workflow, "input": job_input}
    job = api.call("POST", "/v1/jobs", sandbox=args.sandbox, body=body, headers={"idempotency-key": str(uuid.uuid4())})
    while args.wait and job["status"] not in FINISHED:
        time.sleep(1)
        job = api.call("GET", f"/v1/jobs/{job['id']}", sandbox=args.sandbox)
    _show_job(job, args.json)
    return 1 if args.wait and job["status"] != "succeeded" else 0


def jobs_get(api: Api, args: argparse.Namespace) -> int:
    _show_job(api.call("GET", f"/v1/jobs/{args.job_id}", sandbox=args.sandbox), args.json)
    return 0


def workflows(api: Api, args: argparse.Namespace) -> int:
    found = api.call("GET", "/v1/workflows", sandbox=args.sandbox)
    if args.json:
        say(json.dumps(found))
    else:
        for workflow in found.get("data", []):
            say(f"{workflow['id']:<16} {workflow.get('description', '')}")
    return 0


def _common(default) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name. After it, they default to
    SUPPRESS: a subcommand's own default would overwrite what was given before the name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-key", default=default, help="your key (default: LEVQOR_API_KEY)")
    common.add_argument(
        "--base-url", default=default, help="the API root, e.g. http://localhost:5000/api (default: LEVQOR_BASE_URL)"
    )
    common.add_argument("--json", action="store_true", default=default or False, help="one JSON object per line")
    return common


def parser() -> argparse.ArgumentParser:
    common = _common(argparse.SUPPRESS)
    sandbox = argparse.ArgumentParser(add_help=False)
    sandbox.add_argument("--sandbox", action="store_true", help="the sandbox (mock data, its own events)")

    top = argparse.ArgumentParser(
        prog="levqor", description="The Levqor API from your terminal.", parents=[_common(None)]
    )
    top.add_argument("--version", action="version", version=f"levqor {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("listen", parents=[common, sandbox], help="forward the account's events to a local URL")
    p.add_argument("--forward-to", metavar="URL", help="e.g. localhost:3000/webhooks")
    p.add_argument("--events", metavar="TYPES", help="only these, comma-separated (job.succeeded,job.failed)")
    p.add_argument("--print-secret", action="store_true", help="print the signing secret and exit")
    p.set_defaults(run=listen)

    p = commands.add_parser("trigger", parents=[common, sandbox], help="make the account emit a test event")
    p.add_argument("event", metavar="EVENT", help="e.g. job.failed")
    p.set_defaults(run=trigger)

    logs = commands.add_parser("logs", help="the request log").add_subparsers(dest="logs", required=True)
    p = logs.add_parser("tail", parents=[common], help="one line per call as it happens")
    p.add_argument("--status", help="2xx, 4xx, 5xx or a code such as 404")
    p.add_argument("--path", help="only paths starting with this")
    p.set_defaults(run=logs_tail)

    jobs = commands.add_parser("jobs", help="submit and read jobs").add_subparsers(dest="jobs", required=True)
    p = jobs.add_parser("create", parents=[common, sandbox], help="submit a job")
    p.add_argument("workflow", metavar="WORKFLOW")
    p.add_argument("--input", required=True, metavar="JSON")
    p.add_argument("--wait", action="store_true", help="wait until it finishes (exit 1 unless it succeeded)")
    p.set_defaults(run=jobs_create)
    p = jobs.add_parser("get", parents=[common, sandbox], help="read a job")
    p.add_argument("job_id", metavar="ID")
    p.set_defaults(run=jobs_get)

    p = commands.add_parser("workflows", parents=[common, sandbox], help="list the workflows")
    p.set_defaults(run=workflows)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(Api(args), args)
    except CliError as err:
        warn(f"levqor: {err}")
        return err.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `levqor logs tail | head`: the reader left
        return 0


if __name__ == "__main__":
    sys.exit(main())
