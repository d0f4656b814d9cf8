/*
 * test_replica_mgr.c -- the master's replica manager.
 *
 * Placement: rm_choose_backup directly (never self, never a holder, failure
 * domains kept while enough exist, fallback when not, least loaded of the
 * random candidates, avoided backups only as a last resort).
 *
 * End to end, in one process on one tp_loop: three real backup services,
 * each on its own tcp listener (127.0.0.1, port 0) over its own temp
 * directory; a master service with R = 2 behind a fourth listener; a small
 * listener standing in for the coordinator's SET_MASTER_RECOVERY_INFO (it
 * records what it is told); a server list built by hand (sl_apply of packed
 * Cram__ServerLists).  Clients write through real tp_sessions.  Checks:
 * fewer than R backups -> RETRY with nothing appended; every segment's two
 * replicas read back with BACKUP_READ equal the master's bytes and
 * certificate (closed ones closed); failure domains distinct; after a backup
 * holding the head is marked crashed, writes issued meanwhile are all
 * acknowledged, every segment again has 2 replicas on the other backups, and
 * the new head's {segment id, epoch} was recorded at the "coordinator".
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
#include "logcleaner/lc.h"
#include "master/log.h"
#include "master/master_service.h"
#include "master/objmgr.h"
#include "master/replica_mgr.h"
#include "transport/transport.h"

/* ---- placement ------------------------------------------------------------ */

static void cands(struct rm_candidate *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        c[i] = (struct rm_candidate){ .id = 10 + i, .domain = "", .load = 0, .usable = true };
}

static void test_never_self_or_holder(void)
{
    struct rm_candidate c[6];
    cands(c, 6);
    uint64_t seed = 1;
    for (int round = 0; round < 2000; round++) {
        uint64_t holders[3];
        size_t nh = 0;
        for (int k = 0; k < 4; k++) {       /* a segment with 4 replicas, self = 12 */
            int i = rm_choose_backup(c, 6, 12, holders, nh, 3, &seed);
            CU_ASSERT_FATAL(i >= 0);
            CU_ASSERT(c[i].id != 12);
            for (size_t h = 0; h < nh; h++)
                CU_ASSERT(c[i].id != holders[h]);
            if (nh < 3)
                holders[nh++] = c[i].id;
        }
    }
    /* 6 candidates, self and 4 holders: exactly one left */
    uint64_t h4[4] = { 10, 11, 13, 14 };
    for (int k = 0; k < 50; k++) {
        int i = rm_choose_backup(c, 6, 12, h4, 4, 3, &seed);
        CU_ASSERT(i == 5);
    }
    uint64_t h5[5] = { 10, 11, 13, 14, 15 };
    CU_ASSERT(rm_choose_backup(c, 6, 12, h5, 5, 3, &seed) == -1);
    /* unusable ones never */
    c[5].usable = false;
    CU_ASSERT(rm_choose_backup(c, 6, 12, h4, 4, 3, &seed) == -1);
    CU_ASSERT(rm_choose_backup(c, 0, 12, NULL, 0, 3, &seed) == -1);
}

static void test_failure_domains(void)
{
    struct rm_candidate c[6];
    cands(c, 6);
    const char *dom[6] = { "a", "a", "a", "b", "b", "c" };
    for (int i = 0; i < 6; i++)
        c[i].domain = dom[i];
    uint64_t seed = 7;
    for (int round = 0; round < 1000; round++) {
        uint64_t holders[3];
        const char *hd[3];
        for (int k = 0; k < 3; k++) {       /* 3 domains: 3 replicas all distinct */
            int i = rm_choose_backup(c, 6, 0, holders, (size_t)k, 3, &seed);
            CU_ASSERT_FATAL(i >= 0);
            for (int h = 0; h < k; h++)
                CU_ASSERT(strcmp(hd[h], c[i].domain) != 0);
            holders[k] = c[i].id;
            hd[k] = c[i].domain;
        }
    }
    /* only domains a and b usable, 3 replicas: the third falls back to a
     * repeated domain, but still a distinct server */
    c[5].usable = false;
    int repeats = 0;
    for (int round = 0; round < 500; round++) {
        uint64_t holders[3];
        for (int k = 0; k < 3; k++) {
            int i = rm_choose_backup(c, 6, 0, holders, (size_t)k, 3, &seed);
            CU_ASSERT_FATAL(i >= 0);
            for (int h = 0; h < k; h++)
                CU_ASSERT(holders[h] != c[i].id);
            holders[k] = c[i].id;
        }
        int na = 0;
        for (int k = 0; k < 3; k++)
            na += holders[k] <= 12;
        CU_ASSERT(na == 1 || na == 2);      /* both domains used */
        repeats++;
    }
    CU_ASSERT(repeats == 500);
    /* candidates without a domain count as distinct from everyone */
    struct rm_candidate d[3];
    cands(d, 3);
    uint64_t h[2] = { 10, 11 };
    CU_ASSERT(rm_choose_backup(d, 3, 0, h, 2, 3, &seed) == 2);
}

static void test_least_loaded(void)
{
    struct rm_candidate c[4];
    cands(c, 4);
    uint64_t seed = 99;
    int hits[4] = { 0 };
    for (int k = 0; k < 4000; k++) {
        int i = rm_choose_backup(c, 4, 0, NULL, 0, 3, &seed);
        CU_ASSERT_FATAL(i >= 0);
        hits[i]++;
    }
    for (int i = 0; i < 4; i++)           /* equal load: spread over all */
        CU_ASSERT(hits[i] > 600);
    c[0].load = c[1].load = c[3].load = 10;
    memset(hits, 0, sizeof hits);
    for (int k = 0; k < 4000; k++)
        hits[rm_choose_backup(c, 4, 0, NULL, 0, 3, &seed)]++;
    /* the idle one wins whenever drawn: 1 - (3/4)^3 = 58% */
    CU_ASSERT(hits[2] > 2000);
    CU_ASSERT(hits[2] < 2700);
    /* with as many draws as candidates, the least loaded wins most of the time */
    memset(hits, 0, sizeof hits);
    for (int k = 0; k < 4000; k++)
        hits[rm_choose_backup(c, 4, 0, NULL, 0, 12, &seed)]++;
    CU_ASSERT(hits[2] > 3600);
    /* avoided: chosen only when nothing else is left */
    c[2].avoid = true;
    for (int k = 0; k < 200; k++)
        CU_ASSERT(rm_choose_backup(c, 4, 0, NULL, 0, 3, &seed) != 2);
    uint64_t h[3] = { 10, 11, 13 };
    CU_ASSERT(rm_choose_backup(c, 4, 0, h, 3, 3, &seed) == 2);
}

