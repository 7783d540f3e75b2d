#!/usr/bin/env bash
# Prepare a Rust-complete build tree for one of Debian's stock kernels, cached.
#
#   ci/debian-kernel.sh [auto|newest|running|RELEASE]     (default: $VMCS_DEBIAN_KERNEL or auto)
#
#   auto     the running kernel when it is a Debian kernel with CONFIG_RUST=y, else newest
#   newest   the newest 7.2.x amd64 kernel that Debian sid / trixie-backports offers
#   running  the running kernel (uname -r); it must be a Debian Rust-enabled one
#   RELEASE  e.g. 7.2.13+deb14-amd64
#
# Debian's linux-headers packages ship no Rust metadata (no rust/*.rmeta, no
# scripts/target.json), so no out-of-tree Rust module builds against them as packaged.
# This script makes the missing pieces with Debian's own toolchain: a debootstrap chroot
# with the rustc, rust-src and bindgen the kernel was built with (the rustc must match
# exactly, or the module's Rust symbol names do not match the kernel's), the same
# linux-source version with Debian's config, `make modules_prepare` and `make rust/`, and
# the headers package's Module.symvers.
#
# Prints the cache entry on stdout, $VMCS_CACHE/distro/<release>_<version>_rustc-<v>/:
#   root/              the chroot; root/kbuild is the prepared tree (O= of root/usr/src/linux)
#   boot/vmlinuz       the kernel image from the linux-image (linux-binary) package
#   boot/config        Debian's config of it
#   boot/gen_init_cpio the kernel's initramfs builder, built for the host
#   env                RELEASE, VERSION, RUSTC, GCC, SUITE, HEADERS (the unpacked
#                      linux-headers package, as packaged: no Rust metadata): shell assignments
# Everything is written under one flock ($VMCS_CACHE/distro/.lock). Needs root (or sudo)
# for debootstrap and chroot, and network access to deb.debian.org on the first run.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

sel=${1:-${VMCS_DEBIAN_KERNEL:-auto}}
base="$VMCS_CACHE/distro"
apt_dir="$base/apt"
mirror=${VMCS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$base"

# The running kernel, when it is a Debian kernel built with CONFIG_RUST=y.
running_debian_rust() {
	local r
	r=$(uname -r)
	grep -qx 'CONFIG_RUST=y' "/boot/config-$r" 2>/dev/null || return 1
	dpkg-query -W -f='${Version}' "linux-image-$r" >/dev/null 2>&1 || return 1
	echo "$r"
}
case "$sel" in
auto) sel=$(running_debian_rust) || sel=newest ;;
running)
	r=$(uname -r)
	sel=$(running_debian_rust) || die "the running kernel $r is not a Debian kernel with CONFIG_RUST=y (/boot/config-$r, package linux-image-$r); use newest or a RELEASE such as 7.2.13+deb14-amd64"
	;;
esac

# A ready entry: reused without touching the network (VMCS_REFRESH_DISTRO=1 looks again).
ready_entry() { # ready_entry RELEASE|newest
	local pat=$1
	[ "$pat" = newest ] && pat="$VMCS_KSERIES.*-amd64"
	ls -d "$base"/${pat}_*/.vmcs-ready 2>/dev/null | sort -V | tail -n1 | xargs -r dirname
}
report() {
	# shellcheck disable=SC1091
	. "$1/env"
	log "Debian kernel $RELEASE (package version $VERSION, rustc $RUSTC, $GCC): cached in $1"
	echo "$1"
	exit 0
}
if [ -z "${VMCS_REFRESH_DISTRO:-}" ]; then
	e=$(ready_entry "$sel" || true)
	[ -z "$e" ] || report "$e"
fi

exec 9>"$base/.lock"
if ! flock -n 9; then
	log "another run is preparing a Debian kernel tree; waiting for it"
	flock 9
fi
if [ -z "${VMCS_REFRESH_DISTRO:-}" ]; then
	e=$(ready_entry "$sel" || true)
	[ -z "$e" ] || report "$e"
fi
if ! command -v debootstrap >/dev/null; then
	log "installing debootstrap (Debian package)"
	as_root apt-get install -y -qq debootstrap >&2 || die "debootstrap is needed: apt-get install debootstrap"
