/*
 * hist.h -- log-linear latency histogram (HdrHistogram-style, ~3% error).
 *
 * Values (e.g. nanoseconds) below 64 are counted exactly; above, each power
 * of two is split into 32 linear sub-buckets, so a percentile is reported
 * within 1/32 of the true value.  Fixed size (no allocation), so one can
 * live per thread and the threads' histograms are merged at the end.
 * Not thread-safe: one writer at a time.
 */
#ifndef CRAM_CLIENT_HIST_H
#define CRAM_CLIENT_HIST_H

#include <stdint.h>

#define CL_HIST_EXACT   64u
#define CL_HIST_SUB     32u
#define CL_HIST_BUCKETS (CL_HIST_EXACT + (64u - 6u) * CL_HIST_SUB)

struct cl_hist {
    uint64_t count;
    uint64_t sum;
    uint64_t min;
    uint64_t max;
    uint64_t b[CL_HIST_BUCKETS];
};

void     cl_hist_init(struct cl_hist *h);
void     cl_hist_record(struct cl_hist *h, uint64_t v);
/* into += from */
void     cl_hist_merge(struct cl_hist *into, const struct cl_hist *from);
/* Value at percentile p (0..100]: the smallest recorded bucket such that at
 * least p% of the values are <= it (bucket midpoint, clamped to [min, max]).
 * 0 for an empty histogram. */
uint64_t cl_hist_percentile(const struct cl_hist *h, double p);
double   cl_hist_mean(const struct cl_hist *h);
/* Bucket of a value and the lowest value of a bucket (exposed for tests). */
uint32_t cl_hist_bucket(uint64_t v);
uint64_t cl_hist_bucket_low(uint32_t idx);

#endif
