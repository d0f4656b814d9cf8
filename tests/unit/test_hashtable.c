/* test_hashtable.c -- insert / replace / remove, overflow chains, 1M entries.
 *
 * The table stores (secondary bits, log ref); keys are confirmed by a match
 * callback.  Here a "log ref" is just a key number + 1 and the match callback
 * compares it with the key being looked up, so collisions of secondary bits
 * are resolved exactly as the object manager does it. */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>
#include "master/hashtable.h"

static bool match_ref(void *ctx, log_ref ref)
{
    return ref == *(log_ref *)ctx;
}

static log_ref find(ht *t, uint64_t hash, log_ref want, uint64_t **slot)
{
    return ht_lookup(t, hash, match_ref, &want, slot);
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static void test_basic(void)
{
    ht *t = ht_create(1000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(ht_nbuckets(t), 1024);
    /* the nearer power of two, not always the next one up */
    ht *t2 = ht_create(360000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t2);
    CU_ASSERT_EQUAL(ht_nbuckets(t2), 262144);
    ht_destroy(t2);
    t2 = ht_create(400000);
    CU_ASSERT_EQUAL(ht_nbuckets(t2), 524288);
    ht_destroy(t2);
    uint64_t h = 0x123456789abcdef0ull;
    CU_ASSERT_EQUAL(find(t, h, 5, NULL), LOG_REF_NULL);
    CU_ASSERT_EQUAL(ht_insert(t, h, 5), 0);
    CU_ASSERT_EQUAL(ht_count(t), 1);
    uint64_t *slot = NULL;
    CU_ASSERT_EQUAL(find(t, h, 5, &slot), 5);
    CU_ASSERT_PTR_NOT_NULL_FATAL(slot);
    /* same hash, other key: not confused */
    CU_ASSERT_EQUAL(find(t, h, 6, NULL), LOG_REF_NULL);
    /* replace in place */
    ht_replace(slot, h, 9);
    CU_ASSERT_EQUAL(find(t, h, 5, NULL), LOG_REF_NULL);
    CU_ASSERT_EQUAL(find(t, h, 9, &slot), 9);
    CU_ASSERT_EQUAL(ht_count(t), 1);
    /* relocation only if unchanged */
    CU_ASSERT_FALSE(ht_replace_if(slot, 5, 11));
    CU_ASSERT(ht_replace_if(slot, 9, 11));
    CU_ASSERT_EQUAL(find(t, h, 11, &slot), 11);
    /* remove */
    ht_remove(t, slot);
    CU_ASSERT_EQUAL(ht_count(t), 0);
    CU_ASSERT_EQUAL(find(t, h, 11, NULL), LOG_REF_NULL);
    /* the largest reference survives packing */
    log_ref big = HT_REF_MASK;
    CU_ASSERT_EQUAL(ht_insert(t, ~0ull, big), 0);
    CU_ASSERT_EQUAL(find(t, ~0ull, big, NULL), big);
    ht_destroy(t);
}

/* Bucket index comes from the high bits: order of buckets = order of hashes. */
static void test_high_bits_index(void)
{
    ht *t = ht_create(256);
    CU_ASSERT_EQUAL(ht_bucket_index(t, 0), 0);
    CU_ASSERT_EQUAL(ht_bucket_index(t, ~0ull), 255);
    CU_ASSERT_EQUAL(ht_bucket_index(t, 0x0100000000000000ull), 1);
    CU_ASSERT_EQUAL(ht_bucket_index(t, 0x00ffffffffffffffull), 0);
    ht_destroy(t);
    t = ht_create(1);
    CU_ASSERT_EQUAL(ht_bucket_index(t, ~0ull), 0);
    CU_ASSERT_EQUAL(ht_insert(t, ~0ull, 3), 0);
    CU_ASSERT_EQUAL(find(t, ~0ull, 3, NULL), 3);
    ht_destroy(t);
}

struct visit_ctx { uint64_t seen; log_ref drop_below; };
static bool visit_count(void *vctx, log_ref ref, bool *stop)
{
    (void)stop;
    struct visit_ctx *c = vctx;
    c->seen++;
    return ref < c->drop_below;
}

/* Force 200 entries into one bucket, many with identical secondary bits. */
static void test_overflow_chain(void)
{
    ht *t = ht_create(16);
    const int N = 200;
    for (int i = 0; i < N; i++) {
        /* top 4 bits 0 -> bucket 0; secondary bits cycle through 3 values */
        uint64_t h = ((uint64_t)i << 20) | (uint64_t)(i % 3);
        CU_ASSERT_EQUAL_FATAL(ht_insert(t, h, (log_ref)i + 1), 0);
    }
    CU_ASSERT_EQUAL(ht_count(t), (uint64_t)N);
    CU_ASSERT(t->ovf_in_use >= (uint64_t)N / 7 - 1);
    for (int i = 0; i < N; i++) {
        uint64_t h = ((uint64_t)i << 20) | (uint64_t)(i % 3);
        CU_ASSERT_EQUAL(find(t, h, (log_ref)i + 1, NULL), (log_ref)i + 1);
    }
    /* remove the even ones, the odd ones stay reachable */
    for (int i = 0; i < N; i += 2) {
        uint64_t h = ((uint64_t)i << 20) | (uint64_t)(i % 3);
        uint64_t *slot = NULL;
        CU_ASSERT_EQUAL_FATAL(find(t, h, (log_ref)i + 1, &slot), (log_ref)i + 1);
        ht_remove(t, slot);
    }
    for (int i = 0; i < N; i++) {
        uint64_t h = ((uint64_t)i << 20) | (uint64_t)(i % 3);
        CU_ASSERT_EQUAL(find(t, h, (log_ref)i + 1, NULL), (i % 2) ? (log_ref)i + 1 : LOG_REF_NULL);
    }
    /* holes are reused: no new overflow buckets for re-inserts */
    uint64_t ovf = t->ovf_in_use;
    for (int i = 0; i < N; i += 2)
        CU_ASSERT_EQUAL(ht_insert(t, (uint64_t)i << 20, (log_ref)i + 1000), 0);
    CU_ASSERT_EQUAL(t->ovf_in_use, ovf);
    for (int i = 0; i < N; i += 2)
        CU_ASSERT_EQUAL(find(t, (uint64_t)i << 20, (log_ref)i + 1000, NULL), (log_ref)i + 1000);
    /* visiting sees every entry of the chain and removes on request */
    struct visit_ctx c = { 0, 1000 };
    ht_visit_bucket(t, 0, visit_count, &c);
    CU_ASSERT_EQUAL(c.seen, (uint64_t)N);
    CU_ASSERT_EQUAL(ht_count(t), (uint64_t)N / 2);
    c = (struct visit_ctx){ 0, 0 };
    ht_visit_bucket(t, 0, visit_count, &c);
    CU_ASSERT_EQUAL(c.seen, (uint64_t)N / 2);
    /* other buckets are untouched */
    c = (struct visit_ctx){ 0, 0 };
    ht_visit_bucket(t, 1, visit_count, &c);
    CU_ASSERT_EQUAL(c.seen, 0);
    CU_ASSERT_EQUAL(ht_reserve(t), 0);
    ht_destroy(t);
}

static void test_million(void)
{
    const uint64_t N = 1000000;
    ht *t = ht_create(N / 4);     /* ~4 per bucket on average: some chains */
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    for (uint64_t i = 0; i < N; i++)
        if (ht_insert(t, mix(i), i + 1) != 0) {
            CU_FAIL_FATAL("insert failed");
        }
    CU_ASSERT_EQUAL(ht_count(t), N);
    uint64_t found = 0;
    for (uint64_t i = 0; i < N; i++)
        found += find(t, mix(i), i + 1, NULL) == i + 1;
    CU_ASSERT_EQUAL(found, N);
    uint64_t absent = 0;
    for (uint64_t i = N; i < N + 100000; i++)
        absent += find(t, mix(i), i + 1, NULL) == LOG_REF_NULL;
    CU_ASSERT_EQUAL(absent, 100000);
    for (uint64_t i = 0; i < N; i++) {
        uint64_t *slot = NULL;
        if (find(t, mix(i), i + 1, &slot) != i + 1) {
            CU_FAIL_FATAL("lookup before remove failed");
        }
        ht_remove(t, slot);
    }
    CU_ASSERT_EQUAL(ht_count(t), 0);
    found = 0;
    for (uint64_t i = 0; i < N; i++)
        found += find(t, mix(i), i + 1, NULL) != LOG_REF_NULL;
    CU_ASSERT_EQUAL(found, 0);
    ht_destroy(t);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("hashtable", NULL, NULL);
    CU_add_test(s, "insert replace remove", test_basic);
    CU_add_test(s, "bucket index from high bits", test_high_bits_index);
    CU_add_test(s, "overflow chains", test_overflow_chain);
    CU_add_test(s, "1M entries", test_million);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
