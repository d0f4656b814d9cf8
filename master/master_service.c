/*
 * master_service.c -- RPC handlers of the master service (master_service.h).
 *
 * Every handler parses with master_wire.c (nothing from the network is used
 * before it is validated), checks the server id, runs the object manager
 * and replies at once through tp_rpc_reply.  A READ's value iovec points
 * straight into log memory: tp_rpc_reply copies or sends it before it
 * returns, and nothing can change the log in between (same thread) -- except
 * over rdma:, which sends it from the registered log (master/log_rdma.h)
 * and holds the cleaner's epochs until the send completes.
 *
 * Response shapes (what libcram's parsers accept):
 *   READ      always a full wire_read_resp (version set on reject-rule
 *             failures), value only with CRAM_OK
 *   WRITE, REMOVE, INCREMENT   always their full response struct
 *   multi-ops, ENUMERATE, control ops   bare wire_resp_hdr on failure
 *   malformed requests   bare wire_resp_hdr with CRAM_REQUEST_FORMAT_ERROR
 *                        (or CRAM_REQUEST_TOO_LARGE)
 *
 * Replication (master_set_replication, R > 0): a write-type request first
 * asks the replica manager whether the head can have R replicas (else
 * CRAM_RETRY, nothing appended); its response is then handed to
 * rm_reply_durable, which sends it once the bytes are on all R backups.
 * With R = 0 there is no replica manager and replies go out at once.
 *
 * Thread rule: a master_service and its objmgr belong to the dispatch
 * thread (see master_service.h); the response scratch buffer is reused by
 * every handler on that thread.
 */
#include "master/master_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cram.pb-c.h"
#include "common/clock.h"
#include "common/log.h"
#include "master/master_wire.h"
#include "master/log_rdma.h"
#include "master/objmgr.h"
#include "master/recovery.h"
#include "logcleaner/lc.h"
#include "master/replica_mgr.h"

#define MASTER_DEFAULT_SEGMENT   (8u * 1024 * 1024)
#define MASTER_DEFAULT_MEMORY    (1ull << 30)
#define MASTER_ENUM_DEFAULT      (256u * 1024)     /* ENUMERATE max_bytes 0 */
#define MULTI_PREFETCH           8                 /* multi-op items prefetched ahead */

struct master_service {
    objmgr  *om;
    uint64_t server_id;             /* 0 until enlisted */
    uint64_t server_list_version;   /* newest SERVER_LIST_UPDATE seen */
    uint64_t created_ms;
    uint32_t max_value;
    uint8_t *rbuf;                  /* response scratch (multi-ops, enumerate, stats) */
    size_t   rcap;
    replica_mgr *rm;                /* NULL: R = 0, replies at once */
    server_list *sl;                /* not owned; NULL until set */
    rec_mgr *rec;                   /* recovery-master side (RECOVER) */
    lc_cleaner *lc;                 /* log cleaner; NULL until master_set_replication */
    log_rdma *lr;                   /* log memory registered for rdma: (may be NULL) */
    struct lc_config lc_cfg;
    char coord_loc[512];            /* coordinator locator for the replica manager */
};

master_service *master_create(const struct master_config *cfg, char *err, size_t errlen)
{
    uint32_t seg = cfg->segment_bytes ? cfg->segment_bytes : MASTER_DEFAULT_SEGMENT;
    uint64_t mem = cfg->memory_bytes ? cfg->memory_bytes : MASTER_DEFAULT_MEMORY;
    uint32_t maxv = cfg->max_value_bytes;
    if (maxv == 0)
        maxv = CRAM_MAX_VALUE_LEN < seg / 2 ? CRAM_MAX_VALUE_LEN : seg / 2;
    if (maxv > seg / 2) {
        snprintf(err, errlen, "max value size %u is larger than half a segment (%u)", maxv, seg / 2);
        return NULL;
    }
    master_service *m = calloc(1, sizeof *m);
    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    struct om_config oc = { .memory_bytes = mem, .segment_bytes = seg, .max_value_bytes = maxv,
                            .hash_buckets = cfg->hash_buckets, .hugepages = cfg->hugepages,
                            .prefault = cfg->prefault,
                            .master_id = 0 };
    m->om = om_create(&oc, err, errlen);
    if (m->om == NULL) {
        free(m);
        return NULL;
    }
    m->lr = log_rdma_attach(om_log(m->om));
    m->rec = rec_create(m->om);
    if (m->rec == NULL) {
        snprintf(err, errlen, "out of memory");
        log_rdma_detach(m->lr);
        om_destroy(m->om);
        free(m);
        return NULL;
    }
    m->max_value = om_max_value_bytes(m->om);
    m->created_ms = clock_mono_ms();
    m->lc_cfg.threshold = cfg->cleaner_threshold > 0 ? cfg->cleaner_threshold : 0;
    m->lc_cfg.disabled = cfg->cleaner_threshold < 0;
    m->lc_cfg.disk_factor = cfg->cleaner_disk_factor;
    return m;
}

