/*
 * test_spread.c -- a table spread over three masters holds 10,000 keys:
 * every key is readable (single and multi reads), the table enumerates each
 * key exactly once, and every master holds a share of the objects.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cram.h"
#include "harness.h"

#define NSERVERS 3
#define SPAN     6          /* two tablets per master */
#define NKEYS    10000
#define BATCH    250

static struct h_cluster C;
static cram_client *cl;
static uint64_t tid;

static int suite_init(void)
{
    if (h_init(&C) != 0 || h_start_cluster(&C, NSERVERS) != 0)
        return -1;
    cl = h_connect(&C);
    return cl ? 0 : -1;
}

static int suite_clean(void)
{
    cram_disconnect(cl);
    return 0;
}

static int mkkey(char *buf, size_t len, int i)
{
    return snprintf(buf, len, "key-%05d", i);
}

static int mkval(char *buf, size_t len, int i)
{
    /* values of varying length (10..73 bytes) tied to the key */
    int n = snprintf(buf, len, "value-%d-", i);
    for (int k = 0; k < i % 64 && n + 1 < (int)len; k++)
        buf[n++] = (char)('a' + (i + k) % 26);
    buf[n] = 0;
    return n;
}

static void test_placement(void)
{
    CU_ASSERT_EQUAL_FATAL(cram_create_table(cl, "spread", SPAN, &tid), CRAM_OK);
    cram_tablet_info *tt = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(cram_get_tablets(cl, "spread", &tt, &n), CRAM_OK);
    CU_ASSERT_EQUAL_FATAL(n, SPAN);
    uint64_t owners[SPAN];
    int distinct = 0;
    CU_ASSERT_EQUAL(tt[0].start_hash, 0);
    CU_ASSERT_EQUAL(tt[n - 1].end_hash, UINT64_MAX);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            CU_ASSERT_EQUAL(tt[i].start_hash, tt[i - 1].end_hash + 1);
        int seen = 0;
        for (int j = 0; j < distinct; j++)
            seen |= owners[j] == tt[i].server_id;
        if (!seen)
            owners[distinct++] = tt[i].server_id;
        printf("\n  tablet [%016llx, %016llx] on server %llx at %s", (unsigned long long)tt[i].start_hash,
               (unsigned long long)tt[i].end_hash, (unsigned long long)tt[i].server_id, tt[i].locator);
    }
    CU_ASSERT_EQUAL(distinct, NSERVERS);
    cram_free(tt);
}

static void test_write_all(void)
{
    char key[32], val[96];
    uint64_t last_v = 0;
    /* first half one by one */
    for (int i = 0; i < NKEYS / 2; i++) {
        int kl = mkkey(key, sizeof(key), i);
        int vl = mkval(val, sizeof(val), i);
        uint64_t v = 0;
        cram_status st = cram_write(cl, tid, key, (uint16_t)kl, val, (uint32_t)vl, NULL, &v);
        if (st != CRAM_OK) {
            CU_FAIL("write failed");
            fprintf(stderr, "write %s: %s\n", key, cram_status_name(st));
            return;
        }
        last_v = v;
    }
    CU_ASSERT(last_v > 0);
    /* second half in multi-writes that span all masters */
    static char keys[BATCH][32], vals[BATCH][96];
    cram_multi_op ops[BATCH];
    for (int base = NKEYS / 2; base < NKEYS; base += BATCH) {
        memset(ops, 0, sizeof(ops));
        for (int j = 0; j < BATCH; j++) {
            ops[j].table = tid;
            ops[j].key = keys[j];
            ops[j].key_len = (uint16_t)mkkey(keys[j], sizeof(keys[j]), base + j);
            ops[j].value = vals[j];
            ops[j].value_len = (uint32_t)mkval(vals[j], sizeof(vals[j]), base + j);
            ops[j].status = CRAM_INTERNAL_ERROR;
        }
        CU_ASSERT_EQUAL_FATAL(cram_multi_write(cl, ops, BATCH), CRAM_OK);
        for (int j = 0; j < BATCH; j++)
            if (ops[j].status != CRAM_OK) {
                CU_FAIL("multi-write op failed");
                fprintf(stderr, "multi-write %s: %s\n", keys[j], cram_status_name(ops[j].status));
                return;
            }
    }
}

