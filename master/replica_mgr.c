/*
 * replica_mgr.c -- segment replication to backups (see replica_mgr.h).
 *
 * State, all owned by the dispatch thread (see the thread rule in
 * replica_mgr.h):
 *   segs[slot]   one struct rm_seg per log slot: the segment's id/epoch and
 *                its R replicas (which backup, bytes sent / acknowledged,
 *                open/close progress).  A replica is identified by (slot,
 *                index, gen); gen rises whenever the replica is moved, so a
 *                completion of an RPC to its old backup is recognised as
 *                stale and ignored.
 *   pending      the segments not yet done (done = closed and closed on all
 *                R replicas), in log (segment id) order: usually the head and
 *                maybe the previous head; more while re-replicating.
 *   backups[]    every backup ever used, by index (never removed, so indexes
 *                kept in replicas and RPC contexts stay valid): session,
 *                in-flight count, load, crashed flag.
 *   replies      FIFO of responses held back until durable, each with the
 *                log position (segment id, offset) it waits for.
 *
 * Durability of a position (seg id S, offset o): every pending segment
 * older than S has `synced` (bytes once held by all R replicas; monotonic)
 * equal to its final length, and S itself has synced >= o.  While a lost
 * head replica's recovery info is not yet recorded (`gate`), nothing is
 * released.
 *
 * All work happens in pump(), run from the loop's at-flush hook (so all
 * appends of one dispatch round ride in one BACKUP_WRITE per replica), from
 * a 0-delay timer when kicked outside dispatch, and from a retry timer.
 * Completions and server-list events only change state and kick.
 */
#include "master/replica_mgr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cram.pb-c.h"
#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/wire.h"
#include "transport/transport_int.h"   /* tp_loop_at_flush: group commit */

#define RM_DEFAULT_TIMEOUT_MS   5000
#define RM_DEFAULT_INFLIGHT     4
#define RM_DEFAULT_CANDIDATES   3
#define RM_CHUNK                (1024u * 1024)   /* preferred bytes per BACKUP_WRITE */
#define RM_RETRY_MS             50      /* retry timer period while work waits */
#define RM_FAILED_RETRY_MS      100     /* a replica whose write failed is placed again after */
#define RM_AVOID_MS             1000    /* a backup whose write failed is avoided for */
#define RM_INFO_RETRY_MS        200     /* SET_MASTER_RECOVERY_INFO retry */
#define RM_INFO_TIMEOUT_MS      5000
#define RM_WARN_EVERY_MS        5000    /* rate limit of repeated warnings */
#define RM_INLINE_REPLY         32      /* response bytes kept without a malloc */

#define NO_SLOT LOG_NO_SLOT

struct rm_backup {
    uint64_t id;
    tp_session *sess;           /* NULL until first used, or after it died */
    char     domain[64];
    uint32_t inflight;          /* BACKUP_WRITEs outstanding */
    uint32_t load;              /* replicas placed here */
    uint64_t avoid_until_ms;    /* a write failed: prefer others until then */
    bool     gone;              /* crashed/removed: never used again */
    bool     full;              /* refused a replica (CRAM_BACKUP_FULL) and has not
                                 * accepted one since, nor been freed one by us */
};

struct rm_replica {
    int32_t  b;                 /* index into backups, -1 = not placed */
    uint32_t gen;
    uint32_t sent;              /* bytes sent (acknowledged or in flight) */
    uint32_t acked;             /* bytes the backup holds */
    uint32_t sent_crc;          /* running certificate crc over headers below `sent` */
    bool     inflight;
    bool     open_acked;
    bool     close_sent;
    bool     close_acked;
    bool     ever_placed;       /* placing it again counts as a re-creation */
    uint64_t retry_at_ms;       /* not placed before this */
};

struct rm_seg {
    uint64_t id;
    uint64_t epoch;
    bool     tracked;           /* HEAD or CLOSED segment known to the manager */
    bool     closed;            /* no more appends: final length = w.used */
    bool     pending;           /* in the pending list */
    uint32_t synced;            /* bytes once held by all R replicas (monotonic) */
    uint32_t succ;              /* head opened after this one closed (CLOSE waits for it) */
    uint64_t succ_id;
    uint32_t prev, next;        /* pending list */
    struct rm_replica r[RM_MAX_REPLICAS];
};

/* One outstanding BACKUP_WRITE. */
struct rm_wctx {
    replica_mgr *rm;
    uint64_t seg_id;
    uint32_t slot, idx, gen;
    int32_t  b;
    uint32_t end, end_crc, flags;
    uint64_t epoch;             /* SET_MASTER_RECOVERY_INFO: the epoch sent */
};

struct rm_reply {
    struct rm_reply *next;
    tp_rpc  *rpc;               /* NULL: call fn(arg) instead (rm_when_durable) */
    tp_fn    fn;
    void    *arg;
    uint64_t seg_id;
    uint32_t off;
    uint32_t len;
    uint8_t *data;              /* inl or malloc'ed */
    uint8_t  inl[RM_INLINE_REPLY];
};

struct replica_mgr {
    tp_loop *loop;
    mlog    *log;
    server_list *sl;
    uint64_t self_id;
    uint32_t R;
    bool     sync;
    uint32_t timeout_ms;
    uint32_t max_inflight;
    uint32_t tries;
    uint64_t seed;

    struct rm_seg *segs;        /* one per log slot */
    uint32_t nsegs;
    uint32_t phead, ptail;      /* pending list */

    struct rm_backup *backups;
    uint32_t nbackups, capbackups;
    struct rm_candidate *cand;  /* placement scratch */
    size_t   capcand;

    struct rm_reply *rq_head, *rq_tail;

    /* head loss -> roll -> recovery info */
    bool     head_lost;         /* a head replica was lost: roll at next pump */
    bool     gate;              /* hold every reply until info is recorded */
    bool     info_needed;
    bool     info_inflight;
    uint64_t info_seg, info_epoch;
    uint64_t info_retry_at_ms;
    char     coord_loc[512];
    tp_session *coord;
    bool     warned_no_coord;

    /* scheduling */
    bool     flush_armed;
    uint64_t kick_timer;
    uint64_t retry_timer;
    bool     in_pump;
    bool     again;
    bool     destroying;

    int32_t  usable;            /* usable backups, -1 = recount (server list changed) */
    uint64_t sl_seen;           /* server list version the backups were checked against */
    uint64_t rerep_start_ms;    /* first unrestored replica loss, 0 = none */
    uint32_t rerep_count;
    uint64_t last_warn_ms[5];

    /* backup disk space (rm_disk_short, rm_set_backup_full_hook) */
    uint64_t disk_short_until_ms;   /* 0 = not short */
    tp_fn    full_fn;
    void    *full_arg;

    struct rm_stats st;
};

enum { WARN_NO_BACKUPS, WARN_PLACE, WARN_WRITE, WARN_ROLL, WARN_FULL };

static void pump(replica_mgr *rm);
static void sl_sync(replica_mgr *rm);

/* ---- small helpers ------------------------------------------------------ */

