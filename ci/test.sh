#!/usr/bin/env bash
# `make test`: set up everything, then run every test and print one TAP stream that ends in
# "N passed, N failed". Exits non-zero on any failure. Each step's full output is kept in
# build/test-logs/.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$VMCS_TOP"

logs="$VMCS_TOP/build/test-logs"
rm -rf "$logs"
mkdir -p "$logs"
n=0
passed=0
failed=0
t0=$(date +%s)

point() { # point ok|"not ok" DESCRIPTION
	n=$((n + 1))
	echo "$1 $n - $2"
	if [ "$1" = ok ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}
# step NAME COMMAND...: one test point from a command; output kept in the step's log.
step() {
	local name=$1 logf
	shift
	logf="$logs/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '-').log"
	local s=$(date +%s)
	if "$@" >"$logf" 2>&1; then
		point ok "$name ($(($(date +%s) - s)) s)"
	else
		point "not ok" "$name ($(($(date +%s) - s)) s)"
		tail -n 30 "$logf" | sed 's/^/# /'
	fi
}
# tap_step NAME COMMAND...: a command that prints TAP lines; each becomes a test point.
tap_step() {
	local name=$1 logf
	shift
	logf="$logs/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '-').log"
	"$@" >"$logf.tap" 2>"$logf"
	tap_emit "$name" "$logf" $?
}
# tap_emit NAME LOG RC: LOG.tap's points as points of this run, and one more when RC is not 0.
tap_emit() {
	local line
	while IFS= read -r line; do
		case "$line" in
		"ok "*) point ok "${line#ok - }" ;;
		"not ok "*) point "not ok" "${line#not ok - }" ;;
		"#"*) echo "$line" ;;
		esac
	done <"$2.tap"
	if [ "$3" != 0 ]; then
		point "not ok" "$1 exited $3"
		tail -n 20 "$2" | sed 's/^/# /'
	fi
}
# lane_step NAME COMMAND...: step's twin inside a lane (ci/test.sh's counters are not the
# lane's): prints "ok - NAME (N s)" or "not ok - ..." and the log's tail as comments, for
# tap_emit to count when the lane is collected.
lane_step() {
	local name=$1 logf s
	shift
	logf="$logs/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '-').log"
	s=$(date +%s)
	if "$@" >"$logf" 2>&1; then
		echo "ok - $name ($(($(date +%s) - s)) s)"
	else
		echo "not ok - $name ($(($(date +%s) - s)) s)"
		tail -n 30 "$logf" | sed 's/^/# /'
	fi
}
# Scenario lanes: tap_lane NAME COMMAND... starts a tap_step-like job in the background,
# at most $VMCS_TEST_JOBS at once (default 2: TCG guests of two scenarios share the 2 cores,
# and most scenarios leave a core idle while guests wait at barriers, heartbeats and
# timeouts); lanes_wait waits for all and prints their points in the order they were
# started, so the TAP stream stays the same whatever finished first.
: "${VMCS_TEST_JOBS:=2}"
lane_names=()
lane_logs=()
lane_pids=()
# LANE_SOLO=1 tap_lane ...: this one runs alone (the lanes before it finish first, the next
# start after it): the doorbell storm's host process keeps a core busy by itself.
tap_lane() {
	local name=$1 logf
	shift
	logf="$logs/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '-').log"
	local max=$VMCS_TEST_JOBS
	[ "${LANE_SOLO:-0}" = 1 ] && max=1
	while [ "$(jobs -pr | wc -l)" -ge "$max" ]; do
		wait -n 2>/dev/null || true
	done
	(
		s=$(date +%s)
		"$@" >"$logf.tap" 2>"$logf"
		echo "$? $(($(date +%s) - s))" >"$logf.rc"
	) &
	lane_names+=("$name")
	lane_logs+=("$logf")
	lane_pids+=($!)
	if [ "${LANE_SOLO:-0}" = 1 ]; then
		wait $! 2>/dev/null || true
	fi
}
lanes_wait() {
	local i logf rc secs
	wait "${lane_pids[@]}" 2>/dev/null
	for i in "${!lane_names[@]}"; do
		logf=${lane_logs[$i]}
		read -r rc secs <"$logf.rc" 2>/dev/null || { rc=1; secs=?; }
		echo "# ${lane_names[$i]}: $secs s"
		tap_emit "${lane_names[$i]}" "$logf" "$rc"
	done
	lane_names=()
	lane_logs=()
	lane_pids=()
}
finish() {
	echo "1..$n"
	echo "# total time $(($(date +%s) - t0)) s; logs in $logs"
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ]
	exit $?
}

