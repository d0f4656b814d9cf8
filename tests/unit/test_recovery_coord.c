/*
 * test_recovery_coord.c -- the coordinator's recovery orchestration against
 * an in-process coordinator (real ZooKeeper at CRAM_TEST_ZK; without it the
 * test prints SKIP and checks nothing) and three fake servers played by the
 * test thread on one tp_loop: they answer server-list pushes, PINGs, stats
 * polls (tablet sizes), BACKUP_LIST (replica lists set by the test) and
 * RECOVER (recorded, answered OK).
 *
 *  - server A is declared crashed: its tablet turns RECOVERING, the
 *    recovery record appears in ZooKeeper, and with no replicas the recovery
 *    waits (WAITING_LOG) naming what is missing; with the digest's segment 3
 *    still missing it names segment 3; a stale open replica below A's
 *    recovery info does not count;
 *  - once complete: the tablet is split by A's reported size into bounded
 *    partitions whose pieces cover it exactly once, spread over B and C, each
 *    RECOVER carrying every usable replica, primary first;
 *  - RECOVERY_MASTER_FINISHED: hostile bodies are format errors, the wrong
 *    server is refused, a failure moves the partition to the other master
 *    (attempts 2), success records ownership (NORMAL) before the answer;
 *  - all done: phase DONE, the record leaves ZooKeeper, the status keeps it.
 */
#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include "cram.pb-c.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/wire.h"
#include "coordinator/coordinator.h"
#include "coordinator/zkstore.h"
#include "transport/transport.h"

#define MAX_RECOVERS 64

struct recover_seen {
    uint32_t partition;
    uint64_t recovery_id;
    size_t ntablets;
    uint64_t starts[64], ends[64];
    size_t nreplicas;
    uint64_t first_segment, first_epoch;
    int ordered;                    /* replicas grouped by ascending segment id */
};

struct fake {
    const char *name;
    tp_listener *ls;
    char locator[128];
    uint64_t id;
    Cram__ReplicaInfo **replicas;   /* BACKUP_LIST answer (of the crashed master) */
    size_t nreplicas;
    uint64_t stat_table, stat_bytes, stat_objects;     /* GET_SERVER_STATS: one tablet */
    struct recover_seen rec[MAX_RECOVERS];
    int nrec;
    int lists;
    int dead;                       /* answers as a process that is not this server */
};

static void reply_status(tp_rpc *rpc, int32_t st, const uint8_t *body, size_t len)
{
    struct wire_resp_hdr r = { st };
    struct iovec iov[2] = { { &r, sizeof(r) }, { (void *)body, len } };
    tp_rpc_reply(rpc, iov, body ? 2 : 1);
}

static void fake_request(void *arg, tp_rpc *rpc)
{
    struct fake *f = arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    struct wire_req_hdr h;
    if (len < sizeof(h)) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR, NULL, 0);
        return;
    }
    memcpy(&h, req, sizeof(h));
    if (f->dead) {                  /* a newcomer at a dead server's address */
        reply_status(rpc, h.opcode == WIRE_OP_PING ? CRAM_WRONG_SERVER : CRAM_RETRY, NULL, 0);
        return;
    }
    if (h.opcode == WIRE_OP_PING) {
        struct wire_target t = { 0 };
        if (len == sizeof(h) + sizeof(t))
            memcpy(&t, req + sizeof(h), sizeof(t));
        reply_status(rpc, t.target_server_id && t.target_server_id != f->id ? CRAM_WRONG_SERVER : CRAM_OK, NULL, 0);
    } else if (h.opcode == WIRE_OP_GET_SERVER_STATS) {
        Cram__ServerStats s = CRAM__SERVER_STATS__INIT;
        Cram__TabletStats ts = CRAM__TABLET_STATS__INIT, *tsp = &ts;
        s.server_id = f->id;
        if (f->stat_table) {
            ts.table_id = f->stat_table;
            ts.start_hash = 0;
            ts.end_hash = UINT64_MAX;
            ts.bytes = f->stat_bytes;
            ts.objects = f->stat_objects;
            s.n_tablet_stats = 1;
            s.tablet_stats = &tsp;
        }
        uint8_t buf[512];
        size_t n = cram__server_stats__pack(&s, buf);
        reply_status(rpc, CRAM_OK, buf, n);
    } else if (h.opcode == WIRE_OP_BACKUP_LIST) {
        f->lists++;
        Cram__ReplicaList l = CRAM__REPLICA_LIST__INIT;
        l.server_id = f->id;
        l.n_replicas = f->nreplicas;
        l.replicas = f->replicas;
        uint8_t buf[4096];
        size_t n = cram__replica_list__pack(&l, buf);
        reply_status(rpc, CRAM_OK, buf, n);
    } else if (h.opcode == WIRE_OP_RECOVER) {
        Cram__RecoverRequest *rq = cram__recover_request__unpack(NULL, len - sizeof(h), req + sizeof(h));
        CU_ASSERT_PTR_NOT_NULL(rq);
        if (rq != NULL && f->nrec < MAX_RECOVERS) {
            struct recover_seen *s = &f->rec[f->nrec++];
            memset(s, 0, sizeof(*s));
            s->partition = rq->partition_id;
            s->recovery_id = rq->recovery_id;
            s->ntablets = rq->n_tablets < 64 ? rq->n_tablets : 64;
            for (size_t i = 0; i < s->ntablets; i++) {
                s->starts[i] = rq->tablets[i]->start_hash;
                s->ends[i] = rq->tablets[i]->end_hash;
            }
            s->nreplicas = rq->n_replicas;
            s->ordered = 1;
            for (size_t i = 0; i < rq->n_replicas; i++)
                if (i > 0 && rq->replicas[i]->segment_id < rq->replicas[i - 1]->segment_id)
                    s->ordered = 0;
            if (rq->n_replicas > 0) {
                s->first_segment = rq->replicas[0]->segment_id;
                s->first_epoch = rq->replicas[0]->epoch;
            }
        }
        if (rq != NULL)
            cram__recover_request__free_unpacked(rq, NULL);
        reply_status(rpc, CRAM_OK, NULL, 0);
    } else {
        reply_status(rpc, CRAM_OK, NULL, 0);          /* list updates, TAKE_TABLET */
    }
}

