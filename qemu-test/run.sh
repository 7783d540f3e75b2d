#!/usr/bin/env bash
# Boot N test guests under TCG that share one ivshmem region, run one scenario in all of
# them, and report TAP on stdout.
#
#   run.sh [--guests N] [--variant plain|doorbell] [--scenario NAME] [--timeout SECS]
#          [--shm-size SIZE] [--results DIR] [--demo]
#          [--crash-guest G --crash-on MARKER [--restart]]
#          [--host-hook CMD --hook-on MARKER] [--devices N] [--guest-devices N,N,...]
#          [--kernel test|sanitize|debian]
#          [--vsock] [--append WORDS] [--clock coarse|fine]
#          [--control] [--chaos KILLS [--chaos-seed S] [--reload-guest G]]
#
# Fault hook: with --crash-guest, the launcher watches guest G's TAP file for a line
# containing MARKER and then kills that guest's QEMU with SIGKILL (no shutdown, no leave).
# With --restart it boots guest G again with the same index, the same shared region (and
# doorbell server, which gives it its id back: --sticky-ids), vmcstest.incarnation=2 on the kernel command
# line and no test-control link; its serial log and TAP go to guestG.2.log/.tap and are
# checked like the others. The killed incarnation must have run its whole TAP plan before
# MARKER; it is not expected to finish.
#
# Host hook: with --host-hook, the launcher runs CMD (with bash -c) on the host once any
# guest's TAP file has a line containing MARKER. CMD sees VMCS_SHM (the backing file of the
# first region; plain variant), VMCS_SHM_ALL (all of them, space-separated), VMCS_SERVER
# (the first region's doorbell server socket; doorbell variant), VMCS_RESULTS and
# VMCS_VARIANT (guest G's QEMU pid is in $VMCS_RESULTS/guestG.pid). Its stdout is read as TAP lines (`ok - ...`, `not ok - ...`, `# ...`,
# no plan needed) and reported like the guests' points, plus one point for its exit status
# 0; stderr goes to hook.log. It must end within 60 s of the last guest.
#
# --devices N (0, 1 or 2, default 1): every guest gets N ivshmem devices, each with a region
# of its own (plain: /dev/shm/<run>, /dev/shm/<run>.1; doorbell: one server per region),
# so that each guest has N vmcs domains. --guest-devices N0,N1,... (each at most --devices)
# gives guest G only the first NG of them (the vsock-dual scenario: 1,1,0, guest 2 on vsock
# only); guests past the list get all.
#
# --vsock: every guest also gets a virtio-vsock device (vhost-user-vsock-pci) served by one
# vhost-device-vsock backend ($VMCS_CACHE/bin, ci/bench-setup.sh installs it) whose sibling
# group links all the guests: guest G is AF_VSOCK cid 3+G. Guest RAM is then a shared memfd
# (vhost-user needs it). Not with --restart.
#
# --control: every guest also gets a control line, its ttyS2, fed from the FIFO
# $results/guestG.ctl.in (QEMU's pipe chardev; guestG.ctl.out takes what the guest
# writes). ctl_send G WORD writes one line to it; a restarted guest gets the same FIFO.
#
# --chaos KILLS (implies --control; the chaos scenario, docs/testing.md "make stress"):
# restart in place. Once every guest's TAP says MESH-READY, the launcher KILLS times waits
# 1-4 s (traffic flowing), SIGKILLs the QEMU of a random guest (seeded by --chaos-seed,
# printed), boots it again at once with the same index, region and doorbell server
# (vmcstest.incarnation=K+1; plain: it reclaims a slot, doorbell: its IVPosition back, --sticky-ids) and
# waits until the new incarnation says MESH-READY and every other guest says
# MESH-JOINED G.K+1 (its connections resumed), up to 240 s; then the next kill. After the
# kills it sends RELOAD to --reload-guest (default the last guest) and waits for its
# RELOADS-DONE, then sends STOP to every guest. Each kill and rejoin is a test point; the
# list of killed incarnations is $results/chaos.log, which qemu-test/chaos-table.sh reads
# with the TAP files to print the table and its points. A killed incarnation need not
# have printed its TAP plan (the chaos scenario prints it at the end).
#
# --append WORDS: more kernel command-line words for every guest (e.g. the bench scenario's
# vmcstest.bench_* settings).
#
# --clock fine: the guests run on the TSC at the host's frequency (qemu-test/guest-clock.sh),
# so clock_gettime() times single round trips in µs (make bench, make demo). The default,
# coarse, is refined-jiffies (tsc=unstable). Test scenarios keep it on purpose: on a loaded
# TCG host a guest can stall for seconds of real time; the fine clock measures that stall
# and the peer's heartbeat timeout (1.5 s) then resets a live guest, while jiffies, which
# lose the ticks of a stalled guest, do not (docs/performance.md "The guest clock").
#
# The guests' kernel and initramfs come from $VMCS_KERNEL and $VMCS_INITRD, or are built.
# --kernel debian boots Debian's stock Rust-enabled vmlinuz instead, with the vmcs.ko built
# for it (qemu-test/prepare-debian.sh; the distro scenario). --kernel sanitize boots the
# sanitizer kernel (qemu-test/prepare.sh --sanitize: KASAN, KFENCE, kmemleak, UBSAN), and
# every guest that finishes gets two more points: its init unloaded vmcs after the scenario,
# and kmemleak then found no unreferenced object.
# Each guest's serial log (console) and TAP stream are kept in the results folder. Exit
# status 0 means every guest finished, every test point passed and every serial log is
# clean of WARNING/BUG/Oops/Call Trace/KASAN/KFENCE/UBSAN/kmemleak reports (vmcs_log_scan,
# ci/lib.sh).
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"

