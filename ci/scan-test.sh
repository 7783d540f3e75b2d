#!/usr/bin/env bash
# The serial-log scan (vmcs_log_scan in ci/lib.sh, used by qemu-test/run.sh for every guest
# of every kernel) against planted reports: a clean boot log of the sanitizer kernel must
# pass, and the same log with any one report line of each kind added must fail, naming that
# line. Prints TAP (`ok - ...`); exits non-zero on any failure. No guest is booted.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail=0
point() { if [ "$1" = ok ]; then echo "ok - scan: $2"; else echo "not ok - scan: $2"; fail=1; fi; }

# A clean log, with the lines the sanitizer kernel prints when its tools start, and lines
# that merely mention the tools, as the module and the scenarios print them.
cat >"$dir/clean.log" <<'LOG'
[    0.000000] Linux version 7.2.13 (root@host) (Debian clang version 22.1.8, LLD 22.1.8) #1 SMP
[    0.000000] Command line: console=ttyS0 panic=-1 oops=panic tsc=unstable vmcstest.guest=0
[    0.000000] kasan: KernelAddressSanitizer initialized (generic)
[    0.021000] kmemleak: Kernel memory leak detector initialized (mem pool available: 15820)
[    0.052000] kfence: initialized - using 2097152 bytes for 255 objects at 0x(____ptrval____)-0x(____ptrval____)
[    0.310000] ODEBUG selftest passed
[    1.200000] vmcs: loading out-of-tree module taints kernel.
[    1.230000] vmcs0: ivshmem-plain bound, peer id 0, region 4096 KiB
[    3.100000] vmcs0: domain released
LOG
if out=$(vmcs_log_scan "$dir/clean.log"); then
	point "not ok" "a clean sanitizer-kernel boot log passes (flagged: $out)"
else
	point ok "a clean sanitizer-kernel boot log passes"
fi

# One report line of each kind, as the kernel prints it.
while IFS='|' read -r kind line; do
	[ -n "$kind" ] || continue
	{ cat "$dir/clean.log"; echo "$line"; echo "[    9.000000] vmcs0: domain released"; } >"$dir/planted.log"
	if out=$(vmcs_log_scan "$dir/planted.log") && grep -qF -- "$line" <<<"$out"; then
		point ok "$kind report fails the log"
	else
		point "not ok" "$kind report fails the log (not flagged: $line)"
	fi
done <<'LINES'
KASAN|[    5.123456] BUG: KASAN: slab-use-after-free in vmcs_rx_pass+0x1c4/0x9a0 [vmcs]
KASAN (vmalloc)|[    5.123456] BUG: KASAN: vmalloc-out-of-bounds in copy_to_ring+0x22/0x80 [vmcs]
KFENCE|[    5.123456] BUG: KFENCE: out-of-bounds read in vmcs_recv+0x5e/0x120 [vmcs]
UBSAN bounds|[    5.123456] UBSAN: array-index-out-of-bounds in module/glue/vmcs_glue.c:42:9
UBSAN shift|[    5.123456] UBSAN: shift-out-of-bounds in module/glue/vmcs_glue.c:51:20
kmemleak (debugfs report)|unreferenced object 0xffff888004a1c000 (size 64):
kmemleak (in dmesg)|[    5.123456] kmemleak: unreferenced object 0xffff888004a1c000 (size 64):
kmemleak off|[    5.123456] kmemleak: Kernel memory leak detector disabled
kmemleak pool|[    5.123456] kmemleak: Memory pool empty, consider increasing CONFIG_DEBUG_KMEMLEAK_MEM_POOL_SIZE
lockdep|[    5.123456] WARNING: possible circular locking dependency detected
refcount|[    5.123456] WARNING: CPU: 0 PID: 57 at lib/refcount.c:28 refcount_warn_saturate+0x9a/0x110
might_sleep|[    5.123456] BUG: sleeping function called from invalid context at kernel/locking/mutex.c:580
DEBUG_LIST|[    5.123456] list_del corruption. prev->next should be ffff888004a1c000, but was dead000000000100
debug objects|[    5.123456] ODEBUG: free active (active state 0) object: ffff888004a1c0a8 object type: work_struct hint: vmcs_rx_work+0x0/0x40 [vmcs]
Rust panic|[    5.123456] rust_kernel: panicked at module/conn/mod.rs:120:17:
BUG()|[    5.123456] kernel BUG at rust/helpers/bug.c:7!
oops|[    5.123456] Oops: invalid opcode: 0000 [#1] SMP KASAN
panic|[    5.123456] Kernel panic - not syncing: Fatal exception
GPF|[    5.123456] general protection fault, probably for non-canonical address 0xdffffc0000000000: 0000 [#1] SMP KASAN
RCU stall|[   25.123456] rcu: INFO: rcu_preempt self-detected stall on CPU
hung task|[  125.123456] INFO: task vmcs-test:77 blocked for more than 120 seconds.
LINES

[ "$fail" = 0 ]