/* ---- coordinator in a thread ---- */

struct coord_thread {
    coord *c;
    pthread_t t;
};

static void *coord_main(void *arg)
{
    struct coord_thread *ct = arg;
    coord_run(ct->c);
    return NULL;
}

static int32_t call(tp_loop *l, tp_session *s, uint16_t op, const ProtobufCMessage *m,
                    const void *raw, size_t rawlen, uint8_t **body, size_t *blen)
{
    (void)l;
    struct wire_req_hdr h = { .opcode = op, .service = WIRE_SVC_COORDINATOR };
    uint8_t buf[8192];
    size_t len = m ? protobuf_c_message_pack(m, buf) : rawlen;
    if (!m && raw)
        memcpy(buf, raw, rawlen);
    struct iovec iov[2] = { { &h, sizeof(h) }, { buf, len } };
    uint8_t *resp = NULL;
    uint32_t rlen = 0;
    if (body)
        *body = NULL;
    cram_status st = tp_call(s, iov, 2, 20000, &resp, &rlen);
    if (st != CRAM_OK)
        return st;
    struct wire_resp_hdr r = { -1000 };
    if (rlen >= sizeof(r))
        memcpy(&r, resp, sizeof(r));
    if (body && rlen >= sizeof(r)) {
        *body = malloc(rlen - sizeof(r) + 1);
        memcpy(*body, resp + sizeof(r), rlen - sizeof(r));
        *blen = rlen - sizeof(r);
    }
    free(resp);
    return r.status;
}

static void run_ms(tp_loop *l, uint64_t ms)
{
    uint64_t end = clock_mono_ms() + ms;
    while (clock_mono_ms() < end)
        tp_loop_poll(l, 10);
}

static Cram__RecoveryRecord *status_of(tp_loop *l, tp_session *s, uint64_t crashed)
{
    uint8_t *body;
    size_t blen;
    Cram__RecoveryRecord *out = NULL;
    if (call(l, s, WIRE_OP_GET_RECOVERY_STATUS, NULL, NULL, 0, &body, &blen) != CRAM_OK)
        return NULL;
    Cram__RecoveryStatusList *sl = cram__recovery_status_list__unpack(NULL, blen, body);
    free(body);
    if (sl == NULL)
        return NULL;
    for (size_t i = 0; i < sl->n_recoveries; i++) {
        if (sl->recoveries[i]->crashed_master_id == crashed) {
            uint8_t buf[65536];
            size_t n = cram__recovery_record__pack(sl->recoveries[i], buf);
            out = cram__recovery_record__unpack(NULL, n, buf);
        }
    }
    cram__recovery_status_list__free_unpacked(sl, NULL);
    return out;
}