void master_destroy(master_service *m)
{
    if (m == NULL)
        return;
    log_rdma_detach(m->lr);         /* before the epochs and the log it names */
    lc_destroy(m->lc);              /* its worker first; it uses the log and rm */
    rec_destroy(m->rec);            /* before the replica manager it waits on */
    rm_destroy(m->rm);
    om_destroy(m->om);
    free(m->rbuf);
    free(m);
}

void master_set_server_id(master_service *m, uint64_t server_id)
{
    m->server_id = server_id;
    log_set_master_id(om_log(m->om), server_id);
    rec_set_server_id(m->rec, server_id);
    if (m->rm != NULL)
        rm_set_server_id(m->rm, server_id);
}

/* The log cleaner runs once the loop (and the replica manager, whose log
 * hook it chains) exist. */
static int start_cleaner(master_service *m, tp_loop *loop)
{
    char err[256] = "";
    m->lc = lc_create(loop, om_log(m->om), om_hashtable(m->om), m->rm, &m->lc_cfg, err, sizeof err);
    if (m->lc == NULL) {
        CRAM_ERROR("log cleaner: %s", err);
        return -1;
    }
    log_rdma_guard(m->lr, loop, lc_epochs(m->lc));
    return 0;
}

/* A write that found the log full: RETRY (the client retries) while the
 * cleaner can still make room, else CRAM_NO_TABLE_SPACE at once. */
static cram_status space(master_service *m, cram_status st)
{
    if (st == CRAM_NO_TABLE_SPACE && m->lc != NULL && lc_can_free(m->lc))
        return CRAM_RETRY;
    return st;
}

int master_set_replication(master_service *m, tp_loop *loop, uint32_t replicas, int sync)
{
    if (m->rm != NULL || replicas > RM_MAX_REPLICAS)
        return -1;
    rec_set_loop(m->rec, loop);     /* recovery RPCs run on the dispatch loop */
    if (replicas == 0)
        return start_cleaner(m, loop);
    struct rm_config rc = { .replicas = replicas, .sync = sync != 0 };
    m->rm = rm_create(loop, om_log(m->om), &rc);
    if (m->rm == NULL)
        return -1;
    rm_set_server_id(m->rm, m->server_id);
    if (m->coord_loc[0] != '\0')
        rm_set_coordinator(m->rm, m->coord_loc);
    if (m->sl != NULL && rm_set_server_list(m->rm, m->sl) != 0) {
        rm_destroy(m->rm);
        m->rm = NULL;
        return -1;
    }
    rec_set_replica_mgr(m->rec, m->rm);
    CRAM_INFO("replication: %u replicas per segment, durability %s", replicas,
              sync ? "sync" : "buffered");
    return start_cleaner(m, loop);
}

int master_set_server_list(master_service *m, server_list *sl)
{
    m->sl = sl;
    return m->rm != NULL ? rm_set_server_list(m->rm, sl) : 0;
}

void master_set_coordinator(master_service *m, const char *locator)
{
    snprintf(m->coord_loc, sizeof m->coord_loc, "%s", locator ? locator : "");
    rec_set_coordinator(m->rec, m->coord_loc);
    if (m->rm != NULL)
        rm_set_coordinator(m->rm, m->coord_loc);
}