guests=2
variant=plain
scenario=basic
timeout=180
shm_size=64M
results=""
demo=0
crash_guest=""
crash_on=""
restart=0
hook=""
hook_on=""
devices=1
guest_devices=""
vsock=0
append=""
clock=coarse
kernel=test
control=0
chaos=""
chaos_seed=""
reload_guest=""
while [ $# -gt 0 ]; do
	case "$1" in
	--guests) guests=$2; shift 2 ;;
	--variant) variant=$2; shift 2 ;;
	--scenario) scenario=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--shm-size) shm_size=$2; shift 2 ;;
	--results) results=$2; shift 2 ;;
	--demo) demo=1; shift ;;
	--crash-guest) crash_guest=$2; shift 2 ;;
	--crash-on) crash_on=$2; shift 2 ;;
	--restart) restart=1; shift ;;
	--host-hook) hook=$2; shift 2 ;;
	--hook-on) hook_on=$2; shift 2 ;;
	--devices) devices=$2; shift 2 ;;
	--guest-devices) guest_devices=$2; shift 2 ;;
	--vsock) vsock=1; shift ;;
	--append) append=$2; shift 2 ;;
	--clock) clock=$2; shift 2 ;;
	--kernel) kernel=$2; shift 2 ;;
	--control) control=1; shift ;;
	--chaos) chaos=$2; control=1; shift 2 ;;
	--chaos-seed) chaos_seed=$2; shift 2 ;;
	--reload-guest) reload_guest=$2; shift 2 ;;
	*) die "unknown argument $1 (see the header of $0)" ;;
	esac
done
[ "$guests" -ge 1 ] && [ "$guests" -le 8 ] || die "--guests must be 1..8"
case "$variant" in plain | doorbell) ;; *) die "--variant must be plain or doorbell" ;; esac
[ -f "$VMCS_TOP/qemu-test/scenarios/$scenario.sh" ] || die "no scenario $scenario"
case "$devices" in 0 | 1 | 2) ;; *) die "--devices must be 0, 1 or 2" ;; esac
IFS=, read -r -a gdev <<<"$guest_devices"
for n in "${gdev[@]}"; do
	case "$n" in [0-2]) [ "$n" -le "$devices" ] || die "--guest-devices: $n is more than --devices $devices" ;;
	*) die "--guest-devices takes counts 0..2 separated by commas, not '$guest_devices'" ;; esac
done
# The ivshmem devices of guest G: the first N of them (4 QEMU arguments each).
devices_of() { echo "${gdev[$1]:-$devices}"; }
[ -z "$hook" ] || [ -n "$hook_on" ] || die "--host-hook needs --hook-on MARKER"
[ "$vsock" = 0 ] || [ "$restart" = 0 ] || die "--vsock does not go with --restart"
[ "$vsock" = 0 ] || [ -z "$chaos" ] || die "--vsock does not go with --chaos"
[ -z "$chaos" ] || [ -z "$crash_guest" ] || die "--chaos does not go with --crash-guest"
reload_guest=${reload_guest:-$((guests - 1))}
if [ -n "$crash_guest" ]; then
	[ "$crash_guest" -ge 0 ] && [ "$crash_guest" -lt "$guests" ] || die "--crash-guest must be 0..$((guests - 1))"
	[ -n "$crash_on" ] || die "--crash-guest needs --crash-on MARKER"
