/*
 * coordinator.c -- the coordinator service; see coordinator.h for the thread
 * split.  Multi-step changes follow the intent protocol:
 *   create table: [intent + ids] -> TAKE_TABLET to each owner -> [table record - intent]
 *   drop table:   [intent - table record] -> DROP_TABLET to each owner -> [- intent]
 * ([...] is one fenced ZooKeeper multi).  A coordinator that starts finishes
 * every intent it finds, then re-sends TAKE_TABLET for every tablet so the
 * masters' ownership matches ZooKeeper (TAKE_TABLET is idempotent).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zookeeper/zookeeper.h>

#include "cram.pb-c.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/wire.h"
#include "transport/transport.h"
#include "coordinator/coord_util.h"
#include "coordinator/coordinator.h"
#include "coordinator/election.h"
#include "coordinator/fault.h"
#include "coordinator/recovery.h"
#include "coordinator/zkstore.h"
#include "server/failure_detector.h"    /* the verification rule, fdet_verify_* */

#define COORD_ZK_CONNECT_MS   10000
#define COORD_MASTER_RPC_MS   5000
#define COORD_MAX_SERVERS     65536
#define COORD_MAX_QUEUED      100000  /* queued requests before new ones get CRAM_RETRY */
#define COORD_PUSH_MS         2000    /* per SERVER_LIST_UPDATE */
#define COORD_RESYNC_MS       200     /* a server whose update failed gets the full list after this */
#define COORD_DECLARE_RETRY_MS 500    /* a crash declaration whose ZooKeeper write failed */
#define COORD_RECOVERY_RETRY_MS  1000  /* default: a waiting recovery gathers replicas again */
#define COORD_RECOVERY_RESEND_MS 200   /* a partition whose RECOVER failed goes out again */
#define COORD_STATS_MS           1000  /* default: GET_SERVER_STATS of every master (their "wills") */
#define COORD_RECENT_RECOVERIES  16    /* finished recoveries kept for GET_RECOVERY_STATUS */

/* One queued request, built by the dispatch thread, consumed by the worker. */
struct coord_job {
    struct coord_job *next;
    uint16_t opcode;
    tp_rpc *rpc;                    /* replied to via post_reply */
    ProtobufCMessage *msg;          /* unpacked request body or NULL; the worker frees it */
};

struct coord_verify;

/* A server as the worker knows it (worker thread only). */
struct coord_srv {
    Cram__ServerEntry *e;           /* unpacked (protobuf-c owned) */
    tp_session *sess;               /* on the worker's loop; NULL until needed */
    uint64_t synced;                /* list version it holds, as far as we know; 0 = send it the full list */
    bool need_full;                 /* an update failed: the full list goes at resync_at_ms */
    uint64_t resync_at_ms;
    struct coord_verify *v;         /* failure verification in progress, or NULL */
    /* Its "will": the tablet sizes of its last GET_SERVER_STATS (kept after
     * a crash to partition its tablets). */
    struct rcv_stat *will;
    size_t n_will;
    bool stats_busy;                /* a GET_SERVER_STATS is in flight */
    uint64_t stats_at_ms;           /* next poll */
    uint64_t crashed_at_ms;         /* wall clock of the declaration (this coordinator) */
    /* This coordinator knows that the process at its locator is this
     * server: it enlisted here, or answered a PING naming its id.  Until
     * then (after a restart: a newcomer may listen at a dead server's
     * address) it gets no TAKE_TABLET and no partition to recover. */
    bool confirmed;
};

struct coord_recovery;

/* A server whose verification failed, to be declared crashed at the worker's
 * top level (ZooKeeper writes never run inside loop callbacks). */
struct coord_declare {
    uint64_t id;
    const char *why;                /* static text: the suspicion */
    const char *evidence;           /* static text: what the probes showed */
    uint32_t tries;
    uint64_t elapsed_ms;
};

struct coord {
    struct coord_config cfg;
    char cluster[COORD_MAX_NAME + 1];
    char durability[16];

    /* Dispatch thread only. */
    tp_loop *loop;
    tp_listener *listener;
    char locator[COORD_MAX_LOCATOR + 1];

    /* Set by coord_stop (any thread), read everywhere. */
    atomic_int stopping;
    volatile int stop_flag;         /* mirror of stopping for zks_claim's poll */
    atomic_int fatal;               /* the worker failed: coord_run returns -1 */
    atomic_int lost;                /* ... because leadership or the ZooKeeper session was lost */

    /* Job queue: guarded by qmu; producers = dispatch thread (which then
     * wakes wloop, where the idle worker waits), consumer = worker. */
    pthread_mutex_t qmu;
    struct coord_job *qhead, *qtail;
    size_t qlen;
    pthread_t worker;
    int worker_started;

    /* ---- Worker thread only: everything below is owned by the worker and
     * never touched by the dispatch thread. ---- */
    tp_loop *wloop;                 /* private loop for RPCs to masters */
    zks *zk;
    elect *el;                      /* this coordinator's election node */
    uint64_t tick_ms;               /* the worker loop's last turn (freeze detection) */
    bool confirm;                   /* a freeze was seen: confirm leadership before answering */
    Cram__ClusterSettings settings; /* replicas + durability (points at durability[]) */
    uint64_t next_table_id;
    uint32_t next_server_index;
    uint64_t server_list_version;
    struct fdet_verify_config vcfg; /* the cfg.verify_* with defaults, times scaled */
    struct coord_declare *declare;  /* verified dead, not yet declared */
    size_t n_declare, cap_declare;
    uint64_t declare_at_ms;         /* next attempt after a failed write */
    int closing;                    /* coord_destroy runs: loop callbacks only free */
    struct coord_srv *servers;      /* sorted by server id */
    size_t n_servers, cap_servers;
    Cram__TableRecord **tables;     /* unpacked records, in creation order */
    size_t n_tables, cap_tables;
    /* Crash recovery (see "Crash recovery" below). */
    uint64_t partition_bytes;       /* partition bounds (0 = none) */
    uint64_t partition_objects;
    uint64_t recovery_retry_ms;     /* scaled */
    uint64_t stats_interval_ms;     /* 0 = no polling */
    struct coord_recovery **recs;   /* running, in start order */
    size_t n_recs, cap_recs;
    struct coord_recovery *done[COORD_RECENT_RECOVERIES];   /* finished, oldest first */
    size_t n_done;
    bool recovery_scan_needed;      /* look for crashed masters without a recovery */
};

/* ---------------------------------------------------------------------
 * Replies (worker -> dispatch thread)
 * ------------------------------------------------------------------- */

struct coord_reply {
    tp_rpc *rpc;
    int32_t status;
    uint8_t *body;
    size_t len;
};

static void reply_now(tp_rpc *rpc, int32_t status, const uint8_t *body, size_t len)
{
    struct wire_resp_hdr h = { .status = status };
    struct iovec iov[2] = {
        { .iov_base = &h, .iov_len = sizeof(h) },
        { .iov_base = (void *)body, .iov_len = len },
    };
    tp_rpc_reply(rpc, iov, body && len ? 2 : 1);
}

static void reply_on_loop(void *arg)
{
    struct coord_reply *r = arg;
    reply_now(r->rpc, r->status, r->body, r->len);
    free(r->body);
    free(r);
}

/* Worker side: hand the reply to the dispatch thread.  Takes ownership of body. */
static void post_reply(coord *c, tp_rpc *rpc, int32_t status, uint8_t *body, size_t len)
{
    struct coord_reply *r = malloc(sizeof(*r));
    if (r == NULL) {
        CRAM_ERROR("out of memory: dropping a reply");
        free(body);
        return;
    }
    *r = (struct coord_reply){ rpc, status, body, len };
    if (tp_loop_post(c->loop, reply_on_loop, r) != 0) {
        CRAM_ERROR("tp_loop_post failed: dropping a reply");
        free(body);
        free(r);
    }
}

/* Pack a protobuf message into a malloc'ed buffer and post it with status OK. */
static void post_msg(coord *c, tp_rpc *rpc, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        post_reply(c, rpc, CRAM_NO_MEMORY, NULL, 0);
        return;
    }
    protobuf_c_message_pack(m, buf);
    post_reply(c, rpc, CRAM_OK, buf, len);
}

/* ---------------------------------------------------------------------
 * Worker state helpers
 * ------------------------------------------------------------------- */

static struct coord_srv *find_server(coord *c, uint64_t id)
{
    for (size_t i = 0; i < c->n_servers; i++)
        if (c->servers[i].e->server_id == id)
            return &c->servers[i];
    return NULL;
}

static int add_server(coord *c, Cram__ServerEntry *e)
{
    if (c->n_servers == c->cap_servers) {
        size_t cap = c->cap_servers ? c->cap_servers * 2 : 16;
        struct coord_srv *n = realloc(c->servers, cap * sizeof(*n));
        if (n == NULL)
            return -1;
        c->servers = n;
        c->cap_servers = cap;
    }
    size_t i = c->n_servers;
    while (i > 0 && c->servers[i - 1].e->server_id > e->server_id) {
        c->servers[i] = c->servers[i - 1];
        i--;
    }
    c->servers[i] = (struct coord_srv){ .e = e };
    c->n_servers++;
    return 0;
}

static ssize_t find_table_name(coord *c, const char *name)
{
    for (size_t i = 0; i < c->n_tables; i++)
        if (strcmp(c->tables[i]->name, name) == 0)
            return (ssize_t)i;
    return -1;
}

static ssize_t find_table_id(coord *c, uint64_t id)
{
    for (size_t i = 0; i < c->n_tables; i++)
        if (c->tables[i]->table_id == id)
            return (ssize_t)i;
    return -1;
}

static int add_table(coord *c, Cram__TableRecord *t)
{
    if (c->n_tables == c->cap_tables) {
        size_t cap = c->cap_tables ? c->cap_tables * 2 : 16;
        Cram__TableRecord **n = realloc(c->tables, cap * sizeof(*n));
        if (n == NULL)
            return -1;
        c->tables = n;
        c->cap_tables = cap;
    }
    c->tables[c->n_tables++] = t;
    return 0;
}

/* Remove table i from the list and return it (caller frees). */
static Cram__TableRecord *take_table(coord *c, size_t i)
{
    Cram__TableRecord *t = c->tables[i];
    memmove(&c->tables[i], &c->tables[i + 1], (c->n_tables - i - 1) * sizeof(c->tables[0]));
    c->n_tables--;
    return t;
}

/* Deep copy of a protobuf message by packing and unpacking it: everything the
 * worker keeps is "unpacked" and freed with protobuf_c_message_free_unpacked. */
static ProtobufCMessage *pb_clone(const ProtobufCMessage *m, uint8_t **packed, size_t *plen)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return NULL;
    protobuf_c_message_pack(m, buf);
    ProtobufCMessage *copy = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
    if (packed != NULL && copy != NULL) {
        *packed = buf;
        *plen = len;
    } else {
        free(buf);
    }
    return copy;
}

static void ids_pack(coord *c, uint64_t next_table, uint32_t next_index, uint64_t slv,
                     uint8_t *buf, size_t cap, size_t *len)
{
    (void)c;
    Cram__IdCounters ids = CRAM__ID_COUNTERS__INIT;
    ids.next_table_id = next_table;
    ids.next_server_index = next_index;
    ids.server_list_version = slv;
    *len = cram__id_counters__get_packed_size(&ids);
    CRAM_ASSERT(*len <= cap);
    cram__id_counters__pack(&ids, buf);
}

/* A failed fenced write: ZKS_FENCED or an expired session ends this
 * coordinator (another one leads now); other errors are transient. */
static int32_t zk_failure(coord *c, int rc, const char *what)
{
    if (rc == ZKS_FENCED || zks_expired(c->zk) || rc == ZSESSIONEXPIRED || rc == ZINVALIDSTATE) {
        CRAM_ERROR("%s: lost leadership (%s); stopping", what,
                   rc == ZKS_FENCED ? "fenced" : zerror(rc));
        atomic_store(&c->lost, 1);
        atomic_store(&c->fatal, 1);
        coord_stop(c);
        return CRAM_RETRY;
    }
    CRAM_WARN("%s: ZooKeeper error %s", what, zerror(rc));
    return CRAM_RETRY;
}

/* ---------------------------------------------------------------------
 * RPCs to masters (worker thread, on c->wloop)
 * ------------------------------------------------------------------- */

static tp_session *server_session(coord *c, struct coord_srv *s)
{
    if (s->sess != NULL && tp_session_alive(s->sess))
        return s->sess;
    if (s->sess != NULL) {
        tp_session_close(s->sess);
        s->sess = NULL;
    }
    for (size_t i = 0; i < s->e->n_locators; i++) {
        cram_status st;
        s->sess = tp_session_open(c->wloop, s->e->locators[i], &st);
        if (s->sess != NULL)
            return s->sess;
    }
    return NULL;
}

struct fan {
    int pending;
    int failed;
};
struct fan_item {
    struct fan *f;
    uint64_t server_id;
    uint64_t table_id;
};

static void fan_cb(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct fan_item *it = arg;
    int32_t status = st;
    if (st == CRAM_OK) {
        struct wire_resp_hdr h;
        if (len < sizeof(h)) {
            status = CRAM_REQUEST_FORMAT_ERROR;
        } else {
            memcpy(&h, resp, sizeof(h));
            status = h.status;
        }
    }
    if (status != CRAM_OK) {
        CRAM_WARN("tablet RPC for table %lu to server %lu failed: %s",
                  (unsigned long)it->table_id, (unsigned long)it->server_id,
                  cram_strerror((cram_status)status));
        it->f->failed++;
    }
    it->f->pending--;
    free(it);
}

/* Start one tablet RPC (opcode) to the tablet's owner; counted in f. */
static void send_one_tablet(coord *c, struct fan *f, uint16_t opcode, Cram__Tablet *tb)
{
    struct coord_srv *s = find_server(c, tb->server_id);
    if (s != NULL && (s->e->status != CRAM__SERVER_STATUS__SERVER_UP || !s->confirmed))
        return;         /* crashed (its tablets are recovered), or maybe not at its locator any more */
    tp_session *sess = s ? server_session(c, s) : NULL;
    if (sess == NULL) {
        CRAM_WARN("no session to server %lu for table %lu", (unsigned long)tb->server_id,
                  (unsigned long)tb->table_id);
        f->failed++;
        return;
    }
    Cram__TabletOwnership own = CRAM__TABLET_OWNERSHIP__INIT;
    own.tablet = tb;
    uint8_t buf[256];
    size_t len = cram__tablet_ownership__get_packed_size(&own);
    CRAM_ASSERT(len <= sizeof(buf));
    cram__tablet_ownership__pack(&own, buf);
    struct wire_req_hdr h = { .opcode = opcode, .service = WIRE_SVC_MASTER, .flags = 0 };
    struct iovec iov[2] = { { &h, sizeof(h) }, { buf, len } };
    struct fan_item *it = malloc(sizeof(*it));
    if (it == NULL) {
        f->failed++;
        return;
    }
    *it = (struct fan_item){ f, tb->server_id, tb->table_id };
    cram_status st = tp_send(sess, iov, 2, (uint32_t)clock_test_scaled_ms(COORD_MASTER_RPC_MS), fan_cb, it);
    if (st != CRAM_OK) {
        free(it);
        f->failed++;
        return;
    }
    f->pending++;
}

/* Send opcode (TAKE_TABLET/DROP_TABLET) for every tablet of the n tables to
 * its owner, all in parallel, and wait for all answers.  Returns the number
 * that failed. */
static int send_tablets_many(coord *c, uint16_t opcode, Cram__TableRecord *const *tables, size_t n)
{
    struct fan f = { 0, 0 };
    for (size_t k = 0; k < n; k++)
        for (size_t i = 0; i < tables[k]->n_tablets; i++)
            send_one_tablet(c, &f, opcode, tables[k]->tablets[i]);
    while (f.pending > 0)
        tp_loop_poll(c->wloop, 100);
    return f.failed;
}

static int send_tablets(coord *c, uint16_t opcode, const Cram__TableRecord *t)
{
    Cram__TableRecord *one = (Cram__TableRecord *)t;
    return send_tablets_many(c, opcode, &one, 1);
}

/* ---------------------------------------------------------------------
 * Server list pushes and failure verification (worker thread, c->wloop)
 *
 * Callbacks of RPCs and timers on wloop may run inside any poll of it --
 * also the nested polls of send_tablets_many, and inside tp_session_close --
 * so they never write to ZooKeeper, never resize c->servers (they look
 * servers up by id) and never close sessions: they set per-server state, and
 * the worker's top level (coord_maintain) does the rest.
 * ------------------------------------------------------------------- */

/* One verification: targeted PINGs, one at a time, judged by the rule of
 * fdet_verify_step (server/failure_detector.h): a server whose connection
 * is refused or reset vcfg.gone_tries times in a row (vcfg.gone_interval_ms
 * apart) is declared at once; one that is connected but does not answer
 * (each probe waits vcfg.probe_timeout_ms) only after vcfg.silent_ms. */
struct coord_verify {
    coord *c;
    uint64_t id;
    const char *why;                /* static text */
    struct fdet_verify st;          /* probes' outcomes so far */
    uint64_t timer;                 /* next probe's timer, or 0 */
};

