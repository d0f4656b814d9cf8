/* keyhash.h -- the key hash that places objects in tablets and hash buckets.
 * 64-bit XXH3 of the key, seeded with the table id.  Client and master must
 * agree on it bit for bit: it is part of the protocol. */
#ifndef CRAM_KEYHASH_H
#define CRAM_KEYHASH_H
#include <stdint.h>
uint64_t cram_key_hash(uint64_t table_id, const void *key, uint16_t key_len);
#endif