fi

case "$kernel" in
test) ;;
debian) eval "$("$VMCS_TOP/qemu-test/prepare-debian.sh")" ;;
sanitize)
	# The sanitizer kernel, unless the caller has prepared it already (ci/sanitize.sh).
	grep -q '^CONFIG_KASAN=y' "${VMCS_KDIR:-/nonexistent}/.config" 2>/dev/null ||
		eval "$("$VMCS_TOP/qemu-test/prepare.sh" --sanitize)"
	# slab_debug=F (SLUB's consistency checks on every cache) also turns off SLUB's per-CPU
	# sheaves, whose popped slots keep stale pointers to the objects they handed out: kmemleak
	# scans the sheaves (they are kmalloc'd), so a leaked object stayed "referenced" until
	# its slot was reused, often for a minute (docs/testing.md "The sanitizer kernel").
	append="slab_debug=F $append"
	;;
*) die "--kernel must be test, sanitize or debian" ;;
esac
if [ -z "${VMCS_KERNEL:-}" ] || [ -z "${VMCS_INITRD:-}" ]; then
	eval "$("$VMCS_TOP/qemu-test/prepare.sh")"
fi

stamp=$(date +%Y%m%d-%H%M%S)
tag=""
[ "$kernel" = test ] || tag=-$kernel
results=${results:-$VMCS_TOP/qemu-test/results/$stamp-$scenario-$variant-$guests$tag}
mkdir -p "$results"
run_id="vmcs-$$-$RANDOM"
pids=()
server_pids=()
hook_pid=""
# Region d's backing file and (doorbell) server socket; d = 0 .. devices-1.
shm_of() { if [ "$1" = 0 ]; then echo "/dev/shm/$run_id"; else echo "/dev/shm/$run_id.$1"; fi; }
sock_of() { if [ "$1" = 0 ]; then echo "$results/ivshmem.sock"; else echo "$results/ivshmem.$1.sock"; fi; }

cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	[ -z "$hook_pid" ] || kill -9 "$hook_pid" 2>/dev/null || true
	for p in "${server_pids[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	for d in $(seq 0 $((devices - 1))); do rm -f "$(shm_of "$d")" "$(sock_of "$d")"; done
	[ "$vsock" = 0 ] || rm -f "$results"/vsock*.sock "$results"/vsock*.uds*
	[ "$control" = 0 ] || rm -f "$results"/guest*.ctl.in "$results"/guest*.ctl.out
}
trap cleanup EXIT

shm_args=()
# VMCS_IVSHMEM_SERVER: a doorbell server built already (ci/test.sh builds it before its lanes,
# so that no lane's run waits for the cargo lock of a lane running cargo test).
[ "$variant" = plain ] || server=${VMCS_IVSHMEM_SERVER:-$("$VMCS_TOP/qemu-test/build-host-tools.sh")}
for d in $(seq 0 $((devices - 1))); do
	shm=$(shm_of "$d")
	sock=$(sock_of "$d")
	if [ "$variant" = plain ]; then
		truncate -s "$shm_size" "$shm"
		shm_args+=(-object "memory-backend-file,id=shm$d,size=$shm_size,share=on,mem-path=$shm"
			-device ivshmem-plain,memdev=shm$d)
	else
		slog=ivshmem-server.log
		[ "$d" = 0 ] || slog=ivshmem-server.$d.log
		# --sticky-ids: a restarted guest gets its id back (and its vmcs0 MAC); QEMU's
		# ivshmem cannot take an id that left and came back otherwise
		# (docs/ivshmem-server.md).
		"$server" --socket "$sock" --shm "$shm" --size "$shm_size" --vectors 2 --max-peers 16 \
			--sticky-ids 2>"$results/$slog" &
		server_pids+=($!)
		for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
		[ -S "$sock" ] || die "ivshmem server did not start (see $results/$slog)"
		shm_args+=(-chardev "socket,path=$sock,id=ivsh$d" -device ivshmem-doorbell,chardev=ivsh$d,vectors=2)
	fi
