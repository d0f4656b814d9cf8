/*
 * test_full_log.c -- a master with a tiny log (4 MiB of 1 MiB segments, the
 * log's minimum is 2 segments of 64 KiB) fills up: writes then answer
 * CRAM_NO_TABLE_SPACE (not a crash, not a hang), every object written before
 * stays readable and enumerable, and the server keeps serving.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cram.h"
#include "harness.h"

#define VAL  (64 * 1024)
#define MAXW 200            /* far more than 4 MiB / 64 KiB */

static struct h_cluster C;
static cram_client *cl;
static uint64_t tid;
static int written;         /* keys w0 .. w<written-1> were acknowledged */
static char *val;

static int suite_init(void)
{
    if (h_init(&C) != 0)
        return -1;
    snprintf(C.memory, sizeof(C.memory), "4M");
    snprintf(C.segment, sizeof(C.segment), "1M");
    if (h_start_cluster(&C, 1) != 0)
        return -1;
    cl = h_connect(&C);
    val = malloc(VAL);
    if (!cl || !val)
        return -1;
    return cram_create_table(cl, "full", 1, &tid) == CRAM_OK ? 0 : -1;
}

static int suite_clean(void)
{
    cram_disconnect(cl);
    free(val);
    return 0;
}

static void fill_val(int i)
{
    for (int k = 0; k < VAL; k++)
        val[k] = (char)(i * 31 + k);
}

static void test_fill_until_full(void)
{
    cram_status st = CRAM_OK;
    int i;
    cram_set_timeout(cl, (uint32_t)h_ms(10000));
    for (i = 0; i < MAXW; i++) {
        char key[16];
        int kl = snprintf(key, sizeof(key), "w%d", i);
        fill_val(i);
        st = cram_write(cl, tid, key, (uint16_t)kl, val, VAL, NULL, NULL);
        if (st != CRAM_OK)
            break;
    }
    written = i;
    printf("\n  %d writes of 64 KiB acknowledged, then %s", written, cram_status_name(st));
    CU_ASSERT_EQUAL(st, CRAM_NO_TABLE_SPACE);
    CU_ASSERT(written >= 30);          /* most of 4 MiB is usable */
    CU_ASSERT(written < 64);           /* and no more than fits */

    /* stays full: more writes (also small ones, new keys) are refused */
    st = cram_write(cl, tid, "w-extra", 7, val, VAL, NULL, NULL);
    CU_ASSERT_EQUAL(st, CRAM_NO_TABLE_SPACE);
    /* a small write may still fit in the head segment's tail; fill that too */
    int small = 0;
    for (; small < 10000; small++) {
        char key[24];
        int kl = snprintf(key, sizeof(key), "s%d", small);
        st = cram_write(cl, tid, key, (uint16_t)kl, "tiny", 4, NULL, NULL);
        if (st != CRAM_OK)
            break;
    }
    CU_ASSERT_EQUAL(st, CRAM_NO_TABLE_SPACE);
    CU_ASSERT(small < 10000);
}

static void test_reads_still_work(void)
{
    char *buf = malloc(VAL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    int bad = 0;
    for (int i = 0; i < written; i++) {
        char key[16];
        int kl = snprintf(key, sizeof(key), "w%d", i);
        uint32_t len = 0;
        fill_val(i);
        cram_status st = cram_read(cl, tid, key, (uint16_t)kl, NULL, NULL, buf, VAL, &len);
        if (st != CRAM_OK || len != VAL || memcmp(buf, val, VAL) != 0)
            bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
    /* the refused write left nothing behind */
    CU_ASSERT_EQUAL(cram_read(cl, tid, "w-extra", 7, NULL, NULL, NULL, 0, NULL), CRAM_OBJECT_DOESNT_EXIST);
    free(buf);

    /* enumeration sees every acknowledged big object once */
    cram_enumerator *e = NULL;
    CU_ASSERT_EQUAL_FATAL(cram_enumerate_begin(cl, tid, &e), CRAM_OK);
    const void *k, *v;
    uint16_t kl;
    uint32_t vl;
    int big = 0;
    while (cram_enumerate_next(e, &k, &kl, &v, &vl, NULL) == CRAM_OK)
        big += vl == VAL;
    cram_enumerate_end(e);
    CU_ASSERT_EQUAL(big, written);
}

static void test_still_serving(void)
{
    CU_ASSERT(h_alive(&C.servers[0]));
    cram_server_info *sv = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(cram_list_servers(cl, &sv, &n), CRAM_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    cram_server_stats st;
    CU_ASSERT_EQUAL(cram_get_server_stats(cl, sv[0].server_id, NULL, &st), CRAM_OK);
    CU_ASSERT_EQUAL(st.memory_bytes, 4u << 20);
    CU_ASSERT_EQUAL(st.segment_bytes, 1u << 20);
    CU_ASSERT_EQUAL(st.segments_total, 4);
    CU_ASSERT_EQUAL(st.segments_in_use, st.segments_total);
    cram_free(sv);
    /* metadata operations are unaffected */
    uint64_t id = 0;
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "full", &id), CRAM_OK);
    CU_ASSERT_EQUAL(id, tid);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("full log", suite_init, suite_clean);
    CU_add_test(s, "fill until CRAM_NO_TABLE_SPACE", test_fill_until_full);
    CU_add_test(s, "reads still work", test_reads_still_work);
    CU_add_test(s, "still serving", test_still_serving);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error() ||
              CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return h_finish(&C, bad);
}
