#!/usr/bin/env bash
# `make demo`: set up everything, boot two guests sharing one ivshmem region, and show
# them exchanging data through vmcs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$VMCS_TOP"
t0=$(date +%s)
log "step 1/3: installing dependencies (idempotent)"
ci/setup-deps.sh
vmcs_toolchain_env
log "step 2/3: building the guest kernel (cached after the first run), vmcs.ko and the initramfs"
eval "$(qemu-test/prepare.sh)"
log "step 3/3: booting two guests under QEMU (TCG) that share one ivshmem-doorbell region"
cat <<'EOT'

  guest0 loads vmcs.ko and serves two echo services on vmcs ports.
  guest1 loads vmcs.ko, asks it for its view of the shared region (`vmcs status`),
  pings guest0 through the shared memory (`vmcs ping 0`), then sends guest0 2016
  messages of 1 byte to 64 KiB and checks every echoed byte.
  Lines below are prefixed with the guest that printed them.
EOT
echo
if qemu-test/run.sh --scenario demo --variant doorbell --guests 2 --clock fine --demo >/dev/null; then
	echo
	log "demo done in $(($(date +%s) - t0)) s: the two guests talked through vmcs."
else
	die "the demo failed; the serial logs named above say why"
fi
