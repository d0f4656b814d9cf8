/* lc.c -- the log cleaner: compaction, combined cleaning, epochs (see lc.h). */
#include "logcleaner/lc.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "common/clock.h"
#include "common/keyhash.h"
#include "common/log.h"
#include "master/replica_mgr.h"

#define LC_MAX_SRC      64      /* segments per combined pass */
#define LC_MAX_DST      17      /* survivors per pass (+1 for late tombstones) */
#define LC_MAX_COMPACT  4       /* segments compacted per pass (one target each) */
#define LC_RECLAIM_US   1000    /* retry period while freed memory waits for readers */
#define LC_ROLL_US      20000   /* a combined pass's digest waits at most this long
                                 * for the next head before the cleaner opens one */
#define LC_HDR_BYTES    ((uint32_t)seg_entry_size(sizeof(struct seg_header_body)))

enum { JOB_COMPACT = 1, JOB_CLEAN = 2 };

/* One live entry copied by the worker.  hash is 0 for tombstones. */
struct lc_reloc {
    log_ref  old_ref, new_ref;
    uint64_t hash;
    uint64_t *slot;             /* the hash-table entry (worker: a hint; dispatch:
                                 * confirmed, or NULL: the object moved on) */
    uint32_t size;              /* whole entry */
    uint8_t  type;
    uint8_t  si;                /* index of its source in the job */
};

/* A live entry found while scanning (worker). */
struct lc_live {
    log_ref  ref;
    uint64_t hash;
    uint64_t *slot;             /* hash-table entry seen (a hint: entries move) */
    uint32_t ts;                /* object / tombstone timestamp: age order */
    uint32_t size;
    uint8_t  type;
    uint8_t  si;
};

/*
 * One pass.  Compaction: src[i] is compacted into dst[i].  The dispatch thread fills the inputs and hands the job to the
 * worker (under mu); the worker fills the outputs and posts on_job_done,
 * after which only the dispatch thread touches it.
 */
struct lc_job {
    int kind;
    uint32_t src[LC_MAX_SRC];
    uint32_t src_used[LC_MAX_SRC];  /* fill levels (closed: never change) */
    uint32_t nsrc;
    uint32_t dst[LC_MAX_DST];
    uint32_t ndst;
    uint64_t *ids;                  /* sorted ids of the segments in the log */
    size_t nids;
    /* outputs */
    struct lc_reloc *rel;
    size_t nrel;
    uint64_t copied;
    uint64_t ts_dropped;
    uint64_t needed[LC_MAX_COMPACT]; /* compaction: bytes each source's live entries need */
    uint64_t ns;
    int failed;
};

/* The replicas of cleaned segments, waiting until their replacement is
 * durable (their memory went at the commit): first for a head opened after
 * the commit (its digest drops them and lists the survivors), then for that
 * head to be durable. */
struct lc_wait {
    struct lc_wait *next;
    lc_cleaner *c;
    uint64_t rolls;                 /* c->rolls at the commit */
    bool armed;                     /* handed to rm_when_durable */
    uint32_t n;
    struct rm_detached det[LC_MAX_SRC];
};

struct lc_retired {
    uint32_t slot;
    uint64_t tag;
};

/* Thread rule: everything below belongs to the dispatch thread except `mu`,
 * `cv`, `todo` and `stop` (shared with the worker under mu) and the job
 * handed over through them, and `ep` (atomics, see lc_epoch.h). */
struct lc_cleaner {
    tp_loop *loop;
    mlog *log;
    ht *ht;
    replica_mgr *rm;
    struct lc_config cfg;
    log_event_fn prev_hook;
    void *prev_arg;
    lc_epoch ep;

    pthread_t th;
    bool th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct lc_job *todo;            /* under mu */
    bool stop;                      /* under mu */

    struct lc_job *job;             /* the pass out at the worker (dispatch view) */
    uint64_t kick_timer;
    uint64_t reclaim_timer;
    struct lc_wait *waits;
    uint64_t rolls;                 /* heads opened (LOG_EV_HEAD_OPENED) */
    uint64_t arm_timer;             /* arm the waits a new head covers */
    uint64_t roll_timer;            /* open a head for waits none has covered yet */
    struct lc_retired *ret;
    size_t nret, capret;
    uint64_t *ids_scratch;
    uint64_t lowmem;                /* low-water mark of free memory (lc_kick) */
    uint64_t last_report_ms;        /* progress line in the log, at most every 10 s */
    bool full_note;                 /* a backup refused a replica as full (lc_backup_full)
                                     * since the last decision */
    uint64_t last_full_warn_ms;     /* "every backup is full" warning, at most every 10 s */
    struct lc_stats st;
};

static void on_job_done(void *arg);
static void try_reclaim(lc_cleaner *c);
static void arm_cb(void *arg);
static void roll_cb(void *arg);
static bool roll_for_waits(lc_cleaner *c);

/* ---- pure parts ---------------------------------------------------------- */

double lc_cost_benefit(uint32_t live_bytes, uint64_t named_bytes, uint32_t size, uint64_t age_ms)
{
    double u = size ? (double)live_bytes / size : 1.0;
    if (u > 1.0)
        u = 1.0;
    double t = size ? (double)named_bytes / size : 0.0;
    return (1.0 - u + t) * (double)(age_ms + 1) / (1.0 + u);
}

static bool match_ref(void *ctx, log_ref ref)
{
    return ref == *(const log_ref *)ctx;
}

