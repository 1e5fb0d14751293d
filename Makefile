# The two commands of the README. Both set up everything on a machine that has only Python.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test conformance bench bench-audit bench-pdq bench-xua bench-consent soak clean

$(BIN)/xds: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

run: $(BIN)/xds
	$(BIN)/xds db upgrade
	$(BIN)/xds serve

test: $(BIN)/xds
	$(BIN)/python -m pytest -n 2 -q

# The NIST XDS Toolkit tests against this project's server on a random port, with the NIST
# codes. Every step passes except those in conformance/known-failures.txt. Also part of
# `make test`; logs, JUnit XML and the README's conformance table go to var/conformance.
conformance: $(BIN)/xds
	XDS_CONFORMANCE_REPORT_DIR=var/conformance $(BIN)/python -m pytest -q tests/test_conformance_nist.py

# Not part of `make test`: fills a registry with 1,000,000 DocumentEntries on SQLite and on
# PostgreSQL (about 15-20 min each; kept in var/bench, reused by the next run) and measures it
# over HTTP against `xds serve`. See bench/README.md; BENCH_ARGS passes options to it.
bench: $(BIN)/xds
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& { apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; }; }; } \
		|| echo "wrk is not installed and cannot be: bench falls back to its Python client"
	$(BIN)/python -m bench $(BENCH_ARGS)

# Not part of `make test`: what ATNA auditing costs ITI-18 (a few minutes): `xds serve` with audit
# off and on over one small SQLite registry in var/bench/audit, rounds of 1,000 FindDocuments
# each, every audit record counted at a local syslog receiver. BENCH_AUDIT_ARGS passes options.
bench-audit: $(BIN)/xds
	$(BIN)/python -m bench.audit $(BENCH_AUDIT_ARGS)

# Not part of `make test`: PDQ (ITI-47) over 1,000,000 patients (issue 10) on SQLite (var/bench/pdq)
# and PostgreSQL (database bench_pdq): loaded once (a few minutes each, reused by the next run), answers
# checked, then queries measured in process at 1 and 8 clients, and over HTTP with the floor when /pdq is
# served. See bench/README.md; BENCH_PDQ_ARGS passes options (e.g. BENCH_PDQ_ARGS="--duration 3").
bench-pdq: $(BIN)/xds
	$(BIN)/python -m bench.pdq $(BENCH_PDQ_ARGS)

# Not part of `make test`: what XUA costs (issue 11), about 5 min: CPU per assertion verification
# (uncached and cached, RSA and ECDSA), FindDocuments in process and over HTTP against two `xds serve`
# (xua_policy off / required) over a small SQLite registry in var/bench/xua, in alternating rounds.
# See bench/README.md; BENCH_XUA_ARGS passes options (e.g. BENCH_XUA_ARGS="--rounds 2 --no-fresh").
bench-xua: $(BIN)/xds
	$(BIN)/python -m bench.xua $(BENCH_XUA_ARGS)

# Not part of `make test`: what consent costs FindDocuments (issue 12), a few minutes: in process and
# over HTTP against two `xds serve` (access_control off / consent, both XUA required) over a small SQLite
# registry whose patients all have a consent, in var/bench/consent, in alternating rounds. See
# bench/README.md; BENCH_CONSENT_ARGS passes options (e.g. BENCH_CONSENT_ARGS="--rounds 2").
bench-consent: $(BIN)/xds
	$(BIN)/python -m bench.consent $(BENCH_CONSENT_ARGS)

# Not part of `make test`: the soak (issue 15), about 3 min: `xds serve` on SQLite under mixed good
# and bad requests, idle and byte-a-second connections, the workers' memory sampled; exits 1 unless
# no answer took over 5 s, none was missing and RSS stayed flat. Data in var/soak; SOAK_ARGS passes
# options (e.g. SOAK_ARGS="--duration 600").
soak: $(BIN)/xds
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var
