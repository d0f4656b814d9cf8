/* recovery.c -- the recovery-master side of crash recovery (see recovery.h). */
#include "master/recovery.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cram.pb-c.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/segment.h"
#include "common/wire.h"
#include "master/objmgr.h"
#include "master/replica_mgr.h"

#define REC_FAULT_MID_REPLAY "master.recovery.mid_replay"

enum rec_seg_state { SEG_PENDING = 0, SEG_INFLIGHT, SEG_DONE };
enum rec_phase { PH_FETCH = 0, PH_DURABLE, PH_REPORT, PH_DONE };

struct rec_job;

/* One replica of a segment, as the coordinator listed it. */
struct rec_replica {
    uint64_t backup_id;
    uint64_t epoch;
    uint32_t sess;             /* index into job->sess */
};

/* One segment of the crashed master's log: its replicas are
 * job->reps[first .. first+n), tried in order. */
struct rec_segment {
    struct rec_job *job;
    uint64_t id;
    uint32_t first, n;
    uint32_t cur;              /* replica being read */
    uint32_t offset;           /* where the next GET_RECOVERY_DATA resumes */
    uint8_t  state;            /* enum rec_seg_state */
};

/* A session to one backup (shared by the segments it serves). */
struct rec_sess {
    char *locator;
    tp_session *s;
};

struct rec_job {
    rec_mgr *mgr;
    struct rec_job *next;
    uint64_t recovery_id, crashed_id;
    uint32_t partition_id;
    uint32_t readers;          /* partitions of the recovery (GET_RECOVERY_DATA readers), 0 = unknown */
    uint32_t nrepl;            /* rp.slots[0, nrepl) (full side segments) handed to the
                                * replica manager before the commit */
    struct om_tablet *tablets;
    uint32_t ntablets;
    struct wire_tablet_range *ranges;   /* the tablets as sent to backups */
    struct rec_replica *reps;
    uint32_t nreps;
    struct rec_segment *segs;
    uint32_t nsegs;
    struct rec_sess *sess;
    uint32_t nsess;
    uint32_t next_seg;         /* first segment never sent */
    uint32_t ndone;            /* segments fully replayed */
    uint32_t inflight;         /* GET_RECOVERY_DATA outstanding */
    struct om_replay rp;
    int phase;                 /* enum rec_phase */
    bool failed;               /* stop fetching; report failure once idle */
    bool chunk_seen;           /* fault point: first chunk replayed */
    char err[160];
    uint64_t start_ms, replay_ms;
    tp_session *coord;
    uint32_t finish_tries;     /* reports sent without a definitive answer */
    bool reported_ok;          /* what RECOVERY_MASTER_FINISHED said */
    uint64_t timer;            /* pending timer (retry / reap / no-R durable), 0 = none */
};

static void job_abort_replay(struct rec_job *j);

struct rec_mgr {
    objmgr *om;
    tp_loop *loop;
    replica_mgr *rm;
    uint64_t server_id;
    char coord[512];
    struct rec_job *jobs;
    struct rec_stats st;
};

/* ---- life cycle -------------------------------------------------------- */

rec_mgr *rec_create(objmgr *om)
{
    rec_mgr *r = calloc(1, sizeof *r);
    if (r != NULL)
        r->om = om;
    return r;
}

void rec_set_loop(rec_mgr *r, tp_loop *loop) { r->loop = loop; }
void rec_set_replica_mgr(rec_mgr *r, replica_mgr *rm) { r->rm = rm; }
void rec_set_server_id(rec_mgr *r, uint64_t id) { r->server_id = id; }
void rec_set_coordinator(rec_mgr *r, const char *locator)
{
    snprintf(r->coord, sizeof r->coord, "%s", locator ? locator : "");
}

uint32_t rec_active(const rec_mgr *r)
{
    uint32_t n = 0;
    for (const struct rec_job *j = r->jobs; j != NULL; j = j->next)
        n++;
    return n;
}

void rec_get_stats(const rec_mgr *r, struct rec_stats *st) { *st = r->st; }

/* Close every session (their RPCs complete with errors; the callbacks see
 * PH_DONE and only count down), cancel the timer, free the job. */
