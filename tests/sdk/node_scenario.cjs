// Drives the generated Node SDK against a running Levqor; prints what happened as JSON.
// Run by tests/test_sdk.py from a throwaway project where only the packed SDK is installed,
// with LEVQOR_BASE_URL and LEVQOR_API_KEY set.
'use strict';
const { Levqor, AuthenticationError, RateLimitError, ResponseError } = require('@levqor/sdk');

const BASE = process.env.LEVQOR_BASE_URL;
const KEY = process.env.LEVQOR_API_KEY;

async function collect(iterable) {
    const ids = [];
    for await (const job of iterable) ids.push(job.id);
    return ids;
}

async function main() {
    const out = {};
    const client = new Levqor({ apiKey: KEY, baseUrl: BASE });
    const created = await client.sandbox.sandboxCreateJob({
        jobCreate: { workflow: 'echo', input: { message: 'from node' } },
    });
    const got = await client.sandbox.sandboxGetJob({ jobId: created.id });
    out.created = { id: created.id, status: created.status };
    out.read_back = { id: got.id, status: got.status, result: got.result };

    // environment 'sandbox': the plain /v1 operations reach the sandbox through its server URL.
    const sandbox = new Levqor({ apiKey: KEY, baseUrl: BASE, environment: 'sandbox' });
    const more = [];
    for (let i = 0; i < 2; i++) {
        more.push((await sandbox.jobs.createJob({ jobCreate: { workflow: 'echo', input: { message: `n${i}` } } })).id);
    }
    const once = { jobCreate: { workflow: 'echo', input: { message: 'once' } }, idempotencyKey: 'fixed-key-1' };
    const first = await sandbox.jobs.createJob(once);
    const again = await sandbox.jobs.createJob(once);
    out.created_ids = [created.id, ...more, first.id];
    out.replayed_same_job = first.id === again.id;

    out.listed_ids = await collect(client.sandbox.iterJobs({ limit: 3 }));
    out.listed_via_v1_ids = await collect(sandbox.jobs.iterJobs({ limit: 2 }));

    try {
        await new Levqor({ apiKey: 'lvq_' + '0'.repeat(32) + '_AAAAAA', baseUrl: BASE }).sandbox.sandboxListJobs();
    } catch (err) {
        if (!(err instanceof AuthenticationError)) throw err;
        out.bad_key = {
            class: err.name,
            status: err.status,
            type: err.type,
            title: err.title,
            is_generated_response_error: err instanceof ResponseError,
        };
    }

    const retries = [];
    const patient = new Levqor({ apiKey: KEY, baseUrl: BASE, onRetry: (event) => retries.push(event) });
    let calls = 0;
    let usage;
    while (retries.length === 0 && calls < 200) {
        usage = await patient.usage.getUsage(); // resolves only once the call succeeded, retried or not
        calls += 1;
    }
    out.burst = {
        calls,
        retries: retries.map((e) => ({ status: e.status, wait: e.waitMs / 1000, method: e.method })),
        succeeded_after_retry: retries.length > 0 && usage.tier === 'sandbox',
    };

    const impatient = new Levqor({ apiKey: KEY, baseUrl: BASE, maxRetries: 0 });
    for (let i = 0; i < 200; i++) {
        try {
            await impatient.usage.getUsage();
        } catch (err) {
            if (!(err instanceof RateLimitError)) throw err;
            out.rate_limited = { class: err.name, status: err.status, type: err.type, retry_after: err.retryAfter };
            break;
        }
    }
    console.log(JSON.stringify(out));
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
