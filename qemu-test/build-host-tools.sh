#!/usr/bin/env bash
# Build a host-side tool of userspace-tool/ (default: the ivshmem doorbell server; also
# vmcs-evil, the hostile peer of the `hostile` scenario); print its path.
#
#   build-host-tools.sh [PACKAGE]
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"
pkg=${1:-vmcs-ivshmem-server}
vmcs_cargo_seed "$VMCS_TOP/build/host-target"
cargo build --quiet --release --manifest-path "$VMCS_TOP/userspace-tool/Cargo.toml" \
	-p "$pkg" --target-dir "$VMCS_TOP/build/host-target" >&2
echo "$VMCS_TOP/build/host-target/release/$pkg"