static bool id_in(const uint64_t *ids, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ids[mid] == id)
            return true;
        if (ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* Object: live iff the hash table refers to exactly this entry (*slot: where). */
static bool object_live(const ht *t, const struct seg_entry_hdr *h, log_ref ref, uint64_t *hash,
                        uint64_t **slot)
{
    if (h->length < sizeof(struct seg_object))
        return false;
    const struct seg_object *o = (const struct seg_object *)log_entry_body(h);
    if (sizeof *o + (uint64_t)o->key_len > h->length)
        return false;
    *hash = cram_key_hash(o->table_id, (const uint8_t *)o + sizeof *o, o->key_len);
    log_ref want = ref;
    return ht_lookup(t, *hash, match_ref, &want, slot) == ref;
}

/* Tombstone: live while the segment of the object it removed is in the log. */
static bool tombstone_live(const struct seg_entry_hdr *h, const uint64_t *ids, size_t nids)
{
    if (h->length < sizeof(struct seg_tombstone))
        return false;
    const struct seg_tombstone *ts = (const struct seg_tombstone *)log_entry_body(h);
    return id_in(ids, nids, ts->segment_id);
}

bool lc_entry_live(const mlog *l, const ht *t, log_ref ref, const uint64_t *log_ids, size_t nids)
{
    const struct seg_entry_hdr *h = log_entry_get(l, ref);
    uint64_t hash;
    switch (h->type) {
    case SEG_ENTRY_OBJECT:    return object_live(t, h, ref, &hash, NULL);
    case SEG_ENTRY_TOMBSTONE: return tombstone_live(h, log_ids, nids);
    default:                  return false;
    }
}

static uint32_t entry_ts(const struct seg_entry_hdr *h)
{
    if (h->type == SEG_ENTRY_OBJECT)
        return ((const struct seg_object *)log_entry_body(h))->timestamp;
    return ((const struct seg_tombstone *)log_entry_body(h))->timestamp;
}

static int live_cmp_age(const void *a, const void *b)
{
    const struct lc_live *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->ref < y->ref ? -1 : x->ref > y->ref;
}

/* ---- worker -------------------------------------------------------------- */

/* Copy live[from..to) into the job's destinations (compaction: each into
 * its source's target; combined cleaning: filling the survivors in order,
 * *d the current one). */
static bool copy_live(lc_cleaner *c, struct lc_job *j, const struct lc_live *live, size_t from,
                      size_t to, uint32_t *d)
{
    mlog *l = c->log;
    for (size_t i = from; i < to; i++) {
        const struct seg_entry_hdr *h = log_entry_get(l, live[i].ref);
        log_ref nr;
        if (j->kind == JOB_COMPACT)
            *d = live[i].si;
        while (log_side_copy(l, j->dst[*d], h, &nr) != 0) {
            if (j->kind == JOB_COMPACT || *d + 1 >= j->ndst) {
                j->failed = ENOSPC;
                return false;
            }
            (*d)++;
        }
        j->rel[j->nrel++] = (struct lc_reloc){ .old_ref = live[i].ref, .new_ref = nr,
                                               .hash = live[i].hash, .slot = live[i].slot,
                                               .size = live[i].size,
                                               .type = live[i].type, .si = live[i].si };
        j->copied += live[i].size;
    }
    return true;
}

/* Grow the job's relocation list to hold n. */
static bool rel_reserve(struct lc_job *j, size_t n, size_t *cap)
{
    if (n <= *cap)
        return true;
    size_t nc = *cap ? *cap : 1024;
    while (nc < n)
        nc *= 2;
    struct lc_reloc *r = realloc(j->rel, nc * sizeof *r);
    if (r == NULL) {
        j->failed = ENOMEM;
        return false;
    }
    j->rel = r;
    *cap = nc;
    return true;
}

/* How far ahead of the scan a source's bytes are prefetched.  The scan
 * reads each entry's header to find the next one, a chain of dependent
 * cache misses (one per entry for 1 KB objects: most of the worker's time
 * before this); streaming the segment ahead of it overlaps them, and the
 * live entries -- nearly all of a segment at high utilization -- are then
 * copied from cache. */
#define LC_PREFETCH_AHEAD 8192
/* How many candidates after its hash bucket was prefetched an object's
 * liveness is checked: late enough for the bucket to have arrived, early
 * enough that it is still in cache (checking after the whole segment's scan
 * found most buckets evicted again by the streamed segment). */
#define LC_HT_AHEAD 16

/* Pass 2 for one candidate: keep it (at live[*w]) if it is a tombstone the
 * scan kept or an object the hash table still refers to. */
static inline void check_live(lc_cleaner *c, struct lc_job *j, struct lc_live *live, size_t i,
                              size_t *w, uint32_t s)
{
    struct lc_live *e = &live[i];
    if (e->type == SEG_ENTRY_OBJECT) {
        log_ref want = e->ref;
        if (ht_lookup(c->ht, e->hash, match_ref, &want, &e->slot) != e->ref)
            return;
    }
    if (j->kind == JOB_COMPACT)
        j->needed[s] += e->size;
    live[(*w)++] = *e;
}

/* Scan the sources, copy live entries into the destinations.  Touches only
 * closed sources (read), the hash table (atomic reads) and the job's
 * destination segments (write).  Compaction copies each source right after
 * scanning it, while its bytes are still in cache; combined cleaning copies
 * after sorting every source's live entries by age. */
static void run_job(lc_cleaner *c, struct lc_job *j)
{
    mlog *l = c->log;
    size_t cap = 0, n = 0, relcap = 0;
    struct lc_live *live = NULL;
    uint32_t d = 0;
    for (uint32_t s = 0; s < j->nsrc; s++) {
        const uint8_t *base = log_segment_base(l, j->src[s]);
        uint32_t used = j->src_used[s];
        const uint8_t *pf = base, *end = base + used;
        size_t first = n, w = n, chk = n;
        /* pass 1: candidates; objects' hash buckets are prefetched so the
         * cache misses overlap; pass 2 (check_live) follows LC_HT_AHEAD
         * candidates behind */
        for (uint32_t pos = 0; pos + sizeof(struct seg_entry_hdr) <= used;) {
            const uint8_t *want = base + pos + LC_PREFETCH_AHEAD;
            if (want > end)
                want = end;
            for (; pf < want; pf += 64)
                __builtin_prefetch(pf);
            const struct seg_entry_hdr *h = (const struct seg_entry_hdr *)(base + pos);
            uint32_t size = (uint32_t)seg_entry_size(h->length);
            log_ref ref = log_ref_make(j->src[s], pos);
            pos += size;
            uint64_t hash = 0;
            if (h->type == SEG_ENTRY_OBJECT) {
                const struct seg_object *o = (const struct seg_object *)log_entry_body(h);
                if (h->length < sizeof *o || sizeof *o + (uint64_t)o->key_len > h->length)
                    continue;
                hash = cram_key_hash(o->table_id, (const uint8_t *)o + sizeof *o, o->key_len);
                __builtin_prefetch(&c->ht->buckets[ht_bucket_index(c->ht, hash)]);
            } else if (h->type == SEG_ENTRY_TOMBSTONE) {
                if (!tombstone_live(h, j->ids, j->nids)) {
                    j->ts_dropped++;
                    continue;
                }
            } else
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 4096;
                struct lc_live *nl = realloc(live, cap * sizeof *nl);
                if (nl == NULL) {
                    j->failed = ENOMEM;
                    goto free_live;
                }
                live = nl;
            }
            live[n++] = (struct lc_live){ ref, hash, NULL, entry_ts(h), size, h->type, (uint8_t)s };
            if (n - chk > LC_HT_AHEAD)
                check_live(c, j, live, chk++, &w, s);
        }
        while (chk < n)
            check_live(c, j, live, chk++, &w, s);
        n = w;
        if (j->kind != JOB_COMPACT)
            continue;
        /* a compacted segment keeps its source's header (id, epoch) */
        const struct seg_entry_hdr *h = (const struct seg_entry_hdr *)base;
        log_ref r;
        if (h->type != SEG_ENTRY_SEGHDR || log_side_copy(l, j->dst[s], h, &r) != 0) {
            j->failed = ENOSPC;
            goto free_live;
        }
        if (!rel_reserve(j, n, &relcap) || !copy_live(c, j, live, first, n, &d))
            goto free_live;
    }
    if (j->kind == JOB_COMPACT)
        goto free_live;
    /* combined cleaning writes the oldest data first, so survivors hold
     * data of similar age (cold data ends up together) */
    if (n > 1)
        qsort(live, n, sizeof *live, live_cmp_age);
    if (!rel_reserve(j, n, &relcap))
        goto free_live;
    (void)copy_live(c, j, live, 0, n, &d);
free_live:
    free(live);
}

