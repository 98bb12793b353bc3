// Dredd hooks for the served spec (tests/test_contract_tools.py; docs/contributing/api-contract-tools.md).
// Dredd sends each operation's examples as written; these hooks only add what a spec cannot say:
// the caller's key, and the ids an earlier transaction created in place of the example ids.
const hooks = require("hooks");

// The example id of each kind of resource, and the creation whose answer replaces it.
const CREATED_BY = {
  "/v1/jobs": "job_0a1b2c3d4e5f60718293",
  "/sandbox/v1/jobs": "job_5e1d2c3b4a596877f0e1",
  "/v1/webhook_endpoints": "we_4c1d9a7e2b8f3a6d5e0c7b91",
  "/sandbox/v1/webhook_endpoints": "we_4c1d9a7e2b8f3a6d5e0c7b91",
};
const created = {}; // collection path -> id created in this run

function collectionOf(path) {
  return Object.keys(CREATED_BY)
    .sort((a, b) => b.length - a.length)
    .find((prefix) => path === prefix || path.startsWith(prefix + "/"));
}

hooks.beforeEach((transaction) => {
  // The spec's examples of errors (401, 404, 429...) are not what a good call gets: the contract
  // checked here is the successes; schemathesis provokes and checks the errors.
  const status = Number(transaction.expected.statusCode);
  if (status < 200 || status > 299) {
    transaction.skip = true;
    return;
  }
  // A Server-Sent Event stream answers until the client leaves (tests/test_streams.py covers them).
  const type = transaction.expected.headers && transaction.expected.headers["Content-Type"];
  if (type && type.startsWith("text/event-stream")) {
    transaction.skip = true;
    return;
  }
  transaction.request.headers["x-api-key"] = process.env.LEVQOR_API_KEY;
  const collection = collectionOf(transaction.request.uri);
  if (collection && created[collection]) {
    transaction.request.uri = transaction.request.uri.replace(CREATED_BY[collection], created[collection]);
    transaction.fullPath = transaction.fullPath.replace(CREATED_BY[collection], created[collection]);
  }
});

hooks.afterEach((transaction) => {
  const uri = transaction.request.uri;
  const status = Number(transaction.real && transaction.real.statusCode);
  if (transaction.request.method === "POST" && CREATED_BY[uri] && status >= 200 && status < 300) {
    created[uri] = JSON.parse(transaction.real.body).id;
  }
});
