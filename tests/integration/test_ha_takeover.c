/*
 * test_ha_takeover.c -- coordinator high availability: standbys take over.
 *
 *  - two coordinators started at the same moment: exactly one leads (three
 *    rounds, each on a fresh cluster root);
 *  - kill -9 of the idle leader: a standby leads within the ZooKeeper
 *    session timeout (3 s) + 2 s (the take-over time is printed), and a
 *    client using the library sees no error;
 *  - kill -9 of the leader at coordinator.create_table.after_intent: the
 *    next leader finishes the intent, the client's create returns the table;
 *  - kill -9 of the leader at coordinator.enlist.after_write: the server
 *    enlists with the next leader (under a new id; the entry the dead
 *    leader wrote is verified and declared crashed: it never served);
 *  - kill -9 of the leader at coordinator.recovery.after_assign (a master
 *    was killed): the next leader resumes the recovery to its end;
 *  every object written stays readable throughout.
 *
 * Every coordinator runs with CRAM_TEST_NO_PID_CHECK, so a standby must wait
 * for the dead leader's session to expire (as across hosts).
 */
#include <CUnit/Basic.h>
#include <pthread.h>

#include "test_ha_util.h"

#define NKEYS 200
#define MAX_CO 10

static struct h_cluster C;
static zhandle_t *zh;
static cram_client *cl;
static uint64_t tid;
static struct h_proc co[MAX_CO];    /* every coordinator instance started */
static int n_co;
static int co_port[MAX_CO];
static const char *zk_hosts;        /* "127.0.0.1:PORT" */

/* Ports for coordinators: base, base+7, base+8 (servers use base+1..+3;
 * harness.h: standbys use the slot's ports after the servers'). */
static int free_port(void)
{
    int ports[3] = { C.port_base, C.port_base + 7, C.port_base + 8 };
    for (int k = 0; k < 3; k++) {
        int used = 0;
        for (int i = 0; i < n_co; i++)
            used |= co_port[i] == ports[k] && ha_alive(&co[i]);
        if (!used)
            return ports[k];
    }
    return 0;
}

/* Start coordinator instance n_co (returns its index, or -1). */
static int start_co(int reset, const char *fault)
{
    if (n_co >= MAX_CO)
        return -1;
    int i = n_co++;
    snprintf(co[i].name, sizeof(co[i].name), "coord-%d", i);
    co_port[i] = free_port();
    if (ha_start_coord(&C, &co[i], C.zk, co_port[i], reset, fault) != 0)
        return -1;
    return i;
}

static int suite_init(void)
{
    if (h_init(&C) != 0)
        return -1;
    zk_hosts = C.zk + 3;
    zh = ha_zk_open(zk_hosts);
    return zh ? 0 : -1;
}

static int suite_clean(void)
{
    if (cl)
        cram_disconnect(cl);
    if (zh)
        zookeeper_close(zh);
    return 0;
}

/* Two coordinators forked back to back on a fresh root: one leads, the other
 * waits as standby, the epoch was bumped once. */