/* The status of a response (or the transport's, if there was none). */
static int32_t resp_status(cram_status st, const uint8_t *resp, uint32_t len)
{
    if (st != CRAM_OK)
        return st;
    struct wire_resp_hdr h;
    if (len < sizeof(h))
        return CRAM_REQUEST_FORMAT_ERROR;
    memcpy(&h, resp, sizeof(h));
    return h.status;
}

static void verify_start(coord *c, struct coord_srv *s, const char *why);

static void mark_resync(coord *c, struct coord_srv *s)
{
    s->synced = 0;
    if (!s->need_full) {
        s->need_full = true;
        s->resync_at_ms = clock_mono_ms() + clock_test_scaled_ms(COORD_RESYNC_MS);
    }
    (void)c;
}

struct push_arg {
    coord *c;
    uint64_t id;
    uint64_t version;
};

static void push_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct push_arg *a = arg;
    coord *c = a->c;
    int32_t status = resp_status(st, resp, len);
    if (status != CRAM_OK && !c->closing) {
        struct coord_srv *s = find_server(c, a->id);
        if (s != NULL && s->e->status == CRAM__SERVER_STATUS__SERVER_UP) {
            /* missed (or refused: a version gap) -- it gets the whole list */
            CRAM_DEBUG("server list update %lu to server %lu failed: %s; the full list follows",
                       (unsigned long)a->version, (unsigned long)a->id, cram_strerror((cram_status)status));
            mark_resync(c, s);
        }
    }
    free(a);
}

/* Pack a SERVER_LIST_UPDATE request of the current version: the whole list
 * (with the cluster settings) when full, else the n entries of `changed`.
 * Returns a malloc'ed message or NULL (out of memory). */
static uint8_t *pack_update(coord *c, bool full, Cram__ServerEntry **changed, size_t n, size_t *len)
{
    Cram__ServerList l = CRAM__SERVER_LIST__INIT;
    Cram__ServerEntry **all = NULL;
    if (full) {
        all = calloc(c->n_servers + 1, sizeof(*all));
        if (all == NULL)
            return NULL;
        for (size_t i = 0; i < c->n_servers; i++)
            all[i] = c->servers[i].e;
        l.servers = all;
        l.n_servers = c->n_servers;
        l.settings = &c->settings;
    } else {
        l.servers = changed;
        l.n_servers = n;
    }
    l.version = c->server_list_version;
    l.full = full;
    struct wire_req_hdr h = { .opcode = WIRE_OP_SERVER_LIST_UPDATE, .service = WIRE_SVC_MASTER };
    size_t pl = cram__server_list__get_packed_size(&l);
    uint8_t *buf = malloc(sizeof(h) + pl);
    if (buf != NULL) {
        memcpy(buf, &h, sizeof(h));
        cram__server_list__pack(&l, buf + sizeof(h));
        *len = sizeof(h) + pl;
    }
    free(all);
    return buf;
}

/* Send one packed update (of the current version) to s.  A server that is
 * up and cannot be reached is verified and gets the full list later. */
static void push_one(coord *c, struct coord_srv *s, const uint8_t *msg, size_t len)
{
    bool up = s->e->status == CRAM__SERVER_STATUS__SERVER_UP;
    tp_session *sess = server_session(c, s);
    if (sess == NULL) {
        if (up) {
            mark_resync(c, s);
            verify_start(c, s, "it cannot be reached for a server list update");
        }
        return;
    }
    struct push_arg *a = malloc(sizeof(*a));
    if (a == NULL) {
        mark_resync(c, s);
        return;
    }
    *a = (struct push_arg){ c, s->e->server_id, c->server_list_version };
    struct iovec iov = { (void *)msg, len };
    cram_status st = tp_send(sess, &iov, 1, (uint32_t)clock_test_scaled_ms(COORD_PUSH_MS), push_done, a);
    if (st != CRAM_OK) {
        free(a);
        if (st == CRAM_REQUEST_TOO_LARGE)
            CRAM_ERROR("server list version %lu does not fit one message", (unsigned long)c->server_list_version);
        if (up)
            mark_resync(c, s);
        return;
    }
    s->synced = c->server_list_version;
    s->need_full = false;
}

/* The full list to one server, or (only == NULL) to every server that is up. */
static void push_full(coord *c, struct coord_srv *only)
{
    size_t len;
    uint8_t *msg = pack_update(c, true, NULL, 0, &len);
    if (msg == NULL) {
        CRAM_ERROR("out of memory packing the server list");
        return;
    }
    if (only != NULL) {
        push_one(c, only, msg, len);
    } else {
        for (size_t i = 0; i < c->n_servers; i++)
            if (c->servers[i].e->status == CRAM__SERVER_STATUS__SERVER_UP)
                push_one(c, &c->servers[i], msg, len);
    }
    free(msg);
}

/* The servers with these ids changed and the version was bumped: tell every
 * server that is up (only the changes to those in sync, the full list to the
 * others), and -- best effort -- the changed servers that are no longer up,
 * so one that still runs learns it was declared crashed and stops. */
static void push_changes(coord *c, const uint64_t *ids, size_t n)
{
    Cram__ServerEntry *changed[8];
    size_t nc = 0;
    for (size_t k = 0; k < n && nc < 8; k++) {
        struct coord_srv *s = find_server(c, ids[k]);
        if (s != NULL)
            changed[nc++] = s->e;
    }
    uint8_t *part = NULL, *full = NULL;
    size_t plen = 0, flen = 0;
    for (size_t i = 0; i < c->n_servers; i++) {
        struct coord_srv *s = &c->servers[i];
        bool is_changed = false;
        for (size_t k = 0; k < nc; k++)
            is_changed |= changed[k] == s->e;
        if (s->e->status != CRAM__SERVER_STATUS__SERVER_UP && !is_changed)
            continue;
        if (s->synced != 0 && s->synced + 1 == c->server_list_version) {
            if (part == NULL && (part = pack_update(c, false, changed, nc, &plen)) == NULL)
                break;
            push_one(c, s, part, plen);
        } else {
            if (full == NULL && (full = pack_update(c, true, NULL, 0, &flen)) == NULL)
                break;
            push_one(c, s, full, flen);
        }
    }
    free(part);
    free(full);
}

static void verify_finish(struct coord_verify *v)
{
    struct coord_srv *s = find_server(v->c, v->id);
    if (s != NULL && s->v == v)
        s->v = NULL;
    free(v);
}

static void probe_try(struct coord_verify *v);

static void probe_timer(void *arg)
{
    struct coord_verify *v = arg;
    v->timer = 0;
    probe_try(v);
}

/* Queue v's server for declaration (at the worker's top level). */
static void verify_declare(struct coord_verify *v, const char *evidence, uint64_t now)
{
    coord *c = v->c;
    if (c->n_declare == c->cap_declare) {
        size_t cap = c->cap_declare ? c->cap_declare * 2 : 8;
        struct coord_declare *d = realloc(c->declare, cap * sizeof(*d));
        if (d == NULL) {
            CRAM_ERROR("out of memory: server %lu stays up", (unsigned long)v->id);
            verify_finish(v);
            return;
        }
        c->declare = d;
        c->cap_declare = cap;
    }
    c->declare[c->n_declare++] = (struct coord_declare){ v->id, v->why, evidence, v->st.probes,
                                                         now - v->st.start_ms };
    verify_finish(v);
}

static void probe_result(struct coord_verify *v, enum fdet_probe outcome, const char *what)
{
    coord *c = v->c;
    if (c->closing) {
        verify_finish(v);
        return;
    }
    uint64_t now = clock_mono_ms();
    uint64_t next = now;
    switch (fdet_verify_step(&v->st, &c->vcfg, outcome, now, &next)) {
    case FDET_ALIVE: {
        struct coord_srv *s = find_server(c, v->id);
        if (s != NULL)
            s->confirmed = true;
        CRAM_INFO("server %lu answered probe %u after %lu ms: alive, not declared crashed (suspected: %s)",
                  (unsigned long)v->id, v->st.probes, (unsigned long)(now - v->st.start_ms), v->why);
        verify_finish(v);
        return;
    }
    case FDET_DECLARE:
        verify_declare(v, outcome == FDET_PROBE_GONE ? "refused or reset" : "connected, unanswered", now);
        return;
    case FDET_PROBE_AGAIN:
        break;
    }
    CRAM_DEBUG("probe %u of server %lu: %s (%s)", v->st.probes, (unsigned long)v->id,
               outcome == FDET_PROBE_GONE ? "gone" : "no answer", what);
    if (outcome == FDET_PROBE_SILENT && v->st.silent == 1)
        CRAM_INFO("server %lu: connected but no answer to a probe within %u ms: slow or stopped; "
                  "probing on for up to %u ms", (unsigned long)v->id, c->vcfg.probe_timeout_ms,
                  c->vcfg.silent_ms);
    v->timer = tp_timer_add(c->wloop, (next > now ? next - now : 0) * 1000u, probe_timer, v);
}

/* A probe's outcome: the answer of the server we mean, a process that is
 * gone (refused, reset, or another process at its locator), or silence. */
static enum fdet_probe probe_outcome(cram_status st, int32_t status)
{
    if (st == CRAM_TIMEOUT)
        return FDET_PROBE_SILENT;
    if (st == CRAM_OK && status == CRAM_OK)
        return FDET_PROBE_ANSWERED;
    return FDET_PROBE_GONE;
}

static void probe_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct coord_verify *v = arg;
    int32_t status = resp_status(st, resp, len);
    probe_result(v, probe_outcome(st, status), cram_strerror((cram_status)status));
}

/* server_session() tries the locators in order: a session on a later one
 * means a tcp locator before it could not be opened (refused).  A probe must
 * not fall back to a connectionless transport (xdp), where a dead process
 * would look merely silent. */
static bool probe_tcp_refused(const struct coord_srv *s, const tp_session *sess)
{
    const char *used = tp_session_locator(sess);
    for (size_t i = 0; i < s->e->n_locators; i++) {
        if (strcmp(s->e->locators[i], used) == 0)
            return false;
        if (strncmp(s->e->locators[i], "tcp:", 4) == 0)
            return true;
    }
    return false;
}

/* One probe: a PING naming the server's id (a process at its locator that
 * is not that server answers CRAM_WRONG_SERVER or CRAM_RETRY: gone). */
static void probe_try(struct coord_verify *v)
{
    coord *c = v->c;
    struct coord_srv *s = find_server(c, v->id);
    if (s == NULL || s->e->status != CRAM__SERVER_STATUS__SERVER_UP || c->closing) {
        verify_finish(v);
        return;
    }
    tp_session *sess = server_session(c, s);
    if (sess == NULL || probe_tcp_refused(s, sess)) {
        probe_result(v, FDET_PROBE_GONE, "connection refused");
        return;
    }
    struct {
        struct wire_req_hdr h;
        struct wire_target t;
    } WIRE_PACKED req = { { .opcode = WIRE_OP_PING, .service = WIRE_SVC_PING }, { v->id } };
    struct iovec iov = { &req, sizeof(req) };
    cram_status st = tp_send(sess, &iov, 1, c->vcfg.probe_timeout_ms, probe_done, v);
    if (st != CRAM_OK)
        probe_result(v, FDET_PROBE_GONE, cram_strerror(st));
}

/* Start verifying that s is alive, unless that runs already. */
static void verify_start(coord *c, struct coord_srv *s, const char *why)
{
    if (s->e->status != CRAM__SERVER_STATUS__SERVER_UP || s->v != NULL || c->closing)
        return;
    struct coord_verify *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return;
    *v = (struct coord_verify){ .c = c, .id = s->e->server_id, .why = why };
    fdet_verify_begin(&v->st, clock_mono_ms());
    s->v = v;
    CRAM_INFO("verifying server %lu: %s", (unsigned long)v->id, why);
    probe_try(v);
}

static void recovery_master_lost(coord *c, uint64_t id);

/* Write SERVER_CRASHED for d->id (fenced, with the bumped list version) and
 * push the change.  0 when done (or nothing to do), -1 to retry later. */
static int declare_crashed(coord *c, const struct coord_declare *d)
{
    struct coord_srv *s = find_server(c, d->id);
    if (s == NULL || s->e->status != CRAM__SERVER_STATUS__SERVER_UP)
        return 0;
    Cram__ServerEntry e = *s->e;
    e.status = CRAM__SERVER_STATUS__SERVER_CRASHED;
    size_t plen = cram__server_entry__get_packed_size(&e);
    uint8_t *packed = malloc(plen ? plen : 1);
    if (packed == NULL)
        return -1;
    cram__server_entry__pack(&e, packed);
    uint8_t idsbuf[64];
    size_t idslen;
    ids_pack(c, c->next_table_id, c->next_server_index, c->server_list_version + 1, idsbuf, sizeof(idsbuf), &idslen);
    char path[64];
    snprintf(path, sizeof(path), "servers/%016lx", (unsigned long)d->id);
    struct zks_op ops[2] = {
        { .kind = ZKS_SET, .path = path, .data = packed, .len = plen },
        { .kind = ZKS_SET, .path = "ids", .data = idsbuf, .len = idslen },
    };
    int rc = zks_commit(c->zk, ops, 2);
    free(packed);
    if (rc != ZOK) {
        zk_failure(c, rc, "declare server crashed");
        return -1;
    }
    s->e->status = CRAM__SERVER_STATUS__SERVER_CRASHED;
    s->crashed_at_ms = clock_wall_ms();
    c->server_list_version++;
    size_t tablets = 0;
    for (size_t t = 0; t < c->n_tables; t++)
        for (size_t i = 0; i < c->tables[t]->n_tablets; i++)
            tablets += c->tables[t]->tablets[i]->server_id == d->id;
    CRAM_INFO("server %lu declared crashed (%s; %u probes over %lu ms: %s), server list version %lu",
              (unsigned long)d->id, d->why, d->tries, (unsigned long)d->elapsed_ms, d->evidence,
              (unsigned long)c->server_list_version);
    if (tablets > 0)
        CRAM_INFO("server %lu: its %zu tablets are recovered", (unsigned long)d->id, tablets);
    push_changes(c, &d->id, 1);
    recovery_master_lost(c, d->id);
    return 0;
}

/* ---------------------------------------------------------------------
 * Crash recovery (worker thread)
 *
 * A crashed master that still owns tablets gets a recovery:
 *   [recoveries/<id>: STARTING]                    (the intent; created first)
 *   BACKUP_LIST(master id) to every up backup -> log digest check
 *     incomplete: [WAITING_LOG + note], retried every recovery_retry_ms
 *     and soon after a server enlists
 *   partition the tablets (its last TabletStats, else the replica bytes)
 *   [record: REPLAYING + partitions with their recovery masters]
 *   [tables: the crashed master's tablets -> pieces, TABLET_RECOVERING]
 *   RECOVER to each recovery master (fault point
 *     coordinator.recovery.after_assign just before)
 *   RECOVERY_MASTER_FINISHED ok: [record: partition done]
 *     [tables: its pieces -> the recovery master, NORMAL], then the answer
 *   failed / recovery master crashed / RECOVER refused: the partition goes
 *     to another master (attempts counted)
 *   all done: [- record]; kept in memory (recent_recoveries) for status.
 * A coordinator that starts loads every record and resumes it: tables are
 * rewritten from the record (idempotent), replicas gathered again, and
 * RECOVER re-sent for every partition not done.
 * Callbacks of RPCs on wloop only set flags on the recovery (looked up by
 * id); ZooKeeper writes happen at the worker's top level (recovery_step).
 * ------------------------------------------------------------------- */

struct coord_part {
    uint32_t id;
    struct rcv_range *tablets;      /* the pieces (malloc'ed) */
    size_t ntablets;
    uint64_t master;                /* recovery master, 0 = none yet */
    bool done;
    uint32_t attempts;
    uint64_t bytes, segments, replay_ms, objects;
    uint64_t est_bytes, est_objects;
    /* runtime only */
    bool need_send;                 /* RECOVER must go (again) */
    bool busy;                      /* RECOVER in flight */
    uint64_t avoid;                 /* a master that failed it */
    uint64_t not_before_ms;         /* next send after a failure */
    uint64_t sent_ms;
};

struct coord_recovery {
    uint64_t id;                    /* = crashed master id */
    uint64_t crashed;
    Cram__RecoveryPhase phase;
    uint64_t started_at_ms, detected_at_ms, finished_at_ms;
    uint64_t segments, log_bytes;
    char note[512];
    struct coord_part *parts;
    size_t nparts;
    /* runtime only */
    bool persisted;                 /* the record exists in ZooKeeper */
    bool tables_applied;            /* table records match the record (after a resume: not yet) */
    uint64_t next_try_ms;           /* next replica gathering (STARTING / WAITING_LOG) */
    uint64_t t0_ms;                 /* monotonic start (this coordinator) */
    Cram__ReplicaLocation *locs;    /* after a complete gathering */
    Cram__ReplicaLocation **locp;
    char **loc_strs;
    size_t nlocs;
    bool have_locs;
};

static void rec_free_locs(struct coord_recovery *r)
{
    for (size_t i = 0; i < r->nlocs; i++)
        free(r->loc_strs[i]);
    free(r->loc_strs);
    free(r->locs);
    free(r->locp);
    r->loc_strs = NULL;
    r->locs = NULL;
    r->locp = NULL;
    r->nlocs = 0;
    r->have_locs = false;
}

