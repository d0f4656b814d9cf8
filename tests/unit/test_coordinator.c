/*
 * test_coordinator.c -- coordinator unit tests.
 *
 * Suite "coordinator logic": pure functions (tablet split and placement,
 * server ids, name validation, fault-point parsing, protobuf round trips).
 * Suite "coordinator zookeeper": the ZooKeeper storage layer and an
 * in-process coordinator driven over TCP; needs a ZooKeeper server at
 * CRAM_TEST_ZK (host:port).  Without it each of those tests prints
 * "SKIP: CRAM_TEST_ZK not set" and checks nothing; they sit in their own
 * suite so the skip is visible (the test runner always sets CRAM_TEST_ZK).
 */
#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <zookeeper/zookeeper.h>

#include "cram.pb-c.h"
#include "common/clock.h"
#include "common/coordloc.h"
#include "common/log.h"
#include "common/serverlist.h"
#include "common/wire.h"
#include "coordinator/coord_util.h"
#include "coordinator/coordinator.h"
#include "coordinator/fault.h"
#include "coordinator/zkstore.h"
#include "transport/transport.h"

/* ---------------------------------------------------------------------
 * Pure logic
 * ------------------------------------------------------------------- */

static void check_split(uint32_t span)
{
    uint64_t prev_end = 0;
    unsigned __int128 total = 0;
    for (uint32_t i = 0; i < span; i++) {
        uint64_t s, e;
        coord_tablet_range(span, i, &s, &e);
        CU_ASSERT(s <= e);
        if (i == 0) {
            CU_ASSERT_EQUAL(s, 0);
        } else {
            CU_ASSERT_EQUAL(s, prev_end + 1);      /* no gap, no overlap */
        }
        total += (unsigned __int128)(e - s) + 1;
        prev_end = e;
        /* equal sizes: within one hash value of 2^64/span */
        unsigned __int128 want = ((unsigned __int128)1 << 64) / span;
        unsigned __int128 got = (unsigned __int128)(e - s) + 1;
        CU_ASSERT(got == want || got == want + 1);
    }
    CU_ASSERT_EQUAL(prev_end, UINT64_MAX);
    CU_ASSERT(total == ((unsigned __int128)1 << 64));
}

static void test_tablet_split(void)
{
    static const uint32_t spans[] = { 1, 2, 3, 4, 5, 7, 8, 10, 100, 1023, 1024 };
    for (size_t i = 0; i < sizeof(spans) / sizeof(spans[0]); i++)
        check_split(spans[i]);
    uint64_t s, e;
    coord_tablet_range(1, 0, &s, &e);
    CU_ASSERT_EQUAL(s, 0);
    CU_ASSERT_EQUAL(e, UINT64_MAX);
    coord_tablet_range(2, 0, &s, &e);
    CU_ASSERT_EQUAL(e, 0x7fffffffffffffffull);
    coord_tablet_range(2, 1, &s, &e);
    CU_ASSERT_EQUAL(s, 0x8000000000000000ull);
}

static void test_round_robin(void)
{
    /* consecutive tablets go to consecutive masters, wrapping around */
    for (uint32_t n = 1; n <= 5; n++) {
        uint32_t count[5] = { 0 };
        for (uint32_t i = 0; i < 10 * n; i++) {
            uint32_t m = coord_tablet_master(7, i, n);
            CU_ASSERT(m < n);
            CU_ASSERT_EQUAL(m, (coord_tablet_master(7, 0, n) + i) % n);
            count[m]++;
        }
        for (uint32_t m = 0; m < n; m++)
            CU_ASSERT_EQUAL(count[m], 10);
    }
    /* the starting master rotates between tables */
    CU_ASSERT_NOT_EQUAL(coord_tablet_master(1, 0, 3), coord_tablet_master(2, 0, 3));
    CU_ASSERT_NOT_EQUAL(coord_tablet_master(2, 0, 3), coord_tablet_master(3, 0, 3));
    CU_ASSERT_EQUAL(coord_tablet_master(5, 0, 0), 0);
}

static void test_server_id(void)
{
    uint64_t id = coord_server_id(5, 3);
    CU_ASSERT_EQUAL(id, (3ull << 32) | 5);
    CU_ASSERT_EQUAL(coord_server_index(id), 5);
    CU_ASSERT_EQUAL(coord_server_generation(id), 3);
    CU_ASSERT_EQUAL(coord_server_id(1, 0), 1);
    id = coord_server_id(UINT32_MAX, UINT32_MAX);
    CU_ASSERT_EQUAL(id, UINT64_MAX);
    CU_ASSERT_EQUAL(coord_server_index(id), UINT32_MAX);
}

static void test_names(void)
{
    char big[300];
    CU_ASSERT(coord_name_valid("t"));
    CU_ASSERT(coord_name_valid("users table-1.x"));
    CU_ASSERT(!coord_name_valid(""));
    CU_ASSERT(!coord_name_valid(NULL));
    CU_ASSERT(!coord_name_valid("a/b"));
    CU_ASSERT(!coord_name_valid("."));
    CU_ASSERT(!coord_name_valid(".."));
    CU_ASSERT(coord_name_valid("..."));
    CU_ASSERT(!coord_name_valid("tab\tle"));
    CU_ASSERT(!coord_name_valid("caf\xc3\xa9"));
    memset(big, 'a', 255);
    big[255] = '\0';
    CU_ASSERT(coord_name_valid(big));
    memset(big, 'a', 256);
    big[256] = '\0';
    CU_ASSERT(!coord_name_valid(big));

    CU_ASSERT(coord_locator_valid("tcp:host=127.0.0.1,port=22211"));
    CU_ASSERT(!coord_locator_valid("tcp:host=127.0.0.1,port=22211,bogus=1"));
    CU_ASSERT(!coord_locator_valid(""));
    CU_ASSERT(!coord_locator_valid("nonsense"));
    CU_ASSERT(coord_label_valid(""));
    CU_ASSERT(coord_label_valid("rack-1"));
    CU_ASSERT(!coord_label_valid("rack\n1"));
}

static void test_fault_spec(void)
{
    CU_ASSERT(coord_fault_armed("coordinator.create_table.after_intent:exit",
                                "coordinator.create_table.after_intent"));
    CU_ASSERT(coord_fault_armed("a:exit,coordinator.x:exit", "coordinator.x"));
    CU_ASSERT(!coord_fault_armed("coordinator.x:exit", "coordinator"));
    CU_ASSERT(!coord_fault_armed("coordinator.xy:exit", "coordinator.x"));
    CU_ASSERT(!coord_fault_armed("coordinator.x:crash", "coordinator.x"));
    CU_ASSERT(!coord_fault_armed(NULL, "coordinator.x"));
    CU_ASSERT(!coord_fault_armed("", "coordinator.x"));
    coord_fault_point("test.not.armed");    /* returns: CRAM_FAULT does not arm it */
}