static void *worker_main(void *arg)
{
    lc_cleaner *c = arg;
    int r = lc_epoch_register(&c->ep);
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->stop && c->todo == NULL)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->stop)
            break;
        struct lc_job *j = c->todo;
        c->todo = NULL;
        pthread_mutex_unlock(&c->mu);
        if (r >= 0)
            lc_epoch_enter(&c->ep, r);
        uint64_t t0 = clock_mono_ns();
        run_job(c, j);
        j->ns = clock_mono_ns() - t0;
        if (r >= 0)
            lc_epoch_exit(&c->ep, r);
        while (tp_loop_post(c->loop, on_job_done, c) != 0) {
            struct timespec ts = { 0, 1000000 };    /* out of memory: try again */
            nanosleep(&ts, NULL);
        }
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* ---- dispatch side: starting passes ------------------------------------ */

static void job_free(struct lc_job *j)
{
    if (j == NULL)
        return;
    free(j->rel);
    free(j);
}

static void hand_to_worker(lc_cleaner *c, struct lc_job *j)
{
    c->job = j;
    c->st.passes++;
    pthread_mutex_lock(&c->mu);
    c->todo = j;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorted ids of every segment that stays in the log (into the job, from
 * scratch): a combined pass's own sources leave the log with it, so the
 * tombstones naming them die with the pass and are not copied. */
static int snapshot_ids(lc_cleaner *c, struct lc_job *j)
{
    mlog *l = c->log;
    size_t n = 0;
    for (uint32_t i = 0; i < log_nsegments(l); i++) {
        const struct log_segment *s = log_segment(l, i);
        if (s->state != LOG_SEG_HEAD && s->state != LOG_SEG_CLOSED)
            continue;
        bool src = false;
        for (uint32_t k = 0; j->kind == JOB_CLEAN && k < j->nsrc && !src; k++)
            src = j->src[k] == i;
        if (!src)
            c->ids_scratch[n++] = s->id;
    }
    qsort(c->ids_scratch, n, sizeof *c->ids_scratch, u64_cmp);
    j->ids = c->ids_scratch;
    j->nids = n;
    return 0;
}

/* A closed segment the cleaner may take (its replicas complete). */
static bool candidate(const lc_cleaner *c, uint32_t slot)
{
    const struct log_segment *s = log_segment(c->log, slot);
    if (s->state != LOG_SEG_CLOSED)
        return false;
    return c->rm == NULL || rm_segment_done(c->rm, slot);
}

/* Memory compaction would give back from a segment. */
static uint64_t compact_gain(const mlog *l, const struct log_segment *s)
{
    uint64_t need = (uint64_t)s->live_bytes + LC_HDR_BYTES;
    if (need > l->segment_bytes)
        return 0;
    uint32_t after = log_seglet_round(l, (uint32_t)need);
    return s->charged > after ? s->charged - after : 0;
}

static uint64_t min_gain(const mlog *l)
{
    return 2ull * l->seglet_bytes;
}

/* Memory freed per byte copied by combined cleaning of one segment: what
 * compaction would free, plus the live tombstones elsewhere that name it
 * (they die when it leaves the log; compaction of their holders then gives
 * their memory back). */
static double clean_mem_score(const mlog *l, const struct log_segment *s)
{
    return (double)(compact_gain(l, s) + s->named_bytes) / ((double)s->live_bytes + 1);
}

struct lc_cand {
    uint32_t slot;
    double score;
};

static int cand_cmp(const void *a, const void *b)
{
    const struct lc_cand *x = a, *y = b;
    return x->score > y->score ? -1 : x->score < y->score;
}

static bool start_compact(lc_cleaner *c)
{
    mlog *l = c->log;
    /* the best LC_MAX_COMPACT by memory freed per byte copied (greedy) */
    struct lc_cand best[LC_MAX_COMPACT];
    uint32_t nb = 0;
    for (uint32_t i = 0; i < log_nsegments(l); i++) {
        if (!candidate(c, i))
            continue;
        const struct log_segment *s = log_segment(l, i);
        uint64_t gain = compact_gain(l, s);
        if (gain < min_gain(l))
            continue;
        struct lc_cand x = { i, (double)gain / ((double)s->live_bytes + 1) };
        if (nb < LC_MAX_COMPACT)
            best[nb++] = x;
        else if (x.score > best[nb - 1].score)
            best[nb - 1] = x;
        else
            continue;
        for (uint32_t k = nb - 1; k > 0 && best[k].score > best[k - 1].score; k--) {
            struct lc_cand t = best[k];
            best[k] = best[k - 1];
            best[k - 1] = t;
        }
    }
    if (nb == 0)
        return false;
    struct lc_job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return false;
    for (uint32_t k = 0; k < nb; k++) {
        /* keep slots for combined cleaning (survivor + head) */
        if (l->nfree < 4)
            break;
        const struct log_segment *s = log_segment(l, best[k].slot);
        /* a second target only if it leaves writers half the low-water mark
         * of free memory (the reserve lends the first): a pass that takes
         * their last free memory has them answered RETRY until it is done */
        uint64_t need = log_seglet_round(l, s->live_bytes + LC_HDR_BYTES);
        if (j->nsrc > 0 &&
            log_free_bytes_after(l, need) < c->lowmem / 2)
            break;
        uint32_t dst = log_compact_open(l, best[k].slot, s->live_bytes + LC_HDR_BYTES);
        if (dst == LOG_NO_SLOT)
            break;
        j->src[j->nsrc] = best[k].slot;
        j->src_used[j->nsrc++] = s->w.used;
        j->dst[j->ndst++] = dst;
    }
    if (j->nsrc == 0) {
        free(j);
        return false;
    }
    j->kind = JOB_COMPACT;
    snapshot_ids(c, j);
    hand_to_worker(c, j);
    return true;
}

/* for_disk: to free backup disk space (cost-benefit, fewer segments after),
 * else memory; bfull: because a backup refused a replica as full (logged). */
static bool start_clean(lc_cleaner *c, bool for_disk, bool bfull)
{
    mlog *l = c->log;
    uint32_t S = l->segment_bytes;
    /* survivors, and the start of the head that will list them */
    uint64_t avail = log_free_bytes(l, true), hs = log_head_start_bytes(l);
    uint64_t room = avail > hs ? (avail - hs) / S : 0;
    if (room < 1)
        return false;
    uint32_t maxs = c->cfg.max_survivors;
    if (room < maxs)
        maxs = (uint32_t)room;
    uint32_t per = S - LC_HDR_BYTES - l->seglet_bytes;   /* packing slack */
    struct lc_cand *cand = malloc(log_nsegments(l) * sizeof *cand);
    if (cand == NULL)
        return false;
    uint32_t nc = 0;
    uint64_t now = clock_mono_ms();
    for (uint32_t i = 0; i < log_nsegments(l); i++) {
        if (!candidate(c, i))
            continue;
        const struct log_segment *s = log_segment(l, i);
        uint64_t age = now > s->created_ms ? now - s->created_ms : 0;
        /* for backup disk space: cost-benefit; for memory: memory freed
         * per byte copied */
        double sc = for_disk ? lc_cost_benefit(s->live_bytes, s->named_bytes, S, age)
                             : clean_mem_score(l, s);
        cand[nc++] = (struct lc_cand){ i, sc };
    }
    qsort(cand, nc, sizeof *cand, cand_cmp);
    struct lc_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        free(cand);
        return false;
    }
    uint64_t live = 0, charged = 0, named = 0, oldest = UINT64_MAX;
    for (uint32_t k = 0; k < nc && j->nsrc < LC_MAX_SRC; k++) {
        const struct log_segment *s = log_segment(l, cand[k].slot);
        if (live + s->live_bytes > (uint64_t)maxs * per)
            continue;
        live += s->live_bytes;
        charged += s->charged;
        named += s->named_bytes;
        if (s->created_ms < oldest)
            oldest = s->created_ms;
        j->src_used[j->nsrc] = s->w.used;
        j->src[j->nsrc++] = cand[k].slot;
    }
    free(cand);
    uint32_t need = (uint32_t)((live + per - 1) / per);
    if (need == 0)
        need = 1;
    /* worth it: fewer segments afterwards (disk), or memory given back --
     * counting the tombstones elsewhere that name the cleaned segments: they
     * die with them (compaction of their holders then frees them).  The
     * survivors shrink to their fill once they join the log. */
    uint64_t after = live + (uint64_t)need * (LC_HDR_BYTES + l->seglet_bytes);
    bool tombs = named >= (uint64_t)S / 4;
    if (j->nsrc == 0 || (for_disk && need >= j->nsrc && !tombs) ||
        (!for_disk && after + min_gain(l) > charged + named)) {
        free(j);
        return false;
    }
    if (need < maxs)
        need++;                          /* slack for packing; released if unused */
    for (uint32_t k = 0; k < need; k++) {
        uint32_t d = log_cleaner_open(l);
        if (d == LOG_NO_SLOT)
            break;
        log_segment_set_created(l, d, oldest);
        j->dst[j->ndst++] = d;
    }
    if (j->ndst == 0) {
        free(j);
        return false;
    }
    j->kind = JOB_CLEAN;
    snapshot_ids(c, j);
    if (bfull) {
        struct rm_stats rs = { 0 };
        if (c->rm != NULL)
            rm_get_stats(c->rm, &rs);
        c->st.passes_backup_full++;
        CRAM_INFO("log cleaner: combined pass of %u segments into at most %u survivors: "
                  "backup disk short (%llu replicas refused by full backups so far)",
                  j->nsrc, j->ndst, (unsigned long long)rs.backup_full_refusals);
    }
    hand_to_worker(c, j);
    return true;
}