static void rec_free(struct coord_recovery *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nparts; i++)
        free(r->parts[i].tablets);
    free(r->parts);
    rec_free_locs(r);
    free(r);
}

static struct coord_recovery *find_recovery(coord *c, uint64_t id)
{
    for (size_t i = 0; i < c->n_recs; i++)
        if (c->recs[i]->id == id)
            return c->recs[i];
    return NULL;
}

static const char *phase_name(Cram__RecoveryPhase p)
{
    switch (p) {
    case CRAM__RECOVERY_PHASE__RECOVERY_STARTING: return "STARTING";
    case CRAM__RECOVERY_PHASE__RECOVERY_WAITING_LOG: return "WAITING_LOG";
    case CRAM__RECOVERY_PHASE__RECOVERY_REPLAYING: return "REPLAYING";
    case CRAM__RECOVERY_PHASE__RECOVERY_DONE: return "DONE";
    case CRAM__RECOVERY_PHASE__RECOVERY_FAILED: return "FAILED";
    default: return "?";
    }
}

static void rec_msg_free(Cram__RecoveryRecord *m);

/* The record of r as a protobuf message whose arrays are malloc'ed here;
 * free with rec_msg_free.  NULL when out of memory. */
static Cram__RecoveryRecord *rec_msg(const struct coord_recovery *r)
{
    Cram__RecoveryRecord *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    cram__recovery_record__init(m);
    m->recovery_id = r->id;
    m->crashed_master_id = r->crashed;
    m->phase = r->phase;
    m->started_at_ms = r->started_at_ms;
    m->detected_at_ms = r->detected_at_ms;
    m->finished_at_ms = r->finished_at_ms;
    m->segments = r->segments;
    m->log_bytes = r->log_bytes;
    m->note = (char *)r->note;
    m->partitions = calloc(r->nparts + 1, sizeof(*m->partitions));
    if (m->partitions == NULL) {
        free(m);
        return NULL;
    }
    for (size_t i = 0; i < r->nparts; i++) {
        const struct coord_part *p = &r->parts[i];
        Cram__PartitionStatus *ps = calloc(1, sizeof(*ps));
        Cram__Tablet *tb = calloc(p->ntablets + 1, sizeof(*tb));
        Cram__Tablet **tp = calloc(p->ntablets + 1, sizeof(*tp));
        if (ps == NULL || tb == NULL || tp == NULL) {
            free(ps);
            free(tb);
            free(tp);
            rec_msg_free(m);
            return NULL;
        }
        cram__partition_status__init(ps);
        ps->partition_id = p->id;
        ps->recovery_master_id = p->master;
        ps->done = p->done;
        ps->bytes_replayed = p->bytes;
        ps->segments_replayed = p->segments;
        ps->replay_ms = p->replay_ms;
        ps->attempts = p->attempts;
        ps->estimated_bytes = p->est_bytes;
        ps->estimated_objects = p->est_objects;
        for (size_t k = 0; k < p->ntablets; k++) {
            cram__tablet__init(&tb[k]);
            tb[k].table_id = p->tablets[k].table_id;
            tb[k].start_hash = p->tablets[k].start;
            tb[k].end_hash = p->tablets[k].end;
            tb[k].server_id = p->done ? p->master : r->crashed;
            tb[k].state = p->done ? CRAM__TABLET_STATE__TABLET_NORMAL : CRAM__TABLET_STATE__TABLET_RECOVERING;
            tp[k] = &tb[k];
        }
        ps->tablets = tp;
        ps->n_tablets = p->ntablets;
        if (p->ntablets == 0)
            free(tb);
        m->partitions[m->n_partitions++] = ps;
    }
    return m;
}

static void rec_msg_free(Cram__RecoveryRecord *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n_partitions; i++) {
        if (m->partitions[i]->n_tablets > 0)
            free(m->partitions[i]->tablets[0]);
        free(m->partitions[i]->tablets);
        free(m->partitions[i]);
    }
    free(m->partitions);
    free(m);
}

/* A recovery from its stored record (resume).  NULL if it is unusable. */
static struct coord_recovery *rec_from_msg(const Cram__RecoveryRecord *m)
{
    struct coord_recovery *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->id = m->recovery_id;
    r->crashed = m->crashed_master_id;
    r->phase = m->phase;
    r->started_at_ms = m->started_at_ms;
    r->detected_at_ms = m->detected_at_ms;
    r->finished_at_ms = m->finished_at_ms;
    r->segments = m->segments;
    r->log_bytes = m->log_bytes;
    snprintf(r->note, sizeof(r->note), "%s", m->note ? m->note : "");
    r->parts = calloc(m->n_partitions + 1, sizeof(*r->parts));
    if (r->parts == NULL)
        goto out_bad;
    for (size_t i = 0; i < m->n_partitions; i++) {
        const Cram__PartitionStatus *ps = m->partitions[i];
        struct coord_part *p = &r->parts[r->nparts++];
        p->id = ps->partition_id;
        p->master = ps->recovery_master_id;
        p->done = ps->done;
        p->bytes = ps->bytes_replayed;
        p->segments = ps->segments_replayed;
        p->replay_ms = ps->replay_ms;
        p->attempts = ps->attempts;
        p->est_bytes = ps->estimated_bytes;
        p->est_objects = ps->estimated_objects;
        p->tablets = calloc(ps->n_tablets + 1, sizeof(*p->tablets));
        if (p->tablets == NULL)
            goto out_bad;
        for (size_t k = 0; k < ps->n_tablets; k++) {
            const Cram__Tablet *t = ps->tablets[k];
            if (t->start_hash > t->end_hash)
                goto out_bad;
            p->tablets[p->ntablets++] = (struct rcv_range){ t->table_id, t->start_hash, t->end_hash };
        }
        p->need_send = !p->done;
    }
    r->persisted = true;
    r->t0_ms = clock_mono_ms();
    return r;

out_bad:
    rec_free(r);
    return NULL;
}

/* Write r's record (create or set) or, with remove, delete it; fenced. */
static int rec_write(coord *c, struct coord_recovery *r, bool remove)
{
    char path[64];
    snprintf(path, sizeof(path), "recoveries/%016lx", (unsigned long)r->id);
    if (remove) {
        struct zks_op op = { .kind = ZKS_DELETE, .path = path };
        int rc = zks_commit(c->zk, &op, 1);
        if (rc == ZNONODE)
            rc = ZOK;
        if (rc != ZOK)
            zk_failure(c, rc, "remove recovery record");
        return rc == ZOK ? 0 : -1;
    }
    Cram__RecoveryRecord *m = rec_msg(r);
    if (m == NULL)
        return -1;
    size_t len = cram__recovery_record__get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        rec_msg_free(m);
        return -1;
    }
    cram__recovery_record__pack(m, buf);
    rec_msg_free(m);
    struct zks_op op = { .kind = r->persisted ? ZKS_SET : ZKS_CREATE, .path = path, .data = buf, .len = len };
    int rc = zks_commit(c->zk, &op, 1);
    if (rc == ZNODEEXISTS || rc == ZNONODE) {     /* our idea of its existence was wrong */
        op.kind = rc == ZNODEEXISTS ? ZKS_SET : ZKS_CREATE;
        rc = zks_commit(c->zk, &op, 1);
    }
    free(buf);
    if (rc != ZOK) {
        zk_failure(c, rc, "write recovery record");
        return -1;
    }
    r->persisted = true;
    return 0;
}

/* Rewrite the table records so that every tablet still owned by the crashed
 * master is replaced by the recovery's pieces inside it: owned by their
 * recovery master (NORMAL) once their partition is done, else by the crashed
 * master (RECOVERING).  Idempotent.  0, or -1 (ZooKeeper failed; retried). */
static int apply_tablets(coord *c, struct coord_recovery *r)
{
    struct zks_op ops[ZKS_MAX_OPS];
    uint8_t *bufs[ZKS_MAX_OPS];
    char paths[ZKS_MAX_OPS][COORD_MAX_NAME + 16];
    Cram__TableRecord *copies[ZKS_MAX_OPS];
    size_t idx[ZKS_MAX_OPS];
    int nops = 0, rc = 0;
    for (size_t ti = 0; ti <= c->n_tables && rc == 0; ti++) {
        if (ti < c->n_tables) {
            const Cram__TableRecord *t = c->tables[ti];
            bool touched = false;
            for (size_t i = 0; i < t->n_tablets; i++)
                touched |= t->tablets[i]->server_id == r->crashed;
            if (touched) {
                /* the new tablet list */
                size_t cap = t->n_tablets;
                for (size_t p = 0; p < r->nparts; p++)
                    cap += r->parts[p].ntablets;
                Cram__Tablet *tb = calloc(cap + 1, sizeof(*tb));
                Cram__Tablet **tp = calloc(cap + 1, sizeof(*tp));
                size_t n = 0;
                if (tb == NULL || tp == NULL) {
                    free(tb);
                    free(tp);
                    rc = -1;
                    break;
                }
                for (size_t i = 0; i < t->n_tablets; i++) {
                    const Cram__Tablet *old = t->tablets[i];
                    size_t first = n;
                    uint64_t covered = 0;         /* pieces found inside; checked to tile it */
                    if (old->server_id == r->crashed) {
                        for (size_t p = 0; p < r->nparts; p++) {
                            const struct coord_part *pp = &r->parts[p];
                            for (size_t k = 0; k < pp->ntablets; k++) {
                                const struct rcv_range *pc = &pp->tablets[k];
                                if (pc->table_id != t->table_id || pc->start < old->start_hash ||
                                    pc->end > old->end_hash)
                                    continue;
                                cram__tablet__init(&tb[n]);
                                tb[n].table_id = t->table_id;
                                tb[n].start_hash = pc->start;
                                tb[n].end_hash = pc->end;
                                tb[n].server_id = pp->done ? pp->master : r->crashed;
                                tb[n].state = pp->done ? CRAM__TABLET_STATE__TABLET_NORMAL
                                                       : CRAM__TABLET_STATE__TABLET_RECOVERING;
                                covered += pc->end - pc->start + 1;
                                n++;
                            }
                        }
                        if (n > first && covered != old->end_hash - old->start_hash + 1) {
                            CRAM_ERROR("recovery %lu: pieces do not tile tablet [%016lx-%016lx] of table %lu; "
                                       "left as is", (unsigned long)r->id, (unsigned long)old->start_hash,
                                       (unsigned long)old->end_hash, (unsigned long)t->table_id);
                            n = first;
                        }
                    }
                    if (n == first) {
                        tb[n] = *old;
                        if (old->server_id == r->crashed)
                            tb[n].state = CRAM__TABLET_STATE__TABLET_RECOVERING;
                        n++;
                    }
                }
                for (size_t i = 0; i < n; i++)
                    tp[i] = &tb[i];
                Cram__TableRecord rec = *t;
                rec.n_tablets = n;
                rec.tablets = tp;
                uint8_t *packed = NULL;
                size_t plen = 0;
                Cram__TableRecord *copy = (Cram__TableRecord *)pb_clone(&rec.base, &packed, &plen);
                free(tb);
                free(tp);
                if (copy == NULL) {
                    rc = -1;
                    break;
                }
                snprintf(paths[nops], sizeof(paths[nops]), "tables/%s", t->name);
                ops[nops] = (struct zks_op){ .kind = ZKS_SET, .path = paths[nops], .data = packed, .len = plen };
                bufs[nops] = packed;
                copies[nops] = copy;
                idx[nops] = ti;
                nops++;
            }
        }
        /* flush a full batch, and the rest at the end */
        if (nops > 0 && (nops == ZKS_MAX_OPS || ti == c->n_tables)) {
            int zrc = zks_commit(c->zk, ops, nops);
            for (int k = 0; k < nops; k++) {
                free(bufs[k]);
                if (zrc == ZOK) {
                    cram__table_record__free_unpacked(c->tables[idx[k]], NULL);
                    c->tables[idx[k]] = copies[k];
                } else {
                    cram__table_record__free_unpacked(copies[k], NULL);
                }
            }
            nops = 0;
            if (zrc != ZOK) {
                zk_failure(c, zrc, "recovery: update table records");
                rc = -1;
            }
        }
    }
    for (int k = 0; k < nops; k++) {          /* left over after an error */
        free(bufs[k]);
        cram__table_record__free_unpacked(copies[k], NULL);
    }
    if (rc == 0)
        r->tables_applied = true;
    return rc;
}

/* ---- replica gathering ---- */

struct gather {
    coord *c;
    uint64_t master;
    int pending;
    int asked;
    int answered;
    Cram__ReplicaList **lists;      /* unpacked answers */
    size_t nlists;
};
struct gather_item {
    struct gather *g;
    uint64_t backup_id;
};

static void gather_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct gather_item *it = arg;
    struct gather *g = it->g;
    int32_t status = resp_status(st, resp, len);
    if (status == CRAM_OK) {
        Cram__ReplicaList *l = cram__replica_list__unpack(NULL, len - sizeof(struct wire_resp_hdr),
                                                          resp + sizeof(struct wire_resp_hdr));
        if (l == NULL) {
            CRAM_WARN("BACKUP_LIST from server %lu: malformed answer", (unsigned long)it->backup_id);
        } else {
            l->server_id = it->backup_id;   /* trust the id we asked, not the body */
            g->lists[g->nlists++] = l;
            g->answered++;
        }
    } else {
        CRAM_DEBUG("BACKUP_LIST to server %lu failed: %s", (unsigned long)it->backup_id,
                   cram_strerror((cram_status)status));
    }
    g->pending--;
    free(it);
}

/* Ask every up backup which replicas of r->crashed it holds; wait for all
 * answers (or their timeouts).  g->lists holds the answers. */
static void gather_replicas(coord *c, struct coord_recovery *r, struct gather *g)
{
    *g = (struct gather){ .c = c, .master = r->crashed };
    g->lists = calloc(c->n_servers + 1, sizeof(*g->lists));
    if (g->lists == NULL)
        return;
    for (size_t i = 0; i < c->n_servers; i++) {
        struct coord_srv *s = &c->servers[i];
        if (s->e->status != CRAM__SERVER_STATUS__SERVER_UP || !(s->e->services & COORD_SVC_BACKUP))
            continue;
        tp_session *sess = server_session(c, s);
        struct gather_item *it = malloc(sizeof(*it));
        if (sess == NULL || it == NULL) {
            free(it);
            continue;
        }
        *it = (struct gather_item){ g, s->e->server_id };
        struct wire_backup_list_req rq = {
            .hdr = { .opcode = WIRE_OP_BACKUP_LIST, .service = WIRE_SVC_BACKUP },
            .tgt = { s->e->server_id },
            .master_id = r->crashed,
        };
        struct iovec iov = { &rq, sizeof(rq) };
        g->asked++;
        if (tp_send(sess, &iov, 1, (uint32_t)clock_test_scaled_ms(COORD_MASTER_RPC_MS), gather_done, it) != CRAM_OK) {
            free(it);
            continue;
        }
        g->pending++;
    }
    while (g->pending > 0)
        tp_loop_poll(c->wloop, 100);
}

static void gather_free(struct gather *g)
{
    for (size_t i = 0; i < g->nlists; i++)
        cram__replica_list__free_unpacked(g->lists[i], NULL);
    free(g->lists);
}

/* Gather the replicas and check the log.  Returns 1 when the log is
 * complete (r->locs, r->segments and r->log_bytes set), 0 when not (r->note
 * says why), -1 when out of memory. */
static int gather_and_check(coord *c, struct coord_recovery *r)
{
    struct gather g;
    gather_replicas(c, r, &g);
    if (g.lists == NULL)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < g.nlists; i++)
        n += g.lists[i]->n_replicas;
    struct rcv_replica *rr = calloc(n + 1, sizeof(*rr));
    int ret = -1;
    if (rr == NULL)
        goto out_free;
    n = 0;
    for (size_t i = 0; i < g.nlists; i++) {
        for (size_t k = 0; k < g.lists[i]->n_replicas; k++) {
            const Cram__ReplicaInfo *ri = g.lists[i]->replicas[k];
            if (ri->master_id != r->crashed)
                continue;
            rr[n] = (struct rcv_replica){ g.lists[i]->server_id, ri->segment_id, ri->epoch, ri->length,
                                          ri->closed, ri->has_digest, ri->log_digest, ri->n_log_digest,
                                          ri->primary };
            n++;
        }
    }
    struct coord_srv *cs = find_server(c, r->crashed);
    const Cram__MasterRecoveryInfo *info = cs ? cs->e->recovery_info : NULL;
    struct rcv_log log;
    char note[400];
    if (rcv_check_log(rr, n, info != NULL, info ? info->segment_id : 0, info ? info->epoch : 0,
                      &log, note, sizeof(note)) != 0)
        goto out_free;
    if (!log.complete) {
        snprintf(r->note, sizeof(r->note), "%s (%zu replicas from %d of %d backups asked)", note, n,
                 g.answered, g.asked);
        rcv_log_free(&log);
        ret = 0;
        goto out_free;
    }
    rec_free_locs(r);
    r->locs = calloc(log.norder + 1, sizeof(*r->locs));
    r->locp = calloc(log.norder + 1, sizeof(*r->locp));
    r->loc_strs = calloc(log.norder + 1, sizeof(*r->loc_strs));
    if (r->locs == NULL || r->locp == NULL || r->loc_strs == NULL) {
        rcv_log_free(&log);
        rec_free_locs(r);
        goto out_free;
    }
    for (size_t i = 0; i < log.norder; i++) {
        const struct rcv_replica *x = &rr[log.order[i]];
        struct coord_srv *b = find_server(c, x->backup_id);
        Cram__ReplicaLocation *l = &r->locs[r->nlocs];
        cram__replica_location__init(l);
        l->segment_id = x->segment_id;
        l->epoch = x->epoch;
        l->backup_id = x->backup_id;
        r->loc_strs[r->nlocs] = strdup(b && b->e->n_locators ? b->e->locators[0] : "");
        l->backup_locator = r->loc_strs[r->nlocs] ? r->loc_strs[r->nlocs] : (char *)"";
        l->length = x->length;
        l->closed = x->closed;
        r->locp[r->nlocs] = l;
        r->nlocs++;
    }
    r->have_locs = true;
    r->segments = log.nsegments;
    r->log_bytes = log.log_bytes;
    CRAM_INFO("recovery %lu: log of master %lu complete: %zu segments, %lu bytes, %zu replicas on %d backups "
              "(digest in segment %lu)", (unsigned long)r->id, (unsigned long)r->crashed, log.nsegments,
              (unsigned long)log.log_bytes, log.norder, g.answered, (unsigned long)log.digest_segment);
    rcv_log_free(&log);
    ret = 1;