struct replica_mgr *master_replica_mgr(master_service *m) { return m->rm; }
struct rec_mgr *master_recovery(master_service *m) { return m->rec; }

objmgr *master_objmgr(master_service *m) { return m->om; }
uint64_t master_server_list_version(const master_service *m) { return m->server_list_version; }

/* ---- helpers ----------------------------------------------------------- */

static void reply_status(tp_rpc *rpc, cram_status st)
{
    struct wire_resp_hdr h = { .status = (int32_t)st };
    struct iovec iov = { &h, sizeof h };
    tp_rpc_reply(rpc, &iov, 1);
}

/* Data path only: enlisted, and meant for this incarnation. */
static cram_status check_target(const master_service *m, uint64_t target)
{
    if (m->server_id == 0)
        return CRAM_RETRY;
    if (target != 0 && target != m->server_id)
        return CRAM_WRONG_SERVER;
    return CRAM_OK;
}

/* Write-type ops: with replication, the head must be able to have R
 * replicas before anything is appended. */
static cram_status check_writable(master_service *m)
{
    return m->rm != NULL ? rm_check_writable(m->rm) : CRAM_OK;
}

/* Reply to a write-type op.  attempted: the object manager ran (it may have
 * appended), so the reply waits until the log is durable up to here. */
static void reply_op(master_service *m, tp_rpc *rpc, const struct iovec *iov, int n, bool attempted)
{
    if (attempted && m->rm != NULL)
        rm_reply_durable(m->rm, rpc, iov, n);
    else
        tp_rpc_reply(rpc, iov, n);
}

/* Make the scratch buffer hold at least n bytes (n <= WIRE_MAX_MESSAGE). */
static int rbuf_reserve(master_service *m, size_t n)
{
    if (n <= m->rcap)
        return 0;
    size_t cap = m->rcap ? m->rcap : 64 * 1024;
    while (cap < n)
        cap *= 2;
    if (cap > WIRE_MAX_MESSAGE)
        cap = WIRE_MAX_MESSAGE;
    if (cap < n)
        return -1;
    uint8_t *nb = realloc(m->rbuf, cap);
    if (nb == NULL)
        return -1;
    m->rbuf = nb;
    m->rcap = cap;
    return 0;
}

/* ---- single-object ops -------------------------------------------------- */

static void handle_read(master_service *m, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct mw_key_op op;
    cram_status st = mw_parse_read(req, len, &op);
    if (st != CRAM_OK) {
        reply_status(rpc, st);
        return;
    }
    struct wire_read_resp r = { 0 };
    const void *val = NULL;
    uint32_t vlen = 0;
    uint64_t version = 0;
    st = check_target(m, op.target_server_id);
    if (st == CRAM_OK)
        st = om_read(m->om, op.table_id, op.key, op.key_len, &op.rules, &version, &val, &vlen);
    r.hdr.status = (int32_t)st;
    r.version = version;
    struct iovec iov[2] = { { &r, sizeof r }, { (void *)val, vlen } };
    if (st == CRAM_OK)
        r.value_len = vlen;
    tp_rpc_reply(rpc, iov, st == CRAM_OK && vlen > 0 ? 2 : 1);
}

static void reply_write(master_service *m, tp_rpc *rpc, cram_status st, uint64_t version,
                        bool attempted)
{
    struct wire_write_resp r = { .hdr.status = (int32_t)st, .pad = 0, .version = version };
    struct iovec iov = { &r, sizeof r };
    reply_op(m, rpc, &iov, 1, attempted);
}

static void handle_write(master_service *m, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct mw_write op;
    cram_status st = mw_parse_write(req, len, m->max_value, &op);
    if (st != CRAM_OK) {
        reply_status(rpc, st);
        return;
    }
    uint64_t version = 0;
    st = check_target(m, op.target_server_id);
    if (st == CRAM_OK)
        st = check_writable(m);
    bool attempted = st == CRAM_OK;
    if (attempted)
        st = space(m, om_write(m->om, op.table_id, op.key, op.key_len, op.value, op.value_len,
                               &op.rules, &version));
    reply_write(m, rpc, st, version, attempted);
}

