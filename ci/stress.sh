#!/usr/bin/env bash
# `make stress`: the long chaos campaigns (docs/testing.md "make stress"). `make test` runs
# a short version of each; this runs them at length, under nice, and prints the table.
#
#   1. chaos (qemu-test/scenarios/chaos.sh, run.sh --chaos): STRESS_GUESTS (4) guests on
#      STRESS_VARIANT (doorbell) run the mesh of checksummed stream, seqpacket and bulk
#      traffic; the launcher SIGKILLs and restarts a random guest STRESS_KILLS (50) times;
#      then the last guest runs STRESS_RELOADS (100) rmmod/insmod cycles and
#      STRESS_UNBINDS (10) unbind/rebind cycles while the others keep talking and keep
#      reconnecting to it;
#   2. hostile on doorbell with the doorbell storm, with STRESS_PHASE_MS (8000) per
#      attack phase;
#   3. the plain variants make test leaves out (its doorbell runs cover those scenarios):
#      hostile plain 2, basic plain 2, transport plain 2, crash plain 2, messaging plain 2,
#      with make test's arguments (STRESS_SKIP_VARIANTS=1 skips them).
#
# Other knobs: STRESS_SEED (the kill sequence; random and printed when unset),
# STRESS_KERNEL (test; any name run.sh --kernel takes, e.g. a sanitizer kernel),
# STRESS_TIMEOUT (14400 s for the chaos run), STRESS_NICE (10), STRESS_SKIP_HOSTILE=1.
# Output: TAP lines, the table, "N passed, N failed"; logs in build/stress/<stamp>/.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$VMCS_TOP" || exit 1

kills=${STRESS_KILLS:-50}
reloads=${STRESS_RELOADS:-100}
unbinds=${STRESS_UNBINDS:-10}
guests=${STRESS_GUESTS:-4}
variant=${STRESS_VARIANT:-doorbell}
kernel=${STRESS_KERNEL:-test}
tmo=${STRESS_TIMEOUT:-14400}
nice_n=${STRESS_NICE:-10}
phase_ms=${STRESS_PHASE_MS:-8000}
out=$VMCS_TOP/build/stress/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"

ci/setup-deps.sh >"$out/setup.log" 2>&1 || die "set-up failed (see $out/setup.log)"
vmcs_toolchain_env
if [ "$kernel" = test ]; then
	env_out=$(qemu-test/prepare.sh 2>"$out/prepare.log") || die "prepare failed (see $out/prepare.log)"
	eval "$env_out"
fi

passed=0
failed=0
# run_tap NAME COMMAND...: the command's TAP points counted, its comments kept.
run_tap() {
	local name=$1 line s
	shift
	s=$(date +%s)
	"$@" >"$out/$name.tap" 2>"$out/$name.log"
	echo "$?" >"$out/$name.rc"
	while IFS= read -r line; do
		case "$line" in
		"ok "*) echo "$line"; passed=$((passed + 1)) ;;
		"not ok "*) echo "$line"; failed=$((failed + 1)) ;;
		esac
	done <"$out/$name.tap"
	echo "# $name: $(($(date +%s) - s)) s"
}

seed=()
[ -z "${STRESS_SEED:-}" ] || seed=(--chaos-seed "$STRESS_SEED")
echo "# make stress: $kills kills, $reloads reloads, $unbinds unbinds, $guests guests, $variant, kernel $kernel; logs in $out"
run_tap chaos nice -n "$nice_n" qemu-test/run.sh --scenario chaos --variant "$variant" --guests "$guests" \
	--kernel "$kernel" --timeout "$tmo" --chaos "$kills" "${seed[@]}" \
	--append "vmcstest.reloads=$reloads vmcstest.unbinds=$unbinds" --results "$out/chaos"
hostile_line="(skipped)"
if [ "${STRESS_SKIP_HOSTILE:-0}" != 1 ]; then
	evil=$(qemu-test/build-host-tools.sh vmcs-evil) || die "vmcs-evil build failed"
	run_tap hostile nice -n "$nice_n" qemu-test/run.sh --scenario hostile --variant doorbell --guests 2 \
		--devices 2 --kernel "$kernel" --timeout 600 --results "$out/hostile" \
		--host-hook "$evil --server \$VMCS_SERVER --port 7000 --phase-ms $phase_ms" --hook-on EVIL-GO
	hostile_line=$(grep -o 'doorbell storm: [0-9]* doorbells rung[^)]*)' "$out/hostile.tap" | head -n1)
	rate=$(grep -o 'the echo keeps >= 1/20 of its rate: [^;]*' "$out/hostile.tap" | head -n1)
	hostile_line="${hostile_line:-no storm seen}; ${rate:-no rate}"
fi

if [ "${STRESS_SKIP_VARIANTS:-0}" != 1 ]; then
	evil=$(qemu-test/build-host-tools.sh vmcs-evil) || die "vmcs-evil build failed"
	v() { # v NAME RUN.SH-ARGUMENTS...: one of make test's plain variants
		local name=$1
		shift
		run_tap "$name" nice -n "$nice_n" qemu-test/run.sh --kernel "$kernel" --results "$out/$name" "$@"
	}
	v hostile-plain --scenario hostile --variant plain --guests 2 --devices 2 --timeout 360 --shm-size 4M \
		--host-hook "$evil --shm \$VMCS_SHM --port 7000" --hook-on EVIL-GO
	v basic-plain --scenario basic --variant plain --guests 2
	v transport-plain --scenario transport --variant plain --guests 2 --shm-size 4M
	v crash-plain --scenario crash --variant plain --guests 2 --timeout 300 --crash-guest 1 \
		--crash-on CRASH-POINT --restart
	v messaging-plain --scenario messaging --variant plain --guests 2
fi

echo "# make stress table ($(grep -o 'seed [0-9]*' "$out/chaos.tap" | head -n1), kernel $kernel, $variant, $guests guests):"
grep '^# |' "$out/chaos.tap" | sed 's/^# //'
printf '| %-46s | %s\n' "hostile doorbell peer" "$hostile_line"
echo "# logs in $out"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && ! grep -qv '^0$' "$out"/*.rc