out_free:
    free(rr);
    gather_free(&g);
    return ret;
}

/* ---- planning and assignment ---- */

static bool usable_master(coord *c, uint64_t id, uint64_t crashed)
{
    struct coord_srv *s = find_server(c, id);
    return s != NULL && id != crashed && s->e->status == CRAM__SERVER_STATUS__SERVER_UP &&
           (s->e->services & COORD_SVC_MASTER) && s->confirmed;
}

/* Partitions (not done) assigned to master id over all recoveries. */
static uint32_t master_load(coord *c, uint64_t id)
{
    uint32_t n = 0;
    for (size_t i = 0; i < c->n_recs; i++)
        for (size_t p = 0; p < c->recs[i]->nparts; p++)
            n += c->recs[i]->parts[p].master == id && !c->recs[i]->parts[p].done;
    return n;
}

/* The least-loaded usable master other than avoid (avoid only if it is the
 * only one); 0 if none.  Ties go to the one after `after` in id order, so
 * consecutive picks spread. */
static uint64_t pick_master(coord *c, uint64_t crashed, uint64_t avoid, uint64_t after)
{
    uint64_t best = 0, fallback = 0;
    uint32_t best_load = UINT32_MAX;
    for (size_t k = 0; k < c->n_servers; k++) {
        size_t i = (k + (size_t)after) % c->n_servers;
        uint64_t id = c->servers[i].e->server_id;
        if (!usable_master(c, id, crashed))
            continue;
        if (id == avoid) {
            fallback = id;
            continue;
        }
        uint32_t load = master_load(c, id);
        if (load < best_load) {
            best = id;
            best_load = load;
        }
    }
    return best ? best : fallback;
}

/* Split the crashed master's tablets into partitions and assign them. */
static int plan_partitions(coord *c, struct coord_recovery *r)
{
    size_t n = 0, cap = 16;
    struct rcv_range *t = malloc(cap * sizeof(*t));
    if (t == NULL)
        return -1;
    for (size_t ti = 0; ti < c->n_tables; ti++) {
        for (size_t i = 0; i < c->tables[ti]->n_tablets; i++) {
            const Cram__Tablet *tb = c->tables[ti]->tablets[i];
            if (tb->server_id != r->crashed)
                continue;
            if (n == cap) {
                struct rcv_range *nt = realloc(t, 2 * cap * sizeof(*t));
                if (nt == NULL) {
                    free(t);
                    return -1;
                }
                t = nt;
                cap *= 2;
            }
            t[n++] = (struct rcv_range){ tb->table_id, tb->start_hash, tb->end_hash };
        }
    }
    struct coord_srv *cs = find_server(c, r->crashed);
    struct rcv_piece *pc;
    size_t np;
    uint32_t nparts;
    uint32_t nmasters = 0;          /* at least one partition per recovery master */
    for (size_t k = 0; k < c->n_servers; k++)
        nmasters += usable_master(c, c->servers[k].e->server_id, r->crashed);
    int rc = rcv_partition(t, n, cs ? cs->will : NULL, cs ? cs->n_will : 0, r->log_bytes,
                           rcv_partition_bytes(c->partition_bytes, r->log_bytes, nmasters),
                           c->partition_objects, &pc, &np, &nparts);
    free(t);
    if (rc != 0)
        return -1;
    struct coord_part *parts = calloc(nparts + 1, sizeof(*parts));
    if (parts == NULL) {
        free(pc);
        return -1;
    }
    for (uint32_t p = 0; p < nparts; p++) {
        parts[p].id = p;
        parts[p].tablets = calloc(np + 1, sizeof(*parts[p].tablets));
        if (parts[p].tablets == NULL) {
            for (uint32_t q = 0; q < p; q++)
                free(parts[q].tablets);
            free(parts);
            free(pc);
            return -1;
        }
    }
    for (size_t i = 0; i < np; i++) {
        struct coord_part *p = &parts[pc[i].partition];
        p->tablets[p->ntablets++] = (struct rcv_range){ pc[i].table_id, pc[i].start, pc[i].end };
        p->est_bytes += pc[i].bytes;
        p->est_objects += pc[i].objects;
    }
    free(pc);
    r->parts = parts;
    r->nparts = nparts;
    /* one partition per master, spread evenly (by load, ties rotating) */
    for (uint32_t p = 0; p < nparts; p++) {
        r->parts[p].master = pick_master(c, r->crashed, 0, r->crashed + p);
        r->parts[p].attempts = r->parts[p].master ? 1 : 0;
        r->parts[p].need_send = true;
    }
    return 0;
}

struct recover_arg {
    coord *c;
    uint64_t rid;
    uint32_t pid;
    uint64_t master;
};

static struct coord_part *find_part(coord *c, uint64_t rid, uint32_t pid, struct coord_recovery **rout)
{
    struct coord_recovery *r = find_recovery(c, rid);
    for (size_t i = 0; r == NULL && i < c->n_done; i++)
        if (c->done[i]->id == rid)
            r = c->done[i];
    if (rout)
        *rout = r;
    if (r == NULL)
        return NULL;
    for (size_t i = 0; i < r->nparts; i++)
        if (r->parts[i].id == pid)
            return &r->parts[i];
    return NULL;
}

static void recover_sent(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct recover_arg *a = arg;
    coord *c = a->c;
    int32_t status = resp_status(st, resp, len);
    struct coord_part *p = c->closing ? NULL : find_part(c, a->rid, a->pid, NULL);
    if (p != NULL && p->master == a->master && p->busy) {
        p->busy = false;
        if (status != CRAM_OK && !p->done) {
            CRAM_WARN("recovery %lu partition %u: RECOVER to server %lu failed: %s; reassigning",
                      (unsigned long)a->rid, a->pid, (unsigned long)a->master, cram_strerror((cram_status)status));
            p->need_send = true;
            p->avoid = a->master;
            p->not_before_ms = clock_mono_ms() + clock_test_scaled_ms(COORD_RECOVERY_RESEND_MS);
        }
    }
    free(a);
}

/* Send RECOVER for partition p to p->master. */
static void send_recover(coord *c, struct coord_recovery *r, struct coord_part *p)
{
    struct coord_srv *s = find_server(c, p->master);
    tp_session *sess = s ? server_session(c, s) : NULL;
    Cram__Tablet *tb = calloc(p->ntablets + 1, sizeof(*tb));
    Cram__Tablet **tp = calloc(p->ntablets + 1, sizeof(*tp));
    struct recover_arg *a = malloc(sizeof(*a));
    uint8_t *buf = NULL;
    if (sess == NULL || tb == NULL || tp == NULL || a == NULL)
        goto out_failed;
    for (size_t k = 0; k < p->ntablets; k++) {
        cram__tablet__init(&tb[k]);
        tb[k].table_id = p->tablets[k].table_id;
        tb[k].start_hash = p->tablets[k].start;
        tb[k].end_hash = p->tablets[k].end;
        tb[k].server_id = p->master;
        tb[k].state = CRAM__TABLET_STATE__TABLET_RECOVERING;
        tp[k] = &tb[k];
    }
    Cram__RecoverRequest rq = CRAM__RECOVER_REQUEST__INIT;
    rq.recovery_id = r->id;
    rq.crashed_master_id = r->crashed;
    rq.partition_id = p->id;
    rq.n_tablets = p->ntablets;
    rq.tablets = tp;
    rq.n_replicas = r->nlocs;
    rq.replicas = r->locp;
    rq.partitions = (uint32_t)r->nparts;
    struct wire_req_hdr h = { .opcode = WIRE_OP_RECOVER, .service = WIRE_SVC_MASTER };
    size_t len = cram__recover_request__get_packed_size(&rq);
    buf = malloc(sizeof(h) + len);
    if (buf == NULL)
        goto out_failed;
    memcpy(buf, &h, sizeof(h));
    cram__recover_request__pack(&rq, buf + sizeof(h));
    *a = (struct recover_arg){ c, r->id, p->id, p->master };
    struct iovec iov = { buf, sizeof(h) + len };
    p->busy = true;
    p->need_send = false;
    p->sent_ms = clock_mono_ms();
    cram_status st = tp_send(sess, &iov, 1, (uint32_t)clock_test_scaled_ms(COORD_MASTER_RPC_MS), recover_sent, a);
    if (st != CRAM_OK) {
        p->busy = false;
        goto out_failed;
    }
    CRAM_INFO("recovery %lu: partition %u (%zu tablets, ~%lu bytes, ~%lu objects) -> server %lu (attempt %u)",
              (unsigned long)r->id, p->id, p->ntablets, (unsigned long)p->est_bytes,
              (unsigned long)p->est_objects, (unsigned long)p->master, p->attempts);
    free(buf);
    free(tb);
    free(tp);
    return;

out_failed:
    CRAM_WARN("recovery %lu partition %u: cannot send RECOVER to server %lu; reassigning",
              (unsigned long)r->id, p->id, (unsigned long)p->master);
    p->need_send = true;
    p->avoid = p->master;
    p->not_before_ms = clock_mono_ms() + clock_test_scaled_ms(COORD_RECOVERY_RESEND_MS);
    free(a);
    free(buf);
    free(tb);
    free(tp);
}

/* Log the summary line of a finished recovery. */
static void log_summary(const struct coord_recovery *r)
{
    uint64_t total = r->finished_at_ms > r->detected_at_ms ? r->finished_at_ms - r->detected_at_ms : 0;
    uint64_t bytes = 0, segs = 0;
    char parts[1024];
    size_t off = 0;
    for (size_t i = 0; i < r->nparts; i++) {
        const struct coord_part *p = &r->parts[i];
        bytes += p->bytes;
        segs += p->segments;
        if (off < sizeof(parts) - 100)
            off += (size_t)snprintf(parts + off, sizeof(parts) - off, " [p%u@%lu %lu B %lu seg %lu ms %.1f MB/s x%u]",
                                    p->id, (unsigned long)p->master, (unsigned long)p->bytes,
                                    (unsigned long)p->segments, (unsigned long)p->replay_ms,
                                    p->replay_ms ? (double)p->bytes / 1e3 / (double)p->replay_ms : 0.0, p->attempts);
    }
    if (r->nparts == 0)
        snprintf(parts, sizeof(parts), " (no tablets)");
    CRAM_INFO("recovery %lu of master %lu done: total %lu ms, %lu bytes replayed, %lu segments (log %lu segments, "
              "%lu bytes), %.1f MB/s, %zu partitions:%s", (unsigned long)r->id, (unsigned long)r->crashed,
              (unsigned long)total, (unsigned long)bytes, (unsigned long)segs, (unsigned long)r->segments,
              (unsigned long)r->log_bytes, total ? (double)r->log_bytes / 1e3 / (double)total : 0.0,
              r->nparts, parts);
}

/* r is finished (every partition done, or nothing to recover): remove the
 * record and move r to the recent list.  0, or -1 to retry later. */
static int recovery_finish(coord *c, struct coord_recovery *r)
{
    if (r->phase != CRAM__RECOVERY_PHASE__RECOVERY_DONE) {
        r->phase = CRAM__RECOVERY_PHASE__RECOVERY_DONE;
        r->finished_at_ms = clock_wall_ms();
        r->note[0] = '\0';
    }
    if (r->persisted && rec_write(c, r, true) != 0)
        return -1;
    r->persisted = false;
    log_summary(r);
    for (size_t i = 0; i < c->n_recs; i++) {
        if (c->recs[i] == r) {
            memmove(&c->recs[i], &c->recs[i + 1], (c->n_recs - i - 1) * sizeof(c->recs[0]));
            c->n_recs--;
            break;
        }
    }
    rec_free_locs(r);
    if (c->n_done == COORD_RECENT_RECOVERIES) {
        rec_free(c->done[0]);
        memmove(&c->done[0], &c->done[1], (c->n_done - 1) * sizeof(c->done[0]));
        c->n_done--;
    }
    c->done[c->n_done++] = r;
    return 0;
}

static bool all_done(const struct coord_recovery *r)
{
    for (size_t i = 0; i < r->nparts; i++)
        if (!r->parts[i].done)
            return false;
    return true;
}

/* One step of recovery r at the worker's top level.  Returns 1 if r was
 * finished and removed from c->recs, else 0. */
static int recovery_step(coord *c, struct coord_recovery *r, uint64_t now)
{
    if (r->phase == CRAM__RECOVERY_PHASE__RECOVERY_DONE)
        return recovery_finish(c, r) == 0;         /* its record's removal failed before */
    if (!r->persisted && r->phase != CRAM__RECOVERY_PHASE__RECOVERY_DONE) {
        if (now < r->next_try_ms)
            return 0;
        if (rec_write(c, r, false) != 0) {
            r->next_try_ms = now + clock_test_scaled_ms(COORD_DECLARE_RETRY_MS);
            return 0;
        }
    }
    if (r->phase == CRAM__RECOVERY_PHASE__RECOVERY_STARTING ||
        r->phase == CRAM__RECOVERY_PHASE__RECOVERY_WAITING_LOG) {
        if (now < r->next_try_ms)
            return 0;
        bool owns = false;
        for (size_t ti = 0; ti < c->n_tables && !owns; ti++)
            for (size_t i = 0; i < c->tables[ti]->n_tablets && !owns; i++)
                owns = c->tables[ti]->tablets[i]->server_id == r->crashed;
        if (!owns)
            return recovery_finish(c, r) == 0;
        /* its tablets show RECOVERING from the start (retried until written) */
        if (!r->tables_applied)
            apply_tablets(c, r);
        Cram__RecoveryPhase was = r->phase;
        char old_note[sizeof(r->note)];
        memcpy(old_note, r->note, sizeof(old_note));
        int g = gather_and_check(c, r);
        r->next_try_ms = clock_mono_ms() + c->recovery_retry_ms;
        if (g < 0)
            return 0;
        if (g == 0) {
            r->phase = CRAM__RECOVERY_PHASE__RECOVERY_WAITING_LOG;
            if (was != r->phase || strcmp(old_note, r->note) != 0) {
                CRAM_WARN("recovery %lu of master %lu waits: %s", (unsigned long)r->id,
                          (unsigned long)r->crashed, r->note);
                rec_write(c, r, false);
            }
            return 0;
        }
        if (pick_master(c, r->crashed, 0, 0) == 0) {
            snprintf(r->note, sizeof(r->note), "no master is up to recover on");
            if (strcmp(old_note, r->note) != 0)
                CRAM_WARN("recovery %lu of master %lu waits: %s", (unsigned long)r->id,
                          (unsigned long)r->crashed, r->note);
            return 0;
        }
        if (plan_partitions(c, r) != 0)
            return 0;
        r->phase = CRAM__RECOVERY_PHASE__RECOVERY_REPLAYING;
        r->note[0] = '\0';
        if (rec_write(c, r, false) != 0) {
            /* not recorded: plan again next time */
            for (size_t i = 0; i < r->nparts; i++)
                free(r->parts[i].tablets);
            free(r->parts);
            r->parts = NULL;
            r->nparts = 0;
            r->phase = was;
            return 0;
        }
        uint64_t big_b = 0, big_o = 0;  /* the largest partition, as estimated */
        for (size_t i = 0; i < r->nparts; i++) {
            big_b = r->parts[i].est_bytes > big_b ? r->parts[i].est_bytes : big_b;
            big_o = r->parts[i].est_objects > big_o ? r->parts[i].est_objects : big_o;
        }
        CRAM_INFO("recovery %lu of master %lu: %zu partitions (largest ~%lu bytes, ~%lu objects; limits %lu, %lu), "
                  "%lu ms after detection",
                  (unsigned long)r->id, (unsigned long)r->crashed, r->nparts, (unsigned long)big_b,
                  (unsigned long)big_o, (unsigned long)c->partition_bytes, (unsigned long)c->partition_objects,
                  (unsigned long)(clock_wall_ms() - r->detected_at_ms));
        r->tables_applied = false;
        if (apply_tablets(c, r) == 0)
            coord_fault_point("coordinator.recovery.after_assign");
    }
    if (r->phase != CRAM__RECOVERY_PHASE__RECOVERY_REPLAYING)
        return 0;
    if (!r->tables_applied && apply_tablets(c, r) != 0)
        return 0;
    if (all_done(r))
        return recovery_finish(c, r) == 0;
    bool want = false;
    for (size_t i = 0; i < r->nparts; i++) {
        struct coord_part *p = &r->parts[i];
        want |= p->need_send && !p->busy && !p->done && now >= p->not_before_ms;
    }
    if (!want)
        return 0;
    if (!r->have_locs) {
        if (now < r->next_try_ms)
            return 0;
        int g = gather_and_check(c, r);
        r->next_try_ms = clock_mono_ms() + c->recovery_retry_ms;
        if (g <= 0) {
            if (g == 0)
                CRAM_WARN("recovery %lu of master %lu: cannot resume yet: %s", (unsigned long)r->id,
                          (unsigned long)r->crashed, r->note);
            return 0;
        }
        r->note[0] = '\0';
    }
    bool changed = false;
    for (size_t i = 0; i < r->nparts; i++) {
        struct coord_part *p = &r->parts[i];
        if (!p->need_send || p->busy || p->done || now < p->not_before_ms)
            continue;
        if (!usable_master(c, p->master, r->crashed) || p->master == p->avoid) {
            uint64_t m = pick_master(c, r->crashed, p->avoid, r->crashed + p->id);
            if (m == 0) {
                p->not_before_ms = now + c->recovery_retry_ms;
                continue;
            }
            if (p->master != 0)
                CRAM_INFO("recovery %lu: partition %u moves from server %lu to server %lu",
                          (unsigned long)r->id, p->id, (unsigned long)p->master, (unsigned long)m);
            p->master = m;
            p->attempts++;
            changed = true;
        }
    }
    if (changed && rec_write(c, r, false) != 0)
        return 0;
    for (size_t i = 0; i < r->nparts; i++) {
        struct coord_part *p = &r->parts[i];
        if (p->need_send && !p->busy && !p->done && now >= p->not_before_ms && usable_master(c, p->master, r->crashed))
            send_recover(c, r, p);
    }
    return 0;
}

