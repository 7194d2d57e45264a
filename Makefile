# The README's commands. `make test` is what CI runs.
.PHONY: test test-unit bench fuzz

# Everything, with -race, against real PostgreSQL and MinIO (started for you).
test:
	scripts/test

# Unit tests only: no services, service tests skip (go test -short).
test-unit:
	go test -short -race ./...

# Benchmarks quoted in the README, against real services. The segment
# codec is measured on one core (-cpu 1), as its target is stated.
bench:
	go test -run '^$$' -bench 'Encode|Decode' -cpu 1 $(BENCH_FLAGS) ./pages/segment/
	scripts/with-services go test -run '^$$' -bench . $(BENCH_FLAGS) ./pgschema/pgstore/ ./pgschema/sqlitestore/ ./pages/s3store/ ./server/
	go test -run '^$$' -bench 'Capture|PlainWAL|Wire' $(BENCH_FLAGS) ./replica/

# A short run of every fuzz target (FUZZTIME=10m for a soak).
FUZZTIME ?= 30s
fuzz:
	scripts/fuzz $(FUZZTIME)
