"""Which tests share one pytest-xdist worker under `make test` (`--dist loadgroup`).

pytest-xdist's own `@pytest.mark.xdist_group` does nothing with pytest 9.2: xdist carries the group
in the test's node id, and pytest 9.2 no longer lets a plugin change a node id, so every grouped test
is handed out alone (pytest-dev/pytest-xdist#1386, open; its fix, #1388, is not released). Until a
release fixes it, the groups are named here, by file or by test function, and `GroupScheduling`
(xdist's own loadgroup scheduler, returned by the `pytest_xdist_make_scheduler` hook in
tests/conftest.py) reads them. Each group runs on one worker; xdist hands out the largest first.
"""

from pathlib import Path

from xdist.scheduler import LoadGroupScheduling

ROOT = Path(__file__).resolve().parent.parent

GROUPS = {
    # The generated SDKs, a virtualenv and a Node project (tests/sdk_build.py), built once.
    "tests/test_sdk.py": "sdk",
    "tests/test_portal_sdk_docs.py": "sdk",
    "tests/test_cli.py": "sdk",
    # The TLS Redis Cluster (module-scoped), started once for the file.
    "tests/test_redis_cluster_tls.py": "tls-cluster",
    # The longest tests, mostly waiting on processes: handed out first instead of last.
    "tests/test_worker_as_shipped.py": "worker-as-shipped",
    # One gunicorn (the module's `web` fixture) for both.
    **dict.fromkeys(
        [
            "tests/test_hostile.py::test_anonymous_calls_on_the_same_process_do_not_reopen_the_daily_key_creation",
            "tests/test_hostile.py::test_ten_concurrent_failed_log_ins_queue_instead_of_piling_up_memory",
        ],
        "hostile-web",
    ),
}


# The longest tests outside any group (the 25 slowest `make test` prints), handed out right after
# the groups: xdist hands single tests out in collection order, and one of these started last kept
# a worker busy alone at the end of the run.
FIRST = (
    "tests/test_contract_tools.py",
    "tests/test_pgbouncer.py",
    "tests/test_spec_contract.py",
    "tests/test_usage_flush.py",
    "tests/test_background_jobs.py",
    "tests/test_embedded_default.py",
    "tests/browser/test_keyboard_journey.py",
    "tests/browser/test_app_shell.py",
    "tests/browser/test_portal_flow.py",
    "tests/test_request_log.py::test_the_procfile_web_process_logs_request_ids_and_writes_the_log",
)


def first_then_the_rest(items: list) -> None:
    """Reorder collected items, in place, FIRST's ahead (stable): the order every worker collects in,
    so the indexes the scheduler sends still name the same tests."""
    items.sort(key=lambda item: not _named_in(item.nodeid, FIRST))


def _named_in(nodeid: str, names) -> bool:
    function = nodeid.split("[", 1)[0]
    return function in names or nodeid.split("::", 1)[0] in names


def group_of(nodeid: str) -> str | None:
    """The group of a test by its node id: its function's (parameters aside), else its file's."""
    return GROUPS.get(nodeid.split("[", 1)[0]) or GROUPS.get(nodeid.split("::", 1)[0])


def check_groups() -> None:
    """Every file and function GROUPS and FIRST name exists: a renamed test must not leave its group silently."""
    for name in [*GROUPS, *FIRST]:
        path, _, function = name.partition("::")
        source = ROOT / path
        if not source.is_file() or (function and f"def {function}(" not in source.read_text()):
            raise RuntimeError(f"tests/xdist_groups.py names {name}, which does not exist")


class GroupScheduling(LoadGroupScheduling):
    """xdist's loadgroup scheduling, with the groups of GROUPS."""

    def __init__(self, config, log=None):
        check_groups()
        super().__init__(config, log)

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid) or super()._split_scope(nodeid)
