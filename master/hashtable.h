/*
 * hashtable.h -- the master's object index: 64-bit key hash -> log reference.
 *
 * Buckets are one cache line: 8 entries of 8 bytes.  An entry is
 *
 *     bit 63      0: a log entry          1: chain pointer (bits 0..62 = address
 *                                             of the next overflow bucket)
 *     bits 48..62 secondary hash (15 bits of the key hash, see ht_secondary)
 *     bits 0..47  log reference (log_ref; 0 never valid)
 *
 * and 0 means "empty".  Only the last entry of a bucket may be a chain
 * pointer.  The bucket index is taken from the HIGH bits of the key hash, so
 * bucket order is key-hash order (enumeration walks buckets in order and only
 * has to sort within one bucket and its chain).
 *
 * The table only stores hashes' bits and references: a caller confirms a key
 * by reading the entry in the log (see ht_lookup's match callback).
 *
 * Thread rule (DESIGN.md §9): only the dispatch thread inserts, replaces and
 * removes.  Every entry is one aligned 8-byte word written with a single
 * atomic store (relaxed loads, release stores), so other threads (cleaner)
 * may read entries at any time and see either the old or the new value.
 * Overflow buckets are never returned to the allocator before ht_destroy, so a
 * concurrent reader following a chain never touches freed memory.  A worker
 * that relocates an object hands the change back to the dispatch thread,
 * which applies it with ht_replace_if (only if the entry still holds the old
 * reference).
 */
#ifndef CRAM_MASTER_HASHTABLE_H
#define CRAM_MASTER_HASHTABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "master/log.h"

#define HT_ENTRIES_PER_BUCKET 8
#define HT_CHAIN_BIT          (1ull << 63)
#define HT_SECONDARY_SHIFT    48
#define HT_SECONDARY_MASK     0x7fffull
#define HT_REF_MASK           ((1ull << 48) - 1)

_Static_assert(LOG_REF_BITS == 48, "hash table entries hold 48-bit log refs");

struct ht_bucket {
    uint64_t e[HT_ENTRIES_PER_BUCKET];
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct ht_bucket) == 64, "one cache line per bucket");

typedef struct ht {
    struct ht_bucket *buckets;
    uint64_t nbuckets;       /* power of two */
    uint32_t shift;          /* 64 - log2(nbuckets); 64 when nbuckets == 1 */
    uint64_t count;          /* live entries */
    struct ht_bucket *ovf_free;   /* free overflow buckets, linked through e[0] */
    void   **ovf_chunks;     /* every chunk allocated, freed at destroy */
    size_t   ovf_nchunks, ovf_capchunks;
    uint64_t ovf_in_use;
} ht;

/* nbuckets is rounded to the nearer power of two (min 1).  The bucket array
 * (64 bytes a bucket) is faulted in at once (mem_prefault in ht_create):
 * the table costs its full size in RSS from the start.  NULL if out of memory. */
ht  *ht_create(uint64_t nbuckets);
void ht_destroy(ht *t);

static inline uint64_t ht_bucket_index(const ht *t, uint64_t hash)
{
    return t->shift >= 64 ? 0 : hash >> t->shift;
}
/* Secondary bits come from the low end of the hash: independent of the index. */
static inline uint64_t ht_secondary(uint64_t hash) { return hash & HT_SECONDARY_MASK; }
static inline uint64_t ht_make_entry(uint64_t hash, log_ref ref)
{
    return (ht_secondary(hash) << HT_SECONDARY_SHIFT) | (ref & HT_REF_MASK);
}
static inline log_ref ht_entry_ref(uint64_t e) { return e & HT_REF_MASK; }
static inline bool ht_entry_is_chain(uint64_t e) { return (e & HT_CHAIN_BIT) != 0; }
static inline struct ht_bucket *ht_entry_chain(uint64_t e)
{
    return (struct ht_bucket *)(uintptr_t)(e & ~HT_CHAIN_BIT);
}
static inline uint64_t ht_load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void ht_store(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/* Key confirmation: true if the log entry at ref holds the caller's key. */
typedef bool (*ht_match_fn)(void *ctx, log_ref ref);

/*
 * Find the entry for a key with this hash.  Returns its log ref (or
 * LOG_REF_NULL) and, if slot is not NULL, the address of the entry for
 * ht_replace / ht_remove (valid until the next insert or remove).  Inline so
 * the match callback inlines too: the read path is hash -> bucket -> compare
 * secondary bits -> one log entry.
 */
static inline log_ref ht_lookup(const ht *t, uint64_t hash, ht_match_fn match, void *ctx,
                                uint64_t **slot)
{
    const uint64_t want = ht_secondary(hash) << HT_SECONDARY_SHIFT;
    struct ht_bucket *b = &t->buckets[ht_bucket_index(t, hash)];
    for (;;) {
        for (int i = 0; i < HT_ENTRIES_PER_BUCKET; i++) {
            uint64_t e = ht_load(&b->e[i]);
            if (e == 0)
                continue;
            if (ht_entry_is_chain(e)) {   /* only ever in the last slot */
                b = ht_entry_chain(e);
                goto next_bucket;
            }
            if ((e & (HT_SECONDARY_MASK << HT_SECONDARY_SHIFT)) == want &&
                match(ctx, ht_entry_ref(e))) {
                if (slot != NULL)
                    *slot = &b->e[i];
                return ht_entry_ref(e);
            }
        }
        return LOG_REF_NULL;
next_bucket:;
    }
}

/* Add an entry (the caller knows the key is not present).  0, or -1 if an
 * overflow bucket was needed and could not be allocated. */
int  ht_insert(ht *t, uint64_t hash, log_ref ref);
/* Make sure the next ht_insert cannot fail (an overflow bucket is ready).
 * 0, or -1 if out of memory.  Callers reserve before appending to the log so
 * that a failed insert never leaves an unindexed object behind. */
int  ht_reserve(ht *t);
/* Point an existing entry (from ht_lookup) at a new reference. */
void ht_replace(uint64_t *slot, uint64_t hash, log_ref ref);
/* Relocation: replace only if the entry still refers to old_ref. */
bool ht_replace_if(uint64_t *slot, log_ref old_ref, log_ref new_ref);
/* Empty an entry (from ht_lookup). */
void ht_remove(ht *t, uint64_t *slot);

/* Visit every entry of bucket `index` and its chain.  fn returns true to
 * remove the entry.  Visiting stops early if fn sets *stop. */
typedef bool (*ht_visit_fn)(void *ctx, log_ref ref, bool *stop);
void ht_visit_bucket(ht *t, uint64_t index, ht_visit_fn fn, void *ctx);

static inline uint64_t ht_count(const ht *t) { return t->count; }
static inline uint64_t ht_nbuckets(const ht *t) { return t->nbuckets; }

#endif /* CRAM_MASTER_HASHTABLE_H */
