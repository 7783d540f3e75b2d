# vmcs: top-level entry points. See README.md.
#
#   make            build vmcs.ko against the cached test kernel (built if missing)
#   make KDIR=...   build vmcs.ko against another Rust-enabled kernel tree
#   make KDIR=debian  build vmcs.ko for Debian's stock Rust-enabled kernel (the running one
#                   when it is one, else the newest 7.2.x; DEBIAN_KERNEL=newest|running|RELEASE)
#                   in a cached chroot with Debian's toolchain: build/debian/vmcs.ko
#   make demo       set up everything, boot two guests, show them talking
#   make test       set up everything, run every test (TAP, ends in "N passed, N failed")
#   make stress     the long chaos campaigns: 50 guest kills, 100 module reloads and 10
#                   unbinds under a mesh of checked traffic, the hostile doorbell storm;
#                   prints the table (~25 min on 2 cores; STRESS_* knobs in
#                   ci/stress.sh); results in build/stress/<stamp>/
#   make bench      benchmarks: every path (vmcs, TCP, vsock, memcpy) between the same guests
#                   on the production-configured bench kernel, with plots (~12 min;
#                   BENCH_QUICK=1 1-2 min); results in build/bench/<stamp>/
#   make sanitize   every test scenario on the sanitizer kernel (KASAN, KFENCE, kmemleak,
#                   UBSAN, lockdep; ci/sanitize.sh; `make test` runs a subset)
#   make bench-proto  the host protocol bench only
#   make install    install vmcs.ko, the udev rule, the vmcs CLI and the header
#                   (DESTDIR, PREFIX=/usr/local, KDIR as for make)
#   make fuzz       run the protocol fuzzer for a bounded time (FUZZ_SECONDS, default 600)
#   make clean      remove build products (the kernel cache in ~/.cache/vmcs stays)

SHELL := /bin/bash
FUZZ_SECONDS ?= 600

.PHONY: all module setup kernel test stress sanitize demo bench bench-proto fuzz clippy-module fmt clean install

all: module

setup:
	@ci/setup-deps.sh

kernel: setup
	@ci/build-kernel.sh >/dev/null

module:
	@if [ -z "$(KDIR)" ]; then ci/setup-deps.sh; fi
	@ko=$$(KDIR="$(KDIR)" VMCS_DEBIAN_KERNEL="$(DEBIAN_KERNEL)" ci/build-module.sh) && echo "built $$ko"

clippy-module:
	@KDIR="$(KDIR)" ci/build-module.sh CLIPPY=1 >/dev/null

test:
	@ci/test.sh

stress:
	@ci/stress.sh

sanitize: setup
	@ci/sanitize.sh

install:
	@KDIR="$(KDIR)" VMCS_DEBIAN_KERNEL="$(DEBIAN_KERNEL)" PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" ci/install.sh

demo:
	@ci/demo.sh

bench:
	@ci/bench.sh

bench-proto:
	@rust/bench/run.sh

fuzz:
	@rust/fuzz/run.sh $(FUZZ_SECONDS)

fmt:
	@ci/fmt.sh

clean:
	@if [ -n "$(KDIR)" ] && [ -f "$(KDIR)/Makefile" ]; then $(MAKE) -C "$(KDIR)" M=$(CURDIR) clean; fi
	rm -rf build vmcs.ko *.o module/*.o module/.*.cmd .*.cmd *.mod *.mod.c modules.order Module.symvers