done

# AF_VSOCK between the guests (--vsock): one vhost-device-vsock for all, one sibling group.
vsock_args() { :; }
if [ "$vsock" = 1 ]; then
	vhost=$VMCS_CACHE/bin/vhost-device-vsock
	[ -x "$vhost" ] || die "--vsock needs $vhost (run ci/bench-setup.sh)"
	vms=()
	for g in $(seq 0 $((guests - 1))); do
		vms+=(--vm "guest-cid=$((3 + g)),socket=$results/vsock$g.sock,uds-path=$results/vsock$g.uds,groups=vmcs")
	done
	"$vhost" "${vms[@]}" >"$results/vhost-device-vsock.log" 2>&1 &
	server_pids+=($!)
	for _ in $(seq 50); do [ -S "$results/vsock$((guests - 1)).sock" ] && break; sleep 0.1; done
	[ -S "$results/vsock$((guests - 1)).sock" ] || die "vhost-device-vsock did not start (see $results/vhost-device-vsock.log)"
	vsock_args() {
		printf -- '-object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem '
		printf -- '-chardev socket,id=vsk,path=%s -device vhost-user-vsock-pci,chardev=vsk ' "$results/vsock$1.sock"
	}
fi

# Test-control links: a point-to-point virtio-net link between guest 0 and each other guest,
# carried over a QEMU socket netdev on host loopback.
base_port=$((20000 + (RANDOM % 2000) * 16))
net_args() {
	local g=$1 i
	if [ "$g" = 0 ]; then
		for i in $(seq 1 $((guests - 1))); do
			printf -- '-netdev socket,id=n%d,listen=127.0.0.1:%d -device virtio-net-pci,netdev=n%d,mac=52:54:00:00:00:%02x ' \
				"$i" $((base_port + i)) "$i" "$i"
		done
	else
		printf -- '-netdev socket,id=n0,connect=127.0.0.1:%d -device virtio-net-pci,netdev=n0,mac=52:54:00:00:01:%02x ' \
			$((base_port + g)) "$g"
	fi
}

# The guests' clock (--clock): the TSC at the host's frequency, or refined-jiffies.
case "$clock" in
fine) guest_clock=$("$VMCS_TOP/qemu-test/guest-clock.sh") ;;
coarse) guest_clock="tsc=unstable no_timer_check" ;;
*) die "--clock takes coarse or fine, not '$clock'" ;;
esac

# boot_guest G INCARNATION: start guest G's QEMU in the background; its pid in $boot_pid.
# Files: guestG.{log,tap,qemu.log} for the first incarnation, guestG.N.* for later ones.
boot_guest() {
	local g=$1 inc=$2 name net=""
	name=guest$g
	[ "$inc" = 1 ] || name=guest$g.$inc
	# A restarted guest gets no test-control link (guest 0's end is gone with the old one).
	[ "$inc" = 1 ] && net=$(net_args "$g")
	local ctl=()
	if [ "$control" = 1 ]; then
		[ -p "$results/guest$g.ctl.in" ] || mkfifo "$results/guest$g.ctl.in" "$results/guest$g.ctl.out"
		ctl=(-serial "pipe:$results/guest$g.ctl")
	fi
	# shellcheck disable=SC2086
	qemu-system-x86_64 -accel tcg -M pc -m 256M -smp 1 -nographic -nodefaults -no-reboot \
		-kernel "$VMCS_KERNEL" -initrd "$VMCS_INITRD" \
		-append "console=ttyS0 panic=-1 oops=panic $guest_clock vmcstest.guest=$g vmcstest.nguests=$guests vmcstest.variant=$variant vmcstest.scenario=$scenario vmcstest.incarnation=$inc $append" \
		-serial "file:$results/$name.log" -serial "file:$results/$name.tap" "${ctl[@]}" \
		"${shm_args[@]:0:$((4 * $(devices_of "$g")))}" $net $(vsock_args "$g") \
		>"$results/$name.qemu.log" 2>&1 &
	boot_pid=$!
	# For host hooks that pause a guest (the crypto scenario stops the receiver while it
	# rewrites its ring).
	echo "$boot_pid" >"$results/$name.pid"
}