fi
for t in debootstrap chroot unshare dpkg-deb; do
	command -v "$t" >/dev/null || die "$t is needed (ci/setup-deps.sh installs debootstrap; the rest is in every Debian)"
done

# A private apt configuration (as in ci/fetch-kernel.sh): the host's sources, lists and
# cache are never touched.
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
cat >"$apt_dir/sources.list" <<EOF
deb [trusted=yes] $mirror sid main
deb [trusted=yes] $mirror trixie-backports main
deb [trusted=yes] $mirror trixie main
EOF
touch "$apt_dir/status"
APT=(-o Dir::Etc::sourcelist="$apt_dir/sources.list" -o Dir::Etc::sourceparts=/nonexistent
	-o Dir::State::Lists="$apt_dir/lists" -o Dir::State::status="$apt_dir/status"
	-o Dir::Cache="$apt_dir/cache" -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false
	-o APT::Get::List-Cleanup=false -o Debug::NoLocking=true -o APT::Sandbox::User=root)
# trixie main: the rustc that trixie-backports kernels are built with.
log "updating private apt lists (sid, trixie-backports, trixie)"
apt-get "${APT[@]}" update -qq >&2
# madison PACKAGE: "version suite" lines, newest first.
madison() { apt-cache "${APT[@]}" madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); split($3,s," "); sub(/\/.*/,"",s[2]); print $2, s[2]}' | sort -V -r -k1,1; }

if [ "$sel" = newest ]; then
	sel=$(apt-cache "${APT[@]}" pkgnames "linux-image-$VMCS_KSERIES." |
		grep -E "^linux-image-$VMCS_KSERIES\.[0-9]+\+deb[0-9]+-amd64\$" | sed 's/^linux-image-//' | sort -V | tail -n1)
	[ -n "$sel" ] || die "Debian (sid, trixie-backports) offers no linux-image-$VMCS_KSERIES.*-amd64"
	log "newest Debian $VMCS_KSERIES.x amd64 kernel offered: $sel"
fi
release=$sel
read -r version suite < <(madison "linux-image-$release" | head -n1) || true
[ -n "${version:-}" ] || die "Debian (sid, trixie-backports) does not offer linux-image-$release; the packages of an older kernel leave the archive when a new one arrives: upgrade to the current one (apt install linux-image-amd64) or pick one with ci/debian-kernel.sh newest"
log "Debian kernel $release: package version $version ($suite)"

# The kernel's packages: image (linux-image, and linux-binary where the image is split
# out), linux-base (config), headers (Module.symvers).
dl="$base/debs/${release}_$version"
mkdir -p "$dl"
pkgs=("linux-image-$release" "linux-headers-$release")
# linux-modules: the modules vmcs.ko needs (lib/crypto), for the initramfs
# (qemu-test/prepare-debian.sh).
for p in "linux-binary-$release" "linux-base-$release" "linux-modules-$release"; do
	madison "$p" | grep -q "^$version " && pkgs+=("$p")
done
need=()
for p in "${pkgs[@]}"; do
	ls "$dl/${p}_"*.deb >/dev/null 2>&1 || need+=("$p=$version")