static bool warn_due(replica_mgr *rm, int which)
{
    uint64_t now = clock_mono_ms();
    if (rm->last_warn_ms[which] != 0 && now - rm->last_warn_ms[which] < RM_WARN_EVERY_MS)
        return false;
    rm->last_warn_ms[which] = now;
    return true;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static uint32_t seg_used(const replica_mgr *rm, uint32_t slot)
{
    return log_segment(rm->log, slot)->w.used;
}

static void on_flush(void *arg)
{
    replica_mgr *rm = arg;
    rm->flush_armed = false;
    pump(rm);
}

static void on_kick_timer(void *arg)
{
    replica_mgr *rm = arg;
    rm->kick_timer = 0;
    pump(rm);
}

static void on_retry_timer(void *arg)
{
    replica_mgr *rm = arg;
    rm->retry_timer = 0;
    pump(rm);
}

/* Make pump run soon: at the end of this dispatch round, or next round. */
static void kick(replica_mgr *rm)
{
    if (rm->destroying)
        return;
    if (rm->in_pump) {
        rm->again = true;
        return;
    }
    if (rm->flush_armed || rm->kick_timer != 0)
        return;
    if (tp_loop_in_dispatch(rm->loop) && tp_loop_at_flush(rm->loop, on_flush, rm) == 0) {
        rm->flush_armed = true;
        return;
    }
    rm->kick_timer = tp_timer_add(rm->loop, 0, on_kick_timer, rm);
}

static void arm_retry(replica_mgr *rm)
{
    if (rm->retry_timer == 0 && !rm->destroying)
        rm->retry_timer = tp_timer_add(rm->loop, (uint64_t)RM_RETRY_MS * 1000, on_retry_timer, rm);
}

/* ---- pending list (log order) -------------------------------------------- */

static void pending_insert(replica_mgr *rm, uint32_t slot)
{
    struct rm_seg *s = &rm->segs[slot];
    if (s->pending)
        return;
    uint32_t after = rm->ptail;     /* last pending segment with a smaller id */
    while (after != NO_SLOT && rm->segs[after].id > s->id)
        after = rm->segs[after].prev;
    s->prev = after;
    s->next = after == NO_SLOT ? rm->phead : rm->segs[after].next;
    if (s->next != NO_SLOT)
        rm->segs[s->next].prev = slot;
    else
        rm->ptail = slot;
    if (after != NO_SLOT)
        rm->segs[after].next = slot;
    else
        rm->phead = slot;
    s->pending = true;
}

static void pending_remove(replica_mgr *rm, uint32_t slot)
{
    struct rm_seg *s = &rm->segs[slot];
    if (!s->pending)
        return;
    if (s->prev != NO_SLOT)
        rm->segs[s->prev].next = s->next;
    else
        rm->phead = s->next;
    if (s->next != NO_SLOT)
        rm->segs[s->next].prev = s->prev;
    else
        rm->ptail = s->prev;
    s->prev = s->next = NO_SLOT;
    s->pending = false;
}

/* ---- segments ------------------------------------------------------------ */

static void seg_track(replica_mgr *rm, uint32_t slot, bool closed)
{
    const struct log_segment *ls = log_segment(rm->log, slot);
    struct rm_seg *s = &rm->segs[slot];
    if (s->tracked) {           /* slot reused without rm_free_segment */
        for (uint32_t i = 0; i < rm->R; i++)
            if (s->r[i].b >= 0 && rm->backups[s->r[i].b].load > 0)
                rm->backups[s->r[i].b].load--;
        pending_remove(rm, slot);
    }
    uint32_t gens[RM_MAX_REPLICAS];
    for (uint32_t i = 0; i < RM_MAX_REPLICAS; i++)
        gens[i] = s->r[i].gen + 1;      /* completions for a previous use are stale */
    memset(s, 0, sizeof *s);
    s->id = ls->id;
    s->epoch = ls->epoch;
    s->tracked = true;
    s->closed = closed;
    s->succ = NO_SLOT;
    s->prev = s->next = NO_SLOT;
    for (uint32_t i = 0; i < RM_MAX_REPLICAS; i++) {
        s->r[i].b = -1;
        s->r[i].gen = gens[i];
    }
    pending_insert(rm, slot);
}

/* Log events (log.h): a new head, a side segment joined. */
static void on_log_event(void *arg, int ev, uint32_t slot, uint32_t old_slot)
{
    replica_mgr *rm = arg;
    if (ev == LOG_EV_HEAD_OPENED) {
        if (old_slot != NO_SLOT && rm->segs[old_slot].tracked) {
            struct rm_seg *o = &rm->segs[old_slot];
            o->closed = true;
            o->succ = slot;
            o->succ_id = log_segment(rm->log, slot)->id;
            pending_insert(rm, old_slot);
        }
        seg_track(rm, slot, false);
    } else if (ev == LOG_EV_JOINED) {
        /* a side segment replicated ahead (rm_replicate_side) keeps its
         * replicas: they hold the same bytes */
        if (!rm->segs[slot].tracked || rm->segs[slot].id != log_segment(rm->log, slot)->id)
            seg_track(rm, slot, true);
    }
    kick(rm);
}

static void update_synced(replica_mgr *rm, struct rm_seg *s)
{
    uint32_t m = UINT32_MAX;
    for (uint32_t i = 0; i < rm->R; i++)
        if (s->r[i].b < 0 || s->r[i].acked < m)
            m = s->r[i].b < 0 ? 0 : s->r[i].acked;
    if (m > s->synced)
        s->synced = m;
}

/* The head opened after s is open on all its replicas (CLOSE may be sent). */
static bool close_allowed(const replica_mgr *rm, const struct rm_seg *s)
{
    if (s->succ == NO_SLOT)
        return true;
    const struct rm_seg *n = &rm->segs[s->succ];
    if (!n->tracked || n->id != s->succ_id)
        return true;
    for (uint32_t i = 0; i < rm->R; i++)
        if (n->r[i].b < 0 || !n->r[i].open_acked)
            return false;
    return true;
}

static bool seg_done(const replica_mgr *rm, const struct rm_seg *s)
{
    if (!s->closed)
        return false;
    for (uint32_t i = 0; i < rm->R; i++)
        if (s->r[i].b < 0 || !s->r[i].close_acked)
            return false;
    return true;
}

/* Everything up to (seg_id, off) is on R replicas. */
static bool durable(const replica_mgr *rm, uint64_t seg_id, uint32_t off)
{
    for (uint32_t p = rm->phead; p != NO_SLOT; p = rm->segs[p].next) {
        const struct rm_seg *s = &rm->segs[p];
        if (s->id < seg_id) {
            if (!s->closed || s->synced < seg_used(rm, p))
                return false;
        } else if (s->id == seg_id) {
            return s->synced >= off;
        } else {
            return true;
        }
    }
    return true;
}

/* ---- backups ------------------------------------------------------------- */

static int32_t backup_find(const replica_mgr *rm, uint64_t id)
{
    for (uint32_t i = 0; i < rm->nbackups; i++)
        if (rm->backups[i].id == id)
            return (int32_t)i;
    return -1;
}

static int32_t backup_get(replica_mgr *rm, uint64_t id, const char *domain)
{
    int32_t i = backup_find(rm, id);
    if (i >= 0)
        return i;
    if (rm->nbackups == rm->capbackups) {
        uint32_t nc = rm->capbackups ? rm->capbackups * 2 : 16;
        struct rm_backup *nb = realloc(rm->backups, nc * sizeof *nb);
        if (nb == NULL)
            return -1;
        rm->backups = nb;
        rm->capbackups = nc;
    }
    struct rm_backup *b = &rm->backups[rm->nbackups];
    memset(b, 0, sizeof *b);
    b->id = id;
    snprintf(b->domain, sizeof b->domain, "%s", domain);
    return (int32_t)rm->nbackups++;
}

/* Entry usable as a backup for this master. */
static bool entry_usable(const replica_mgr *rm, const struct sl_entry *e)
{
    char loc[512];
    if (e->id == rm->self_id || e->status != SL_UP || !(e->services & SL_SERVICE_BACKUP))
        return false;
    if (sl_locator(e, "tcp", loc, sizeof loc) != 0)
        return false;
    int32_t b = backup_find(rm, e->id);
    return b < 0 || !rm->backups[b].gone;
}

/* Counted again only after the server list or a backup changed, so the
 * check before every write costs nothing. */
static uint32_t usable_backups(replica_mgr *rm)
{
    if (rm->usable >= 0)
        return (uint32_t)rm->usable;
    uint32_t k = 0;
    if (rm->sl == NULL)
        return 0;
    for (size_t i = 0; i < sl_count(rm->sl); i++)
        if (entry_usable(rm, sl_at(rm->sl, i)))
            k++;
    rm->usable = (int32_t)k;
    return k;
}

/* A live session to backup b, or NULL. */
static tp_session *backup_session(replica_mgr *rm, struct rm_backup *b)
{
    if (b->sess != NULL && tp_session_alive(b->sess))
        return b->sess;
    if (b->sess != NULL) {
        tp_session_close(b->sess);  /* dead: its rpcs have completed already */
        b->sess = NULL;
    }
    const struct sl_entry *e = rm->sl ? sl_find(rm->sl, b->id) : NULL;
    char loc[512];
    if (e == NULL || sl_locator(e, "tcp", loc, sizeof loc) != 0)
        return NULL;
    cram_status st;
    b->sess = tp_session_open(rm->loop, loc, &st);
    return b->sess;
}

/* ---- placement ----------------------------------------------------------- */

int rm_choose_backup(const struct rm_candidate *c, size_t n, uint64_t self_id,
                     const uint64_t *holders, size_t nholders, uint32_t tries, uint64_t *seed)
{
    if (tries == 0)
        tries = 1;
    /* levels: 0 new domain + not avoided, 1 not avoided, 2 new domain, 3 any.
     * A backup that just failed is most likely dead (not yet declared):
     * sharing a failure domain for a while beats choosing it again. */
    for (int level = 0; level < 4; level++) {
        size_t k = 0;
        for (int pass = 0; pass < 2; pass++) {
            size_t drawn[RM_DEFAULT_CANDIDATES * 4];
            uint32_t ndraw = tries < sizeof drawn / sizeof drawn[0] ? tries : sizeof drawn / sizeof drawn[0];
            for (uint32_t d = 0; pass == 1 && d < ndraw; d++)
                drawn[d] = (size_t)(xorshift(seed) % k);
            int best = -1;
            uint32_t best_d = 0;    /* ties go to the earliest draw: uniform */
            size_t idx = 0;
            for (size_t i = 0; i < n; i++) {
                if (!c[i].usable || c[i].id == self_id)
                    continue;
                bool holder = false, same_domain = false;
                for (size_t h = 0; h < nholders; h++) {
                    if (holders[h] == c[i].id)
                        holder = true;
                    if (c[i].domain != NULL && c[i].domain[0] != '\0') {
                        for (size_t j = 0; j < n; j++)
                            if (c[j].id == holders[h] && c[j].domain != NULL &&
                                strcmp(c[j].domain, c[i].domain) == 0)
                                same_domain = true;
                    }
                }
                if (holder)
                    continue;
                if ((level == 0 || level == 2) && same_domain)
                    continue;
                if ((level == 0 || level == 1) && c[i].avoid)
                    continue;
                if (pass == 0) {
                    k++;
                    continue;
                }
                for (uint32_t d = 0; d < ndraw; d++) {
                    if (drawn[d] != idx)
                        continue;
                    if (best < 0 || c[i].load < c[best].load ||
                        (c[i].load == c[best].load && d < best_d)) {
                        best = (int)i;
                        best_d = d;
                    }
                }
                idx++;
            }
            if (pass == 0 && k == 0)
                break;
            if (pass == 1)
                return best;
        }
    }
    return -1;
}

/* Place replica idx of the segment in slot.  0, or -1 if no backup fits. */
static int place(replica_mgr *rm, uint32_t slot, uint32_t idx)
{
    struct rm_seg *s = &rm->segs[slot];
    if (rm->sl == NULL)
        return -1;
    size_t n = sl_count(rm->sl);
    if (n > rm->capcand) {
        struct rm_candidate *nc = realloc(rm->cand, n * sizeof *nc);
        if (nc == NULL)
            return -1;
        rm->cand = nc;
        rm->capcand = n;
    }
    uint64_t now = clock_mono_ms();
    for (size_t i = 0; i < n; i++) {
        const struct sl_entry *e = sl_at(rm->sl, i);
        int32_t b = backup_find(rm, e->id);
        rm->cand[i] = (struct rm_candidate){
            .id = e->id, .domain = e->failure_domain, .usable = entry_usable(rm, e),
            .load = b >= 0 ? rm->backups[b].load : 0,
            .avoid = b >= 0 && rm->backups[b].avoid_until_ms > now,
        };
    }
    uint64_t holders[RM_MAX_REPLICAS];
    size_t nh = 0;
    for (uint32_t i = 0; i < rm->R; i++)
        if (i != idx && s->r[i].b >= 0)
            holders[nh++] = rm->backups[s->r[i].b].id;
    int c = rm_choose_backup(rm->cand, n, rm->self_id, holders, nh, rm->tries, &rm->seed);
    if (c < 0) {
        if (warn_due(rm, WARN_PLACE))
            CRAM_WARN("replication: no backup left for replica %u of segment %llu "
                      "(%u usable backups, %u replicas wanted); waiting for more backups",
                      idx + 1, (unsigned long long)s->id, usable_backups(rm), rm->R);
        return -1;
    }
    int32_t b = backup_get(rm, rm->cand[c].id, rm->cand[c].domain);
    if (b < 0)
        return -1;
    struct rm_replica *r = &s->r[idx];
    if (r->ever_placed)
        rm->st.replicas_recreated++;
    r->ever_placed = true;
    r->b = b;
    r->sent = r->acked = r->sent_crc = 0;
    r->inflight = r->open_acked = r->close_sent = r->close_acked = false;
    rm->backups[b].load++;
    CRAM_DEBUG("replication: segment %llu replica %u on backup %llu", (unsigned long long)s->id,
               idx + 1, (unsigned long long)rm->backups[b].id);
    return 0;
}

/*
 * Replica idx of slot is gone from its backup.  may_hold: the backup may
 * keep (stale) bytes of it, which for the open head means the head must be
 * closed and a new one with a higher epoch recorded.  delay: place it again
 * only after RM_FAILED_RETRY_MS (a write failed; a crash moves at once).
 */
static void replica_lost(replica_mgr *rm, uint32_t slot, uint32_t idx, bool may_hold, bool delay)
{
    struct rm_seg *s = &rm->segs[slot];
    struct rm_replica *r = &s->r[idx];
    if (r->b >= 0 && rm->backups[r->b].load > 0)
        rm->backups[r->b].load--;
    bool had_bytes = r->open_acked || r->inflight || r->sent > 0;
    r->b = -1;
    r->gen++;
    r->sent = r->acked = r->sent_crc = 0;
    r->inflight = r->open_acked = r->close_sent = r->close_acked = false;
    r->retry_at_ms = delay ? clock_mono_ms() + RM_FAILED_RETRY_MS : 0;
    pending_insert(rm, slot);
    if (!s->closed && slot == log_head_slot(rm->log) && may_hold && had_bytes)
        rm->head_lost = true;
}

/* ---- BACKUP_WRITE --------------------------------------------------------- */

static void on_write_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct rm_wctx *c = arg;
    replica_mgr *rm = c->rm;
    if (rm->destroying) {
        free(c);
        return;
    }
    struct rm_backup *b = &rm->backups[c->b];
    if (b->inflight > 0)
        b->inflight--;
    struct rm_seg *s = &rm->segs[c->slot];
    struct rm_replica *r = &s->r[c->idx];
    if (!s->tracked || s->id != c->seg_id || r->gen != c->gen) {
        free(c);                    /* replica moved or segment freed meanwhile */
        kick(rm);
        return;
    }
    cram_status rs = st;
    if (st == CRAM_OK) {
        struct wire_resp_hdr h;
        if (len < sizeof h) {
            rs = CRAM_REQUEST_FORMAT_ERROR;
        } else {
            memcpy(&h, resp, sizeof h);
            rs = (cram_status)h.status;
        }
    }
    r->inflight = false;
    if (rs == CRAM_OK) {
        r->acked = c->end;
        if (c->flags & WIRE_BACKUP_OPEN) {
            r->open_acked = true;
            b->full = false;        /* it had room for a whole replica */
        }
        if (c->flags & WIRE_BACKUP_CLOSE)
            r->close_acked = true;
        update_synced(rm, s);
    } else {
        rm->st.backup_write_failures++;
        b->avoid_until_ms = clock_mono_ms() + RM_AVOID_MS;
        if (rs == CRAM_CALLER_NOT_IN_CLUSTER)
            CRAM_ERROR("backup %llu says this master (%llu) was declared crashed; "
                       "writes cannot become durable", (unsigned long long)b->id,
                       (unsigned long long)rm->self_id);
        else if (warn_due(rm, WARN_WRITE))
            CRAM_WARN("replication: BACKUP_WRITE of segment %llu to backup %llu failed: %s; "
                      "moving the replica", (unsigned long long)s->id,
                      (unsigned long long)b->id, cram_status_name(rs));
        /* a refused first write left nothing on the backup */
        bool refused = (c->flags & WIRE_BACKUP_OPEN) && !r->open_acked &&
                       (rs == CRAM_BACKUP_FULL || rs == CRAM_WRONG_SERVER ||
                        rs == CRAM_CALLER_NOT_IN_CLUSTER);
        replica_lost(rm, c->slot, c->idx, !refused, true);
        if (rs == CRAM_BACKUP_FULL) {
            /* the cleaner's disk trigger: combined cleaning frees replicas */
            rm->st.backup_full_refusals++;
            b->full = true;
            rm->disk_short_until_ms = clock_mono_ms() + clock_test_scaled_ms(RM_DISK_SHORT_MS);
            if (rm->full_fn != NULL)
                rm->full_fn(rm->full_arg);
        }
    }
    free(c);
    kick(rm);
}

