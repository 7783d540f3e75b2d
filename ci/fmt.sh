#!/usr/bin/env bash
# Format all Rust code: the crates with cargo fmt, the module with the kernel's rustfmt settings.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$VMCS_TOP"
for m in rust/Cargo.toml userspace-tool/Cargo.toml qemu-test/guest-tools/Cargo.toml; do
	[ -f "$m" ] && cargo fmt --manifest-path "$m" --all
done
ksrc=$(ls -d "$VMCS_CACHE"/src/linux-source-*/ | sort -V | tail -n1)
rustfmt --edition 2021 --config-path "$ksrc/.rustfmt.toml" module/vmcs_drv.rs
