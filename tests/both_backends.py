"""Run a test module on one Redis and on a Redis Cluster: take its `cx` and `app` from here.

    cx, app = both_backends.fixtures()

Each test then runs twice, `[redis]` with the suite's app and `[cluster]` with an app whose
LIMITS_REDIS_URL names a node of the session's Redis Cluster (tests/conftest.py `cluster_cx`,
started on the first such test of a worker). Tests that measure one plain Redis's round trips
request `single_redis` and are skipped on the cluster.
"""

import pytest


def fixtures():
    """The module's `cx` and `app` fixtures, each test on both backends."""

    @pytest.fixture(params=["redis", "cluster"], name="cx")
    def cx_on_both(request, cx):
        if request.param == "redis":
            return cx
        if "single_redis" in request.fixturenames:
            pytest.skip("measures one plain Redis")
        return request.getfixturevalue("cluster_cx")

    @pytest.fixture(name="app")
    def app_on_both(cx):
        return cx.app

    return cx_on_both, app_on_both
