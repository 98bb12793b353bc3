# The two commands: `make run` and `make test`. Everything else is what they need.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
PORT   ?= 5000
export PORT

.PHONY: run test setup lint spec-lint spec-check system-deps bench bench-jobs bench-cpu soak bench-scale clean sdk sdk-publish postman

run: setup
	$(PY) -m levqor_core.devserver

# The whole suite, in parallel (docs/contributing/tests.md): TEST_WORKERS pytest-xdist workers, each with
# its own PostgreSQL and Redis; a test group (`xdist_group`) stays on one worker; the 25 slowest printed.
# The spec's lint and breaking-change check are tests of the suite (tests/test_spec_contract.py), run
# beside the others rather than before them; `make spec-lint` / `make spec-check` run them alone.
# The system packages first (apt-get takes one lock), then the Python and npm packages side by side.
TEST_WORKERS ?= 4
test: system-deps
	@$(MAKE) --no-print-directory -j2 setup
	@$(MAKE) --no-print-directory lint
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25

POSTMAN := build/postman/levqor.postman_collection.json

setup: $(VENV)/.installed node_modules/.package-lock.json $(POSTMAN)

# A git worktree may link .venv and node_modules to the main checkout's: its fresh
# checkout's files are newer than their stamps, and rebuilding would rebuild the main checkout's
# environment under it (npm ci empties node_modules first). A linked one is the main checkout's to
# keep up to date: here its stamp is enough.
linked = $(shell test -L $(1) && echo yes)
$(VENV)/.installed: $(if $(call linked,$(VENV)),,requirements.txt requirements-dev.txt)
	@python3 -m venv $(VENV) 2>/dev/null || { scripts/system-deps-venv.sh && python3 -m venv $(VENV); }
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements-dev.txt
	@touch $@

# The portal's JS/CSS (htmx, Swagger UI), pinned by package-lock.json and served by the app itself.
node_modules/.package-lock.json: $(if $(call linked,node_modules),,package.json package-lock.json)
	@command -v npm >/dev/null || scripts/system-deps.sh
	npm ci --ignore-scripts --no-audit --no-fund

# The Postman collection the app serves at /api/postman.json, built from the public spec by
# openapi-to-postmanv2 (node is needed here, at setup; the app only reads the file).
postman: $(POSTMAN)
$(POSTMAN): openapi/openapi.yaml openapi/postman.py levqor_core/postman.py levqor_core/spec.py \
		$(VENV)/.installed node_modules/.package-lock.json
	$(PY) openapi/postman.py

system-deps:
	@scripts/system-deps.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The contract's quality: Redocly's recommended rules (redocly.yaml) and Spectral's plus ours
# (.spectral.yaml, openapi/lint/); any error or warning fails.
spec-lint: setup
	node_modules/.bin/redocly lint --config redocly.yaml --max-problems 50 openapi/openapi.yaml
	node_modules/.bin/spectral lint --ruleset .spectral.yaml --fail-severity warn openapi/openapi.yaml

# The breaking-change gate: openapi/openapi.yaml against the newest openapi/released/ copy (optic);
# a breaking change needs a new major info.version, an additive one a new minor.
spec-check: setup
	$(PY) openapi/check_release.py

bench: setup system-deps
	@command -v wrk >/dev/null || { [ "$$(id -u)" -eq 0 ] && apt-get install -y -qq wrk >/dev/null || sudo apt-get install -y -qq wrk >/dev/null; }
	$(PY) bench/run.py $(if $(BENCH_SECONDS),--seconds $(BENCH_SECONDS)) $(if $(BENCH_ROUNDS),--rounds $(BENCH_ROUNDS))

# Jobs end to end: the Procfile's worker pool (jobs via the API) against a bare RQ pool of the
# same size running the same echo function on the same Redis; throughput and p50 submit-to-succeeded.
bench-jobs: setup system-deps
	$(PY) bench/jobs.py $(if $(BENCH_SECONDS),--seconds $(BENCH_SECONDS)) $(if $(BENCH_ROUNDS),--rounds $(BENCH_ROUNDS))

# Process CPU per request against bare Connexion, in process (steady where req/s is noise);
# BENCH_COMPARE=<git rev> adds a before/after.
bench-cpu: setup system-deps
	$(PY) bench/cpu.py $(if $(BENCH_COMPARE),--compare $(BENCH_COMPARE))

# The Procfile's processes under mixed traffic for $$SOAK_SECONDS (60) while the worker is
# SIGKILLed, Redis restarts and a web worker restarts; exits 1 when a target figure is missed.
soak: setup system-deps
	$(PY) bench/soak.py

# The hot path on a Redis Cluster (3 primaries + 3 replicas), queues on their own Redis, PgBouncer,
# 3 web and 2 worker dynos, $$SCALE_KEYS (20,000) keys each called at least once ($$SCALE_SECONDS, 60,
# and on until every key is, up to $$SCALE_MAX_SECONDS, 240) while a primary is SIGKILLed and a web
# dyno restarts; exits 1 when a target figure is missed.
bench-scale: setup system-deps
	$(PY) bench/scale.py

# The Python (levqor) and Node (@levqor/sdk) SDKs, generated from the spec into build/sdk/.
sdk: setup system-deps
	$(PY) sdk-gen/generate.py

# Commits build/sdk to the levqor-sdk repository ($$LEVQOR_SDK_REMOTE), tagged v<info.version>.
sdk-publish: sdk
	$(PY) sdk-gen/publish.py

clean:
	rm -rf $(VENV) var build node_modules
