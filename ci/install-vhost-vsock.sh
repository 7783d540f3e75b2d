#!/usr/bin/env bash
# Install vhost-device-vsock (crates.io, rust-vmm), pinned, into $VMCS_CACHE/bin, under a
# flock: the vhost-user vsock backend whose sibling groups link the test guests' AF_VSOCK
# (run.sh --vsock: the vsock scenario of make test, and make bench's AF_VSOCK comparison).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

VMCS_VHOST_VSOCK_VERSION=0.3.0

mkdir -p "$VMCS_CACHE/bin"
bin="$VMCS_CACHE/bin/vhost-device-vsock"
have() { "$bin" --version 2>/dev/null | grep -q " $VMCS_VHOST_VSOCK_VERSION\$"; }
if ! have; then
	exec 9>"$VMCS_CACHE/.lock-vhost-device-vsock"
	flock 9
	if ! have; then
		log "installing vhost-device-vsock $VMCS_VHOST_VSOCK_VERSION (cargo install, about a minute)"
		cargo install --quiet --locked --root "$VMCS_CACHE/cargo-root" vhost-device-vsock \
			--version "$VMCS_VHOST_VSOCK_VERSION" >&2
		ln -sf "$VMCS_CACHE/cargo-root/bin/vhost-device-vsock" "$bin"
	fi
	flock -u 9
fi
log "vhost-device-vsock: $("$bin" --version)"
