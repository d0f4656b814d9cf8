/* clock.c -- monotonic and wall clocks, and the test time scale. */
#include <math.h>
#include <stdlib.h>
#include <time.h>
#include "common/clock.h"

static inline uint64_t clock_ns_of(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t clock_mono_ns(void) { return clock_ns_of(CLOCK_MONOTONIC); }
uint64_t clock_mono_us(void) { return clock_ns_of(CLOCK_MONOTONIC) / 1000u; }
uint64_t clock_mono_ms(void) { return clock_ns_of(CLOCK_MONOTONIC) / 1000000u; }
uint64_t clock_wall_ms(void) { return clock_ns_of(CLOCK_REALTIME) / 1000000u; }

/* The factor is read from the environment on every call (tests may set it
 * at run time; the call is not on any hot path).  Bad or non-positive
 * values mean 1.0; the factor is capped at 1000. */
uint64_t clock_test_scaled_ms(uint64_t ms)
{
    const char *s = getenv("CRAM_TEST_TIME_SCALE");
    double f = 1.0;
    if (s != NULL && *s != '\0') {
        char *end;
        double v = strtod(s, &end);
        if (*end == '\0' && isfinite(v) && v > 0.0)
            f = v > 1000.0 ? 1000.0 : v;
    }
    double r = (double)ms * f;
    if (r >= 1.8e19)
        return UINT64_MAX;
    return (uint64_t)(r + 0.5);
}
