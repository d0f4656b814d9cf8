/* clock.h -- monotonic and wall clocks. */
#ifndef CRAM_CLOCK_H
#define CRAM_CLOCK_H
#include <stdint.h>
uint64_t clock_mono_ns(void);     /* CLOCK_MONOTONIC */
uint64_t clock_mono_us(void);
uint64_t clock_mono_ms(void);
uint64_t clock_wall_ms(void);     /* CLOCK_REALTIME, ms since the epoch */
/* CRAM_TEST_TIME_SCALE (env, default 1.0, e.g. 3 under ASan) times ms.
 * Tests and test-facing timeouts scale with this one factor. */
uint64_t clock_test_scaled_ms(uint64_t ms);
#endif
