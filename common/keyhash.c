/* keyhash.c -- the protocol's key hash: XXH3-64 of the key, seeded with the table id. */
#include <xxhash.h>
#include "common/keyhash.h"

uint64_t cram_key_hash(uint64_t table_id, const void *key, uint16_t key_len)
{
    return XXH3_64bits_withSeed(key, key_len, table_id);
}
