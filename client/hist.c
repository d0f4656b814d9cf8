/* hist.c -- see hist.h. */
#include <string.h>

#include "client/hist.h"

void cl_hist_init(struct cl_hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

uint32_t cl_hist_bucket(uint64_t v)
{
    if (v < CL_HIST_EXACT)
        return (uint32_t)v;
    uint32_t e = 63u - (uint32_t)__builtin_clzll(v);       /* 6..63 */
    uint32_t sub = (uint32_t)(v >> (e - 5)) & (CL_HIST_SUB - 1);
    return CL_HIST_EXACT + (e - 6) * CL_HIST_SUB + sub;
}

uint64_t cl_hist_bucket_low(uint32_t idx)
{
    if (idx < CL_HIST_EXACT)
        return idx;
    uint32_t e = (idx - CL_HIST_EXACT) / CL_HIST_SUB + 6;
    uint64_t sub = (idx - CL_HIST_EXACT) % CL_HIST_SUB;
    return (CL_HIST_SUB + sub) << (e - 5);
}

void cl_hist_record(struct cl_hist *h, uint64_t v)
{
    h->b[cl_hist_bucket(v)]++;
    h->count++;
    h->sum += v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void cl_hist_merge(struct cl_hist *into, const struct cl_hist *from)
{
    for (uint32_t i = 0; i < CL_HIST_BUCKETS; i++)
        into->b[i] += from->b[i];
    into->count += from->count;
    into->sum += from->sum;
    if (from->min < into->min)
        into->min = from->min;
    if (from->max > into->max)
        into->max = from->max;
}

uint64_t cl_hist_percentile(const struct cl_hist *h, double p)
{
    uint64_t rank;
    uint64_t seen = 0;

    if (h->count == 0)
        return 0;
    if (p <= 0)
        return h->min;
    if (p >= 100)
        return h->max;
    rank = (uint64_t)(p / 100.0 * (double)h->count + 0.999999);
    if (rank == 0)
        rank = 1;
    for (uint32_t i = 0; i < CL_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t lo = cl_hist_bucket_low(i);
            uint64_t hi = i + 1 < CL_HIST_BUCKETS ? cl_hist_bucket_low(i + 1) - 1 : UINT64_MAX;
            uint64_t mid = lo + (hi - lo) / 2;
            if (mid < h->min)
                mid = h->min;
            if (mid > h->max)
                mid = h->max;
            return mid;
        }
    }
    return h->max;
}

double cl_hist_mean(const struct cl_hist *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0.0;
}
