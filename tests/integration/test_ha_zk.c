/*
 * test_ha_zk.c -- coordinator high availability against ZooKeeper trouble.
 *
 *  - the leader is paused (SIGSTOP) for its session timeout + 2 s: a standby
 *    takes over; the old leader, resumed and sent a write at once, changes
 *    nothing in ZooKeeper (every node's mzxid and version, the epoch node's
 *    included, is as before), stops leading and joins again as a standby;
 *  - the ZooKeeper server is stopped and restarted under a running client
 *    load (on a ZooKeeper of the test's own, on port base+9): every read and
 *    write succeeds throughout, and metadata calls work again afterwards.
 */
#include <CUnit/Basic.h>

#include "test_ha_util.h"

#define NKEYS 100

static struct h_cluster C;
static zhandle_t *zh;
static struct h_proc A = { .name = "coord-a" }, B = { .name = "coord-b" };
static char fixture_zk[128];

static int suite_init(void)
{
    if (h_init(&C) != 0)
        return -1;
    C.replicas = 1;
    snprintf(fixture_zk, sizeof(fixture_zk), "%s", C.zk);
    zh = ha_zk_open(C.zk + 3);
    return zh ? 0 : -1;
}

static int suite_clean(void)
{
    if (zh)
        zookeeper_close(zh);
    zh = NULL;
    return 0;
}

static void test_paused_leader(void)
{
    CU_ASSERT_EQUAL_FATAL(ha_start_coord(&C, &A, C.zk, C.port_base, 1, NULL), 0);
    CU_ASSERT_FATAL(ha_wait_leader(zh, C.cluster, A.pid, 15000) >= 0);
    CU_ASSERT_EQUAL_FATAL(ha_start_coord(&C, &B, C.zk, C.port_base + 7, 0, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(ha_wait_log(B.log, "standby: election node", 15000), 0);
    for (int i = 0; i < 2; i++)
        CU_ASSERT_EQUAL_FATAL(h_start_server(&C, i), 0);
    CU_ASSERT_EQUAL_FATAL(h_wait_servers(&C, 2, 30000), 0);
    cram_client *cl = h_connect(&C);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cl);
    uint64_t tid = 0;
    CU_ASSERT_EQUAL_FATAL(cram_create_table(cl, "p", 2, &tid), CRAM_OK);
    CU_ASSERT_EQUAL(ha_write_keys(cl, tid, "p", NKEYS), 0);
    struct ha_leader before;
    CU_ASSERT_EQUAL_FATAL(ha_leader_get(zh, C.cluster, &before), 0);

    uint64_t t0 = h_now_ms();
    CU_ASSERT_EQUAL_FATAL(kill(A.pid, SIGSTOP), 0);
    int64_t took = ha_wait_leader(zh, C.cluster, B.pid, HA_SESSION_MS + 10000);
    CU_ASSERT_FATAL(took >= 0);
    fprintf(stderr, "\ntake-over from the paused leader: %lld ms\n", (long long)took);
    CU_ASSERT_EQUAL(ha_wait_log(B.log, "coordinator leads", 10000), 0);
    uint64_t pause = h_ms(HA_SESSION_MS) + 2000;
    while (h_now_ms() - t0 < pause)
        ha_sleep_ms(20);

    /* the client moves to the new leader; data never needed a coordinator */
    CU_ASSERT_EQUAL(ha_check_keys(cl, tid, "p", NKEYS), 0);
    uint64_t id = 0;
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "p", &id), CRAM_OK);
    CU_ASSERT_EQUAL(id, tid);
    struct ha_leader now;
    CU_ASSERT_EQUAL(ha_leader_get(zh, C.cluster, &now), 0);
    CU_ASSERT_EQUAL(now.pid, (uint32_t)B.pid);
    CU_ASSERT(now.epoch > before.epoch);

    /* Everything but the election directory (where the old leader will join
     * again) must stay as it is while the old leader runs again. */
    char root[128], skip[160];
    snprintf(root, sizeof(root), "/cram/%s", C.cluster);
    snprintf(skip, sizeof(skip), "%s/election", root);
    struct ha_snap s1, s2;
    CU_ASSERT_EQUAL_FATAL(ha_snapshot(zh, root, skip, &s1), 0);
    CU_ASSERT_FATAL(s1.count > 5);

    CU_ASSERT_EQUAL_FATAL(kill(A.pid, SIGCONT), 0);
    /* at once, a write sent straight to the old leader */
    char loc[128];
    snprintf(loc, sizeof(loc), "tcp:host=127.0.0.1,port=%d", C.port_base);
    cram_client *old = NULL;
    cram_status st = cram_connect(loc, C.cluster, &old);
    if (st == CRAM_OK) {
        cram_set_timeout(old, (uint32_t)h_ms(3000));
        uint64_t x = 0;
        st = cram_create_table(old, "from-the-old-leader", 1, &x);
        fprintf(stderr, "create table sent to the resumed old leader: %s\n", cram_status_name(st));
        CU_ASSERT_NOT_EQUAL(st, CRAM_OK);
        cram_disconnect(old);
    } else {
        fprintf(stderr, "the resumed old leader did not answer a connect: %s\n", cram_status_name(st));
    }
    CU_ASSERT_EQUAL(ha_wait_log(A.log, "lost leadership", 10000), 0);
    CU_ASSERT_EQUAL(ha_wait_log(A.log, "joining the election again as a standby", 10000), 0);
    CU_ASSERT_EQUAL(ha_wait_log(A.log, "standby: election node", 10000), 0);
    CU_ASSERT_EQUAL(ha_log_count(A.log, "coordinator leads"), 1);
    ha_sleep_ms(h_ms(500));
    CU_ASSERT_EQUAL_FATAL(ha_snapshot(zh, root, skip, &s2), 0);
    CU_ASSERT_EQUAL(ha_snap_diff(&s1, &s2), 0);
    ha_snap_free(&s1);
    ha_snap_free(&s2);
    CU_ASSERT_EQUAL(ha_leader_get(zh, C.cluster, &now), 0);
    CU_ASSERT_EQUAL(now.pid, (uint32_t)B.pid);
    CU_ASSERT(ha_alive(&A));
    CU_ASSERT(ha_alive(&B));

    /* the new leader serves writes */
    uint64_t t2 = 0;
    CU_ASSERT_EQUAL(cram_create_table(cl, "after-pause", 2, &t2), CRAM_OK);
    CU_ASSERT_EQUAL(ha_write_keys(cl, t2, "q", 20), 0);
    CU_ASSERT_EQUAL(ha_check_keys(cl, t2, "q", 20), 0);
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "from-the-old-leader", &id), CRAM_TABLE_DOESNT_EXIST);
    cram_disconnect(cl);

    h_stop_servers(&C);
    CU_ASSERT_EQUAL(ha_stop(&A), 0);
    CU_ASSERT_EQUAL(ha_stop(&B), 0);
}

