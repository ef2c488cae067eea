# Every target installs what it needs into .venv first, so each works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

SOAK_SECONDS ?= 180
SIMULATE_MINUTES ?= 4

.PHONY: install demo test soak bench bench-grants simulate simulate-events lint format run clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -e .
	touch $(STAMP)

demo: install  ## the proxy under gunicorn against the emulated Auth0 tenant
	$(PY) -m scripts.demo

test: install  ## the whole test suite (end-to-end through gunicorn), on two processes
	@scripts/install_helm.sh || echo "helm could not be installed: tests/test_helm.py will skip"
	$(PY) -m pytest -n 2 --dist loadfile

soak: install  ## mixed traffic under injected Auth0 faults for SOAK_SECONDS; fails on any leak or 500
	$(PY) -m bench.soak --seconds $(SOAK_SECONDS)

bench: install  ## throughput, overhead and upstream economy, side by side (needs wrk: installed if missing)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || \
		{ echo "make bench needs wrk (apt-get install wrk)"; exit 1; }
	$(PY) -m bench.bench
	$(PY) -m bench.json_encoders
	$(PY) -m bench.breakdown

bench-grants: install  ## what reading the clients map from Auth0's client grants costs, and the clients' answers with it off and on, side by side
	$(PY) -m bench.client_grants

simulate: install  ## fleets of edge clients polling two proxies under an Auth0 plan's limits (needs Redis), then one through a 2-minute Redis outage (needs redis-server)
	$(PY) -m bench.simulate --clients 1000 --orgs 200 --members 100 --poll 60 --minutes $(SIMULATE_MINUTES)
	$(PY) -m bench.simulate --clients 10000 --orgs 1000 --members 100 --poll 60 --minutes $(SIMULATE_MINUTES)
	$(PY) -m bench.simulate --clients 1000 --orgs 200 --members 100 --poll 60 --minutes $(SIMULATE_MINUTES) --redis-outage 120
	$(MAKE) simulate-events

simulate-events: install  ## 10,000 clients with 30 membership changes a minute: polling alone, then Auth0's events (Events API, webhook), a consumer killed mid-run
	for source in off events_api webhook; do \
		$(PY) -m bench.simulate --clients 10000 --orgs 1000 --members 100 --poll 60 \
			--minutes $(SIMULATE_MINUTES) --churn 30 --events $$source || exit 1; \
	done

lint: install  ## ruff lint and format check, hadolint on the Dockerfile, kubernetes-validate on deploy/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/kubernetes-validate --strict --quiet deploy/kubernetes/*.yaml deploy/kubernetes/redis-example/*.yaml

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

run: install  ## the proxy under gunicorn with ./config.json (or AUTH0_PROXY_CONFIG)
	$(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:app

clean:
	rm -rf $(VENV) .demo .pytest_cache .ruff_cache *.egg-info
