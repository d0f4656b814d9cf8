/*
 * fuzz_segment.c -- segment iteration over untrusted replica bytes
 * (common/segment.h: seg_iter_*, seg_verify, seg_entry_check,
 * seg_parse_object / seg_parse_tombstone).
 *
 * Input: one mode byte, then the segment bytes.  Entries carry CRC32Cs that
 * random bytes never match, so with mode bit 0 the harness first walks the
 * bytes as entry headers and writes the right CRC into each one it can
 * frame (lengths untouched, so bad lengths still reach the iterator); with
 * bit 1 it verifies against the certificate of what it fixed, else against
 * the last 8 bytes taken as a certificate.  Bit 2 truncates the length the
 * iterator is given by the next byte.
 *
 * Oracle: no out-of-bounds access (the bytes sit in an exact-size heap
 * copy), every entry handed out lies inside the length, the offsets rise,
 * and the parsed parts of objects and tombstones lie inside the entry.
 */
#include <stdlib.h>
#include "common/crc32c.h"
#include "common/segment.h"
#include "tests/fuzz/fuzz_common.h"

#define FZ_CHECK(c) do { if (!(c)) abort(); } while (0)

/* Fix every frameable entry's crc; returns the certificate of the entries
 * that fit (what a writer would have produced for them). */
static struct seg_certificate fz_fix(uint8_t *b, uint32_t len)
{
    uint32_t pos = 0;
    uint32_t cert_crc = 0;
    while (len - pos >= sizeof(struct seg_entry_hdr)) {
        struct seg_entry_hdr h;
        memcpy(&h, b + pos, sizeof h);
        if ((uint64_t)h.length > len - pos - sizeof h)
            break;
        h.crc32c = 0;
        uint32_t crc = crc32c(0, &h, sizeof h);
        crc = crc32c(crc, b + pos + sizeof h, h.length);
        h.crc32c = crc;
        memcpy(b + pos, &h, sizeof h);
        cert_crc = crc32c(cert_crc, &h, sizeof h);
        pos += (uint32_t)sizeof h + h.length;
    }
    struct seg_certificate c = { .length = pos };
    c.crc32c = crc32c(cert_crc, &c.length, sizeof c.length);
    return c;
}

static void fz_entry(const uint8_t *base, uint32_t len, const struct seg_entry *e)
{
    FZ_CHECK((uint64_t)e->offset + sizeof(struct seg_entry_hdr) + e->length <= len);
    FZ_CHECK(e->body == base + e->offset + sizeof(struct seg_entry_hdr));
    FZ_CHECK(seg_entry_check((const struct seg_entry_hdr *)(base + e->offset)));
    const uint8_t *end = e->body + e->length;
    const uint8_t *key;
    if (e->type == SEG_ENTRY_OBJECT) {
        const struct seg_object *o;
        const uint8_t *value;
        uint32_t vlen;
        if (seg_parse_object(e, &o, &key, &value, &vlen)) {
            FZ_CHECK(key >= e->body && key + o->key_len <= end);
            FZ_CHECK(value >= key + o->key_len && value + vlen <= end);
        }
    } else if (e->type == SEG_ENTRY_TOMBSTONE) {
        const struct seg_tombstone *t;
        if (seg_parse_tombstone(e, &t, &key))
            FZ_CHECK(key >= e->body && key + t->key_len <= end);
    }
    /* the parsers must refuse a body of the other kind too */
    const struct seg_object *o;
    const uint8_t *value;
    uint32_t vlen;
    (void)seg_parse_object(e, &o, &key, &value, &vlen);
    const struct seg_tombstone *t;
    (void)seg_parse_tombstone(e, &t, &key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20))
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    uint8_t *b = malloc(size ? size : 1);
    if (b == NULL)
        return 0;
    memcpy(b, data, size);
    uint32_t len = (uint32_t)size;
    uint32_t ilen = len;
    if ((mode & 4) && len > 0)
        ilen = len - b[0] % (len < 256 ? len : 256);

    struct seg_certificate cert = { 0, 0 };
    if (mode & 1)
        cert = fz_fix(b, ilen);
    if (!(mode & 2) && len >= sizeof cert)
        memcpy(&cert, b + len - sizeof cert, sizeof cert);

    struct seg_iter it;
    struct seg_entry e;
    seg_iter_init(&it, b, ilen);
    int64_t last = -1;
    int n = 0;
    int rc;
    while ((rc = seg_iter_next(&it, &e)) == SEG_ITER_OK) {
        FZ_CHECK((int64_t)e.offset > last);
        last = e.offset;
        fz_entry(b, ilen, &e);
        n++;
    }
    FZ_CHECK(rc == SEG_ITER_END || rc == SEG_ITER_CORRUPT);
    (void)seg_iter_next(&it, &e);       /* after the end: stays ended, no access */
    (void)seg_verify(b, len, &cert);
    (void)seg_verify(b, ilen, &cert);
    free(b);
    return 0;
}