static void test_simultaneous_start(void)
{
    char saved[sizeof(C.cluster)];
    snprintf(saved, sizeof(saved), "%s", C.cluster);
    CU_ASSERT_FATAL(strlen(saved) < sizeof(saved) - 8);
    for (int round = 0; round < 3; round++) {
        snprintf(C.cluster, sizeof(C.cluster), "%.50s-twin%d", saved, round);
        char root[128];
        snprintf(root, sizeof(root), "/cram/%s", C.cluster);
        CU_ASSERT_EQUAL_FATAL(ha_zk_wipe(zh, root), ZOK);   /* left by an earlier run */
        struct h_proc a = { 0 }, b = { 0 };
        snprintf(a.name, sizeof(a.name), "twin%d-a", round);
        snprintf(b.name, sizeof(b.name), "twin%d-b", round);
        CU_ASSERT_EQUAL_FATAL(ha_start_coord(&C, &a, C.zk, 0, 0, NULL), 0);
        CU_ASSERT_EQUAL_FATAL(ha_start_coord(&C, &b, C.zk, 0, 0, NULL), 0);
        int led = 0;
        uint64_t deadline = h_now_ms() + h_ms(10000);
        while (h_now_ms() < deadline && ha_log_count(a.log, "coordinator leads") +
                                        ha_log_count(b.log, "coordinator leads") == 0)
            ha_sleep_ms(20);
        ha_sleep_ms(h_ms(1000));        /* a second leader would show up by now */
        led = ha_log_count(a.log, "coordinator leads") + ha_log_count(b.log, "coordinator leads");
        CU_ASSERT_EQUAL(led, 1);
        struct ha_leader l;
        CU_ASSERT_EQUAL(ha_leader_get(zh, C.cluster, &l), 0);
        CU_ASSERT(l.pid == (uint32_t)a.pid || l.pid == (uint32_t)b.pid);
        CU_ASSERT_EQUAL(l.epoch, 1);
        char path[160];
        snprintf(path, sizeof(path), "%s/election", root);
        CU_ASSERT_EQUAL(ha_children(zh, path), 2);
        struct h_proc *standby = l.pid == (uint32_t)a.pid ? &b : &a;
        CU_ASSERT(ha_log_has(standby->log, "standby: election node"));
        CU_ASSERT(ha_alive(&a) && ha_alive(&b));
        CU_ASSERT_EQUAL(ha_stop(&a), 0);
        CU_ASSERT_EQUAL(ha_stop(&b), 0);
        if (led != 1) {
            ha_dump(&a);
            ha_dump(&b);
        }
    }
    snprintf(C.cluster, sizeof(C.cluster), "%s", saved);
}

static void test_setup_cluster(void)
{
    C.replicas = 1;
    int a = start_co(1, NULL);
    CU_ASSERT_FATAL(a >= 0);
    CU_ASSERT_FATAL(ha_wait_leader(zh, C.cluster, co[a].pid, 15000) >= 0);
    int b = start_co(0, NULL);
    CU_ASSERT_FATAL(b >= 0);
    CU_ASSERT_EQUAL_FATAL(ha_wait_log(co[b].log, "standby: election node", 15000), 0);
    for (int i = 0; i < 2; i++)
        CU_ASSERT_EQUAL_FATAL(h_start_server(&C, i), 0);
    CU_ASSERT_EQUAL_FATAL(h_wait_servers(&C, 2, 30000), 0);
    cl = h_connect(&C);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cl);
    CU_ASSERT_EQUAL_FATAL(cram_create_table(cl, "ha", 2, &tid), CRAM_OK);
    CU_ASSERT_EQUAL(ha_write_keys(cl, tid, "k", NKEYS), 0);

    /* `cram servers` names the leader and the standby */
    char bin[512], out[4096], want[128];
    char *argv[] = { (char *)h_bin("cram", bin, sizeof(bin)), "-C", C.zk, "--cluster", C.cluster,
                     "servers", NULL };
    CU_ASSERT_EQUAL(h_run(argv, out, sizeof(out), 10000), 0);
    snprintf(want, sizeof(want), "coordinator leader  tcp:host=127.0.0.1,port=%d (pid %d ", co_port[a],
             (int)co[a].pid);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    snprintf(want, sizeof(want), "coordinator standby tcp:host=127.0.0.1,port=%d (pid %d ", co_port[b],
             (int)co[b].pid);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    if (strstr(out, want) == NULL)
        fprintf(stderr, "cram servers printed:\n%s", out);
}

/* The leading instance (from the leader record), or -1. */
static int leader_index(void)
{
    struct ha_leader l;
    if (ha_leader_get(zh, C.cluster, &l) != 0)
        return -1;
    for (int i = 0; i < n_co; i++)
        if (co[i].pid > 0 && (uint32_t)co[i].pid == l.pid)
            return i;
    return -1;
}

/* Watches the leader record from a helper thread (its own reads on the
 * shared, thread-safe ZooKeeper handle) while the test thread uses the
 * client during the take-over. */
