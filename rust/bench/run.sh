#!/usr/bin/env bash
# Host ring benchmark vs memcpy and crossbeam, same run. ~30 s.
# BENCH_SECS=<seconds per measurement> (default 0.3), BENCH_REPS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench ring "$@"
