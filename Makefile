# The README's commands. `make test` is what CI runs.
.PHONY: test test-unit bench fuzz

# Everything, with -race, against real PostgreSQL and MinIO (started for you).
test:
	scripts/test

# Unit tests only: no services, service tests skip (go test -short).
test-unit:
	go test -short -race ./...

# Benchmarks quoted in the README, against real services.
bench:
	scripts/with-services go test -run '^$$' -bench . -benchmem $(BENCH_FLAGS) ./pages/... ./pgschema/...

# A short run of every fuzz target (FUZZTIME=10m for a soak).
FUZZTIME ?= 30s
fuzz:
	scripts/fuzz $(FUZZTIME)