static uint32_t segments_in_log(const mlog *l)
{
    return log_nsegments(l) - l->nfree;
}

/*
 * Backup disk is short: a backup refused a replica as full since the last
 * decision (lc_backup_full), or the replica manager is still in its "disk
 * short" state (rm_disk_short).  Every combined pass first adds replicas
 * (survivors, the head that lists them) and frees the cleaned segments'
 * only once those are durable (freeing them first would lose acknowledged
 * data if this master crashed).  So with backups short:
 *  - one pass at a time: none starts while an earlier one waits for its
 *    survivors (on_durable frees its replicas and kicks again); stacked
 *    passes would each add survivors before anything is freed and can fill
 *    the backups that still have room;
 *  - none when every backup is full: it could not complete and would only
 *    hold memory; the next refusal or head decides again.
 */
static bool backup_disk_short(lc_cleaner *c)
{
    bool s = c->full_note || (c->rm != NULL && rm_disk_short(c->rm));
    if (!s || c->waits != NULL)
        return false;
    c->full_note = false;
    if (c->rm == NULL || !rm_backups_full(c->rm))
        return true;
    uint64_t now = clock_mono_ms();
    if (c->last_full_warn_ms == 0 || now - c->last_full_warn_ms >= 10000) {
        c->last_full_warn_ms = now;
        CRAM_WARN("log cleaner: backup disk short, but every backup refused a replica: "
                  "combined cleaning cannot free backup space now (its survivors and new head "
                  "need replicas before the cleaned segments' replicas may be freed); waiting "
                  "for a backup with room (writes needing a new replica get RETRY meanwhile)");
    }
    return false;
}