echo "# vmcs test run, $(date -u)"
# Set-up: a failure here leaves nothing to test.
if ! ci/setup-deps.sh >"$logs/setup.log" 2>&1; then
	point "not ok" "set-up (ci/setup-deps.sh)"
	tail -n 30 "$logs/setup.log" | sed 's/^/# /'
	finish
fi
point ok "set-up (ci/setup-deps.sh)"
vmcs_toolchain_env
s=$(date +%s)
if ! env_out=$(qemu-test/prepare.sh 2>"$logs/prepare.log"); then
	point "not ok" "guest kernel, vmcs.ko and initramfs build"
	tail -n 40 "$logs/prepare.log" | sed 's/^/# /'
	finish
fi
eval "$env_out"
grep -E 'kernel source|guest kernel' "$logs/prepare.log" | sed 's/^/# /'
point ok "guest kernel, vmcs.ko and initramfs build ($(($(date +%s) - s)) s)"

# Host-side checks: one lane (host_checks below) beside the scenario lanes, so that its CPU
# work fills the time guests leave a core idle (barriers, heartbeat timeouts, restarts)
# instead of running before the first guest boots.
# Host-side Rust: unit and property tests, formatting, lints. The build folder starts from
# the cache's copy (ci/lib.sh vmcs_cargo_seed: only the project's own crates rebuild).
vmcs_cargo_seed build/host-target
ksrc=$(readlink -f "$VMCS_KDIR/source")
clippy_module() {
	touch module/vmcs_drv.rs
	out=$(KDIR=$VMCS_KDIR ci/build-module.sh CLIPPY=1 2>&1) || { echo "$out"; return 1; }
	echo "$out"
	! grep -qiE '(^|\s)(warning|error)(\[|:)' <<<"$out"
}
install_check() {
	local d=$VMCS_TOP/build/install-test
	rm -rf "$d"
	# The CLI built by the musl step: this checks the install, not a third build; the module
	# is prepare.sh's build (nothing changed since, so kbuild rebuilds nothing).
	DESTDIR=$d PREFIX=/usr KDIR=$VMCS_KDIR \
		VMCS_CLI=build/guest-target/x86_64-unknown-linux-musl/release/vmcs ci/install.sh &&
		test -f "$d"/lib/modules/*/extra/vmcs.ko &&
		test -x "$d/usr/bin/vmcs" && "$d/usr/bin/vmcs" --version &&
		test -f "$d/usr/include/linux/vmcs.h" &&
		grep -q 'KERNEL=="vmcs"' "$d/etc/udev/rules.d/99-vmcs.rules" &&
		grep -q 'NM_UNMANAGED}="1"' "$d/etc/udev/rules.d/80-vmcs-net.rules"
}
host_checks() {
	local m d features
	for m in rust/Cargo.toml userspace-tool/Cargo.toml qemu-test/guest-tools/Cargo.toml; do
		[ -f "$m" ] || continue
		d=$(dirname "$m")
		# userspace-tool: the vmcs library's tokio feature in the same build (feature
		# unification), not a third build of the workspace for it.
		features=()
		[ "$d" = userspace-tool ] && features=(--features vmcs/tokio)
		lane_step "cargo test ($d${features:+, --features vmcs/tokio})" cargo test --quiet \
			--manifest-path "$m" "${features[@]}" --target-dir build/host-target
		lane_step "cargo clippy -D warnings ($d${features:+, --features vmcs/tokio})" cargo clippy \
			--quiet --manifest-path "$m" --all-targets "${features[@]}" \
			--target-dir build/host-target -- -D warnings
		lane_step "cargo fmt --check ($d)" cargo fmt --manifest-path "$m" --all -- --check
	done
	# The same build as the guests' CLI (qemu-test/mkinitramfs.sh), in the same target folder:
	# it checks the build, and costs nothing more when prepare.sh has just made it.
	lane_step "vmcs CLI static musl build" cargo build --quiet --release --target x86_64-unknown-linux-musl \
		--manifest-path userspace-tool/Cargo.toml -p vmcs --target-dir build/guest-target
	lane_step "loom model check of the ring protocol (rust/)" rust/scripts/loom.sh
	lane_step "fuzz smoke run, region and concurrent targets (rust/fuzz, 2 x 5 s; make fuzz runs longer)" \
		rust/fuzz/run.sh 5
	# The module: rustfmt with the kernel's settings, and a clippy build with no warnings.
	ci/scan-test.sh
	lane_step "module import graph: no cycle, no forbidden arrow (ci/import-graph.py)" python3 ci/import-graph.py
	lane_step "rustfmt --check module/" rustfmt --check --edition 2021 --config-path "$ksrc/.rustfmt.toml" \
		module/vmcs_drv.rs
	# make install before the clippy build: it reuses prepare.sh's vmcs.ko (the clippy build's
	# other command line would make kbuild build it again).
	lane_step "make install into a DESTDIR puts the module, udev rule, CLI and header in place" install_check
	lane_step "module builds clean with CLIPPY=1" clippy_module
	lane_step "dkms add/build/install of dkms.conf against the test kernel, in temporary trees" \
		env KDIR="$VMCS_KDIR" ci/dkms-test.sh
}

# Cross-guest scenarios in booted guests.
# The host tools the lanes use, built before the host-checks lane holds build/host-target's
# cargo lock (run.sh takes the doorbell server from VMCS_IVSHMEM_SERVER).
if ! evil=$(qemu-test/build-host-tools.sh vmcs-evil 2>"$logs/host-tools.log") ||
	! VMCS_IVSHMEM_SERVER=$(qemu-test/build-host-tools.sh 2>>"$logs/host-tools.log"); then
	point "not ok" "host tools (vmcs-evil, vmcs-ivshmem-server) build"
	tail -n 30 "$logs/host-tools.log" | sed 's/^/# /'
	finish
fi
export VMCS_IVSHMEM_SERVER
# A hostile host-side peer (userspace-tool/vmcs-evil) attacks two guests on the first of their
# two ivshmem devices while they talk over both. On ivshmem-doorbell it joins through the
# doorbell server and also rings both guests' doorbells as fast as it can (the starvation
# check). hostile VARIANT REGION-ARGUMENT TIMEOUT
hostile() {
	# 4 MiB regions: the bulk phase's 19 extents must come from a 12-page slice.
	qemu-test/run.sh --scenario hostile --variant "$1" --guests 2 --devices 2 --timeout "$3" \
		--shm-size 4M \
		--host-hook "$evil $2 --port 7000" --hook-on EVIL-GO
}
# The hostile doorbell run goes first and alone (LANE_SOLO): its doorbell storm keeps a host
# core busy by itself, and beside another lane under load it ran past its timeout once.
# hostile plain 2 (the same attacks through the region file) runs in make stress and make
# sanitize.
# shellcheck disable=SC2016 # the hook's $VMCS_SERVER expands when run.sh runs it
LANE_SOLO=1 tap_lane "qemu hostile doorbell 2 (2 devices, doorbell storm)" hostile doorbell '--server $VMCS_SERVER' 420
tap_lane "host checks: cargo test/clippy/fmt, musl build, loom, fuzz, module rustfmt/clippy, install, dkms" host_checks
# They run in lanes (tap_lane above: two at a time by default), the longest first so that
# no long one starts last; the sanitizer and Debian kernels have their own module builds and
# initramfs (build/sanitize-*, build/debian/), so they can run beside the test kernel's.
# The sanitizer kernel (KASAN, KFENCE, kmemleak, UBSAN, ...): a short subset of the scenarios
# below; after each, every guest unloads vmcs and kmemleak must find nothing. The full set is
# `make sanitize` (ci/sanitize.sh, also run by `make stress`).
tap_lane "sanitizer kernel: scenario subset (ci/sanitize.sh --quick)" ci/sanitize.sh --quick
# Chaos, short: 4 guests, mesh traffic, a random kill and restart, a reload and an
# unbind in the last guest (make stress: 50, 100, 10).
tap_lane "qemu chaos doorbell 4 (1 kill, 1 reload, 1 unbind)" qemu-test/run.sh --scenario chaos \
	--variant doorbell --guests 4 --timeout 1200 --chaos 1 --append "vmcstest.reloads=1 vmcstest.unbinds=1"
# Debian's stock Rust-enabled kernel: make KDIR=debian (cached chroot), two guests on Debian's
# vmlinuz with that vmcs.ko (the distro scenario), DKMS against the packaged headers.
tap_lane "distro kernel (Debian)" ci/distro-test.sh
# basic, transport, crash and messaging on plain (the doorbell runs below cover the
# scenarios; the plain notify path is in versions, vsock-dual, netdev-plain, sockets and
# crypto plain): make stress (ci/stress.sh part 3) and make sanitize.
tap_lane "qemu basic doorbell 2" qemu-test/run.sh --scenario basic --variant doorbell --guests 2
tap_lane "qemu versions plain 2 (protocol-1 module vs this one)" qemu-test/run.sh --scenario versions --variant plain --guests 2
# 4 MiB regions (64 KiB rings): the self-test frames must wrap the rings and fill them.
tap_lane "qemu transport doorbell 3" qemu-test/run.sh --scenario transport --variant doorbell --guests 3 \
	--shm-size 4M
tap_lane "qemu transport-crash doorbell 2" qemu-test/run.sh --scenario transport-crash --variant doorbell --guests 2
# The vsock transport (about 90 s): two guests with no ivshmem device, vhost-device-vsock's
# sibling group between them, the host end through its unix socket, guest 0 killed last.
tap_lane "qemu vsock 2 (no ivshmem, host end, peer death)" qemu-test/run.sh --scenario vsock \
	--variant plain --guests 2 --devices 0 --vsock --timeout 400 \
	--crash-guest 0 --crash-on VSOCK-KILL-ME --hook-on VT-ECHO-LISTENING \
	--host-hook "python3 $VMCS_TOP/qemu-test/vsock-host.py \$VMCS_RESULTS/vsock1.uds 7200 7300"
# Transport per peer (about 90 s): guests 0 and 1 share an ivshmem region and, with guest 2
# (no ivshmem device), vhost-device-vsock's sibling group; guest 1 talks ivshmem to guest 0 and
# vsock to guest 2 at once, then its device is unbound and it reconnects to guest 0 over vsock.
tap_lane "qemu vsock-dual 3 (transport per peer, unbind falls back to vsock)" qemu-test/run.sh \
	--scenario vsock-dual --variant plain --guests 3 --devices 1 --guest-devices 1,1,0 --vsock \
	--timeout 400
tap_lane "qemu crash doorbell 2" qemu-test/run.sh --scenario crash --variant doorbell --guests 2 \
	--timeout 300 --crash-guest 1 --crash-on CRASH-POINT --restart
# vmcs0 to a peer with a smaller ring (three idle filler peers from the host) and the
# ivshmem-plain restart path (the restarted guest keeps its slot and MAC).
# shellcheck disable=SC2016 # $VMCS_SHM expands when run.sh runs the hook
tap_lane "qemu netdev-plain 2 (+3 fillers, restart)" qemu-test/run.sh --scenario netdev-plain --variant plain \
	--guests 2 --timeout 300 --crash-guest 1 --crash-on CRASH-POINT --restart \
	--host-hook "$evil --shm \$VMCS_SHM --fill 3" --hook-on FILL-GO
tap_lane "qemu netdev doorbell 3" qemu-test/run.sh --scenario netdev --variant doorbell --guests 3 \
	--timeout 300 --crash-guest 2 --crash-on CRASH-POINT --restart
tap_lane "qemu messaging doorbell 3" qemu-test/run.sh --scenario messaging --variant doorbell --guests 3
tap_lane "qemu sockets plain 2" qemu-test/run.sh --scenario sockets --variant plain --guests 2
# Per-connection encryption (#14): the host hook reads the region during a plaintext and an
# encrypted transfer, flips, replays and truncates encrypted frames in the ring with the
# receiver stopped, and greps the logs and region for the test keys (qemu-test/crypto-host.py).
crypto_keys="8d4e0c7a9b12f3e65a0d7c41b2e89f06c3a5d7e91f2b4c6d8e0a1b3c5d7e9f10 0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0"
# shellcheck disable=SC2016 # $VMCS_SHM and $VMCS_RESULTS expand when run.sh runs the hook
tap_lane "qemu crypto plain 2 (host reads and tampers with the region)" qemu-test/run.sh --scenario crypto \
	--variant plain --guests 2 --control --timeout 400 --hook-on CRYPTO-HOOK-START \
	--host-hook "python3 $VMCS_TOP/qemu-test/crypto-host.py \$VMCS_SHM \$VMCS_RESULTS $crypto_keys"
# sockets doorbell 2 runs on the sanitizer kernel below (its debug options include the test
# kernel's), not twice.
tap_lane "qemu demo doorbell 2 (fine clock)" qemu-test/run.sh --scenario demo --variant doorbell --guests 2 --clock fine
tap_lane "qemu cli doorbell 2" qemu-test/run.sh --scenario cli --variant doorbell --guests 2 --timeout 400
lanes_wait

# The next fresh clone starts from these build folders (saved when the Cargo.lock files changed).
vmcs_cargo_save build/host-target
vmcs_cargo_save build/guest-target
finish