static void job_free(struct rec_job *j)
{
    rec_mgr *m = j->mgr;
    j->phase = PH_DONE;
    if (j->timer != 0)
        tp_timer_cancel(m->loop, j->timer);
    j->timer = 0;
    for (uint32_t i = 0; i < j->nsess; i++) {
        if (j->sess[i].s != NULL)
            tp_session_close(j->sess[i].s);
        free(j->sess[i].locator);
    }
    if (j->coord != NULL)
        tp_session_close(j->coord);
    om_replay_free(&j->rp);
    free(j->sess);
    free(j->segs);
    free(j->reps);
    free(j->ranges);
    free(j->tablets);
    free(j);
}

static void job_unlink(struct rec_job *j)
{
    struct rec_job **pp = &j->mgr->jobs;
    while (*pp != NULL && *pp != j)
        pp = &(*pp)->next;
    if (*pp == j)
        *pp = j->next;
}

void rec_destroy(rec_mgr *r)
{
    if (r == NULL)
        return;
    while (r->jobs != NULL) {
        struct rec_job *j = r->jobs;
        r->jobs = j->next;
        if (j->phase == PH_FETCH || j->phase == PH_DURABLE || j->phase == PH_REPORT) {
            /* never confirmed: the data must not be served */
            j->phase = PH_DONE;
            job_abort_replay(j);
        }
        job_free(j);
    }
    free(r);
}

/* Drop what was replayed: the side segments already being replicated lose
 * their replicas first (they are in no log digest yet, so a backup copy
 * would never be used), then the replay is undone. */
static void job_abort_replay(struct rec_job *j)
{
    rec_mgr *m = j->mgr;
    if (!j->rp.committed && m->rm != NULL)
        for (uint32_t i = 0; i < j->nrepl && i < j->rp.nslots; i++)
            rm_free_segment(m->rm, j->rp.slots[i]);
    j->nrepl = 0;
    om_replay_abort(m->om, &j->rp, j->tablets, j->ntablets);
}

/* Side segments the replay has moved past are full (nothing is appended
 * to them again): replicate them now, as they fill, so the backups write
 * them while replay goes on instead of all at the end (the durable tail). */
static void replicate_full(struct rec_job *j)
{
    rec_mgr *m = j->mgr;
    if (m->rm == NULL || j->rp.committed)
        return;
    while (j->rp.nslots > 0 && j->nrepl < j->rp.nslots - 1) {
        if (rm_replicate_side(m->rm, j->rp.slots[j->nrepl]) != 0)
            return;                 /* replicated at the commit instead */
        j->nrepl++;
    }
}

/* Free a finished job from the loop (never inside one of its own session
 * callbacks, which tp_session_close would re-enter). */
static void job_reap_cb(void *arg)
{
    struct rec_job *j = arg;
    j->timer = 0;
    job_unlink(j);
    job_free(j);
}

static void job_reap(struct rec_job *j)
{
    j->phase = PH_DONE;
    if (j->timer != 0)
        tp_timer_cancel(j->mgr->loop, j->timer);
    j->timer = tp_timer_add(j->mgr->loop, 0, job_reap_cb, j);
}

/* ---- fault point ------------------------------------------------------- */

/* CRAM_FAULT="name:exit[,name:exit...]" arms `name` (same syntax as the
 * coordinator's fault points). */
static bool fault_armed(const char *name)
{
    const char *spec = getenv("CRAM_FAULT");
    if (spec == NULL)
        return false;
    size_t n = strlen(name);
    for (const char *p = spec; *p != '\0';) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n + 5 && strncmp(p, name, n) == 0 && strncmp(p + n, ":exit", 5) == 0)
            return true;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return false;
}

/* ---- reporting ---------------------------------------------------------- */

static void report(struct rec_job *j);
static void finish_retry_cb(void *arg);

/* No definitive answer to the report yet: send it again later. */
static void report_later(struct rec_job *j, cram_status why)
{
    rec_mgr *m = j->mgr;
    uint64_t delay = REC_FINISH_RETRY_MS;
    for (uint32_t i = 0; i < j->finish_tries && delay < REC_FINISH_RETRY_MAX_MS; i++)
        delay *= 2;
    if (delay > REC_FINISH_RETRY_MAX_MS)
        delay = REC_FINISH_RETRY_MAX_MS;
    j->finish_tries++;
    if (j->finish_tries <= 3 || j->finish_tries % 20 == 0)
        CRAM_WARN("recovery %llu partition %u: RECOVERY_MASTER_FINISHED to %s: %s (try %u); "
                  "sending it again", (unsigned long long)j->recovery_id, j->partition_id,
                  m->coord, cram_status_name(why), j->finish_tries);
    j->timer = tp_timer_add(m->loop, clock_test_scaled_ms(delay) * 1000, finish_retry_cb, j);
}