void lc_kick(lc_cleaner *c)
{
    if (c->cfg.disabled || c->job != NULL)
        return;
    try_reclaim(c);
    mlog *l = c->log;
    uint64_t budget = l->budget;
    uint32_t nseg_budget = (uint32_t)(budget / l->segment_bytes);
    uint32_t low = log_nsegments(l) / 16 > 4 ? log_nsegments(l) / 16 : 4;
    bool disk = segments_in_log(l) > c->cfg.disk_factor * nseg_budget || l->nfree < low;
    /* a backup refused a replica as full (the real disk trigger) */
    bool bfull = backup_disk_short(c);
    disk |= bfull;
    /* memory: clean only once the free memory is down to a low-water mark,
     * so dead space builds up and the cleaner copies as little as it can.
     * The mark follows the live data: with little of it, copying is cheap
     * and free memory kept back spares writes the wait for a pass (2
     * segments, at most 1/16 of the memory); with 85% or more live, every
     * byte kept free is a byte less of dead space to reclaim (half a
     * segment: at 90% with 1 KB objects ~9 bytes copied per byte freed
     * instead of ~12 with 2 segments). */
    uint64_t lo = l->segment_bytes / 2, hi = 2ull * l->segment_bytes;
    if (hi > budget / 16)
        hi = budget / 16;
    if (lo < 4ull * l->seglet_bytes)
        lo = 4ull * l->seglet_bytes;
    if (hi < lo)
        hi = lo;
    uint64_t lowmem = lo;
    if (hi > lo && log_free_bytes(l, false) < hi) {
        uint64_t live = 0;
        for (uint32_t i = 0; i < log_nsegments(l); i++) {
            const struct log_segment *s = log_segment(l, i);
            if (s->state == LOG_SEG_HEAD || s->state == LOG_SEG_CLOSED)
                live += s->live_bytes;
        }
        double u = (double)live / (double)budget, f = (0.85 - u) / 0.10;
        f = f < 0 ? 0 : f > 1 ? 1 : f;
        lowmem = lo + (uint64_t)(f * (double)(hi - lo));
    }
    c->lowmem = lowmem;
    bool mem = c->cfg.eager ||
               ((double)l->charged >= c->cfg.threshold * (double)budget &&
                log_free_bytes(l, false) < lowmem) ||
               log_free_bytes(l, false) < lowmem / 2;
    /* not yet: be told the moment writes take the free memory below the
     * mark (waiting for the next head, or for a write refused for room,
     * left the cleaner idle while writes got RETRY) */
    log_set_low_mark(l, mem ? 0
                        : (double)l->charged >= c->cfg.threshold * (double)budget ? lowmem
                                                                                 : lowmem / 2);
    /* combined cleaning writes its survivors to R backups and holds the
     * cleaned segments' replicas until they are durable: while memory is
     * short it waits for compaction, unless slots run out */
    bool slots_short = l->nfree < low;
    if (disk && (!mem || slots_short || bfull || c->cfg.combined_only) &&
        start_clean(c, true, bfull))
        return;
    /* live tombstones are freed only by combined cleaning (the segments they
     * name must leave the log): it goes first when they hold more memory than
     * compaction could give back and it frees more per byte copied (else
     * compaction: a combined pass also writes its survivors to R backups) */
    double best_compact = 0, best_clean = 0;
    uint64_t named = 0, gains = 0;
    for (uint32_t i = 0; mem && i < log_nsegments(l); i++) {
        if (!candidate(c, i))
            continue;
        const struct log_segment *s = log_segment(l, i);
        uint64_t g = compact_gain(l, s);
        named += s->named_bytes;
        if (g >= min_gain(l)) {
            gains += g;
            if ((double)g / ((double)s->live_bytes + 1) > best_compact)
                best_compact = (double)g / ((double)s->live_bytes + 1);
        }
        if (clean_mem_score(l, s) > best_clean)
            best_clean = clean_mem_score(l, s);
    }
    if (mem && named > gains && best_clean > best_compact && start_clean(c, false, false))
        return;
    if (mem && !c->cfg.combined_only && start_compact(c))
        return;
    if (mem || disk)
        (void)start_clean(c, disk, bfull);
}

static void kick_cb(void *arg)
{
    lc_cleaner *c = arg;
    c->kick_timer = 0;
    lc_kick(c);
}

static void kick_later(lc_cleaner *c)
{
    if (c->kick_timer == 0 && !c->cfg.disabled)
        c->kick_timer = tp_timer_add(c->loop, 0, kick_cb, c);
}

void lc_backup_full(void *arg)
{
    lc_cleaner *c = arg;
    c->full_note = true;
    kick_later(c);
}

/* Log events: forwarded to the replica manager's hook; a new head may mean
 * memory ran short. */
static void on_log_event(void *arg, int ev, uint32_t slot, uint32_t old_slot)
{
    lc_cleaner *c = arg;
    if (c->prev_hook != NULL)
        c->prev_hook(c->prev_arg, ev, slot, old_slot);
    if (ev == LOG_EV_HEAD_OPENED) {
        c->rolls++;
        /* the waits it covers are armed from a timer: the hook must not
         * start replica work of its own */
        if (c->waits != NULL && c->arm_timer == 0)
            c->arm_timer = tp_timer_add(c->loop, 0, arm_cb, c);
    }
    if (ev == LOG_EV_HEAD_OPENED || ev == LOG_EV_LOW_MEMORY)
        kick_later(c);
}

/* ---- dispatch side: finishing passes ----------------------------------- */

static void retire(lc_cleaner *c, uint32_t slot)
{
    if (c->nret == c->capret) {
        size_t cap = c->capret ? c->capret * 2 : 64;
        struct lc_retired *nr = realloc(c->ret, cap * sizeof *nr);
        if (nr == NULL) {
            /* keep the segment out of use forever rather than risk a reader */
            CRAM_WARN("log cleaner: out of memory; segment slot %u stays unusable", slot);
            return;
        }
        c->ret = nr;
        c->capret = cap;
    }
    c->ret[c->nret++] = (struct lc_retired){ slot, lc_epoch_retire(&c->ep) };
}

