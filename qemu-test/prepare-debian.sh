#!/usr/bin/env bash
# The guests of `run.sh --kernel debian`: Debian's stock vmlinuz (ci/debian-kernel.sh), the
# vmcs.ko built for it in the chroot (ci/debian-module.sh) and the test initramfs with that
# vmcs.ko. Prints shell assignments of VMCS_KERNEL, VMCS_INITRD and VMCS_DEBIAN_RELEASE for
# `eval`. The kernel is chosen as in ci/debian-kernel.sh ($VMCS_DEBIAN_KERNEL, default newest
# here: the host's own kernel is not what the guests boot).
#
# PCI, MSI/MSI-X, devtmpfs and the 8250 serial console are built into Debian's kernel, but
# lib/crypto's ChaCha20-Poly1305 and Curve25519 (per-connection encryption,
# docs/security.md) are modules there: `modinfo -F depends vmcs.ko` names them. The
# initramfs carries those and what they depend on, from the linux-image package that
# ci/debian-kernel.sh unpacked, decompressed, with /lib/modules/deps.order listing them
# dependencies first (the scenarios' load_vmcs insmods them before vmcs.ko). The
# test-control virtio-net links of run.sh stay unconfigured (virtio_net is a module there);
# the distro scenario does not use them.
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"
sel=${VMCS_DEBIAN_KERNEL:-newest}
entry=$("$VMCS_TOP/ci/debian-kernel.sh" "$sel")
module=$("$VMCS_TOP/ci/debian-module.sh" "$sel")
# shellcheck disable=SC1091
. "$entry/env"
initrd="$(dirname "$module")/initramfs.cpio.gz"

# The modules vmcs.ko depends on, in load order (modules.dep's, from each one's depends),
# from the linux-modules package (ci/debian-kernel.sh downloads it with the image; an entry
# prepared before that gets it here, with the same private apt configuration).
dl="$VMCS_CACHE/distro/debs/${RELEASE}_$VERSION"
find_mods() {
	mods=""
	for d in "$dl/x/usr/lib/modules/$RELEASE" "$dl/x/lib/modules/$RELEASE"; do
		if [ -d "$d/kernel" ]; then mods=$d; return; fi
	done
}
find_mods
if [ -z "$mods" ] && [ -n "$(modinfo -F depends "$module")" ]; then
	a="$VMCS_CACHE/distro/apt"
	apt=(-o Dir::Etc::sourcelist="$a/sources.list" -o Dir::Etc::sourceparts=/nonexistent
		-o Dir::State::Lists="$a/lists" -o Dir::State::status="$a/status"
		-o Dir::Cache="$a/cache" -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false
		-o APT::Get::List-Cleanup=false -o Debug::NoLocking=true -o APT::Sandbox::User=root)
	log "downloading linux-modules-$RELEASE=$VERSION (the modules vmcs.ko needs)"
	mkdir -p "$dl"
	(cd "$dl" && apt-get "${apt[@]}" download "linux-modules-$RELEASE=$VERSION" >&2) ||
		die "could not download linux-modules-$RELEASE=$VERSION"
	dpkg-deb -x "$dl/linux-modules-${RELEASE}_"*.deb "$dl/x"
	find_mods
fi
depdir="$(dirname "$module")/deps"
rm -rf "$depdir"
mkdir -p "$depdir"
declare -A path=() seen=()
order=()
if [ -n "$mods" ]; then
	while IFS= read -r f; do
		n=$(basename "$f")
		n=${n%.xz}; n=${n%.zst}; n=${n%.gz}; n=${n%.ko}
		path[${n//-/_}]=$f
	done < <(find "$mods/kernel" -name '*.ko*')
fi
visit() { # visit NAME: its dependencies, then itself, into order
	local n=${1//-/_} d
	[ -z "${seen[$n]:-}" ] || return 0
	seen[$n]=1
	[ -n "${path[$n]:-}" ] || die "vmcs.ko needs module $1, which is not in linux-image-$RELEASE (unpacked in ${mods:-nowhere})"
	for d in $(modinfo -F depends "${path[$n]}" | tr ',' ' '); do visit "$d"; done
	order+=("$n")
}
for d in $(modinfo -F depends "$module" | tr ',' ' '); do visit "$d"; done
extra=()
for n in "${order[@]}"; do
	f=${path[$n]}
	case "$f" in
	*.xz) xz -dc "$f" >"$depdir/$n.ko" ;;
	*.zst) zstd -q -dc "$f" >"$depdir/$n.ko" ;;
	*.gz) gzip -dc "$f" >"$depdir/$n.ko" ;;
	*) cp "$f" "$depdir/$n.ko" ;;
	esac
	extra+=("$depdir/$n.ko")
done
if [ ${#order[@]} -gt 0 ]; then
	printf '%s\n' "${order[@]}" >"$depdir/deps.order"
	extra+=("$depdir/deps.order")
	log "vmcs.ko needs Debian's modules ${order[*]} (loaded in that order)"
fi
VMCS_GEN_INIT_CPIO="$entry/boot/gen_init_cpio" "$VMCS_TOP/qemu-test/mkinitramfs.sh" "" "$module" "$initrd" \
	"${extra[@]}"
printf 'export VMCS_KERNEL=%q VMCS_INITRD=%q VMCS_DEBIAN_RELEASE=%q\n' "$entry/boot/vmlinuz" "$initrd" "$RELEASE"
