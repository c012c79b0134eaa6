# holdfast: make run (a single node on an embedded Pebble store), make test.
GO      ?= go
BIN     := bin/holdfast
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build run test vet fmt-check bench bench-compare bench-peers fuzz chaos clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/holdfast

# One node: data in ./data, API on 127.0.0.1:8080, Raft on 127.0.0.1:9080.
run: build
	./$(BIN) serve

# The whole test suite: vet, formatting, unit, property, cluster and HTTP
# tests, and the fuzz seed corpora. Budget: well under 15 minutes on 2 cores.
test: fmt-check vet
	$(GO) test -count=1 -timeout 14m ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Benchmarks: timing wheel vs container/heap, allocator apply, Pebble log
# store, and single-node HTTP reservations with fsync on.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./lease/ ./allocator/ ./raftstore/...
	$(GO) test -run '^$$' -bench . -benchtime 20000x ./api/

# holdfast (3 nodes) against Redis+Lua and PostgreSQL on drop and retail,
# with the no-op ceiling: installs and starts the peers from Debian's
# packages if needed (scripts/peers-up.sh). DURATION per target.
bench-compare:
	DURATION=$(or $(DURATION),30s) scripts/bench-compare.sh

# The peers' own tests against real throwaway servers.
bench-peers:
	$(GO) test -tags peers -count=1 ./bench/peers

# Short fuzzing runs of every fuzz target (FUZZTIME each). The HTTP
# fuzzers drive a live node, one worker each (-parallel 1).
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./allocator -run '^$$' -fuzz FuzzDecodeCommand -fuzztime $(FUZZTIME)
	$(GO) test ./lease -run '^$$' -fuzz FuzzWheel -fuzztime $(FUZZTIME)
	$(GO) test ./api -run '^$$' -fuzz '^FuzzRequest$$' -fuzztime $(FUZZTIME) -parallel 1
	$(GO) test ./api -run '^$$' -fuzz '^FuzzRoutes$$' -fuzztime $(FUZZTIME) -parallel 1
	$(GO) test ./api -run '^$$' -fuzz '^FuzzRawHTTP$$' -fuzztime $(FUZZTIME) -parallel 1
	$(GO) test ./api -run '^$$' -fuzz '^FuzzReserveDecoder$$' -fuzztime $(FUZZTIME)
	$(GO) test ./api -run '^$$' -fuzz '^FuzzStrictKeys$$' -fuzztime $(FUZZTIME)
	$(GO) test ./api -run '^$$' -fuzz '^FuzzAppendString$$' -fuzztime $(FUZZTIME)
	$(GO) test ./auth -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)

# Long randomized fault-injection runs (chaos/, docs/reliability.md): real
# 3-node clusters, faults chosen by SEED (0: a random seed, printed) for
# DURATION, then linearizability and state checks and a summary table. A
# failure prints the seed and the command that reproduces it. The CI-sized
# run (fixed seed, about 2 minutes) is part of make test.
SEED ?= 0
DURATION ?= 10m
chaos:
	$(GO) test ./chaos -run 'TestChaos$$' -count=1 -v -timeout 3h -chaos.seed=$(SEED) -chaos.duration=$(DURATION)

clean:
	rm -rf bin data
