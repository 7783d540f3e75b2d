#!/usr/bin/env bash
# `make install`: vmcs.ko (built against $KDIR, default the cached test kernel; KDIR=debian
# for Debian's stock kernel, see ci/debian-module.sh) into
# $DESTDIR/lib/modules/<release>/extra, the udev rule, the vmcs CLI into $DESTDIR$PREFIX/bin
# and the uapi header into $DESTDIR$PREFIX/include/linux. Runs depmod when DESTDIR is empty.
# VMCS_CLI=PATH installs that vmcs binary (e.g. the static musl build) instead of building one.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$VMCS_TOP"
: "${PREFIX:=/usr/local}"
: "${DESTDIR:=}"

kdir=${KDIR:-}
[ -n "$kdir" ] || kdir=$(ci/build-kernel.sh)
module=$(KDIR=$kdir ci/build-module.sh)
# The release the module was built for (KDIR may be `debian`, which is no tree).
release=$(modinfo -F vermagic "$module" | cut -d' ' -f1)
cli=${VMCS_CLI:-}
if [ -z "$cli" ]; then
	cargo build --quiet --release --manifest-path userspace-tool/Cargo.toml -p vmcs \
		--target-dir build/host-target >&2
	cli=build/host-target/release/vmcs
fi

install -D -m 0644 "$module" "$DESTDIR/lib/modules/$release/extra/vmcs.ko"
install -D -m 0644 packaging/99-vmcs.rules "$DESTDIR/etc/udev/rules.d/99-vmcs.rules"
install -D -m 0644 packaging/80-vmcs-net.rules "$DESTDIR/etc/udev/rules.d/80-vmcs-net.rules"
install -D -m 0755 "$cli" "$DESTDIR$PREFIX/bin/vmcs"
install -D -m 0644 userspace-tool/include/vmcs.h "$DESTDIR$PREFIX/include/linux/vmcs.h"
if [ -z "$DESTDIR" ]; then
	depmod -a "$release" || log "depmod failed; run it by hand"
	getent group vmcs >/dev/null || log "note: create the group for the udev rule: groupadd --system vmcs"
fi
log "installed vmcs.ko for $release, the udev rule, $PREFIX/bin/vmcs and $PREFIX/include/linux/vmcs.h${DESTDIR:+ under $DESTDIR}"
