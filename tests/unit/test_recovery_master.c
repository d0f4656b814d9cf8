/*
 * test_recovery_master.c -- crash recovery end to end, in one process: one
 * tp_loop, three real backup services on listeners, master A (R = 2) that
 * takes writes, overwrites, removes and increments through its RPC handler
 * across many segments; then A "crashes" (destroyed, marked crashed in the
 * server list) together with one backup, and master B is handed a
 * RecoverRequest built by hand from BACKUP_LIST answers (log digest
 * checked).  A tiny fake coordinator answers RECOVERY_MASTER_FINISHED.  B
 * must then serve exactly A's last values (removed keys absent), keep its
 * own tablet, hand out higher versions, report tablet stats, and have
 * replicated the rebuilt data.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <CUnit/Basic.h>
#include "backup/backup_service.h"
#include "common/clock.h"
#include "common/serverlist.h"
#include "common/wire.h"
#include "cram.pb-c.h"
#include "master/master_service.h"
#include "master/objmgr.h"
#include "master/recovery.h"
#include "master/replica_mgr.h"
#include "transport/transport.h"

#define NB       3
#define A_ID     1
#define B_ID     2
#define SEGMENT  (64u * 1024)
#define TABLE    5
#define TABLE_B  6
#define NKEYS    1500

struct bnode {
    backup_service *svc;
    tp_listener *ls;
    char dir[64];
    uint64_t id;
    bool crashed;
    char loc[128];              /* kept after the listener is closed */
};

struct mnode {
    master_service *m;
    server_list *sl;            /* its own: a destroyed master cannot unsubscribe */
    tp_listener *ls;
    tp_session *client;
    uint64_t id;
    bool crashed;
};

static tp_loop *loop;
static server_list *sl;
static struct bnode bn[NB];
static struct mnode ma, mb;
static tp_listener *cls;
static uint64_t sl_ver;
static int finished_calls;
static Cram__RecoveryMasterFinished *finished;

/* the model: A's last value and version of each key (NULL value: removed) */
static char *model_val[NKEYS];
static uint64_t model_ver[NKEYS];

static void reply_st(tp_rpc *rpc, cram_status st)
{
    struct wire_resp_hdr h = { st };
    struct iovec iov = { &h, sizeof h };
    tp_rpc_reply(rpc, &iov, 1);
}

static void on_backup_req(void *arg, tp_rpc *rpc)
{
    struct bnode *b = arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    backup_handle(b->svc, rpc, req, len);
}