log "booting $guests guest(s), $variant, scenario $scenario; logs in $results"
# Report units: "guest index, file stem, must finish".
units=()
# Per guest: the QEMU pid and incarnation now running, and its entry in units.
gpid=()
ginc=()
gunit=()
for g in $(seq 0 $((guests - 1))); do
	boot_guest "$g" 1
	pids+=("$boot_pid")
	gpid[g]=$boot_pid
	ginc[g]=1
	gunit[g]=${#units[@]}
	units+=("$g guest$g 1")
	# The listening side of the links must be up before the others connect.
	[ "$g" = 0 ] && sleep 1
done
[ -n "$crash_guest" ] && units[crash_guest]="$crash_guest guest$crash_guest 0"

deadline=$(($(date +%s) + timeout))

# The TAP file of guest G's running incarnation.
tap_of() { if [ "${ginc[$1]}" = 1 ]; then echo "$results/guest$1.tap"; else echo "$results/guest$1.${ginc[$1]}.tap"; fi; }
# tap_has G LINE: guest G's running incarnation printed exactly LINE (CRs dropped).
tap_has() { { tr -d '\r' <"$(tap_of "$1")"; } 2>/dev/null | grep -qx -- "$2"; }
tap_grep() { { tr -d '\r' <"$(tap_of "$1")"; } 2>/dev/null | grep -qE -- "$2"; }
# ctl_send G WORD: one line on guest G's control line (never blocks on a dead guest).
ctl_send() { timeout 10 bash -c 'echo "$1" >"$2"' _ "$2" "$results/guest$1.ctl.in" || true; }
# wait_until SECS COMMAND...: poll COMMAND every 0.5 s; fails after SECS or the deadline.
wait_until() {
	local end=$(($(date +%s) + $1))
	shift
	until "$@"; do
		[ "$(date +%s)" -lt "$end" ] && [ "$(date +%s)" -lt "$deadline" ] || return 1
		sleep 0.5
	done
}
chaos_points=()
cpoint() { chaos_points+=("$1|$2"); echo "# chaos: $1 - $2"; }
all_ready() { local g; for g in $(seq 0 $((guests - 1))); do tap_grep "$g" '^# MESH-READY' || return 1; done; }
# rejoined G: guest G's new incarnation is ready and every other guest reconnected to it.
rejoined() {
	local g=$1 o
	tap_grep "$g" '^# MESH-READY' || return 1
	for o in $(seq 0 $((guests - 1))); do
		[ "$o" = "$g" ] || tap_has "$o" "# MESH-JOINED $g.${ginc[g]}" || return 1
	done
}
chaos_run() {
	local k g t0 fails=0
	[ -n "$chaos_seed" ] || chaos_seed=$((RANDOM * 32768 + RANDOM))
	RANDOM=$chaos_seed
	: >"$results/chaos.log"
	echo "# chaos: $chaos kills, seed $chaos_seed, reload guest $reload_guest"
	t0=$(date +%s)
	if wait_until 300 all_ready; then
		cpoint ok "every guest's mesh is up ($(($(date +%s) - t0)) s)"
	else
		cpoint "not ok" "every guest's mesh is up (not after $(($(date +%s) - t0)) s)"
		return
	fi
	for k in $(seq 1 "$chaos"); do
		sleep "$((1 + RANDOM % 3)).$((RANDOM % 10))"
		g=$((RANDOM % guests))
		kill -9 "${gpid[g]}" 2>/dev/null || true
		wait "${gpid[g]}" 2>/dev/null || true
		echo "kill $k guest$g.${ginc[g]} $(date +%s.%N)" >>"$results/chaos.log"
		echo "# chaos: kill $k: guest$g incarnation ${ginc[g]} (QEMU ${gpid[g]}) at $(date +%T.%N | cut -c1-12)"
		read -r _ stem _ <<<"${units[gunit[g]]}"
		units[gunit[g]]="$g $stem 0"
		sleep 1
		ginc[g]=$((ginc[g] + 1))
		boot_guest "$g" "${ginc[g]}"
		pids+=("$boot_pid")
		gpid[g]=$boot_pid
		gunit[g]=${#units[@]}
		units+=("$g guest$g.${ginc[g]} 1")
		t0=$(date +%s)
		if wait_until 240 rejoined "$g"; then
			cpoint ok "kill $k: guest$g.${ginc[g]} rejoined, every other guest reconnected to it ($(($(date +%s) - t0)) s)"
		else
			cpoint "not ok" "kill $k: guest$g.${ginc[g]} rejoined, every other guest reconnected to it (not after $(($(date +%s) - t0)) s)"
			fails=1
			break
		fi
	done
	if [ "$fails" = 0 ] && [ "$reload_guest" -ge 0 ]; then
		ctl_send "$reload_guest" RELOAD
		t0=$(date +%s)
		if wait_until 100000 tap_grep "$reload_guest" '^# RELOADS-DONE'; then
			cpoint ok "guest$reload_guest ran its reloads ($(($(date +%s) - t0)) s)"
		else
			cpoint "not ok" "guest$reload_guest ran its reloads (not after $(($(date +%s) - t0)) s)"
		fi
	fi
	for g in $(seq 0 $((guests - 1))); do ctl_send "$g" STOP; done
	echo "# chaos: STOP sent at $(date +%T.%N | cut -c1-12)"
}
[ -z "$chaos" ] || chaos_run
timed_out=0
crashed=0
while :; do
	alive=0
	for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
	[ "$alive" = 1 ] || break
	if [ "$(date +%s)" -ge "$deadline" ]; then
		timed_out=1
		break
	fi
	if [ -n "$crash_guest" ] && [ "$crashed" = 0 ] && [ -f "$results/guest$crash_guest.tap" ] &&
		tr -d '\r' <"$results/guest$crash_guest.tap" 2>/dev/null | grep -qF -- "$crash_on"; then
		kill -9 "${pids[crash_guest]}" 2>/dev/null || true
		crashed=1
		echo "# fault hook: killed guest$crash_guest (QEMU pid ${pids[crash_guest]}) with SIGKILL at $(date +%T.%N | cut -c1-12) on \"$crash_on\""
		if [ "$restart" = 1 ]; then
			wait "${pids[crash_guest]}" 2>/dev/null || true
			sleep 1
			boot_guest "$crash_guest" 2
			pids+=("$boot_pid")
			units+=("$crash_guest guest$crash_guest.2 1")
			echo "# fault hook: restarted guest$crash_guest as incarnation 2"
		fi
	fi
	if [ -n "$hook" ] && [ -z "$hook_pid" ] &&
		cat "$results"/guest*.tap 2>/dev/null | tr -d '\r' | grep -qF -- "$hook_on"; then
		shm_all=$(for d in $(seq 0 $((devices - 1))); do shm_of "$d"; done | tr '\n' ' ')
		VMCS_SHM=$(shm_of 0) VMCS_SHM_ALL=$shm_all VMCS_SERVER=$(sock_of 0) VMCS_RESULTS=$results VMCS_VARIANT=$variant \
			bash -c "$hook" >"$results/hook.tap" 2>"$results/hook.log" &
		hook_pid=$!
		echo "# host hook: started on \"$hook_on\" at $(date +%T.%N | cut -c1-12)"
	fi
	sleep 0.2
done
hook_rc=""
if [ -n "$hook_pid" ]; then
	for _ in $(seq 300); do kill -0 "$hook_pid" 2>/dev/null || break; sleep 0.2; done
	kill -9 "$hook_pid" 2>/dev/null || true
	# (A hook killed here exits 137: not a reason for `set -e` to end the report.)
	hook_rc=0
	wait "$hook_pid" 2>/dev/null || hook_rc=$?
	hook_pid=""
fi
if [ "$timed_out" = 1 ]; then
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
fi
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done

# Report: each guest's test points, then whether it finished and whether its log is clean.
fail=0
emit() { echo "$1 - [$scenario/$variant/${guests}g] $2"; [ "$1" = ok ] || fail=1; }
if [ -n "$crash_guest" ]; then
	if [ "$crashed" = 1 ]; then
		emit ok "fault hook: guest$crash_guest killed on \"$crash_on\""
	else
		emit "not ok" "fault hook: guest$crash_guest killed on \"$crash_on\" (marker never seen)"
	fi
fi
if [ -n "$hook" ]; then
	if [ -z "$hook_rc" ]; then
		emit "not ok" "host hook: started on \"$hook_on\" (marker never seen)"
	else
		while IFS= read -r line; do
			case "$line" in
			"ok "*) emit ok "host hook: ${line#ok - }" ;;
			"not ok "*) emit "not ok" "host hook: ${line#not ok - }" ;;
			"#"*) echo "$line" ;;
			esac
		done <"$results/hook.tap"
		if [ "$hook_rc" = 0 ]; then
			emit ok "host hook: exited 0"
		else
			emit "not ok" "host hook: exited $hook_rc (see $results/hook.log)"
			tail -n 5 "$results/hook.log" | sed 's/^/# /'
		fi
	fi