/* Start a recovery for every crashed master that still owns tablets and has
 * none running. */
static void recovery_scan(coord *c)
{
    for (size_t i = 0; i < c->n_servers; i++) {
        const Cram__ServerEntry *e = c->servers[i].e;
        if (e->status != CRAM__SERVER_STATUS__SERVER_CRASHED || find_recovery(c, e->server_id) != NULL)
            continue;
        bool owns = false;
        for (size_t ti = 0; ti < c->n_tables && !owns; ti++)
            for (size_t k = 0; k < c->tables[ti]->n_tablets && !owns; k++)
                owns = c->tables[ti]->tablets[k]->server_id == e->server_id;
        if (!owns)
            continue;
        struct coord_recovery *r = calloc(1, sizeof(*r));
        if (r == NULL)
            return;
        if (c->n_recs == c->cap_recs) {
            size_t cap = c->cap_recs ? 2 * c->cap_recs : 8;
            struct coord_recovery **n = realloc(c->recs, cap * sizeof(*n));
            if (n == NULL) {
                free(r);
                return;
            }
            c->recs = n;
            c->cap_recs = cap;
        }
        r->id = e->server_id;
        r->crashed = e->server_id;
        r->phase = CRAM__RECOVERY_PHASE__RECOVERY_STARTING;
        r->started_at_ms = clock_wall_ms();
        r->detected_at_ms = c->servers[i].crashed_at_ms ? c->servers[i].crashed_at_ms : r->started_at_ms;
        r->t0_ms = clock_mono_ms();
        r->tables_applied = false;
        c->recs[c->n_recs++] = r;
        CRAM_INFO("recovery %lu of master %lu starts", (unsigned long)r->id, (unsigned long)r->crashed);
    }
}

/* Partitions assigned to a server that was just declared crashed go to
 * other masters. */
static void recovery_master_lost(coord *c, uint64_t id)
{
    for (size_t i = 0; i < c->n_recs; i++) {
        struct coord_recovery *r = c->recs[i];
        for (size_t p = 0; p < r->nparts; p++) {
            struct coord_part *pp = &r->parts[p];
            if (pp->master == id && !pp->done) {
                CRAM_WARN("recovery %lu: recovery master %lu of partition %u crashed; reassigning",
                          (unsigned long)r->id, (unsigned long)id, pp->id);
                pp->need_send = true;
                pp->busy = false;
                pp->avoid = id;
                pp->not_before_ms = 0;
            }
        }
    }
    c->recovery_scan_needed = true;
}

/* Every running recovery: one step each.  Returns the wait until the next
 * due retry (ms, capped by cap). */
static int recoveries_run(coord *c, int cap)
{
    if (c->recovery_scan_needed) {
        c->recovery_scan_needed = false;
        recovery_scan(c);
    }
    int wait = cap;
    for (size_t i = 0; i < c->n_recs && !atomic_load(&c->stopping);) {
        struct coord_recovery *r = c->recs[i];
        uint64_t now = clock_mono_ms();
        if (recovery_step(c, r, now))
            continue;                               /* removed: same i is the next one */
        i++;
        now = clock_mono_ms();
        uint64_t due = r->next_try_ms;
        if (r->persisted && r->phase == CRAM__RECOVERY_PHASE__RECOVERY_REPLAYING) {
            /* the earliest partition that waits to be (re)sent */
            uint64_t first = UINT64_MAX;
            for (size_t p = 0; p < r->nparts; p++) {
                const struct coord_part *pp = &r->parts[p];
                if (pp->need_send && !pp->done && !pp->busy && pp->not_before_ms < first)
                    first = pp->not_before_ms;
            }
            if (first == UINT64_MAX)
                continue;                           /* waiting for answers only */
            due = r->have_locs || first > r->next_try_ms ? first : r->next_try_ms;
        }
        int w = due > now ? (int)(due - now) : 0;
        if (w < 10)
            w = 10;
        if (w < wait)
            wait = w;
    }
    return wait;
}

/* RECOVERY_MASTER_FINISHED: record the result, then answer. */
static void do_recovery_finished(coord *c, struct coord_job *j)
{
    const Cram__RecoveryMasterFinished *rq = (const Cram__RecoveryMasterFinished *)j->msg;
    struct coord_recovery *r;
    struct coord_part *p = find_part(c, rq->recovery_id, rq->partition_id, &r);
    if (p == NULL || p->master != rq->server_id ||
        (r->phase != CRAM__RECOVERY_PHASE__RECOVERY_REPLAYING && !(p->done && rq->ok))) {
        CRAM_WARN("RECOVERY_MASTER_FINISHED from server %lu for recovery %lu partition %u: not its partition; refused",
                  (unsigned long)rq->server_id, (unsigned long)rq->recovery_id, rq->partition_id);
        post_reply(c, j->rpc, CRAM_NOT_FOUND, NULL, 0);
        return;
    }
    p->busy = false;
    if (!rq->ok) {
        if (!p->done) {
            CRAM_WARN("recovery %lu partition %u failed on server %lu: %s; reassigning",
                      (unsigned long)r->id, p->id, (unsigned long)rq->server_id, rq->error);
            p->need_send = true;
            p->avoid = rq->server_id;
            p->not_before_ms = clock_mono_ms() + clock_test_scaled_ms(COORD_RECOVERY_RESEND_MS);
        }
        post_reply(c, j->rpc, CRAM_OK, NULL, 0);
        return;
    }
    if (!p->done) {
        p->done = true;
        p->need_send = false;
        p->bytes = rq->bytes_replayed;
        p->segments = rq->segments_replayed;
        p->objects = rq->objects;
        p->replay_ms = rq->replay_ms;
        if (rec_write(c, r, false) != 0) {
            p->done = false;
            post_reply(c, j->rpc, CRAM_RETRY, NULL, 0);
            return;
        }
        CRAM_INFO("recovery %lu: partition %u done on server %lu: %lu segments, %lu bytes, %lu objects, "
                  "%lu tombstones in %lu ms (%.1f MB/s)", (unsigned long)r->id, p->id, (unsigned long)p->master,
                  (unsigned long)rq->segments_replayed, (unsigned long)rq->bytes_replayed,
                  (unsigned long)rq->objects, (unsigned long)rq->tombstones, (unsigned long)rq->replay_ms,
                  rq->replay_ms ? (double)rq->bytes_replayed / 1e3 / (double)rq->replay_ms : 0.0);
    }
    if (r->phase == CRAM__RECOVERY_PHASE__RECOVERY_DONE) {
        post_reply(c, j->rpc, CRAM_OK, NULL, 0);      /* a repeated report of a finished recovery */
        return;
    }
    if (apply_tablets(c, r) != 0) {
        r->tables_applied = false;
        post_reply(c, j->rpc, CRAM_RETRY, NULL, 0);
        return;
    }
    post_reply(c, j->rpc, CRAM_OK, NULL, 0);
    if (all_done(r))
        recovery_finish(c, r);
}

static void do_recovery_status(coord *c, struct coord_job *j)
{
    Cram__RecoveryStatusList l = CRAM__RECOVERY_STATUS_LIST__INIT;
    size_t n = c->n_recs + c->n_done;
    l.recoveries = calloc(n + 1, sizeof(*l.recoveries));
    if (l.recoveries == NULL) {
        post_reply(c, j->rpc, CRAM_NO_MEMORY, NULL, 0);
        return;
    }
    for (size_t i = 0; i < c->n_recs; i++)
        if ((l.recoveries[l.n_recoveries] = rec_msg(c->recs[i])) != NULL)
            l.n_recoveries++;
    for (size_t i = c->n_done; i-- > 0;)
        if ((l.recoveries[l.n_recoveries] = rec_msg(c->done[i])) != NULL)
            l.n_recoveries++;
    /* the answer fits one message: the oldest finished ones go first */
    size_t keep = l.n_recoveries;
    while (l.n_recoveries > 1 && cram__recovery_status_list__get_packed_size(&l) > WIRE_MAX_MESSAGE - 4096)
        l.n_recoveries--;
    post_msg(c, j->rpc, &l.base);
    l.n_recoveries = keep;
    for (size_t i = 0; i < l.n_recoveries; i++)
        rec_msg_free(l.recoveries[i]);
    free(l.recoveries);
}

/* Start-up: load every stored recovery to resume it. */
static int load_recoveries(coord *c)
{
    char **names;
    int n;
    int rc = zks_children(c->zk, "recoveries", &names, &n);
    if (rc != ZOK)
        return rc;
    for (int i = 0; i < n && rc == ZOK; i++) {
        char path[128];
        snprintf(path, sizeof(path), "recoveries/%s", names[i]);
        uint8_t *data;
        size_t len;
        rc = zks_get(c->zk, path, &data, &len);
        if (rc == ZNONODE) {
            rc = ZOK;
            continue;
        }
        if (rc != ZOK)
            break;
        Cram__RecoveryRecord *m = cram__recovery_record__unpack(NULL, len, data);
        free(data);
        struct coord_recovery *r = m ? rec_from_msg(m) : NULL;
        if (m)
            cram__recovery_record__free_unpacked(m, NULL);
        if (r == NULL || find_recovery(c, r->id) != NULL) {
            CRAM_ERROR("recovery record %s is corrupt or a duplicate; starting that recovery over", path);
            rec_free(r);
            struct zks_op del = { .kind = ZKS_DELETE, .path = path };
            rc = zks_commit(c->zk, &del, 1);
            continue;
        }
        if (c->n_recs == c->cap_recs) {
            size_t cap = c->cap_recs ? 2 * c->cap_recs : 8;
            struct coord_recovery **nr = realloc(c->recs, cap * sizeof(*nr));
            if (nr == NULL) {
                rec_free(r);
                rc = ZSYSTEMERROR;
                break;
            }
            c->recs = nr;
            c->cap_recs = cap;
        }
        if (r->phase == CRAM__RECOVERY_PHASE__RECOVERY_WAITING_LOG)
            r->phase = CRAM__RECOVERY_PHASE__RECOVERY_STARTING;
        r->tables_applied = false;       /* rewritten from the record (idempotent) */
        c->recs[c->n_recs++] = r;
        CRAM_INFO("resuming recovery %lu of master %lu (%s, %zu partitions)", (unsigned long)r->id,
                  (unsigned long)r->crashed, phase_name(r->phase), r->nparts);
    }
    zks_free_names(names, n);
    return rc;
}

/* ---- the masters' wills ---- */

static void stats_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct push_arg *a = arg;
    coord *c = a->c;
    struct coord_srv *s = c->closing ? NULL : find_server(c, a->id);
    if (s != NULL) {
        s->stats_busy = false;
        Cram__ServerStats *m = NULL;
        if (resp_status(st, resp, len) == CRAM_OK)
            m = cram__server_stats__unpack(NULL, len - sizeof(struct wire_resp_hdr),
                                           resp + sizeof(struct wire_resp_hdr));
        if (m != NULL) {
            struct rcv_stat *w = calloc(m->n_tablet_stats + 1, sizeof(*w));
            size_t n = 0;
            for (size_t i = 0; w != NULL && i < m->n_tablet_stats; i++) {
                const Cram__TabletStats *t = m->tablet_stats[i];
                if (t->start_hash <= t->end_hash)
                    w[n++] = (struct rcv_stat){ t->table_id, t->start_hash, t->end_hash, t->bytes, t->objects };
            }
            if (w != NULL) {
                free(s->will);
                s->will = w;
                s->n_will = n;
            }
            cram__server_stats__free_unpacked(m, NULL);
        }
    }
    free(a);
}

/* Poll GET_SERVER_STATS of every master that is up and due.  Returns the
 * wait until the next poll (ms, capped by cap). */
static int stats_poll(coord *c, int cap)
{
    if (c->stats_interval_ms == 0)
        return cap;
    uint64_t now = clock_mono_ms();
    uint64_t next = now + (uint64_t)cap;
    for (size_t i = 0; i < c->n_servers; i++) {
        struct coord_srv *s = &c->servers[i];
        if (s->e->status != CRAM__SERVER_STATUS__SERVER_UP || !(s->e->services & COORD_SVC_MASTER))
            continue;
        if (!s->stats_busy && now >= s->stats_at_ms) {
            s->stats_at_ms = now + c->stats_interval_ms;
            tp_session *sess = server_session(c, s);
            struct push_arg *a = malloc(sizeof(*a));
            if (sess != NULL && a != NULL) {
                *a = (struct push_arg){ c, s->e->server_id, 0 };
                struct wire_req_hdr h = { .opcode = WIRE_OP_GET_SERVER_STATS, .service = WIRE_SVC_MASTER };
                struct iovec iov = { &h, sizeof(h) };
                if (tp_send(sess, &iov, 1, (uint32_t)clock_test_scaled_ms(COORD_MASTER_RPC_MS), stats_done, a) == CRAM_OK) {
                    s->stats_busy = true;
                    a = NULL;
                }
            }
            free(a);
        }
        if (!s->stats_busy && s->stats_at_ms < next)
            next = s->stats_at_ms;
    }
    return next > now ? (int)(next - now) : 1;
}

/* The worker's top-level housekeeping between requests: declare verified
 * crashes, notice broken connections (and verify those servers), resend the
 * full list to servers that missed an update.  Returns how long the worker
 * may wait for the next event (ms). */
static int coord_maintain(coord *c)
{
    uint64_t now = clock_mono_ms();
    int wait = 1000;
    if (c->n_declare > 0 && now >= c->declare_at_ms) {
        size_t keep = 0;
        for (size_t i = 0; i < c->n_declare && !atomic_load(&c->stopping); i++) {
            struct coord_declare d = c->declare[i];
            if (declare_crashed(c, &d) != 0)
                c->declare[keep++] = d;
        }
        c->n_declare = atomic_load(&c->stopping) ? 0 : keep;
        if (keep > 0)
            c->declare_at_ms = now + clock_test_scaled_ms(COORD_DECLARE_RETRY_MS);
    }
    if (c->n_declare > 0)
        wait = (int)clock_test_scaled_ms(COORD_DECLARE_RETRY_MS);
    for (size_t i = 0; i < c->n_servers; i++) {
        struct coord_srv *s = &c->servers[i];
        bool up = s->e->status == CRAM__SERVER_STATUS__SERVER_UP;
        if (s->sess != NULL && !tp_session_alive(s->sess)) {
            tp_session_close(s->sess);
            s->sess = NULL;
            if (up) {
                mark_resync(c, s);
                verify_start(c, s, "its connection to the coordinator broke");
            }
        }
        if (up && s->need_full && s->v == NULL) {
            now = clock_mono_ms();
            if (now >= s->resync_at_ms) {
                s->need_full = false;
                push_full(c, s);
            } else if ((int)(s->resync_at_ms - now) < wait) {
                wait = (int)(s->resync_at_ms - now);
            }
        }
    }
    if (!atomic_load(&c->stopping)) {
        wait = stats_poll(c, wait);
        wait = recoveries_run(c, wait);
    }
    return wait;
}