static void handle_remove(master_service *m, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct mw_key_op op;
    cram_status st = mw_parse_remove(req, len, &op);
    if (st != CRAM_OK) {
        reply_status(rpc, st);
        return;
    }
    uint64_t version = 0;
    st = check_target(m, op.target_server_id);
    if (st == CRAM_OK)
        st = check_writable(m);
    bool attempted = st == CRAM_OK;
    if (attempted)
        st = space(m, om_remove(m->om, op.table_id, op.key, op.key_len, &op.rules, &version));
    reply_write(m, rpc, st, version, attempted);
}

static void handle_incr(master_service *m, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct mw_incr op;
    cram_status st = mw_parse_incr(req, len, &op);
    if (st != CRAM_OK) {
        reply_status(rpc, st);
        return;
    }
    struct wire_incr_resp r = { 0 };
    int64_t nv = 0;
    uint64_t version = 0;
    st = check_target(m, op.target_server_id);
    if (st == CRAM_OK)
        st = check_writable(m);
    bool attempted = st == CRAM_OK;
    if (attempted)
        st = space(m, om_increment(m->om, op.table_id, op.key, op.key_len, op.delta, &op.rules,
                                   &nv, &version));
    r.hdr.status = (int32_t)st;
    r.new_value = nv;
    r.version = version;
    struct iovec iov = { &r, sizeof r };
    reply_op(m, rpc, &iov, 1, attempted);
}

/* ---- multi-ops ---------------------------------------------------------- */

/*
 * Items are answered in request order.  MULTI_READ values are copied into
 * the response; once the response would pass WIRE_MAX_MESSAGE, the remaining
 * read items get CRAM_RETRY (libcram re-sends them), so the first item
 * always gets its value.
 */
static void handle_multi(master_service *m, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct mw_multi mm;
    cram_status st = mw_parse_multi(req, len, m->max_value, &mm);
    if (st == CRAM_OK)
        st = check_target(m, mm.target_server_id);
    bool writes = st == CRAM_OK && mm.opcode != WIRE_OP_MULTI_READ;
    if (st == CRAM_OK && writes)
        st = check_writable(m);
    size_t fixed = sizeof(struct wire_multi_resp) + (size_t)mm.count * sizeof(struct wire_multi_resp_item);
    if (st == CRAM_OK && rbuf_reserve(m, fixed) != 0)
        st = CRAM_NO_MEMORY;
    if (st != CRAM_OK) {
        reply_status(rpc, st);
        return;
    }
    size_t off = sizeof(struct wire_multi_resp);
    struct mw_multi_item it;
    bool full = false;
    /* a second cursor runs MULTI_PREFETCH items ahead, prefetching buckets,
     * so the cache misses of consecutive items overlap */
    struct mw_multi ahead = mm;
    struct mw_multi_item ait;
    for (int k = 0; k < MULTI_PREFETCH && mw_multi_next(&ahead, &ait) == 0; k++)
        om_prefetch(m->om, ait.table_id, ait.key, ait.key_len);
    for (uint32_t i = 0; mw_multi_next(&mm, &it) == 0; i++) {
        if (mw_multi_next(&ahead, &ait) == 0)
            om_prefetch(m->om, ait.table_id, ait.key, ait.key_len);
        struct wire_multi_resp_item ri = { .status = (int32_t)it.status, .value_len = 0, .version = 0 };
        const void *val = NULL;
        uint32_t vlen = 0;
        uint64_t version = 0;
        /* fixed-size items still to come after this one must fit too */
        size_t rest = (size_t)(mm.count - i - 1) * sizeof ri;
        if (it.status == CRAM_OK) {
            switch (mm.opcode) {
            case WIRE_OP_MULTI_READ:
                if (full) {
                    st = CRAM_RETRY;
                    break;
                }
                st = om_read(m->om, it.table_id, it.key, it.key_len, &it.rules, &version, &val, &vlen);
                if (st == CRAM_OK && off + sizeof ri + vlen + rest > WIRE_MAX_MESSAGE) {
                    full = true;
                    st = CRAM_RETRY;
                    version = 0;
                }
                break;
            case WIRE_OP_MULTI_WRITE:
                st = space(m, om_write(m->om, it.table_id, it.key, it.key_len, it.value,
                                       it.value_len, &it.rules, &version));
                break;
            default:
                st = space(m, om_remove(m->om, it.table_id, it.key, it.key_len, &it.rules,
                                        &version));
                break;
            }
            ri.status = (int32_t)st;
            ri.version = version;
            if (st == CRAM_OK && mm.opcode == WIRE_OP_MULTI_READ)
                ri.value_len = vlen;
        }
        if (rbuf_reserve(m, off + sizeof ri + ri.value_len) != 0) {
            /* out of memory growing the buffer for a read's value: answer
             * this and later reads RETRY (writes and removes never get here:
             * without values, the reservation above covers them) */
            ri.status = CRAM_RETRY;
            ri.value_len = 0;
            ri.version = 0;
            full = true;
            if (rbuf_reserve(m, off + sizeof ri) != 0) {
                reply_status(rpc, CRAM_NO_MEMORY);
                return;
            }
        }
        memcpy(m->rbuf + off, &ri, sizeof ri);
        off += sizeof ri;
        if (ri.value_len > 0) {
            memcpy(m->rbuf + off, val, ri.value_len);
            off += ri.value_len;
        }
    }
    struct wire_multi_resp h = { .hdr.status = CRAM_OK, .count = mm.count };
    memcpy(m->rbuf, &h, sizeof h);
    struct iovec iov = { m->rbuf, off };
    reply_op(m, rpc, &iov, 1, writes);
}