/* Poll (serving the fakes) until the recovery of `crashed` is in phase. */
static Cram__RecoveryRecord *wait_phase(tp_loop *l, tp_session *s, uint64_t crashed, int phase)
{
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(10000);
    while (clock_mono_ms() < end) {
        Cram__RecoveryRecord *r = status_of(l, s, crashed);
        if (r != NULL && (int)r->phase == phase)
            return r;
        if (r != NULL)
            cram__recovery_record__free_unpacked(r, NULL);
        run_ms(l, 20);
    }
    return NULL;
}

static Cram__TableConfig *table_config(tp_loop *l, tp_session *s, uint64_t id)
{
    Cram__TableConfigRequest rq = CRAM__TABLE_CONFIG_REQUEST__INIT;
    rq.table_id = id;
    uint8_t *body;
    size_t blen;
    if (call(l, s, WIRE_OP_GET_TABLE_CONFIG, &rq.base, NULL, 0, &body, &blen) != CRAM_OK)
        return NULL;
    Cram__TableConfig *t = cram__table_config__unpack(NULL, blen, body);
    free(body);
    return t;
}

static Cram__ReplicaInfo *replica(uint64_t master, uint64_t seg, uint64_t epoch, bool closed,
                                  const uint64_t *digest, size_t nd)
{
    Cram__ReplicaInfo *r = calloc(1, sizeof(*r));
    cram__replica_info__init(r);
    r->master_id = master;
    r->segment_id = seg;
    r->epoch = epoch;
    r->length = 1000;
    r->closed = closed;
    r->has_digest = nd > 0;
    r->log_digest = (uint64_t *)digest;
    r->n_log_digest = nd;
    return r;
}

static int32_t finished(tp_loop *l, tp_session *s, uint64_t rid, uint32_t pid, uint64_t server, bool ok)
{
    Cram__RecoveryMasterFinished m = CRAM__RECOVERY_MASTER_FINISHED__INIT;
    m.recovery_id = rid;
    m.partition_id = pid;
    m.server_id = server;
    m.ok = ok;
    m.error = ok ? (char *)"" : (char *)"test failure";
    m.segments_replayed = 3;
    m.bytes_replayed = 1234;
    m.replay_ms = 5;
    return call(l, s, WIRE_OP_RECOVERY_MASTER_FINISHED, &m.base, NULL, 0, NULL, NULL);
}