/* ---------------------------------------------------------------------
 * Request handlers (worker thread)
 * ------------------------------------------------------------------- */

static void do_enlist(coord *c, struct coord_job *j)
{
    const Cram__EnlistServerRequest *rq = (const Cram__EnlistServerRequest *)j->msg;
    if (c->n_servers >= COORD_MAX_SERVERS || c->next_server_index == UINT32_MAX) {
        post_reply(c, j->rpc, CRAM_NO_MEMORY, NULL, 0);
        return;
    }
    if (rq->replaces_id != 0)
        CRAM_INFO("enlisting server replaces id %lu: ignored until failure handling exists",
                  (unsigned long)rq->replaces_id);
    uint64_t reused = 0;            /* an up server at the newcomer's locator */
    for (size_t i = 0; i < c->n_servers; i++) {
        const Cram__ServerEntry *old = c->servers[i].e;
        if (old->status == CRAM__SERVER_STATUS__SERVER_UP && strcmp(old->locators[0], rq->locators[0]) == 0) {
            CRAM_WARN("a new server enlists at %s, the locator of server %lu: that server is "
                      "probably gone; verifying it", rq->locators[0], (unsigned long)old->server_id);
            reused = old->server_id;
        }
    }
    uint32_t index = c->next_server_index;
    Cram__ServerEntry e = CRAM__SERVER_ENTRY__INIT;
    e.server_id = coord_server_id(index, 0);
    e.n_locators = rq->n_locators;
    e.locators = rq->locators;
    e.services = rq->services;
    e.status = CRAM__SERVER_STATUS__SERVER_UP;
    e.failure_domain = rq->failure_domain;
    e.memory_bytes = rq->memory_bytes;
    e.enlisted_at_ms = clock_wall_ms();

    uint8_t *packed = NULL;
    size_t plen = 0;
    Cram__ServerEntry *copy = (Cram__ServerEntry *)pb_clone(&e.base, &packed, &plen);
    if (copy == NULL) {
        post_reply(c, j->rpc, CRAM_NO_MEMORY, NULL, 0);
        return;
    }
    uint8_t idsbuf[64];
    size_t idslen;
    ids_pack(c, c->next_table_id, index + 1, c->server_list_version + 1, idsbuf, sizeof(idsbuf), &idslen);
    char path[64];
    snprintf(path, sizeof(path), "servers/%016lx", (unsigned long)e.server_id);
    struct zks_op ops[2] = {
        { .kind = ZKS_CREATE, .path = path, .data = packed, .len = plen },
        { .kind = ZKS_SET, .path = "ids", .data = idsbuf, .len = idslen },
    };
    int rc = zks_commit(c->zk, ops, 2);
    free(packed);
    if (rc != ZOK) {
        cram__server_entry__free_unpacked(copy, NULL);
        post_reply(c, j->rpc, zk_failure(c, rc, "enlist server"), NULL, 0);
        return;
    }
    coord_fault_point("coordinator.enlist.after_write");
    c->next_server_index = index + 1;
    c->server_list_version++;
    if (add_server(c, copy) != 0) {
        cram__server_entry__free_unpacked(copy, NULL);
        post_reply(c, j->rpc, CRAM_NO_MEMORY, NULL, 0);
        return;
    }
    find_server(c, copy->server_id)->confirmed = true;
    CRAM_INFO("enlisted server %lu at %s (services %u%s%s, %lu MB), server list version %lu",
              (unsigned long)copy->server_id, copy->locators[0], copy->services,
              copy->failure_domain[0] ? ", failure domain " : "", copy->failure_domain,
              (unsigned long)(copy->memory_bytes >> 20), (unsigned long)c->server_list_version);

    Cram__EnlistServerResponse resp = CRAM__ENLIST_SERVER_RESPONSE__INIT;
    resp.server_id = copy->server_id;
    resp.settings = &c->settings;
    post_msg(c, j->rpc, &resp.base);
    /* the newcomer gets the full list, everybody else the new entry */
    uint64_t id = copy->server_id;
    push_changes(c, &id, 1);
    struct coord_srv *old = reused ? find_server(c, reused) : NULL;
    if (old != NULL)
        verify_start(c, old, "a new server enlisted at its locator");
    /* a waiting recovery may find the replicas (or the master) it lacks */
    uint64_t soon = clock_mono_ms() + clock_test_scaled_ms(COORD_RECOVERY_RESEND_MS);
    for (size_t i = 0; i < c->n_recs; i++) {
        struct coord_recovery *r = c->recs[i];
        if (r->next_try_ms > soon)
            r->next_try_ms = soon;
        for (size_t p = 0; p < r->nparts; p++)
            if (r->parts[p].not_before_ms > soon)
                r->parts[p].not_before_ms = soon;
    }
}

static void do_hint(coord *c, struct coord_job *j)
{
    const Cram__ServerIdRequest *rq = (const Cram__ServerIdRequest *)j->msg;
    struct coord_srv *s = find_server(c, rq->server_id);
    if (s == NULL) {
        post_reply(c, j->rpc, CRAM_NOT_FOUND, NULL, 0);
        return;
    }
    verify_start(c, s, "a peer's ping failed");     /* no-op unless up and not being verified */
    post_reply(c, j->rpc, CRAM_OK, NULL, 0);
}

/* {segment, epoch} a is below b. */
static bool recovery_info_below(uint64_t aseg, uint64_t aep, uint64_t bseg, uint64_t bep)
{
    return aseg < bseg || (aseg == bseg && aep < bep);
}

/* Record a master's MasterRecoveryInfo in its ServerEntry: only ever raised
 * (an older or equal {segment_id, epoch} is acknowledged without a write);
 * the reply goes after the fenced write succeeded. */
static void do_recovery_info(coord *c, struct coord_job *j)
{
    const Cram__MasterRecoveryInfo *rq = (const Cram__MasterRecoveryInfo *)j->msg;
    struct coord_srv *s = find_server(c, rq->server_id);
    if (s == NULL) {
        post_reply(c, j->rpc, CRAM_NOT_FOUND, NULL, 0);
        return;
    }
    if (s->e->status != CRAM__SERVER_STATUS__SERVER_UP) {
        post_reply(c, j->rpc, CRAM_CALLER_NOT_IN_CLUSTER, NULL, 0);
        return;
    }
    const Cram__MasterRecoveryInfo *cur = s->e->recovery_info;
    if (cur != NULL && !recovery_info_below(cur->segment_id, cur->epoch, rq->segment_id, rq->epoch)) {
        post_reply(c, j->rpc, CRAM_OK, NULL, 0);
        return;
    }
    Cram__ServerEntry e = *s->e;
    Cram__MasterRecoveryInfo ri = CRAM__MASTER_RECOVERY_INFO__INIT;
    ri.server_id = rq->server_id;
    ri.segment_id = rq->segment_id;
    ri.epoch = rq->epoch;
    e.recovery_info = &ri;
    uint8_t *packed = NULL;
    size_t plen = 0;
    Cram__ServerEntry *copy = (Cram__ServerEntry *)pb_clone(&e.base, &packed, &plen);
    if (copy == NULL) {
        post_reply(c, j->rpc, CRAM_NO_MEMORY, NULL, 0);
        return;
    }
    char path[64];
    snprintf(path, sizeof(path), "servers/%016lx", (unsigned long)rq->server_id);
    struct zks_op op = { .kind = ZKS_SET, .path = path, .data = packed, .len = plen };
    int rc = zks_commit(c->zk, &op, 1);
    free(packed);
    if (rc != ZOK) {
        cram__server_entry__free_unpacked(copy, NULL);
        post_reply(c, j->rpc, zk_failure(c, rc, "set master recovery info"), NULL, 0);
        return;
    }
    cram__server_entry__free_unpacked(s->e, NULL);
    s->e = copy;
    CRAM_INFO("server %lu recovery info: segment %lu epoch %lu", (unsigned long)rq->server_id,
              (unsigned long)rq->segment_id, (unsigned long)rq->epoch);
    post_reply(c, j->rpc, CRAM_OK, NULL, 0);
}

static void do_server_list(coord *c, struct coord_job *j)
{
    Cram__ServerList l = CRAM__SERVER_LIST__INIT;
    Cram__ServerEntry **v = calloc(c->n_servers + 1, sizeof(*v));
    if (v == NULL) {
        post_reply(c, j->rpc, CRAM_NO_MEMORY, NULL, 0);
        return;
    }
    for (size_t i = 0; i < c->n_servers; i++)
        v[i] = c->servers[i].e;
    l.version = c->server_list_version;
    l.n_servers = c->n_servers;
    l.servers = v;
    l.full = 1;
    l.settings = &c->settings;
    post_msg(c, j->rpc, &l.base);
    free(v);
}

/* Log one line describing a table's tablets (first few in full). */
static void log_table(const char *verb, const Cram__TableRecord *t)
{
    char line[512];
    size_t off = 0;
    for (size_t i = 0; i < t->n_tablets && off < sizeof(line) - 80; i++) {
        const Cram__Tablet *tb = t->tablets[i];
        if (i == 4 && t->n_tablets > 5) {
            off += (size_t)snprintf(line + off, sizeof(line) - off, " ... (%zu more)", t->n_tablets - 4);
            break;
        }
        off += (size_t)snprintf(line + off, sizeof(line) - off, " [%016lx-%016lx]@%lu",
                                (unsigned long)tb->start_hash, (unsigned long)tb->end_hash,
                                (unsigned long)tb->server_id);
    }
    CRAM_INFO("%s table '%s' id %lu with %zu tablets:%s", verb, t->name, (unsigned long)t->table_id,
              t->n_tablets, line);
}

/* Build the TableRecord for a new table (stack-allocated arrays in *tb / *tp). */
static int plan_table(coord *c, const char *name, uint64_t id, uint32_t span,
                      Cram__TableRecord *rec, Cram__Tablet *tb, Cram__Tablet **tp)
{
    uint64_t masters[COORD_MAX_SPAN];
    uint32_t nm = 0;
    for (size_t i = 0; i < c->n_servers && nm < COORD_MAX_SPAN; i++) {
        const Cram__ServerEntry *e = c->servers[i].e;
        if (e->status == CRAM__SERVER_STATUS__SERVER_UP && (e->services & COORD_SVC_MASTER))
            masters[nm++] = e->server_id;
    }
    if (nm == 0)
        return -1;
    for (uint32_t i = 0; i < span; i++) {
        cram__tablet__init(&tb[i]);
        tb[i].table_id = id;
        coord_tablet_range(span, i, &tb[i].start_hash, &tb[i].end_hash);
        tb[i].server_id = masters[coord_tablet_master(id, i, nm)];
        tb[i].state = CRAM__TABLET_STATE__TABLET_NORMAL;
        tp[i] = &tb[i];
    }
    cram__table_record__init(rec);
    rec->name = (char *)name;
    rec->table_id = id;
    rec->n_tablets = span;
    rec->tablets = tp;
    return 0;
}

static void post_table_id(coord *c, tp_rpc *rpc, uint64_t id)
{
    Cram__TableIdResponse r = CRAM__TABLE_ID_RESPONSE__INIT;
    r.table_id = id;
    post_msg(c, rpc, &r.base);
}

/* Undo a create after its intent was written: the masters drop the tablets
 * and the intent goes (if that fails, the next coordinator finishes the
 * create instead: either way ownership and records end up consistent). */
static void create_rollback(coord *c, const Cram__TableRecord *t, const char *intent)
{
    send_tablets(c, WIRE_OP_DROP_TABLET, t);
    struct zks_op undo = { .kind = ZKS_DELETE, .path = intent };
    int rc = zks_commit(c->zk, &undo, 1);
    if (rc != ZOK)
        zk_failure(c, rc, "create table rollback");
}

static void do_create_table(coord *c, struct coord_job *j)
{
    const Cram__CreateTableRequest *rq = (const Cram__CreateTableRequest *)j->msg;
    ssize_t ti = find_table_name(c, rq->name);
    if (ti >= 0) {
        post_table_id(c, j->rpc, c->tables[ti]->table_id);
        return;
    }
    uint32_t span = rq->server_span ? rq->server_span : 1;
    uint64_t id = c->next_table_id;
    static Cram__Tablet tb[COORD_MAX_SPAN];        /* worker thread only */
    static Cram__Tablet *tp[COORD_MAX_SPAN];
    Cram__TableRecord rec;
    if (plan_table(c, rq->name, id, span, &rec, tb, tp) != 0) {
        CRAM_WARN("create table '%s': no master enlisted yet", rq->name);
        post_reply(c, j->rpc, CRAM_RETRY, NULL, 0);
        return;
    }
    uint8_t *packed = NULL;
    size_t plen = 0;
    Cram__TableRecord *copy = (Cram__TableRecord *)pb_clone(&rec.base, &packed, &plen);
    Cram__IntentRecord in = CRAM__INTENT_RECORD__INIT;
    in.kind = CRAM__INTENT_KIND__INTENT_CREATE_TABLE;
    in.table = &rec;
    size_t ilen = cram__intent_record__get_packed_size(&in);
    uint8_t *ibuf = malloc(ilen);
    if (copy == NULL || ibuf == NULL) {
        post_reply(c, j->rpc, CRAM_NO_MEMORY, NULL, 0);
        goto out_free;
    }
    cram__intent_record__pack(&in, ibuf);

    /* Step 1: the intent, and the id is used up. */
    uint8_t idsbuf[64];
    size_t idslen;
    ids_pack(c, id + 1, c->next_server_index, c->server_list_version, idsbuf, sizeof(idsbuf), &idslen);
    char intent[128];
    struct zks_op ops1[2] = {
        { .kind = ZKS_CREATE, .path = "intents/i-", .data = ibuf, .len = ilen, .sequential = true,
          .created = intent, .created_len = sizeof(intent) },
        { .kind = ZKS_SET, .path = "ids", .data = idsbuf, .len = idslen },
    };
    int rc = zks_commit(c->zk, ops1, 2);
    if (rc != ZOK) {
        post_reply(c, j->rpc, zk_failure(c, rc, "create table intent"), NULL, 0);
        goto out_free;
    }
    c->next_table_id = id + 1;
    coord_fault_point("coordinator.create_table.after_intent");

    /* Step 2: the masters take their tablets. */
    if (send_tablets(c, WIRE_OP_TAKE_TABLET, copy) != 0) {
        CRAM_WARN("create table '%s': a master did not take its tablet; rolling back", rq->name);
        create_rollback(c, copy, intent);
        post_reply(c, j->rpc, CRAM_RETRY, NULL, 0);
        goto out_free;
    }
    coord_fault_point("coordinator.create_table.after_take_tablet");

    /* Step 3: the table becomes visible; the intent is done. */
    char path[COORD_MAX_NAME + 16];
    snprintf(path, sizeof(path), "tables/%s", rq->name);
    struct zks_op ops3[2] = {
        { .kind = ZKS_CREATE, .path = path, .data = packed, .len = plen },
        { .kind = ZKS_DELETE, .path = intent },
    };
    rc = zks_commit(c->zk, ops3, 2);
    if (rc != ZOK) {
        int32_t st = zk_failure(c, rc, "create table record");
        if (!atomic_load(&c->fatal))
            create_rollback(c, copy, intent);
        post_reply(c, j->rpc, st, NULL, 0);
        goto out_free;
    }
    if (add_table(c, copy) != 0) {
        post_reply(c, j->rpc, CRAM_NO_MEMORY, NULL, 0);
        goto out_free;
    }
    log_table("created", copy);
    copy = NULL;
    post_table_id(c, j->rpc, id);

out_free:
    if (copy != NULL)
        cram__table_record__free_unpacked(copy, NULL);
    free(packed);
    free(ibuf);
}

/* Drop table t (still in the in-memory list; the caller removes it on
 * CRAM_OK) through the intent protocol.  Returns a status for the client;
 * anything but CRAM_OK means nothing changed. */
static int32_t drop_table_record(coord *c, const Cram__TableRecord *t)
{
    Cram__IntentRecord in = CRAM__INTENT_RECORD__INIT;
    in.kind = CRAM__INTENT_KIND__INTENT_DROP_TABLE;
    in.table = (Cram__TableRecord *)t;
    size_t ilen = cram__intent_record__get_packed_size(&in);
    uint8_t *ibuf = malloc(ilen);
    if (ibuf == NULL)
        return CRAM_NO_MEMORY;
    cram__intent_record__pack(&in, ibuf);
    char intent[128];
    char path[COORD_MAX_NAME + 16];
    snprintf(path, sizeof(path), "tables/%s", t->name);
    struct zks_op ops1[2] = {
        { .kind = ZKS_CREATE, .path = "intents/i-", .data = ibuf, .len = ilen, .sequential = true,
          .created = intent, .created_len = sizeof(intent) },
        { .kind = ZKS_DELETE, .path = path },
    };
    int rc = zks_commit(c->zk, ops1, 2);
    free(ibuf);
    if (rc != ZOK)
        return zk_failure(c, rc, "drop table intent");
    coord_fault_point("coordinator.drop_table.after_intent");
    int failed = send_tablets(c, WIRE_OP_DROP_TABLET, t);
    if (failed)
        CRAM_WARN("drop table '%s': %d tablets could not be dropped on their masters", t->name, failed);
    coord_fault_point("coordinator.drop_table.after_drop_tablet");
    struct zks_op done = { .kind = ZKS_DELETE, .path = intent };
    rc = zks_commit(c->zk, &done, 1);
    if (rc != ZOK)
        zk_failure(c, rc, "drop table intent removal");
    return CRAM_OK;
}

