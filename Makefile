# Targets that a fresh Debian machine with Go can run as root: each installs
# redis-server first when it is missing.
GO ?= go
BIN ?= bin

.PHONY: all build test vet fmt-check demo bench bench-latency bench-cached bench-ab chaos clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# Unit and integration tests, with the race detector, against a real
# redis-server that the tests start on free ports.
test: fmt-check vet
	./scripts/ensure-redis
	./scripts/ensure-chromium
	$(GO) test -race -count=1 -timeout 20m ./...

# Runs the whole service locally (Redis, simulator, workers, api) and streams
# one time-travel job, then one ensemble of three simulated models. With
# OPENAI_API_KEY set it uses the real provider (the ensemble then needs
# -ensemble-models: ./scripts/demo -ensemble-models a,b,c). With KEEP=1
# (make demo KEEP=1) it then prints the web page's URL and keeps the service
# running until Ctrl-C.
demo:
	KEEP="$(KEEP)" ./scripts/demo

# Benchmarks against the simulator: every scenario (time travel, the
# ensemble kind, throughput at 64 clients with the idle Redis commands/s,
# streaming of long answers with the service CPU per 1,000 streamed tokens,
# two workers on one Redis against a three-master Redis Cluster, and 500
# jobs at once against a provider cap of 64 with one and two workers), a
# table and a JSON report.
bench:
	./scripts/ensure-redis
	$(GO) run ./cmd/bench -json bench-report.json

# Only the latency scenario: POST to terminal event, 30 sequential jobs.
bench-latency:
	./scripts/ensure-redis
	$(GO) run ./cmd/bench latency

# Only the cached scenario: POST to terminal event of jobs served wholly
# from the caches, 200 sequential jobs after one priming job.
bench-cached:
	./scripts/ensure-redis
	$(GO) run ./cmd/bench cached

# A/B: the same scenarios (AB_SCENARIOS) against the binaries of git revision
# AB_REV (default: main before the efficiency work of issue 19) and of this
# tree, back to back in one run, three rounds in alternating order; prints
# both medians and their ratio (jobs/s, CPU per job and per 1,000 streamed
# tokens, Redis commands per job, idle Redis commands/s per worker), and
# writes a JSON report in the bin directory. E.g. make bench-ab AB_REV=HEAD~1
# AB_SCENARIOS="latency ensemble".
AB_REV ?= 50ddbcb
AB_SCENARIOS ?= latency throughput streaming
bench-ab:
	./scripts/ensure-redis
	mkdir -p $(BIN)
	$(GO) run ./cmd/bench -ab $(AB_REV) -json $(BIN)/bench-ab-report.json $(AB_SCENARIOS)

# The chaos suite: real processes on loopback (Redis with and without AOF, a
# Sentinel group and a Redis Cluster, the simulator, two workers, two api
# replicas), one fault per scenario, one Markdown table row per scenario (and
# a JSON report in the bin directory); fails when a scenario misses its
# acceptance. About thirteen minutes. One scenario: go run ./cmd/chaos -run
# redis-kill
chaos:
	./scripts/ensure-redis
	mkdir -p $(BIN)
	$(GO) run ./cmd/chaos -json $(BIN)/chaos-report.json

clean:
	rm -rf $(BIN)
