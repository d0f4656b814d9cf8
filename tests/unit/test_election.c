/*
 * test_election.c -- coordinator election (coordinator/election.h):
 * predecessor choice (pure), and against the ZooKeeper of CRAM_TEST_ZK:
 * the first candidate wins, the second waits until the first's session
 * ends, a stop flag ends the wait, a leftover node of a dead local process
 * is removed at once, and a claim survives a retried election.
 */
#include <CUnit/Basic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include "cram.pb-c.h"
#include "coordinator/election.h"
#include "coordinator/zkstore.h"

static const char *zk_hosts;
static char cluster[64];

static void test_seq(void)
{
    CU_ASSERT_EQUAL(elect_seq("n-0000000007"), 7);
    CU_ASSERT_EQUAL(elect_seq("n-0000000000"), 0);
    CU_ASSERT_EQUAL(elect_seq("n-2147483648"), 2147483648LL);
    CU_ASSERT_EQUAL(elect_seq("n-"), -1);
    CU_ASSERT_EQUAL(elect_seq("n-12a"), -1);
    CU_ASSERT_EQUAL(elect_seq("x"), -1);
    CU_ASSERT_EQUAL(elect_seq(NULL), -1);
    CU_ASSERT_EQUAL(elect_seq("n-99999999999999999999999"), -1);
}

static void test_predecessor(void)
{
    char *names[] = { "n-0000000005", "n-0000000002", "junk", "n-0000000009", "n-0000000003" };
    CU_ASSERT_EQUAL(elect_predecessor(names, 5, "n-0000000002"), -1);   /* lowest */
    CU_ASSERT_EQUAL(elect_predecessor(names, 5, "n-0000000003"), 1);
    CU_ASSERT_EQUAL(elect_predecessor(names, 5, "n-0000000005"), 4);
    CU_ASSERT_EQUAL(elect_predecessor(names, 5, "n-0000000009"), 0);
    CU_ASSERT_EQUAL(elect_predecessor(names, 5, "bad"), -1);
    CU_ASSERT_EQUAL(elect_predecessor(names, 0, "n-0000000009"), -1);
    /* sequence order, not string order, past 10 digits' wrap */
    char *wide[] = { "n-9999999999", "n-10000000000" };
    CU_ASSERT_EQUAL(elect_predecessor(wide, 2, "n-10000000000"), 0);
}

static zks *open_zk(void)
{
    char err[256];
    zks *z = zks_open_session(zk_hosts, cluster, 10000, 2000, err, sizeof(err));
    if (z == NULL)
        fprintf(stderr, "zks_open_session: %s\n", err);
    return z;
}