static void do_drop_table(coord *c, struct coord_job *j)
{
    const Cram__TableNameRequest *rq = (const Cram__TableNameRequest *)j->msg;
    ssize_t ti = find_table_name(c, rq->name);
    if (ti < 0) {
        post_reply(c, j->rpc, CRAM_OK, NULL, 0);
        return;
    }
    Cram__TableRecord *t = c->tables[ti];
    int32_t st = drop_table_record(c, t);
    /* drop_table_record fails only before its first write, so on failure
     * nothing changed and the table stays. */
    if (st == CRAM_OK) {
        log_table("dropped", t);
        cram__table_record__free_unpacked(take_table(c, (size_t)ti), NULL);
    }
    post_reply(c, j->rpc, st, NULL, 0);
}

static void do_get_table_id(coord *c, struct coord_job *j)
{
    const Cram__TableNameRequest *rq = (const Cram__TableNameRequest *)j->msg;
    ssize_t ti = find_table_name(c, rq->name);
    if (ti < 0)
        post_reply(c, j->rpc, CRAM_TABLE_DOESNT_EXIST, NULL, 0);
    else
        post_table_id(c, j->rpc, c->tables[ti]->table_id);
}

static void do_get_table_config(coord *c, struct coord_job *j)
{
    const Cram__TableConfigRequest *rq = (const Cram__TableConfigRequest *)j->msg;
    ssize_t ti = find_table_id(c, rq->table_id);
    if (ti < 0) {
        post_reply(c, j->rpc, CRAM_TABLE_DOESNT_EXIST, NULL, 0);
        return;
    }
    const Cram__TableRecord *t = c->tables[ti];
    Cram__TabletLocation *locs = calloc(t->n_tablets + 1, sizeof(*locs));
    Cram__TabletLocation **lp = calloc(t->n_tablets + 1, sizeof(*lp));
    if (locs == NULL || lp == NULL) {
        post_reply(c, j->rpc, CRAM_NO_MEMORY, NULL, 0);
        goto out_free;
    }
    for (size_t i = 0; i < t->n_tablets; i++) {
        cram__tablet_location__init(&locs[i]);
        locs[i].tablet = t->tablets[i];
        struct coord_srv *s = find_server(c, t->tablets[i]->server_id);
        if (s != NULL) {
            locs[i].n_locators = s->e->n_locators;
            locs[i].locators = s->e->locators;
        }
        lp[i] = &locs[i];
    }
    Cram__TableConfig cfg = CRAM__TABLE_CONFIG__INIT;
    cfg.table_id = t->table_id;
    cfg.name = t->name;
    cfg.n_tablets = t->n_tablets;
    cfg.tablets = lp;
    post_msg(c, j->rpc, &cfg.base);
out_free:
    free(locs);
    free(lp);
}

static void do_list_tables(coord *c, struct coord_job *j)
{
    Cram__TableList l = CRAM__TABLE_LIST__INIT;
    l.n_tables = c->n_tables;
    l.tables = c->tables;
    post_msg(c, j->rpc, &l.base);
}

/* ---------------------------------------------------------------------
 * Start-up (worker thread): claim leadership, load, finish intents, resync
 * ------------------------------------------------------------------- */

static int load_settings(coord *c)
{
    uint8_t *data;
    size_t len;
    int rc = zks_get(c->zk, "settings", &data, &len);
    if (rc != ZOK && rc != ZNONODE)
        return rc;
    bool exists = rc == ZOK;
    bool write = !exists || c->cfg.replicas_set || c->cfg.durability_set;
    if (exists) {
        Cram__ClusterSettings *s = cram__cluster_settings__unpack(NULL, len, data);
        if (s != NULL) {
            if (!c->cfg.replicas_set)
                c->settings.replicas = s->replicas;
            if (!c->cfg.durability_set && (strcmp(s->durability, "buffered") == 0 ||
                                           strcmp(s->durability, "sync") == 0))
                snprintf(c->durability, sizeof(c->durability), "%s", s->durability);
            cram__cluster_settings__free_unpacked(s, NULL);
        } else {
            CRAM_WARN("stored cluster settings are corrupt; rewriting them");
            write = true;
        }
    }
    free(data);
    c->settings.durability = c->durability;
    if (!write)
        return ZOK;
    uint8_t buf[64];
    size_t blen = cram__cluster_settings__get_packed_size(&c->settings);
    CRAM_ASSERT(blen <= sizeof(buf));
    cram__cluster_settings__pack(&c->settings, buf);
    struct zks_op op = { .kind = exists ? ZKS_SET : ZKS_CREATE, .path = "settings", .data = buf, .len = blen };
    return zks_commit(c->zk, &op, 1);
}

static int load_ids(coord *c)
{
    uint8_t *data;
    size_t len;
    int rc = zks_get(c->zk, "ids", &data, &len);
    if (rc == ZNONODE) {
        c->next_table_id = 1;
        c->next_server_index = 1;
        c->server_list_version = 0;
        uint8_t buf[64];
        size_t blen;
        ids_pack(c, 1, 1, 0, buf, sizeof(buf), &blen);
        struct zks_op op = { .kind = ZKS_CREATE, .path = "ids", .data = buf, .len = blen };
        return zks_commit(c->zk, &op, 1);
    }
    if (rc != ZOK)
        return rc;
    Cram__IdCounters *ids = cram__id_counters__unpack(NULL, len, data);
    free(data);
    if (ids == NULL) {
        CRAM_ERROR("ZooKeeper record %s/ids is corrupt", zks_root(c->zk));
        return ZMARSHALLINGERROR;
    }
    c->next_table_id = ids->next_table_id ? ids->next_table_id : 1;
    c->next_server_index = ids->next_server_index ? ids->next_server_index : 1;
    c->server_list_version = ids->server_list_version;
    cram__id_counters__free_unpacked(ids, NULL);
    return ZOK;
}

/* Load every record of directory dir with unpack; add each with add. */
static int load_dir(coord *c, const char *dir, const ProtobufCMessageDescriptor *d,
                    int (*add)(coord *, ProtobufCMessage *))
{
    char **names;
    int n;
    int rc = zks_children(c->zk, dir, &names, &n);
    if (rc != ZOK)
        return rc;
    for (int i = 0; i < n && rc == ZOK; i++) {
        char path[COORD_MAX_NAME + 32];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        uint8_t *data;
        size_t len;
        rc = zks_get(c->zk, path, &data, &len);
        if (rc == ZNONODE) {
            rc = ZOK;
            continue;
        }
        if (rc != ZOK)
            break;
        ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, data);
        free(data);
        if (m == NULL) {
            CRAM_ERROR("ZooKeeper record %s/%s is corrupt; ignored", zks_root(c->zk), path);
            continue;
        }
        if (add(c, m) != 0) {
            protobuf_c_message_free_unpacked(m, NULL);
            rc = ZSYSTEMERROR;
        }
    }
    zks_free_names(names, n);
    return rc;
}

static int add_server_msg(coord *c, ProtobufCMessage *m)
{
    Cram__ServerEntry *e = (Cram__ServerEntry *)m;
    if (e->n_locators == 0 || find_server(c, e->server_id) != NULL) {
        CRAM_WARN("ignoring bad or duplicate server record %lu", (unsigned long)e->server_id);
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
    }
    if (coord_server_index(e->server_id) >= c->next_server_index)
        c->next_server_index = coord_server_index(e->server_id) + 1;
    return add_server(c, e);
}

static int add_table_msg(coord *c, ProtobufCMessage *m)
{
    Cram__TableRecord *t = (Cram__TableRecord *)m;
    if (!coord_name_valid(t->name) || find_table_name(c, t->name) >= 0) {
        CRAM_WARN("ignoring bad or duplicate table record '%s'", t->name);
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
    }
    if (t->table_id >= c->next_table_id)
        c->next_table_id = t->table_id + 1;
    return add_table(c, t);
}

/* Finish one intent found at start-up (a previous coordinator died midway). */
static int finish_intent(coord *c, const char *name)
{
    char path[128];
    snprintf(path, sizeof(path), "intents/%s", name);
    uint8_t *data;
    size_t len;
    int rc = zks_get(c->zk, path, &data, &len);
    if (rc == ZNONODE)
        return ZOK;
    if (rc != ZOK)
        return rc;
    Cram__IntentRecord *in = cram__intent_record__unpack(NULL, len, data);
    free(data);
    struct zks_op del = { .kind = ZKS_DELETE, .path = path };
    if (in == NULL || in->table == NULL || !coord_name_valid(in->table->name)) {
        CRAM_WARN("intent %s is corrupt; removing it", name);
        if (in)
            cram__intent_record__free_unpacked(in, NULL);
        return zks_commit(c->zk, &del, 1);
    }
    Cram__TableRecord *t = in->table;
    ssize_t ti = find_table_name(c, t->name);
    if (t->table_id >= c->next_table_id)
        c->next_table_id = t->table_id + 1;
    if (in->kind == CRAM__INTENT_KIND__INTENT_CREATE_TABLE) {
        if (ti >= 0) {
            /* The name was taken by a later create: this one is abandoned,
             * and its masters may hold its tablets. */
            if (c->tables[ti]->table_id != t->table_id)
                send_tablets(c, WIRE_OP_DROP_TABLET, t);
            rc = zks_commit(c->zk, &del, 1);
        } else {
            uint8_t *packed = NULL;
            size_t plen = 0;
            Cram__TableRecord *copy = (Cram__TableRecord *)pb_clone(&t->base, &packed, &plen);
            char tpath[COORD_MAX_NAME + 16];
            snprintf(tpath, sizeof(tpath), "tables/%s", t->name);
            struct zks_op ops[2] = {
                { .kind = ZKS_CREATE, .path = tpath, .data = packed, .len = plen },
                del,
            };
            rc = copy ? zks_commit(c->zk, ops, 2) : ZSYSTEMERROR;
            free(packed);
            if (rc == ZOK && add_table(c, copy) == 0) {
                log_table("finished creating", copy);
            } else if (copy) {
                cram__table_record__free_unpacked(copy, NULL);
            }
        }
    } else {
        /* Drop: the record must go (if it is still this table), the masters
         * drop the tablets, then the intent goes. */
        if (ti >= 0 && c->tables[ti]->table_id == t->table_id) {
            char tpath[COORD_MAX_NAME + 16];
            snprintf(tpath, sizeof(tpath), "tables/%s", t->name);
            struct zks_op op = { .kind = ZKS_DELETE, .path = tpath };
            rc = zks_commit(c->zk, &op, 1);
            if (rc == ZOK)
                cram__table_record__free_unpacked(take_table(c, (size_t)ti), NULL);
        }
        if (rc == ZOK) {
            send_tablets(c, WIRE_OP_DROP_TABLET, t);
            rc = zks_commit(c->zk, &del, 1);
            if (rc == ZOK)
                log_table("finished dropping", t);
        }
    }
    cram__intent_record__free_unpacked(in, NULL);
    return rc;
}

struct confirm_arg {
    coord *c;
    uint64_t id;
    int *pending;
};

static void confirm_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct confirm_arg *a = arg;
    struct coord_srv *s = a->c->closing ? NULL : find_server(a->c, a->id);
    int32_t status = resp_status(st, resp, len);
    /* any answer but "not that server" (WRONG_SERVER; RETRY: no id yet) */
    if (s != NULL && st == CRAM_OK && status != CRAM_WRONG_SERVER && status != CRAM_RETRY)
        s->confirmed = true;
    (*a->pending)--;
    free(a);
}

/* Start-up: one PING naming its id to every server listed as up, all at
 * once; those that answer are confirmed, the others are verified (a server
 * restarted with a new id answers CRAM_WRONG_SERVER, a dead one nothing). */
static void confirm_servers(coord *c)
{
    int pending = 0;
    for (size_t i = 0; i < c->n_servers; i++) {
        struct coord_srv *s = &c->servers[i];
        if (s->e->status != CRAM__SERVER_STATUS__SERVER_UP)
            continue;
        tp_session *sess = server_session(c, s);
        struct confirm_arg *a = malloc(sizeof(*a));
        if (sess == NULL || a == NULL) {
            free(a);
            continue;
        }
        *a = (struct confirm_arg){ c, s->e->server_id, &pending };
        struct {
            struct wire_req_hdr h;
            struct wire_target t;
        } WIRE_PACKED req = { { .opcode = WIRE_OP_PING, .service = WIRE_SVC_PING }, { s->e->server_id } };
        struct iovec iov = { &req, sizeof(req) };
        if (tp_send(sess, &iov, 1, c->vcfg.probe_timeout_ms, confirm_done, a) != CRAM_OK) {
            free(a);
            continue;
        }
        pending++;
    }
    while (pending > 0)
        tp_loop_poll(c->wloop, 100);
    for (size_t i = 0; i < c->n_servers; i++) {
        struct coord_srv *s = &c->servers[i];
        if (s->e->status == CRAM__SERVER_STATUS__SERVER_UP && !s->confirmed)
            verify_start(c, s, "it did not answer the new coordinator's PING");
    }
}

static int startup(coord *c)
{
    char err[256];
    c->zk = zks_open_session(c->cfg.zk_hosts, c->cluster, (uint32_t)clock_test_scaled_ms(COORD_ZK_CONNECT_MS),
                             c->cfg.zk_session_ms, err, sizeof(err));
    if (c->zk == NULL) {
        CRAM_ERROR("%s", err);
        return -1;
    }
    int rc;
    if (c->cfg.reset) {
        rc = zks_wipe(c->zk);
        if (rc != ZOK) {
            CRAM_ERROR("--reset: cannot wipe %s: %s", zks_root(c->zk), zerror(rc));
            return -1;
        }
        CRAM_INFO("--reset: wiped %s", zks_root(c->zk));
    }
    rc = zks_ensure_layout(c->zk);
    /* Election (ephemeral sequential nodes) orders the candidates; the
     * winner claims leadership, which bumps the epoch that fences every
     * later write (zkstore.h). */
    if (rc == ZOK) {
        c->el = elect_join(c->zk, c->locator, &rc);
        if (c->el != NULL) {
            CRAM_INFO("joined the election as %s (ZooKeeper session %u ms)", elect_node(c->el),
                      zks_session_ms(c->zk));
            rc = elect_wait(c->el, &c->stop_flag);
        }
    }
    if (rc == ZOK)
        rc = zks_claim(c->zk, c->locator, &c->stop_flag);
    if (rc != ZOK) {
        if (rc != ZCLOSING)
            CRAM_ERROR("cannot become leader under %s: %s", zks_root(c->zk), zerror(rc));
        if (rc == ZSESSIONEXPIRED || rc == ZNONODE || rc == ZINVALIDSTATE || rc == ZCONNECTIONLOSS ||
            rc == ZOPERATIONTIMEOUT)
            atomic_store(&c->lost, 1);  /* a standby whose session ended: may join again */
        return -1;
    }
    CRAM_INFO("won the election (%s): leader with epoch %lu", elect_node(c->el),
              (unsigned long)zks_epoch(c->zk));
    rc = load_settings(c);
    if (rc == ZOK)
        rc = load_ids(c);
    uint64_t stored_table_id = c->next_table_id;
    uint32_t stored_index = c->next_server_index;
    if (rc == ZOK)
        rc = load_dir(c, "servers", &cram__server_entry__descriptor, add_server_msg);
    if (rc == ZOK)
        rc = load_dir(c, "tables", &cram__table_record__descriptor, add_table_msg);
    if (rc != ZOK) {
        CRAM_ERROR("cannot load cluster state from %s: %s", zks_root(c->zk), rc == ZKS_FENCED ? "fenced" : zerror(rc));
        return -1;
    }
    char **names;
    int n;
    rc = zks_children(c->zk, "intents", &names, &n);
    for (int i = 0; i < n && rc == ZOK; i++)
        rc = finish_intent(c, names[i]);
    zks_free_names(names, n);
    /* Ids seen in records and intents are never handed out again, even if
     * the stored counters lag behind them. */
    if (rc == ZOK && (c->next_table_id != stored_table_id || c->next_server_index != stored_index)) {
        uint8_t buf[64];
        size_t blen;
        ids_pack(c, c->next_table_id, c->next_server_index, c->server_list_version, buf, sizeof(buf), &blen);
        struct zks_op op = { .kind = ZKS_SET, .path = "ids", .data = buf, .len = blen };
        rc = zks_commit(c->zk, &op, 1);
    }
    if (rc == ZOK)
        rc = load_recoveries(c);
    if (rc != ZOK) {
        CRAM_ERROR("cannot finish intents: %s", rc == ZKS_FENCED ? "fenced" : zerror(rc));
        return -1;
    }
    CRAM_INFO("coordinator leads cluster '%s' (epoch %lu) at %s: %zu servers, %zu tables, "
              "replicas %u, durability %s", c->cluster, (unsigned long)zks_epoch(c->zk), c->locator,
              c->n_servers, c->n_tables, c->settings.replicas, c->settings.durability);
    /* Which servers are still at their locators (a PING naming each id);
     * only those get TAKE_TABLET, the others are verified. */
    confirm_servers(c);
    /* Make the masters' ownership match ZooKeeper. */
    int failed = send_tablets_many(c, WIRE_OP_TAKE_TABLET, c->tables, c->n_tables);
    if (failed)
        CRAM_WARN("re-sending TAKE_TABLET: %d tablets failed (their owners are unreachable)", failed);
    /* Every server that is up gets the whole list; one that cannot be
     * reached is verified (and declared crashed if it is gone). */
    push_full(c, NULL);
    c->recovery_scan_needed = true;
    return 0;
}

