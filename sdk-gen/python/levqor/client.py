"""`Levqor`, the front door of the Python SDK (hand-written; copied into the generated package).

The generated client does the HTTP and the models; this layer adds what the best SDKs do on top:
retries with backoff that honour `Retry-After` (urllib3's Retry, which the generated client
already accepts), typed errors carrying the problem+json body, an `Idempotency-Key` on every job
creation, and iterators over paginated job lists.

    from levqor.client import Levqor
    client = Levqor(api_key="lvq_…", environment="sandbox")
    job = client.jobs.create_job({"workflow": "echo", "input": {"message": "hi"}})
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from . import __version__, errors
from .api.health_api import HealthApi
from .api.jobs_api import JobsApi
from .api.keys_api import KeysApi
from .api.sandbox_api import SandboxApi
from .api.usage_api import UsageApi
from .api.webhooks_api import WebhooksApi
from .api.workflows_api import WorkflowsApi
from .api_client import ApiClient
from .configuration import Configuration
from .exceptions import ApiException
from .models.job import Job

PRODUCTION_URL = "https://api.levqor.dev/api"
# The sandbox mirrors every /v1 path under /sandbox/v1, so the /v1 operations sent to this base
# reach the sandbox unchanged.
SANDBOX_SUFFIX = "/sandbox"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryEvent:
    """Passed to `on_retry` before the SDK waits and sends the request again."""

    attempt: int  # 1 for the first retry
    method: str
    url: str
    status: int | None  # None when the connection failed
    wait: float  # seconds the SDK is about to sleep


class LevqorRetry(Retry):
    """urllib3's Retry with a ceiling on Retry-After and a hook before each wait.

    A Retry-After beyond `max_retry_after` (a monthly quota resets in days) is not waited for:
    the 429 comes back at once as a RateLimitError carrying the server's Retry-After.
    """

    def __init__(self, *args, max_retry_after: float = 60.0, on_retry: Callable[[RetryEvent], Any] | None = None, **kw):
        super().__init__(*args, **kw)
        self.max_retry_after = max_retry_after
        self.on_retry = on_retry

    def new(self, **kw) -> LevqorRetry:
        new = super().new(**kw)
        new.max_retry_after, new.on_retry = self.max_retry_after, self.on_retry
        return new

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if response is not None:
            wait = self.get_retry_after(response)
            if wait is not None and wait > self.max_retry_after:
                raise MaxRetryError(_pool, url, ResponseError(f"Retry-After {wait:g}s is beyond max_retry_after"))
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def sleep(self, response=None) -> None:
        if self.on_retry is not None and self.history:
            last = self.history[-1]
            wait = self.get_retry_after(response) if response is not None else None
            self.on_retry(
                RetryEvent(
                    attempt=len(self.history),
                    method=last.method,
                    url=last.url,
                    status=last.status,
                    wait=wait if wait is not None else self.get_backoff_time(),
                )
            )
        super().sleep(response)


def retry_policy(
    max_retries: int, max_retry_after: float = 60.0, on_retry: Callable[[RetryEvent], Any] | None = None
) -> LevqorRetry:
    """The retry policy `Levqor` uses: 429 and 5xx, exponential backoff, Retry-After honoured."""
    return LevqorRetry(
        total=max_retries,
        status_forcelist=RETRY_STATUSES,
        # POST is safe to retry here: job creation always carries an Idempotency-Key, cancelling
        # twice changes nothing, and a 429 means the gate refused the call before it ran.
        allowed_methods=Retry.DEFAULT_ALLOWED_METHODS | {"POST"},
        backoff_factor=0.5,
        backoff_max=8.0,
        respect_retry_after_header=True,
        # After the last retry the response is returned and becomes a typed error.
        raise_on_status=False,
        max_retry_after=max_retry_after,
        on_retry=on_retry,
    )


class _ApiClient(ApiClient):
    """The generated ApiClient, raising the typed errors of levqor.errors."""

    def call_api(self, *args, **kwargs):
        try:
            return super().call_api(*args, **kwargs)
        except urllib3.exceptions.HTTPError as err:
            raise errors.APIConnectionError(f"Could not reach the Levqor API: {err}") from err

    def response_deserialize(self, response_data, response_types_map=None):
        try:
            return super().response_deserialize(response_data, response_types_map)
        except errors.APIError:
            raise
        except ApiException as err:
            raise errors.from_api_exception(err) from None


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def _with_idempotency_key(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    # The generated signature is (job_create, idempotency_key=None, ...).
    if len(args) >= 2:
        return (args[0], args[1] or new_idempotency_key(), *args[2:]), kwargs
    if not kwargs.get("idempotency_key"):
        kwargs = {**kwargs, "idempotency_key": new_idempotency_key()}
    return args, kwargs


def paginate(list_page: Callable[..., Any], **params) -> Iterator[Job]:
    """Every job across pages: calls `list_page(cursor=…)` until `has_more` is false."""
    params = {k: v for k, v in params.items() if v is not None}
    cursor = None
    while True:
        page = list_page(cursor=cursor, **params)
        yield from page.data
        if not page.has_more or not page.next_cursor:
            return
        cursor = page.next_cursor


class Jobs(JobsApi):
    """JobsApi with an automatic Idempotency-Key on create_job and `iter_jobs`."""

    def create_job(self, *args, **kwargs) -> Job:
        args, kwargs = _with_idempotency_key(args, kwargs)
        return super().create_job(*args, **kwargs)

    def create_job_with_http_info(self, *args, **kwargs):
        args, kwargs = _with_idempotency_key(args, kwargs)
        return super().create_job_with_http_info(*args, **kwargs)

    def iter_jobs(self, *, status: str | None = None, limit: int | None = None) -> Iterator[Job]:
        """Every job, newest first, fetching pages of `limit` as the iteration goes."""
        return paginate(self.list_jobs, status=status, limit=limit)


class Sandbox(SandboxApi):
    """SandboxApi with an automatic Idempotency-Key on sandbox_create_job and `iter_jobs`."""

    def sandbox_create_job(self, *args, **kwargs) -> Job:
        args, kwargs = _with_idempotency_key(args, kwargs)
        return super().sandbox_create_job(*args, **kwargs)

    def sandbox_create_job_with_http_info(self, *args, **kwargs):
        args, kwargs = _with_idempotency_key(args, kwargs)
        return super().sandbox_create_job_with_http_info(*args, **kwargs)

    def iter_jobs(self, *, status: str | None = None, limit: int | None = None) -> Iterator[Job]:
        """Every sandbox job, newest first, fetching pages of `limit` as the iteration goes."""
        return paginate(self.sandbox_list_jobs, status=status, limit=limit)


class Levqor:
    """The Levqor API client.

    api_key: your key (default: the LEVQOR_API_KEY environment variable).
    base_url: the API root (default: LEVQOR_BASE_URL, else production).
    environment: "production" or "sandbox"; with "sandbox", `jobs` and `workflows` reach the
        sandbox (mock data, 100 calls per key per day). `sandbox` always reaches it too.
    max_retries: retries on 429 and 5xx (and connection errors); 0 turns them off.
    max_retry_after: the longest Retry-After, in seconds, the SDK waits for before giving up.
    on_retry: called with a RetryEvent before each retry (logging, metrics).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        environment: str = "production",
        max_retries: int = 3,
        max_retry_after: float = 60.0,
        on_retry: Callable[[RetryEvent], Any] | None = None,
    ) -> None:
        api_key = api_key or os.environ.get("LEVQOR_API_KEY")
        if not api_key:
            raise errors.LevqorError("No API key: pass api_key= or set LEVQOR_API_KEY.")
        if environment not in ("production", "sandbox"):
            raise ValueError('environment must be "production" or "sandbox"')
        self.base_url = (base_url or os.environ.get("LEVQOR_BASE_URL") or PRODUCTION_URL).rstrip("/")
        self.environment = environment
        policy = retry_policy(max_retries, max_retry_after, on_retry)
        root = self._api_client(self.base_url, api_key, policy)
        v1 = root if environment == "production" else self._api_client(self.base_url + SANDBOX_SUFFIX, api_key, policy)
        self.jobs = Jobs(v1)
        self.workflows = WorkflowsApi(v1)
        self.webhooks = WebhooksApi(v1)
        self.sandbox = Sandbox(root)
        self.usage = UsageApi(root)
        self.keys = KeysApi(root)
        self.health = HealthApi(root)

    @staticmethod
    def _api_client(host: str, api_key: str, retries: Retry) -> ApiClient:
        config = Configuration(host=host, api_key={"ApiKeyAuth": api_key}, retries=retries)
        client = _ApiClient(config)
        client.user_agent = f"levqor-python/{__version__}"
        return client