static void test_recovery_orchestration(void)
{
    const char *hosts = getenv("CRAM_TEST_ZK");
    if (hosts == NULL || !*hosts) {
        printf("SKIP: CRAM_TEST_ZK not set\n");
        return;
    }
    char cluster[64];
    snprintf(cluster, sizeof(cluster), "ut-recovery-%d", (int)getpid());
    struct coord_config cfg = {
        .zk_hosts = hosts, .cluster = cluster, .listen = "tcp:host=127.0.0.1,port=0",
        .replicas = 1, .replicas_set = true, .durability = "buffered", .reset = true,
        .partition_bytes = 1000, .partition_objects = 1000000,
        .stats_interval_ms = 50, .recovery_retry_ms = 100,
    };
    char err[256];
    struct coord_thread ct;
    ct.c = coord_create(&cfg, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ct.c);
    CU_ASSERT_FATAL(pthread_create(&ct.t, NULL, coord_main, &ct) == 0);

    tp_loop *l = tp_loop_create();
    struct fake F[3] = { { .name = "A" }, { .name = "B" }, { .name = "C" } };
    for (int i = 0; i < 3; i++) {
        F[i].ls = tp_listen(l, "tcp:host=127.0.0.1,port=0", fake_request, &F[i], err, sizeof(err));
        CU_ASSERT_PTR_NOT_NULL_FATAL(F[i].ls);
        snprintf(F[i].locator, sizeof(F[i].locator), "%s", tp_listener_locator(F[i].ls));
    }
    cram_status cst;
    tp_session *s = NULL;
    uint64_t end = clock_mono_ms() + 10000;
    while (s == NULL && clock_mono_ms() < end) {
        s = tp_session_open(l, coord_locator(ct.c), &cst);
        if (s == NULL)
            run_ms(l, 20);
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    /* enlist the three (answered once the coordinator leads) */
    for (int i = 0; i < 3; i++) {
        Cram__EnlistServerRequest en = CRAM__ENLIST_SERVER_REQUEST__INIT;
        char *loc[1] = { F[i].locator };
        en.n_locators = 1;
        en.locators = loc;
        en.services = 3;
        uint8_t *body = NULL;
        size_t blen;
        int32_t st;
        end = clock_mono_ms() + 10000;
        while ((st = call(l, s, WIRE_OP_ENLIST_SERVER, &en.base, NULL, 0, &body, &blen)) == CRAM_RETRY &&
               clock_mono_ms() < end)
            run_ms(l, 50);
        CU_ASSERT_FATAL(st == CRAM_OK);
        Cram__EnlistServerResponse *er = cram__enlist_server_response__unpack(NULL, blen, body);
        free(body);
        CU_ASSERT_PTR_NOT_NULL_FATAL(er);
        F[i].id = er->server_id;
        cram__enlist_server_response__free_unpacked(er, NULL);
    }
    /* a table on A only (span 1 lands on one master: find which) */
    Cram__CreateTableRequest ctr = CRAM__CREATE_TABLE_REQUEST__INIT;
    ctr.name = "t";
    ctr.server_span = 1;
    uint8_t *body;
    size_t blen;
    CU_ASSERT_FATAL(call(l, s, WIRE_OP_CREATE_TABLE, &ctr.base, NULL, 0, &body, &blen) == CRAM_OK);
    Cram__TableIdResponse *tr = cram__table_id_response__unpack(NULL, blen, body);
    free(body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(tr);
    uint64_t table = tr->table_id;
    cram__table_id_response__free_unpacked(tr, NULL);
    Cram__TableConfig *tc = table_config(l, s, table);
    CU_ASSERT_FATAL(tc != NULL && tc->n_tablets == 1);
    int a = -1;
    for (int i = 0; i < 3; i++)
        if (F[i].id == tc->tablets[0]->tablet->server_id)
            a = i;
    cram__table_config__free_unpacked(tc, NULL);
    CU_ASSERT_FATAL(a >= 0);
    struct fake *A = &F[a], *B = &F[(a + 1) % 3], *Cc = &F[(a + 2) % 3];
    A->stat_table = table;
    A->stat_bytes = 4500;           /* 1000-byte bound: 5 pieces, 5 partitions */
    A->stat_objects = 45;
    run_ms(l, 300);                 /* a few stats polls */
    /* A's recovery info: open replicas of segment 3 below epoch 2 are stale */
    Cram__MasterRecoveryInfo ri = CRAM__MASTER_RECOVERY_INFO__INIT;
    ri.server_id = A->id;
    ri.segment_id = 3;
    ri.epoch = 2;
    CU_ASSERT(call(l, s, WIRE_OP_SET_MASTER_RECOVERY_INFO, &ri.base, NULL, 0, NULL, NULL) == CRAM_OK);

    /* A dies (its address answers for another server); a hint triggers
     * verification */
    A->dead = 1;
    Cram__ServerIdRequest hint = CRAM__SERVER_ID_REQUEST__INIT;
    hint.server_id = A->id;
    CU_ASSERT(call(l, s, WIRE_OP_HINT_SERVER_CRASHED, &hint.base, NULL, 0, NULL, NULL) == CRAM_OK);
    Cram__RecoveryRecord *r = wait_phase(l, s, A->id, CRAM__RECOVERY_PHASE__RECOVERY_WAITING_LOG);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_PTR_NOT_NULL(strstr(r->note, "no log digest"));
    cram__recovery_record__free_unpacked(r, NULL);
    tc = table_config(l, s, table);
    CU_ASSERT_FATAL(tc != NULL && tc->n_tablets == 1);
    CU_ASSERT_EQUAL(tc->tablets[0]->tablet->state, CRAM__TABLET_STATE__TABLET_RECOVERING);
    cram__table_config__free_unpacked(tc, NULL);
    /* the record is in ZooKeeper */
    zks *z = zks_open(hosts, cluster, 10000, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    char rpath[64];
    snprintf(rpath, sizeof(rpath), "recoveries/%016lx", (unsigned long)A->id);
    uint8_t *data;
    size_t dlen;
    CU_ASSERT_EQUAL(zks_get(z, rpath, &data, &dlen), ZOK);
    free(data);

    /* B holds segment 1 and a stale open replica of the head (segment 3,
     * epoch 1 < 2): no usable digest yet */
    static const uint64_t dig[] = { 1, 2, 3 };
    Cram__ReplicaInfo *rb[3] = { replica(A->id, 1, 0, true, NULL, 0), replica(A->id, 3, 1, false, dig, 3), NULL };
    B->replicas = rb;
    B->nreplicas = 2;
    int lists = B->lists;
    end = clock_mono_ms() + clock_test_scaled_ms(5000);
    while (B->lists < lists + 2 && clock_mono_ms() < end)
        run_ms(l, 20);
    r = status_of(l, s, A->id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(r->phase, CRAM__RECOVERY_PHASE__RECOVERY_WAITING_LOG);
    CU_ASSERT_PTR_NOT_NULL(strstr(r->note, "no log digest among 2 replicas"));
    cram__recovery_record__free_unpacked(r, NULL);
    /* C holds the current head (epoch 2): segment 2 is missing */
    Cram__ReplicaInfo *rc[3] = { replica(A->id, 3, 2, false, dig, 3), NULL, NULL };
    Cc->replicas = rc;
    Cc->nreplicas = 1;
    r = NULL;
    end = clock_mono_ms() + clock_test_scaled_ms(10000);
    while (clock_mono_ms() < end) {
        r = status_of(l, s, A->id);
        if (r != NULL && strstr(r->note, "no replica of segment 2") != NULL)
            break;
        if (r != NULL)
            cram__recovery_record__free_unpacked(r, NULL);
        r = NULL;
        run_ms(l, 20);
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(r->phase, CRAM__RECOVERY_PHASE__RECOVERY_WAITING_LOG);
    printf("\n  note: %s\n", r->note);
    cram__recovery_record__free_unpacked(r, NULL);
    CU_ASSERT_EQUAL(B->nrec + Cc->nrec, 0);

    /* segment 2 appears on C: complete */
    rc[1] = replica(A->id, 2, 0, true, NULL, 0);
    Cc->nreplicas = 2;
    r = wait_phase(l, s, A->id, CRAM__RECOVERY_PHASE__RECOVERY_REPLAYING);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(r->n_partitions, 5);
    CU_ASSERT_EQUAL(r->segments, 3);
    uint64_t rid = r->recovery_id;
    cram__recovery_record__free_unpacked(r, NULL);
    end = clock_mono_ms() + clock_test_scaled_ms(5000);
    while (B->nrec + Cc->nrec < 5 && clock_mono_ms() < end)
        run_ms(l, 20);
    CU_ASSERT_EQUAL_FATAL(B->nrec + Cc->nrec, 5);
    CU_ASSERT(B->nrec >= 2 && Cc->nrec >= 2);          /* spread */
    /* the pieces tile the whole hash space exactly once */
    uint64_t starts[10], ends[10];
    int np = 0;
    for (int k = 0; k < 2; k++) {
        struct fake *f = k ? Cc : B;
        for (int i = 0; i < f->nrec; i++) {
            CU_ASSERT_EQUAL(f->rec[i].ntablets, 1);
            CU_ASSERT_EQUAL(f->rec[i].recovery_id, rid);
            CU_ASSERT(f->rec[i].ordered);
            /* segments 1, 2, 3 (epoch 2 only; the stale one is left out) */
            CU_ASSERT_EQUAL(f->rec[i].nreplicas, 3);
            CU_ASSERT_EQUAL(f->rec[i].first_segment, 1);
            starts[np] = f->rec[i].starts[0];
            ends[np] = f->rec[i].ends[0];
            np++;
        }
    }
    for (int i = 0; i < np; i++)            /* sort by start */
        for (int j = i + 1; j < np; j++)
            if (starts[j] < starts[i]) {
                uint64_t t = starts[i]; starts[i] = starts[j]; starts[j] = t;
                t = ends[i]; ends[i] = ends[j]; ends[j] = t;
            }
    CU_ASSERT_EQUAL(starts[0], 0);
    CU_ASSERT_EQUAL(ends[np - 1], UINT64_MAX);
    for (int i = 1; i < np; i++)
        CU_ASSERT_EQUAL(starts[i], ends[i - 1] + 1);

    /* hostile and wrong reports */
    const uint8_t garbage[] = { 0xff, 0xff, 0xff, 0xff, 0x0f };
    CU_ASSERT_EQUAL(call(l, s, WIRE_OP_RECOVERY_MASTER_FINISHED, NULL, garbage, sizeof(garbage), NULL, NULL),
                    CRAM_REQUEST_FORMAT_ERROR);
    CU_ASSERT_EQUAL(finished(l, s, 0, 0, B->id, true), CRAM_REQUEST_FORMAT_ERROR);
    CU_ASSERT_EQUAL(call(l, s, WIRE_OP_GET_RECOVERY_STATUS, NULL, garbage, sizeof(garbage), NULL, NULL), CRAM_OK);
    uint32_t bpart = B->rec[0].partition;
    CU_ASSERT_EQUAL(finished(l, s, rid, bpart, Cc->id, true), CRAM_NOT_FOUND);   /* not C's */
    CU_ASSERT_EQUAL(finished(l, s, rid + 999, bpart, B->id, true), CRAM_NOT_FOUND);
    CU_ASSERT_EQUAL(finished(l, s, rid, 77, B->id, true), CRAM_NOT_FOUND);
    /* B fails its first partition: it goes to C */
    int cbefore = Cc->nrec;
    CU_ASSERT_EQUAL(finished(l, s, rid, bpart, B->id, false), CRAM_OK);
    end = clock_mono_ms() + clock_test_scaled_ms(5000);
    while (Cc->nrec == cbefore && clock_mono_ms() < end)
        run_ms(l, 20);
    CU_ASSERT_EQUAL_FATAL(Cc->nrec, cbefore + 1);
    CU_ASSERT_EQUAL(Cc->rec[cbefore].partition, bpart);
    r = status_of(l, s, A->id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    for (size_t i = 0; i < r->n_partitions; i++)
        if (r->partitions[i]->partition_id == bpart) {
            CU_ASSERT_EQUAL(r->partitions[i]->attempts, 2);
            CU_ASSERT_EQUAL(r->partitions[i]->recovery_master_id, Cc->id);
        }
    cram__recovery_record__free_unpacked(r, NULL);
    CU_ASSERT_EQUAL(finished(l, s, rid, bpart, B->id, true), CRAM_NOT_FOUND);    /* moved away */

    /* every partition succeeds: ownership recorded before each answer */
    for (int k = 0; k < 2; k++) {
        struct fake *f = k ? Cc : B;
        for (int i = 0; i < f->nrec; i++) {
            if (f == B && f->rec[i].partition == bpart)
                continue;
            CU_ASSERT_EQUAL(finished(l, s, rid, f->rec[i].partition, f->id, true), CRAM_OK);
            tc = table_config(l, s, table);
            CU_ASSERT_FATAL(tc != NULL);
            int owned = 0;
            for (size_t t = 0; t < tc->n_tablets; t++) {
                const Cram__Tablet *tb = tc->tablets[t]->tablet;
                if (tb->start_hash == f->rec[i].starts[0]) {
                    CU_ASSERT_EQUAL(tb->server_id, f->id);
                    CU_ASSERT_EQUAL(tb->state, CRAM__TABLET_STATE__TABLET_NORMAL);
                    owned = 1;
                }
            }
            CU_ASSERT(owned);
            cram__table_config__free_unpacked(tc, NULL);
        }
    }
    /* a repeated report is answered OK (the master's answer was lost) */
    CU_ASSERT_EQUAL(finished(l, s, rid, Cc->rec[0].partition, Cc->id, true), CRAM_OK);
    r = wait_phase(l, s, A->id, CRAM__RECOVERY_PHASE__RECOVERY_DONE);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT(r->finished_at_ms >= r->detected_at_ms);
    for (size_t i = 0; i < r->n_partitions; i++)
        CU_ASSERT(r->partitions[i]->done && r->partitions[i]->bytes_replayed == 1234);
    cram__recovery_record__free_unpacked(r, NULL);
    CU_ASSERT_EQUAL(zks_get(z, rpath, &data, &dlen), ZNONODE);
    tc = table_config(l, s, table);
    CU_ASSERT_FATAL(tc != NULL);
    CU_ASSERT_EQUAL(tc->n_tablets, 5);
    for (size_t t = 0; t < tc->n_tablets; t++)
        CU_ASSERT(tc->tablets[t]->tablet->server_id != A->id);
    cram__table_config__free_unpacked(tc, NULL);

    for (int i = 0; i < 3; i++)
        for (int k = 0; F[i].replicas && F[i].replicas[k]; k++)
            free(F[i].replicas[k]);
    tp_session_close(s);
    coord_stop(ct.c);
    pthread_join(ct.t, NULL);
    coord_destroy(ct.c);
    for (int i = 0; i < 3; i++)
        if (F[i].ls)
            tp_listener_close(F[i].ls);
    tp_loop_destroy(l);
    zks_wipe(z);
    zks_close(z);
}

int main(void)
{
    log_init("test_recovery_coord", LOG_LVL_WARN);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("recovery coordinator", NULL, NULL);
    CU_add_test(s, "orchestration against fake servers", test_recovery_orchestration);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