/*
 * Bytes of [from, used) that one write carries: whole entries, at most
 * RM_CHUNK unless a single entry is larger.  *crc enters as the running
 * certificate crc at `from` and leaves as the one at the returned end.
 */
static uint32_t chunk_end(const uint8_t *base, uint32_t from, uint32_t used, uint32_t *crc)
{
    uint32_t pos = from;
    uint32_t c = *crc;
    while (pos < used) {
        struct seg_entry_hdr h;
        memcpy(&h, base + pos, sizeof h);
        uint64_t esz = seg_entry_size(h.length);
        /* the first entry always goes (entries are smaller than a message) */
        if (pos > from && pos + esz - from > RM_CHUNK)
            break;
        c = crc32c(c, &h, sizeof h);
        pos += (uint32_t)esz;
    }
    *crc = c;
    return pos;
}

/* Send what replica idx of slot needs next, if anything and if allowed. */
static void replica_pump(replica_mgr *rm, uint32_t slot, uint32_t idx, uint64_t now)
{
    struct rm_seg *s = &rm->segs[slot];
    struct rm_replica *r = &s->r[idx];
    if (r->inflight)
        return;
    if (r->b < 0) {
        if (now < r->retry_at_ms || place(rm, slot, idx) != 0) {
            arm_retry(rm);
            return;
        }
    }
    struct rm_backup *b = &rm->backups[r->b];
    if (b->inflight >= rm->max_inflight)
        return;                 /* a completion on b kicks us again */
    /* closed segments (re-replication, closes) leave one slot to the head, so
     * copying old segments does not hold up acknowledgements */
    if (s->closed && rm->max_inflight > 1 && b->inflight + 1 >= rm->max_inflight)
        return;
    const struct log_segment *ls = log_segment(rm->log, slot);
    uint32_t used = ls->w.used;
    bool want_close = s->closed && !r->close_sent && close_allowed(rm, s);
    if (r->sent == used && !want_close)
        return;
    uint32_t end = used, end_crc = ls->w.cert_crc;
    struct seg_certificate cert = seg_writer_certificate(&ls->w);
    if (used - r->sent > RM_CHUNK) {
        end_crc = r->sent_crc;
        end = chunk_end(log_segment_base(rm->log, slot), r->sent, used, &end_crc);
        cert.length = end;
        cert.crc32c = crc32c(end_crc, &cert.length, sizeof cert.length);
    }
    uint32_t flags = (r->open_acked ? 0 : WIRE_BACKUP_OPEN) | (rm->sync ? WIRE_BACKUP_SYNC : 0);
    if (idx == 0 && !r->open_acked)
        flags |= WIRE_BACKUP_PRIMARY;   /* recovery reads (and prefetches) replica 0 first */
    if (want_close && end == used)
        flags |= WIRE_BACKUP_CLOSE;
    tp_session *sess = backup_session(rm, b);
    if (sess == NULL) {
        rm->st.backup_write_failures++;
        b->avoid_until_ms = now + RM_AVOID_MS;
        replica_lost(rm, slot, idx, !(flags & WIRE_BACKUP_OPEN), true);
        arm_retry(rm);
        return;
    }
    struct rm_wctx *c = malloc(sizeof *c);
    if (c == NULL) {
        arm_retry(rm);
        return;
    }
    *c = (struct rm_wctx){ .rm = rm, .seg_id = s->id, .slot = slot, .idx = idx, .gen = r->gen,
                           .b = r->b, .end = end, .end_crc = end_crc, .flags = flags };
    struct wire_backup_write_req q = {
        .hdr = { .opcode = WIRE_OP_BACKUP_WRITE, .service = WIRE_SVC_BACKUP, .flags = 0 },
        .tgt = { .target_server_id = b->id },
        .master_id = rm->log->master_id ? rm->log->master_id : rm->self_id,
        .segment_id = s->id, .epoch = s->epoch, .offset = r->sent, .length = end - r->sent,
        .capacity = ls->w.capacity, .flags = flags,
        .certificate = { .length = cert.length, .crc32c = cert.crc32c },
    };
    struct iovec iov[2] = { { &q, sizeof q },
                            { (void *)(log_segment_base(rm->log, slot) + r->sent), end - r->sent } };
    cram_status st = tp_send(sess, iov, end > r->sent ? 2 : 1, rm->timeout_ms, on_write_done, c);
    if (st != CRAM_OK) {
        free(c);
        rm->st.backup_write_failures++;
        b->avoid_until_ms = now + RM_AVOID_MS;
        replica_lost(rm, slot, idx, r->open_acked, true);
        arm_retry(rm);
        return;
    }
    rm->st.backup_writes++;
    rm->st.backup_write_bytes += end - r->sent;
    r->inflight = true;
    r->sent = end;
    r->sent_crc = end_crc;
    if (flags & WIRE_BACKUP_CLOSE)
        r->close_sent = true;
    b->inflight++;
}