static void on_master_req(void *arg, tp_rpc *rpc)
{
    struct mnode *n = arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    if (len < sizeof(struct wire_req_hdr)) {
        reply_st(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    master_handle(n->m, rpc, req, len);
}

/* The fake coordinator: SET_MASTER_RECOVERY_INFO and RECOVERY_MASTER_FINISHED. */
static void on_coord_req(void *arg, tp_rpc *rpc)
{
    (void)arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    struct wire_req_hdr h;
    if (len < sizeof h) {
        reply_st(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    memcpy(&h, req, sizeof h);
    if (h.opcode == WIRE_OP_RECOVERY_MASTER_FINISHED) {
        Cram__RecoveryMasterFinished *f =
            cram__recovery_master_finished__unpack(NULL, len - sizeof h, req + sizeof h);
        CU_ASSERT_FATAL(f != NULL);
        if (finished != NULL)
            cram__recovery_master_finished__free_unpacked(finished, NULL);
        finished = f;
        finished_calls++;
    }
    reply_st(rpc, CRAM_OK);
}

static void push_list(void)
{
    Cram__ServerEntry e[NB + 2];
    Cram__ServerEntry *ep[NB + 2];
    char *locs[NB + 2][1];
    int n = 0;
    struct mnode *ms[2] = { &ma, &mb };
    for (int i = 0; i < 2; i++, n++) {
        cram__server_entry__init(&e[n]);
        e[n].server_id = ms[i]->id;
        e[n].services = SL_SERVICE_MASTER;
        e[n].status = ms[i]->crashed ? CRAM__SERVER_STATUS__SERVER_CRASHED
                                     : CRAM__SERVER_STATUS__SERVER_UP;
        locs[n][0] = "tcp:host=127.0.0.1,port=1";
        e[n].locators = locs[n];
        e[n].n_locators = 1;
        ep[n] = &e[n];
    }
    for (int i = 0; i < NB; i++, n++) {
        cram__server_entry__init(&e[n]);
        e[n].server_id = bn[i].id;
        e[n].services = SL_SERVICE_BACKUP;
        e[n].status = bn[i].crashed ? CRAM__SERVER_STATUS__SERVER_CRASHED
                                    : CRAM__SERVER_STATUS__SERVER_UP;
        locs[n][0] = bn[i].loc;
        e[n].locators = locs[n];
        e[n].n_locators = 1;
        ep[n] = &e[n];
    }
    Cram__ServerList l = CRAM__SERVER_LIST__INIT;
    l.version = ++sl_ver;
    l.full = 1;
    l.servers = ep;
    l.n_servers = (size_t)n;
    uint8_t buf[8192];
    size_t len = cram__server_list__get_packed_size(&l);
    CU_ASSERT_FATAL(len <= sizeof buf);
    cram__server_list__pack(&l, buf);
    CU_ASSERT_FATAL(sl_apply(sl, buf, len) == CRAM_OK);
    for (int i = 0; i < 2; i++)
        if (ms[i]->sl != NULL)
            CU_ASSERT_FATAL(sl_apply(ms[i]->sl, buf, len) == CRAM_OK);
}

static void master_up(struct mnode *n, uint64_t id)
{
    char err[256];
    struct master_config mc = { .memory_bytes = 256 * SEGMENT, .segment_bytes = SEGMENT };
    n->m = master_create(&mc, err, sizeof err);
    CU_ASSERT_FATAL(n->m != NULL);
    n->id = id;
    master_set_server_id(n->m, id);
    CU_ASSERT_FATAL(master_set_replication(n->m, loop, 2, 0) == 0);
    n->sl = sl_create();
    CU_ASSERT_FATAL(n->sl != NULL);
    CU_ASSERT_FATAL(master_set_server_list(n->m, n->sl) == 0);
    master_set_coordinator(n->m, tp_listener_locator(cls));
    n->ls = tp_listen(loop, "tcp:host=127.0.0.1,port=0", on_master_req, n, err, sizeof err);
    CU_ASSERT_FATAL(n->ls != NULL);
    cram_status st;
    n->client = tp_session_open(loop, tp_listener_locator(n->ls), &st);
    CU_ASSERT_FATAL(n->client != NULL);
}

static void master_down(struct mnode *n)
{
    tp_session_close(n->client);
    tp_listener_close(n->ls);
    master_destroy(n->m);
    n->m = NULL;
    sl_destroy(n->sl);
    n->sl = NULL;
}

static void rm_tree(const char *d)
{
    DIR *dp = opendir(d);
    if (dp != NULL) {
        struct dirent *de;
        while ((de = readdir(dp)) != NULL)
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                unlinkat(dirfd(dp), de->d_name, 0);
        closedir(dp);
    }
    rmdir(d);
}

/* ---- client calls through a master's RPC handler ----------------------------- */

static int call(tp_session *s, const void *req, size_t len, uint8_t **resp, uint32_t *rlen)
{
    struct iovec iov = { (void *)req, len };
    uint8_t *r = NULL;
    uint32_t n = 0;
    cram_status st = tp_call(s, &iov, 1, 20000, &r, &n);
    if (st != CRAM_OK)
        return -1000 - (int)st;
    int status = n >= 4 ? ((const struct wire_resp_hdr *)r)->status : -1;
    if (resp != NULL) {
        *resp = r;
        *rlen = n;
    } else {
        free(r);
    }
    return status;
}

static int do_write(tp_session *s, uint64_t table, const char *key, const void *val, uint32_t vlen,
                    uint64_t *version)
{
    struct wire_write_req q = { .hdr = { WIRE_OP_WRITE, WIRE_SVC_MASTER, 0 }, .table_id = table,
                                .value_len = vlen, .key_len = (uint16_t)strlen(key) };
    uint8_t buf[4096];
    memcpy(buf, &q, sizeof q);
    memcpy(buf + sizeof q, key, q.key_len);
    memcpy(buf + sizeof q + q.key_len, val, vlen);
    uint8_t *r = NULL;
    uint32_t n = 0;
    int st = call(s, buf, sizeof q + q.key_len + vlen, &r, &n);
    if (r != NULL) {
        struct wire_write_resp wr;
        if (n >= sizeof wr) {
            memcpy(&wr, r, sizeof wr);
            *version = wr.version;
        }
        free(r);
    }
    return st;
}

static int do_remove(tp_session *s, uint64_t table, const char *key, uint64_t *version)
{
    struct wire_remove_req q = { .hdr = { WIRE_OP_REMOVE, WIRE_SVC_MASTER, 0 }, .table_id = table,
                                 .key_len = (uint16_t)strlen(key) };
    uint8_t buf[256];
    memcpy(buf, &q, sizeof q);
    memcpy(buf + sizeof q, key, q.key_len);
    uint8_t *r = NULL;
    uint32_t n = 0;
    int st = call(s, buf, sizeof q + q.key_len, &r, &n);
    if (r != NULL) {
        struct wire_write_resp wr;
        if (n >= sizeof wr) {
            memcpy(&wr, r, sizeof wr);
            *version = wr.version;
        }
        free(r);
    }
    return st;
}

static int do_incr(tp_session *s, uint64_t table, const char *key, int64_t delta, uint64_t *version)
{
    struct wire_incr_req q = { .hdr = { WIRE_OP_INCREMENT, WIRE_SVC_MASTER, 0 }, .table_id = table,
                               .delta = delta, .key_len = (uint16_t)strlen(key) };
    uint8_t buf[256];
    memcpy(buf, &q, sizeof q);
    memcpy(buf + sizeof q, key, q.key_len);
    uint8_t *r = NULL;
    uint32_t n = 0;
    int st = call(s, buf, sizeof q + q.key_len, &r, &n);
    if (r != NULL) {
        struct wire_incr_resp ir;
        if (n >= sizeof ir) {
            memcpy(&ir, r, sizeof ir);
            *version = ir.version;
        }
        free(r);
    }
    return st;
}

static void poll_ms(int ms)
{
    uint64_t end = clock_mono_ms() + (uint64_t)ms;
    while (clock_mono_ms() < end)
        tp_loop_poll(loop, 5);
}

static bool poll_until_idle(replica_mgr *rm, int ms)
{
    uint64_t end = clock_mono_ms() + (uint64_t)ms;
    while (!rm_idle(rm) && clock_mono_ms() < end)
        tp_loop_poll(loop, 5);
    return rm_idle(rm);
}

static Cram__ReplicaList *list_req(struct bnode *b, uint64_t master)
{
    cram_status st;
    tp_session *s = tp_session_open(loop, tp_listener_locator(b->ls), &st);
    CU_ASSERT_FATAL(s != NULL);
    struct wire_backup_list_req q = { .hdr = { WIRE_OP_BACKUP_LIST, WIRE_SVC_BACKUP, 0 },
                                      .master_id = master };
    uint8_t *r = NULL;
    uint32_t n = 0;
    int rc = call(s, &q, sizeof q, &r, &n);
    tp_session_close(s);
    CU_ASSERT_EQUAL_FATAL(rc, CRAM_OK);
    Cram__ReplicaList *l = cram__replica_list__unpack(NULL, n - 4, r + 4);
    free(r);
    CU_ASSERT_FATAL(l != NULL);
    return l;
}

/* ---- the scenario ---------------------------------------------------------------- */

static void value_of(char *out, size_t n, int k, int round)
{
    /* sizes vary so entries spread over many segments */
    int len = snprintf(out, n, "value-%d-%d-", k, round);
    while (len < 40 + (k * 37 + round * 11) % 300 && (size_t)len < n - 1) {
        out[len] = (char)('a' + (k + len) % 26);
        len++;
    }
    out[len] = 0;
}

static void fill_a(void)
{
    char key[32], val[512];
    uint64_t v = 0;
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < NKEYS; k++) {
            snprintf(key, sizeof key, "key-%d", k);
            if (k % 10 == 3 && round == 0)
                continue;                       /* counters below */
            if (k % 7 == 0 && round == 2) {
                /* removed (some re-created after: k % 14 == 0 in round 2 below) */
                CU_ASSERT_EQUAL_FATAL(do_remove(ma.client, TABLE, key, &v), CRAM_OK);
                free(model_val[k]);
                model_val[k] = NULL;
                continue;
            }
            if (k % 10 == 3) {
                CU_ASSERT_EQUAL_FATAL(do_incr(ma.client, TABLE, key, k, &v), CRAM_OK);
                int64_t cur = 0;
                if (model_val[k] != NULL)
                    memcpy(&cur, model_val[k], 8);
                cur += k;
                free(model_val[k]);
                model_val[k] = malloc(9);
                memcpy(model_val[k], &cur, 8);
                model_val[k][8] = 0;
                model_ver[k] = v;
                continue;
            }
            if (round == 1 && k % 3 != 0)
                continue;                       /* only some overwritten */
            value_of(val, sizeof val, k, round);
            CU_ASSERT_EQUAL_FATAL(do_write(ma.client, TABLE, key, val, (uint32_t)strlen(val), &v), CRAM_OK);
            free(model_val[k]);
            model_val[k] = strdup(val);
            model_ver[k] = v;
        }
    }
    /* re-create some removed keys: versions above the removed ones */
    for (int k = 0; k < NKEYS; k += 14) {
        snprintf(key, sizeof key, "key-%d", k);
        value_of(val, sizeof val, k, 9);
        CU_ASSERT_EQUAL_FATAL(do_write(ma.client, TABLE, key, val, (uint32_t)strlen(val), &v), CRAM_OK);
        model_val[k] = strdup(val);
        model_ver[k] = v;
    }
}

/* Build the RecoverRequest from the surviving backups' lists; the newest
 * digest must name every segment found. */
static size_t build_recover(uint8_t *out, size_t cap, uint32_t *nsegs)
{
    Cram__ReplicaList *lists[NB] = { 0 };
    Cram__ReplicaLocation *locs = calloc(256, sizeof *locs);
    Cram__ReplicaLocation **lp = calloc(256, sizeof *lp);
    size_t nl = 0;
    uint64_t best_seg = 0;
    const Cram__ReplicaInfo *best = NULL;
    /* the crashed backup is listed first for every segment it held, so the
     * recovery master must move on to the next replica */
    int order[NB] = { 0, 1, 2 };
    for (int oi = 0; oi < NB; oi++) {
        int i = order[oi];
        if (bn[i].crashed) {
            continue;
        }
        lists[i] = list_req(&bn[i], A_ID);
        for (size_t r = 0; r < lists[i]->n_replicas; r++) {
            const Cram__ReplicaInfo *ri = lists[i]->replicas[r];
            CU_ASSERT(ri->verified);
            if (ri->has_digest && ri->segment_id >= best_seg) {
                best_seg = ri->segment_id;
                best = ri;
            }
        }
    }
    CU_ASSERT_FATAL(best != NULL);
    /* every digest segment, each with its replicas: a dead backup's first */
    for (size_t d = 0; d < best->n_log_digest; d++) {
        uint64_t seg = best->log_digest[d];
        int found = 0;
        locs[nl] = (Cram__ReplicaLocation)CRAM__REPLICA_LOCATION__INIT;
        locs[nl].segment_id = seg;
        locs[nl].epoch = 0;
        locs[nl].backup_id = bn[0].id;
        locs[nl].backup_locator = "tcp:host=127.0.0.1,port=1";   /* nobody listens */
        lp[nl] = &locs[nl];
        nl++;
        for (int i = 0; i < NB; i++) {
            for (size_t r = 0; lists[i] != NULL && r < lists[i]->n_replicas; r++) {
                const Cram__ReplicaInfo *ri = lists[i]->replicas[r];
                if (ri->segment_id != seg)
                    continue;
                CU_ASSERT_FATAL(nl < 256);
                locs[nl] = (Cram__ReplicaLocation)CRAM__REPLICA_LOCATION__INIT;
                locs[nl].segment_id = seg;
                locs[nl].epoch = ri->epoch;
                locs[nl].backup_id = bn[i].id;
                locs[nl].backup_locator = (char *)tp_listener_locator(bn[i].ls);
                locs[nl].length = ri->length;
                locs[nl].closed = ri->closed;
                lp[nl] = &locs[nl];
                nl++;
                found++;
            }
        }
        CU_ASSERT(found >= 1);              /* R = 2, one backup lost: >= 1 left */
    }
    *nsegs = (uint32_t)best->n_log_digest;
    Cram__Tablet t = CRAM__TABLET__INIT;
    t.table_id = TABLE;
    t.start_hash = 0;
    t.end_hash = UINT64_MAX;
    t.server_id = B_ID;
    t.state = CRAM__TABLET_STATE__TABLET_RECOVERING;
    Cram__Tablet *tp = &t;
    Cram__RecoverRequest rq = CRAM__RECOVER_REQUEST__INIT;
    rq.recovery_id = 1;
    rq.crashed_master_id = A_ID;
    rq.partition_id = 0;
    rq.n_tablets = 1;
    rq.tablets = &tp;
    rq.n_replicas = nl;
    rq.replicas = lp;
    size_t n = cram__recover_request__get_packed_size(&rq);
    CU_ASSERT_FATAL(n + sizeof(struct wire_req_hdr) <= cap);
    struct wire_req_hdr h = { .opcode = WIRE_OP_RECOVER, .service = WIRE_SVC_MASTER };
    memcpy(out, &h, sizeof h);
    cram__recover_request__pack(&rq, out + sizeof h);
    for (int i = 0; i < NB; i++)
        if (lists[i] != NULL)
            cram__replica_list__free_unpacked(lists[i], NULL);
    free(locs);
    free(lp);
    return sizeof h + n;
}

static void test_end_to_end(void)
{
    char err[256];
    loop = tp_loop_create();
    CU_ASSERT_FATAL(loop != NULL);
    sl = sl_create();
    CU_ASSERT_FATAL(sl != NULL);
    cls = tp_listen(loop, "tcp:host=127.0.0.1,port=0", on_coord_req, NULL, err, sizeof err);
    CU_ASSERT_FATAL(cls != NULL);
    for (int i = 0; i < NB; i++) {
        struct bnode *b = &bn[i];
        snprintf(b->dir, sizeof b->dir, "/tmp/cram-test-recm-XXXXXX");
        CU_ASSERT_FATAL(mkdtemp(b->dir) != NULL);
        struct backup_config bc = { .dir = b->dir, .storage_bytes = 256u << 20,
                                    .max_replica_bytes = SEGMENT };
        b->svc = backup_create(&bc, loop, sl, err, sizeof err);
        CU_ASSERT_FATAL(b->svc != NULL);
        b->id = 100 + (uint64_t)i;
        backup_set_server_id(b->svc, b->id);
        b->ls = tp_listen(loop, "tcp:host=127.0.0.1,port=0", on_backup_req, b, err, sizeof err);
        CU_ASSERT_FATAL(b->ls != NULL);
        snprintf(b->loc, sizeof b->loc, "%s", tp_listener_locator(b->ls));
    }
    master_up(&ma, A_ID);
    master_up(&mb, B_ID);
    push_list();
    CU_ASSERT_FATAL(om_take_tablet(master_objmgr(ma.m), TABLE, 0, UINT64_MAX, OM_TABLET_NORMAL) == CRAM_OK);
    CU_ASSERT_FATAL(om_take_tablet(master_objmgr(mb.m), TABLE_B, 0, UINT64_MAX, OM_TABLET_NORMAL) == CRAM_OK);
    uint64_t bv = 0;
    CU_ASSERT_EQUAL(do_write(mb.client, TABLE_B, "mine", "b's own", 7, &bv), CRAM_OK);

    fill_a();
    CU_ASSERT_FATAL(poll_until_idle(master_replica_mgr(ma.m), 20000));
    struct om_stats as;
    om_get_stats(master_objmgr(ma.m), &as);
    CU_ASSERT(as.log.segments_in_use >= 8);     /* several segments */
    uint64_t max_ver = 0;
    for (int k = 0; k < NKEYS; k++)
        if (model_ver[k] > max_ver)
            max_ver = model_ver[k];

    /* A crashes, and so does backup 0 */
    master_down(&ma);
    ma.crashed = true;
    tp_listener_close(bn[0].ls);
    backup_destroy(bn[0].svc);
    bn[0].crashed = true;
    bn[0].ls = NULL;
    push_list();

    uint8_t *req = malloc(1u << 20);
    uint32_t nsegs = 0;
    size_t n = build_recover(req, 1u << 20, &nsegs);
    CU_ASSERT(nsegs >= 8);
    uint64_t t0 = clock_mono_ms();
    CU_ASSERT_EQUAL(call(mb.client, req, n, NULL, NULL), CRAM_OK);
    /* while recovering: RETRY for A's tablet, B's own table still served */
    uint64_t v;
    if (finished_calls == 0)        /* not confirmed yet: the tablet is RECOVERING */
        CU_ASSERT_EQUAL(do_write(mb.client, TABLE, "key-1", "q", 1, &v), CRAM_RETRY);
    CU_ASSERT_EQUAL(do_write(mb.client, TABLE_B, "mine2", "x", 1, &v), CRAM_OK);
    uint64_t end = clock_mono_ms() + 30000;
    while ((finished_calls == 0 || rec_active(master_recovery(mb.m)) > 0) && clock_mono_ms() < end)
        tp_loop_poll(loop, 5);
    CU_ASSERT_EQUAL_FATAL(finished_calls, 1);
    CU_ASSERT_EQUAL(rec_active(master_recovery(mb.m)), 0);
    CU_ASSERT(finished->ok);
    CU_ASSERT_EQUAL(finished->server_id, B_ID);
    CU_ASSERT_EQUAL(finished->segments_replayed, nsegs);
    CU_ASSERT(finished->objects > 0 && finished->tombstones > 0 && finished->bytes_replayed > 0);
    fprintf(stderr, "recovered %u segments, %llu bytes in %llu ms\n", nsegs,
            (unsigned long long)finished->bytes_replayed, (unsigned long long)(clock_mono_ms() - t0));

    /* B serves exactly A's last values */
    objmgr *om = master_objmgr(mb.m);
    char key[32];
    uint64_t live = 0;
    for (int k = 0; k < NKEYS; k++) {
        snprintf(key, sizeof key, "key-%d", k);
        const void *val;
        uint32_t vl;
        cram_status st = om_read(om, TABLE, key, (uint16_t)strlen(key), NULL, &v, &val, &vl);
        if (model_val[k] == NULL) {
            CU_ASSERT_EQUAL(st, CRAM_OBJECT_DOESNT_EXIST);
            continue;
        }
        live++;
        CU_ASSERT_EQUAL(st, CRAM_OK);
        CU_ASSERT_EQUAL(v, model_ver[k]);
        size_t ml = k % 10 == 3 ? 8 : strlen(model_val[k]);
        CU_ASSERT(st == CRAM_OK && vl == ml && memcmp(val, model_val[k], ml) == 0);
    }
    const void *val;
    uint32_t vl;
    CU_ASSERT_EQUAL(om_read(om, TABLE_B, "mine", 4, NULL, &v, &val, &vl), CRAM_OK);
    /* per-tablet stats */
    for (uint32_t i = 0; i < om_tablet_count(om); i++) {
        const struct om_tablet *t = om_tablet_get(om, i);
        if (t->table_id == TABLE) {
            CU_ASSERT_EQUAL(t->objects, live);
            CU_ASSERT_EQUAL(t->state, OM_TABLET_NORMAL);
        }
    }
    /* GET_SERVER_STATS reports the tablet sizes (the coordinator's "will") */
    struct wire_req_hdr sh = { .opcode = WIRE_OP_GET_SERVER_STATS, .service = WIRE_SVC_MASTER };
    uint8_t *sr = NULL;
    uint32_t srl = 0;
    CU_ASSERT_EQUAL_FATAL(call(mb.client, &sh, sizeof sh, &sr, &srl), CRAM_OK);
    Cram__ServerStats *ss = cram__server_stats__unpack(NULL, srl - 4, sr + 4);
    CU_ASSERT_FATAL(ss != NULL);
    CU_ASSERT_EQUAL(ss->n_tablet_stats, 2);
    for (size_t i = 0; i < ss->n_tablet_stats; i++) {
        const Cram__TabletStats *ts = ss->tablet_stats[i];
        if (ts->table_id == TABLE) {
            CU_ASSERT_EQUAL(ts->objects, live);
            CU_ASSERT(ts->bytes > live * 40);
            CU_ASSERT(ts->start_hash == 0 && ts->end_hash == UINT64_MAX);
        } else {
            CU_ASSERT_EQUAL(ts->table_id, TABLE_B);
            CU_ASSERT_EQUAL(ts->objects, 2);
        }
    }
    cram__server_stats__free_unpacked(ss, NULL);
    free(sr);
    /* new versions rise above everything A handed out */
    CU_ASSERT_EQUAL(do_write(mb.client, TABLE, "key-0", "z", 1, &v), CRAM_OK);
    CU_ASSERT(v > max_ver);
    CU_ASSERT_EQUAL(do_write(mb.client, TABLE, "key-7", "z", 1, &v), CRAM_OK);  /* was removed */
    CU_ASSERT(v > max_ver);

    /* the rebuilt data is on R backups of B */
    CU_ASSERT(poll_until_idle(master_replica_mgr(mb.m), 20000));
    uint32_t breps = 0;
    for (int i = 1; i < NB; i++) {
        Cram__ReplicaList *l = list_req(&bn[i], B_ID);
        breps += (uint32_t)l->n_replicas;
        cram__replica_list__free_unpacked(l, NULL);
    }
    /* every segment of B's log (the replayed ones joined it) on 2 backups */
    mlog *lg = om_log(om);
    uint32_t nlog = 0;
    for (uint32_t slot = 0; slot < log_nsegments(lg); slot++) {
        const struct log_segment *g = log_segment(lg, slot);
        if (g->state != LOG_SEG_HEAD && g->state != LOG_SEG_CLOSED)
            continue;
        nlog++;
        uint64_t ids[8];
        CU_ASSERT_EQUAL(rm_segment_backups(master_replica_mgr(mb.m), slot, ids, 8), 2);
    }
    CU_ASSERT(nlog >= 8);
    CU_ASSERT_EQUAL(breps, 2 * nlog);

    free(req);
    if (finished != NULL)
        cram__recovery_master_finished__free_unpacked(finished, NULL);
    finished = NULL;
    master_down(&mb);
    for (int i = 0; i < NB; i++) {
        if (bn[i].ls != NULL)
            tp_listener_close(bn[i].ls);
        if (!bn[i].crashed)
            backup_destroy(bn[i].svc);
        rm_tree(bn[i].dir);
    }
    tp_listener_close(cls);
    sl_destroy(sl);
    tp_loop_destroy(loop);
    for (int k = 0; k < NKEYS; k++)
        free(model_val[k]);
    (void)poll_ms;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("recovery master", NULL, NULL);
    CU_add_test(s, "end to end: master A crashes, B recovers its tablet from backups",
                test_end_to_end);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
