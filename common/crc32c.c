/* crc32c.c -- CRC32C through ISA-L.
 *
 * ISA-L's crc32_iscsi() neither inverts its initial value nor its result (it
 * is the raw reflected register update).  The standard CRC32C pre- and
 * post-inverts, so we pass ~crc in and invert the result; that makes the
 * function chainable: crc32c(crc32c(0, a), b) == crc32c(0, ab). */
#include <limits.h>
#include <isa-l/crc.h>
#include "common/crc32c.h"

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
    unsigned char *p = (unsigned char *)buf;   /* ISA-L takes a non-const pointer; it only reads */
    uint32_t reg = ~crc;
    /* crc32_iscsi takes an int length: feed huge buffers in chunks */
    while (len > 0) {
        int n = len > (size_t)(INT_MAX & ~63) ? (INT_MAX & ~63) : (int)len;
        reg = crc32_iscsi(p, n, reg);
        p += n;
        len -= (size_t)n;
    }
    return ~reg;
}
