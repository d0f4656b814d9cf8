/*
 * test_coord_restart.c -- the coordinator is killed with kill -9 and started
 * again (without --reset): tables, ids and tablets survive in ZooKeeper, the
 * masters keep their data, and a client keeps working with the same handle.
 */
#include <CUnit/Basic.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdio.h>
#include <string.h>

#include "cram.h"
#include "harness.h"

#define NSERVERS 2
#define NKEYS    300

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

static int check_keys(cram_client *c, uint64_t table, int n)
{
    int bad = 0;
    for (int i = 0; i < n; i++) {
        char key[32], want[32], buf[32];
        uint32_t len = 0;
        int kl = snprintf(key, sizeof(key), "k%d", i);
        int vl = snprintf(want, sizeof(want), "v%d", i);
        cram_status st = cram_read(c, table, key, (uint16_t)kl, NULL, NULL, buf, sizeof(buf), &len);
        if (st != CRAM_OK || len != (uint32_t)vl || memcmp(buf, want, len) != 0) {
            if (bad++ < 3)
                fprintf(stderr, "read %s: %s\n", key, cram_status_name(st));
        }
    }
    return bad;
}

static void test_fill(void)
{
    CU_ASSERT_EQUAL_FATAL(cram_create_table(cl, "keep", NSERVERS, &tid), CRAM_OK);
    for (int i = 0; i < NKEYS; i++) {
        char key[32], val[32];
        int kl = snprintf(key, sizeof(key), "k%d", i);
        int vl = snprintf(val, sizeof(val), "v%d", i);
        CU_ASSERT_EQUAL_FATAL(cram_write(cl, tid, key, (uint16_t)kl, val, (uint32_t)vl, NULL, NULL), CRAM_OK);
    }
    CU_ASSERT_EQUAL(check_keys(cl, tid, NKEYS), 0);
}

static void test_kill_and_restart(void)
{
    int st = h_kill(&C.coord, SIGKILL);
    CU_ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    /* data operations go straight to the masters: they keep working from
     * the handle's cached table configuration while no coordinator runs */
    CU_ASSERT_EQUAL(check_keys(cl, tid, 50), 0);
    CU_ASSERT_EQUAL(cram_write(cl, tid, "during", 6, "outage", 6, NULL, NULL), CRAM_OK);

    CU_ASSERT_EQUAL_FATAL(h_start_coordinator(&C, 0), 0);
    CU_ASSERT_EQUAL_FATAL(h_wait_servers(&C, NSERVERS, 30000), 0);

    /* same handle: metadata calls reach the new coordinator */
    uint64_t id = 0;
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "keep", &id), CRAM_OK);
    CU_ASSERT_EQUAL(id, tid);
    CU_ASSERT_EQUAL(check_keys(cl, tid, NKEYS), 0);
    char buf[16];
    uint32_t len = 0;
    CU_ASSERT_EQUAL(cram_read(cl, tid, "during", 6, NULL, NULL, buf, sizeof(buf), &len), CRAM_OK);
    CU_ASSERT(len == 6 && memcmp(buf, "outage", 6) == 0);

    /* tablets are unchanged and still on both masters */
    cram_tablet_info *tt = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(cram_get_tablets(cl, "keep", &tt, &n), CRAM_OK);
    CU_ASSERT_EQUAL(n, NSERVERS);
    if (n == 2)
        CU_ASSERT_NOT_EQUAL(tt[0].server_id, tt[1].server_id);
    cram_free(tt);

    /* new tables get new ids (the id counter survived too) */
    uint64_t t2 = 0;
    CU_ASSERT_EQUAL(cram_create_table(cl, "after", NSERVERS, &t2), CRAM_OK);
    CU_ASSERT(t2 != 0 && t2 != tid);
    CU_ASSERT_EQUAL(cram_write(cl, t2, "x", 1, "y", 1, NULL, NULL), CRAM_OK);
    CU_ASSERT_EQUAL(cram_read(cl, t2, "x", 1, NULL, NULL, buf, sizeof(buf), &len), CRAM_OK);

    /* a fresh client finds the new coordinator through ZooKeeper */
    cram_client *c2 = h_connect(&C);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c2);
    CU_ASSERT_EQUAL(check_keys(c2, tid, NKEYS), 0);
    cram_table_info *tb = NULL;
    size_t nt = 0;
    CU_ASSERT_EQUAL(cram_list_tables(c2, &tb, &nt), CRAM_OK);
    CU_ASSERT_EQUAL(nt, 2);
    cram_free(tb);
    cram_disconnect(c2);
}

static void test_second_restart(void)
{
    /* kill it again while a client is idle, restart, drop a table */
    h_kill(&C.coord, SIGKILL);
    CU_ASSERT_EQUAL_FATAL(h_start_coordinator(&C, 0), 0);
    CU_ASSERT_EQUAL(cram_drop_table(cl, "after"), CRAM_OK);
    uint64_t id = 0;
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "after", &id), CRAM_TABLE_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "keep", &id), CRAM_OK);
    CU_ASSERT_EQUAL(check_keys(cl, tid, NKEYS), 0);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("coordinator restart", suite_init, suite_clean);
    CU_add_test(s, "fill", test_fill);
    CU_add_test(s, "kill -9 and restart keeps tables", test_kill_and_restart);
    CU_add_test(s, "second restart", test_second_restart);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error() ||
              CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return h_finish(&C, bad);
}