/* ---- recovery info -------------------------------------------------------- */

static void on_info_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct rm_wctx *c = arg;        /* seg_id, epoch: what was sent */
    replica_mgr *rm = c->rm;
    if (rm->destroying) {
        free(c);
        return;
    }
    rm->info_inflight = false;
    cram_status rs = st;
    if (st == CRAM_OK) {
        struct wire_resp_hdr h;
        if (len < sizeof h) {
            rs = CRAM_REQUEST_FORMAT_ERROR;
        } else {
            memcpy(&h, resp, sizeof h);
            rs = (cram_status)h.status;
        }
    }
    uint64_t epoch = c->epoch;
    if (rs == CRAM_OK) {
        rm->st.recovery_infos++;
        CRAM_INFO("replication: recorded recovery info {segment %llu, epoch %llu} at the coordinator",
                  (unsigned long long)c->seg_id, (unsigned long long)epoch);
        if (rm->info_needed && rm->info_seg == c->seg_id && rm->info_epoch == epoch) {
            rm->info_needed = false;
            rm->gate = false;
        }
    } else {
        CRAM_WARN("replication: SET_MASTER_RECOVERY_INFO failed: %s; retrying", cram_status_name(rs));
        rm->info_retry_at_ms = clock_mono_ms() + RM_INFO_RETRY_MS;
        if (rm->coord != NULL && !tp_session_alive(rm->coord)) {
            tp_session_close(rm->coord);
            rm->coord = NULL;
        }
        arm_retry(rm);
    }
    free(c);
    kick(rm);
}

