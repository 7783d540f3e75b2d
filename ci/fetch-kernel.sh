#!/usr/bin/env bash
# Fetch and unpack the kernel source of the pinned series from Debian's
# linux-source package, through a private apt configuration: the host's own
# apt sources, lists and cache are never touched.
#
# Prints the path of the unpacked source tree on stdout.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

apt_dir="$VMCS_CACHE/apt"
src_root="$VMCS_CACHE/src"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$src_root"

# Reuse an unpacked tree when one of the series is already there and complete.
existing=$(ls -d "$src_root"/linux-source-"$VMCS_KSERIES".*/.vmcs-complete 2>/dev/null | sort -V | tail -n1 || true)
if [ -n "$existing" ] && [ -z "${VMCS_REFRESH_KERNEL:-}" ]; then
	tree=$(dirname "$existing")
	log "kernel source: $(cat "$existing") (cached in $tree)"
	echo "$tree"
	exit 0
fi

cat >"$apt_dir/sources.list" <<EOF
deb [trusted=yes] http://deb.debian.org/debian sid main
deb [trusted=yes] http://deb.debian.org/debian trixie-backports main
EOF
touch "$apt_dir/status"
APT=(-o Dir::Etc::sourcelist="$apt_dir/sources.list"
	-o Dir::Etc::sourceparts=/nonexistent
	-o Dir::State::Lists="$apt_dir/lists"
	-o Dir::State::status="$apt_dir/status"
	-o Dir::Cache="$apt_dir/cache"
	-o Acquire::Check-Valid-Until=false
	-o Acquire::Check-Date=false
	-o APT::Get::List-Cleanup=false
	-o Debug::NoLocking=true
	-o APT::Sandbox::User=root)

log "updating private apt lists (sid, trixie-backports)"
apt-get "${APT[@]}" update -qq >&2

pkg=linux-source-$VMCS_KSERIES
versions=$(apt-cache "${APT[@]}" madison "$pkg" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' | sort -V -r)
[ -n "$versions" ] || die "no $pkg package is offered by sid or trixie-backports"

want=""
if [ -n "$VMCS_KVERSION_PINNED" ] && grep -qx -- "$VMCS_KVERSION_PINNED" <<<"$versions"; then
	want=$VMCS_KVERSION_PINNED
	log "using the recorded kernel version $want"
else
	want=$(head -n1 <<<"$versions")
	[ -z "$VMCS_KVERSION_PINNED" ] || log "recorded version $VMCS_KVERSION_PINNED is gone; falling back"
	log "using the newest $VMCS_KSERIES.x available: $want"
fi

workdir=$(mktemp -d "$VMCS_CACHE/fetch.XXXXXX")
trap 'rm -rf "$workdir"' EXIT
(cd "$workdir" && apt-get "${APT[@]}" download "$pkg=$want" >&2)
deb=$(ls "$workdir"/*.deb)
dpkg-deb -x "$deb" "$workdir/x"
tarball=$(ls "$workdir"/x/usr/src/linux-source-*.tar.xz)

tree="$src_root/linux-source-$want"
rm -rf "$tree"
mkdir -p "$tree"
log "unpacking $(basename "$tarball")"
tar -xJf "$tarball" -C "$tree" --strip-components=1
echo "$pkg $want" >"$tree/.vmcs-complete"
log "kernel source: $pkg $want"
echo "$tree"