/* ---------------------------------------------------------------------
 * Worker thread
 * ------------------------------------------------------------------- */

static void free_job(struct coord_job *j)
{
    if (j->msg != NULL)
        protobuf_c_message_free_unpacked(j->msg, NULL);
    free(j);
}

static void handle_job(coord *c, struct coord_job *j)
{
    switch (j->opcode) {
    case WIRE_OP_ENLIST_SERVER:    do_enlist(c, j); break;
    case WIRE_OP_GET_SERVER_LIST:  do_server_list(c, j); break;
    case WIRE_OP_CREATE_TABLE:     do_create_table(c, j); break;
    case WIRE_OP_DROP_TABLE:       do_drop_table(c, j); break;
    case WIRE_OP_GET_TABLE_ID:     do_get_table_id(c, j); break;
    case WIRE_OP_GET_TABLE_CONFIG: do_get_table_config(c, j); break;
    case WIRE_OP_LIST_TABLES:      do_list_tables(c, j); break;
    case WIRE_OP_HINT_SERVER_CRASHED: do_hint(c, j); break;
    case WIRE_OP_SET_MASTER_RECOVERY_INFO: do_recovery_info(c, j); break;
    case WIRE_OP_RECOVERY_MASTER_FINISHED: do_recovery_finished(c, j); break;
    case WIRE_OP_GET_RECOVERY_STATUS: do_recovery_status(c, j); break;
    default:
        post_reply(c, j->rpc, CRAM_UNIMPLEMENTED_REQUEST, NULL, 0);
        break;
    }
}

/* ZooKeeper has been unreachable for at least the session timeout: the
 * session may have expired on the server and another coordinator may lead,
 * so this one answers nothing from its (possibly stale) state until the
 * connection comes back (same session: it resumes) or the expiry is known
 * (it steps down).  Shorter outages are served from memory; writes fail
 * with CRAM_RETRY until ZooKeeper is back. */
static bool zk_away_too_long(coord *c)
{
    uint64_t d = zks_disconnected_ms(c->zk);
    uint32_t s = zks_session_ms(c->zk);
    return d > 0 && d >= (s ? s : 6000);
}

/* The worker turns at least once a second; a longer gap means the process
 * was frozen (SIGSTOP, a paused VM) or starved, or a job ran long.  Its
 * session may have expired meanwhile and another coordinator may lead, even
 * if ZooKeeper's client has not said so yet: before answering the next
 * request it confirms with one read at ZooKeeper that the leader record is
 * still its own (the read fails on an expired session). */
#define COORD_FREEZE_MS 1500

static int32_t confirm_leadership(coord *c)
{
    int rc = zks_check_leader(c->zk);
    if (rc == ZOK) {
        c->confirm = false;
        return CRAM_OK;
    }
    return zk_failure(c, rc, "confirming leadership after a pause");
}

static void *worker_main(void *arg)
{
    coord *c = arg;
    if (startup(c) != 0) {
        if (!atomic_load(&c->stopping))
            atomic_store(&c->fatal, 1);
        coord_stop(c);
    }
    for (;;) {
        uint64_t now = clock_mono_ms();
        if (c->tick_ms != 0 && now - c->tick_ms > COORD_FREEZE_MS)
            c->confirm = true;
        c->tick_ms = now;
        pthread_mutex_lock(&c->qmu);
        struct coord_job *j = c->qhead;
        if (j != NULL) {
            c->qhead = j->next;
            c->qlen--;
            if (c->qhead == NULL)
                c->qtail = NULL;
        }
        pthread_mutex_unlock(&c->qmu);
        if (j == NULL) {
            if (atomic_load(&c->stopping))
                break;                   /* stopping and the queue is empty */
            /* Idle: housekeeping, then wait in the worker's loop for RPC
             * completions, timers and new requests (on_request wakes it);
             * at least once a second, to notice an expired ZooKeeper session. */
            int wait = coord_maintain(c);
            tp_loop_poll(c->wloop, wait);
            if (c->zk != NULL && zks_expired(c->zk) && !atomic_load(&c->stopping)) {
                CRAM_ERROR("ZooKeeper session expired: lost leadership; stopping");
                atomic_store(&c->lost, 1);
                atomic_store(&c->fatal, 1);
                coord_stop(c);
            }
            continue;
        }
        if (atomic_load(&c->stopping) || zk_away_too_long(c) ||
            (c->confirm && confirm_leadership(c) != CRAM_OK))
            post_reply(c, j->rpc, CRAM_RETRY, NULL, 0);
        else
            handle_job(c, j);
        free_job(j);
        if (!atomic_load(&c->stopping))
            coord_maintain(c);
    }
    return NULL;
}

/* ---------------------------------------------------------------------
 * Dispatch thread: validate, unpack, queue
 * ------------------------------------------------------------------- */

static bool enlist_valid(const Cram__EnlistServerRequest *rq)
{
    if (rq->n_locators == 0 || rq->n_locators > COORD_MAX_LOCATORS)
        return false;
    for (size_t i = 0; i < rq->n_locators; i++)
        if (!coord_locator_valid(rq->locators[i]))
            return false;
    if (rq->services == 0 || (rq->services & ~(COORD_SVC_MASTER | COORD_SVC_BACKUP)) != 0)
        return false;
    return coord_label_valid(rq->failure_domain);
}

/* Unpack and validate the body of a coordinator request.  *msg is NULL for
 * bodiless requests.  Returns false for a malformed request. */
static bool unpack_request(uint16_t op, const uint8_t *body, size_t len, ProtobufCMessage **msg)
{
    *msg = NULL;
    switch (op) {
    case WIRE_OP_GET_SERVER_LIST:
    case WIRE_OP_LIST_TABLES:
    case WIRE_OP_GET_RECOVERY_STATUS:
        return true;
    case WIRE_OP_RECOVERY_MASTER_FINISHED: {
        Cram__RecoveryMasterFinished *rq = cram__recovery_master_finished__unpack(NULL, len, body);
        *msg = (ProtobufCMessage *)rq;
        return rq != NULL && rq->server_id != 0 && rq->recovery_id != 0;
    }
    case WIRE_OP_ENLIST_SERVER: {
        Cram__EnlistServerRequest *rq = cram__enlist_server_request__unpack(NULL, len, body);
        *msg = (ProtobufCMessage *)rq;
        return rq != NULL && enlist_valid(rq);
    }
    case WIRE_OP_CREATE_TABLE: {
        Cram__CreateTableRequest *rq = cram__create_table_request__unpack(NULL, len, body);
        *msg = (ProtobufCMessage *)rq;
        return rq != NULL && coord_name_valid(rq->name) && rq->server_span <= COORD_MAX_SPAN;
    }
    case WIRE_OP_DROP_TABLE:
    case WIRE_OP_GET_TABLE_ID: {
        Cram__TableNameRequest *rq = cram__table_name_request__unpack(NULL, len, body);
        *msg = (ProtobufCMessage *)rq;
        return rq != NULL && coord_name_valid(rq->name);
    }
    case WIRE_OP_GET_TABLE_CONFIG: {
        Cram__TableConfigRequest *rq = cram__table_config_request__unpack(NULL, len, body);
        *msg = (ProtobufCMessage *)rq;
        return rq != NULL;
    }
    case WIRE_OP_HINT_SERVER_CRASHED: {
        Cram__ServerIdRequest *rq = cram__server_id_request__unpack(NULL, len, body);
        *msg = (ProtobufCMessage *)rq;
        return rq != NULL && rq->server_id != 0;
    }
    case WIRE_OP_SET_MASTER_RECOVERY_INFO: {
        Cram__MasterRecoveryInfo *rq = cram__master_recovery_info__unpack(NULL, len, body);
        *msg = (ProtobufCMessage *)rq;
        return rq != NULL && rq->server_id != 0;
    }
    default:
        return false;
    }
}

static void on_request(void *arg, tp_rpc *rpc)
{
    coord *c = arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    struct wire_req_hdr h;
    if (req == NULL || len < sizeof(h)) {
        reply_now(rpc, CRAM_REQUEST_FORMAT_ERROR, NULL, 0);
        return;
    }
    memcpy(&h, req, sizeof(h));
    if (h.opcode == WIRE_OP_PING && (h.service == WIRE_SVC_PING || h.service == WIRE_SVC_COORDINATOR)) {
        reply_now(rpc, CRAM_OK, NULL, 0);
        return;
    }
    if (h.service != WIRE_SVC_COORDINATOR ||
        ((h.opcode < WIRE_OP_ENLIST_SERVER || h.opcode > WIRE_OP_RECOVERY_MASTER_FINISHED) &&
         h.opcode != WIRE_OP_GET_RECOVERY_STATUS)) {
        reply_now(rpc, CRAM_UNIMPLEMENTED_REQUEST, NULL, 0);
        return;
    }
    ProtobufCMessage *msg;
    if (!unpack_request(h.opcode, req + sizeof(h), len - sizeof(h), &msg)) {
        CRAM_DEBUG("malformed %s request from %s", wire_opcode_name(h.opcode), tp_rpc_peer(rpc));
        if (msg != NULL)
            protobuf_c_message_free_unpacked(msg, NULL);
        reply_now(rpc, CRAM_REQUEST_FORMAT_ERROR, NULL, 0);
        return;
    }
    struct coord_job *j = malloc(sizeof(*j));
    if (j == NULL) {
        if (msg != NULL)
            protobuf_c_message_free_unpacked(msg, NULL);
        reply_now(rpc, CRAM_NO_MEMORY, NULL, 0);
        return;
    }
    *j = (struct coord_job){ NULL, h.opcode, rpc, msg };
    pthread_mutex_lock(&c->qmu);
    if (atomic_load(&c->stopping) || c->qlen >= COORD_MAX_QUEUED) {
        pthread_mutex_unlock(&c->qmu);
        free_job(j);
        reply_now(rpc, CRAM_RETRY, NULL, 0);
        return;
    }
    c->qlen++;
    if (c->qtail)
        c->qtail->next = j;
    else
        c->qhead = j;
    c->qtail = j;
    pthread_mutex_unlock(&c->qmu);
    tp_loop_wake(c->wloop);         /* the worker waits in its loop */
}

/* ---------------------------------------------------------------------
 * Life cycle
 * ------------------------------------------------------------------- */

coord *coord_create(const struct coord_config *cfg, char *err, size_t errlen)
{
    const char *cluster = cfg->cluster ? cfg->cluster : "main";
    if (!coord_name_valid(cluster)) {
        snprintf(err, errlen, "invalid cluster name '%s'", cluster);
        return NULL;
    }
    const char *dur = cfg->durability ? cfg->durability : "buffered";
    if (strcmp(dur, "buffered") != 0 && strcmp(dur, "sync") != 0) {
        snprintf(err, errlen, "durability must be 'buffered' or 'sync', not '%s'", dur);
        return NULL;
    }
    coord *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->cfg = *cfg;
    snprintf(c->cluster, sizeof(c->cluster), "%s", cluster);
    snprintf(c->durability, sizeof(c->durability), "%s", dur);
    cram__cluster_settings__init(&c->settings);
    c->settings.replicas = cfg->replicas;
    c->settings.durability = c->durability;
    struct fdet_verify_config vc = {
        .gone_tries = cfg->verify_tries,
        .gone_interval_ms = cfg->verify_interval_ms,
        .probe_timeout_ms = cfg->verify_timeout_ms,
        .silent_ms = cfg->verify_silent_ms,
    };
    c->vcfg = fdet_verify_defaults(&vc);
    c->vcfg.gone_interval_ms = (uint32_t)clock_test_scaled_ms(c->vcfg.gone_interval_ms);
    c->vcfg.probe_timeout_ms = (uint32_t)clock_test_scaled_ms(c->vcfg.probe_timeout_ms);
    c->vcfg.silent_ms = (uint32_t)clock_test_scaled_ms(c->vcfg.silent_ms);
    c->partition_bytes = cfg->partition_bytes ? cfg->partition_bytes : RCV_DEFAULT_PARTITION_BYTES;
    c->partition_objects = cfg->partition_objects ? cfg->partition_objects : RCV_DEFAULT_PARTITION_OBJECTS;
    c->recovery_retry_ms = clock_test_scaled_ms(cfg->recovery_retry_ms ? cfg->recovery_retry_ms
                                                                       : COORD_RECOVERY_RETRY_MS);
    c->stats_interval_ms = cfg->stats_interval_ms == UINT32_MAX ? 0
                         : cfg->stats_interval_ms ? cfg->stats_interval_ms : COORD_STATS_MS;
    pthread_mutex_init(&c->qmu, NULL);

    c->loop = tp_loop_create();
    c->wloop = tp_loop_create();
    if (c->loop == NULL || c->wloop == NULL) {
        snprintf(err, errlen, "cannot create event loops");
        goto out_destroy;
    }
    tp_loop_set_poll_us(c->loop, cfg->poll_us);
    tp_loop_set_poll_us(c->wloop, 0);
    c->listener = tp_listen(c->loop, cfg->listen, on_request, c, err, errlen);
    if (c->listener == NULL)
        goto out_destroy;
    snprintf(c->locator, sizeof(c->locator), "%s", tp_listener_locator(c->listener));
    return c;

out_destroy:
    coord_destroy(c);
    return NULL;
}

const char *coord_locator(const coord *c) { return c->locator; }

bool coord_lost_leadership(const coord *c) { return atomic_load(&((coord *)c)->lost) != 0; }

void coord_stop(coord *c)
{
    pthread_mutex_lock(&c->qmu);
    atomic_store(&c->stopping, 1);
    c->stop_flag = 1;
    /* woken under qmu: coord_destroy takes qmu before freeing the loops */
    if (c->loop != NULL)
        tp_loop_wake(c->loop);
    if (c->wloop != NULL)
        tp_loop_wake(c->wloop);
    pthread_mutex_unlock(&c->qmu);
}

int coord_run(coord *c)
{
    if (pthread_create(&c->worker, NULL, worker_main, c) != 0) {
        CRAM_ERROR("cannot start the worker thread: %s", strerror(errno));
        return -1;
    }
    c->worker_started = 1;
    while (!atomic_load(&c->stopping))
        tp_loop_poll(c->loop, -1);
    pthread_join(c->worker, NULL);
    c->worker_started = 0;
    /* Deliver the replies the worker posted before it ended. */
    while (tp_loop_poll(c->loop, 0) > 0)
        ;
    return atomic_load(&c->fatal) ? -1 : 0;
}

void coord_destroy(coord *c)
{
    if (c == NULL)
        return;
    if (c->worker_started) {
        coord_stop(c);
        pthread_join(c->worker, NULL);
    }
    for (struct coord_job *j = c->qhead, *n; j != NULL; j = n) {
        n = j->next;
        reply_now(j->rpc, CRAM_RETRY, NULL, 0);
        free_job(j);
    }
    /* Sessions first (their outstanding RPCs complete now and may look at
     * any server), then pending probes' timers, then the entries. */
    c->closing = 1;
    for (size_t i = 0; i < c->n_servers; i++) {
        if (c->servers[i].sess != NULL)
            tp_session_close(c->servers[i].sess);
        c->servers[i].sess = NULL;
    }
    for (size_t i = 0; i < c->n_servers; i++) {
        struct coord_verify *v = c->servers[i].v;
        if (v != NULL) {
            if (v->timer)
                tp_timer_cancel(c->wloop, v->timer);
            free(v);
        }
        cram__server_entry__free_unpacked(c->servers[i].e, NULL);
        free(c->servers[i].will);
    }
    free(c->servers);
    for (size_t i = 0; i < c->n_recs; i++)
        rec_free(c->recs[i]);
    free(c->recs);
    for (size_t i = 0; i < c->n_done; i++)
        rec_free(c->done[i]);
    free(c->declare);
    for (size_t i = 0; i < c->n_tables; i++)
        cram__table_record__free_unpacked(c->tables[i], NULL);
    free(c->tables);
    if (c->listener != NULL)
        tp_listener_close(c->listener);
    /* a coord_stop still running in another thread wakes the loops under
     * qmu: wait for it, and make later ones skip the loops */
    pthread_mutex_lock(&c->qmu);
    tp_loop *loop = c->loop, *wloop = c->wloop;
    c->loop = NULL;
    c->wloop = NULL;
    pthread_mutex_unlock(&c->qmu);
    if (loop != NULL)
        tp_loop_destroy(loop);
    if (wloop != NULL)
        tp_loop_destroy(wloop);
    elect_free(c->el, false);       /* its node goes with the session */
    zks_close(c->zk);
    pthread_mutex_destroy(&c->qmu);
    free(c);
}
