#!/usr/bin/env bash
# Print the kernel command-line options that give the test guests a fine clock: the TSC as
# clocksource, at the host's TSC frequency (a TCG guest's TSC is the host's), so that
# clock_gettime() has nanosecond resolution and stays in the vDSO. Without this the guests
# calibrate against the PIT under load, see no HPET (no ACPI) and fall back to
# refined-jiffies (4 ms steps). See docs/performance.md "The guest clock".
#
# The frequency is measured on the host (qemu-test/tsc-khz.c, built into build/) once per
# host boot and kept in build/host-tsc-khz; VMCS_TSC_KHZ overrides it. If the host's TSC is
# not invariant (no constant_tsc and nonstop_tsc) or cannot be measured, prints the old
# options (tsc=unstable: refined-jiffies) and says so on stderr.
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"

fallback="tsc=unstable no_timer_check"
khz=${VMCS_TSC_KHZ:-}
if [ -z "$khz" ]; then
	flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
	if ! grep -qw constant_tsc <<<"$flags" || ! grep -qw nonstop_tsc <<<"$flags"; then
		log "guest clock: the host TSC is not invariant; guests use refined-jiffies"
		echo "$fallback"
		exit 0
	fi
	cache="$VMCS_TOP/build/host-tsc-khz"
	boot=$(cat /proc/sys/kernel/random/boot_id)
	if [ -f "$cache" ] && [ "$(cut -d' ' -f1 "$cache")" = "$boot" ]; then
		khz=$(cut -d' ' -f2 "$cache")
	else
		bin="$VMCS_TOP/build/tsc-khz"
		mkdir -p "$VMCS_TOP/build"
		if [ ! -x "$bin" ] || [ "$VMCS_TOP/qemu-test/tsc-khz.c" -nt "$bin" ]; then
			${CC:-cc} -O2 -Wall -Wextra -o "$bin.$$" "$VMCS_TOP/qemu-test/tsc-khz.c" && mv "$bin.$$" "$bin"
		fi
		if khz=$("$bin"); then
			echo "$boot $khz" >"$cache.$$" && mv "$cache.$$" "$cache"
		else
			log "guest clock: could not measure the host TSC; guests use refined-jiffies"
			echo "$fallback"
			exit 0
		fi
	fi
fi
case "$khz" in '' | *[!0-9]*) die "bad TSC frequency '$khz' (VMCS_TSC_KHZ?)" ;; esac
echo "tsc=reliable clocksource=tsc tsc_early_khz=$khz no_timer_check"