fi
if [ -n "$chaos" ]; then
	for p in "${chaos_points[@]}"; do emit "${p%%|*}" "chaos: ${p#*|}"; done
	while IFS= read -r line; do
		case "$line" in
		"ok "*) emit ok "${line#ok - }" ;;
		"not ok "*) emit "not ok" "${line#not ok - }" ;;
		*) echo "$line" ;;
		esac
	done < <("$VMCS_TOP/qemu-test/chaos-table.sh" "$results" "$reload_guest")
fi
for u in "${units[@]}"; do
	read -r g stem must_finish <<<"$u"
	tap="$results/$stem.tap"
	con="$results/$stem.log"
	touch "$tap" "$con"
	planned=$(sed -n 's/^1\.\.\([0-9]*\).*/\1/p' "$tap" | head -n1)
	ran=0
	while IFS= read -r line; do
		case "$line" in
		"ok "*) emit ok "${line#ok * - }"; ran=$((ran + 1)) ;;
		"not ok "*) emit "not ok" "${line#not ok * - }"; ran=$((ran + 1)) ;;
		"#"*) echo "$line" ;;
		"DEMO "*) [ "$demo" = 1 ] && echo "${line#DEMO }" >&2 ;;
		esac
	done < <(tr -d '\r' <"$tap")
	if [ -z "$planned" ] && [ "$must_finish" = 0 ] && [ -n "$chaos" ]; then
		: # killed by the chaos controller before its plan (printed at the end)
	elif [ -z "$planned" ]; then
		emit "not ok" "$stem: TAP plan present"
	elif [ "$ran" != "$planned" ]; then
		emit "not ok" "$stem: ran $ran of $planned planned tests"
	fi
	if [ "$must_finish" = 0 ]; then
		: # killed by the fault hook
	elif grep -q '^VMCS-SCENARIO-EXIT' "$tap"; then
		emit ok "$stem: scenario finished"
	else
		emit "not ok" "$stem: scenario finished (timed out: $timed_out; see $con)"
	fi
	# The sanitizer kernel: after the scenario the guest's init unloaded vmcs and had kmemleak
	# scan (qemu-test/init); both must have happened and found nothing.
	if [ "$kernel" = sanitize ] && [ "$must_finish" = 1 ]; then
		skipped=$(tr -d '\r' <"$tap" | sed -n 's/^VMCS-SANITIZE skipped: //p')
		leaks=$(tr -d '\r' <"$tap" | sed -n 's/^VMCS-SANITIZE kmemleak \([0-9]*\)$/\1/p')
		if [ -n "$skipped" ]; then
			emit ok "$stem: no rmmod and no kmemleak scan after the scenario, on purpose ($skipped)"
		else
			if grep -qx 'VMCS-SANITIZE rmmod ok' <(tr -d '\r' <"$tap"); then
				emit ok "$stem: vmcs unloaded after the scenario"
			else
				emit "not ok" "$stem: vmcs unloaded after the scenario"
				tr -d '\r' <"$tap" | grep '^VMCS-SANITIZE rmmod' | sed 's/^/# /' || true
			fi
			if [ "$leaks" = 0 ]; then
				emit ok "$stem: kmemleak scan after rmmod: no unreferenced object"
			else
				emit "not ok" "$stem: kmemleak scan after rmmod: no unreferenced object (${leaks:-no scan} reported)"
			fi
		fi
	fi
	bad=$(vmcs_log_scan "$con" || true)
	if [ -z "$bad" ]; then
		emit ok "$stem: serial log clean"
	else
		emit "not ok" "$stem: serial log clean"
		echo "$bad" | sed 's/^/# /'
	fi
done
if [ "$fail" = 0 ]; then
	log "PASS: $scenario ($variant, $guests guests); logs in $results"
else
	log "FAIL: $scenario ($variant, $guests guests); logs in $results"
fi
exit "$fail"