struct watch_arg {
    pid_t want;
    uint64_t t0;
    int64_t took;               /* ms from t0 to the new leader record, -1 = timeout */
};

static void *watch_leader(void *p)
{
    struct watch_arg *w = p;
    int64_t r = ha_wait_leader(zh, C.cluster, w->want, HA_SESSION_MS + 10000);
    w->took = r < 0 ? -1 : (int64_t)(h_now_ms() - w->t0);
    return NULL;
}

static void test_kill_idle_leader(void)
{
    int a = leader_index();
    CU_ASSERT_FATAL(a >= 0);
    int b = a == 0 ? 1 : 0;
    CU_ASSERT_FATAL(ha_alive(&co[b]));
    struct watch_arg w = { .want = co[b].pid, .t0 = h_now_ms(), .took = -1 };
    int st = ha_kill(&co[a], SIGKILL);
    CU_ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    pthread_t th;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, watch_leader, &w), 0);

    /* meanwhile the same handle carries on: data calls never need the
     * coordinator; metadata calls wait (retrying) for the new leader and
     * succeed -- no error reaches the application */
    uint64_t t1 = h_now_ms();
    CU_ASSERT_EQUAL(ha_check_keys(cl, tid, "k", NKEYS), 0);
    CU_ASSERT_EQUAL(ha_write_keys(cl, tid, "w", 50), 0);
    uint64_t data_ms = h_now_ms() - t1;
    uint64_t id = 0;
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "ha", &id), CRAM_OK);
    CU_ASSERT_EQUAL(id, tid);
    uint64_t meta_ms = h_now_ms() - w.t0;
    pthread_join(th, NULL);
    fprintf(stderr, "\ntake-over after kill -9 of the idle leader: %lld ms (session %llu ms; limit %llu ms); "
            "250 data ops meanwhile took %llu ms; a metadata call issued at once returned after %llu ms\n",
            (long long)w.took, (unsigned long long)h_ms(HA_SESSION_MS),
            (unsigned long long)(h_ms(HA_SESSION_MS) + 2000), (unsigned long long)data_ms,
            (unsigned long long)meta_ms);
    CU_ASSERT_FATAL(w.took >= 0);
    CU_ASSERT(w.took <= (int64_t)(h_ms(HA_SESSION_MS) + 2000));
    CU_ASSERT(data_ms < h_ms(2000));
    CU_ASSERT_EQUAL(ha_wait_log(co[b].log, "coordinator leads", 10000), 0);

    uint64_t t2 = 0;
    CU_ASSERT_EQUAL(cram_create_table(cl, "after-idle", 2, &t2), CRAM_OK);
    CU_ASSERT_EQUAL(ha_write_keys(cl, t2, "a", 20), 0);
    CU_ASSERT_EQUAL(ha_check_keys(cl, t2, "a", 20), 0);
    CU_ASSERT_EQUAL(ha_check_keys(cl, tid, "w", 50), 0);
    cram_server_info *sv = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL(cram_list_servers(cl, &sv, &n), CRAM_OK);
    CU_ASSERT_EQUAL(n, 2);
    cram_free(sv);
}

/* Make the instance armed with `fault` the leader: start it as standby, kill
 * the current leader, wait.  Then start a clean standby behind it.  Returns
 * the armed instance's index, or -1. */
static int lead_with_fault(const char *fault, int *next)
{
    int f = start_co(0, fault);
    if (f < 0 || ha_wait_log(co[f].log, "standby: election node", 15000) != 0)
        return -1;
    int old = leader_index();
    if (old < 0)
        return -1;
    ha_kill(&co[old], SIGKILL);
    if (ha_wait_leader(zh, C.cluster, co[f].pid, HA_SESSION_MS + 10000) < 0 ||
        ha_wait_log(co[f].log, "coordinator leads", 10000) != 0)
        return -1;
    *next = start_co(0, NULL);
    if (*next < 0 || ha_wait_log(co[*next].log, "standby: election node", 15000) != 0)
        return -1;
    return f;
}