/* Once {info_seg, info_epoch} is recorded, recovery ignores every open
 * replica of an older segment: so record it only when the head info_seg is
 * open on all R replicas and every older segment still being replicated has
 * a closed replica (closed replicas are complete).  Segments re-created
 * after the loss need not be finished: their surviving replicas are closed. */
static bool info_ready(const replica_mgr *rm)
{
    for (uint32_t p = rm->phead; p != NO_SLOT; p = rm->segs[p].next) {
        const struct rm_seg *s = &rm->segs[p];
        if (s->id > rm->info_seg)
            break;
        bool ok = s->id < rm->info_seg ? false : true;
        for (uint32_t i = 0; i < rm->R; i++) {
            if (s->id < rm->info_seg && s->r[i].b >= 0 && s->r[i].close_acked)
                ok = true;
            if (s->id == rm->info_seg && (s->r[i].b < 0 || !s->r[i].open_acked))
                ok = false;
        }
        if (!ok)
            return false;
    }
    return true;
}

static void info_pump(replica_mgr *rm, uint64_t now)
{
    if (!rm->info_needed || rm->info_inflight || !info_ready(rm))
        return;
    if (rm->coord_loc[0] == '\0') {
        if (!rm->warned_no_coord)
            CRAM_WARN("replication: no coordinator known: recovery info {segment %llu, epoch %llu} "
                      "not recorded", (unsigned long long)rm->info_seg,
                      (unsigned long long)rm->info_epoch);
        rm->warned_no_coord = true;
        rm->info_needed = false;
        rm->gate = false;
        return;
    }
    if (now < rm->info_retry_at_ms) {
        arm_retry(rm);
        return;
    }
    if (rm->coord == NULL) {
        cram_status st;
        rm->coord = tp_session_open(rm->loop, rm->coord_loc, &st);
        if (rm->coord == NULL) {
            rm->info_retry_at_ms = now + RM_INFO_RETRY_MS;
            arm_retry(rm);
            return;
        }
    }
    Cram__MasterRecoveryInfo mi = CRAM__MASTER_RECOVERY_INFO__INIT;
    mi.server_id = rm->self_id;
    mi.segment_id = rm->info_seg;
    mi.epoch = rm->info_epoch;
    uint8_t buf[64];
    size_t n = cram__master_recovery_info__get_packed_size(&mi);
    CRAM_ASSERT(n <= sizeof buf);
    cram__master_recovery_info__pack(&mi, buf);
    struct wire_req_hdr h = { .opcode = WIRE_OP_SET_MASTER_RECOVERY_INFO,
                              .service = WIRE_SVC_COORDINATOR, .flags = 0 };
    struct rm_wctx *c = malloc(sizeof *c);
    if (c == NULL) {
        arm_retry(rm);
        return;
    }
    *c = (struct rm_wctx){ .rm = rm, .seg_id = rm->info_seg, .epoch = rm->info_epoch, .b = -1 };
    struct iovec iov[2] = { { &h, sizeof h }, { buf, n } };
    cram_status st = tp_send(rm->coord, iov, 2, (uint32_t)clock_test_scaled_ms(RM_INFO_TIMEOUT_MS),
                             on_info_done, c);
    if (st != CRAM_OK) {
        free(c);
        tp_session_close(rm->coord);
        rm->coord = NULL;
        rm->info_retry_at_ms = now + RM_INFO_RETRY_MS;
        arm_retry(rm);
        return;
    }
    rm->info_inflight = true;
}

/* ---- replies --------------------------------------------------------------- */

static void reply_free(struct rm_reply *q)
{
    if (q->data != q->inl)
        free(q->data);
    free(q);
}

static void replies_pump(replica_mgr *rm)
{
    while (!rm->gate && rm->rq_head != NULL && durable(rm, rm->rq_head->seg_id, rm->rq_head->off)) {
        struct rm_reply *q = rm->rq_head;
        rm->rq_head = q->next;
        if (rm->rq_head == NULL)
            rm->rq_tail = NULL;
        if (q->rpc == NULL) {
            tp_fn fn = q->fn;
            void *arg = q->arg;
            reply_free(q);
            fn(arg);
            continue;
        }
        rm->st.replies_pending--;
        struct iovec iov = { q->data, q->len };
        tp_rpc_reply(q->rpc, &iov, 1);
        reply_free(q);
    }
}

