/*
 * fuzz_client_parse.c -- the client's response parsers (client/parse.c:
 * cl_parse_status / read / write / incr / multi / enum).  A server's reply
 * is as untrusted to the client as a request is to the server.
 *
 * Input: byte 0 picks the parser (and MULTI_READ vs other multi-ops), bytes
 * 1..2 the item count a multi-op expects; the rest is the response, in an
 * exact-size heap copy.
 *
 * Oracle: no out-of-bounds access; whatever a parser accepts can be walked
 * the way libcram walks it (client/multi.c, client/enumerate.c) without
 * leaving the response, and a returned status is a known cram_status.
 */
#include <stdlib.h>
#include "client/client_int.h"
#include "common/wire.h"
#include "tests/fuzz/fuzz_common.h"

#define FZ_CHECK(c) do { if (!(c)) abort(); } while (0)

static void fz_inside(const uint8_t *buf, uint32_t len, const uint8_t *p, uint64_t n)
{
    if (n == 0)
        return;
    FZ_CHECK(p >= buf && (uint64_t)(p - buf) + n <= len);
}

static void fz_walk_multi(const uint8_t *buf, uint32_t len, uint32_t count, const uint8_t *items)
{
    const uint8_t *p = items;
    for (uint32_t i = 0; i < count; i++) {
        struct wire_multi_resp_item it;
        fz_inside(buf, len, p, sizeof it);
        memcpy(&it, p, sizeof it);
        FZ_CHECK(it.status >= 0 && it.status <= CRAM_STATUS_MAX);
        p += sizeof it;
        fz_inside(buf, len, p, it.value_len);
        p += it.value_len;
    }
    FZ_CHECK(p == buf + len);
}

static void fz_walk_enum(const uint8_t *buf, uint32_t len, uint32_t count, const uint8_t *items)
{
    const uint8_t *p = items;
    for (uint32_t i = 0; i < count; i++) {
        struct wire_enum_item it;
        fz_inside(buf, len, p, sizeof it);
        memcpy(&it, p, sizeof it);
        FZ_CHECK(it.key_len > 0);
        p += sizeof it;
        fz_inside(buf, len, p, (uint64_t)it.key_len + it.value_len);
        p += (size_t)it.key_len + it.value_len;
    }
    FZ_CHECK(p == buf + len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3 || size > WIRE_MAX_MESSAGE)
        return 0;
    uint8_t sel = data[0];
    uint32_t count = (uint32_t)data[1] | (uint32_t)data[2] << 8;
    uint32_t len = (uint32_t)size - 3;
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data + 3, len);

    cram_status st = CRAM_OK;
    uint64_t version;
    const uint8_t *value;
    uint32_t vlen;
    int64_t nv;
    const uint8_t *items;
    int rc = 0;
    switch (sel % 7) {
    case 0:
        rc = cl_parse_status(buf, len, &st);
        break;
    case 1:
        rc = cl_parse_read(buf, len, &st, &version, &value, &vlen);
        if (rc == 0 && st == CRAM_OK)
            fz_inside(buf, len, value, vlen);
        break;
    case 2:
        rc = cl_parse_write(buf, len, &st, &version);
        break;
    case 3:
        rc = cl_parse_incr(buf, len, &st, &version, &nv);
        break;
    case 4:
    case 5:
        rc = cl_parse_multi(buf, len, sel % 7 == 4, count, &st, &items);
        if (rc == 0 && st == CRAM_OK)
            fz_walk_multi(buf, len, count, items);
        break;
    case 6: {
        uint32_t n;
        uint64_t cursor;
        int done;
        rc = cl_parse_enum(buf, len, &st, &n, &cursor, &done, &items);
        if (rc == 0 && st == CRAM_OK) {
            FZ_CHECK(done == 0 || done == 1);
            fz_walk_enum(buf, len, n, items);
        }
        break;
    }
    }
    if (rc == 0)
        FZ_CHECK((int)st >= 0 && (int)st <= CRAM_STATUS_MAX);
    free(buf);
    return 0;
}
