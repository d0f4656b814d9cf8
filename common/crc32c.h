/* crc32c.h -- CRC32C (Castagnoli), hardware-accelerated: ISA-L, and the
 * SSE4.2 instruction for short buffers (see crc32c.c). */
#ifndef CRAM_CRC32C_H
#define CRAM_CRC32C_H
#include <stddef.h>
#include <stdint.h>
/* crc of buf, continuing from a previous crc (start with 0).  Standard
 * CRC32C: crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);
/* The same through ISA-L only, whatever the length (tests compare). */
uint32_t crc32c_isal(uint32_t crc, const void *buf, size_t len);
#endif