done
if [ ${#need[@]} -gt 0 ]; then
	log "downloading ${need[*]}"
	(cd "$dl" && apt-get "${APT[@]}" download "${need[@]}" >&2) ||
		die "could not download ${need[*]} (missing headers or image in the archive?)"
fi
rm -rf "$dl/x"
for d in "$dl"/*.deb; do dpkg-deb -x "$d" "$dl/x"; done
first() { for f; do if [ -f "$f" ]; then echo "$f"; return; fi; done; }
vmlinuz=$(first "$dl/x/boot/vmlinuz-$release" "$dl/x/usr/lib/modules/$release/vmlinuz")
hdr="$dl/x/usr/src/linux-headers-$release"
# The headers' .config is the one the kernel was built with (/boot's lacks the signing keys).
config=$(first "$hdr/.config" "$dl/x/boot/config-$release" "$dl/x/usr/lib/modules/$release/config")
[ -n "$vmlinuz" ] || die "no vmlinuz in ${pkgs[*]}"
[ -n "$config" ] || die "no config for $release in ${pkgs[*]}"
[ -f "$hdr/Module.symvers" ] || die "missing headers: linux-headers-$release has no Module.symvers ($hdr)"

# Clear failures before anything is built.
grep -qx 'CONFIG_RUST=y' "$config" ||
	die "kernel $release has no CONFIG_RUST=y: vmcs is a Rust module and cannot load into it. Debian's $VMCS_KSERIES amd64 kernels have it; otherwise build a Rust-enabled kernel and use make KDIR=<its build tree>"
rustc_text=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT="\(.*\)"/\1/p' "$config")
rustc_v=$(awk '{print $2}' <<<"$rustc_text")
bindgen_v=$(sed -n 's/^CONFIG_BINDGEN_VERSION_TEXT="bindgen \(.*\)"/\1/p' "$config")
gcc=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\([^ ]*\) .*/\1/p' "$config")
[ -n "$rustc_v" ] && [ -n "$gcc" ] || die "cannot read the compiler versions from $config"
log "kernel $release was built with $rustc_text, bindgen $bindgen_v, $gcc"
# Debian's rustc whose upstream version is exactly the kernel's; its suite decides the chroot.
rustc_deb=""
while read -r v s; do
	u=${v#*:}
	if [ "${u%%+*}" = "$rustc_v" ]; then rustc_deb=$v; rsuite=$s; break; fi
done < <(madison rustc)
if [ -z "$rustc_deb" ]; then
	die "rustc mismatch: kernel $release was built with rustc $rustc_v, but Debian (sid, trixie, trixie-backports) offers rustc $(madison rustc | awk '{print $1}' | tr '\n' ' '). A module built with another rustc cannot link to the kernel's Rust symbols. Fix: use the kernel that matches today's rustc (ci/debian-kernel.sh newest; apt install linux-image-amd64 from sid), or install the matching rustc $rustc_v and rust-src in a chroot yourself"
fi
case "$rsuite" in
sid | unstable) csuite=sid ;;
trixie | trixie-backports) csuite=trixie ;;
*) die "rustc $rustc_deb comes from $rsuite, which this script does not know how to debootstrap" ;;
esac
log "Debian rustc $rustc_deb ($rsuite) matches; chroot suite $csuite"

key="${release}_${version}_rustc-$rustc_v"
out="$base/$key"
[ ! -f "$out/.vmcs-ready" ] || report "$out"
start=$(date +%s)
as_root rm -rf "$out"
mkdir -p "$out/boot"
root="$out/root"

log "debootstrap --variant=minbase $csuite into $root (about half a minute)"
as_root debootstrap --variant=minbase "$csuite" "$root" "$mirror" >"$out/debootstrap.log" 2>&1 ||
	{ tail -n 20 "$out/debootstrap.log" >&2; die "debootstrap failed (log: $out/debootstrap.log)"; }
log "debootstrap done ($(($(date +%s) - start)) s so far)"
# No fsync per file in dpkg: the chroot is a cache, rebuilt if anything goes wrong.
as_root sh -c "echo force-unsafe-io >'$root/etc/dpkg/dpkg.cfg.d/99vmcs'"
as_root sh -c "echo 'Acquire::Check-Valid-Until \"false\";' >'$root/etc/apt/apt.conf.d/99vmcs'
	echo 'APT::Install-Recommends \"false\";' >>'$root/etc/apt/apt.conf.d/99vmcs'"
if [ "$csuite" = trixie ]; then
	# The kernel's linux-source (and maybe its rustc) come from backports; versions are pinned.
	as_root sh -c "echo 'deb $mirror trixie-backports main' >'$root/etc/apt/sources.list.d/backports.list'"
	bpo=()
	[ "$rsuite" != trixie-backports ] || bpo=(-t trixie-backports)
else
	bpo=()
fi
# python3 (resolve_btfids), pahole and openssl: without them olddefconfig changes the config.
cpkgs=(make "$gcc" libc6-dev flex bison bc libelf-dev libssl-dev openssl pahole python3 kmod cpio xz-utils
	"rustc=$rustc_deb" "rust-src=$rustc_deb" bindgen libclang-dev)