/* Run scripts/zk.sh in the background (its output in the test's dir). */
static int zk_script(struct h_proc *p, const char *name, const char *cmd, const char *dir, int port)
{
    /* the source tree is where this file is (CMake compiles it by its
     * absolute path) */
    char script[512], portbuf[16];
    const char *self = __FILE__;
    const char *tail = strstr(self, "tests/integration/");
    if (self[0] != '/' || tail == NULL)
        return -1;
    snprintf(script, sizeof(script), "%.*sscripts/zk.sh", (int)(tail - self), self);
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    snprintf(p->name, sizeof(p->name), "%s", name);
    char *argv[] = { "/bin/bash", script, (char *)cmd, "--dir", (char *)dir,
                     strcmp(cmd, "start") == 0 ? "--port" : NULL, portbuf, NULL };
    return ha_spawn(p, C.dir, argv, NULL);
}

static void test_zk_restart_under_load(void)
{
    int zport = C.port_base + 9;      /* the last port of the test's slot */
    char zdir[300];
    snprintf(zdir, sizeof(zdir), "%s/zk", C.dir);
    struct h_proc zs = { 0 };
    CU_ASSERT_EQUAL_FATAL(zk_script(&zs, "zk-start", "start", zdir, zport), 0);
    int st = ha_wait_exit(&zs, 30000);
    CU_ASSERT_FATAL(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    snprintf(C.zk, sizeof(C.zk), "zk:127.0.0.1:%d", zport);
    zhandle_t *own = ha_zk_open(C.zk + 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(own);

    struct h_proc L = { .name = "coord-zk" };
    CU_ASSERT_EQUAL_FATAL(ha_start_coord(&C, &L, C.zk, C.port_base, 1, NULL), 0);
    CU_ASSERT_FATAL(ha_wait_leader(own, C.cluster, L.pid, 15000) >= 0);
    struct ha_leader before;
    CU_ASSERT_EQUAL(ha_leader_get(own, C.cluster, &before), 0);
    zookeeper_close(own);
    for (int i = 0; i < 2; i++)
        CU_ASSERT_EQUAL_FATAL(h_start_server(&C, i), 0);
    CU_ASSERT_EQUAL_FATAL(h_wait_servers(&C, 2, 30000), 0);
    cram_client *cl = h_connect(&C);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cl);
    uint64_t tid = 0;
    CU_ASSERT_EQUAL_FATAL(cram_create_table(cl, "load", 2, &tid), CRAM_OK);
    CU_ASSERT_EQUAL(ha_write_keys(cl, tid, "z", NKEYS), 0);

    /* load: write and read back, 14 s; ZooKeeper stops at 2 s (SIGTERM by
     * zk.sh stop) and starts again at 6 s */
    struct h_proc zstop = { 0 }, zstart = { 0 };
    uint64_t t0 = h_now_ms(), worst = 0;
    int ops = 0, bad = 0, stopped = 0, started = 0;
    while (h_now_ms() - t0 < 14000) {
        uint64_t el = h_now_ms() - t0;
        if (!stopped && el >= 2000) {
            CU_ASSERT_EQUAL(zk_script(&zstop, "zk-stop", "stop", zdir, zport), 0);
            stopped = 1;
        }
        if (!started && el >= 6000) {
            CU_ASSERT(ha_wait_exit(&zstop, 10000) != -1);
            CU_ASSERT_EQUAL(zk_script(&zstart, "zk-restart", "start", zdir, zport), 0);
            started = 1;
        }
        char key[32], val[32], buf[32];
        int i = ops % NKEYS;
        int kl = snprintf(key, sizeof(key), "z%d", i);
        int vl = snprintf(val, sizeof(val), "w%d", ops);
        uint64_t s = h_now_ms();
        cram_status ws = cram_write(cl, tid, key, (uint16_t)kl, val, (uint32_t)vl, NULL, NULL);
        uint32_t len = 0;
        cram_status rs = cram_read(cl, tid, key, (uint16_t)kl, NULL, NULL, buf, sizeof(buf), &len);
        uint64_t d = h_now_ms() - s;
        if (d > worst)
            worst = d;
        if (ws != CRAM_OK || rs != CRAM_OK || len != (uint32_t)vl || memcmp(buf, val, len) != 0) {
            if (bad++ < 5)
                fprintf(stderr, "op %d at %llu ms: write %s, read %s\n", ops,
                        (unsigned long long)(h_now_ms() - t0), cram_status_name(ws), cram_status_name(rs));
        }
        ops++;
    }
    fprintf(stderr, "\n%d write+read pairs while ZooKeeper restarted: %d failed, slowest %llu ms\n", ops, bad,
            (unsigned long long)worst);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(ops > 100);
    CU_ASSERT(worst < h_ms(1000));
    st = ha_wait_exit(&zstart, 30000);
    CU_ASSERT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);

    /* metadata works again: the coordinator kept its session (or stepped
     * down and led again) */
    uint64_t t2 = 0;
    CU_ASSERT_EQUAL(cram_create_table(cl, "after-zk", 2, &t2), CRAM_OK);
    CU_ASSERT_EQUAL(ha_write_keys(cl, t2, "y", 20), 0);
    CU_ASSERT_EQUAL(ha_check_keys(cl, t2, "y", 20), 0);
    own = ha_zk_open(C.zk + 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(own);
    struct ha_leader after;
    CU_ASSERT_EQUAL(ha_leader_get(own, C.cluster, &after), 0);
    fprintf(stderr, "leader after the ZooKeeper restart: pid %u epoch %llu (before: pid %u epoch %llu)\n",
            after.pid, (unsigned long long)after.epoch, before.pid, (unsigned long long)before.epoch);
    CU_ASSERT_EQUAL(after.pid, (uint32_t)L.pid);
    zookeeper_close(own);
    cram_disconnect(cl);

    h_stop_servers(&C);
    CU_ASSERT_EQUAL(ha_stop(&L), 0);
    struct h_proc zend = { 0 };
    CU_ASSERT_EQUAL(zk_script(&zend, "zk-end", "stop", zdir, zport), 0);
    ha_wait_exit(&zend, 30000);
    snprintf(C.zk, sizeof(C.zk), "%s", fixture_zk);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("coordinator vs ZooKeeper trouble", suite_init, suite_clean);
    CU_add_test(s, "paused leader is fenced and steps down", test_paused_leader);
    CU_add_test(s, "ZooKeeper restart under client load", test_zk_restart_under_load);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error() ||
              CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    if (bad) {
        ha_dump(&A);
        ha_dump(&B);
    }
    ha_stop(&A);
    ha_stop(&B);
    return h_finish(&C, bad);
}
