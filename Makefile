# calmline — run `make help` for the targets.
SHELL   := /bin/bash
GO      ?= go
BIN     := $(CURDIR)/bin
TOOLS   := $(BIN)/tools
CORPUS  ?= ../shared/corpus
# Every Go module of the workspace; each also builds and tests on its own
# (GOWORK=off), as a consumer of one module would see it.
MODULES := proto lib gateway realtime fullcall escalation cmd console
# Flags for `make test`'s go test runs.
TESTFLAGS ?= -race -count=1 -timeout 10m

.DEFAULT_GOAL := help

help: ## Show this help.
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/calmline and the per-service binaries.
	@mkdir -p $(BIN)
	cd cmd && $(GO) build -o $(BIN)/calmline ./calmline
	cd gateway && $(GO) build -o $(BIN)/calmline-gateway ./cmd/calmline-gateway
	cd realtime && $(GO) build -o $(BIN)/calmline-realtime ./cmd/calmline-realtime
	cd fullcall && $(GO) build -o $(BIN)/calmline-fullcall ./cmd/calmline-fullcall
	cd escalation && $(GO) build -o $(BIN)/calmline-escalation ./cmd/calmline-escalation

run: build ## Build and start every service in one process on the embedded defaults.
	$(BIN)/calmline serve --demo-webhook-receiver 127.0.0.1:8099 --console-addr 127.0.0.1:8088

test: lint check-generate test-go validate-deploy ## The whole suite: lint, generated code up to date, every module's tests, the Kubernetes manifests.

# test-go prints what plain go test prints (each package's ok/FAIL line, a
# failing test's output) through tools/testsummary, and ends with every
# test that was skipped and the reason it gave (no PostgreSQL, no corpus…).
test-go: ## Run every module's tests on its own (GOWORK=off); list the skipped tests and why at the end.
	@mkdir -p $(BIN)
	@cd tools && GOWORK=off $(GO) build -o $(BIN)/testsummary ./testsummary
	@skips=$$(mktemp); trap 'rm -f $$skips' EXIT; set -eo pipefail; \
	for m in $(MODULES); do \
		echo "== go test $$m"; \
		(cd $$m && GOWORK=off $(GO) test -json $(TESTFLAGS) ./... | $(BIN)/testsummary -skips $$skips); \
	done; \
	echo "== go test tools/testsummary"; \
	(cd tools && GOWORK=off $(GO) test -json $(TESTFLAGS) ./testsummary | $(BIN)/testsummary -skips $$skips); \
	$(BIN)/testsummary -report $$skips

test-keepalive: ## Measure dead-peer detection: SIGSTOP a backend, a client, and a realtime under a live call (≈ 45 s).
	set -o pipefail; cd lib && $(GO) test -count=1 -run 'Stopped' -v ./rpc/ | grep -E 'after|^(ok|FAIL|---)'
	set -o pipefail; cd cmd && CALMLINE_E2E_KEEPALIVE=1 $(GO) test -count=1 -run 'SilentFailover' -v ./calmline/ | grep -E 'keepalive_e2e_test|^(ok|FAIL|---)'
.PHONY: test-keepalive

lint: $(TOOLS)/.stamp ## gofmt, go vet, staticcheck and buf lint.
	@out=$$(git ls-files '*.go' | grep -v '\.pb\.go$$' | xargs gofmt -l); \
		if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@set -e; for m in $(MODULES); do \
		echo "== vet + staticcheck $$m"; \
		(cd $$m && GOWORK=off $(GO) vet ./... && GOWORK=off $(TOOLS)/staticcheck ./...); \
	done
	$(TOOLS)/buf lint

generate: $(TOOLS)/.stamp ## Regenerate the protobuf Go code with the pinned local plugins.
	$(TOOLS)/buf generate

check-generate: generate ## Fail when the committed generated code differs from `make generate`.
	@git diff --exit-code -- proto || (echo "generated code is stale: run make generate and commit"; exit 1)
	@untracked=$$(git ls-files --others --exclude-standard proto); \
		if [ -n "$$untracked" ]; then echo "generated files not committed: $$untracked"; exit 1; fi

breaking: $(TOOLS)/.stamp ## Check the contracts for breaking changes against main.
	$(TOOLS)/buf breaking --against '.git#branch=main'

tools: $(TOOLS)/.stamp ## Build the pinned code generators and linters into bin/tools.

