// SPDX-License-Identifier: GPL-2.0
/*
 * tsc-khz: print the host's TSC frequency in kHz, measured against CLOCK_MONOTONIC_RAW.
 *
 * A TCG guest reads the host's TSC (QEMU's rdtsc helper returns the host's rdtsc plus an
 * offset), so this is the frequency the guests are told with tsc_early_khz= (see
 * qemu-test/guest-clock.sh and docs/performance.md). Each sample brackets one
 * clock_gettime() between two rdtsc reads and keeps the tightest of several tries, so a
 * preemption between the reads cannot skew it; three 100 ms intervals are measured and the
 * median printed. Exit status 1 if the measurements disagree by more than 0.1 %.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <x86intrin.h>

struct sample {
	uint64_t tsc;
	uint64_t ns;
};

static struct sample take(void)
{
	struct sample best = { 0, 0 };
	uint64_t width = UINT64_MAX;

	for (int i = 0; i < 50; i++) {
		struct timespec ts;
		uint64_t a = __rdtsc();

		clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
		uint64_t b = __rdtsc();

		if (b - a < width) {
			width = b - a;
			best.tsc = a + (b - a) / 2;
			best.ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
		}
	}
	return best;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int main(void)
{
	double khz[3];
	const struct timespec pause = { 0, 100 * 1000 * 1000 };

	for (int i = 0; i < 3; i++) {
		struct sample s0 = take();

		nanosleep(&pause, NULL);
		struct sample s1 = take();

		khz[i] = (double)(s1.tsc - s0.tsc) * 1e6 / (double)(s1.ns - s0.ns);
	}
	qsort(khz, 3, sizeof(khz[0]), cmp);
	if (khz[0] <= 0 || (khz[2] - khz[0]) > khz[1] * 1e-3) {
		fprintf(stderr, "tsc-khz: measurements disagree: %.0f %.0f %.0f kHz\n", khz[0], khz[1], khz[2]);
		return 1;
	}
	printf("%.0f\n", khz[1]);
	return 0;
}