/* ---- an in-process cluster --------------------------------------------------- */

#define NB        4                 /* backups; the 4th has room for 2 replicas only */
#define NB_MAX    12                /* more are added by the stress test */
#define NMAIN     3                 /* backups listed in the main scenario */
#define MASTER_ID 1
#define SEGMENT   (64u * 1024)
#define TABLE     5

struct bnode {
    backup_service *svc;
    tp_listener *ls;
    char dir[64];
    uint64_t id;
    const char *domain;
    int crashed;
};

static tp_loop *loop;
static server_list *sl;
static master_service *ms;
static tp_listener *mls, *cls;
static tp_session *client;
static struct bnode bn[NB_MAX];
static int nbn;                     /* backups created */
static uint64_t sl_ver;
static uint64_t info_seg, info_epoch, info_calls;

static void on_backup_req(void *arg, tp_rpc *rpc)
{
    struct bnode *b = arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    backup_handle(b->svc, rpc, req, len);
}

static void reply_st(tp_rpc *rpc, cram_status st)
{
    struct wire_resp_hdr h = { .status = st };
    struct iovec iov = { &h, sizeof h };
    tp_rpc_reply(rpc, &iov, 1);
}

static void on_master_req(void *arg, tp_rpc *rpc)
{
    (void)arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    if (len < sizeof(struct wire_req_hdr)) {
        reply_st(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    master_handle(ms, rpc, req, len);
}

/* The coordinator's half of SET_MASTER_RECOVERY_INFO: record and answer. */
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
    Cram__MasterRecoveryInfo *mi = NULL;
    if (h.opcode == WIRE_OP_SET_MASTER_RECOVERY_INFO && h.service == WIRE_SVC_COORDINATOR)
        mi = cram__master_recovery_info__unpack(NULL, len - sizeof h, req + sizeof h);
    if (mi == NULL) {
        reply_st(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    CU_ASSERT(mi->server_id == MASTER_ID);
    CU_ASSERT(mi->segment_id >= info_seg);
    info_seg = mi->segment_id;
    info_epoch = mi->epoch;
    info_calls++;
    cram__master_recovery_info__free_unpacked(mi, NULL);
    reply_st(rpc, CRAM_OK);
}

/* Apply a server list naming the master and backups [0, nback). */
static void push_list(int nback, int full)
{
    Cram__ServerEntry e[NB_MAX + 1];
    Cram__ServerEntry *ep[NB_MAX + 1];
    char *locs[NB_MAX + 1][1];
    int n = 0;
    cram__server_entry__init(&e[n]);
    e[n].server_id = MASTER_ID;
    e[n].services = SL_SERVICE_MASTER | SL_SERVICE_BACKUP;   /* must still never be chosen */
    e[n].status = CRAM__SERVER_STATUS__SERVER_UP;
    locs[n][0] = (char *)tp_listener_locator(mls);
    e[n].locators = locs[n];
    e[n].n_locators = 1;
    e[n].failure_domain = "z";
    ep[n] = &e[n];
    n++;
    for (int i = 0; i < nback; i++, n++) {
        cram__server_entry__init(&e[n]);
        e[n].server_id = bn[i].id;
        e[n].services = SL_SERVICE_BACKUP;
        e[n].status = bn[i].crashed ? CRAM__SERVER_STATUS__SERVER_CRASHED
                                    : CRAM__SERVER_STATUS__SERVER_UP;
        locs[n][0] = (char *)tp_listener_locator(bn[i].ls);
        e[n].locators = locs[n];
        e[n].n_locators = 1;
        e[n].failure_domain = (char *)bn[i].domain;
        ep[n] = &e[n];
    }
    Cram__ServerList l = CRAM__SERVER_LIST__INIT;
    l.version = ++sl_ver;
    l.full = full;
    l.servers = ep;
    l.n_servers = (size_t)n;
    uint8_t buf[8192];
    size_t len = cram__server_list__get_packed_size(&l);
    CU_ASSERT_FATAL(len <= sizeof buf);
    cram__server_list__pack(&l, buf);
    CU_ASSERT_FATAL(sl_apply(sl, buf, len) == CRAM_OK);
}

/* A backup service with its own directory and listener, not yet listed. */
static void add_backup(uint64_t storage)
{
    static const char *doms[] = { "a", "b", "b", "c" };
    char err[256];
    CU_ASSERT_FATAL(nbn < NB_MAX);
    struct bnode *b = &bn[nbn];
    snprintf(b->dir, sizeof b->dir, "/tmp/cram-test-rm-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(b->dir) != NULL);
    struct backup_config bc = { .dir = b->dir, .storage_bytes = storage, .max_replica_bytes = SEGMENT };
    b->svc = backup_create(&bc, loop, sl, err, sizeof err);
    CU_ASSERT_FATAL(b->svc != NULL);
    b->id = 100 + (uint64_t)nbn;
    b->domain = doms[nbn % 4];
    b->crashed = 0;
    backup_set_server_id(b->svc, b->id);
    b->ls = tp_listen(loop, "tcp:host=127.0.0.1,port=0", on_backup_req, b, err, sizeof err);
    CU_ASSERT_FATAL(b->ls != NULL);
    nbn++;
}

static uint64_t main_storage;       /* != 0: storage of the NMAIN listed backups */
static int cleaner_off;             /* the master's own log cleaner never runs */

static void cluster_up(int sync, int small_last)
{
    char err[256];
    loop = tp_loop_create();
    CU_ASSERT_FATAL(loop != NULL);
    sl = sl_create();
    CU_ASSERT_FATAL(sl != NULL);
    nbn = 0;
    for (int i = 0; i < NB; i++)
        add_backup(small_last && i == NB - 1 ? 2 * SEGMENT
                   : main_storage != 0 && i < NMAIN ? main_storage : 64u << 20);
    struct master_config mc = { .memory_bytes = 128 * SEGMENT, .segment_bytes = SEGMENT,
                                .cleaner_threshold = cleaner_off ? -1 : 0 };
    ms = master_create(&mc, err, sizeof err);
    CU_ASSERT_FATAL(ms != NULL);
    master_set_server_id(ms, MASTER_ID);
    CU_ASSERT_FATAL(master_set_replication(ms, loop, 2, sync) == 0);
    CU_ASSERT_FATAL(master_set_server_list(ms, sl) == 0);
    mls = tp_listen(loop, "tcp:host=127.0.0.1,port=0", on_master_req, NULL, err, sizeof err);
    CU_ASSERT_FATAL(mls != NULL);
    cls = tp_listen(loop, "tcp:host=127.0.0.1,port=0", on_coord_req, NULL, err, sizeof err);
    CU_ASSERT_FATAL(cls != NULL);
    master_set_coordinator(ms, tp_listener_locator(cls));
    CU_ASSERT_FATAL(om_take_tablet(master_objmgr(ms), TABLE, 0, UINT64_MAX, OM_TABLET_NORMAL) == CRAM_OK);
    cram_status st;
    client = tp_session_open(loop, tp_listener_locator(mls), &st);
    CU_ASSERT_FATAL(client != NULL);
    sl_ver = 0;
    info_seg = info_epoch = info_calls = 0;
}

static void rm_tree(const char *d)
{
    DIR *dd = opendir(d);
    if (dd != NULL) {
        struct dirent *de;
        while ((de = readdir(dd)) != NULL)
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                unlinkat(dirfd(dd), de->d_name, 0);     /* replica files, .lock */
        closedir(dd);
    }
    rmdir(d);
}

static void cluster_down(void)
{
    tp_session_close(client);
    /* let in-flight replication finish so nothing is left mid-way */
    for (int k = 0; k < 200 && !rm_idle(master_replica_mgr(ms)); k++)
        tp_loop_poll(loop, 10);
    master_destroy(ms);
    for (int i = 0; i < nbn; i++) {
        tp_listener_close(bn[i].ls);
        backup_destroy(bn[i].svc);
        rm_tree(bn[i].dir);
    }
    tp_listener_close(mls);
    tp_listener_close(cls);
    for (int k = 0; k < 5; k++)     /* run completions the backups' workers posted */
        tp_loop_poll(loop, 0);
    tp_loop_destroy(loop);
    sl_destroy(sl);
}

/* ---- client side --------------------------------------------------------------- */

static int outstanding, acked_ok, acked_other;
static cram_status last_other;

static void on_write_resp(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    (void)arg;
    outstanding--;
    struct wire_resp_hdr h = { .status = st };
    if (st == CRAM_OK && len >= sizeof h)
        memcpy(&h, resp, sizeof h);
    if (h.status == CRAM_OK) {
        acked_ok++;
    } else {
        acked_other++;
        last_other = (cram_status)h.status;
    }
}

static void send_write(int k, uint32_t vlen)
{
    static uint8_t buf[sizeof(struct wire_write_req) + 64 + 4096];
    char key[32];
    int kl = snprintf(key, sizeof key, "key-%d", k);
    struct wire_write_req q = { .hdr = { .opcode = WIRE_OP_WRITE, .service = WIRE_SVC_MASTER },
                                .tgt = { .target_server_id = MASTER_ID },
                                .table_id = TABLE, .value_len = vlen, .key_len = (uint16_t)kl };
    memcpy(buf, &q, sizeof q);
    memcpy(buf + sizeof q, key, (size_t)kl);
    for (uint32_t i = 0; i < vlen; i++)
        buf[sizeof q + (size_t)kl + i] = (uint8_t)(k * 7 + i);
    struct iovec iov = { buf, sizeof q + (size_t)kl + vlen };
    CU_ASSERT_FATAL(tp_send(client, &iov, 1, 20000, on_write_resp, NULL) == CRAM_OK);
    outstanding++;
}

static void send_incr(int k)
{
    char key[32];
    int kl = snprintf(key, sizeof key, "ctr-%d", k % 5);
    uint8_t buf[sizeof(struct wire_incr_req) + 32];
    struct wire_incr_req q = { .hdr = { .opcode = WIRE_OP_INCREMENT, .service = WIRE_SVC_MASTER },
                               .table_id = TABLE, .delta = 1, .key_len = (uint16_t)kl };
    memcpy(buf, &q, sizeof q);
    memcpy(buf + sizeof q, key, (size_t)kl);
    struct iovec iov = { buf, sizeof q + (size_t)kl };
    CU_ASSERT_FATAL(tp_send(client, &iov, 1, 20000, on_write_resp, NULL) == CRAM_OK);
    outstanding++;
}

static void wait_acks(void)
{
    uint64_t end = clock_mono_ms() + 30000;
    while (outstanding > 0 && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
    CU_ASSERT(outstanding == 0);
}

static void wait_idle(void)
{
    uint64_t end = clock_mono_ms() + 30000;
    while (!rm_idle(master_replica_mgr(ms)) && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
    CU_ASSERT(rm_idle(master_replica_mgr(ms)));
}

static struct bnode *node_of(uint64_t id)
{
    for (int i = 0; i < nbn; i++)
        if (bn[i].id == id)
            return &bn[i];
    return NULL;
}

/* BACKUP_READ the replica of segment `slot` on backup id and compare it with
 * the master's segment. */
static void check_replica(uint64_t id, uint32_t slot)
{
    struct bnode *b = node_of(id);
    CU_ASSERT_FATAL(b != NULL);
    CU_ASSERT(!b->crashed);
    mlog *l = om_log(master_objmgr(ms));
    const struct log_segment *ls = log_segment(l, slot);
    cram_status st;
    tp_session *s = tp_session_open(loop, tp_listener_locator(b->ls), &st);
    CU_ASSERT_FATAL(s != NULL);
    struct wire_backup_read_req q = { .hdr = { .opcode = WIRE_OP_BACKUP_READ, .service = WIRE_SVC_BACKUP },
                                      .tgt = { .target_server_id = id }, .master_id = MASTER_ID,
                                      .segment_id = ls->id, .epoch = 0 };
    struct iovec iov = { &q, sizeof q };
    uint8_t *resp = NULL;
    uint32_t len = 0;
    st = tp_call(s, &iov, 1, 10000, &resp, &len);
    CU_ASSERT_FATAL(st == CRAM_OK);
    struct wire_backup_read_resp r;
    CU_ASSERT_FATAL(len >= sizeof r);
    memcpy(&r, resp, sizeof r);
    CU_ASSERT(r.hdr.status == CRAM_OK);
    struct seg_certificate c = log_segment_certificate(l, slot);
    CU_ASSERT(r.length == ls->w.used);
    CU_ASSERT(r.length == len - sizeof r);
    CU_ASSERT(r.certificate.length == c.length);
    CU_ASSERT(r.certificate.crc32c == c.crc32c);
    CU_ASSERT(r.epoch == ls->epoch);
    CU_ASSERT(r.closed == (ls->state == LOG_SEG_CLOSED));
    if (r.length == ls->w.used && r.length == len - sizeof r)
        CU_ASSERT(memcmp(resp + sizeof r, log_segment_base(l, slot), r.length) == 0);
    free(resp);
    tp_session_close(s);
}

/* Every segment in the log: 2 replicas on distinct live backups (not the
 * master), in distinct failure domains if want_domains, bytes equal. */
static int check_all(int want_domains)
{
    mlog *l = om_log(master_objmgr(ms));
    replica_mgr *rm = master_replica_mgr(ms);
    int nseg = 0;
    for (uint32_t slot = 0; slot < log_nsegments(l); slot++) {
        uint8_t state = log_segment(l, slot)->state;
        if (state != LOG_SEG_CLOSED && state != LOG_SEG_HEAD)
            continue;
        nseg++;
        uint64_t ids[RM_MAX_REPLICAS];
        uint32_t n = rm_segment_backups(rm, slot, ids, RM_MAX_REPLICAS);
        CU_ASSERT(n == 2);
        if (n != 2)
            continue;
        CU_ASSERT(ids[0] != ids[1]);
        CU_ASSERT(ids[0] != MASTER_ID && ids[1] != MASTER_ID);
        if (want_domains)
            CU_ASSERT(strcmp(node_of(ids[0])->domain, node_of(ids[1])->domain) != 0);
        check_replica(ids[0], slot);
        check_replica(ids[1], slot);
    }
    return nseg;
}

/* BACKUP_LIST of one backup: replicas of this master held, and how many of
 * them are certified on disk. */
static void list_replicas(struct bnode *b, int *held, int *on_disk)
{
    cram_status st;
    tp_session *s = tp_session_open(loop, tp_listener_locator(b->ls), &st);
    CU_ASSERT_FATAL(s != NULL);
    struct wire_backup_list_req q = { .hdr = { .opcode = WIRE_OP_BACKUP_LIST, .service = WIRE_SVC_BACKUP },
                                      .tgt = { .target_server_id = b->id }, .master_id = MASTER_ID };
    struct iovec iov = { &q, sizeof q };
    uint8_t *resp = NULL;
    uint32_t len = 0;
    *held = *on_disk = 0;
    st = tp_call(s, &iov, 1, 10000, &resp, &len);
    CU_ASSERT_FATAL(st == CRAM_OK && len >= sizeof(struct wire_resp_hdr));
    Cram__ReplicaList *rl = cram__replica_list__unpack(NULL, len - sizeof(struct wire_resp_hdr),
                                                       resp + sizeof(struct wire_resp_hdr));
    CU_ASSERT_FATAL(rl != NULL);
    for (size_t i = 0; i < rl->n_replicas; i++) {
        (*held)++;
        *on_disk += rl->replicas[i]->on_disk;
    }
    cram__replica_list__free_unpacked(rl, NULL);
    free(resp);
    tp_session_close(s);
}

static void run_e2e(int sync)
{
    cluster_up(sync, 1);
    mlog *l = om_log(master_objmgr(ms));
    replica_mgr *rm = master_replica_mgr(ms);
    outstanding = acked_ok = acked_other = 0;

    /* one backup only: RETRY, nothing appended */
    push_list(1, 1);
    uint64_t before = l->bytes_used;
    send_write(0, 100);
    wait_acks();
    CU_ASSERT(acked_other == 1 && last_other == CRAM_RETRY);
    CU_ASSERT(l->bytes_used == before);
    struct om_stats os;
    om_get_stats(master_objmgr(ms), &os);
    CU_ASSERT(os.objects == 0);

    /* three backups: many writes in flight roll several segments */
    push_list(NMAIN, 1);
    acked_other = 0;
    for (int k = 0; k < 400; k++)
        send_write(k, 200 + (uint32_t)(k * 37) % 1500);
    wait_acks();
    CU_ASSERT(acked_ok == 400);
    CU_ASSERT(acked_other == 0);
    wait_idle();
    /* sync: once the master is idle every replica is on disk, the open head's
     * too.  (Checked after wait_idle: right after the last ack a head that
     * was just opened -- holding only its header and digest, no acknowledged
     * write -- may still be on its way to the disk.  That acknowledged bytes
     * are on disk when the write returns is tested end to end in
     * tests/integration/test_durability.c, reading the backups' files.) */
    if (sync) {
        int total = 0, disk = 0;
        for (int i = 0; i < NMAIN; i++) {
            int held, on_disk;
            list_replicas(&bn[i], &held, &on_disk);
            total += held;
            disk += on_disk;
        }
        CU_ASSERT(total >= 10);
        CU_ASSERT(disk == total);
    }
    int nseg = check_all(1);
    CU_ASSERT(nseg >= 5);
    struct rm_stats rs;
    rm_get_stats(rm, &rs);
    CU_ASSERT(rs.replies_deferred > 0);
    CU_ASSERT(rs.backup_writes < 2u * 400);     /* group commit: fewer RPCs than writes */

    printf("\n  %s: %d segments, %llu BACKUP_WRITEs for 400 writes\n", sync ? "sync" : "buffered",
           nseg, (unsigned long long)rs.backup_writes);

    /* crash a backup holding a replica of the head, with writes in flight */
    uint64_t ids[RM_MAX_REPLICAS];
    uint32_t n = rm_segment_backups(rm, log_head_slot(l), ids, RM_MAX_REPLICAS);
    CU_ASSERT_FATAL(n == 2);
    struct bnode *victim = node_of(ids[0]);
    uint64_t old_head = log_segment(l, log_head_slot(l))->id;
    acked_ok = 0;
    for (int k = 0; k < 100; k++)
        send_write(1000 + k, 500);
    for (int k = 0; k < 20; k++)
        send_incr(k);
    victim->crashed = 1;
    push_list(NMAIN, 0);
    for (int k = 0; k < 100; k++)
        send_write(2000 + k, 700);
    wait_acks();
    CU_ASSERT(acked_ok == 220);
    CU_ASSERT(acked_other == 0);
    wait_idle();
    rm_get_stats(rm, &rs);
    CU_ASSERT(rs.head_rolls_on_loss >= 1);
    CU_ASSERT(rs.recovery_infos >= 1);
    CU_ASSERT(info_calls >= 1);
    CU_ASSERT(info_seg > old_head);
    CU_ASSERT(info_epoch >= 1);
    CU_ASSERT(rs.replicas_recreated >= 1);
    printf("  re-replication after the crash of backup %llu: %llu ms, %llu replicas re-created\n",
           (unsigned long long)victim->id, (unsigned long long)rs.last_rereplication_ms,
           (unsigned long long)rs.replicas_recreated);
    /* nothing on the victim any more; bytes equal on the others */
    for (uint32_t slot = 0; slot < log_nsegments(l); slot++) {
        uint32_t k = rm_segment_backups(rm, slot, ids, RM_MAX_REPLICAS);
        for (uint32_t i = 0; i < k; i++)
            CU_ASSERT(ids[i] != victim->id);
    }
    check_all(0);
    om_get_stats(master_objmgr(ms), &os);
    CU_ASSERT(os.objects == 400 + 200 + 5);
    cluster_down();
}

/* A backup that runs out of storage answers CRAM_BACKUP_FULL: its replicas
 * move to others without a head roll, and every write is acknowledged. */
static void test_backup_full(void)
{
    cluster_up(0, 1);
    mlog *l = om_log(master_objmgr(ms));
    replica_mgr *rm = master_replica_mgr(ms);
    outstanding = acked_ok = acked_other = 0;
    push_list(NB, 1);
    for (int round = 0; round < 4; round++) {
        for (int k = 0; k < 100; k++)
            send_write(round * 100 + k, 1000);
        wait_acks();
    }
    CU_ASSERT(acked_ok == 400);
    CU_ASSERT(acked_other == 0);
    wait_idle();
    struct rm_stats rs;
    rm_get_stats(rm, &rs);
    CU_ASSERT(rs.head_rolls_on_loss == 0);
    check_all(0);
    uint32_t on_small = 0;
    for (uint32_t slot = 0; slot < log_nsegments(l); slot++) {
        uint64_t ids[RM_MAX_REPLICAS];
        uint32_t k = rm_segment_backups(rm, slot, ids, RM_MAX_REPLICAS);
        for (uint32_t i = 0; i < k; i++)
            on_small += ids[i] == bn[NB - 1].id;
    }
    CU_ASSERT(on_small <= 2);
    /* every failure was a refusal, counted for the cleaner's disk trigger;
     * another backup always had room */
    CU_ASSERT(rs.backup_full_refusals > 0);
    CU_ASSERT_EQUAL(rs.backup_full_refusals, rs.backup_write_failures);
    CU_ASSERT_EQUAL(rs.retries_backups_full, 0);
    CU_ASSERT(!rm_backups_full(rm));
    printf("\n  %llu failed BACKUP_WRITEs (%llu refused: backup full), %u replicas on the small "
           "backup\n", (unsigned long long)rs.backup_write_failures,
           (unsigned long long)rs.backup_full_refusals, on_small);
    cluster_down();
}

/* Every backup full: no write is lost or left hanging.  The three listed
 * backups hold 3 replicas each.  Writes go on until all have refused one;
 * from then on writes are answered RETRY before they append (nothing could
 * make them durable), the ones appended to the head that found no room are
 * held back, not failed, and the cleaner (notified of every refusal) starts
 * no pass it could not finish.  Two backups with room join: the held writes
 * are acknowledged and every segment has its 2 replicas. */
static void test_all_backups_full(void)
{
    main_storage = 3 * SEGMENT;
    cluster_up(0, 0);
    main_storage = 0;
    replica_mgr *rm = master_replica_mgr(ms);
    outstanding = acked_ok = acked_other = 0;
    push_list(NMAIN, 1);
    struct rm_stats rs;
    int sent = 0;
    uint64_t end = clock_mono_ms() + 20000;
    do {
        for (int k = 0; k < 20; k++, sent++)
            send_write(sent, 1000);
        for (int t = 0; t < 20; t++)
            tp_loop_poll(loop, 1);
        rm_get_stats(rm, &rs);
    } while (rs.retries_backups_full == 0 && clock_mono_ms() < end);
    CU_ASSERT_FATAL(rs.retries_backups_full > 0);
    CU_ASSERT(rm_backups_full(rm));
    CU_ASSERT(rm_disk_short(rm));
    CU_ASSERT(rs.backup_full_refusals >= NMAIN);
    /* writes now are refused before they append */
    int ok_before = acked_ok, other_before = acked_other;
    for (int k = 0; k < 20; k++, sent++)
        send_write(sent, 1000);
    uint64_t until = clock_mono_ms() + 1000;
    while (acked_other < other_before + 20 && clock_mono_ms() < until)
        tp_loop_poll(loop, 5);
    CU_ASSERT(acked_other >= other_before + 20);
    CU_ASSERT(last_other == CRAM_RETRY);
    CU_ASSERT(acked_ok == ok_before);
    int held = outstanding;
    printf("\n  %d writes sent: %d acknowledged, %d RETRY, %d held back; %llu refusals\n", sent,
           acked_ok, acked_other, held, (unsigned long long)rs.backup_full_refusals);
    /* two backups with room join (a segment's replicas need two: one may
     * already sit on the first): nothing held back is lost */
    add_backup(64u << 20);
    push_list(nbn, 1);
    wait_acks();
    CU_ASSERT(acked_ok == ok_before + held);
    wait_idle();
    check_all(0);
    cluster_down();
}

/* A cluster (buffered) listing nback backups, with n objects of vlen bytes
 * written, acknowledged and fully replicated. */
static void up_and_write(int nback, int n, uint32_t vlen)
{
    cluster_up(0, 0);
    outstanding = acked_ok = acked_other = 0;
    push_list(nback, 1);
    for (int k = 0; k < n; k++)
        send_write(k, vlen);
    wait_acks();
    wait_idle();
}

/* Replicas held by all backups together. */
static int held_total(void)
{
    int held = 0;
    for (int i = 0; i < nbn; i++) {
        int h, d;
        list_replicas(&bn[i], &h, &d);
        held += h;
    }
    return held;
}

/* A second head replica lost before the first loss's recovery info is
 * recorded: the young new head is re-sent under a higher epoch in place. */
static void test_double_loss(void)
{
    up_and_write(NB, 150, 1000);
    mlog *l = om_log(master_objmgr(ms));
    replica_mgr *rm = master_replica_mgr(ms);
    uint64_t ids[RM_MAX_REPLICAS];
    CU_ASSERT_FATAL(rm_segment_backups(rm, log_head_slot(l), ids, RM_MAX_REPLICAS) == 2);
    uint64_t old_head = log_segment(l, log_head_slot(l))->id;
    node_of(ids[0])->crashed = 1;
    push_list(NB, 0);
    for (int k = 0; k < 50; k++)
        send_write(500 + k, 800);
    struct rm_stats rs;
    uint64_t end = clock_mono_ms() + 10000;
    do {
        tp_loop_poll(loop, 0);
        rm_get_stats(rm, &rs);
    } while (rs.head_rolls_on_loss == 0 && clock_mono_ms() < end);
    CU_ASSERT_FATAL(rs.head_rolls_on_loss == 1);
    CU_ASSERT(log_segment(l, log_head_slot(l))->id > old_head);
    CU_ASSERT(rs.recovery_infos == 0);
    /* the new head is placed but its info cannot be recorded yet: lose one
     * of its replicas too */
    uint32_t n = rm_segment_backups(rm, log_head_slot(l), ids, RM_MAX_REPLICAS);
    CU_ASSERT_FATAL(n >= 1);
    node_of(ids[0])->crashed = 1;
    push_list(NB, 0);
    for (int k = 0; k < 50; k++)
        send_write(600 + k, 800);
    wait_acks();
    CU_ASSERT(acked_ok == 250);
    CU_ASSERT(acked_other == 0);
    wait_idle();
    rm_get_stats(rm, &rs);
    CU_ASSERT(rs.head_rolls_on_loss == 1);
    CU_ASSERT(rs.head_epoch_bumps >= 1);
    const struct log_segment *h = log_segment(l, log_head_slot(l));
    CU_ASSERT(info_seg <= h->id);
    CU_ASSERT(info_epoch >= 2);
    CU_ASSERT(h->epoch >= info_epoch);
    check_all(0);
    cluster_down();
}

static void send_remove(int k)
{
    char key[32];
    int kl = snprintf(key, sizeof key, "key-%d", k);
    uint8_t buf[sizeof(struct wire_remove_req) + 32];
    struct wire_remove_req q = { .hdr = { .opcode = WIRE_OP_REMOVE, .service = WIRE_SVC_MASTER },
                                 .table_id = TABLE, .key_len = (uint16_t)kl };
    memcpy(buf, &q, sizeof q);
    memcpy(buf + sizeof q, key, (size_t)kl);
    struct iovec iov = { buf, sizeof q + (size_t)kl };
    CU_ASSERT_FATAL(tp_send(client, &iov, 1, 20000, on_write_resp, NULL) == CRAM_OK);
    outstanding++;
}

/* Rounds of mixed writes while backups crash at random moments (between
 * loop turns, with RPCs in flight) and fresh ones join: every operation is
 * acknowledged OK, and in the end every segment is on 2 live backups with
 * the master's bytes. */
static void test_stress_crashes(void)
{
    cluster_up(0, 0);
    replica_mgr *rm = master_replica_mgr(ms);
    outstanding = acked_ok = acked_other = 0;
    push_list(nbn, 1);
    uint64_t seed = 12345;
    int sent = 0;
    for (int round = 0; round < 8; round++) {
        for (int k = 0; k < 120; k++, sent++) {
            uint64_t r = seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            if ((r >> 33) % 10 == 0)
                send_remove((int)((r >> 40) % 300));
            else if ((r >> 33) % 10 == 1)
                send_incr((int)(r >> 40));
            else
                send_write((int)((r >> 40) % 300), 100 + (uint32_t)((r >> 20) % 3000));
        }
        /* let some of it get going, then crash a live backup */
        int turns = (int)((seed >> 45) % 6);
        for (int t = 0; t < turns; t++)
            tp_loop_poll(loop, 0);
        if (round % 3 == 2)         /* sometimes a quiet moment: the next loss rolls again */
            wait_acks();
        int live = 0;
        for (int i = 0; i < nbn; i++)
            live += !bn[i].crashed;
        if (live > 2) {
            int v;
            do {
                v = (int)((seed = seed * 6364136223846793005ull + 1) >> 40) % nbn;
            } while (bn[v].crashed);
            bn[v].crashed = 1;
            push_list(nbn, round % 2);
        }
        if (round % 2 == 1 && nbn < NB_MAX) {   /* a new backup joins */
            add_backup(64u << 20);
            push_list(nbn, 1);
        }
    }
    wait_acks();
    CU_ASSERT(acked_ok == sent);
    CU_ASSERT(acked_other == 0);
    wait_idle();
    struct rm_stats rs;
    rm_get_stats(rm, &rs);
    printf("\n  %d ops, %llu rolls and %llu epoch bumps on head loss, %llu replicas re-created, "
           "%llu recovery infos\n", sent, (unsigned long long)rs.head_rolls_on_loss,
           (unsigned long long)rs.head_epoch_bumps, (unsigned long long)rs.replicas_recreated,
           (unsigned long long)rs.recovery_infos);
    CU_ASSERT(check_all(0) >= 3);
    cluster_down();
}

static void set_flag(void *arg) { *(int *)arg = 1; }

static void settle_ms(int ms)
{
    uint64_t end = clock_mono_ms() + (uint64_t)ms;
    while (clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
}

/* Side segments (recovery replay) joined to the log are replicated closed,
 * and rm_when_durable fires once they and the new head are on R backups. */
static void test_side_segments(void)
{
    cluster_up(0, 0);
    mlog *l = om_log(master_objmgr(ms));
    replica_mgr *rm = master_replica_mgr(ms);
    outstanding = acked_ok = acked_other = 0;
    push_list(NMAIN, 1);
    for (int k = 0; k < 50; k++)
        send_write(k, 700);
    wait_acks();
    uint32_t side[2];
    uint8_t v[900];
    struct iovec iov = { v, sizeof v };
    for (int i = 0; i < 2; i++) {
        side[i] = log_side_open(l);
        CU_ASSERT_FATAL(side[i] != LOG_NO_SLOT);
        log_ref ref;
        for (int k = 0; k < 40; k++) {
            memset(v, i * 40 + k, sizeof v);
            CU_ASSERT_FATAL(log_side_append(l, side[i], SEG_ENTRY_SAFE_VERSION, &iov, 1, &ref) == 0);
        }
    }
    CU_ASSERT_FATAL(log_side_commit(l, side, 2) == 0);
    int fired = 0;
    CU_ASSERT_FATAL(rm_when_durable(rm, set_flag, &fired) == 0);
    CU_ASSERT(fired == 0);
    uint64_t end = clock_mono_ms() + 10000;
    while (!fired && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
    CU_ASSERT(fired == 1);
    for (int i = 0; i < 2; i++) {
        uint64_t ids[RM_MAX_REPLICAS];
        CU_ASSERT(rm_segment_backups(rm, side[i], ids, RM_MAX_REPLICAS) == 2);
    }
    wait_idle();
    check_all(1);
    cluster_down();
}

/* rm_replicate_side: a full side segment is replicated (closed) before it
 * joins the log; the commit keeps those replicas (no second copy, same
 * backups); a side segment given back is freed on its backups. */
static void test_side_segments_early(void)
{
    up_and_write(NMAIN, 20, 700);
    mlog *l = om_log(master_objmgr(ms));
    replica_mgr *rm = master_replica_mgr(ms);
    int held0 = held_total();
    uint32_t side[3];
    uint8_t v[900];
    struct iovec iov = { v, sizeof v };
    for (int i = 0; i < 3; i++) {
        side[i] = log_side_open(l);
        CU_ASSERT_FATAL(side[i] != LOG_NO_SLOT);
        log_ref ref;
        for (int k = 0; k < 40; k++) {
            memset(v, i * 40 + k, sizeof v);
            CU_ASSERT_FATAL(log_side_append(l, side[i], SEG_ENTRY_SAFE_VERSION, &iov, 1, &ref) == 0);
        }
    }
    CU_ASSERT(rm_replicate_side(rm, log_head_slot(l)) == -1);     /* not a side segment */
    CU_ASSERT_FATAL(rm_replicate_side(rm, side[0]) == 0);
    CU_ASSERT_FATAL(rm_replicate_side(rm, side[1]) == 0);
    CU_ASSERT(rm_replicate_side(rm, side[1]) == 0);                /* again: no change */
    CU_ASSERT_FATAL(rm_replicate_side(rm, side[2]) == 0);
    wait_idle();                    /* closed on 2 backups each, before any commit */
    uint64_t before[3][RM_MAX_REPLICAS];
    for (int i = 0; i < 3; i++) {
        CU_ASSERT(rm_segment_done(rm, side[i]));
        CU_ASSERT(rm_segment_backups(rm, side[i], before[i], RM_MAX_REPLICAS) == 2);
    }
    CU_ASSERT_EQUAL(held_total(), held0 + 6);
    /* the third is given back (a dropped replay): freed on its backups */
    rm_free_segment(rm, side[2]);
    log_side_abort(l, side[2]);
    CU_ASSERT_FATAL(log_side_commit(l, side, 2) == 0);
    int fired = 0;
    CU_ASSERT_FATAL(rm_when_durable(rm, set_flag, &fired) == 0);
    uint64_t end = clock_mono_ms() + 10000;
    while (!fired && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
    CU_ASSERT(fired == 1);
    wait_idle();
    for (int i = 0; i < 2; i++) {
        uint64_t ids[RM_MAX_REPLICAS];
        CU_ASSERT(rm_segment_backups(rm, side[i], ids, RM_MAX_REPLICAS) == 2);
        CU_ASSERT(memcmp(ids, before[i], 2 * sizeof ids[0]) == 0);   /* kept, not moved */
    }
    settle_ms(300);                 /* the FREE of the third reaches its backups */
    /* the two joined ones + the new head (the old head's replicas stay) */
    CU_ASSERT_EQUAL(held_total(), held0 + 4 + 2);
    check_all(1);
    cluster_down();
}

/* rm_detach_segment / rm_free_detached: the slot is reused while the old
 * segment's replicas stay on their backups; freeing the detached replicas
 * later frees those and nothing of the slot's new segment. */
static void test_detach(void)
{
    up_and_write(NMAIN, 20, 700);
    mlog *l = om_log(master_objmgr(ms));
    replica_mgr *rm = master_replica_mgr(ms);
    int held0 = held_total();
    uint8_t v[900];
    struct iovec iov = { v, sizeof v };
    log_ref ref;
    uint32_t side = log_side_open(l);
    CU_ASSERT_FATAL(side != LOG_NO_SLOT);
    memset(v, 1, sizeof v);
    CU_ASSERT_FATAL(log_side_append(l, side, SEG_ENTRY_SAFE_VERSION, &iov, 1, &ref) == 0);
    CU_ASSERT_FATAL(rm_replicate_side(rm, side) == 0);
    wait_idle();
    uint64_t old_id = log_segment(l, side)->id;
    uint64_t ids[RM_MAX_REPLICAS];
    CU_ASSERT_FATAL(rm_segment_backups(rm, side, ids, RM_MAX_REPLICAS) == 2);
    CU_ASSERT_EQUAL(held_total(), held0 + 2);

    struct rm_detached d;
    rm_detach_segment(rm, side, &d);
    CU_ASSERT_EQUAL(d.id, old_id);
    int nb = 0;
    for (int i = 0; i < RM_MAX_REPLICAS; i++)
        nb += d.b[i] >= 0;
    CU_ASSERT_EQUAL(nb, 2);
    CU_ASSERT(!rm_segment_done(rm, side));
    CU_ASSERT_EQUAL(rm_segment_backups(rm, side, ids, RM_MAX_REPLICAS), 0);
    /* its memory goes and the slot takes a new segment at once */
    log_side_abort(l, side);
    uint32_t side2 = log_side_open(l);
    CU_ASSERT_FATAL(side2 == side);
    memset(v, 2, sizeof v);
    CU_ASSERT_FATAL(log_side_append(l, side2, SEG_ENTRY_SAFE_VERSION, &iov, 1, &ref) == 0);
    CU_ASSERT_FATAL(rm_replicate_side(rm, side2) == 0);
    wait_idle();
    CU_ASSERT(rm_segment_done(rm, side2));
    CU_ASSERT_EQUAL(held_total(), held0 + 4);       /* old replicas still held */

    rm_free_detached(rm, &d);
    settle_ms(300);                                 /* the FREEs reach the backups */
    CU_ASSERT_EQUAL(held_total(), held0 + 2);
    CU_ASSERT(rm_segment_done(rm, side2));
    CU_ASSERT_EQUAL(rm_segment_backups(rm, side2, ids, RM_MAX_REPLICAS), 2);
    struct rm_detached none;
    rm_detach_segment(rm, log_nsegments(l) - 1, &none);    /* never used: nothing */
    CU_ASSERT_EQUAL(none.id, 0);
    rm_free_detached(rm, &none);
    rm_free_segment(rm, side2);
    log_side_abort(l, side2);
    settle_ms(100);
    CU_ASSERT_EQUAL(held_total(), held0);
    check_all(1);
    cluster_down();
}

/* Combined cleaning with replicas: the cleaned segments' memory is free at
 * the commit, before the survivors are durable, and no head is opened for
 * the pass: the cleaned segments' replicas all stay (the durable digest
 * still lists them) until a later head -- here the cleaner's own, as no
 * write comes -- is durable; then they are gone from the backups and every
 * segment in the log has its two replicas (none lost, none leaked); the
 * freed slots are reused by later writes. */
static void test_clean_frees_early(void)
{
    cleaner_off = 1;
    cluster_up(0, 0);
    cleaner_off = 0;
    objmgr *om = master_objmgr(ms);
    mlog *l = om_log(om);
    replica_mgr *rm = master_replica_mgr(ms);
    outstanding = acked_ok = acked_other = 0;
    push_list(NMAIN, 1);
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < 200; k++)
            send_write(k, 700);
        wait_acks();
    }
    CU_ASSERT_EQUAL(acked_ok, 600);
    wait_idle();
    CU_ASSERT_EQUAL_FATAL(log_roll(l), 0);
    wait_idle();
    int nseg0 = check_all(1);
    CU_ASSERT_EQUAL(held_total(), 2 * nseg0);
    struct log_stats ls0;
    log_get_stats(l, &ls0);

    char err[256];
    struct lc_config cfg = { .eager = true, .combined_only = true };
    lc_cleaner *c = lc_create(loop, l, om_hashtable(om), rm, &cfg, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    uint64_t head0 = log_segment(l, log_head_slot(l))->id;
    lc_kick(c);
    /* one loop turn at a time until the first pass is committed */
    struct lc_stats st = { 0 };
    uint64_t end = clock_mono_ms() + 10000;
    while (st.segments_cleaned == 0 && clock_mono_ms() < end) {
        tp_loop_poll(loop, 1);
        lc_get_stats(c, &st);
    }
    CU_ASSERT_FATAL(st.segments_cleaned > 0);
    CU_ASSERT(lc_busy(c));                          /* the survivors are not durable */
    uint32_t undone = 0, cleaned_left = 0;
    for (uint32_t i = 0; i < log_nsegments(l); i++) {
        const struct log_segment *s = log_segment(l, i);
        if (s->state == LOG_SEG_CLOSED && !rm_segment_done(rm, i))
            undone++;
        cleaned_left += s->state == LOG_SEG_CLEANED;
    }
    CU_ASSERT(undone > 0);
    CU_ASSERT_EQUAL(cleaned_left, 0);               /* their memory went at the commit */
    struct log_stats ls1;
    log_get_stats(l, &ls1);
    CU_ASSERT(ls1.charged_bytes < ls0.charged_bytes);
    CU_ASSERT_EQUAL(log_segment(l, log_head_slot(l))->id, head0);    /* no head of its own */
    CU_ASSERT(held_total() >= 2 * nseg0);           /* nothing freed yet */

    end = clock_mono_ms() + 20000;
    while ((lc_busy(c) || !rm_idle(rm)) && clock_mono_ms() < end)
        tp_loop_poll(loop, 5);
    CU_ASSERT(!lc_busy(c));
    lc_get_stats(c, &st);
    CU_ASSERT(st.segments_cleaned > st.survivors);
    CU_ASSERT(log_segment(l, log_head_slot(l))->id > head0);    /* opened for the waits */
    lc_destroy(c);                                  /* no more passes during the checks */
    settle_ms(300);                                 /* the FREEs reach the backups */
    int nseg1 = check_all(1);
    CU_ASSERT(nseg1 < nseg0);
    CU_ASSERT_EQUAL(held_total(), 2 * nseg1);
    /* later writes take the freed slots; all replicated, all readable */
    for (int k = 0; k < 200; k++)
        send_write(k, 700);
    wait_acks();
    CU_ASSERT_EQUAL(acked_ok, 800);
    CU_ASSERT_EQUAL(acked_other, 0);
    wait_idle();
    int nseg2 = check_all(1);
    settle_ms(100);
    CU_ASSERT_EQUAL(held_total(), 2 * nseg2);
    cluster_down();
}

/* log_head_set_epoch: header rewritten, entry crc and certificate valid. */
static void test_head_epoch(void)
{
    struct log_config lc = { .memory_bytes = 4 * SEGMENT, .segment_bytes = SEGMENT, .master_id = 9 };
    char err[128];
    mlog *l = log_create(&lc, err, sizeof err);
    CU_ASSERT_FATAL(l != NULL);
    uint8_t v[300];
    memset(v, 7, sizeof v);
    struct iovec iov = { v, sizeof v };
    log_ref ref;
    for (int i = 0; i < 20; i++)
        CU_ASSERT_FATAL(log_append(l, SEG_ENTRY_SAFE_VERSION, &iov, 1, &ref) == 0);
    uint32_t h = log_head_slot(l);
    struct seg_certificate before = log_segment_certificate(l, h);
    log_head_set_epoch(l, 5);
    struct seg_certificate c = log_segment_certificate(l, h);
    CU_ASSERT(c.length == before.length);
    CU_ASSERT(c.crc32c != before.crc32c);
    CU_ASSERT(seg_verify(log_segment_base(l, h), c.length, &c));
    struct seg_header_body hb;
    memcpy(&hb, log_segment_base(l, h) + sizeof(struct seg_entry_hdr), sizeof hb);
    CU_ASSERT(hb.epoch == 5);
    CU_ASSERT(log_segment(l, h)->epoch == 5);
    /* appends continue the certificate correctly; new segments carry it */
    CU_ASSERT_FATAL(log_append(l, SEG_ENTRY_SAFE_VERSION, &iov, 1, &ref) == 0);
    c = log_segment_certificate(l, h);
    CU_ASSERT(seg_verify(log_segment_base(l, h), c.length, &c));
    CU_ASSERT(log_roll(l) == 0);
    CU_ASSERT(log_segment(l, log_head_slot(l))->epoch == 5);
    log_destroy(l);
}

static void test_e2e_buffered(void) { run_e2e(0); }
static void test_e2e_sync(void) { run_e2e(1); }

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite p = CU_add_suite("replica_mgr_placement", NULL, NULL);
    CU_add_test(p, "never self or a holder", test_never_self_or_holder);
    CU_add_test(p, "failure domains", test_failure_domains);
    CU_add_test(p, "least loaded, avoided last", test_least_loaded);
    CU_pSuite e = CU_add_suite("replica_mgr_e2e", NULL, NULL);
    CU_add_test(e, "R=2 buffered: retry, replicas equal, backup crash", test_e2e_buffered);
    CU_add_test(e, "R=2 sync: retry, replicas equal, backup crash", test_e2e_sync);
    CU_add_test(e, "backup full: replicas move elsewhere", test_backup_full);
    CU_add_test(e, "every backup full: RETRY, nothing lost, a new backup unblocks",
                test_all_backups_full);
    CU_add_test(e, "second head loss: epoch raised in place", test_double_loss);
    CU_add_test(e, "side segments replicated, rm_when_durable", test_side_segments);
    CU_add_test(e, "side segments replicated before the commit (recovery)", test_side_segments_early);
    CU_add_test(e, "detached replicas freed later, the slot reused at once", test_detach);
    CU_add_test(e, "combined cleaning frees memory before its survivors are durable",
                test_clean_frees_early);
    CU_add_test(e, "random backup crashes and joins under load", test_stress_crashes);
    CU_add_test(p, "head epoch rewritten in place", test_head_epoch);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
