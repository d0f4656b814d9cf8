/*
 * fuzz_master_wire.c -- the master's request parsers (master/master_wire.h).
 *
 * The input is one whole request message.  Every parser sees it (each checks
 * its own opcode), with a large and a tiny max_value; an accepted multi-op is
 * walked item by item and every pointer handed out is checked to lie inside
 * the message, so an off-by-one that stays inside the fuzzer's buffer is
 * caught too, not only reads past it.
 */
#include <stdlib.h>
#include "master/master_wire.h"
#include "tests/fuzz/fuzz_common.h"

#define FZ_CHECK(c) do { if (!(c)) abort(); } while (0)

static void fz_inside(const uint8_t *buf, uint32_t len, const uint8_t *p, uint64_t n)
{
    if (n == 0)
        return;
    FZ_CHECK(p >= buf && (uint64_t)(p - buf) + n <= len);
}

static void fz_key_op(const uint8_t *buf, uint32_t len, const struct mw_key_op *k)
{
    FZ_CHECK(k->key_len > 0);
    fz_inside(buf, len, k->key, k->key_len);
}

static void fz_multi(const uint8_t *buf, uint32_t len, uint32_t max_value)
{
    struct mw_multi m;
    if (mw_parse_multi(buf, len, max_value, &m) != CRAM_OK)
        return;
    FZ_CHECK(m.count >= 1 && m.count <= WIRE_MAX_MULTI);
    fz_inside(buf, len, m.items, m.items_len);
    struct mw_multi_item it;
    uint32_t n = 0;
    while (mw_multi_next(&m, &it) == 0) {
        FZ_CHECK(it.key_len > 0);
        fz_inside(buf, len, it.key, it.key_len);
        if (it.status == CRAM_OK)
            fz_inside(buf, len, it.value, it.value_len);
        FZ_CHECK(it.status != CRAM_OK || it.value_len <= max_value);
        n++;
        FZ_CHECK(n <= m.count);
    }
    FZ_CHECK(n == m.count);     /* an accepted message has exactly count items */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > WIRE_MAX_MESSAGE)
        return 0;
    /* a private copy of exactly `size` bytes: ASan sees any read past it */
    uint8_t *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    uint32_t len = (uint32_t)size;
    static const uint32_t max_values[2] = { CRAM_MAX_VALUE_LEN, 16 };

    struct mw_key_op k;
    if (mw_parse_read(buf, len, &k) == CRAM_OK)
        fz_key_op(buf, len, &k);
    if (mw_parse_remove(buf, len, &k) == CRAM_OK)
        fz_key_op(buf, len, &k);
    for (int i = 0; i < 2; i++) {
        struct mw_write w;
        if (mw_parse_write(buf, len, max_values[i], &w) == CRAM_OK) {
            FZ_CHECK(w.key_len > 0 && w.value_len <= max_values[i]);
            fz_inside(buf, len, w.key, w.key_len);
            fz_inside(buf, len, w.value, w.value_len);
        }
        fz_multi(buf, len, max_values[i]);
    }
    struct mw_incr in;
    if (mw_parse_incr(buf, len, &in) == CRAM_OK) {
        FZ_CHECK(in.key_len > 0);
        fz_inside(buf, len, in.key, in.key_len);
    }
    struct mw_enum e;
    if (mw_parse_enum(buf, len, &e) == CRAM_OK)
        FZ_CHECK(e.tablet_start <= e.tablet_end);
    if (len >= sizeof(struct wire_reject_rules)) {
        struct wire_reject_rules w;
        cram_reject_rules r;
        memcpy(&w, buf, sizeof w);
        (void)mw_rules(&w, &r);
    }
    free(buf);
    return 0;
}