static void test_records_roundtrip(void)
{
    Cram__Tablet tb[3];
    Cram__Tablet *tp[3];
    for (int i = 0; i < 3; i++) {
        cram__tablet__init(&tb[i]);
        tb[i].table_id = 9;
        coord_tablet_range(3, (uint32_t)i, &tb[i].start_hash, &tb[i].end_hash);
        tb[i].server_id = coord_server_id((uint32_t)i + 1, 2);
        tp[i] = &tb[i];
    }
    Cram__TableRecord t = CRAM__TABLE_RECORD__INIT;
    t.name = "orders";
    t.table_id = 9;
    t.n_tablets = 3;
    t.tablets = tp;
    Cram__IntentRecord in = CRAM__INTENT_RECORD__INIT;
    in.kind = CRAM__INTENT_KIND__INTENT_DROP_TABLE;
    in.table = &t;
    uint8_t buf[512];
    size_t len = cram__intent_record__pack(&in, buf);
    CU_ASSERT(len > 0 && len <= sizeof(buf));
    Cram__IntentRecord *back = cram__intent_record__unpack(NULL, len, buf);
    CU_ASSERT_PTR_NOT_NULL_FATAL(back);
    CU_ASSERT_EQUAL(back->kind, CRAM__INTENT_KIND__INTENT_DROP_TABLE);
    CU_ASSERT_STRING_EQUAL(back->table->name, "orders");
    CU_ASSERT_EQUAL(back->table->n_tablets, 3);
    CU_ASSERT_EQUAL(back->table->tablets[2]->end_hash, UINT64_MAX);
    CU_ASSERT_EQUAL(back->table->tablets[1]->server_id, coord_server_id(2, 2));
    cram__intent_record__free_unpacked(back, NULL);

    char *locs[2] = { "tcp:host=127.0.0.1,port=1", "tcp:host=127.0.0.1,port=2" };
    Cram__ServerEntry e = CRAM__SERVER_ENTRY__INIT;
    e.server_id = coord_server_id(4, 1);
    e.n_locators = 2;
    e.locators = locs;
    e.services = COORD_SVC_MASTER | COORD_SVC_BACKUP;
    e.failure_domain = "rack1";
    e.memory_bytes = 1ull << 30;
    len = cram__server_entry__pack(&e, buf);
    Cram__ServerEntry *eb = cram__server_entry__unpack(NULL, len, buf);
    CU_ASSERT_PTR_NOT_NULL_FATAL(eb);
    CU_ASSERT_EQUAL(eb->server_id, e.server_id);
    CU_ASSERT_EQUAL(eb->n_locators, 2);
    CU_ASSERT_STRING_EQUAL(eb->locators[1], locs[1]);
    CU_ASSERT_STRING_EQUAL(eb->failure_domain, "rack1");
    CU_ASSERT_EQUAL(eb->memory_bytes, 1ull << 30);
    cram__server_entry__free_unpacked(eb, NULL);

    Cram__IdCounters ids = CRAM__ID_COUNTERS__INIT;
    ids.next_table_id = 77;
    ids.next_server_index = 5;
    ids.server_list_version = 12;
    len = cram__id_counters__pack(&ids, buf);
    Cram__IdCounters *ib = cram__id_counters__unpack(NULL, len, buf);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ib);
    CU_ASSERT_EQUAL(ib->next_table_id, 77);
    CU_ASSERT_EQUAL(ib->next_server_index, 5);
    CU_ASSERT_EQUAL(ib->server_list_version, 12);
    cram__id_counters__free_unpacked(ib, NULL);

    Cram__LeaderRecord lr = CRAM__LEADER_RECORD__INIT;
    lr.locator = "tcp:host=127.0.0.1,port=9";
    lr.epoch = 4;
    len = cram__leader_record__pack(&lr, buf);
    Cram__LeaderRecord *lb = cram__leader_record__unpack(NULL, len, buf);
    CU_ASSERT_PTR_NOT_NULL_FATAL(lb);
    CU_ASSERT_STRING_EQUAL(lb->locator, lr.locator);
    CU_ASSERT_EQUAL(lb->epoch, 4);
    cram__leader_record__free_unpacked(lb, NULL);

    /* garbage does not unpack */
    static const uint8_t junk[] = { 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01 };
    CU_ASSERT_PTR_NULL(cram__table_record__unpack(NULL, sizeof(junk), junk));
}