/* ---- enumerate ---------------------------------------------------------- */

struct enum_out {
    master_service *m;
    size_t off;
};

static int enum_emit(void *vctx, uint64_t key_hash, uint64_t version, const void *key,
                     uint16_t key_len, const void *value, uint32_t value_len)
{
    (void)key_hash;
    struct enum_out *o = vctx;
    size_t need = o->off + sizeof(struct wire_enum_item) + key_len + value_len;
    if (need > WIRE_MAX_MESSAGE || rbuf_reserve(o->m, need) != 0)
        return -1;
    struct wire_enum_item it = { .version = version, .value_len = value_len, .key_len = key_len, .pad = 0 };
    memcpy(o->m->rbuf + o->off, &it, sizeof it);
    o->off += sizeof it;
    memcpy(o->m->rbuf + o->off, key, key_len);
    o->off += key_len;
    if (value_len > 0)
        memcpy(o->m->rbuf + o->off, value, value_len);
    o->off += value_len;
    return 0;
}

static void handle_enum(master_service *m, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct mw_enum op;
    cram_status st = mw_parse_enum(req, len, &op);
    if (st == CRAM_OK)
        st = check_target(m, op.target_server_id);
    if (st == CRAM_OK && rbuf_reserve(m, sizeof(struct wire_enum_resp)) != 0)
        st = CRAM_NO_MEMORY;
    if (st != CRAM_OK) {
        reply_status(rpc, st);
        return;
    }
    uint64_t max = op.max_bytes ? op.max_bytes : MASTER_ENUM_DEFAULT;
    if (max > WIRE_MAX_MESSAGE - sizeof(struct wire_enum_resp))
        max = WIRE_MAX_MESSAGE - sizeof(struct wire_enum_resp);
    struct enum_out o = { m, sizeof(struct wire_enum_resp) };
    uint64_t next = 0;
    bool done = true;
    uint32_t count = 0;
    st = om_enumerate(m->om, op.table_id, op.tablet_start, op.tablet_end, op.cursor, max,
                      sizeof(struct wire_enum_item), enum_emit, &o, &next, &done, &count);
    if (st != CRAM_OK) {
        if (st == CRAM_INTERNAL_ERROR)
            CRAM_WARN("enumerate of table %llu: objects of one key hash exceed a message",
                      (unsigned long long)op.table_id);
        reply_status(rpc, st);
        return;
    }
    struct wire_enum_resp h = { .hdr.status = CRAM_OK, .count = count, .next_cursor = next,
                                .done = done ? 1 : 0 };
    memcpy(m->rbuf, &h, sizeof h);
    struct iovec iov = { m->rbuf, o.off };
    tp_rpc_reply(rpc, &iov, 1);
}

