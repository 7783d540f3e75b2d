#!/usr/bin/env bash
# Install everything vmcs needs to build and test, idempotently: a second run
# checks each piece and repeats nothing that is already done.
#
#   Debian packages      C kernel build deps, busybox-static, QEMU, cpio, dkms, debootstrap
#                        (the chroot of ci/debian-kernel.sh), clang/lld/llvm of
#                        $VMCS_SANITIZE_LLVM (the sanitizer kernel: KASAN with Rust needs clang)
#   rustup components    rust-src (kernel Rust build), x86_64 musl target (static guest binaries)
#   bindgen-cli          pinned version, installed into $VMCS_CACHE/bin
#   cargo-fuzz           pinned version, installed into $VMCS_CACHE/bin
#   libclang >= 17       PyPI 'libclang' wheel in a venv under $VMCS_CACHE/venv
set -euo pipefail
. "$(dirname "$0")/lib.sh"

mkdir -p "$VMCS_CACHE/bin"

debs=(build-essential flex bison bc libelf-dev libssl-dev cpio kmod xz-utils
	busybox-static qemu-system-x86 python3-venv python3-pip socat dkms debootstrap
	"clang-$VMCS_SANITIZE_LLVM" "lld-$VMCS_SANITIZE_LLVM" "llvm-$VMCS_SANITIZE_LLVM")
missing=()
for p in "${debs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing Debian packages: ${missing[*]}"
	as_root apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
	log "Debian packages: present"
fi

command -v rustup >/dev/null || die "rustup is needed (the machine's Rust toolchain)"
if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
	log "adding rustup component rust-src"
	rustup component add rust-src >&2
fi
for c in rustfmt clippy; do
	rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" >&2
done
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
	log "adding rustup target x86_64-unknown-linux-musl"
	rustup target add x86_64-unknown-linux-musl >&2
fi
log "rust: $(rustc --version), rust-src and musl target present"

if ! "$VMCS_CACHE/bin/bindgen" --version 2>/dev/null | grep -q " $VMCS_BINDGEN_VERSION\$"; then
	log "installing bindgen-cli $VMCS_BINDGEN_VERSION"
	cargo install --quiet --locked --root "$VMCS_CACHE/cargo-root" bindgen-cli --version "$VMCS_BINDGEN_VERSION" >&2
	ln -sf "$VMCS_CACHE/cargo-root/bin/bindgen" "$VMCS_CACHE/bin/bindgen"
fi
log "bindgen: $("$VMCS_CACHE/bin/bindgen" --version)"

if ! "$VMCS_CACHE/bin/cargo-fuzz" --version 2>/dev/null | grep -q " $VMCS_CARGO_FUZZ_VERSION\$"; then
	log "installing cargo-fuzz $VMCS_CARGO_FUZZ_VERSION"
	cargo install --quiet --locked --root "$VMCS_CACHE/cargo-root" cargo-fuzz --version "$VMCS_CARGO_FUZZ_VERSION" >&2
	ln -sf "$VMCS_CACHE/cargo-root/bin/cargo-fuzz" "$VMCS_CACHE/bin/cargo-fuzz"
fi
log "cargo-fuzz: $("$VMCS_CACHE/bin/cargo-fuzz" --version)"

if ! ls "$VMCS_CACHE"/venv/lib/python3*/site-packages/clang/native/libclang.so >/dev/null 2>&1; then
	log "installing libclang $VMCS_LIBCLANG_VERSION from PyPI into $VMCS_CACHE/venv"
	python3 -m venv "$VMCS_CACHE/venv"
	"$VMCS_CACHE/venv/bin/pip" install --quiet "libclang==$VMCS_LIBCLANG_VERSION" >&2
fi
vmcs_toolchain_env
log "libclang: $LIBCLANG_PATH"

# The vsock scenario's backend (vhost-user vsock with sibling groups).
"$(dirname "$0")/install-vhost-vsock.sh"