static void test_read_all(void)
{
    char key[32], val[96], buf[128];
    int bad = 0;
    /* single reads of every key */
    for (int i = 0; i < NKEYS; i++) {
        int kl = mkkey(key, sizeof(key), i);
        int vl = mkval(val, sizeof(val), i);
        uint32_t len = 0;
        cram_status st = cram_read(cl, tid, key, (uint16_t)kl, NULL, NULL, buf, sizeof(buf), &len);
        if (st != CRAM_OK || len != (uint32_t)vl || memcmp(buf, val, len) != 0) {
            if (bad++ < 5)
                fprintf(stderr, "read %s: %s len %u\n", key, cram_status_name(st), len);
        }
    }
    CU_ASSERT_EQUAL(bad, 0);

    /* multi-reads of every key */
    static char keys[BATCH][32], bufs[BATCH][128];
    cram_multi_op ops[BATCH];
    bad = 0;
    for (int base = 0; base < NKEYS; base += BATCH) {
        memset(ops, 0, sizeof(ops));
        for (int j = 0; j < BATCH; j++) {
            ops[j].table = tid;
            ops[j].key = keys[j];
            ops[j].key_len = (uint16_t)mkkey(keys[j], sizeof(keys[j]), base + j);
            ops[j].buf = bufs[j];
            ops[j].buf_len = sizeof(bufs[j]);
            ops[j].status = CRAM_INTERNAL_ERROR;
        }
        CU_ASSERT_EQUAL_FATAL(cram_multi_read(cl, ops, BATCH), CRAM_OK);
        for (int j = 0; j < BATCH; j++) {
            int vl = mkval(val, sizeof(val), base + j);
            if (ops[j].status != CRAM_OK || ops[j].value_len_out != (uint32_t)vl ||
                memcmp(bufs[j], val, (size_t)vl) != 0)
                bad++;
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_enumerate_once(void)
{
    static unsigned char seen[NKEYS];
    memset(seen, 0, sizeof(seen));
    cram_enumerator *e = NULL;
    CU_ASSERT_EQUAL_FATAL(cram_enumerate_begin(cl, tid, &e), CRAM_OK);
    const void *k, *v;
    uint16_t kl;
    uint32_t vl;
    uint64_t ver;
    cram_status st;
    int count = 0, strange = 0, dup = 0, wrong = 0;
    while ((st = cram_enumerate_next(e, &k, &kl, &v, &vl, &ver)) == CRAM_OK) {
        count++;
        char key[32] = { 0 }, val[96];
        if (kl != 9 || memcmp(k, "key-", 4) != 0) {
            strange++;
            continue;
        }
        memcpy(key, k, kl);
        int i = atoi(key + 4);
        if (i < 0 || i >= NKEYS) {
            strange++;
            continue;
        }
        if (seen[i]++)
            dup++;
        int want = mkval(val, sizeof(val), i);
        if (vl != (uint32_t)want || memcmp(v, val, vl) != 0 || ver == 0)
            wrong++;
    }
    cram_enumerate_end(e);
    CU_ASSERT_EQUAL(st, CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(count, NKEYS);
    CU_ASSERT_EQUAL(strange, 0);
    CU_ASSERT_EQUAL(dup, 0);
    CU_ASSERT_EQUAL(wrong, 0);
    int missing = 0;
    for (int i = 0; i < NKEYS; i++)
        missing += seen[i] == 0;
    CU_ASSERT_EQUAL(missing, 0);
    if (count != NKEYS || dup || missing)
        fprintf(stderr, "enumerate: %d objects, %d duplicates, %d missing\n", count, dup, missing);
}

static void test_every_master_holds_objects(void)
{
    cram_server_info *sv = NULL;
    size_t ns = 0;
    CU_ASSERT_EQUAL_FATAL(cram_list_servers(cl, &sv, &ns), CRAM_OK);
    CU_ASSERT_EQUAL(ns, NSERVERS);
    uint64_t total = 0;
    for (size_t i = 0; i < ns; i++) {
        cram_server_stats st;
        CU_ASSERT_EQUAL_FATAL(cram_get_server_stats(cl, sv[i].server_id, NULL, &st), CRAM_OK);
        printf("\n  server %llx: %llu objects, %u tablets, %u/%u segments", (unsigned long long)st.server_id,
               (unsigned long long)st.objects, st.tablets, st.segments_in_use, st.segments_total);
        /* hash ranges are even, so each master holds about a third */
        CU_ASSERT(st.objects > NKEYS / 6);
        CU_ASSERT_EQUAL(st.tablets, SPAN / NSERVERS);
        total += st.objects;
    }
    CU_ASSERT_EQUAL(total, NKEYS);
    cram_free(sv);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("spread", suite_init, suite_clean);
    CU_add_test(s, "placement over three masters", test_placement);
    CU_add_test(s, "write 10000 keys", test_write_all);
    CU_add_test(s, "read 10000 keys", test_read_all);
    CU_add_test(s, "enumerate exactly once", test_enumerate_once);
    CU_add_test(s, "every master holds objects", test_every_master_holds_objects);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error() ||
              CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return h_finish(&C, bad);
}
