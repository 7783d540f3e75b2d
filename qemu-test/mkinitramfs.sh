#!/usr/bin/env bash
# Build the test guests' initramfs: busybox-static, vmcs.ko, static musl builds of the
# guest programs, the init and the scenarios. Uses the kernel's own gen_init_cpio, so no
# root is needed for device nodes.
#
#   mkinitramfs.sh KDIR MODULE OUT [EXTRA.ko...]
#
# EXTRA modules go to /lib/modules/ beside vmcs.ko (the sanitizer kernel's self-test module).
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"
kdir=$1
module=$2
out=$3
shift 3

busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" 2>/dev/null | grep -q 'statically linked' || busybox=/bin/busybox
[ -x "$busybox" ] || die "busybox-static is needed (ci/setup-deps.sh installs it)"

log "building static guest programs (x86_64-unknown-linux-musl)"
target_dir="$VMCS_TOP/build/guest-target"
vmcs_cargo_seed "$target_dir"
bins=()
for manifest in "$VMCS_TOP/qemu-test/guest-tools/Cargo.toml"; do
	cargo build --quiet --release --target x86_64-unknown-linux-musl \
		--manifest-path "$manifest" --target-dir "$target_dir" >&2
done
# The vmcs CLI, as users run it in guests.
cargo build --quiet --release --target x86_64-unknown-linux-musl -p vmcs \
	--manifest-path "$VMCS_TOP/userspace-tool/Cargo.toml" --target-dir "$target_dir" >&2
# The echo examples (userspace-tool/vmcs/examples/echo.rs, userspace-tool/examples/c/echo.c)
# as vmcs-echo-rs and vmcs-echo-c, run between guests by the cli scenario.
cargo build --quiet --release --target x86_64-unknown-linux-musl -p vmcs --example echo \
	--manifest-path "$VMCS_TOP/userspace-tool/Cargo.toml" --target-dir "$target_dir" >&2
mkdir -p "$target_dir/examples"
cp "$target_dir/x86_64-unknown-linux-musl/release/examples/echo" "$target_dir/examples/vmcs-echo-rs"
${CC:-cc} -static -O2 -Wall -Wextra -Werror -std=gnu11 -I "$VMCS_TOP/userspace-tool/include" \
	-o "$target_dir/examples/vmcs-echo-c" "$VMCS_TOP/userspace-tool/examples/c/echo.c"
bins+=("$target_dir/examples/vmcs-echo-rs" "$target_dir/examples/vmcs-echo-c")
for b in "$target_dir"/x86_64-unknown-linux-musl/release/*; do
	[ -f "$b" ] && [ -x "$b" ] && bins+=("$b")
done
# Guest-side builds of the userspace tool, when the workspace has guest binaries.
for extra in "${VMCS_GUEST_BINS[@]:-}"; do
	[ -n "$extra" ] && bins+=("$extra")
done

# VMCS_GEN_INIT_CPIO: a prebuilt one (a distro kernel tree prepared without building usr/).
gen=${VMCS_GEN_INIT_CPIO:-$kdir/usr/gen_init_cpio}
[ -x "$gen" ] || die "$gen is missing; is $kdir a built kernel tree?"
list=$(mktemp)
trap 'rm -f "$list"' EXIT
{
	for d in /bin /sbin /usr /usr/bin /usr/sbin /dev /proc /sys /tmp /run /lib /lib/modules /scenarios /etc; do
		echo "dir $d 755 0 0"
	done
	echo "nod /dev/console 600 0 0 c 5 1"
	echo "nod /dev/null 666 0 0 c 1 3"
	echo "file /bin/busybox $busybox 755 0 0"
	echo "slink /bin/sh busybox 777 0 0"
	echo "file /init $VMCS_TOP/qemu-test/init 755 0 0"
	echo "file /lib/modules/vmcs.ko $module 644 0 0"
	for m in "$@"; do
		echo "file /lib/modules/$(basename "$m") $m 644 0 0"
	done
	for s in "$VMCS_TOP"/qemu-test/scenarios/*.sh; do
		echo "file /scenarios/$(basename "$s") $s 644 0 0"
	done
	for b in "${bins[@]}"; do
		echo "file /bin/$(basename "$b") $b 755 0 0"
	done
} >"$list"
"$gen" "$list" | gzip -1 >"$out"
log "initramfs: $out ($(du -h "$out" | cut -f1), ${#bins[@]} guest programs)"