static void test_kill_during_create_table(void)
{
    int next = -1;
    int f = lead_with_fault("coordinator.create_table.after_intent:exit", &next);
    CU_ASSERT_FATAL(f >= 0);
    uint64_t t3 = 0;
    /* the armed leader writes the intent and dies; the client's retry
     * reaches the next leader, which has finished the table */
    CU_ASSERT_EQUAL(cram_create_table(cl, "mid-create", 2, &t3), CRAM_OK);
    CU_ASSERT(t3 != 0);
    int st = ha_wait_exit(&co[f], 5000);
    CU_ASSERT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 99);
    CU_ASSERT(ha_log_has(co[f].log, "FAULT coordinator.create_table.after_intent hit"));
    CU_ASSERT(ha_wait_leader(zh, C.cluster, co[next].pid, 10000) >= 0);
    CU_ASSERT(ha_log_has(co[next].log, "finished creating"));
    char path[160];
    snprintf(path, sizeof(path), "/cram/%s/intents", C.cluster);
    CU_ASSERT_EQUAL(ha_children(zh, path), 0);
    uint64_t id = 0;
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "mid-create", &id), CRAM_OK);
    CU_ASSERT_EQUAL(id, t3);
    CU_ASSERT_EQUAL(ha_write_keys(cl, t3, "m", 50), 0);
    CU_ASSERT_EQUAL(ha_check_keys(cl, t3, "m", 50), 0);
    CU_ASSERT_EQUAL(ha_check_keys(cl, tid, "k", NKEYS), 0);
    cram_tablet_info *tt = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL(cram_get_tablets(cl, "mid-create", &tt, &n), CRAM_OK);
    CU_ASSERT_EQUAL(n, 2);
    cram_free(tt);
}

static void test_kill_during_enlist(void)
{
    int next = -1;
    int f = lead_with_fault("coordinator.enlist.after_write:exit", &next);
    CU_ASSERT_FATAL(f >= 0);
    CU_ASSERT_EQUAL_FATAL(h_start_server(&C, 2), 0);
    int st = ha_wait_exit(&co[f], 20000);
    CU_ASSERT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 99);
    CU_ASSERT(ha_log_has(co[f].log, "FAULT coordinator.enlist.after_write hit"));
    CU_ASSERT(ha_wait_leader(zh, C.cluster, co[next].pid, HA_SESSION_MS + 10000) >= 0);
    /* The server retries and is enlisted by the next leader, under a new
     * id: the entry the dead leader wrote names the same locator, so the new
     * leader verifies that id and declares it crashed (it never served). */
    CU_ASSERT_EQUAL(ha_wait_log(C.servers[2].log, "serving as server", 30000), 0);
    int up = 0, crashed = 0;
    uint64_t deadline = h_now_ms() + h_ms(15000);
    while (h_now_ms() < deadline) {
        cram_server_info *sv = NULL;
        size_t n = 0;
        up = crashed = 0;
        if (cram_list_servers(cl, &sv, &n) == CRAM_OK) {
            for (size_t i = 0; i < n; i++) {
                up += sv[i].status == CRAM_SERVER_UP;
                crashed += sv[i].status == CRAM_SERVER_CRASHED;
            }
            cram_free(sv);
        }
        if (up == 3 && crashed == 1)
            break;
        ha_sleep_ms(50);
    }
    CU_ASSERT_EQUAL(up, 3);
    CU_ASSERT_EQUAL(crashed, 1);
    CU_ASSERT_EQUAL(h_wait_servers(&C, 3, 30000), 0);
    CU_ASSERT_EQUAL(ha_check_keys(cl, tid, "k", NKEYS), 0);
    uint64_t t4 = 0;
    CU_ASSERT_EQUAL(cram_create_table(cl, "after-enlist", 3, &t4), CRAM_OK);
    CU_ASSERT_EQUAL(ha_write_keys(cl, t4, "e", 60), 0);
    CU_ASSERT_EQUAL(ha_check_keys(cl, t4, "e", 60), 0);
    uint64_t id = 0;
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "mid-create", &id), CRAM_OK);
    CU_ASSERT_EQUAL(ha_check_keys(cl, id, "m", 50), 0);
}

