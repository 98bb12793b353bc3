/// <reference lib="es2018.asynciterable" />
/// <reference lib="es2018.asyncgenerator" />
/**
 * `Levqor`, the front door of the Node SDK (hand-written; sdk-gen copies it into the generated
 * package, whose index re-exports it).
 *
 * The generated classes do the HTTP and the models; this layer adds what the best SDKs do on
 * top, as fetch middleware and thin subclasses: retries with backoff on 429/5xx that honour
 * Retry-After, typed errors carrying the problem+json body, an Idempotency-Key on every job
 * creation, and async iterators over paginated job lists.
 */
// Node's own randomUUID (Node 14.17+): `globalThis.crypto` needs a flag on Node 18. tsc keeps
// this an import in the ES module build and makes it require('node:crypto') in the CommonJS one.
import { randomUUID } from 'node:crypto';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import { Configuration, FetchAPI, Middleware, ResponseContext, ErrorContext, ResponseError } from './runtime';
import {
    HealthApi,
    JobsApi,
    KeysApi,
    SandboxApi,
    UsageApi,
    WebhooksApi,
    WorkflowsApi,
    CreateJobRequest,
    ListJobsRequest,
    SandboxCreateJobRequest,
    SandboxListJobsRequest,
} from './apis/index';
import { Job, JobPage, Problem, WebhookEvent, WebhookEventData } from './models/index';

export const PRODUCTION_URL = 'https://api.levqor.dev/api';
/** The sandbox mirrors every /v1 path under /sandbox/v1: /v1 operations sent here reach it. */
export const SANDBOX_SUFFIX = '/sandbox';
const RETRY_STATUSES = new Set([429, 500, 502, 503, 504]);

export interface RetryEvent {
    /** 1 for the first retry. */
    attempt: number;
    method: string;
    url: string;
    /** Undefined when the connection failed. */
    status?: number;
    /** Milliseconds the SDK is about to wait. */
    waitMs: number;
}

export interface LevqorOptions {
    /** Your key; default: the LEVQOR_API_KEY environment variable. */
    apiKey?: string;
    /** The API root; default: LEVQOR_BASE_URL, else production. */
    baseUrl?: string;
    /** With 'sandbox', `jobs` and `workflows` reach the sandbox. `sandbox` always does. */
    environment?: 'production' | 'sandbox';
    /** Retries on 429, 5xx and connection errors (default 3; 0 turns them off). */
    maxRetries?: number;
    /** The longest Retry-After the SDK waits for before giving up (default 60 s). */
    maxRetryAfterSeconds?: number;
    /** Called before each retry (logging, metrics). */
    onRetry?: (event: RetryEvent) => void;
    /** A fetch implementation; default: the global fetch. */
    fetchApi?: FetchAPI;
}

// ---- typed errors ---------------------------------------------------------------------------

/** The API answered with an error status; `problem` is its RFC 9457 problem+json body. */
export class APIError extends ResponseError {
    readonly status: number;
    readonly headers: Headers;
    readonly problem?: Problem;
    readonly body: string;

    constructor(response: Response, body: string, problem?: Problem) {
        const title = problem?.title ?? response.statusText;
        super(response, `${response.status} ${title}${problem?.detail ? `: ${problem.detail}` : ''}`);
        Object.defineProperty(this, 'name', { value: new.target.name, configurable: true, writable: true });
        this.status = response.status;
        this.headers = response.headers;
        this.problem = problem;
        this.body = body;
    }

    get type(): string | undefined {
        return this.problem?.type;
    }

    get title(): string | undefined {
        return this.problem?.title;
    }

    get detail(): string | undefined {
        return this.problem?.detail;
    }
}

export class BadRequestError extends APIError {}
export class AuthenticationError extends APIError {}
export class PermissionDeniedError extends APIError {}
export class NotFoundError extends APIError {}
export class ConflictError extends APIError {}
export class PayloadTooLargeError extends APIError {}
export class UnprocessableEntityError extends APIError {}
export class InternalServerError extends APIError {}
export class RateLimitError extends APIError {
    /** Seconds the server asked to wait (Retry-After). */
    get retryAfter(): number | undefined {
        return parseRetryAfter(this.headers.get('Retry-After'));
    }
}

const ERRORS_BY_STATUS: Record<number, typeof APIError> = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
};

function errorClassFor(status: number): typeof APIError {
    return ERRORS_BY_STATUS[status] ?? (status >= 500 ? InternalServerError : APIError);
}