static void reclaim_cb(void *arg)
{
    lc_cleaner *c = arg;
    c->reclaim_timer = 0;
    try_reclaim(c);
    kick_later(c);
}

static void try_reclaim(lc_cleaner *c)
{
    size_t w = 0;
    for (size_t i = 0; i < c->nret; i++) {
        if (lc_epoch_safe(&c->ep, c->ret[i].tag))
            log_segment_free(c->log, c->ret[i].slot);
        else
            c->ret[w++] = c->ret[i];
    }
    c->nret = w;
    /* a reader still inside: look again shortly (only while something waits) */
    if (c->nret > 0 && c->reclaim_timer == 0)
        c->reclaim_timer = tp_timer_add(c->loop, LC_RECLAIM_US, reclaim_cb, c);
}

/* Survivors and the head that lists them are durable: the cleaned segments'
 * replicas go. */
static void on_durable(void *arg)
{
    struct lc_wait *w = arg;
    lc_cleaner *c = w->c;
    for (struct lc_wait **p = &c->waits; *p != NULL; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    for (uint32_t i = 0; i < w->n && c->rm != NULL; i++)
        rm_free_detached(c->rm, &w->det[i]);
    free(w);
    kick_later(c);
}

/* Hand the waits a head opened since their commit covers to the replica
 * manager: once that head is durable, so are the survivors (older ids) and
 * the digest without the cleaned segments. */
static void arm_waits(lc_cleaner *c)
{
    struct lc_wait *next;
    for (struct lc_wait *w = c->waits; w != NULL; w = next) {
        next = w->next;                 /* on_durable unlinks and frees w only */
        if (w->armed || w->rolls >= c->rolls)
            continue;
        w->armed = true;
        if (rm_when_durable(c->rm, on_durable, w) != 0)
            on_durable(w);              /* out of memory */
    }
}

static void arm_cb(void *arg)
{
    lc_cleaner *c = arg;
    c->arm_timer = 0;
    arm_waits(c);
}

/* Open a head for waits no head has covered yet (one covers them all);
 * false if none was needed or none could be opened (no slot or memory: the
 * timer tries again). */
static bool roll_for_waits(lc_cleaner *c)
{
    bool need = false;
    for (const struct lc_wait *w = c->waits; w != NULL && !need; w = w->next)
        need = !w->armed && w->rolls >= c->rolls;
    if (!need)
        return false;
    if (log_cleaner_roll(c->log) != 0) {
        if (c->roll_timer == 0)
            c->roll_timer = tp_timer_add(c->loop, LC_ROLL_US, roll_cb, c);
        return false;
    }
    return true;
}

static void roll_cb(void *arg)
{
    lc_cleaner *c = arg;
    c->roll_timer = 0;
    /* every wait not yet covered is covered by this one head; later commits
     * set the timer again */
    (void)roll_for_waits(c);
}

/* The hash-table entry that still holds the relocation's old reference, or
 * NULL.  The worker's hint is checked first (entries rarely move). */
static uint64_t *reloc_slot(lc_cleaner *c, const struct lc_reloc *r)
{
    if (r->slot != NULL) {
        uint64_t e = ht_load(r->slot);
        if (e != 0 && !ht_entry_is_chain(e) && ht_entry_ref(e) == r->old_ref)
            return r->slot;
    }
    log_ref want = r->old_ref;
    uint64_t *slot = NULL;
    return ht_lookup(c->ht, r->hash, match_ref, &want, &slot) == r->old_ref ? slot : NULL;
}

static void abort_dsts(lc_cleaner *c, struct lc_job *j)
{
    for (uint32_t i = 0; i < j->ndst; i++)
        log_side_abort(c->log, j->dst[i]);
}

static void finish_compact(lc_cleaner *c, struct lc_job *j)
{
    mlog *l = c->log;
    bool ok[LC_MAX_COMPACT];
    uint64_t live[LC_MAX_COMPACT] = { 0 };
    for (uint32_t s = 0; s < j->nsrc; s++) {
        /* a replica being re-created meanwhile: that one later */
        ok[s] = c->rm == NULL || rm_segment_done(c->rm, j->src[s]);
        if (!ok[s])
            log_side_abort(l, j->dst[s]);
    }
    for (size_t i = 0; i < j->nrel; i++) {
        struct lc_reloc *r = &j->rel[i];
        if (!ok[r->si])
            continue;
        if (r->type == SEG_ENTRY_OBJECT) {
            uint64_t *slot = reloc_slot(c, r);
            if (slot == NULL || !ht_replace_if(slot, r->old_ref, r->new_ref)) {
                c->st.relocations_lost++;   /* overwritten meanwhile: a dead copy */
                continue;
            }
        }
        live[r->si] += r->size;
    }
    for (uint32_t s = 0; s < j->nsrc; s++) {
        if (!ok[s])
            continue;
        uint32_t src = j->src[s], dst = j->dst[s];
        uint32_t before = log_segment(l, src)->charged;
        log_compact_commit(l, src, dst, (uint32_t)live[s]);
        if (c->rm != NULL && rm_move_segment(c->rm, src, dst) != 0)
            CRAM_WARN("log cleaner: replica manager refused the move of segment %llu",
                      (unsigned long long)log_segment(l, dst)->id);
        c->st.bytes_freed += before - log_segment(l, dst)->charged;
        c->st.segments_compacted++;
        retire(c, src);
    }
}

/* A copy whose relocation failed (the object changed during the pass) stays
 * in a survivor under a new segment id; a tombstone next to it keeps a
 * crash recovery from bringing it back once the object's own tombstone is
 * gone. */
static void bury_copy(lc_cleaner *c, struct lc_job *j, const struct lc_reloc *r)
{
    mlog *l = c->log;
    const struct seg_entry_hdr *h = log_entry_get(l, r->new_ref);
    const struct seg_object *o = (const struct seg_object *)log_entry_body(h);
    struct seg_tombstone ts = { .table_id = o->table_id, .version = o->version,
                                .segment_id = log_segment(l, log_ref_slot(r->new_ref))->id,
                                .timestamp = o->timestamp, .key_len = o->key_len, .reserved = 0 };
    struct iovec iov[2] = { { &ts, sizeof ts }, { (void *)((const uint8_t *)o + sizeof *o), o->key_len } };
    log_ref tref;
    for (uint32_t d = j->ndst; d-- > 0;)
        if (log_side_append(l, j->dst[d], SEG_ENTRY_TOMBSTONE, iov, 2, &tref) == 0)
            goto added;
    if (j->ndst < LC_MAX_DST) {
        uint32_t d = log_cleaner_open(l);
        if (d != LOG_NO_SLOT) {
            j->dst[j->ndst++] = d;
            if (log_side_append(l, d, SEG_ENTRY_TOMBSTONE, iov, 2, &tref) == 0)
                goto added;
        }
    }
    CRAM_WARN("log cleaner: no room for the tombstone of a stale copy (table %llu)",
              (unsigned long long)o->table_id);
    return;
added:
    log_tomb_add(l, tref, ts.segment_id, (uint32_t)seg_entry_size(sizeof ts + o->key_len));
}

static void finish_clean(lc_cleaner *c, struct lc_job *j)
{
    mlog *l = c->log;
    struct lc_wait *w = calloc(1, sizeof *w);
    if (w == NULL) {
        abort_dsts(c, j);
        return;
    }
    /* which relocations still hold (nothing runs between here and the
     * replacement below: this is the dispatch thread) */
    for (size_t i = 0; i < j->nrel; i++) {
        struct lc_reloc *r = &j->rel[i];
        if (r->type != SEG_ENTRY_OBJECT)
            continue;
        r->slot = reloc_slot(c, r);
        if (r->slot == NULL) {
            c->st.relocations_lost++;
            bury_copy(c, j, r);
        }
    }
    uint64_t before = 0;
    for (uint32_t i = 0; i < j->nsrc; i++)
        before += log_segment(l, j->src[i])->charged;
    if (log_cleaner_commit(l, j->dst, j->ndst, j->src, j->nsrc, c->rm == NULL) != 0) {
        abort_dsts(c, j);
        free(w);
        return;
    }
    for (size_t i = 0; i < j->nrel; i++) {
        struct lc_reloc *r = &j->rel[i];
        if (r->type == SEG_ENTRY_OBJECT) {
            if (r->slot == NULL)
                continue;
            bool ok = ht_replace_if(r->slot, r->old_ref, r->new_ref);
            CRAM_ASSERT(ok);
            log_live_add(l, r->new_ref, r->size);
        } else {
            const struct seg_entry_hdr *h = log_entry_get(l, r->new_ref);
            const struct seg_tombstone *ts = (const struct seg_tombstone *)log_entry_body(h);
            log_tomb_move(l, r->old_ref, r->new_ref, ts->segment_id, r->size);
        }
    }
    uint64_t after = 0;
    for (uint32_t i = 0; i < j->ndst; i++) {
        const struct log_segment *s = log_segment(l, j->dst[i]);
        if (s->state == LOG_SEG_CLOSED) {
            after += s->charged;
            c->st.survivors++;
        }
    }
    c->st.bytes_freed += before > after ? before - after : 0;
    c->st.segments_cleaned += j->nsrc;
    /* The cleaned segments' memory goes now (once no reader is inside):
     * their live data is in the survivors, in memory, and the hash table
     * points there.  Their replicas stay on the backups until the survivors
     * and the new head (whose digest no longer lists them) are on R backups:
     * until then a crash recovery still needs them.  They are not re-created
     * if a backup fails meanwhile (the memory is gone), so for that short
     * while they may have fewer than R replicas, as a new write has until it
     * is durable.  Holding the memory instead stalled compaction for every
     * such wait (docs/cleaner.md). */
    w->c = c;
    w->n = j->nsrc;
    for (uint32_t i = 0; i < j->nsrc; i++) {
        if (c->rm != NULL)
            rm_detach_segment(c->rm, j->src[i], &w->det[i]);
        retire(c, j->src[i]);
    }
    w->next = c->waits;
    c->waits = w;
    w->rolls = c->rolls;
    if (c->rm == NULL) {
        on_durable(w);
        return;
    }
    /* The digest that drops the cleaned segments comes with the next head,
     * which writes open at their own pace (every ~10-50 ms at 90% memory):
     * a head of its own for every pass was ~1,200 extra segments a second
     * with 100 B objects, each opened, closed, verified and later freed on
     * two backups.  With backup disk short, the replicas go as soon as they
     * can; otherwise a head is opened for them after LC_ROLL_US at most. */
    if (rm_disk_short(c->rm) || c->full_note)
        (void)roll_for_waits(c);
    else if (c->roll_timer == 0)
        c->roll_timer = tp_timer_add(c->loop, LC_ROLL_US, roll_cb, c);
}

/* One progress line every 10 s while the cleaner works. */
static void report(lc_cleaner *c)
{
    uint64_t now = clock_mono_ms();
    if (now - c->last_report_ms < 10000)
        return;
    c->last_report_ms = now;
    struct lc_stats st;
    lc_get_stats(c, &st);
    CRAM_INFO("log cleaner: memory %.1f%% in use, %.1f%% live; %llu compacted, %llu cleaned into "
              "%llu survivors; copied/freed %.2f; %llu ms working; %llu RETRYs; %u segments",
              100.0 * (double)st.charged_bytes / (double)st.memory_bytes,
              100.0 * (double)st.live_bytes / (double)st.memory_bytes,
              (unsigned long long)st.segments_compacted, (unsigned long long)st.segments_cleaned,
              (unsigned long long)st.survivors,
              st.bytes_freed ? (double)st.bytes_copied / (double)st.bytes_freed : 0.0,
              (unsigned long long)(st.time_ns / 1000000), (unsigned long long)st.retries,
              st.segments_in_log);
}

static void on_job_done(void *arg)
{
    lc_cleaner *c = arg;
    struct lc_job *j = c->job;
    c->job = NULL;
    if (j == NULL)
        return;
    report(c);
    c->st.time_ns += j->ns;
    c->st.bytes_copied += j->copied;
    c->st.tombstones_dropped += j->ts_dropped;
    if (j->failed) {
        for (uint32_t s = 0; j->kind == JOB_COMPACT && s < j->nsrc; s++) {
            const struct log_segment *src = log_segment(c->log, j->src[s]);
            /* the live count was short: correct it, or it would be picked again */
            if (j->needed[s] > src->live_bytes)
                log_live_add(c->log, log_ref_make(j->src[s], 0),
                             (uint32_t)(j->needed[s] - src->live_bytes));
        }
        CRAM_DEBUG("log cleaner: pass failed (%s)", strerror(j->failed));
        abort_dsts(c, j);
    } else if (j->kind == JOB_COMPACT) {
        finish_compact(c, j);
    } else {
        finish_clean(c, j);
    }
    job_free(j);
    try_reclaim(c);
    kick_later(c);
}

/* ---- life cycle, queries ------------------------------------------------ */

lc_cleaner *lc_create(tp_loop *loop, mlog *l, ht *t, struct replica_mgr *rm,
                      const struct lc_config *cfg, char *err, size_t errlen)
{
    lc_cleaner *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->loop = loop;
    c->log = l;
    c->ht = t;
    c->rm = rm;
    c->cfg = cfg ? *cfg : (struct lc_config){ 0 };
    if (c->cfg.threshold <= 0 || c->cfg.threshold > 1)
        c->cfg.threshold = 0.90;
    if (c->cfg.disk_factor < 1.0)
        c->cfg.disk_factor = 1.5;
    if (c->cfg.reserve_segments == 0)
        c->cfg.reserve_segments = 1;
    if (c->cfg.max_survivors == 0 || c->cfg.max_survivors > LC_MAX_DST - 1)
        c->cfg.max_survivors = 4;
    lc_epoch_init(&c->ep);
    c->ids_scratch = calloc(log_nsegments(l), sizeof *c->ids_scratch);
    if (c->ids_scratch == NULL) {
        snprintf(err, errlen, "out of memory");
        goto free_c;
    }
    if (pthread_mutex_init(&c->mu, NULL) != 0)
        goto free_ids;
    if (pthread_cond_init(&c->cv, NULL) != 0)
        goto destroy_mu;
    if (!c->cfg.disabled) {
        int rc = pthread_create(&c->th, NULL, worker_main, c);
        if (rc != 0) {
            snprintf(err, errlen, "cleaner thread: %s", strerror(rc));
            goto destroy_cv;
        }
        c->th_started = true;
        /* a survivor or compaction target, and the start of a new head */
        log_set_reserve(l, (uint64_t)c->cfg.reserve_segments * l->segment_bytes +
                           log_head_start_bytes(l));
    }
    c->prev_hook = l->hook;
    c->prev_arg = l->hook_arg;
    log_set_hook(l, on_log_event, c);
    if (rm != NULL && !c->cfg.disabled)
        rm_set_backup_full_hook(rm, lc_backup_full, c);
    return c;

destroy_cv:
    pthread_cond_destroy(&c->cv);
destroy_mu:
    pthread_mutex_destroy(&c->mu);
free_ids:
    free(c->ids_scratch);
free_c:
    if (err[0] == '\0')
        snprintf(err, errlen, "cannot start the log cleaner");
    free(c);
    return NULL;
}

void lc_destroy(lc_cleaner *c)
{
    if (c == NULL)
        return;
    if (c->th_started) {
        pthread_mutex_lock(&c->mu);
        c->stop = true;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->th, NULL);
    }
    /* a pass handed out and not finished: its segments go back */
    if (c->job != NULL) {
        abort_dsts(c, c->job);
        job_free(c->job);
    }
    while (c->waits != NULL) {
        struct lc_wait *w = c->waits;
        c->waits = w->next;
        free(w);
    }
    if (c->kick_timer)
        tp_timer_cancel(c->loop, c->kick_timer);
    if (c->reclaim_timer)
        tp_timer_cancel(c->loop, c->reclaim_timer);
    if (c->arm_timer)
        tp_timer_cancel(c->loop, c->arm_timer);
    if (c->roll_timer)
        tp_timer_cancel(c->loop, c->roll_timer);
    if (c->log->hook == on_log_event && c->log->hook_arg == c)
        log_set_hook(c->log, c->prev_hook, c->prev_arg);
    if (c->rm != NULL)
        rm_set_backup_full_hook(c->rm, NULL, NULL);
    log_set_reserve(c->log, 0);
    log_set_low_mark(c->log, 0);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c->ret);
    free(c->ids_scratch);
    free(c);
}