static void test_two_candidates(void)
{
    if (zk_hosts == NULL)
        return;
    zks *a = open_zk();
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL_FATAL(zks_wipe(a), ZOK);
    CU_ASSERT_EQUAL_FATAL(zks_ensure_layout(a), ZOK);
    CU_ASSERT(zks_session_ms(a) >= 2000 && zks_session_ms(a) <= 4000);
    CU_ASSERT_EQUAL(zks_disconnected_ms(a), 0);
    int rc = -1;
    elect *ea = elect_join(a, "tcp:host=127.0.0.1,port=1", &rc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ea);
    CU_ASSERT_EQUAL(rc, ZOK);
    CU_ASSERT_EQUAL(elect_wait(ea, NULL), ZOK);
    CU_ASSERT_EQUAL(zks_claim(a, "tcp:host=127.0.0.1,port=1", NULL), ZOK);
    CU_ASSERT_EQUAL(zks_epoch(a), 1);
    CU_ASSERT_EQUAL(zks_check_leader(a), ZOK);

    zks *b = open_zk();
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    elect *eb = elect_join(b, "tcp:host=127.0.0.1,port=2", &rc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(eb);
    CU_ASSERT(elect_seq(elect_node(eb)) > elect_seq(elect_node(ea)));
    CU_ASSERT_EQUAL(zks_check_leader(b), ZKS_FENCED);     /* a leads, not b */

    /* b waits while a lives: a stop flag ends the wait */
    volatile int stop = 1;
    CU_ASSERT_EQUAL(elect_wait(eb, &stop), ZCLOSING);

    /* a's session ends (closed): b's watch fires and b wins, quickly */
    elect_free(ea, false);
    zks_close(a);
    stop = 0;
    CU_ASSERT_EQUAL(elect_wait(eb, &stop), ZOK);
    CU_ASSERT_EQUAL(zks_claim(b, "tcp:host=127.0.0.1,port=2", NULL), ZOK);
    CU_ASSERT_EQUAL(zks_epoch(b), 2);
    CU_ASSERT_EQUAL(zks_check_leader(b), ZOK);
    struct zks_op op = { .kind = ZKS_CREATE, .path = "tables/t", .data = "x", .len = 1 };
    CU_ASSERT_EQUAL(zks_commit(b, &op, 1), ZOK);
    elect_free(eb, true);
    char **names = NULL;
    int n = -1;
    CU_ASSERT_EQUAL(zks_children(b, "election", &names, &n), ZOK);
    CU_ASSERT_EQUAL(n, 0);
    zks_free_names(names, n);
    zks_close(b);
}

/* A node whose LeaderRecord names a process of this host that is gone is
 * removed by the waiting successor without waiting for the session. */
static void test_dead_local_predecessor(void)
{
    if (zk_hosts == NULL)
        return;
    zks *a = open_zk();
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL_FATAL(zks_wipe(a), ZOK);
    CU_ASSERT_EQUAL_FATAL(zks_ensure_layout(a), ZOK);
    /* a dead pid: a child that exited */
    pid_t kid = fork();
    CU_ASSERT_FATAL(kid >= 0);
    if (kid == 0)
        _exit(0);
    waitpid(kid, NULL, 0);
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    Cram__LeaderRecord rec = CRAM__LEADER_RECORD__INIT;
    rec.locator = "tcp:host=127.0.0.1,port=9";
    rec.pid = (uint32_t)kid;
    rec.host = host;
    uint8_t buf[512];
    size_t len = cram__leader_record__pack(&rec, buf);
    CU_ASSERT_TRUE(zks_owner_gone(buf, len));
    char path[300];
    snprintf(path, sizeof(path), "%s/election/n-", zks_root(a));
    CU_ASSERT_EQUAL_FATAL(zoo_create(zks_raw(a), path, (const char *)buf, (int)len, &ZOO_OPEN_ACL_UNSAFE,
                                     ZOO_EPHEMERAL | ZOO_SEQUENCE, NULL, 0), ZOK);
    zks *b = open_zk();
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    int rc;
    elect *eb = elect_join(b, "tcp:host=127.0.0.1,port=2", &rc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(eb);
    /* a's session is alive, but the node's owner is gone */
    CU_ASSERT_EQUAL(elect_wait(eb, NULL), ZOK);
    /* ours is not "gone" */
    rec.pid = (uint32_t)getpid();
    len = cram__leader_record__pack(&rec, buf);
    CU_ASSERT_FALSE(zks_owner_gone(buf, len));
    CU_ASSERT_FALSE(zks_owner_gone((const uint8_t *)"\xff\xff", 2));
    elect_free(eb, false);
    zks_close(b);
    zks_close(a);
}

int main(void)
{
    zk_hosts = getenv("CRAM_TEST_ZK");
    if (zk_hosts == NULL || !*zk_hosts) {
        fprintf(stderr, "CRAM_TEST_ZK unset: ZooKeeper tests skipped\n");
        zk_hosts = NULL;
    }
    snprintf(cluster, sizeof(cluster), "unit-election-%d", (int)getpid());
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("election", NULL, NULL);
    CU_add_test(s, "sequence numbers", test_seq);
    CU_add_test(s, "predecessor", test_predecessor);
    CU_add_test(s, "two candidates", test_two_candidates);
    CU_add_test(s, "dead local predecessor", test_dead_local_predecessor);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    /* leave nothing behind in ZooKeeper */
    if (zk_hosts != NULL) {
        char err[256];
        zks *z = zks_open(zk_hosts, cluster, 10000, err, sizeof(err));
        if (z != NULL) {
            zks_wipe(z);
            zks_close(z);
        }
    }
    return bad;
}