/* ---- the pump ---------------------------------------------------------------- */

/*
 * A replica of the head may hold bytes on a backup we no longer use.  The
 * first time: close the head and open a new one with a higher epoch (the
 * old head is closed on its other replicas and re-created whole elsewhere).
 * While the recovery info of such a loss is still unrecorded, nothing in the
 * young new head has been acknowledged (the gate holds every reply), so a
 * further loss -- or a log with no free segment -- instead raises the head's
 * epoch in place and re-sends it to all of its replicas from offset 0 (the
 * backups replace open replicas of a lower epoch).  Either way {head id,
 * epoch} is recorded at the coordinator before replies flow again.
 */
static void handle_lost_head(replica_mgr *rm)
{
    uint32_t h = log_head_slot(rm->log);
    uint64_t old = rm->segs[h].id;
    uint64_t epoch = log_epoch(rm->log) + 1;
    rm->head_lost = false;
    if (!rm->info_needed) {
        log_raise_epoch(rm->log, epoch);
        if (log_roll(rm->log) == 0) {
            rm->st.head_rolls_on_loss++;
            h = log_head_slot(rm->log);
            rm->info_needed = true;
            rm->gate = true;
            rm->info_seg = rm->segs[h].id;
            rm->info_epoch = rm->segs[h].epoch;
            CRAM_INFO("replication: lost a replica of head segment %llu: closed it, new head %llu "
                      "epoch %llu", (unsigned long long)old, (unsigned long long)rm->info_seg,
                      (unsigned long long)rm->info_epoch);
            return;
        }
    }
    struct rm_seg *s = &rm->segs[h];
    log_head_set_epoch(rm->log, epoch);
    s->epoch = epoch;
    s->synced = 0;              /* what the old epoch's replicas held no longer counts */
    for (uint32_t i = 0; i < rm->R; i++) {
        struct rm_replica *r = &s->r[i];
        r->gen++;               /* a write in flight completes as stale */
        r->inflight = false;
        r->sent = r->acked = r->sent_crc = 0;
        r->open_acked = r->close_sent = r->close_acked = false;
    }
    rm->st.head_epoch_bumps++;
    rm->info_needed = true;
    rm->gate = true;
    rm->info_seg = s->id;
    rm->info_epoch = epoch;
    if (warn_due(rm, WARN_ROLL))
        CRAM_INFO("replication: lost a replica of head segment %llu: re-sending it under epoch %llu",
                  (unsigned long long)s->id, (unsigned long long)epoch);
}

/* Every closed segment done again and the head open on R replicas. */
static void rerep_check(replica_mgr *rm, uint64_t now)
{
    if (rm->rerep_start_ms == 0)
        return;
    for (uint32_t p = rm->phead; p != NO_SLOT; p = rm->segs[p].next) {
        const struct rm_seg *s = &rm->segs[p];
        if (s->closed)
            return;
        for (uint32_t i = 0; i < rm->R; i++)
            if (s->r[i].b < 0 || !s->r[i].open_acked)
                return;
    }
    if (rm->head_lost || rm->info_needed)
        return;
    rm->st.last_rereplication_ms = now - rm->rerep_start_ms;
    CRAM_INFO("replication: %u lost replicas re-created, every segment has %u replicas again "
              "after %llu ms", rm->rerep_count, rm->R,
              (unsigned long long)rm->st.last_rereplication_ms);
    rm->rerep_start_ms = 0;
    rm->rerep_count = 0;
}

static void pump(replica_mgr *rm)
{
    if (rm->destroying || rm->in_pump)
        return;
    rm->in_pump = true;
    int rounds = 0;
    do {
        rm->again = false;
        uint64_t now = clock_mono_ms();
        sl_sync(rm);
        if (rm->head_lost && log_head_slot(rm->log) != NO_SLOT)
            handle_lost_head(rm);
        /* newest first: the head, then the just-closed head (whose copy
         * gates acknowledgements after a loss), then older re-creations */
        for (uint32_t p = rm->ptail; p != NO_SLOT; p = rm->segs[p].prev)
            for (uint32_t i = 0; i < rm->R; i++)
                replica_pump(rm, p, i, now);
        for (uint32_t p = rm->phead, nx; p != NO_SLOT; p = nx) {
            nx = rm->segs[p].next;
            update_synced(rm, &rm->segs[p]);
            if (seg_done(rm, &rm->segs[p]))
                pending_remove(rm, p);
        }
        info_pump(rm, now);
        replies_pump(rm);
        rerep_check(rm, now);
    } while ((rm->again || rm->head_lost) && ++rounds < 3);
    rm->in_pump = false;
    if (rm->again || rm->head_lost)
        arm_retry(rm);
}

/* ---- server list --------------------------------------------------------------- */

static void backup_gone(replica_mgr *rm, uint64_t id)
{
    int32_t bi = backup_find(rm, id);
    if (bi < 0 || rm->backups[bi].gone)
        return;
    struct rm_backup *b = &rm->backups[bi];
    b->gone = true;
    rm->usable = -1;
    uint32_t lost = 0;
    for (uint32_t slot = 0; slot < rm->nsegs; slot++) {
        struct rm_seg *s = &rm->segs[slot];
        if (!s->tracked)
            continue;
        for (uint32_t i = 0; i < rm->R; i++) {
            if (s->r[i].b == bi) {
                replica_lost(rm, slot, i, true, false);
                lost++;
            }
        }
    }
    if (b->sess != NULL) {
        tp_session *sess = b->sess;
        b->sess = NULL;
        tp_session_close(sess);     /* outstanding writes complete as stale */
    }
    b->inflight = 0;
    b->load = 0;
    if (lost > 0) {
        if (rm->rerep_start_ms == 0)
            rm->rerep_start_ms = clock_mono_ms();
        rm->rerep_count += lost;
        CRAM_INFO("replication: backup %llu left the cluster; re-replicating its %u replicas",
                  (unsigned long long)id, lost);
    }
}

static void on_sl_change(void *arg, const struct sl_entry *e, int old_status)
{
    replica_mgr *rm = arg;
    (void)old_status;
    rm->usable = -1;
    if (e->status != SL_UP)
        backup_gone(rm, e->id);
    kick(rm);
}

/* A server list update may also drop entries without a status change (a
 * full list): on every new version, recount and retire backups that are no
 * longer listed as up. */
static void sl_sync(replica_mgr *rm)
{
    if (rm->sl == NULL || sl_version(rm->sl) == rm->sl_seen)
        return;
    rm->sl_seen = sl_version(rm->sl);
    rm->usable = -1;
    for (uint32_t i = 0; i < rm->nbackups; i++) {
        if (rm->backups[i].gone)
            continue;
        const struct sl_entry *e = sl_find(rm->sl, rm->backups[i].id);
        if (e == NULL || e->status != SL_UP)
            backup_gone(rm, rm->backups[i].id);
    }
}

/* ---- public API ------------------------------------------------------------------ */

