#!/usr/bin/env bash
# Paths a new user may have, checked for real; prints TAP (`make test` runs it as one step).
#
#   - a checkout whose path has spaces: a copy of this checkout (tracked and untracked,
#     not ignored, files: what you are testing is what you have) at
#     "/tmp/vmcs path.XXXXXX/checkout dir" builds vmcs.ko with `make` (kbuild cannot build
#     there: ci/build-module.sh builds a copy of the module's sources) and the initramfs;
#   - a VMCS_CACHE with a space, on another file system (/dev/shm), whose kbuild/, src/,
#     bin/ and venv/ are symlinks to the real cache: every script on the way from `make` to
#     a booted guest quotes the cache path, without rebuilding the kernel. A kernel build in
#     a cache at such a path (the kernel's build system refuses it) fails at once, and a
#     kernel tree whose cache was moved is not trusted;
#   - one doorbell scenario (basic, 2 guests) run from that checkout with --results deeper
#     than the 108 bytes of a unix socket path: the launcher keeps the doorbell server's
#     socket in a short private runtime folder and removes it afterwards.
#
# Cargo's build products of this checkout are copied into the copy first, so that only the
# workspace's own crates are compiled again there (~1-2 min in all, most of it the scenario).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
vmcs_toolchain_env

fail=0
ok() { echo "ok - path test: $1"; }
notok() { echo "not ok - path test: $1"; fail=1; }
check() { # check DESCRIPTION COMMAND...
	local d=$1
	shift
	if "$@"; then ok "$d"; else notok "$d"; fi
}

