#!/usr/bin/env bash
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
# Runs each cargo-fuzz target for SECONDS (default 30) on the stable toolchain
# (RUSTC_BOOTSTRAP=1 enables the -Z flags cargo-fuzz needs). Installs
# cargo-fuzz if missing. Exits non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"; shift || true
targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(region concurrent)
export PATH="${VMCS_CACHE:-$HOME/.cache/vmcs}/bin:$HOME/.cargo/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
san="${FUZZ_SANITIZER:-address}"
mkdir -p corpus artifacts
# Build products live in the cache, so a warm run (a fresh clone too) rebuilds only the
# protocol crate, not libFuzzer and the dependencies. Runs from several checkouts share
# that folder, so each build-and-run holds a lock: no run can fuzz another's binary.
tdir="${VMCS_CACHE:-$HOME/.cache/vmcs}/target/fuzz"
mkdir -p "$tdir"
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== fuzz target $t for ${secs}s (sanitizer: $san)"
    set +e
    extra=()
    # The concurrent target spawns a thread per input; LeakSanitizer then reports the
    # 32-byte block glibc allocates for that thread's TLS destructor list
    # (__cxa_thread_atexit_impl), which is freed by the thread's exit racing the check.
    # The protocol code is no_std and allocates nothing, so leak checking adds nothing
    # there; the region target keeps it.
    [ "$t" = concurrent ] && extra=(-detect_leaks=0)
    flock "$tdir/.vmcs-lock" cargo fuzz run -s "$san" --target-dir "$tdir" "$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=4096 -timeout=10 -print_final_stats=1 "${extra[@]}" \
        >"artifacts/$t.log" 2>&1
    rc=$?
    set -e
    grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY|.*panicked|Test unit written)" \
        "artifacts/$t.log" || true
    if [ "$rc" -ne 0 ]; then
        tail -40 "artifacts/$t.log"
        echo "fuzz target $t FAILED (exit $rc, log: fuzz/artifacts/$t.log)"
        exit 1
    fi
done
