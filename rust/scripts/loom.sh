#!/usr/bin/env bash
# Model-check the ring protocol with loom (a few minutes at most on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-4}"
# Build products live in the cache (a warm run from a fresh clone rebuilds only this crate);
# the lock keeps runs from several checkouts from testing each other's build.
tdir="${VMCS_CACHE:-$HOME/.cache/vmcs}/target/loom"
mkdir -p "$tdir"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=$tdir flock "$tdir/.vmcs-lock" \
	cargo test --release --test loom -- --nocapture "$@"