# The kernel source: the test kernel's unpacked linux-source (ci/fetch-kernel.sh) when it is
# the same version, hard-linked (seconds; the O= build never writes into it); else Debian's
# linux-source package, unpacked in the chroot.
shared="$VMCS_CACHE/src/linux-source-$version"
if grep -qx "linux-source-$VMCS_KSERIES $version" "$shared/.vmcs-complete" 2>/dev/null; then
	src_from=$shared
else
	src_from=""
	cpkgs+=("linux-source-$VMCS_KSERIES=$version")
fi
case "$gcc" in x86_64-linux-gnu-gcc-*) cpkgs[1]="gcc-${gcc##*-}" ;; esac
log "installing the toolchain in the chroot: ${cpkgs[*]}"
vmcs_chroot "$root" "" "" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/var/log/vmcs-apt.log 2>&1 && apt-get clean || { tail -n 30 /var/log/vmcs-apt.log; exit 1; }' \
	sh "${bpo[@]}" "${cpkgs[@]}" >&2 || die "installing ${cpkgs[*]} in the chroot failed"
got=$(vmcs_chroot "$root" "" "" rustc --version)
[ "$(awk '{print $2}' <<<"$got")" = "$rustc_v" ] || die "rustc mismatch: the chroot has '$got', the kernel wants $rustc_text"
gotb=$(vmcs_chroot "$root" "" "" bindgen --version | awk '{print $2}')
[ "$gotb" = "$bindgen_v" ] || log "note: the chroot's bindgen is $gotb, the kernel's $bindgen_v (bindgen output does not enter symbol names)"

log "toolchain installed ($(($(date +%s) - start)) s so far)"
if [ -n "$src_from" ]; then
	log "linux-source-$VMCS_KSERIES $version: hard-linking the unpacked tree $src_from"
	as_root cp -al "$src_from" "$root/usr/src/linux"
else
	log "unpacking linux-source-$VMCS_KSERIES $version in the chroot"
fi
mk=(make -C /usr/src/linux O=/kbuild ARCH=x86 CROSS_COMPILE=x86_64-linux-gnu- CC="$gcc" KERNELRELEASE="$release" -j"$(nproc)")
as_root cp "$config" "$root/.vmcs-config"
as_root cp "$hdr/Module.symvers" "$root/.vmcs-symvers"
vmcs_chroot "$root" "" "" sh -ec '
	mkdir -p /usr/src/linux /kbuild
	t=/usr/src/linux-source-'"$VMCS_KSERIES"'.tar.xz
	if [ -f "$t" ]; then tar -xJf "$t" -C /usr/src/linux --strip-components=1; rm "$t"; fi
	cp /.vmcs-config /kbuild/.config
	"$@" -s olddefconfig
	cmp -s /.vmcs-config /kbuild/.config || { echo "config changed by olddefconfig:"; diff /.vmcs-config /kbuild/.config | head -n 40; exit 1; }
	grep -qx CONFIG_RUST=y /kbuild/.config
	"$@" -s modules_prepare
	echo "[vmcs] modules_prepare done"
	"$@" -s rust/
	cp /.vmcs-symvers /kbuild/Module.symvers
	test -f /kbuild/rust/libkernel.rmeta
	test -f /kbuild/scripts/target.json
	test "$(cat /kbuild/include/config/kernel.release)" = "'"$release"'"' sh "${mk[@]}" >&2 ||
	die "preparing the tree in $root/kbuild failed (see above)"

cp "$vmlinuz" "$out/boot/vmlinuz"
cp "$config" "$out/boot/config"
${CC:-cc} -O2 -o "$out/boot/gen_init_cpio" "$root/usr/src/linux/usr/gen_init_cpio.c"
cat >"$out/env" <<EOF
RELEASE=$release
VERSION=$version
RUSTC=$rustc_v
GCC=$gcc
SUITE=$csuite
HEADERS=$hdr
EOF
touch "$out/.vmcs-ready"
log "Debian kernel tree $release prepared in $(($(date +%s) - start)) s"
report "$out"
