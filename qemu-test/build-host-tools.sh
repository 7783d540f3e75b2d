#!/usr/bin/env bash
# Build the host-side ivshmem doorbell server; print its path.
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"
cargo build --quiet --release --manifest-path "$VMCS_TOP/userspace-tool/Cargo.toml" \
	-p vmcs-ivshmem-server --target-dir "$VMCS_TOP/build/host-target" >&2
echo "$VMCS_TOP/build/host-target/release/vmcs-ivshmem-server"
