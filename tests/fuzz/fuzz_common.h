/*
 * fuzz_common.h -- helpers shared by the fuzz targets (tests/fuzz/fuzz_*.c).
 *
 * Every target defines LLVMFuzzerTestOneInput.  Built with clang and
 * -fsanitize=fuzzer it is a libFuzzer target; built with gcc and
 * replay_main.c it replays corpus files (the ctest fuzz.replay).
 *
 * Inputs that carry several messages separate them with FUZZ_SEP, so a
 * target can drive a stateful service (open a replica, then write to it)
 * and libFuzzer's mutations (insert/erase bytes) keep the framing intact.
 */
#ifndef CRAM_FUZZ_COMMON_H
#define CRAM_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "common/log.h"

#define FUZZ_SEP "-FZ-"
#define FUZZ_SEP_LEN 4u
#define FUZZ_MAX_PARTS 64   /* later parts are ignored: bounds the work per input */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Service logs at WARN and below are noise at thousands of inputs a second
 * (and slow the fuzzer down): keep errors only, unless FUZZ_VERBOSE is set. */
static inline void fuzz_quiet(void)
{
    if (getenv("FUZZ_VERBOSE") == NULL)
        log_level_current = LOG_LVL_ERROR;
}

typedef void (*fuzz_part_fn)(void *arg, const uint8_t *p, size_t n);

/* Call fn on each FUZZ_SEP-separated part of data (at most FUZZ_MAX_PARTS). */
static inline void fuzz_split(const uint8_t *data, size_t size, fuzz_part_fn fn, void *arg)
{
    size_t start = 0;
    int parts = 0;
    for (size_t i = 0; parts < FUZZ_MAX_PARTS; ) {
        if (i + FUZZ_SEP_LEN <= size && memcmp(data + i, FUZZ_SEP, FUZZ_SEP_LEN) == 0) {
            fn(arg, data + start, i - start);
            parts++;
            i += FUZZ_SEP_LEN;
            start = i;
        } else if (i >= size) {
            fn(arg, data + start, size - start);
            break;
        } else {
            i++;
        }
    }
}

#endif /* CRAM_FUZZ_COMMON_H */
