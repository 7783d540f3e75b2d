# shellcheck shell=bash
# Shared settings for the vmcs set-up and test scripts. Sourced, never run.

VMCS_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export VMCS_TOP

# Everything that is expensive to rebuild lives outside the repository, so that
# a fresh clone reuses it. VMCS_CACHE overrides the place.
: "${VMCS_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/vmcs}"
export VMCS_CACHE

# The pinned kernel series and the version recorded as known good. When the
# recorded version has rolled out of the archive, the newest 7.2.x is used.
VMCS_KSERIES=7.2
VMCS_KVERSION_PINNED=${VMCS_KVERSION_PINNED:-7.2.13-1}

# bindgen-cli version installed into the cache (kernel 7.2 needs >= 0.71.1).
VMCS_BINDGEN_VERSION=0.72.1
# cargo-fuzz, for the protocol fuzzer (run on stable with RUSTC_BOOTSTRAP=1).
VMCS_CARGO_FUZZ_VERSION=0.13.2
# The LLVM major version that builds the sanitizer kernel (Debian bookworm's clang-22, lld-22,
# llvm-22): the LLVM of the pinned rustc (1.95: LLVM 22), since KASAN with Rust needs clang.
VMCS_SANITIZE_LLVM=22
# PyPI libclang wheel that ships libclang.so (>= 17 is needed; Debian 12 has 14).
VMCS_LIBCLANG_VERSION=18.1.1

log() { printf '[vmcs] %s\n' "$*" >&2; }
die() { printf '[vmcs] error: %s\n' "$*" >&2; exit 1; }

# vmcs_kbuild_args KDIR: sets the array `kargs` to the make arguments ci/build-kernel.sh
# recorded for that kernel build (.vmcs-make-args: LLVM= for gcc, LLVM=-N for the sanitizer
# kernel's clang), so that modules are built with the kernel's own compiler; empty if none.
vmcs_kbuild_args() {
	kargs=()
	if [ -f "$1/.vmcs-make-args" ]; then
		read -r -a kargs <"$1/.vmcs-make-args"
	fi
}

# vmcs_log_scan FILE: print (numbered, at most 20) the lines of a guest's serial log that
# report a kernel problem, and exit 0 when there is any: warnings (lockdep, DEBUG_ATOMIC_SLEEP
# and refcount_t reports are WARNINGs), BUG()s, oopses, list corruption (DEBUG_LIST), debug
# objects, Rust panics ("panicked at", then "kernel BUG at"), panics, stalls and hung tasks,
# and the sanitizer kernel's reports: KASAN ("BUG: KASAN: ..."), KFENCE ("BUG: KFENCE: ..."),
# UBSAN ("UBSAN: ..."), kmemleak ("unreferenced object 0x...", or kmemleak turning itself
# off). The boot lines of those tools ("kasan: KernelAddressSanitizer initialized",
# "kmemleak: Kernel memory leak detector initialized", "kfence: initialized") do not match.
# Tested by ci/scan-test.sh.
vmcs_log_scan() {
	local found
	found=$(tr -d '\r' <"$1" | grep -nE 'WARNING:|BUG:|BUG at|Oops|Call Trace|KASAN|UBSAN|KFENCE|ODEBUG:|list_(add|del) corruption|panicked at|Kernel panic|general protection fault|rcu_.*stall|hung_task|blocked for more than|unreferenced object|kmemleak: .*(disabled|[Ee]rror|Cannot|empty)' | head -n 20 || true)
	[ -n "$found" ] || return 1
	printf '%s\n' "$found"
}

# Run a command as root: directly when we are root, else through sudo.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# The toolchain environment the kernel's Rust build needs.
vmcs_toolchain_env() {
	export LIBCLANG_PATH="$VMCS_CACHE/venv/lib/python3/site-packages/clang/native"
	[ -d "$LIBCLANG_PATH" ] || LIBCLANG_PATH=$(ls -d "$VMCS_CACHE"/venv/lib/python3*/site-packages/clang/native 2>/dev/null | head -n1)
	export PATH="$VMCS_CACHE/bin:$PATH"
}

# vmcs_chroot ROOT BIND_SRC BIND_DST COMMAND...: run COMMAND in the chroot ROOT (made by
# ci/debian-kernel.sh) with /proc (objtool needs it) and /dev mounted and, when BIND_SRC is
# not empty, BIND_SRC bind-mounted at BIND_DST; all in a mount namespace of its own, so
# nothing stays mounted afterwards. Root (or sudo) is needed.
vmcs_chroot() {
	local root=$1 bsrc=$2 bdst=$3
	shift 3
	as_root unshare -m --propagation private sh -ec '
		r=$1 s=$2 d=$3
		shift 3
		mount -t proc proc "$r/proc"
		mount --bind /dev "$r/dev"
		if [ -n "$s" ]; then mkdir -p "$r$d"; mount --bind "$s" "$r$d"; fi
		exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"' \
		sh "$root" "$bsrc" "$bdst" "$@"
}

# Cargo build folders of a checkout (build/host-target, build/guest-target) start from a
# copy of the last one saved in the cache, so that a fresh clone does not rebuild tokio,
# proptest, clap and the rest (~4 min of make test on 2 cores). The copy is safe: every unit
# of the project's own packages (all named vmcs*) loses its fingerprint, so cargo rebuilds
# those from this checkout's sources and reuses only the registry crates, whose sources
# cannot differ. Nothing is shared while in use: each checkout has its own copy.
# vmcs_cargo_seed DIR: seed DIR from the cache if DIR does not exist yet.
vmcs_cargo_seed() {
	local dir=$1 seed
	seed="$VMCS_CACHE/target/seed-$(basename "$dir")"
	[ -e "$dir" ] && return 0
	[ -d "$seed" ] || return 0
	mkdir -p "$(dirname "$dir")"
	(
		flock -s 9
		cp -a "$seed" "$dir.seeding" && mv "$dir.seeding" "$dir"
	) 9>"$seed.lock" || { rm -rf "$dir.seeding"; return 0; }
	find "$dir" -path '*/.fingerprint/vmcs*' -prune -exec rm -rf {} + 2>/dev/null || true
	log "cargo: $dir seeded from the cache (the project's own crates rebuild)"
}
# vmcs_cargo_save DIR: keep a copy of DIR (without incremental data) as the next seed, when
# there is none yet or the project's Cargo.lock files changed since it was saved.
vmcs_cargo_save() {
	local dir=$1 seed locks
	seed="$VMCS_CACHE/target/seed-$(basename "$dir")"
	[ -d "$dir" ] || return 0
	locks=$(cat "$VMCS_TOP"/rust/Cargo.lock "$VMCS_TOP"/userspace-tool/Cargo.lock \
		"$VMCS_TOP"/qemu-test/guest-tools/Cargo.lock 2>/dev/null | sha256sum)
	[ "$(cat "$seed/.vmcs-locks" 2>/dev/null)" = "$locks" ] && return 0
	echo "$locks" >"$dir/.vmcs-locks"
	mkdir -p "$VMCS_CACHE/target"
	(
		flock 9
		rm -rf "$seed.new"
		mkdir -p "$seed.new"
		(cd "$dir" && find . -path '*/incremental' -prune -o -print0 |
			cpio -0 -pdm --quiet "$seed.new") &&
			rm -rf "$seed.old" && { [ ! -e "$seed" ] || mv "$seed" "$seed.old"; } &&
			mv "$seed.new" "$seed" && rm -rf "$seed.old"
	) 9>"$seed.lock" || rm -rf "$seed.new"
}
