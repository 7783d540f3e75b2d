#!/usr/bin/env bash
# What `make bench` needs beyond ci/setup-deps.sh, installed lazily and idempotently (so that
# `make test` does not pay for it):
#
#   gnuplot-nox          Debian; draws the plots (PNG through its cairo terminal)
#   vhost-device-vsock   ci/install-vhost-vsock.sh (make test's setup installs it too); the
#                        vhost-user vsock backend that links the guests' AF_VSOCK
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if ! command -v gnuplot >/dev/null; then
	log "installing Debian package gnuplot-nox (bench plots)"
	as_root apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox >&2
fi
log "gnuplot: $(gnuplot --version)"

"$(dirname "$0")/install-vhost-vsock.sh"