$(TOOLS)/.stamp: tools/go.mod tools/go.sum
	@mkdir -p $(TOOLS)
	cd tools && GOWORK=off $(GO) build -o $(TOOLS)/ \
		github.com/bufbuild/buf/cmd/buf \
		google.golang.org/protobuf/cmd/protoc-gen-go \
		google.golang.org/grpc/cmd/protoc-gen-go-grpc \
		honnef.co/go/tools/cmd/staticcheck
	@touch $@

bench: ## Run the Go benchmarks (per-op cost and allocations).
	cd lib && $(GO) test -run '^$$' -bench . -benchmem ./...

bench-escalation: build ## Escalation: threshold crossing to webhook and transfer (p50/p99), outbox throughput; DATABASE=postgres://... for PostgreSQL.
	$(BIN)/calmline bench-escalation --mode latency $(if $(DATABASE),--database '$(DATABASE)')
	$(BIN)/calmline bench-escalation --mode throughput --batch 1 $(if $(DATABASE),--database '$(DATABASE)')
	$(BIN)/calmline bench-escalation --mode throughput --batch 16 $(if $(DATABASE),--database '$(DATABASE)')

fuzz-escalation: ## Run the webhook and tenants-file fuzzers, FUZZTIME (default 60s) each.
	@set -e; for f in FuzzParseRetryAfter FuzzVerify FuzzParseSecret; do \
		(cd lib && $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(or $(FUZZTIME),60s) ./webhook); done
	cd lib && $(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(or $(FUZZTIME),60s) ./tenant

# fullcall-bench's live-call figures: memory per call and finalisation with
# every call hanging up at once, and with hang-ups spread out.
FULLCALL_BENCH := cd fullcall && $(GO) run ./cmd/fullcall-bench

bench-fullcall: ## fullcall figures on SQLite: batch throughput (10-minute corpus file), memory per live call, finalisation at hang-up.
	cd fullcall && CALMLINE_CORPUS=$(abspath $(CORPUS)) $(GO) test -run '^$$' -bench Batch600s -benchtime 20x .
	$(FULLCALL_BENCH) -calls 150 -seconds 300
	$(FULLCALL_BENCH) -calls 150 -seconds 300 -stagger 20ms
	$(FULLCALL_BENCH) -calls 1000 -seconds 60

bench-fullcall-pg: ## The same live-call figures on a throwaway PostgreSQL started by scripts/postgres.sh (fsync on).
	@scripts/postgres.sh install
	@set -e; d=$$(mktemp -d /tmp/calmline-pg.XXXXXX); trap "scripts/postgres.sh stop $$d" EXIT; \
		dsn=$$(PG_DURABLE=1 scripts/postgres.sh start $$d); \
		($(FULLCALL_BENCH) -calls 150 -seconds 300 -database "$$dsn"); \
		($(FULLCALL_BENCH) -calls 150 -seconds 300 -stagger 20ms -database "$$dsn"); \
		($(FULLCALL_BENCH) -calls 1000 -seconds 60 -database "$$dsn")

.PHONY: bench-fullcall bench-fullcall-pg

bench-gateway: ## Go benchmarks of the gateway's hot path (frame in → chunk out), with allocations.
	cd gateway && $(GO) test -run '^$$' -bench . -benchmem ./session

bench-load: build ## Whole stack + loadgen: the most concurrent calls sustained (scripts/bench-load.sh; LEVELS="500 1000").
	scripts/bench-load.sh $(LEVELS)

bench-gateway-mem: build ## The gateway's memory per live call, as its own process (scripts/bench-gateway-mem.sh; CALLS=1000).
	scripts/bench-gateway-mem.sh $(CALLS)

tidy: ## go mod tidy in every module.
	@set -e; for m in $(MODULES) tools; do (cd $$m && GOWORK=off $(GO) mod tidy); done

clean: ## Remove build outputs (not the data directory).
	rm -rf $(BIN)

.PHONY: help build run test test-go lint generate check-generate breaking tools bench tidy clean

eval: build ## Measure the voice analysis against the corpus (CORPUS=../shared/corpus): every figure of issue 3, table and JSON.
	$(BIN)/calmline eval --corpus $(CORPUS)

bench-voice: build ## Voice-analysis benchmarks (go test -bench, -benchmem) and the speed comparison with Praat and aubio.
	cd lib && $(GO) test -run '^$$' -bench . -benchmem ./audio/ ./voice/
	scripts/bench-voice.sh $(CORPUS)/long/long_600s.ulaw.wav

.PHONY: eval bench-voice
.PHONY: bench-escalation fuzz-escalation

fuzz-security: ## Run the service-identity, callback-URL and log-redaction fuzzers, FUZZTIME (default 60s) each.
	@set -e; for f in FuzzParseToken FuzzIdentity FuzzParseSecrets; do \
		(cd lib && $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(or $(FUZZTIME),60s) ./identity); done
	cd lib && $(GO) test -run '^$$' -fuzz '^FuzzParseCallbackURL$$' -fuzztime $(or $(FUZZTIME),60s) ./tenant
	cd lib && $(GO) test -run '^$$' -fuzz '^FuzzURL$$' -fuzztime $(or $(FUZZTIME),60s) ./redact

.PHONY: fuzz-security

bench-protocols: ## PBX protocol benchmarks: one call over native, AudioHook, Twilio-style and Asterisk side by side (CPU per audio second), parsers, joiner.
	cd gateway && $(GO) test -run '^$$' -bench 'BenchmarkProtocols' -benchtime 20x -benchmem -count 3 .
	cd gateway && $(GO) test -run '^$$' -bench . -benchmem ./stereo/ ./twilio/ ./audiohook/

.PHONY: bench-protocols


bench-load-protocols: build ## The same load over native, AudioHook, Twilio and Asterisk, gateway CPU per call side by side (scripts/bench-load-protocols.sh; LEVELS="200 400").
	scripts/bench-load-protocols.sh $(LEVELS)

.PHONY: bench-gateway bench-load bench-gateway-mem bench-load-protocols

bench-console: ## The console's wall in headless Chromium with live loadgen calls: scripting ms per update, fps (CALLS=200).
	cd console && CALMLINE_REQUIRE_CHROMIUM=1 CALMLINE_BENCH_CALLS=$(or $(CALLS),200) GOWORK=off $(GO) test -run '^$$' -bench Wall -benchtime 1x -timeout 15m ./browsertest/
.PHONY: bench-console

# deploy/validate is its own module (k8s.io/api stays out of calmline's
# modules and out of go.work): vet, staticcheck and tests, then the real
# manifests against the real `calmline serve` flags. Offline once the module
# cache holds k8s.io/api; CI downloads it like any module.
validate-deploy: $(TOOLS)/.stamp ## Check deploy/ offline: k8s manifests (strict k8s.io/api types, probes, drain grace, PDBs, HPAs, headless gRPC targets, ServiceMonitor), alert rules (Prometheus's parser), the Grafana dashboard (Grafana's schema).
	@mkdir -p $(BIN)
	cd cmd && $(GO) build -o $(BIN)/calmline ./calmline
	cd deploy/validate && GOWORK=off $(GO) vet ./... && GOWORK=off $(TOOLS)/staticcheck ./...
	# Without -race: the checker runs no goroutines, and a race build of its
	# dependencies (k8s.io/api, Prometheus's rule parser, Grafana's schema)
	# would compile them all a second time.
	cd deploy/validate && GOWORK=off $(GO) test $(filter-out -race,$(TESTFLAGS)) ./...
	cd deploy/validate && GOWORK=off $(GO) run . -calmline $(BIN)/calmline ../k8s
	cd deploy/validate && GOWORK=off $(GO) run . -metrics ../../docs/metrics.md -rules ../prometheus/calmline-rules.yaml -dashboard ../grafana/calmline-dashboard.json

.PHONY: validate-deploy

capacity: ## The capacity model: instances, bandwidth and PostgreSQL load for 150-100,000 calls (calmline capacity; ARGS="--calls 5000").
	cd cmd && $(GO) run ./calmline capacity $(ARGS)

.PHONY: capacity

cluster-up: build ## The loopback cluster: nginx/TLS, 2 gateways, 2 realtime, 2 fullcall on PostgreSQL, escalation (scripts/cluster-up.sh; CLUSTER_DIR).
	scripts/cluster-up.sh

cluster-down: ## Stop the loopback cluster: SIGTERM, SIGKILL after 20 s, ports free (idempotent).
	scripts/cluster-down.sh

cluster-smoke: build ## Cluster up, two calls through nginx over TLS, their reports back over HTTPS, cluster down (~30 s).
	scripts/cluster-smoke.sh

chaos: build ## Failover under load through nginx: kill -9 realtime, fullcall, gateway; restart escalation; prints the figures (CALLS=200).
	scripts/chaos.sh

bench-cluster: build ## The cluster's throughput through nginx at several levels (scripts/bench-cluster.sh; LEVELS="300 500 600").
	scripts/bench-cluster.sh $(LEVELS)

.PHONY: cluster-up cluster-down cluster-smoke chaos bench-cluster