static void test_coordloc_local(void)
{
    char out[128];
    CU_ASSERT_EQUAL(coordloc_find("tcp:host=127.0.0.1,port=5", NULL, 100, out, sizeof(out)), CRAM_OK);
    CU_ASSERT_STRING_EQUAL(out, "tcp:host=127.0.0.1,port=5");
    CU_ASSERT_EQUAL(coordloc_find("tcp:host=127.0.0.1,port=5", NULL, 100, out, 8), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(coordloc_find("bogus", NULL, 100, out, sizeof(out)), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(coordloc_find(NULL, NULL, 100, out, sizeof(out)), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(coordloc_find("zk:127.0.0.1:1", "a/b", 100, out, sizeof(out)), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(coordloc_find("zk:127.0.0.1:1", "", 100, out, sizeof(out)), CRAM_INVALID_ARGUMENT);
    coordloc_root(NULL, out, sizeof(out));
    CU_ASSERT_STRING_EQUAL(out, "/cram/main");
    coordloc_root("x", out, sizeof(out));
    CU_ASSERT_STRING_EQUAL(out, "/cram/x");
    /* nobody listens on port 1: unavailable, within about the timeout */
    uint64_t t0 = clock_mono_ms();
    CU_ASSERT_EQUAL(coordloc_find("zk:127.0.0.1:1", "main", 300, out, sizeof(out)),
                    CRAM_COORDINATOR_UNAVAILABLE);
    CU_ASSERT(clock_mono_ms() - t0 < 3000);
}

/* ---------------------------------------------------------------------
 * ZooKeeper tests
 * ------------------------------------------------------------------- */

static const char *zk_hosts(void)
{
    const char *z = getenv("CRAM_TEST_ZK");
    if (z == NULL || z[0] == '\0') {
        printf("\nSKIP: CRAM_TEST_ZK not set\n");
        return NULL;
    }
    return z;
}

static void unique_cluster(char *out, size_t n, const char *tag)
{
    snprintf(out, n, "unit-%s-%d", tag, (int)getpid());
}

static zks *open_fresh(const char *hosts, const char *cluster)
{
    char err[256] = "";
    zks *z = zks_open(hosts, cluster, 10000, err, sizeof(err));
    if (z == NULL)
        fprintf(stderr, "zks_open: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL(z);
    if (z == NULL)
        return NULL;
    CU_ASSERT_EQUAL(zks_wipe(z), ZOK);
    CU_ASSERT_EQUAL(zks_ensure_layout(z), ZOK);
    return z;
}

static void test_zk_write_reload(void)
{
    const char *hosts = zk_hosts();
    if (hosts == NULL)
        return;
    char cluster[64];
    unique_cluster(cluster, sizeof(cluster), "reload");
    zks *z = open_fresh(hosts, cluster);
    if (z == NULL)
        return;
    /* before claiming, writes are refused */
    struct zks_op early = { .kind = ZKS_CREATE, .path = "tables/early", .data = "x", .len = 1 };
    CU_ASSERT_NOT_EQUAL(zks_commit(z, &early, 1), ZOK);
    CU_ASSERT_EQUAL_FATAL(zks_claim(z, "tcp:host=127.0.0.1,port=1", NULL), ZOK);
    CU_ASSERT_EQUAL(zks_epoch(z), 1);

    char seq[128] = "";
    struct zks_op ops[3] = {
        { .kind = ZKS_CREATE, .path = "tables/b", .data = "bee", .len = 3 },
        { .kind = ZKS_CREATE, .path = "tables/a", .data = "ay", .len = 2 },
        { .kind = ZKS_CREATE, .path = "intents/i-", .data = "i", .len = 1, .sequential = true,
          .created = seq, .created_len = sizeof(seq) },
    };
    CU_ASSERT_EQUAL(zks_commit(z, ops, 3), ZOK);
    CU_ASSERT(strncmp(seq, "intents/i-", 10) == 0 && strlen(seq) > 10);
    /* an op that fails takes the whole batch down */
    struct zks_op bad[2] = {
        { .kind = ZKS_CREATE, .path = "tables/c", .data = "c", .len = 1 },
        { .kind = ZKS_CREATE, .path = "tables/a", .data = "dup", .len = 3 },
    };
    CU_ASSERT_EQUAL(zks_commit(z, bad, 2), ZNODEEXISTS);
    zks_close(z);

    /* a new handle (a restarted coordinator) sees the same state */
    char err[256];
    z = zks_open(hosts, cluster, 10000, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    char **names;
    int n;
    CU_ASSERT_EQUAL(zks_children(z, "tables", &names, &n), ZOK);
    CU_ASSERT_EQUAL(n, 2);
    if (n == 2) {
        CU_ASSERT_STRING_EQUAL(names[0], "a");
        CU_ASSERT_STRING_EQUAL(names[1], "b");
    }
    zks_free_names(names, n);
    uint8_t *data;
    size_t len;
    CU_ASSERT_EQUAL(zks_get(z, "tables/b", &data, &len), ZOK);
    CU_ASSERT_EQUAL(len, 3);
    CU_ASSERT(data != NULL && memcmp(data, "bee", 3) == 0);
    free(data);
    CU_ASSERT_EQUAL(zks_get(z, "tables/c", &data, &len), ZNONODE);
    CU_ASSERT_EQUAL(zks_get(z, seq, &data, &len), ZOK);
    free(data);
    /* the first leader's session ended, so a new claim succeeds at once */
    CU_ASSERT_EQUAL(zks_claim(z, "tcp:host=127.0.0.1,port=2", NULL), ZOK);
    CU_ASSERT_EQUAL(zks_epoch(z), 2);
    char loc[256];
    CU_ASSERT_EQUAL(coordloc_find(strcat(strcpy((char[300]){0}, "zk:"), hosts), cluster, 5000, loc, sizeof(loc)), CRAM_OK);
    CU_ASSERT_STRING_EQUAL(loc, "tcp:host=127.0.0.1,port=2");
    /* no leader record (another cluster): unavailable */
    char other[80];
    snprintf(other, sizeof(other), "%s-none", cluster);
    CU_ASSERT_EQUAL(coordloc_find(strcat(strcpy((char[300]){0}, "zk:"), hosts), other, 5000, loc, sizeof(loc)),
                    CRAM_COORDINATOR_UNAVAILABLE);
    CU_ASSERT_EQUAL(zks_wipe(z), ZOK);
    zks_close(z);
}

static void test_zk_fencing(void)
{
    const char *hosts = zk_hosts();
    if (hosts == NULL)
        return;
    char cluster[64];
    unique_cluster(cluster, sizeof(cluster), "fence");
    zks *a = open_fresh(hosts, cluster);
    if (a == NULL)
        return;
    CU_ASSERT_EQUAL_FATAL(zks_claim(a, "tcp:host=127.0.0.1,port=1", NULL), ZOK);
    struct zks_op w1 = { .kind = ZKS_CREATE, .path = "tables/one", .data = "1", .len = 1 };
    CU_ASSERT_EQUAL(zks_commit(a, &w1, 1), ZOK);

    /* A is deposed: its leader record disappears (as if its session had
     * been declared dead) and B becomes leader. */
    char err[256];
    zks *b = zks_open(hosts, cluster, 10000, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    char leader[300];
    snprintf(leader, sizeof(leader), "%s/coordinator", zks_root(b));
    CU_ASSERT_EQUAL(zoo_delete((zhandle_t *)zks_raw(b), leader, -1), ZOK);
    CU_ASSERT_EQUAL(zks_claim(b, "tcp:host=127.0.0.1,port=2", NULL), ZOK);
    CU_ASSERT(zks_epoch(b) > zks_epoch(a));

    /* every write of the old leader is rejected, and none of it applies */
    struct zks_op w2[2] = {
        { .kind = ZKS_CREATE, .path = "tables/two", .data = "2", .len = 1 },
        { .kind = ZKS_DELETE, .path = "tables/one" },
    };
    CU_ASSERT_EQUAL(zks_commit(a, w2, 2), ZKS_FENCED);
    uint8_t *data;
    size_t len;
    CU_ASSERT_EQUAL(zks_get(b, "tables/two", &data, &len), ZNONODE);
    CU_ASSERT_EQUAL(zks_get(b, "tables/one", &data, &len), ZOK);
    free(data);
    /* the new leader writes fine */
    CU_ASSERT_EQUAL(zks_commit(b, w2, 2), ZOK);
    zks_close(a);
    CU_ASSERT_EQUAL(zks_wipe(b), ZOK);
    zks_close(b);
}

static void *set_flag_later(void *arg)
{
    usleep(600 * 1000);
    *(volatile int *)arg = 1;
    return NULL;
}

/* Write a leader record for pid on this host from a second session (it
 * stays until that session ends). */
static void fake_leader(zks *other, const char *root, uint32_t pid)
{
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    Cram__LeaderRecord rec = CRAM__LEADER_RECORD__INIT;
    rec.locator = "tcp:host=127.0.0.1,port=3";
    rec.pid = pid;
    rec.host = host;
    rec.epoch = 99;
    uint8_t buf[512];
    size_t len = cram__leader_record__pack(&rec, buf);
    char path[300];
    snprintf(path, sizeof(path), "%s/coordinator", root);
    CU_ASSERT_EQUAL(zoo_create((zhandle_t *)zks_raw(other), path, (const char *)buf, (int)len,
                               &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL, NULL, 0), ZOK);
}

static void test_zk_claim_waits(void)
{
    const char *hosts = zk_hosts();
    if (hosts == NULL)
        return;
    char cluster[64], err[256];
    unique_cluster(cluster, sizeof(cluster), "claim");
    zks *a = open_fresh(hosts, cluster);
    if (a == NULL)
        return;
    zks *other = zks_open(hosts, cluster, 10000, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(other);

    /* a live leader (our parent process, on this host): claim waits */
    fake_leader(other, zks_root(a), (uint32_t)getppid());
    volatile int stop = 0;
    pthread_t t;
    pthread_create(&t, NULL, set_flag_later, (void *)&stop);
    uint64_t t0 = clock_mono_ms();
    CU_ASSERT_EQUAL(zks_claim(a, "tcp:host=127.0.0.1,port=4", &stop), ZCLOSING);
    CU_ASSERT(clock_mono_ms() - t0 >= 500);
    pthread_join(t, NULL);
    zks_close(other);

    /* a leader record of a process that is gone: claimed at once */
    other = zks_open(hosts, cluster, 10000, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(other);
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    waitpid(child, NULL, 0);
    fake_leader(other, zks_root(a), (uint32_t)child);
    stop = 0;
    t0 = clock_mono_ms();
    CU_ASSERT_EQUAL(zks_claim(a, "tcp:host=127.0.0.1,port=4", &stop), ZOK);
    CU_ASSERT(clock_mono_ms() - t0 < 2000);
    zks_close(other);
    CU_ASSERT_EQUAL(zks_wipe(a), ZOK);
    zks_close(a);
}

/* ---- an in-process coordinator driven over TCP ---------------------------
 * The test thread runs one tp_loop with a client session to the coordinator
 * and a listener that plays the master side of TAKE_TABLET/DROP_TABLET
 * (answers OK and counts); the coordinator runs in its own thread. */

struct fake_master {
    int take, drop, other;
    uint64_t last_table;
};

static void fake_master_request(void *arg, tp_rpc *rpc)
{
    struct fake_master *fm = arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    struct wire_req_hdr h;
    struct wire_resp_hdr r = { CRAM_OK };
    if (len < sizeof(h)) {
        r.status = CRAM_REQUEST_FORMAT_ERROR;
    } else {
        memcpy(&h, req, sizeof(h));
        Cram__TabletOwnership *o = cram__tablet_ownership__unpack(NULL, len - sizeof(h), req + sizeof(h));
        if (o == NULL || o->tablet == NULL)
            r.status = CRAM_REQUEST_FORMAT_ERROR;
        else if (h.opcode == WIRE_OP_TAKE_TABLET)
            fm->take++;
        else if (h.opcode == WIRE_OP_DROP_TABLET)
            fm->drop++;
        else
            fm->other++;
        if (o != NULL) {
            if (o->tablet)
                fm->last_table = o->tablet->table_id;
            cram__tablet_ownership__free_unpacked(o, NULL);
        }
    }
    struct iovec iov = { &r, sizeof(r) };
    tp_rpc_reply(rpc, &iov, 1);
}

struct coord_thread {
    coord *c;
    pthread_t t;
    int rc;
};

static void *coord_thread_main(void *arg)
{
    struct coord_thread *ct = arg;
    ct->rc = coord_run(ct->c);
    return NULL;
}

/* A fresh (reset) coordinator sets the cluster settings replicas 2 / sync;
 * a restarted one passes none, so the stored ones must win over the
 * defaults 3 / buffered. */
static int start_coord(struct coord_thread *ct, const char *hosts, const char *cluster, bool reset)
{
    struct coord_config cfg = {
        .zk_hosts = hosts, .cluster = cluster, .listen = "tcp:host=127.0.0.1,port=0",
        .replicas = reset ? 2 : 3, .replicas_set = reset,
        .durability = reset ? "sync" : "buffered", .durability_set = reset,
        .reset = reset,
        .verify_silent_ms = 1000,       /* a hung (connected, silent) server: 1 s, not 4 */
    };
    char err[256];
    ct->c = coord_create(&cfg, err, sizeof(err));
    if (ct->c == NULL) {
        fprintf(stderr, "coord_create: %s\n", err);
        return -1;
    }
    return pthread_create(&ct->t, NULL, coord_thread_main, ct);
}

static void stop_coord(struct coord_thread *ct)
{
    coord_stop(ct->c);
    pthread_join(ct->t, NULL);
    coord_destroy(ct->c);
    ct->c = NULL;
}

/* One RPC: returns the response status (or a transport status); body is
 * malloc'ed when present. */
static int32_t rpc(tp_session *s, uint16_t op, const ProtobufCMessage *m, uint8_t **body, size_t *blen)
{
    struct wire_req_hdr h = { .opcode = op, .service = WIRE_SVC_COORDINATOR };
    uint8_t buf[4096];
    size_t len = m ? protobuf_c_message_pack(m, buf) : 0;
    struct iovec iov[2] = { { &h, sizeof(h) }, { buf, len } };
    uint8_t *resp = NULL;
    uint32_t rlen = 0;
    cram_status st = tp_call(s, iov, 2, 20000, &resp, &rlen);
    if (body)
        *body = NULL;
    if (st != CRAM_OK)
        return st;
    struct wire_resp_hdr r;
    if (rlen < sizeof(r)) {
        free(resp);
        return -1000;
    }
    memcpy(&r, resp, sizeof(r));
    if (body) {
        *body = malloc(rlen - sizeof(r) + 1);
        memcpy(*body, resp + sizeof(r), rlen - sizeof(r));
        *blen = rlen - sizeof(r);
    }
    free(resp);
    return r.status;
}

static int32_t raw_rpc(tp_session *s, const void *msg, size_t len)
{
    struct iovec iov = { (void *)msg, len };
    uint8_t *resp = NULL;
    uint32_t rlen = 0;
    cram_status st = tp_call(s, &iov, 1, 20000, &resp, &rlen);
    if (st != CRAM_OK)
        return st;
    struct wire_resp_hdr r = { -1000 };
    if (rlen >= sizeof(r))
        memcpy(&r, resp, sizeof(r));
    free(resp);
    return r.status;
}

static uint64_t get_table_id(tp_session *s, const char *name, int32_t *st)
{
    Cram__TableNameRequest rq = CRAM__TABLE_NAME_REQUEST__INIT;
    rq.name = (char *)name;
    uint8_t *body;
    size_t blen;
    *st = rpc(s, WIRE_OP_GET_TABLE_ID, &rq.base, &body, &blen);
    uint64_t id = 0;
    if (*st == CRAM_OK) {
        Cram__TableIdResponse *r = cram__table_id_response__unpack(NULL, blen, body);
        CU_ASSERT_PTR_NOT_NULL(r);
        if (r) {
            id = r->table_id;
            cram__table_id_response__free_unpacked(r, NULL);
        }
    }
    free(body);
    return id;
}

static uint64_t create_table(tp_session *s, const char *name, uint32_t span, int32_t *st)
{
    Cram__CreateTableRequest rq = CRAM__CREATE_TABLE_REQUEST__INIT;
    rq.name = (char *)name;
    rq.server_span = span;
    uint8_t *body;
    size_t blen;
    *st = rpc(s, WIRE_OP_CREATE_TABLE, &rq.base, &body, &blen);
    uint64_t id = 0;
    if (*st == CRAM_OK) {
        Cram__TableIdResponse *r = cram__table_id_response__unpack(NULL, blen, body);
        CU_ASSERT_PTR_NOT_NULL(r);
        if (r) {
            id = r->table_id;
            cram__table_id_response__free_unpacked(r, NULL);
        }
    }
    free(body);
    return id;
}

static void test_coordinator_rpcs(void)
{
    const char *hosts = zk_hosts();
    if (hosts == NULL)
        return;
    char cluster[64];
    unique_cluster(cluster, sizeof(cluster), "rpc");
    struct coord_thread ct;
    CU_ASSERT_EQUAL_FATAL(start_coord(&ct, hosts, cluster, true), 0);

    tp_loop *l = tp_loop_create();
    struct fake_master fm = { 0 };
    char err[256];
    tp_listener *ls = tp_listen(l, "tcp:host=127.0.0.1,port=0", fake_master_request, &fm, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ls);
    cram_status st;
    tp_session *s = tp_session_open(l, coord_locator(ct.c), &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);

    /* ping, malformed and unknown requests */
    struct wire_req_hdr ping = { .opcode = WIRE_OP_PING, .service = WIRE_SVC_PING };
    CU_ASSERT_EQUAL(raw_rpc(s, &ping, sizeof(ping)), CRAM_OK);
    CU_ASSERT_EQUAL(raw_rpc(s, "abc", 3), CRAM_REQUEST_FORMAT_ERROR);
    struct wire_req_hdr bogus = { .opcode = 999, .service = WIRE_SVC_COORDINATOR };
    CU_ASSERT_EQUAL(raw_rpc(s, &bogus, sizeof(bogus)), CRAM_UNIMPLEMENTED_REQUEST);
    struct { struct wire_req_hdr h; uint8_t junk[6]; } __attribute__((packed)) bad = {
        { .opcode = WIRE_OP_CREATE_TABLE, .service = WIRE_SVC_COORDINATOR },
        { 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f } };
    CU_ASSERT_EQUAL(raw_rpc(s, &bad, sizeof(bad)), CRAM_REQUEST_FORMAT_ERROR);
    int32_t rs;
    create_table(s, "a/b", 1, &rs);
    CU_ASSERT_EQUAL(rs, CRAM_REQUEST_FORMAT_ERROR);
    create_table(s, "big", COORD_MAX_SPAN + 1, &rs);
    CU_ASSERT_EQUAL(rs, CRAM_REQUEST_FORMAT_ERROR);

    /* hostile bodies for every coordinator opcode: an answer, never a crash */
    srand(12345);
    for (int round = 0; round < 200; round++) {
        uint8_t msg[64];
        struct wire_req_hdr hh = { .opcode = (uint16_t)(WIRE_OP_ENLIST_SERVER + round % 9),
                                   .service = WIRE_SVC_COORDINATOR };
        memcpy(msg, &hh, sizeof(hh));
        size_t blen0 = (size_t)(rand() % (int)(sizeof(msg) - sizeof(hh) + 1));
        for (size_t i = 0; i < blen0; i++)
            msg[sizeof(hh) + i] = (uint8_t)rand();
        int32_t r = raw_rpc(s, msg, sizeof(hh) + blen0);
        CU_ASSERT(r == CRAM_REQUEST_FORMAT_ERROR || r == CRAM_OK || r == CRAM_RETRY ||
                  r == CRAM_TABLE_DOESNT_EXIST || r == CRAM_NOT_FOUND);
    }
    CU_ASSERT_EQUAL(raw_rpc(s, &ping, sizeof(ping)), CRAM_OK);

    /* no master yet: RETRY */
    create_table(s, "t1", 4, &rs);
    CU_ASSERT_EQUAL(rs, CRAM_RETRY);

    /* enlist: a bad locator is refused, a good one gets id 1 and the settings */
    Cram__EnlistServerRequest en = CRAM__ENLIST_SERVER_REQUEST__INIT;
    char *badloc[1] = { "tcp:host=127.0.0.1" };
    en.n_locators = 1;
    en.locators = badloc;
    en.services = 3;
    CU_ASSERT_EQUAL(rpc(s, WIRE_OP_ENLIST_SERVER, &en.base, NULL, NULL), CRAM_REQUEST_FORMAT_ERROR);
    char *loc[1] = { (char *)tp_listener_locator(ls) };
    en.locators = loc;
    en.memory_bytes = 64u << 20;
    uint8_t *body;
    size_t blen;
    CU_ASSERT_EQUAL_FATAL(rpc(s, WIRE_OP_ENLIST_SERVER, &en.base, &body, &blen), CRAM_OK);
    Cram__EnlistServerResponse *er = cram__enlist_server_response__unpack(NULL, blen, body);
    free(body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(er);
    CU_ASSERT_EQUAL(er->server_id, coord_server_id(1, 0));
    CU_ASSERT_PTR_NOT_NULL(er->settings);
    if (er->settings) {
        CU_ASSERT_EQUAL(er->settings->replicas, 2);
        CU_ASSERT_STRING_EQUAL(er->settings->durability, "sync");
    }
    cram__enlist_server_response__free_unpacked(er, NULL);

    /* create: 4 tablets, all taken by our one master before the answer */
    uint64_t id = create_table(s, "t1", 4, &rs);
    CU_ASSERT_EQUAL(rs, CRAM_OK);
    CU_ASSERT(id > 0);
    CU_ASSERT_EQUAL(fm.take, 4);
    CU_ASSERT_EQUAL(create_table(s, "t1", 2, &rs), id);     /* exists: same id */
    CU_ASSERT_EQUAL(rs, CRAM_OK);
    CU_ASSERT_EQUAL(fm.take, 4);
    CU_ASSERT_EQUAL(get_table_id(s, "t1", &rs), id);
    get_table_id(s, "nope", &rs);
    CU_ASSERT_EQUAL(rs, CRAM_TABLE_DOESNT_EXIST);

    Cram__TableConfigRequest cr = CRAM__TABLE_CONFIG_REQUEST__INIT;
    cr.table_id = id;
    CU_ASSERT_EQUAL(rpc(s, WIRE_OP_GET_TABLE_CONFIG, &cr.base, &body, &blen), CRAM_OK);
    Cram__TableConfig *tc = cram__table_config__unpack(NULL, blen, body);
    free(body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(tc);
    CU_ASSERT_EQUAL(tc->n_tablets, 4);
    CU_ASSERT_STRING_EQUAL(tc->name, "t1");
    for (size_t i = 0; i < tc->n_tablets; i++) {
        uint64_t s0, e0;
        coord_tablet_range(4, (uint32_t)i, &s0, &e0);
        CU_ASSERT_EQUAL(tc->tablets[i]->tablet->start_hash, s0);
        CU_ASSERT_EQUAL(tc->tablets[i]->tablet->end_hash, e0);
        CU_ASSERT_EQUAL(tc->tablets[i]->n_locators, 1);
        if (tc->tablets[i]->n_locators == 1)
            CU_ASSERT_STRING_EQUAL(tc->tablets[i]->locators[0], loc[0]);
    }
    cram__table_config__free_unpacked(tc, NULL);
    cr.table_id = id + 100;
    CU_ASSERT_EQUAL(rpc(s, WIRE_OP_GET_TABLE_CONFIG, &cr.base, NULL, NULL), CRAM_TABLE_DOESNT_EXIST);

    uint64_t id2 = create_table(s, "t2", 1, &rs);
    CU_ASSERT_EQUAL(rs, CRAM_OK);
    CU_ASSERT(id2 > id);
    CU_ASSERT_EQUAL(fm.take, 5);

    /* restart the coordinator: state reloads, ownership is re-sent */
    tp_session_close(s);
    stop_coord(&ct);
    CU_ASSERT_EQUAL(ct.rc, 0);
    CU_ASSERT_EQUAL_FATAL(start_coord(&ct, hosts, cluster, false), 0);
    s = tp_session_open(l, coord_locator(ct.c), &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(get_table_id(s, "t1", &rs), id);      /* queued behind the reload */
    CU_ASSERT_EQUAL(rs, CRAM_OK);
    CU_ASSERT_EQUAL(fm.take, 10);
    CU_ASSERT_EQUAL(rpc(s, WIRE_OP_LIST_TABLES, NULL, &body, &blen), CRAM_OK);
    Cram__TableList *tl = cram__table_list__unpack(NULL, blen, body);
    free(body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(tl);
    CU_ASSERT_EQUAL(tl->n_tables, 2);
    cram__table_list__free_unpacked(tl, NULL);
    CU_ASSERT_EQUAL(rpc(s, WIRE_OP_GET_SERVER_LIST, NULL, &body, &blen), CRAM_OK);
    Cram__ServerList *sl = cram__server_list__unpack(NULL, blen, body);
    free(body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sl);
    CU_ASSERT_EQUAL(sl->n_servers, 1);
    CU_ASSERT_EQUAL(sl->version, 1);
    CU_ASSERT(sl->full);
    cram__server_list__free_unpacked(sl, NULL);

    /* a second server gets the next index */
    CU_ASSERT_EQUAL(rpc(s, WIRE_OP_ENLIST_SERVER, &en.base, &body, &blen), CRAM_OK);
    er = cram__enlist_server_response__unpack(NULL, blen, body);
    free(body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(er);
    CU_ASSERT_EQUAL(er->server_id, coord_server_id(2, 0));
    CU_ASSERT_PTR_NOT_NULL(er->settings);
    if (er->settings) {                 /* the stored settings survived the restart */
        CU_ASSERT_EQUAL(er->settings->replicas, 2);
        CU_ASSERT_STRING_EQUAL(er->settings->durability, "sync");
    }
    cram__enlist_server_response__free_unpacked(er, NULL);

    /* drop: tablets dropped on the master; dropping again is OK */
    Cram__TableNameRequest dr = CRAM__TABLE_NAME_REQUEST__INIT;
    dr.name = "t1";
    CU_ASSERT_EQUAL(rpc(s, WIRE_OP_DROP_TABLE, &dr.base, NULL, NULL), CRAM_OK);
    CU_ASSERT_EQUAL(fm.drop, 4);
    CU_ASSERT_EQUAL(rpc(s, WIRE_OP_DROP_TABLE, &dr.base, NULL, NULL), CRAM_OK);
    CU_ASSERT_EQUAL(fm.drop, 4);
    get_table_id(s, "t1", &rs);
    CU_ASSERT_EQUAL(rs, CRAM_TABLE_DOESNT_EXIST);

    tp_session_close(s);
    stop_coord(&ct);
    tp_listener_close(ls);
    tp_loop_destroy(l);
}

/* ---- server list pushes, crash verification, recovery info -----------------
 * Fake servers on the test thread's loop keep a real server_list (sl_apply),
 * refuse partial updates that skip versions as cram-server does, answer
 * targeted PINGs, and can be muted (requests held unanswered: a hung
 * process) or told to refuse the next update. */

struct fake_server {
    server_list *sl;
    uint64_t id;                /* the id it answers PINGs for */
    int fulls, partials, refused, pings;
    int mute;                   /* hold every request unanswered */
    int refuse_next;            /* answer the next update CRAM_RETRY */
    tp_rpc *held[256];
    int nheld;
};

static void fake_server_request(void *arg, tp_rpc *rpc)
{
    struct fake_server *fs = arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    struct wire_req_hdr h;
    struct wire_resp_hdr r = { CRAM_OK };
    if (fs->mute && fs->nheld < 256) {
        fs->held[fs->nheld++] = rpc;
        return;
    }
    if (len < sizeof(h)) {
        r.status = CRAM_REQUEST_FORMAT_ERROR;
    } else {
        memcpy(&h, req, sizeof(h));
        if (h.opcode == WIRE_OP_PING) {
            fs->pings++;
            struct wire_target t = { 0 };
            if (len == sizeof(h) + sizeof(t))
                memcpy(&t, req + sizeof(h), sizeof(t));
            if (t.target_server_id != 0 && t.target_server_id != fs->id)
                r.status = CRAM_WRONG_SERVER;
        } else if (h.opcode == WIRE_OP_SERVER_LIST_UPDATE) {
            Cram__ServerList *l = cram__server_list__unpack(NULL, len - sizeof(h), req + sizeof(h));
            CU_ASSERT_PTR_NOT_NULL(l);
            if (l != NULL) {
                if (l->full) {
                    fs->fulls++;
                    CU_ASSERT_PTR_NOT_NULL(l->settings);
                } else {
                    fs->partials++;
                }
                if (fs->refuse_next || (!l->full && l->version > sl_version(fs->sl) + 1)) {
                    fs->refuse_next = 0;
                    fs->refused++;
                    r.status = CRAM_RETRY;
                } else {
                    r.status = sl_apply(fs->sl, req + sizeof(h), len - sizeof(h));
                }
                cram__server_list__free_unpacked(l, NULL);
            }
        }
        /* TAKE_TABLET etc.: OK */
    }
    struct iovec iov = { &r, sizeof(r) };
    tp_rpc_reply(rpc, &iov, 1);
}

/* Handle the held requests now, in order (their callers may have given up). */
static void fake_server_unmute(struct fake_server *fs)
{
    fs->mute = 0;
    for (int i = 0; i < fs->nheld; i++)
        fake_server_request(fs, fs->held[i]);
    fs->nheld = 0;
}

/* Run the loop until fs's list has `version` (or 5 s scaled pass). */
static int wait_version(tp_loop *l, struct fake_server *fs, uint64_t version)
{
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(5000);
    while (sl_version(fs->sl) < version && clock_mono_ms() < end)
        tp_loop_poll(l, 10);
    return sl_version(fs->sl) == version;
}

static void run_loop_ms(tp_loop *l, uint64_t ms)
{
    uint64_t end = clock_mono_ms() + ms;
    while (clock_mono_ms() < end)
        tp_loop_poll(l, 10);
}

static uint64_t enlist_at(tp_session *s, const char *locator)
{
    Cram__EnlistServerRequest en = CRAM__ENLIST_SERVER_REQUEST__INIT;
    char *loc[1] = { (char *)locator };
    en.n_locators = 1;
    en.locators = loc;
    en.services = 3;
    uint8_t *body;
    size_t blen;
    uint64_t id = 0;
    if (rpc(s, WIRE_OP_ENLIST_SERVER, &en.base, &body, &blen) == CRAM_OK) {
        Cram__EnlistServerResponse *er = cram__enlist_server_response__unpack(NULL, blen, body);
        if (er != NULL)
            id = er->server_id;
        cram__enlist_server_response__free_unpacked(er, NULL);
        free(body);
    }
    return id;
}

static Cram__ServerEntry *zk_entry(zks *z, uint64_t id)
{
    char path[64];
    snprintf(path, sizeof(path), "servers/%016lx", (unsigned long)id);
    uint8_t *data;
    size_t len;
    if (zks_get(z, path, &data, &len) != ZOK)
        return NULL;
    Cram__ServerEntry *e = cram__server_entry__unpack(NULL, len, data);
    free(data);
    return e;
}

static uint64_t zk_list_version(zks *z)
{
    uint8_t *data;
    size_t len;
    uint64_t v = 0;
    if (zks_get(z, "ids", &data, &len) == ZOK) {
        Cram__IdCounters *ids = cram__id_counters__unpack(NULL, len, data);
        if (ids != NULL)
            v = ids->server_list_version;
        cram__id_counters__free_unpacked(ids, NULL);
        free(data);
    }
    return v;
}

static int32_t set_recovery_info(tp_session *s, uint64_t id, uint64_t seg, uint64_t epoch)
{
    Cram__MasterRecoveryInfo ri = CRAM__MASTER_RECOVERY_INFO__INIT;
    ri.server_id = id;
    ri.segment_id = seg;
    ri.epoch = epoch;
    return rpc(s, WIRE_OP_SET_MASTER_RECOVERY_INFO, &ri.base, NULL, NULL);
}

static int32_t hint(tp_session *s, uint64_t id)
{
    Cram__ServerIdRequest rq = CRAM__SERVER_ID_REQUEST__INIT;
    rq.server_id = id;
    return rpc(s, WIRE_OP_HINT_SERVER_CRASHED, &rq.base, NULL, NULL);
}

static void test_server_list_and_failures(void)
{
    const char *hosts = zk_hosts();
    if (hosts == NULL)
        return;
    char cluster[64];
    unique_cluster(cluster, sizeof(cluster), "slist");
    struct coord_thread ct;
    CU_ASSERT_EQUAL_FATAL(start_coord(&ct, hosts, cluster, true), 0);
    /* the coordinator (--reset) wipes and lays out the tree itself, on its
     * own thread: a second wipe from here would race with it */
    char zerr[256] = "";
    zks *z = zks_open(hosts, cluster, 10000, zerr, sizeof(zerr));
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);

    tp_loop *l = tp_loop_create();
    struct fake_server fa = { .sl = sl_create() }, fb = { .sl = sl_create() }, fc = { .sl = sl_create() };
    char err[256];
    tp_listener *la = tp_listen(l, "tcp:host=127.0.0.1,port=0", fake_server_request, &fa, err, sizeof(err));
    tp_listener *lb = tp_listen(l, "tcp:host=127.0.0.1,port=0", fake_server_request, &fb, err, sizeof(err));
    tp_listener *lc = tp_listen(l, "tcp:host=127.0.0.1,port=0", fake_server_request, &fc, err, sizeof(err));
    CU_ASSERT_FATAL(la != NULL && lb != NULL && lc != NULL);
    cram_status st;
    tp_session *s = tp_session_open(l, coord_locator(ct.c), &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);

    /* enlisting: the newcomer gets the full list, the others the new entry */
    fa.id = enlist_at(s, tp_listener_locator(la));
    CU_ASSERT_FATAL(fa.id != 0);
    CU_ASSERT(wait_version(l, &fa, 1));
    CU_ASSERT_EQUAL(fa.fulls, 1);
    fb.id = enlist_at(s, tp_listener_locator(lb));
    CU_ASSERT(wait_version(l, &fb, 2));
    CU_ASSERT(wait_version(l, &fa, 2));
    CU_ASSERT_EQUAL(fa.fulls, 1);
    CU_ASSERT_EQUAL(fa.partials, 1);
    CU_ASSERT_EQUAL(fb.fulls, 1);
    CU_ASSERT_EQUAL(sl_count(fa.sl), 2);
    CU_ASSERT_EQUAL(sl_count(fb.sl), 2);
    CU_ASSERT_EQUAL(zk_list_version(z), 2);

    /* GET_SERVER_LIST carries the cluster settings */
    uint8_t *body;
    size_t blen;
    CU_ASSERT_EQUAL(rpc(s, WIRE_OP_GET_SERVER_LIST, NULL, &body, &blen), CRAM_OK);
    Cram__ServerList *gl = cram__server_list__unpack(NULL, blen, body);
    free(body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(gl);
    CU_ASSERT_EQUAL(gl->version, 2);
    CU_ASSERT_PTR_NOT_NULL(gl->settings);
    if (gl->settings) {
        CU_ASSERT_EQUAL(gl->settings->replicas, 2);
        CU_ASSERT_STRING_EQUAL(gl->settings->durability, "sync");
    }
    cram__server_list__free_unpacked(gl, NULL);

    /* recovery info: unknown server, then only ever raised */
    CU_ASSERT_EQUAL(set_recovery_info(s, 999, 1, 1), CRAM_NOT_FOUND);
    CU_ASSERT_EQUAL(set_recovery_info(s, fa.id, 5, 2), CRAM_OK);
    Cram__ServerEntry *e = zk_entry(z, fa.id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e->recovery_info);
    CU_ASSERT_EQUAL(e->recovery_info->segment_id, 5);
    CU_ASSERT_EQUAL(e->recovery_info->epoch, 2);
    cram__server_entry__free_unpacked(e, NULL);
    CU_ASSERT_EQUAL(set_recovery_info(s, fa.id, 4, 9), CRAM_OK);     /* older segment: ignored */
    CU_ASSERT_EQUAL(set_recovery_info(s, fa.id, 5, 1), CRAM_OK);     /* older epoch: ignored */
    e = zk_entry(z, fa.id);
    CU_ASSERT(e && e->recovery_info && e->recovery_info->segment_id == 5 && e->recovery_info->epoch == 2);
    cram__server_entry__free_unpacked(e, NULL);
    CU_ASSERT_EQUAL(set_recovery_info(s, fa.id, 5, 3), CRAM_OK);
    e = zk_entry(z, fa.id);
    CU_ASSERT(e && e->recovery_info && e->recovery_info->segment_id == 5 && e->recovery_info->epoch == 3);
    CU_ASSERT(e && e->status == CRAM__SERVER_STATUS__SERVER_UP);
    cram__server_entry__free_unpacked(e, NULL);

    /* a hint about a live server: verified, not declared */
    CU_ASSERT_EQUAL(hint(s, 12345), CRAM_NOT_FOUND);
    int pings = fa.pings;
    CU_ASSERT_EQUAL(hint(s, fa.id), CRAM_OK);
    run_loop_ms(l, clock_test_scaled_ms(800));
    CU_ASSERT(fa.pings > pings);
    CU_ASSERT_EQUAL(sl_version(fa.sl), 2);
    CU_ASSERT_EQUAL(zk_list_version(z), 2);

    /* a hung server (requests unanswered): declared crashed after its probes
     * time out; the survivor's list shows it; ZooKeeper records it */
    fb.mute = 1;
    uint64_t t0 = clock_mono_ms();
    CU_ASSERT_EQUAL(hint(s, fb.id), CRAM_OK);
    CU_ASSERT(wait_version(l, &fa, 3));
    uint64_t dt = clock_mono_ms() - t0;
    CU_ASSERT(dt >= clock_test_scaled_ms(1000));   /* connected but silent: the whole budget */
    CU_ASSERT_EQUAL(fa.partials, 2);
    const struct sl_entry *be = sl_find(fa.sl, fb.id);
    CU_ASSERT(be != NULL && be->status == SL_CRASHED);
    e = zk_entry(z, fb.id);
    CU_ASSERT(e && e->status == CRAM__SERVER_STATUS__SERVER_CRASHED);
    cram__server_entry__free_unpacked(e, NULL);
    CU_ASSERT_EQUAL(zk_list_version(z), 3);
    CU_ASSERT_EQUAL(set_recovery_info(s, fb.id, 9, 9), CRAM_CALLER_NOT_IN_CLUSTER);
    /* the crashed server was told too (best effort): it gets it once unmuted */
    fake_server_unmute(&fb);
    CU_ASSERT(wait_version(l, &fb, 3));
    CU_ASSERT(sl_find(fb.sl, fb.id) != NULL && sl_find(fb.sl, fb.id)->status == SL_CRASHED);

    /* a refused update (a version gap at the server) is followed by the full list */
    fa.refuse_next = 1;
    fc.id = enlist_at(s, tp_listener_locator(lc));
    CU_ASSERT(fc.id != 0);
    CU_ASSERT(wait_version(l, &fa, 4));
    CU_ASSERT_EQUAL(fa.refused, 1);
    CU_ASSERT_EQUAL(fa.fulls, 2);
    CU_ASSERT_EQUAL(sl_count(fa.sl), 3);
    CU_ASSERT(wait_version(l, &fc, 4));

    /* a restarted coordinator pushes the full list to every up server (same
     * version: acknowledged, nothing changes) */
    tp_session_close(s);
    stop_coord(&ct);
    CU_ASSERT_EQUAL(ct.rc, 0);
    int fulls_a = fa.fulls, fulls_c = fc.fulls, fulls_b = fb.fulls;
    CU_ASSERT_EQUAL_FATAL(start_coord(&ct, hosts, cluster, false), 0);
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(5000);
    while ((fa.fulls == fulls_a || fc.fulls == fulls_c) && clock_mono_ms() < end)
        tp_loop_poll(l, 10);
    CU_ASSERT_EQUAL(fa.fulls, fulls_a + 1);
    CU_ASSERT_EQUAL(fc.fulls, fulls_c + 1);
    CU_ASSERT_EQUAL(fb.fulls, fulls_b);          /* crashed: not pushed to */
    CU_ASSERT_EQUAL(sl_version(fa.sl), 4);

    /* after restart the coordinator notices a server that went away */
    tp_listener_close(lc);
    lc = NULL;
    s = tp_session_open(l, coord_locator(ct.c), &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(hint(s, fc.id), CRAM_OK);
    CU_ASSERT(wait_version(l, &fa, 5));
    CU_ASSERT(sl_find(fa.sl, fc.id) != NULL && sl_find(fa.sl, fc.id)->status == SL_CRASHED);

    tp_session_close(s);
    stop_coord(&ct);
    zks_close(z);
    tp_listener_close(la);
    tp_listener_close(lb);
    tp_loop_destroy(l);
    sl_destroy(fa.sl);
    sl_destroy(fb.sl);
    sl_destroy(fc.sl);
}

/* A master that cannot take its tablet: the create is rolled back. */
static void test_create_rollback(void)
{
    const char *hosts = zk_hosts();
    if (hosts == NULL)
        return;
    char cluster[64];
    unique_cluster(cluster, sizeof(cluster), "rollback");
    struct coord_thread ct;
    CU_ASSERT_EQUAL_FATAL(start_coord(&ct, hosts, cluster, true), 0);
    tp_loop *l = tp_loop_create();
    cram_status st;
    tp_session *s = tp_session_open(l, coord_locator(ct.c), &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    Cram__EnlistServerRequest en = CRAM__ENLIST_SERVER_REQUEST__INIT;
    char *loc[1] = { "tcp:host=127.0.0.1,port=1" };      /* nobody listens there */
    en.n_locators = 1;
    en.locators = loc;
    en.services = 1;
    CU_ASSERT_EQUAL(rpc(s, WIRE_OP_ENLIST_SERVER, &en.base, NULL, NULL), CRAM_OK);
    int32_t rs;
    create_table(s, "x", 2, &rs);
    CU_ASSERT_EQUAL(rs, CRAM_RETRY);
    get_table_id(s, "x", &rs);
    CU_ASSERT_EQUAL(rs, CRAM_TABLE_DOESNT_EXIST);
    tp_session_close(s);
    stop_coord(&ct);
    tp_loop_destroy(l);

    char err[256];
    zks *z = zks_open(hosts, cluster, 10000, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    char **names;
    int n;
    CU_ASSERT_EQUAL(zks_children(z, "intents", &names, &n), ZOK);
    CU_ASSERT_EQUAL(n, 0);
    zks_free_names(names, n);
    CU_ASSERT_EQUAL(zks_children(z, "tables", &names, &n), ZOK);
    CU_ASSERT_EQUAL(n, 0);
    zks_free_names(names, n);
    CU_ASSERT_EQUAL(zks_wipe(z), ZOK);
    zks_close(z);
}

/* A coordinator that died after writing a create intent: the next one
 * finishes the create on start-up. */
static void test_intent_finished_on_reload(void)
{
    const char *hosts = zk_hosts();
    if (hosts == NULL)
        return;
    char cluster[64];
    unique_cluster(cluster, sizeof(cluster), "intent");
    struct coord_thread ct;
    CU_ASSERT_EQUAL_FATAL(start_coord(&ct, hosts, cluster, true), 0);
    tp_loop *l = tp_loop_create();
    cram_status st;
    tp_session *s = tp_session_open(l, coord_locator(ct.c), &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int32_t rs;
    get_table_id(s, "x", &rs);                 /* wait until it leads */
    CU_ASSERT_EQUAL(rs, CRAM_TABLE_DOESNT_EXIST);
    tp_session_close(s);
    stop_coord(&ct);

    /* play the dead coordinator: claim, write intents as it would have */
    char err[256];
    zks *z = zks_open(hosts, cluster, 10000, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    CU_ASSERT_EQUAL_FATAL(zks_claim(z, "tcp:host=127.0.0.1,port=1", NULL), ZOK);
    Cram__Tablet tb = CRAM__TABLET__INIT;
    Cram__Tablet *tp = &tb;
    tb.table_id = 42;
    tb.end_hash = UINT64_MAX;
    tb.server_id = 7;                          /* not enlisted: TAKE_TABLET cannot be sent */
    Cram__TableRecord rec = CRAM__TABLE_RECORD__INIT;
    rec.name = "half-made";
    rec.table_id = 42;
    rec.n_tablets = 1;
    rec.tablets = &tp;
    Cram__IntentRecord in = CRAM__INTENT_RECORD__INIT;
    in.kind = CRAM__INTENT_KIND__INTENT_CREATE_TABLE;
    in.table = &rec;
    uint8_t buf[256];
    size_t len = cram__intent_record__pack(&in, buf);
    struct zks_op op = { .kind = ZKS_CREATE, .path = "intents/i-", .data = buf, .len = len, .sequential = true };
    CU_ASSERT_EQUAL(zks_commit(z, &op, 1), ZOK);
    /* ... and a drop that got as far as removing the table record */
    rec.name = "doomed";
    rec.table_id = 43;
    tb.table_id = 43;
    in.kind = CRAM__INTENT_KIND__INTENT_DROP_TABLE;
    len = cram__intent_record__pack(&in, buf);
    op.len = len;
    CU_ASSERT_EQUAL(zks_commit(z, &op, 1), ZOK);
    zks_close(z);

    CU_ASSERT_EQUAL_FATAL(start_coord(&ct, hosts, cluster, false), 0);
    s = tp_session_open(l, coord_locator(ct.c), &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(get_table_id(s, "half-made", &rs), 42);
    CU_ASSERT_EQUAL(rs, CRAM_OK);
    get_table_id(s, "doomed", &rs);
    CU_ASSERT_EQUAL(rs, CRAM_TABLE_DOESNT_EXIST);
    uint64_t next = create_table(s, "after", 1, &rs);
    CU_ASSERT_EQUAL(rs, CRAM_RETRY);            /* no master enlisted */
    (void)next;
    tp_session_close(s);
    stop_coord(&ct);

    z = zks_open(hosts, cluster, 10000, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    char **names;
    int n;
    CU_ASSERT_EQUAL(zks_children(z, "intents", &names, &n), ZOK);
    CU_ASSERT_EQUAL(n, 0);                      /* both intents are gone */
    zks_free_names(names, n);
    uint8_t *data;
    CU_ASSERT_EQUAL(zks_get(z, "tables/half-made", &data, &len), ZOK);
    free(data);
    /* the id counter moved past the finished table's id */
    CU_ASSERT_EQUAL(zks_get(z, "ids", &data, &len), ZOK);
    Cram__IdCounters *ids = cram__id_counters__unpack(NULL, len, data);
    free(data);
    CU_ASSERT_PTR_NOT_NULL(ids);
    if (ids) {
        CU_ASSERT_EQUAL(ids->next_table_id, 44);  /* past every id seen in records and intents */
        cram__id_counters__free_unpacked(ids, NULL);
    }
    CU_ASSERT_EQUAL(zks_wipe(z), ZOK);
    zks_close(z);
    tp_loop_destroy(l);
}

int main(void)
{
    log_init("test_coordinator", getenv("CRAM_TEST_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_WARN);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite logic = CU_add_suite("coordinator logic", NULL, NULL);
    CU_add_test(logic, "tablet split covers the hash space", test_tablet_split);
    CU_add_test(logic, "round-robin placement rotates", test_round_robin);
    CU_add_test(logic, "server id = generation << 32 | index", test_server_id);
    CU_add_test(logic, "name and locator validation", test_names);
    CU_add_test(logic, "fault point spec", test_fault_spec);
    CU_add_test(logic, "protobuf record round trips", test_records_roundtrip);
    CU_add_test(logic, "coordloc without ZooKeeper", test_coordloc_local);
    CU_pSuite zk = CU_add_suite("coordinator zookeeper (CRAM_TEST_ZK)", NULL, NULL);
    CU_add_test(zk, "write and reload", test_zk_write_reload);
    CU_add_test(zk, "fencing rejects a deposed leader", test_zk_fencing);
    CU_add_test(zk, "claim waits for a live leader, not a dead one", test_zk_claim_waits);
    CU_add_test(zk, "coordinator RPCs, restart, re-sent ownership", test_coordinator_rpcs);
    CU_add_test(zk, "create rolled back when a master fails", test_create_rollback);
    CU_add_test(zk, "server list pushes, crash verification, recovery info", test_server_list_and_failures);
    CU_add_test(zk, "intent finished on reload", test_intent_finished_on_reload);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