replica_mgr *rm_create(tp_loop *loop, mlog *log, const struct rm_config *cfg)
{
    if (cfg->replicas == 0 || cfg->replicas > RM_MAX_REPLICAS)
        return NULL;
    replica_mgr *rm = calloc(1, sizeof *rm);
    if (rm == NULL)
        return NULL;
    rm->nsegs = log_nsegments(log);
    rm->segs = calloc(rm->nsegs, sizeof *rm->segs);
    if (rm->segs == NULL) {
        free(rm);
        return NULL;
    }
    rm->loop = loop;
    rm->log = log;
    rm->R = cfg->replicas;
    rm->sync = cfg->sync;
    rm->timeout_ms = (uint32_t)clock_test_scaled_ms(cfg->rpc_timeout_ms ? cfg->rpc_timeout_ms
                                                                          : RM_DEFAULT_TIMEOUT_MS);
    rm->max_inflight = cfg->max_inflight ? cfg->max_inflight : RM_DEFAULT_INFLIGHT;
    rm->tries = cfg->candidates ? cfg->candidates : RM_DEFAULT_CANDIDATES;
    rm->seed = clock_mono_ns() ^ (uint64_t)(uintptr_t)rm;
    rm->st.replicas = rm->R;
    rm->usable = -1;
    rm->phead = rm->ptail = NO_SLOT;
    for (uint32_t i = 0; i < rm->nsegs; i++)
        rm->segs[i].prev = rm->segs[i].next = rm->segs[i].succ = NO_SLOT;
    /* segments already in the log (replication enabled after appends) */
    uint32_t head = log_head_slot(log);
    for (uint32_t i = 0; i < rm->nsegs; i++) {
        uint8_t state = log_segment(log, i)->state;
        if (state == LOG_SEG_CLOSED || state == LOG_SEG_HEAD) {
            seg_track(rm, i, state == LOG_SEG_CLOSED);
            if (state == LOG_SEG_CLOSED && head != NO_SLOT) {
                rm->segs[i].succ = head;
                rm->segs[i].succ_id = log_segment(log, head)->id;
            }
        }
    }
    log_set_hook(log, on_log_event, rm);
    return rm;
}

void rm_destroy(replica_mgr *rm)
{
    if (rm == NULL)
        return;
    log_set_hook(rm->log, NULL, NULL);
    rm->destroying = true;
    if (rm->kick_timer)
        tp_timer_cancel(rm->loop, rm->kick_timer);
    if (rm->retry_timer)
        tp_timer_cancel(rm->loop, rm->retry_timer);
    CRAM_ASSERT(!rm->flush_armed);   /* never destroyed from inside a loop round */
    for (uint32_t i = 0; i < rm->nbackups; i++)
        if (rm->backups[i].sess != NULL)
            tp_session_close(rm->backups[i].sess);
    if (rm->coord != NULL)
        tp_session_close(rm->coord);
    while (rm->rq_head != NULL) {
        struct rm_reply *q = rm->rq_head;
        rm->rq_head = q->next;
        struct wire_resp_hdr h = { .status = CRAM_RETRY };
        struct iovec iov = { &h, sizeof h };
        if (q->rpc != NULL)
            tp_rpc_reply(q->rpc, &iov, 1);
        reply_free(q);
    }
    free(rm->backups);
    free(rm->cand);
    free(rm->segs);
    free(rm);
}

void rm_set_server_id(replica_mgr *rm, uint64_t id)
{
    rm->self_id = id;
    rm->usable = -1;
}

int rm_set_server_list(replica_mgr *rm, server_list *sl)
{
    if (rm->sl == sl)
        return 0;
    rm->sl = sl;
    rm->usable = -1;
    if (sl == NULL)
        return 0;
    kick(rm);
    return sl_subscribe(sl, on_sl_change, rm);
}

void rm_set_coordinator(replica_mgr *rm, const char *locator)
{
    if (locator == NULL)
        locator = "";
    if (strcmp(locator, rm->coord_loc) == 0)
        return;
    snprintf(rm->coord_loc, sizeof rm->coord_loc, "%s", locator);
    if (rm->coord != NULL && !rm->info_inflight) {
        tp_session_close(rm->coord);
        rm->coord = NULL;
    }
    kick(rm);
}

/* Every backup is full and some replica of a segment in the log has no
 * place: nothing appended from now on can become durable until a backup
 * has room again. */
static bool blocked_by_full_backups(replica_mgr *rm)
{
    if (!rm_disk_short(rm))
        return false;
    bool unplaced = false;
    for (uint32_t p = rm->phead; p != NO_SLOT && !unplaced; p = rm->segs[p].next)
        for (uint32_t i = 0; i < rm->R; i++)
            unplaced |= rm->segs[p].r[i].b < 0;
    return unplaced && rm_backups_full(rm);
}

cram_status rm_check_writable(replica_mgr *rm)
{
    sl_sync(rm);
    uint32_t n = usable_backups(rm);
    if (n >= rm->R) {
        if (!blocked_by_full_backups(rm))
            return CRAM_OK;
        rm->st.retries_backups_full++;
        if (warn_due(rm, WARN_FULL))
            CRAM_WARN("answering writes RETRY: every backup (%u usable) refused a replica "
                      "(CRAM_BACKUP_FULL) and a segment still needs one; writes resume once a "
                      "backup has room (another master's cleaner frees replicas there, a "
                      "backup joins, or backups get more --backup-storage)", n);
        return CRAM_RETRY;
    }
    rm->st.retries_no_backups++;
    if (warn_due(rm, WARN_NO_BACKUPS))
        CRAM_WARN("answering writes RETRY: %u usable backups known, %u replicas required%s",
                  n, rm->R, rm->sl == NULL ? " (no server list yet)" : "");
    return CRAM_RETRY;
}

void rm_reply_durable(replica_mgr *rm, tp_rpc *rpc, const struct iovec *iov, int n)
{
    uint32_t head = log_head_slot(rm->log);
    uint64_t seg_id = head == NO_SLOT ? 0 : rm->segs[head].id;
    uint32_t off = head == NO_SLOT ? 0 : seg_used(rm, head);
    if (rm->rq_head == NULL && !rm->gate && durable(rm, seg_id, off)) {
        tp_rpc_reply(rpc, iov, n);
        return;
    }
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    struct rm_reply *q = malloc(sizeof *q);
    uint8_t *data = q == NULL ? NULL : len <= sizeof q->inl ? q->inl : malloc(len);
    if (data == NULL) {
        /* the operation is in the log: it must be acknowledged or the
         * master must die (never an error after appending) */
        CRAM_ERROR("out of memory holding back a reply until it is durable");
        abort();
    }
    q->next = NULL;
    q->rpc = rpc;
    q->fn = NULL;
    q->arg = NULL;
    q->seg_id = seg_id;
    q->off = off;
    q->len = (uint32_t)len;
    q->data = data;
    for (int i = 0, o = 0; i < n; o += (int)iov[i].iov_len, i++)
        if (iov[i].iov_len > 0)
            memcpy(data + o, iov[i].iov_base, iov[i].iov_len);
    if (rm->rq_tail != NULL)
        rm->rq_tail->next = q;
    else
        rm->rq_head = q;
    rm->rq_tail = q;
    rm->st.replies_deferred++;
    rm->st.replies_pending++;
    kick(rm);
}