static void finish_retry_cb(void *arg)
{
    struct rec_job *j = arg;
    j->timer = 0;
    if (j->coord != NULL) {
        tp_session_close(j->coord);
        j->coord = NULL;
    }
    report(j);
}

static void on_finished(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct rec_job *j = arg;
    if (j->phase != PH_REPORT)
        return;                 /* being destroyed */
    rec_mgr *m = j->mgr;
    if (st == CRAM_OK) {
        struct wire_resp_hdr h;
        if (len < sizeof h) {
            st = CRAM_REQUEST_FORMAT_ERROR;
        } else {
            memcpy(&h, resp, sizeof h);
            st = (cram_status)h.status;
        }
    }
    if (st == CRAM_TRANSPORT_ERROR || st == CRAM_TIMEOUT || st == CRAM_RETRY ||
        st == CRAM_COORDINATOR_UNAVAILABLE) {
        report_later(j, st);
        return;
    }
    if (!j->reported_ok) {
        /* a failure was reported; what was replayed is already gone */
        m->st.failed++;
    } else if (st == CRAM_OK) {
        for (uint32_t i = 0; i < j->ntablets; i++)
            om_take_tablet(m->om, j->tablets[i].table_id, j->tablets[i].start_hash,
                           j->tablets[i].end_hash, OM_TABLET_NORMAL);
        m->st.succeeded++;
        m->st.segments += j->nsegs;
        m->st.bytes += j->rp.bytes;
        m->st.objects += j->rp.objects;
        m->st.tombstones += j->rp.tombstones;
        CRAM_INFO("recovery %llu partition %u of master %llu: confirmed by the coordinator; "
                  "serving %u tablets (%llu ms since RECOVER)",
                  (unsigned long long)j->recovery_id, j->partition_id,
                  (unsigned long long)j->crashed_id, j->ntablets,
                  (unsigned long long)(clock_mono_ms() - j->start_ms));
    } else {
        CRAM_WARN("recovery %llu partition %u: coordinator answered %s; dropping the "
                  "replayed tablets", (unsigned long long)j->recovery_id, j->partition_id,
                  cram_status_name(st));
        om_replay_abort(m->om, &j->rp, j->tablets, j->ntablets);
        m->st.failed++;
    }
    job_reap(j);
}

/* Send RECOVERY_MASTER_FINISHED (ok = !j->failed). */
static void report(struct rec_job *j)
{
    rec_mgr *m = j->mgr;
    j->phase = PH_REPORT;
    j->reported_ok = !j->failed;
    Cram__RecoveryMasterFinished f = CRAM__RECOVERY_MASTER_FINISHED__INIT;
    f.recovery_id = j->recovery_id;
    f.partition_id = j->partition_id;
    f.server_id = m->server_id;
    f.ok = !j->failed;
    f.error = j->failed ? j->err : (char *)"";
    f.segments_replayed = j->ndone;
    f.bytes_replayed = j->rp.bytes;
    f.objects = j->rp.objects;
    f.tombstones = j->rp.tombstones;
    f.replay_ms = j->replay_ms;
    size_t n = cram__recovery_master_finished__get_packed_size(&f);
    uint8_t *buf = malloc(sizeof(struct wire_req_hdr) + n);
    cram_status st = CRAM_NO_MEMORY;
    if (buf != NULL) {
        struct wire_req_hdr h = { .opcode = WIRE_OP_RECOVERY_MASTER_FINISHED,
                                  .service = WIRE_SVC_COORDINATOR, .flags = 0 };
        memcpy(buf, &h, sizeof h);
        cram__recovery_master_finished__pack(&f, buf + sizeof h);
        if (j->coord == NULL)
            j->coord = tp_session_open(m->loop, m->coord, &st);
        if (j->coord != NULL) {
            struct iovec iov = { buf, sizeof h + n };
            st = tp_send(j->coord, &iov, 1, (uint32_t)clock_test_scaled_ms(REC_FINISH_TIMEOUT_MS),
                         on_finished, j);
        }
        free(buf);
    }
    if (st != CRAM_OK) {
        /* not sent (no session, out of memory): the same as no answer */
        if (j->coord != NULL && !tp_session_alive(j->coord)) {
            tp_session_close(j->coord);
            j->coord = NULL;
        }
        report_later(j, st);
    }
}

