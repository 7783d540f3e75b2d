#!/usr/bin/env bash
# Build the Rust-enabled test guest kernel, cached outside the repository and
# keyed by kernel version and config fragment hash.
#
#   build-kernel.sh           the test kernel: qemu-test/kernel.config (debug checks on)
#   build-kernel.sh --bench   the bench kernel: kernel.config with qemu-test/kernel-bench.config
#                             on top (production configuration), cached under its own key
#   build-kernel.sh --sanitize  the sanitizer kernel: kernel.config with
#                             qemu-test/kernel-sanitize.config on top (KASAN, KFENCE, kmemleak,
#                             UBSAN, ...), built with clang-$VMCS_SANITIZE_LLVM (KASAN with Rust
#                             needs clang), cached under its own key
#
# Prints the build directory (usable as KDIR=) on stdout; bzImage is in
# $dir/arch/x86/boot/bzImage.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
vmcs_toolchain_env

flavour="test"
case "${1:-}" in
"") ;;
--bench) flavour=bench ;;
--sanitize) flavour=sanitize ;;
*) die "usage: $0 [--bench|--sanitize]" ;;
esac

src=$("$VMCS_TOP/ci/fetch-kernel.sh")
version=$(awk '{print $2}' "$src/.vmcs-complete")
frag="$VMCS_TOP/qemu-test/kernel.config"
rustv=$(rustc --version | awk '{print $2}')
# The C compiler: gcc (LLVM= empty) for the test and bench kernels, clang for the sanitizer
# kernel. It is recorded in the tree (.vmcs-make-args), so that ci/build-module.sh builds
# modules with the same one.
llvm=""
if [ "$flavour" = test ]; then
	key="$version-$(cat "$frag" | sha256sum | cut -c1-12)-$rustv"
else
	# The composed fragment: kernel.config without the options the flavour's fragment names,
	# then that fragment. Its text (and, for clang, the compiler's version) is the key.
	over="$VMCS_TOP/qemu-test/kernel-$flavour.config"
	opt_of='{ o = ""; if ($0 ~ /^CONFIG_[A-Za-z0-9_]*=/) { o = $0; sub(/=.*/, "", o) }
		else if ($0 ~ /^# CONFIG_[A-Za-z0-9_]* is not set/) o = $2 }'
	composed=$(awk "$opt_of"' FNR == NR { if (o != "") named[o] = 1; next }
		o == "" || !(o in named)' "$over" "$frag"; grep -E '^(CONFIG_|# CONFIG_)' "$over")
	keytext=$composed
	if [ "$flavour" = sanitize ]; then
		llvm=-$VMCS_SANITIZE_LLVM
		command -v "clang$llvm" >/dev/null && command -v "ld.lld$llvm" >/dev/null ||
			die "the sanitizer kernel needs clang$llvm, lld$llvm and llvm$llvm (ci/setup-deps.sh installs them)"
		# bindgen must parse the kernel's clang flags: use that clang's own libclang.
		LIBCLANG_PATH=$("llvm-config$llvm" --libdir)
		export LIBCLANG_PATH
		keytext+=$'\n'$("clang$llvm" --version | head -n1)
	fi
	key="$version-$flavour-$(printf '%s\n' "$keytext" | sha256sum | cut -c1-12)-$rustv"
fi
out="$VMCS_CACHE/kbuild/$key"

built() { [ -f "$out/.vmcs-built" ] && [ -f "$out/arch/x86/boot/bzImage" ] && [ -f "$out/Module.symvers" ]; }
if built; then
	log "guest kernel: cached ($out)"
	echo "$out"
	exit 0
fi

# One build per cache at a time: a second run (another checkout, a helper) waits here for
# the first and then reuses its result instead of building into the same tree.
mkdir -p "$out"
exec 9>"$VMCS_CACHE/kbuild/.lock-$key"
if ! flock -n 9; then
	log "guest kernel: another run is building $key; waiting for it"
	flock 9
fi
if built; then
	log "guest kernel: cached ($out, built by a concurrent run)"
	echo "$out"
	exit 0
fi
log "building $flavour guest kernel $version (key $key) in $out; this takes a few minutes"
start=$(date +%s)
if [ "$flavour" != test ]; then
	frag="$out/.vmcs-fragment.config"
	printf '%s\n' "$composed" >"$frag"
fi
echo "LLVM=$llvm" >"$out/.vmcs-make-args"
mk=(make -C "$src" O="$out" LLVM="$llvm" -j"$(nproc)")
"${mk[@]}" -s tinyconfig >&2
cp "$out/.config" "$out/.config.tiny"
"$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config.tiny" "$frag" >"$out/.merge.log" 2>&1
"${mk[@]}" -s olddefconfig >&2
# Every option of the fragment must have survived olddefconfig.
bad=0
while read -r line; do
	case "$line" in
	CONFIG_*=*) grep -qx -- "$line" "$out/.config" || { log "config option not taken: $line"; bad=1; } ;;
	"# CONFIG_"*" is not set")
		o=${line#\# }
		o=${o%% *}
		! grep -q "^$o=" "$out/.config" || { log "config option not turned off: $o"; bad=1; }
		;;
	esac
done <"$frag"
[ "$bad" -eq 0 ] || die "the config fragment does not apply cleanly (see above); is the Rust toolchain usable? try: make -C $src O=$out rustavailable"
# `modules` runs modpost over vmlinux, which writes the Module.symvers that out-of-tree
# modules link against.
"${mk[@]}" -s bzImage modules >&2
touch "$out/.vmcs-built"
log "guest kernel built in $(( $(date +%s) - start )) s"
echo "$out"
