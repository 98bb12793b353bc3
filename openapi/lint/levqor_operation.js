// Spectral function for Levqor's operation rules (see .spectral.yaml: levqor-operation-contract).
// Runs on the resolved document, so shared responses ($ref) count as written out.
const METHODS = ["get", "put", "post", "delete", "patch", "options", "head", "trace"];
const BODY_ERRORS = ["400", "408", "413", "415"];
const AUTH_ERRORS = ["401", "429"];
// The schemes a developer calls with (a key, the portal's session): rate-limited, so a 429 too.
// Others (GitHub's signature) are checked by their own rule: a 401 only.
const LIMITED_SCHEMES = ["ApiKeyAuth", "SessionCookie"];

function schemeNames(security) {
  return new Set((security || []).flatMap((requirement) => Object.keys(requirement)));
}

module.exports = (doc) => {
  const results = [];
  const paths = (doc && doc.paths) || {};
  for (const [path, item] of Object.entries(paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const where = ["paths", path, method];
      const responses = op.responses || {};
      const security = op.security !== undefined ? op.security : doc.security;
      const schemes = schemeNames(security);
      const needed = [];
      if ([...schemes].some((scheme) => LIMITED_SCHEMES.includes(scheme))) needed.push(...AUTH_ERRORS);
      else if (schemes.size > 0) needed.push("401");
      if (op.requestBody) needed.push(...BODY_ERRORS);
      for (const status of needed) {
        if (!(status in responses)) {
          results.push({
            message: `${method.toUpperCase()} ${path} lacks the shared ${status} response`,
            path: [...where, "responses"],
          });
        }
      }
      for (const [status, response] of Object.entries(responses)) {
        if (!status.startsWith("4")) continue;
        const types = Object.keys((response && response.content) || {});
        if (types.length === 0 || types.some((t) => t !== "application/problem+json")) {
          results.push({
            message: `${method.toUpperCase()} ${path} ${status} must be an application/problem+json problem`,
            path: [...where, "responses", status],
          });
        }
      }
      // Which limit a key's call counts against (handlers/security.py reads it at start-up): the v1
      // quota or the sandbox's daily cap; absent, neither (burst only).
      const area = op["x-levqor-area"];
      if (area !== undefined && !["v1", "sandbox"].includes(area)) {
        results.push({ message: "x-levqor-area is `v1`, `sandbox` or absent", path: [...where, "x-levqor-area"] });
      }
      if (area !== undefined && !schemes.has("ApiKeyAuth")) {
        results.push({ message: `${op.operationId} takes no API key: x-levqor-area means nothing`, path: where });
      }
      if (op["x-internal"] !== undefined && op["x-internal"] !== true) {
        results.push({ message: "x-internal is `true` or absent", path: [...where, "x-internal"] });
      }
      const keyCallable = schemes.has("ApiKeyAuth");
      if (op["x-internal"] === true && keyCallable) {
        results.push({
          message: `${op.operationId} accepts an API key, so it belongs in the SDKs: drop x-internal`,
          path: [...where, "x-internal"],
        });
      }
      if (schemes.has("SessionCookie") && !keyCallable && op["x-internal"] !== true) {
        results.push({
          message: `${op.operationId} is portal-session only: mark it x-internal so the SDKs leave it out`,
          path: where,
        });
      }
    }
  }
  return results;
};