static void durable_cb(void *arg)
{
    struct rec_job *j = arg;
    j->timer = 0;
    if (j->phase != PH_DURABLE)
        return;
    CRAM_INFO("recovery %llu partition %u: replayed data on all replicas after %llu ms",
              (unsigned long long)j->recovery_id, j->partition_id,
              (unsigned long long)(clock_mono_ms() - j->start_ms));
    report(j);
}

/* Give up (once nothing is outstanding): drop the replayed tablets and
 * report the failure. */
static void job_fail(struct rec_job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void job_fail(struct rec_job *j, const char *fmt, ...)
{
    if (!j->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(j->err, sizeof j->err, fmt, ap);
        va_end(ap);
        j->failed = true;
        CRAM_ERROR("recovery %llu partition %u of master %llu failed: %s",
                   (unsigned long long)j->recovery_id, j->partition_id,
                   (unsigned long long)j->crashed_id, j->err);
    }
    if (j->inflight > 0 || j->phase != PH_FETCH)
        return;
    job_abort_replay(j);
    j->replay_ms = clock_mono_ms() - j->start_ms;
    report(j);
}

/* Every segment is replayed: take the tombstones out of the hash table,
 * join the side segments to the log, wait until they are on R backups. */
static void replay_complete(struct rec_job *j)
{
    rec_mgr *m = j->mgr;
    j->replay_ms = clock_mono_ms() - j->start_ms;
    double secs = j->replay_ms > 0 ? (double)j->replay_ms / 1000.0 : 0.001;
    CRAM_INFO("recovery %llu partition %u of master %llu: replayed %u segments, %llu bytes, "
              "%llu objects, %llu tombstones (%llu older/duplicate entries ignored) in %llu ms, "
              "%.1f MB/s", (unsigned long long)j->recovery_id, j->partition_id,
              (unsigned long long)j->crashed_id, j->ndone, (unsigned long long)j->rp.bytes,
              (unsigned long long)j->rp.objects, (unsigned long long)j->rp.tombstones,
              (unsigned long long)j->rp.ignored, (unsigned long long)j->replay_ms,
              (double)j->rp.bytes / 1e6 / secs);
    om_replay_end(m->om, &j->rp, j->tablets, j->ntablets);
    if (om_replay_commit(m->om, &j->rp) != 0) {
        job_fail(j, "no free segment to join %u replayed segments to the log", j->rp.nslots);
        return;
    }
    j->phase = PH_DURABLE;
    if (m->rm != NULL) {
        if (rm_when_durable(m->rm, durable_cb, j) != 0) {
            j->phase = PH_FETCH;
            job_fail(j, "out of memory waiting for replication");
        }
        return;
    }
    j->timer = tp_timer_add(m->loop, 0, durable_cb, j);
}

/* ---- fetching ------------------------------------------------------------ */

static void on_data(void *arg, cram_status st, const uint8_t *resp, uint32_t len);

/* Send the next GET_RECOVERY_DATA of seg (its current replica and offset).
 * false if it could not be sent (the caller moves to the next replica). */
static bool send_one(struct rec_segment *seg)
{
    struct rec_job *j = seg->job;
    struct rec_replica *rep = &j->reps[seg->first + seg->cur];
    struct rec_sess *ss = &j->sess[rep->sess];
    cram_status st;
    if (ss->s != NULL && !tp_session_alive(ss->s)) {
        tp_session_close(ss->s);
        ss->s = NULL;
    }
    if (ss->s == NULL && (ss->s = tp_session_open(j->mgr->loop, ss->locator, &st)) == NULL)
        return false;
    struct wire_recovery_data_req q;
    memset(&q, 0, sizeof q);
    q.hdr.opcode = WIRE_OP_BACKUP_GET_RECOVERY_DATA;
    q.hdr.service = WIRE_SVC_BACKUP;
    q.tgt.target_server_id = rep->backup_id;
    q.master_id = j->crashed_id;
    q.segment_id = seg->id;
    q.epoch = rep->epoch;
    q.offset = seg->offset;
    q.max_bytes = REC_CHUNK_BYTES;
    q.ntablets = j->ntablets;
    /* every partition reads the first replica: it can be dropped from the
     * backup's memory once all have; others may be read by fewer */
    q.readers = seg->cur == 0 ? j->readers : 0;
    struct iovec iov[2] = { { &q, sizeof q }, { j->ranges, (size_t)j->ntablets * sizeof *j->ranges } };
    st = tp_send(ss->s, iov, 2, (uint32_t)clock_test_scaled_ms(REC_RPC_TIMEOUT_MS), on_data, seg);
    if (st != CRAM_OK)
        return false;
    seg->state = SEG_INFLIGHT;
    return true;
}

/* Send seg's next request, moving on to its next replicas while sending
 * fails.  false (job failed) when no replica is left. */
static bool send_seg(struct rec_segment *seg)
{
    while (seg->cur < seg->n) {
        if (send_one(seg))
            return true;
        seg->cur++;
        seg->offset = 0;
    }
    return false;
}

/* Start segments while fewer than REC_MAX_INFLIGHT requests are out. */
static void fill(struct rec_job *j)
{
    while (!j->failed && j->inflight < REC_MAX_INFLIGHT && j->next_seg < j->nsegs) {
        struct rec_segment *seg = &j->segs[j->next_seg++];
        if (!send_seg(seg)) {
            seg->state = SEG_DONE;
            job_fail(j, "segment %llu: no replica could be read", (unsigned long long)seg->id);
            return;
        }
        j->inflight++;
    }
}

/* The current replica of seg failed: the next one, from offset 0. */
static void replica_failed(struct rec_segment *seg, const char *why)
{
    struct rec_job *j = seg->job;
    const struct rec_replica *rep = &j->reps[seg->first + seg->cur];
    CRAM_WARN("recovery %llu: segment %llu from backup %llu (%s): %s%s",
              (unsigned long long)j->recovery_id, (unsigned long long)seg->id,
              (unsigned long long)rep->backup_id, j->sess[rep->sess].locator, why,
              seg->cur + 1 < seg->n ? "; trying its next replica" : "");
    seg->cur++;
    seg->offset = 0;
    if (!send_seg(seg)) {
        seg->state = SEG_DONE;
        j->inflight--;
        job_fail(j, "segment %llu: no replica could be read (last: %s)",
                 (unsigned long long)seg->id, why);
    }
}

#define REC_PREFETCH_AHEAD 8u   /* entries whose hash bucket is prefetched ahead of the replay */

/* Prefetch the hash bucket of the entry at *pos (header-only walk: the
 * replay checks every entry; a malformed one just ends the prefetching) and
 * move *pos past it.  false at the end or on a malformed header. */
static bool prefetch_next(const objmgr *om, const uint8_t *p, uint32_t len, uint32_t *pos)
{
    struct seg_entry_hdr h;
    if (*pos >= len || len - *pos < sizeof h)
        return false;
    memcpy(&h, p + *pos, sizeof h);
    if ((uint64_t)h.length > (uint64_t)len - *pos - sizeof h)
        return false;
    struct seg_entry e = { .type = h.type, .offset = *pos, .length = h.length,
                           .body = p + *pos + sizeof h };
    const uint8_t *key;
    if (h.type == SEG_ENTRY_OBJECT) {
        const struct seg_object *o;
        const uint8_t *val;
        uint32_t vl;
        if (seg_parse_object(&e, &o, &key, &val, &vl))
            om_prefetch(om, o->table_id, key, o->key_len);
    } else if (h.type == SEG_ENTRY_TOMBSTONE) {
        const struct seg_tombstone *t;
        if (seg_parse_tombstone(&e, &t, &key))
            om_prefetch(om, t->table_id, key, t->key_len);
    }
    *pos += (uint32_t)(sizeof h + h.length);
    return true;
}

/* Verify and replay one chunk.  CRAM_OK, CRAM_REQUEST_FORMAT_ERROR /
 * CRAM_INVALID_OBJECT (bad chunk: try another replica), or a local failure
 * (no space, no memory) in *fatal. */
static cram_status replay_chunk(struct rec_job *j, const uint8_t *p, uint32_t len,
                                uint32_t want_entries, cram_status *fatal)
{
    struct seg_iter it;
    struct seg_entry e;
    seg_iter_init(&it, p, len);
    uint32_t n = 0;
    int s;
    *fatal = CRAM_OK;
    /* the hash-table buckets of the next entries are fetched from memory
     * while this one is replayed (a miss per object otherwise) */
    uint32_t ahead = 0;
    bool more = true;
    for (uint32_t k = 0; k < REC_PREFETCH_AHEAD && more; k++)
        more = prefetch_next(j->mgr->om, p, len, &ahead);
    while ((s = seg_iter_next(&it, &e)) == SEG_ITER_OK) {
        n++;
        if (more)
            more = prefetch_next(j->mgr->om, p, len, &ahead);
        cram_status st = om_replay_entry(j->mgr->om, &j->rp, &e);
        if (st == CRAM_INVALID_OBJECT)
            return st;
        if (st != CRAM_OK) {
            *fatal = st;
            return st;
        }
    }
    if (s != SEG_ITER_END || n != want_entries)
        return CRAM_REQUEST_FORMAT_ERROR;
    return CRAM_OK;
}

static void on_data(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct rec_segment *seg = arg;
    struct rec_job *j = seg->job;
    if (j->phase != PH_FETCH)
        return;                 /* being destroyed */
    if (j->failed) {
        seg->state = SEG_DONE;
        j->inflight--;
        job_fail(j, "%s", j->err);
        return;
    }
    char why[96];
    struct wire_recovery_data_resp h;
    if (st != CRAM_OK) {
        snprintf(why, sizeof why, "%s", cram_status_name(st));
        replica_failed(seg, why);
        return;
    }
    if (len < sizeof(struct wire_resp_hdr)) {
        replica_failed(seg, "short response");
        return;
    }
    memcpy(&h.hdr, resp, sizeof h.hdr);
    if (h.hdr.status != CRAM_OK) {
        snprintf(why, sizeof why, "%s", cram_status_name((cram_status)h.hdr.status));
        replica_failed(seg, why);
        return;
    }
    memcpy(&h, resp, len < sizeof h ? len : sizeof h);
    const struct rec_replica *rep = &j->reps[seg->first + seg->cur];
    if (len < sizeof h || h.length != len - sizeof h || h.done > 1 ||
        (rep->epoch != 0 && h.epoch != rep->epoch) ||
        (!h.done && h.next_offset <= seg->offset) || h.next_offset < seg->offset) {
        replica_failed(seg, "malformed response");
        return;
    }
    cram_status fatal;
    st = replay_chunk(j, resp + sizeof h, h.length, h.entries, &fatal);
    if (fatal != CRAM_OK) {
        seg->state = SEG_DONE;
        j->inflight--;
        job_fail(j, "replaying segment %llu: %s", (unsigned long long)seg->id,
                 cram_status_name(fatal));
        return;
    }
    if (st != CRAM_OK) {
        replica_failed(seg, "an entry fails its checksum or does not parse");
        return;
    }
    replicate_full(j);
    if (!j->chunk_seen) {
        j->chunk_seen = true;
        if (fault_armed(REC_FAULT_MID_REPLAY)) {
            fprintf(stderr, "FAULT %s hit\n", REC_FAULT_MID_REPLAY);
            fflush(stderr);
            _exit(99);
        }
    }
    if (!h.done) {
        seg->offset = h.next_offset;
        if (!send_seg(seg)) {
            seg->state = SEG_DONE;
            j->inflight--;
            job_fail(j, "segment %llu: no replica could be read", (unsigned long long)seg->id);
        }
        return;
    }
    seg->state = SEG_DONE;
    j->ndone++;
    j->inflight--;
    fill(j);
    if (!j->failed && j->ndone == j->nsegs)
        replay_complete(j);
}

/* ---- start ----------------------------------------------------------------- */

/* Index of the session for a locator, adding one. */
static int sess_index(struct rec_job *j, const char *locator, uint32_t cap)
{
    for (uint32_t i = 0; i < j->nsess; i++)
        if (strcmp(j->sess[i].locator, locator) == 0)
            return (int)i;
    if (j->nsess == cap)
        return -1;
    j->sess[j->nsess].locator = strdup(locator);
    if (j->sess[j->nsess].locator == NULL)
        return -1;
    j->sess[j->nsess].s = NULL;
    return (int)j->nsess++;
}

/* Build a job from a validated request; NULL if out of memory. */
static struct rec_job *job_build(rec_mgr *m, const Cram__RecoverRequest *rq)
{
    struct rec_job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return NULL;
    j->mgr = m;
    j->recovery_id = rq->recovery_id;
    j->crashed_id = rq->crashed_master_id;
    j->partition_id = rq->partition_id;
    j->readers = rq->partitions <= WIRE_MAX_RECOVERY_READERS ? rq->partitions : 0;
    j->ntablets = (uint32_t)rq->n_tablets;
    j->tablets = calloc(j->ntablets, sizeof *j->tablets);
    j->ranges = calloc(j->ntablets, sizeof *j->ranges);
    j->reps = calloc(rq->n_replicas, sizeof *j->reps);
    j->segs = calloc(rq->n_replicas, sizeof *j->segs);
    j->sess = calloc(rq->n_replicas, sizeof *j->sess);
    if (j->tablets == NULL || j->ranges == NULL || j->reps == NULL || j->segs == NULL ||
        j->sess == NULL)
        goto out_free_job;
    for (uint32_t i = 0; i < j->ntablets; i++) {
        const Cram__Tablet *t = rq->tablets[i];
        j->tablets[i] = (struct om_tablet){ .table_id = t->table_id, .start_hash = t->start_hash,
                                            .end_hash = t->end_hash, .state = OM_TABLET_RECOVERING };
        j->ranges[i] = (struct wire_tablet_range){ t->table_id, t->start_hash, t->end_hash };
    }
    /* group the replicas by segment, keeping the coordinator's order (first
     * listed = primary); a segment's replicas need not be adjacent */
    uint32_t *order = calloc(rq->n_replicas, sizeof *order);
    if (order == NULL)
        goto out_free_job;
    for (size_t i = 0; i < rq->n_replicas; i++) {
        const Cram__ReplicaLocation *rl = rq->replicas[i];
        uint32_t s = 0;
        while (s < j->nsegs && j->segs[s].id != rl->segment_id)
            s++;
        if (s == j->nsegs) {
            j->segs[s] = (struct rec_segment){ .job = j, .id = rl->segment_id };
            j->nsegs++;
        }
        j->segs[s].n++;
        order[i] = s;
    }
    uint32_t at = 0;
    for (uint32_t s = 0; s < j->nsegs; s++) {
        j->segs[s].first = at;
        at += j->segs[s].n;
        j->segs[s].n = 0;
    }
    for (size_t i = 0; i < rq->n_replicas; i++) {
        const Cram__ReplicaLocation *rl = rq->replicas[i];
        struct rec_segment *sg = &j->segs[order[i]];
        int si = sess_index(j, rl->backup_locator, (uint32_t)rq->n_replicas);
        if (si < 0) {
            free(order);
            goto out_free_job;
        }
        j->reps[sg->first + sg->n++] = (struct rec_replica){ .backup_id = rl->backup_id,
                                                              .epoch = rl->epoch,
                                                              .sess = (uint32_t)si };
    }
    j->nreps = (uint32_t)rq->n_replicas;
    free(order);
    return j;

out_free_job:
    for (uint32_t i = 0; i < j->nsess; i++)
        free(j->sess[i].locator);
    free(j->sess);
    free(j->segs);
    free(j->reps);
    free(j->ranges);
    free(j->tablets);
    free(j);
    return NULL;
}

static cram_status validate(const Cram__RecoverRequest *rq)
{
    if (rq->n_tablets == 0 || rq->n_tablets > WIRE_MAX_RECOVERY_TABLETS || rq->n_replicas == 0 ||
        rq->crashed_master_id == 0)
        return CRAM_REQUEST_FORMAT_ERROR;
    for (size_t i = 0; i < rq->n_tablets; i++) {
        const Cram__Tablet *t = rq->tablets[i];
        if (t == NULL || t->start_hash > t->end_hash)
            return CRAM_REQUEST_FORMAT_ERROR;
    }
    for (size_t i = 0; i < rq->n_replicas; i++) {
        const Cram__ReplicaLocation *rl = rq->replicas[i];
        if (rl == NULL || rl->backup_locator == NULL || rl->backup_locator[0] == '\0')
            return CRAM_REQUEST_FORMAT_ERROR;
    }
    return CRAM_OK;
}

/* Does om hold exactly t's range in state RECOVERING? */
static bool holds_recovering(const objmgr *om, const struct om_tablet *t)
{
    for (uint32_t i = 0; i < om_tablet_count(om); i++) {
        const struct om_tablet *o = om_tablet_get(om, i);
        if (o->table_id == t->table_id && o->start_hash == t->start_hash &&
            o->end_hash == t->end_hash)
            return o->state == OM_TABLET_RECOVERING;
    }
    return false;
}

cram_status rec_start(rec_mgr *m, const uint8_t *body, size_t len)
{
    Cram__RecoverRequest *rq = cram__recover_request__unpack(NULL, len, body);
    if (rq == NULL)
        return CRAM_REQUEST_FORMAT_ERROR;
    cram_status st = validate(rq);
    if (st != CRAM_OK)
        goto out_free_rq;
    if (m->server_id == 0 || m->loop == NULL || m->coord[0] == '\0') {
        st = CRAM_RETRY;
        goto out_free_rq;
    }
    for (struct rec_job *o = m->jobs; o != NULL; o = o->next) {
        if (o->recovery_id == rq->recovery_id && o->partition_id == rq->partition_id &&
            o->crashed_id == rq->crashed_master_id && o->phase != PH_DONE && !o->failed) {
            st = CRAM_OK;           /* a re-sent RECOVER: already running */
            goto out_free_rq;
        }
    }
    struct rec_job *j = job_build(m, rq);
    if (j == NULL) {
        st = CRAM_NO_MEMORY;
        goto out_free_rq;
    }
    /* no tablet may be part of another recovery running here */
    for (struct rec_job *o = m->jobs; o != NULL; o = o->next) {
        for (uint32_t a = 0; o->phase != PH_DONE && !o->failed && a < o->ntablets; a++) {
            for (uint32_t b = 0; b < j->ntablets; b++) {
                const struct om_tablet *x = &o->tablets[a], *y = &j->tablets[b];
                if (x->table_id == y->table_id && x->start_hash <= y->end_hash &&
                    y->start_hash <= x->end_hash) {
                    job_free(j);
                    st = CRAM_INVALID_ARGUMENT;
                    goto out_free_rq;
                }
            }
        }
    }
    for (uint32_t i = 0; i < j->ntablets; i++) {
        const struct om_tablet *t = &j->tablets[i];
        /* the partition's tablets must be new to this master, or already
         * held RECOVERING with exactly this range (a TAKE_TABLET came first) */
        st = om_check_tablet(m->om, t->table_id, t->start_hash);
        if (st == CRAM_UNKNOWN_TABLET)
            st = om_take_tablet(m->om, t->table_id, t->start_hash, t->end_hash, OM_TABLET_RECOVERING);
        else
            st = holds_recovering(m->om, t) ? CRAM_OK : CRAM_INVALID_ARGUMENT;
        if (st != CRAM_OK) {
            for (uint32_t k = 0; k < i; k++)
                om_drop_tablet(m->om, j->tablets[k].table_id, j->tablets[k].start_hash,
                               j->tablets[k].end_hash);
            CRAM_WARN("recovery %llu partition %u: tablet of table %llu [%016llx, %016llx]: %s",
                      (unsigned long long)j->recovery_id, j->partition_id,
                      (unsigned long long)t->table_id, (unsigned long long)t->start_hash,
                      (unsigned long long)t->end_hash, cram_status_name(st));
            job_free(j);
            goto out_free_rq;
        }
    }
    j->start_ms = clock_mono_ms();
    j->next = m->jobs;
    m->jobs = j;
    m->st.started++;
    CRAM_INFO("recovery %llu partition %u of master %llu: %u tablets, %u segments "
              "(%u replicas on %u backups)", (unsigned long long)j->recovery_id, j->partition_id,
              (unsigned long long)j->crashed_id, j->ntablets, j->nsegs, j->nreps, j->nsess);
    fill(j);
    st = CRAM_OK;

out_free_rq:
    cram__recover_request__free_unpacked(rq, NULL);
    return st;
}