/* A pass is out, or freed memory waits for readers to leave. */
static bool frees_soon(const lc_cleaner *c)
{
    return c->job != NULL || c->nret > 0;
}

bool lc_can_free(lc_cleaner *c)
{
    if (c->cfg.disabled)
        return false;
    mlog *l = c->log;
    /* what compaction can give back, plus what already waits to be freed */
    uint64_t can = log_free_bytes(l, false);
    for (uint32_t i = 0; i < log_nsegments(l); i++) {
        const struct log_segment *s = log_segment(l, i);
        if (s->state == LOG_SEG_CLEANED)
            can += s->charged;
        else if (s->state == LOG_SEG_CLOSED) {
            uint64_t g = compact_gain(l, s);
            if (g >= min_gain(l))
                can += g;
            /* tombstones that die when combined cleaning takes it out */
            can += s->named_bytes;
        }
    }
    /* a pass out or memory waiting for readers: it will give memory back */
    if (can < l->segment_bytes && !frees_soon(c))
        return false;
    lc_kick(c);
    /* the estimate is only worth a RETRY if a pass that frees memory is out
     * or can start now (else writers would retry against a cleaner that
     * stays idle) */
    if (!frees_soon(c) && !start_compact(c))
        (void)start_clean(c, false, false);
    if (!frees_soon(c))
        return false;
    c->st.retries++;
    return true;
}

bool lc_busy(const lc_cleaner *c)
{
    return c->job != NULL || c->nret > 0 || c->waits != NULL;
}

lc_epoch *lc_epochs(lc_cleaner *c) { return &c->ep; }

void lc_get_stats(const lc_cleaner *c, struct lc_stats *st)
{
    *st = c->st;
    const mlog *l = c->log;
    st->memory_bytes = l->budget;
    st->charged_bytes = l->charged;
    st->live_bytes = 0;
    for (uint32_t i = 0; i < log_nsegments(l); i++) {
        const struct log_segment *s = log_segment(l, i);
        if (s->state == LOG_SEG_HEAD || s->state == LOG_SEG_CLOSED)
            st->live_bytes += s->live_bytes;
    }
    st->segments_in_log = segments_in_log(l);
}