top=$(mktemp -d "/tmp/vmcs path.XXXXXX") || die "mktemp failed"
shmdir=/dev/shm
[ -d "$shmdir" ] && [ -w "$shmdir" ] || shmdir=$top
cache_top=$(mktemp -d "$shmdir/vmcs cache.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$top" "$cache_top"' EXIT
co="$top/checkout dir"
cache="$cache_top/cache dir"
log=$top/log
echo "# path test: checkout copy in '$co', VMCS_CACHE '$cache'"

# The copy of the checkout.
mkdir -p "$co"
if git -C "$VMCS_TOP" rev-parse --git-dir >/dev/null 2>&1; then
	git -C "$VMCS_TOP" ls-files -z --cached --others --exclude-standard |
		(cd "$VMCS_TOP" && tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$co"
else
	(cd "$VMCS_TOP" && tar --exclude=./build --exclude=./qemu-test/results --exclude=target -cf - .) |
		tar -xf - -C "$co"
fi
check "checkout copied to a path with spaces" test -f "$co/qemu-test/run.sh"
mkdir -p "$co/build/host-target"
[ -d "$VMCS_TOP/build/guest-target" ] && cp -a "$VMCS_TOP/build/guest-target" "$co/build/"
[ -d "$VMCS_TOP/build/host-target/release" ] && cp -a "$VMCS_TOP/build/host-target/release" "$co/build/host-target/"

# The cache with a space: the real cache's trees, through symlinks.
mkdir -p "$cache"
for d in kbuild src bin venv cargo-root; do
	[ -e "$VMCS_CACHE/$d" ] && ln -s "$(realpath "$VMCS_CACHE/$d")" "$cache/$d"
done

# `make` in the checkout with a space, as a user runs it (set-up check, cached kernel, vmcs.ko).
rm -f "$co/vmcs.ko"
if VMCS_CACHE=$cache make -C "$co" >"$log" 2>&1 && [ -f "$co/vmcs.ko" ]; then
	ok "make in a checkout with spaces builds vmcs.ko (VMCS_CACHE with a space)"
else
	notok "make in a checkout with spaces builds vmcs.ko (VMCS_CACHE with a space)"
	tail -n 20 "$log" | sed 's/^/# /'
fi
check "vmcs.ko was built from a copy of its sources (kbuild cannot build at that path)" \
	grep -q 'building vmcs.ko from a copy of its sources' "$log"
check "modinfo reads the module built there" test "$(modinfo -F name "$co/vmcs.ko" 2>/dev/null)" = vmcs

# The initramfs of that checkout, against the kernel in the cache with a space.
kdir=$(VMCS_CACHE=$cache "$co/ci/build-kernel.sh" 2>>"$log")
check "the cached kernel is found through the VMCS_CACHE with a space" test -f "$kdir/arch/x86/boot/bzImage"
initrd="$co/build/initramfs.cpio.gz"
if VMCS_CACHE=$cache "$co/qemu-test/mkinitramfs.sh" "$kdir" "$co/vmcs.ko" "$initrd" >>"$log" 2>&1; then
	ok "initramfs built in the checkout with spaces"
else
	notok "initramfs built in the checkout with spaces"
	tail -n 20 "$log" | sed 's/^/# /'
fi
check "the initramfs holds that checkout's vmcs.ko" \
	bash -c 'zcat "$1" | cpio -i --quiet --to-stdout lib/modules/vmcs.ko | cmp -s - "$2"' _ "$initrd" "$co/vmcs.ko"

# One doorbell scenario from that checkout, with a results folder deeper than sun_path.
results="$co/qemu-test/results/a-results-folder-deeper-than-the-108-bytes-of-a-unix-socket-path/basic doorbell 2"
len=$(printf %s "$results" | wc -c)
check "the results folder is $len bytes long (> 108)" test "$len" -gt 108
VMCS_CACHE=$cache VMCS_KERNEL="$kdir/arch/x86/boot/bzImage" VMCS_INITRD=$initrd \
	"$co/qemu-test/run.sh" --scenario basic --variant doorbell --guests 2 --results "$results" \
	>"$top/run.tap" 2>"$top/run.log"
rc=$?
sed -e 's/^ok - /ok - path test: /' -e 's/^not ok - /not ok - path test: /' "$top/run.tap"
grep -q '^not ok' "$top/run.tap" && fail=1
if [ "$rc" = 0 ]; then
	ok "basic doorbell 2 from the checkout with spaces and the deep results folder passed"
else
	notok "basic doorbell 2 from the checkout with spaces and the deep results folder passed (exit $rc)"
	tail -n 20 "$top/run.log" | sed 's/^/# /'
fi
rundir=$(sed -n 's/.*unix sockets in \(.*\)$/\1/p' "$top/run.log" | head -n1)
check "the sockets lived in a short private folder ($rundir)" \
	test -n "$rundir" -a "${#rundir}" -le 60
check "that folder was removed after the run" test ! -e "${rundir:-/nonexistent}"
check "no socket is left in the results folder" \
	test -z "$(find "$results" \( -type s -o -type l \) 2>/dev/null)"

# A kernel build in a cache whose real path has a space: refused at once, clearly.
fresh="$top/fresh cache"
if VMCS_CACHE=$fresh "$co/ci/fetch-kernel.sh" >/dev/null 2>"$top/fresh.log"; then
	notok "a kernel build in a VMCS_CACHE with a space is refused at once"
else
	check "a kernel build in a VMCS_CACHE with a space is refused at once, naming the cause" \
		grep -q "kbuild refuses a space" "$top/fresh.log"
fi
# A kernel tree whose cache was moved (its Makefile names the old place) is not trusted: it
# would be built again, here refused as above because the new place has a space.
key=$(basename "$kdir")
moved="$top/moved cache"
mkdir -p "$moved/kbuild/$key/arch/x86/boot"
ln -s "$(realpath "$VMCS_CACHE/src")" "$moved/src"
touch "$moved/kbuild/$key/.vmcs-built" "$moved/kbuild/$key/arch/x86/boot/bzImage" "$moved/kbuild/$key/Module.symvers"
cp "$kdir/Makefile" "$moved/kbuild/$key/Makefile"
if VMCS_CACHE=$moved "$co/ci/build-kernel.sh" >/dev/null 2>"$top/moved.log"; then
	notok "a kernel tree moved from another place is not reused"
else
	check "a kernel tree moved from another place is not reused" \
		grep -q "was built at another path" "$top/moved.log"
fi

exit "$fail"
