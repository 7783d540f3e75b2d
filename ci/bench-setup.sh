#!/usr/bin/env bash
# What `make bench` needs beyond ci/setup-deps.sh, installed lazily and idempotently (so that
# `make test` does not pay for it):
#
#   gnuplot-nox          Debian; draws the plots (PNG through its cairo terminal)
#   vhost-device-vsock   crates.io (rust-vmm), pinned, into $VMCS_CACHE/bin; the vhost-user
#                        vsock backend that links the guests' AF_VSOCK for the comparison
set -euo pipefail
. "$(dirname "$0")/lib.sh"

VMCS_VHOST_VSOCK_VERSION=0.3.0

if ! command -v gnuplot >/dev/null; then
	log "installing Debian package gnuplot-nox (bench plots)"
	as_root apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox >&2
fi
log "gnuplot: $(gnuplot --version)"

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
