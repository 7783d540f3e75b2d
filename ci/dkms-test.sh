#!/usr/bin/env bash
# The DKMS packaging, for real: `dkms add`, `dkms build` and `dkms install` of vmcs with the
# project's dkms.conf against a Rust-enabled kernel tree ($KDIR, default the cached test
# kernel), with every DKMS tree in a temporary folder, so nothing on the host changes
# (no /usr/src, /var/lib/dkms or /lib/modules). KDIR=debian: Debian's stock kernel, whose
# packaged headers lack the Rust metadata (dkms.conf's PRE_BUILD prepares it). Checks that dkms built vmcs.ko, that its
# vermagic is the kernel's, its version dkms.conf's, and that `dkms install` put it in the
# (temporary) module tree.
#
#   ci/dkms-test.sh [KEEP_DIR]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
vmcs_toolchain_env
cd "$VMCS_TOP"
command -v dkms >/dev/null || die "dkms is needed (ci/setup-deps.sh installs it)"

kdir=${KDIR:-}
if [ "$kdir" = debian ]; then
	# Debian's stock kernel: dkms gets the linux-headers package as packaged (no Rust
	# metadata), so dkms.conf's PRE_BUILD must prepare the tree (ci/debian-kernel.sh, cached)
	# and MAKE must build in the chroot (packaging/dkms-make.sh).
	entry=$(ci/debian-kernel.sh "${VMCS_DEBIAN_KERNEL:-newest}")
	# shellcheck disable=SC1091
	. "$entry/env"
	release=$RELEASE
	kdir=$HEADERS
	[ ! -e "$kdir/rust/libkernel.rmeta" ] || die "$kdir has Rust metadata: not the packaged headers"
	ref_build=(ci/debian-module.sh "$release")
else
	[ -n "$kdir" ] || kdir=$(ci/build-kernel.sh)
	release=$(make -s -C "$kdir" kernelrelease)
	ref_build=(env KDIR="$kdir" ci/build-module.sh)
fi
name=$(sed -n 's/^PACKAGE_NAME="\(.*\)"/\1/p' dkms.conf)
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' dkms.conf)
[ -n "$name" ] && [ -n "$version" ] || die "dkms.conf has no PACKAGE_NAME/PACKAGE_VERSION"

t=${1:-$(mktemp -d /tmp/vmcs-dkms.XXXXXX)}
[ -n "${1:-}" ] || trap 'rm -rf "$t"' EXIT
rm -rf "$t/src" "$t/dkms" "$t/modules"
# What a user copies to /usr/src/vmcs-<version> (README.md, "DKMS").
src="$t/src/$name-$version"
mkdir -p "$src/rust" "$t/dkms" "$t/modules/$release"
mkdir -p "$src/ci" "$src/packaging"
cp -r dkms.conf Kbuild module "$src/"
cp ci/lib.sh ci/debian-kernel.sh ci/debian-module.sh "$src/ci/"
cp packaging/dkms-make.sh "$src/packaging/"
cp -r rust/src "$src/rust/"
find "$src" \( -name '*.o' -o -name '.*.cmd' -o -name '.*.d' -o -name '*.ko' -o -name '*.mod' -o -name '*.mod.c' \) -delete

trees=(--dkmstree "$t/dkms" --sourcetree "$t/src" --installtree "$t/modules")
kargs=(-k "$release" --kernelsourcedir "$kdir")
echo "== dkms $(dkms --version | sed 's/^dkms-//'), kernel $release at $kdir, trees under $t"
dkms add "$name/$version" "${trees[@]}"
dkms build "$name/$version" "${trees[@]}" "${kargs[@]}" ||
	{ cat "$t/dkms/$name/$version/build/make.log" 2>/dev/null; exit 1; }
built=$(find "$t/dkms/$name/$version/$release" -name "$name.ko" | head -n1)
[ -n "$built" ] || die "dkms build left no $name.ko"
echo "built: $built"

# The vermagic must be the kernel's: its release, then the same flags a module built in the
# kernel tree carries (ci/build-module.sh's build, against the same tree).
vermagic=$(modinfo -F vermagic "$built")
echo "vermagic: $vermagic"
[ "${vermagic%% *}" = "$release" ] || die "vermagic '$vermagic' is not for $release"
ref=$("${ref_build[@]}" 2>/dev/null)
[ "$vermagic" = "$(modinfo -F vermagic "$ref")" ] ||
	die "vermagic differs from ci/build-module.sh's: '$(modinfo -F vermagic "$ref")'"
[ "$(modinfo -F name "$built")" = "$name" ] || die "modinfo name is not $name"
[ "$(modinfo -F version "$built")" = "$version" ] ||
	die "modinfo version '$(modinfo -F version "$built")' is not dkms.conf's $version"
modinfo -F license "$built" | grep -q GPL || die "no GPL license in modinfo"

# `dkms install` into the temporary module tree (it wants root; a user namespace does).
run_root=()
[ "$(id -u)" = 0 ] || run_root=(unshare -r)
"${run_root[@]}" dkms install "$name/$version" "${trees[@]}" "${kargs[@]}" --no-depmod
installed=$(find "$t/modules/$release" -name "$name.ko*" | head -n1)
[ -n "$installed" ] || die "dkms install put no $name.ko under $t/modules/$release"
echo "installed: $installed"
cmp "$built" "$installed"
dkms status "${trees[@]}" | tee "$t/status"
grep -q "^$name/$version, $release, .*: installed" "$t/status" || die "dkms status does not say installed"
echo "dkms test passed"
