/* hashtable.c -- cache-line buckets with overflow chains (see hashtable.h). */
#include "master/hashtable.h"

#include "common/mem.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define HT_OVF_CHUNK 64   /* overflow buckets allocated at a time */

ht *ht_create(uint64_t nbuckets)
{
    uint64_t n = 1;
    uint32_t bits = 0;
    while (n < nbuckets && bits < 40) {
        n <<= 1;
        bits++;
    }
    /* the nearer power of two: rounding 1.4x up would cost 40% more
     * memory, a few more entries per bucket cost next to nothing */
    if (n > nbuckets && n - nbuckets > nbuckets - n / 2) {
        n >>= 1;
        bits--;
    }
    ht *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    /* mmap: zeroed pages, 64-byte aligned, given back to the OS at destroy */
    void *m = mmap(NULL, n * sizeof(struct ht_bucket), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        free(t);
        return NULL;
    }
    /* big tables: transparent huge pages cut TLB misses on the read path */
    if (n * sizeof(struct ht_bucket) >= (2u << 20))
        (void)madvise(m, n * sizeof(struct ht_bucket), MADV_HUGEPAGE);
    /* Fault every page of buckets in now, before the master serves.  Inserts
     * land in random buckets, so a table holding a few objects per page has
     * touched all of it anyway -- but on the dispatch thread, one fault per
     * first write, and on a loaded VM one fault (zeroing, with THP:
     * compaction) has stalled for over a second: long enough for failure
     * detection to wonder whether the server is alive.  Best effort. */
    (void)mem_prefault(m, n * sizeof(struct ht_bucket));
    t->buckets = m;
    t->nbuckets = n;
    t->shift = 64 - bits;
    return t;
}

void ht_destroy(ht *t)
{
    if (t == NULL)
        return;
    munmap(t->buckets, t->nbuckets * sizeof(struct ht_bucket));
    for (size_t i = 0; i < t->ovf_nchunks; i++)
        free(t->ovf_chunks[i]);
    free(t->ovf_chunks);
    free(t);
}

static struct ht_bucket *ovf_alloc(ht *t)
{
    if (t->ovf_free == NULL) {
        if (t->ovf_nchunks == t->ovf_capchunks) {
            size_t cap = t->ovf_capchunks ? t->ovf_capchunks * 2 : 16;
            void **nc = realloc(t->ovf_chunks, cap * sizeof *nc);
            if (nc == NULL)
                return NULL;
            t->ovf_chunks = nc;
            t->ovf_capchunks = cap;
        }
        struct ht_bucket *c = aligned_alloc(64, HT_OVF_CHUNK * sizeof(struct ht_bucket));
        if (c == NULL)
            return NULL;
        t->ovf_chunks[t->ovf_nchunks++] = c;
        for (int i = HT_OVF_CHUNK - 1; i >= 0; i--) {
            c[i].e[0] = (uint64_t)(uintptr_t)t->ovf_free;
            t->ovf_free = &c[i];
        }
    }
    struct ht_bucket *b = t->ovf_free;
    t->ovf_free = (struct ht_bucket *)(uintptr_t)b->e[0];
    memset(b, 0, sizeof *b);
    t->ovf_in_use++;
    return b;
}

int ht_reserve(ht *t)
{
    if (t->ovf_free != NULL)
        return 0;
    struct ht_bucket *b = ovf_alloc(t);
    if (b == NULL)
        return -1;
    b->e[0] = (uint64_t)(uintptr_t)t->ovf_free;   /* straight back onto the free list */
    t->ovf_free = b;
    t->ovf_in_use--;
    return 0;
}

int ht_insert(ht *t, uint64_t hash, log_ref ref)
{
    uint64_t v = ht_make_entry(hash, ref);
    struct ht_bucket *b = &t->buckets[ht_bucket_index(t, hash)];
    for (;;) {
        for (int i = 0; i < HT_ENTRIES_PER_BUCKET; i++) {
            uint64_t e = b->e[i];
            if (e == 0) {
                ht_store(&b->e[i], v);
                t->count++;
                return 0;
            }
            if (ht_entry_is_chain(e)) {
                b = ht_entry_chain(e);
                goto next_bucket;
            }
        }
        /* Full bucket without a chain: move the last entry into a new
         * overflow bucket, then link it.  The new bucket is complete before
         * the chain pointer is published, so readers see the moved entry
         * either here or there. */
        {
            struct ht_bucket *o = ovf_alloc(t);
            if (o == NULL)
                return -1;
            o->e[0] = b->e[HT_ENTRIES_PER_BUCKET - 1];
            o->e[1] = v;
            ht_store(&b->e[HT_ENTRIES_PER_BUCKET - 1], HT_CHAIN_BIT | (uint64_t)(uintptr_t)o);
            t->count++;
            return 0;
        }
next_bucket:;
    }
}

void ht_replace(uint64_t *slot, uint64_t hash, log_ref ref)
{
    ht_store(slot, ht_make_entry(hash, ref));
}

bool ht_replace_if(uint64_t *slot, log_ref old_ref, log_ref new_ref)
{
    uint64_t e = ht_load(slot);
    if (e == 0 || ht_entry_is_chain(e) || ht_entry_ref(e) != old_ref)
        return false;
    ht_store(slot, (e & ~HT_REF_MASK) | (new_ref & HT_REF_MASK));
    return true;
}

void ht_remove(ht *t, uint64_t *slot)
{
    ht_store(slot, 0);
    t->count--;
}

void ht_visit_bucket(ht *t, uint64_t index, ht_visit_fn fn, void *ctx)
{
    struct ht_bucket *b = &t->buckets[index];
    bool stop = false;
    for (;;) {
        for (int i = 0; i < HT_ENTRIES_PER_BUCKET; i++) {
            uint64_t e = b->e[i];
            if (e == 0)
                continue;
            if (ht_entry_is_chain(e)) {
                b = ht_entry_chain(e);
                goto next_bucket;
            }
            if (fn(ctx, ht_entry_ref(e), &stop))
                ht_remove(t, &b->e[i]);
            if (stop)
                return;
        }
        return;
next_bucket:;
    }
}