/* Id of the up server listening on port, or 0. */
static uint64_t server_id_at(int port)
{
    cram_server_info *sv = NULL;
    size_t n = 0;
    uint64_t id = 0;
    char want[64];
    snprintf(want, sizeof(want), "port=%d", port);
    if (cram_list_servers(cl, &sv, &n) != CRAM_OK)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = strstr(sv[i].locators, want);
        if (sv[i].status == CRAM_SERVER_UP && p != NULL && (p[strlen(want)] < '0' || p[strlen(want)] > '9'))
            id = sv[i].server_id;
    }
    cram_free(sv);
    return id;
}

static void test_kill_during_recovery(void)
{
    int next = -1;
    int f = lead_with_fault("coordinator.recovery.after_assign:exit", &next);
    CU_ASSERT_FATAL(f >= 0);
    uint64_t vid = server_id_at(C.port_base + 1);
    CU_ASSERT_FATAL(vid != 0);
    /* a master dies: the armed leader starts its recovery and dies once the
     * partitions are assigned; the next leader resumes the recovery */
    h_kill(&C.servers[0], SIGKILL);
    int st = ha_wait_exit(&co[f], 30000);
    CU_ASSERT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 99);
    CU_ASSERT(ha_log_has(co[f].log, "FAULT coordinator.recovery.after_assign hit"));
    CU_ASSERT(ha_wait_leader(zh, C.cluster, co[next].pid, HA_SESSION_MS + 10000) >= 0);
    int done = 0;
    uint64_t deadline = h_now_ms() + h_ms(60000);
    while (!done && h_now_ms() < deadline) {
        cram_recovery_info *r = NULL;
        size_t n = 0;
        if (cram_recovery_status(cl, &r, &n) == CRAM_OK) {
            for (size_t i = 0; i < n; i++)
                done |= r[i].crashed_master_id == vid && r[i].phase == CRAM_RECOVERY_DONE;
            cram_free(r);
        }
        if (!done)
            ha_sleep_ms(100);
    }
    CU_ASSERT(done);
    /* every object of every table is still readable */
    uint64_t id = 0;
    CU_ASSERT_EQUAL(ha_check_keys(cl, tid, "k", NKEYS), 0);
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "after-idle", &id), CRAM_OK);
    CU_ASSERT_EQUAL(ha_check_keys(cl, id, "a", 20), 0);
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "mid-create", &id), CRAM_OK);
    CU_ASSERT_EQUAL(ha_check_keys(cl, id, "m", 50), 0);
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "after-enlist", &id), CRAM_OK);
    CU_ASSERT_EQUAL(ha_check_keys(cl, id, "e", 60), 0);
    char path[160];
    snprintf(path, sizeof(path), "/cram/%s/recoveries", C.cluster);
    CU_ASSERT_EQUAL(ha_children(zh, path), 0);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("coordinator take-over", suite_init, suite_clean);
    CU_add_test(s, "two coordinators started at once: one leads", test_simultaneous_start);
    CU_add_test(s, "leader, standby, two servers, a table", test_setup_cluster);
    CU_add_test(s, "kill -9 of the idle leader", test_kill_idle_leader);
    CU_add_test(s, "kill -9 at create_table.after_intent", test_kill_during_create_table);
    CU_add_test(s, "kill -9 at enlist.after_write", test_kill_during_enlist);
    CU_add_test(s, "kill -9 at recovery.after_assign", test_kill_during_recovery);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error() ||
              CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    /* coordinators: a clean stop must be clean (sanitizer reports fail it) */
    for (int i = 0; i < n_co; i++) {
        if (co[i].pid > 0 && ha_stop(&co[i]) != 0) {
            fprintf(stderr, "%s did not stop cleanly\n", co[i].name);
            bad = 1;
        }
    }
    if (bad)
        for (int i = 0; i < n_co; i++)
            ha_dump(&co[i]);
    return h_finish(&C, bad);
}