int rm_when_durable(replica_mgr *rm, tp_fn fn, void *arg)
{
    uint32_t head = log_head_slot(rm->log);
    struct rm_reply *q = calloc(1, sizeof *q);
    if (q == NULL)
        return -1;
    q->fn = fn;
    q->arg = arg;
    q->seg_id = head == NO_SLOT ? 0 : rm->segs[head].id;
    q->off = head == NO_SLOT ? 0 : seg_used(rm, head);
    q->data = q->inl;
    if (rm->rq_tail != NULL)
        rm->rq_tail->next = q;
    else
        rm->rq_head = q;
    rm->rq_tail = q;
    kick(rm);
    return 0;
}

static void on_free_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    (void)arg; (void)st; (void)resp; (void)len;   /* best effort */
}

void rm_detach_segment(replica_mgr *rm, uint32_t slot, struct rm_detached *out)
{
    struct rm_seg *s = &rm->segs[slot];
    out->id = s->tracked ? s->id : 0;
    for (uint32_t i = 0; i < RM_MAX_REPLICAS; i++)
        out->b[i] = -1;
    if (!s->tracked)
        return;
    for (uint32_t i = 0; i < rm->R; i++) {
        out->b[i] = s->r[i].b;
        s->r[i].b = -1;
        s->r[i].gen++;              /* completions still on their way are stale */
    }
    pending_remove(rm, slot);
    s->tracked = false;
}

void rm_free_detached(replica_mgr *rm, const struct rm_detached *d)
{
    if (d->id == 0)
        return;
    for (uint32_t i = 0; i < RM_MAX_REPLICAS; i++) {
        if (d->b[i] < 0 || (uint32_t)d->b[i] >= rm->nbackups)
            continue;
        struct rm_backup *b = &rm->backups[d->b[i]];
        if (b->load > 0)
            b->load--;
        tp_session *sess = b->gone ? NULL : backup_session(rm, b);
        if (sess != NULL) {
            struct wire_backup_free_req q = {
                .hdr = { .opcode = WIRE_OP_BACKUP_FREE, .service = WIRE_SVC_BACKUP, .flags = 0 },
                .tgt = { .target_server_id = b->id },
                .master_id = rm->log->master_id ? rm->log->master_id : rm->self_id,
                .segment_id = d->id,
            };
            struct iovec iov = { &q, sizeof q };
            (void)tp_send(sess, &iov, 1, rm->timeout_ms, on_free_done, NULL);
        }
        b->full = false;            /* its space there is given back */
    }
    /* disk is no longer short once combined cleaning has freed a replica on
     * every backup that refused one */
    bool any_full = false;
    for (uint32_t i = 0; i < rm->nbackups && !any_full; i++)
        any_full = rm->backups[i].full && !rm->backups[i].gone;
    if (!any_full)
        rm->disk_short_until_ms = 0;
    kick(rm);
}

void rm_free_segment(replica_mgr *rm, uint32_t slot)
{
    struct rm_detached d;
    rm_detach_segment(rm, slot, &d);
    rm_free_detached(rm, &d);
}

void rm_set_backup_full_hook(replica_mgr *rm, tp_fn fn, void *arg)
{
    rm->full_fn = fn;
    rm->full_arg = arg;
}

bool rm_disk_short(const replica_mgr *rm)
{
    return rm->disk_short_until_ms != 0 && clock_mono_ms() < rm->disk_short_until_ms;
}

bool rm_backups_full(replica_mgr *rm)
{
    if (rm->sl == NULL)
        return false;
    uint32_t k = 0;
    for (size_t i = 0; i < sl_count(rm->sl); i++) {
        const struct sl_entry *e = sl_at(rm->sl, i);
        if (!entry_usable(rm, e))
            continue;
        int32_t b = backup_find(rm, e->id);
        if (b < 0 || !rm->backups[b].full)
            return false;
        k++;
    }
    return k > 0;
}

int rm_replicate_side(replica_mgr *rm, uint32_t slot)
{
    if (slot >= rm->nsegs || log_segment(rm->log, slot)->state != LOG_SEG_SIDE)
        return -1;
    if (rm->segs[slot].tracked && rm->segs[slot].id == log_segment(rm->log, slot)->id)
        return 0;
    seg_track(rm, slot, true);
    kick(rm);
    return 0;
}

bool rm_segment_done(const replica_mgr *rm, uint32_t slot)
{
    const struct rm_seg *s = &rm->segs[slot];
    return s->tracked && !s->pending && seg_done(rm, s);
}

int rm_move_segment(replica_mgr *rm, uint32_t from, uint32_t to)
{
    if (from == to || !rm_segment_done(rm, from) || rm->segs[to].tracked)
        return -1;
    struct rm_seg *s = &rm->segs[from], *d = &rm->segs[to];
    uint32_t gens[RM_MAX_REPLICAS];
    for (uint32_t i = 0; i < RM_MAX_REPLICAS; i++)
        gens[i] = d->r[i].gen + 1;      /* completions for to's previous use are stale */
    *d = *s;
    const struct log_segment *ls = log_segment(rm->log, to);
    d->synced = ls->w.used;
    for (uint32_t i = 0; i < RM_MAX_REPLICAS; i++) {
        d->r[i].gen = gens[i];
        if (d->r[i].b >= 0) {           /* what a re-sent replica would carry */
            d->r[i].sent = d->r[i].acked = ls->w.used;
            d->r[i].sent_crc = ls->w.cert_crc;
        }
    }
    d->prev = d->next = NO_SLOT;
    d->succ = NO_SLOT;
    for (uint32_t i = 0; i < RM_MAX_REPLICAS; i++) {
        s->r[i].b = -1;
        s->r[i].gen++;
    }
    s->tracked = false;
    return 0;
}

void rm_get_stats(const replica_mgr *rm, struct rm_stats *st)
{
    *st = rm->st;
    uint32_t k = 0;
    for (uint32_t p = rm->phead; p != NO_SLOT; p = rm->segs[p].next)
        k++;
    st->segments_pending = k;
}

bool rm_idle(const replica_mgr *rm)
{
    if (rm->rq_head != NULL || rm->gate || rm->info_needed || rm->head_lost)
        return false;
    for (uint32_t p = rm->phead; p != NO_SLOT; p = rm->segs[p].next) {
        const struct rm_seg *s = &rm->segs[p];
        if (s->closed)
            return false;
        for (uint32_t i = 0; i < rm->R; i++)
            if (s->r[i].b < 0 || s->r[i].inflight || s->r[i].acked != seg_used(rm, p))
                return false;
    }
    return true;
}

uint32_t rm_segment_backups(const replica_mgr *rm, uint32_t slot, uint64_t *ids, uint32_t max)
{
    uint32_t k = 0;
    if (slot >= rm->nsegs || !rm->segs[slot].tracked)
        return 0;
    for (uint32_t i = 0; i < rm->R && k < max; i++)
        if (rm->segs[slot].r[i].b >= 0)
            ids[k++] = rm->backups[rm->segs[slot].r[i].b].id;
    return k;
}