/* ---- control plane ------------------------------------------------------ */

static void handle_tablet(master_service *m, tp_rpc *rpc, const uint8_t *req, uint32_t len, bool take)
{
    size_t h = sizeof(struct wire_req_hdr);
    Cram__TabletOwnership *to = cram__tablet_ownership__unpack(NULL, len - h, req + h);
    if (to == NULL || to->tablet == NULL) {
        if (to != NULL)
            cram__tablet_ownership__free_unpacked(to, NULL);
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    const Cram__Tablet *t = to->tablet;
    cram_status st;
    if (t->start_hash > t->end_hash)
        st = CRAM_REQUEST_FORMAT_ERROR;
    else if (take && t->server_id != 0 && t->server_id != m->server_id)
        /* meant for another incarnation at this address (or we are not
         * enlisted yet): never take a dead server's tablets by mistake */
        st = m->server_id == 0 ? CRAM_RETRY : CRAM_WRONG_SERVER;
    else if (take)
        st = om_take_tablet(m->om, t->table_id, t->start_hash, t->end_hash,
                            t->state == CRAM__TABLET_STATE__TABLET_RECOVERING
                                ? OM_TABLET_RECOVERING : OM_TABLET_NORMAL);
    else
        st = om_drop_tablet(m->om, t->table_id, t->start_hash, t->end_hash);
    CRAM_INFO("%s tablet table %llu [%016llx, %016llx]: %s", take ? "take" : "drop",
              (unsigned long long)t->table_id, (unsigned long long)t->start_hash,
              (unsigned long long)t->end_hash, cram_status_name(st));
    cram__tablet_ownership__free_unpacked(to, NULL);
    reply_status(rpc, st);
}

static void handle_stats(master_service *m, tp_rpc *rpc)
{
    struct om_stats os;
    om_get_stats(m->om, &os);
    Cram__ServerStats s = CRAM__SERVER_STATS__INIT;
    s.server_id = m->server_id;
    s.memory_bytes = os.log.memory_bytes;
    s.log_bytes_used = os.log.bytes_used;
    s.live_bytes = os.live_bytes;
    s.objects = os.objects;
    s.segments_total = os.log.segments_total;
    s.segments_in_use = os.log.segments_in_use;
    s.segment_bytes = os.log.segment_bytes;
    s.reads = os.reads;
    s.writes = os.writes;
    s.removes = os.removes;
    s.increments = os.increments;
    s.tablets = os.tablets;
    s.hash_buckets = os.hash_buckets;
    s.uptime_ms = clock_mono_ms() - m->created_ms;
    s.memory_in_use = os.log.charged_bytes;
    if (m->lc != NULL) {
        struct lc_stats ls;
        lc_get_stats(m->lc, &ls);
        s.live_bytes = ls.live_bytes;        /* tombstones the cleaner dropped are gone */
        s.cleaner_bytes_copied = ls.bytes_copied;
        s.cleaner_bytes_freed = ls.bytes_freed;
        s.cleaner_time_ms = ls.time_ns / 1000000;
        s.segments_compacted = ls.segments_compacted;
        s.segments_cleaned = ls.segments_cleaned;
        s.cleaner_survivors = ls.survivors;
        s.cleaner_retries = ls.retries;
        s.segments_in_log = ls.segments_in_log;
    }
    if (m->rm != NULL) {
        struct rm_stats rs;
        rm_get_stats(m->rm, &rs);
        s.replicas = rs.replicas;
        s.backup_writes = rs.backup_writes;
        s.backup_write_bytes = rs.backup_write_bytes;
        s.backup_write_failures = rs.backup_write_failures;
        s.replicas_recreated = rs.replicas_recreated;
        s.replies_deferred = rs.replies_deferred;
        s.replies_pending = rs.replies_pending;
        s.retries_no_backups = rs.retries_no_backups;
        s.head_rolls_on_loss = rs.head_rolls_on_loss;
        s.recovery_infos = rs.recovery_infos;
        s.last_rereplication_ms = rs.last_rereplication_ms;
        s.segments_pending = rs.segments_pending;
        s.backup_full_refusals = rs.backup_full_refusals;
    }
    /* per-tablet sizes: the coordinator's partitioning "will" */
    uint32_t nt = om_tablet_count(m->om);
    Cram__TabletStats *ts = calloc(nt ? nt : 1, sizeof *ts);
    Cram__TabletStats **tsp = calloc(nt ? nt : 1, sizeof *tsp);
    if (ts == NULL || tsp == NULL) {
        free(ts);
        free(tsp);
        reply_status(rpc, CRAM_NO_MEMORY);
        return;
    }
    for (uint32_t i = 0; i < nt; i++) {
        const struct om_tablet *t = om_tablet_get(m->om, i);
        cram__tablet_stats__init(&ts[i]);
        ts[i].table_id = t->table_id;
        ts[i].start_hash = t->start_hash;
        ts[i].end_hash = t->end_hash;
        ts[i].bytes = t->bytes;
        ts[i].objects = t->objects;
        tsp[i] = &ts[i];
    }
    s.n_tablet_stats = nt;
    s.tablet_stats = tsp;
    size_t n = cram__server_stats__get_packed_size(&s);
    size_t h = sizeof(struct wire_resp_hdr);
    if (rbuf_reserve(m, h + n) != 0) {
        free(ts);
        free(tsp);
        reply_status(rpc, CRAM_NO_MEMORY);
        return;
    }
    struct wire_resp_hdr rh = { .status = CRAM_OK };
    memcpy(m->rbuf, &rh, h);
    cram__server_stats__pack(&s, m->rbuf + h);
    free(ts);
    free(tsp);
    struct iovec iov = { m->rbuf, h + n };
    tp_rpc_reply(rpc, &iov, 1);
}

static void handle_server_list(master_service *m, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    size_t h = sizeof(struct wire_req_hdr);
    Cram__ServerList *sl = cram__server_list__unpack(NULL, len - h, req + h);
    if (sl == NULL) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    /* A full list may also lower the version (coordinator restart). */
    if (sl->full || sl->version > m->server_list_version)
        m->server_list_version = sl->version;
    cram__server_list__free_unpacked(sl, NULL);
    /* With a shared server list set, the update goes there (the replica
     * manager and the other services of this server subscribe to it). */
    cram_status st = CRAM_OK;
    if (m->sl != NULL)
        st = sl_apply(m->sl, req + h, len - h);
    reply_status(rpc, st);
}

void master_handle(master_service *m, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct wire_req_hdr h;
    if (len < sizeof h) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    memcpy(&h, req, sizeof h);
    switch (h.opcode) {
    case WIRE_OP_READ:          handle_read(m, rpc, req, len); break;
    case WIRE_OP_WRITE:         handle_write(m, rpc, req, len); break;
    case WIRE_OP_REMOVE:        handle_remove(m, rpc, req, len); break;
    case WIRE_OP_INCREMENT:     handle_incr(m, rpc, req, len); break;
    case WIRE_OP_MULTI_READ:
    case WIRE_OP_MULTI_WRITE:
    case WIRE_OP_MULTI_REMOVE:  handle_multi(m, rpc, req, len); break;
    case WIRE_OP_ENUMERATE:     handle_enum(m, rpc, req, len); break;
    case WIRE_OP_TAKE_TABLET:   handle_tablet(m, rpc, req, len, true); break;
    case WIRE_OP_DROP_TABLET:   handle_tablet(m, rpc, req, len, false); break;
    case WIRE_OP_GET_SERVER_STATS:
        if (len != sizeof h)
            reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        else
            handle_stats(m, rpc);
        break;
    case WIRE_OP_SERVER_LIST_UPDATE: handle_server_list(m, rpc, req, len); break;
    case WIRE_OP_RECOVER:
        /* answered at once: "accepted"; the result goes to the coordinator
         * as RECOVERY_MASTER_FINISHED (master/recovery.h) */
        reply_status(rpc, rec_start(m->rec, req + sizeof h, len - sizeof h));
        break;
    default:
        reply_status(rpc, CRAM_UNIMPLEMENTED_REQUEST);
        break;
    }
}
