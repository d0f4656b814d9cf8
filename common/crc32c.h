/* crc32c.h -- CRC32C (Castagnoli), hardware-accelerated through ISA-L. */
#ifndef CRAM_CRC32C_H
#define CRAM_CRC32C_H
#include <stddef.h>
#include <stdint.h>
/* crc of buf, continuing from a previous crc (start with 0).  Standard
 * CRC32C: crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);
#endif