/** Turns every error response into the typed error above, before the generated code sees it. */
export function errorMiddleware(): Middleware {
    return {
        async post({ response }: ResponseContext) {
            if (response.status < 400) return;
            const body = await response.text();
            let problem: Problem | undefined;
            try {
                const parsed = JSON.parse(body);
                if (parsed && typeof parsed === 'object') problem = parsed as Problem;
            } catch {
                // A proxy in front of the API may answer with HTML: keep the raw body.
            }
            throw new (errorClassFor(response.status))(response, body, problem);
        },
    };
}

// ---- retries ----------------------------------------------------------------------------------

function parseRetryAfter(value: string | null): number | undefined {
    if (value == null || value.trim() === '') return undefined;
    const seconds = Number(value);
    if (Number.isFinite(seconds)) return Math.max(0, seconds);
    const date = Date.parse(value);
    return Number.isNaN(date) ? undefined : Math.max(0, (date - Date.now()) / 1000);
}

function backoffMs(attempt: number): number {
    return Math.min(8000, 500 * 2 ** (attempt - 1));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Retries 429 and 5xx answers (and failed connections) with exponential backoff, waiting what
 * Retry-After says when the server says it. POST is retried too: job creation always carries an
 * Idempotency-Key, cancelling twice changes nothing, and a 429 means nothing ran.
 */
export function retryMiddleware(options: {
    maxRetries?: number;
    maxRetryAfterSeconds?: number;
    onRetry?: (event: RetryEvent) => void;
    fetchApi?: FetchAPI;
}): Middleware {
    const maxRetries = options.maxRetries ?? 3;
    const maxRetryAfter = options.maxRetryAfterSeconds ?? 60;
    // The plain fetch: going through the API's own fetch would run the middleware again.
    const send: FetchAPI = options.fetchApi ?? ((url, init) => fetch(url, init));
    const event = (attempt: number, url: string, init: RequestInit, waitMs: number, status?: number) =>
        options.onRetry?.({ attempt, method: (init.method ?? 'GET').toUpperCase(), url, status, waitMs });

    return {
        async post({ url, init, response }: ResponseContext) {
            let current = response;
            for (let attempt = 1; attempt <= maxRetries && RETRY_STATUSES.has(current.status); attempt++) {
                const retryAfter = parseRetryAfter(current.headers.get('Retry-After'));
                if (retryAfter !== undefined && retryAfter > maxRetryAfter) break;
                const waitMs = retryAfter !== undefined ? retryAfter * 1000 : backoffMs(attempt);
                event(attempt, url, init, waitMs, current.status);
                await current.arrayBuffer().catch(() => undefined); // free the connection
                await sleep(waitMs);
                current = await send(url, init);
            }
            return current === response ? undefined : current;
        },
        async onError({ url, init }: ErrorContext) {
            for (let attempt = 1; attempt <= maxRetries; attempt++) {
                const waitMs = backoffMs(attempt);
                event(attempt, url, init, waitMs);
                await sleep(waitMs);
                try {
                    return await send(url, init);
                } catch {
                    // try again, up to maxRetries; then the generated FetchError is thrown
                }
            }
            return undefined;
        },
    };
}

// ---- idempotency and pagination ---------------------------------------------------------------

/** A random (v4) UUID, the Idempotency-Key sent on job creations that carry none. */
export function newIdempotencyKey(): string {
    return randomUUID();
}

/** Every job across pages: calls `fetchPage(cursor)` until `hasMore` is false. */
export async function* paginate(fetchPage: (cursor?: string) => Promise<JobPage>): AsyncGenerator<Job, void, undefined> {
    let cursor: string | undefined;
    for (;;) {
        const page = await fetchPage(cursor);
        yield* page.data;
        if (!page.hasMore || !page.nextCursor) return;
        cursor = page.nextCursor;
    }
}

/** JobsApi with an automatic Idempotency-Key on createJob and `iterJobs`. */
export class Jobs extends JobsApi {
    override async createJobRaw(requestParameters: CreateJobRequest, initOverrides?: Parameters<JobsApi['createJobRaw']>[1]) {
        const idempotencyKey = requestParameters.idempotencyKey ?? newIdempotencyKey();
        return super.createJobRaw({ ...requestParameters, idempotencyKey }, initOverrides);
    }

    /** Every job, newest first, fetching pages of `limit` as the iteration goes. */
    iterJobs(params: Omit<ListJobsRequest, 'cursor'> = {}): AsyncGenerator<Job, void, undefined> {
        return paginate((cursor) => this.listJobs({ ...params, cursor }));
    }
}

/** SandboxApi with an automatic Idempotency-Key on sandboxCreateJob and `iterJobs`. */
export class Sandbox extends SandboxApi {
    override async sandboxCreateJobRaw(
        requestParameters: SandboxCreateJobRequest,
        initOverrides?: Parameters<SandboxApi['sandboxCreateJobRaw']>[1],
    ) {
        const idempotencyKey = requestParameters.idempotencyKey ?? newIdempotencyKey();
        return super.sandboxCreateJobRaw({ ...requestParameters, idempotencyKey }, initOverrides);
    }

    /** Every sandbox job, newest first, fetching pages of `limit` as the iteration goes. */
    iterJobs(params: Omit<SandboxListJobsRequest, 'cursor'> = {}): AsyncGenerator<Job, void, undefined> {
        return paginate((cursor) => this.sandboxListJobs({ ...params, cursor }));
    }
}

// ---- the client -------------------------------------------------------------------------------

/** The Levqor API client: `new Levqor({ apiKey, environment: 'sandbox' })`. */
/** A verified delivery: the event with every field of its `data` (the job, usage or key). */
export type VerifiedWebhookEvent = WebhookEvent & { data: WebhookEventData & Record<string, unknown> };

/** The delivery is not signed with this secret, or its timestamp is too old or too new. */
export class WebhookSignatureError extends Error {}

/**
 * Verifies a webhook delivery (Standard Webhooks: webhook-id, webhook-timestamp,
 * webhook-signature) with the `standardwebhooks` package and returns the event. Pass the body
 * exactly as received (the raw string or bytes, before JSON parsing) and the request's headers.
 *
 *     const event = verifyWebhook(rawBody, req.headers, process.env.LEVQOR_WEBHOOK_SECRET!);
 */
export function verifyWebhook(
    payload: string | Uint8Array,
    headers: Record<string, string | string[] | undefined> | Headers,
    secret: string,
): VerifiedWebhookEvent {
    const flat: Record<string, string> = {};
    const add = (name: string, value: unknown) => {
        if (typeof value === 'string') flat[name.toLowerCase()] = value;
        else if (Array.isArray(value) && value.length) flat[name.toLowerCase()] = String(value[0]);
    };
    if (typeof (headers as Headers).get === 'function') (headers as Headers).forEach((value, name) => add(name, value));
    else {
        const plain = headers as Record<string, string | string[] | undefined>;
        Object.keys(plain).forEach((name) => add(name, plain[name]));
    }
    const body = typeof payload === 'string' ? payload : new TextDecoder().decode(payload);
    try {
        // Every field of `data` is kept (the generated WebhookEventFromJSON would drop the job's).
        const event = new Webhook(secret).verify(body, flat) as VerifiedWebhookEvent & { timestamp: string };
        return { ...event, timestamp: new Date(event.timestamp) };
    } catch (err) {
        if (err instanceof WebhookVerificationError) throw new WebhookSignatureError(err.message);
        throw err;
    }
}

export class Levqor {
    readonly baseUrl: string;
    readonly environment: 'production' | 'sandbox';
    readonly jobs: Jobs;
    readonly workflows: WorkflowsApi;
    readonly webhooks: WebhooksApi;
    readonly sandbox: Sandbox;
    readonly usage: UsageApi;
    readonly keys: KeysApi;
    readonly health: HealthApi;

    constructor(options: LevqorOptions = {}) {
        const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env ?? {};
        const apiKey = options.apiKey ?? env.LEVQOR_API_KEY;
        if (!apiKey) throw new Error('No API key: pass { apiKey } or set LEVQOR_API_KEY.');
        const environment = options.environment ?? 'production';
        if (environment !== 'production' && environment !== 'sandbox') {
            throw new Error("environment must be 'production' or 'sandbox'");
        }
        this.environment = environment;
        this.baseUrl = (options.baseUrl ?? env.LEVQOR_BASE_URL ?? PRODUCTION_URL).replace(/\/+$/, '');
        // Retries run first so that only the final answer becomes a typed error.
        const middleware = [retryMiddleware(options), errorMiddleware()];
        const config = (basePath: string) =>
            new Configuration({ basePath, apiKey, middleware, fetchApi: options.fetchApi });
        const root = config(this.baseUrl);
        const v1 = environment === 'sandbox' ? config(this.baseUrl + SANDBOX_SUFFIX) : root;
        this.jobs = new Jobs(v1);
        this.workflows = new WorkflowsApi(v1);
        this.webhooks = new WebhooksApi(v1);
        this.sandbox = new Sandbox(root);
        this.usage = new UsageApi(root);
        this.keys = new KeysApi(root);
        this.health = new HealthApi(root);
    }
}
