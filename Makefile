# Operator shortcuts used by the runbook. The database comes from ConnectionStrings__helixagent-db, or from the
# file the AppHost writes in local mode (see README).
DOTNET ?= dotnet
CLI = ./helixagent

.PHONY: build test run migrate-up migrate-down migrate-status k8s-generate bench

build:
	$(DOTNET) build HelixAgent.sln

test:
	$(DOTNET) test HelixAgent.sln -m:1

run:
	$(DOTNET) run --project HelixAgent.AppHost

migrate-up:
	$(CLI) migrate up

migrate-down:
	$(CLI) migrate down

migrate-status:
	$(CLI) migrate status

# Regenerate aspirate-output/ (kustomize) from the AppHost's publish manifest; tests fail when it drifts.
k8s-generate:
	$(DOTNET) build HelixAgent.Deploy --nologo -v q
	$(DOTNET) run --project HelixAgent.Deploy --no-build -- generate

# Benchmark (issue 8): builds Release, starts its own PostgreSQL, Redis, fake upstream and gateway, prints the table and
# writes it to bench/results/<UTC date>.txt (about 5 minutes). `make bench BENCH_ARGS=--soak` adds the 5-minute soak;
# settings are environment variables (bench/run.sh --help). `make bench BENCH_ARGS=--kill` is the crash check alone:
# kill -9 under load three times, then every answered request joined against completions ("lost 0").
bench:
	bench/run.sh $(BENCH_ARGS)
