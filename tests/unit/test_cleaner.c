/* test_cleaner.c -- the log cleaner: liveness rules, cost-benefit order,
 * epochs (a segment an in-flight reader points into is not reused),
 * compaction and combined cleaning keep every object readable and give
 * memory back, digests list exactly the segments in the log. */
#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/clock.h"
#include "common/keyhash.h"
#include "logcleaner/lc.h"
#include "master/objmgr.h"

#define T1 7u
#define SEGSZ (64u * 1024)

static objmgr *mk_seg(uint32_t nsegs, uint32_t segsz)
{
    char err[256];
    struct om_config c = { .memory_bytes = (uint64_t)nsegs * segsz, .segment_bytes = segsz,
                           .max_value_bytes = 16 * 1024, .master_id = 1 };
    objmgr *om = om_create(&c, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(om);
    CU_ASSERT_EQUAL(om_take_tablet(om, T1, 0, UINT64_MAX, OM_TABLET_NORMAL), CRAM_OK);
    return om;
}

static objmgr *mk(uint32_t nsegs) { return mk_seg(nsegs, SEGSZ); }

static void key_of(char *k, uint32_t i) { snprintf(k, 32, "key-%08u", i); }

static cram_status put_i(objmgr *om, uint32_t i, uint32_t gen, uint32_t vlen)
{
    char k[32];
    uint8_t v[512];
    key_of(k, i);
    memset(v, (int)(gen & 0xff), vlen);
    memcpy(v, &i, 4);
    memcpy(v + 4, &gen, 4);
    return om_write(om, T1, k, (uint16_t)strlen(k), v, vlen, NULL, NULL);
}

/* 0 if object i reads back with generation gen; else -1. */
static int check_i(objmgr *om, uint32_t i, uint32_t gen, uint32_t vlen)
{
    char k[32];
    key_of(k, i);
    const void *val;
    uint32_t len;
    if (om_read(om, T1, k, (uint16_t)strlen(k), NULL, NULL, &val, &len) != CRAM_OK || len != vlen)
        return -1;
    uint32_t a, b;
    memcpy(&a, val, 4);
    memcpy(&b, (const uint8_t *)val + 4, 4);
    if (a != i || b != gen)
        return -1;
    for (uint32_t x = 8; x < vlen; x++)
        if (((const uint8_t *)val)[x] != (uint8_t)(gen & 0xff))
            return -1;
    return 0;
}

/* How many of objects 0..count-1 do not read back at generation gen[i]
 * (gen[i] == 0: removed, so must not exist). */
static int check_all(objmgr *om, uint32_t count, const uint32_t *gen, uint32_t vlen)
{
    int bad = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (gen[i] == 0) {
            char k[32];
            key_of(k, i);
            bad += om_read(om, T1, k, (uint16_t)strlen(k), NULL, NULL, NULL, NULL) !=
                   CRAM_OBJECT_DOESNT_EXIST;
        } else
            bad += check_i(om, i, gen[i], vlen) != 0;
    }
    return bad;
}

/* Write objects from, from + step, ... below to, each at its next
 * generation (gen[i] + 1; gen[i] == 0: not written yet). */
static void put_range(objmgr *om, uint32_t from, uint32_t to, uint32_t step, uint32_t vlen,
                      uint32_t *gen)
{
    for (uint32_t i = from; i < to; i += step) {
        CU_ASSERT_EQUAL_FATAL(put_i(om, i, gen[i] + 1, vlen), CRAM_OK);
        gen[i]++;
    }
}

static bool ref_match(void *ctx, log_ref ref)
{
    (void)ctx;
    (void)ref;
    return true;
}

static log_ref ref_of(objmgr *om, uint32_t i)
{
    char k[32];
    key_of(k, i);
    uint64_t h = cram_key_hash(T1, k, (uint16_t)strlen(k));
    return ht_lookup(om_hashtable(om), h, ref_match, NULL, NULL);
}

static size_t log_ids(const mlog *l, uint64_t *ids)
{
    size_t n = 0;
    for (uint32_t i = 0; i < log_nsegments(l); i++) {
        const struct log_segment *s = log_segment(l, i);
        if (s->state == LOG_SEG_HEAD || s->state == LOG_SEG_CLOSED)
            ids[n++] = s->id;
    }
    /* sorted: slots were taken in order and ids rise, but sort anyway */
    for (size_t a = 1; a < n; a++)
        for (size_t b = a; b > 0 && ids[b - 1] > ids[b]; b--) {
            uint64_t t = ids[b];
            ids[b] = ids[b - 1];
            ids[b - 1] = t;
        }
    return n;
}

/* Find the tombstone entry of key i in the head (the last one appended). */
static log_ref last_tombstone(const mlog *l)
{
    uint32_t h = log_head_slot(l);
    const uint8_t *base = log_segment_base(l, h);
    log_ref found = LOG_REF_NULL;
    for (uint32_t pos = 0; pos < log_segment(l, h)->w.used;) {
        const struct seg_entry_hdr *e = (const struct seg_entry_hdr *)(base + pos);
        if (e->type == SEG_ENTRY_TOMBSTONE)
            found = log_ref_make(h, pos);
        pos += (uint32_t)seg_entry_size(e->length);
    }
    return found;
}

static void test_liveness(void)
{
    objmgr *om = mk(16);
    mlog *l = om_log(om);
    ht *t = om_hashtable(om);
    uint64_t ids[64];
    CU_ASSERT_EQUAL_FATAL(put_i(om, 1, 1, 100), CRAM_OK);
    log_ref r1 = ref_of(om, 1);
    size_t n = log_ids(l, ids);
    CU_ASSERT(lc_entry_live(l, t, r1, ids, n));                 /* object */
    CU_ASSERT_EQUAL_FATAL(put_i(om, 1, 2, 100), CRAM_OK);
    log_ref r2 = ref_of(om, 1);
    CU_ASSERT(r1 != r2);
    CU_ASSERT(!lc_entry_live(l, t, r1, ids, n));                /* overwritten */
    CU_ASSERT(lc_entry_live(l, t, r2, ids, n));
    /* tombstone: live while the removed object's segment is in the log */
    char k[32];
    key_of(k, 1);
    CU_ASSERT_EQUAL(om_remove(om, T1, k, (uint16_t)strlen(k), NULL, NULL), CRAM_OK);
    CU_ASSERT(!lc_entry_live(l, t, r2, ids, n));                /* removed */
    log_ref tr = last_tombstone(l);
    CU_ASSERT_FATAL(tr != LOG_REF_NULL);
    n = log_ids(l, ids);
    CU_ASSERT(lc_entry_live(l, t, tr, ids, n));
    /* the same tombstone once that segment has left the log */
    uint64_t gone = log_segment_id_of(l, r2);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] != gone)
            ids[m++] = ids[i];
    CU_ASSERT_EQUAL(m, n - 1);
    CU_ASSERT(!lc_entry_live(l, t, tr, ids, m));
    /* headers, digests and safe versions are never copied */
    CU_ASSERT(!lc_entry_live(l, t, log_ref_make(log_head_slot(l), 0), ids, n));
    om_destroy(om);
}

static void test_cost_benefit(void)
{
    /* emptier is better at equal age; older is better at equal emptiness */
    CU_ASSERT(lc_cost_benefit(100, 0, 1000, 5000) > lc_cost_benefit(500, 0, 1000, 5000));
    CU_ASSERT(lc_cost_benefit(500, 0, 1000, 5000) > lc_cost_benefit(900, 0, 1000, 5000));
    CU_ASSERT(lc_cost_benefit(500, 0, 1000, 9000) > lc_cost_benefit(500, 0, 1000, 1000));
    /* full segments are worth nothing */
    CU_ASSERT(lc_cost_benefit(1000, 0, 1000, 1u << 30) == 0.0);
    /* cold and fairly full beats young and emptier (the point of the age
     * term): u=0.8 at 100 s vs u=0.3 at 1 s */
    CU_ASSERT(lc_cost_benefit(800, 0, 1000, 100000) > lc_cost_benefit(300, 0, 1000, 1000));
    /* the formula itself */
    double u = 0.25;
    CU_ASSERT_DOUBLE_EQUAL(lc_cost_benefit(250, 0, 1000, 999), (1 - u) * 1000 / (1 + u), 1e-9);
    /* live tombstones elsewhere naming a segment die when it is cleaned: a
     * full segment many tombstones point to is worth cleaning */
    CU_ASSERT(lc_cost_benefit(900, 300, 1000, 5000) > lc_cost_benefit(900, 0, 1000, 5000));
    CU_ASSERT(lc_cost_benefit(1000, 200, 1000, 5000) > 0.0);
    CU_ASSERT_DOUBLE_EQUAL(lc_cost_benefit(250, 100, 1000, 999), (1 - u + 0.1) * 1000 / (1 + u), 1e-9);
}

/* The log's live-byte accounting against the rules, entry by entry: every
 * segment's live_bytes is exactly its objects the hash table refers to plus
 * its tombstones whose named segment is in the log, and every segment's
 * named_bytes exactly the bytes of those tombstones naming it.  Returns the
 * number of segments that disagree. */
static int check_accounting(objmgr *om)
{
    const mlog *l = om_log(om);
    ht *t = om_hashtable(om);
    uint32_t n = log_nsegments(l);
    uint64_t *ids = calloc(n, sizeof *ids), *named = calloc(n, sizeof *named);
    CU_ASSERT_FATAL(ids != NULL && named != NULL);
    size_t ni = log_ids(l, ids);
    int bad = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct log_segment *s = log_segment(l, i);
        if (s->state != LOG_SEG_HEAD && s->state != LOG_SEG_CLOSED)
            continue;
        uint64_t live = 0;
        const uint8_t *base = log_segment_base(l, i);
        for (uint32_t pos = 0; pos < s->w.used;) {
            const struct seg_entry_hdr *h = (const struct seg_entry_hdr *)(base + pos);
            log_ref ref = log_ref_make(i, pos);
            uint32_t sz = (uint32_t)seg_entry_size(h->length);
            if (lc_entry_live(l, t, ref, ids, ni)) {
                live += sz;
                if (h->type == SEG_ENTRY_TOMBSTONE) {
                    uint64_t tid = ((const struct seg_tombstone *)log_entry_body(h))->segment_id;
                    uint32_t ts = log_slot_of_id(l, tid);
                    if (ts == LOG_NO_SLOT)
                        bad++;
                    else
                        named[ts] += sz;
                }
            }
            pos += sz;
        }
        if (live != s->live_bytes) {
            if (bad++ < 3)
                printf("\n  segment %llu (slot %u): live_bytes %u, by the rules %llu",
                       (unsigned long long)s->id, i, s->live_bytes, (unsigned long long)live);
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        const struct log_segment *s = log_segment(l, i);
        if ((s->state == LOG_SEG_HEAD || s->state == LOG_SEG_CLOSED) && s->named_bytes != named[i]) {
            if (bad++ < 6)
                printf("\n  segment %llu (slot %u): named_bytes %llu, by the rules %llu",
                       (unsigned long long)s->id, i, (unsigned long long)s->named_bytes,
                       (unsigned long long)named[i]);
        }
    }
    free(ids);
    free(named);
    return bad;
}

static void test_epoch_rule(void)
{
    lc_epoch e;
    lc_epoch_init(&e);
    int r = lc_epoch_register(&e);
    CU_ASSERT_FATAL(r >= 0);
    uint64_t t0 = lc_epoch_retire(&e);
    CU_ASSERT(lc_epoch_safe(&e, t0));            /* nobody inside */
    lc_epoch_enter(&e, r);
    uint64_t t1 = lc_epoch_retire(&e);
    CU_ASSERT(!lc_epoch_safe(&e, t1));           /* a reader from before */
    lc_epoch_exit(&e, r);
    CU_ASSERT(lc_epoch_safe(&e, t1));
    lc_epoch_enter(&e, r);                       /* entered after the retire */
    CU_ASSERT(lc_epoch_safe(&e, t1));
    uint64_t t2 = lc_epoch_retire(&e);
    CU_ASSERT(!lc_epoch_safe(&e, t2));
    lc_epoch_exit(&e, r);
}

/* Run the loop until the cleaner has nothing left to do. */
static void settle(tp_loop *loop, lc_cleaner *c)
{
    uint64_t end = clock_mono_ms() + 20000;
    int idle = 0;
    while (idle < 5 && clock_mono_ms() < end) {
        tp_loop_poll(loop, 5);
        idle = lc_busy(c) ? 0 : idle + 1;
    }
    CU_ASSERT(!lc_busy(c));
}

/* A cleaner of om's log on loop (cfg NULL: defaults), without replicas. */
static lc_cleaner *mk_cleaner(tp_loop *loop, objmgr *om, const struct lc_config *cfg)
{
    char err[256];
    lc_cleaner *c = lc_create(loop, om_log(om), om_hashtable(om), NULL, cfg, err, sizeof err);
    if (c == NULL)
        printf("\n  lc_create: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    return c;
}

/* Fill `count` objects, then overwrite every other one a few times: segments
 * full of dead space. */
static void make_garbage(objmgr *om, uint32_t count, uint32_t vlen, uint32_t rounds, uint32_t *gen)
{
    memset(gen, 0, count * sizeof *gen);
    put_range(om, 0, count, 1, vlen, gen);
    for (uint32_t r = 0; r < rounds; r++)
        put_range(om, 0, count, 2, vlen, gen);
}

static void test_compaction(void)
{
    objmgr *om = mk(64);
    mlog *l = om_log(om);
    tp_loop *loop = tp_loop_create();
    CU_ASSERT_PTR_NOT_NULL_FATAL(loop);
    uint32_t count = 4000, vlen = 200, gen[4000];
    make_garbage(om, count, vlen, 2, gen);
    struct log_stats before;
    log_get_stats(l, &before);
    struct lc_config cfg = { .eager = true };      /* clean whatever can be */
    lc_cleaner *c = mk_cleaner(loop, om, &cfg);
    lc_kick(c);
    settle(loop, c);
    struct lc_stats st;
    lc_get_stats(c, &st);
    struct log_stats after;
    log_get_stats(l, &after);
    printf("\n  compaction: %llu segments, %llu bytes copied, %llu freed; budget in use %llu -> %llu\n",
           (unsigned long long)st.segments_compacted, (unsigned long long)st.bytes_copied,
           (unsigned long long)st.bytes_freed, (unsigned long long)before.charged_bytes,
           (unsigned long long)after.charged_bytes);
    CU_ASSERT(st.segments_compacted > 0);
    CU_ASSERT(after.charged_bytes < before.charged_bytes);
    CU_ASSERT(after.charged_bytes <= after.memory_bytes);
    /* roughly half of what the objects took was dead: most of it came back */
    CU_ASSERT(after.charged_bytes < before.charged_bytes * 3 / 4);
    CU_ASSERT_EQUAL(check_all(om, count, gen, vlen), 0);
    /* compacted segments keep their ids: the digest of a new head still
     * names every id once, and every closed segment verifies */
    CU_ASSERT_EQUAL(log_roll(l), 0);
    for (uint32_t i = 0; i < log_nsegments(l); i++) {
        const struct log_segment *s = log_segment(l, i);
        CU_ASSERT(s->state != LOG_SEG_CLEANED && s->state != LOG_SEG_SIDE);
        if (s->state == LOG_SEG_CLOSED) {
            struct seg_certificate cert = log_segment_certificate(l, i);
            CU_ASSERT(seg_verify(log_segment_base(l, i), cert.length, &cert));
        }
    }
    /* writes keep working on top */
    put_range(om, 0, count, 1, vlen, gen);
    CU_ASSERT_EQUAL(check_all(om, count, gen, vlen), 0);
    lc_destroy(c);
    tp_loop_destroy(loop);
    om_destroy(om);
}

/* The digest of the current head: ids into out, returns the count. */
static uint32_t head_digest(const mlog *l, uint64_t *out)
{
    uint32_t h = log_head_slot(l);
    struct seg_iter it;
    struct seg_entry e;
    seg_iter_init(&it, log_segment_base(l, h), log_segment(l, h)->w.used);
    while (seg_iter_next(&it, &e) == SEG_ITER_OK)
        if (e.type == SEG_ENTRY_LOG_DIGEST) {
            struct seg_log_digest dg;
            memcpy(&dg, e.body, sizeof dg);
            memcpy(out, e.body + sizeof dg, 8ull * dg.count);
            return dg.count;
        }
    return 0;
}

static void test_combined(void)
{
    objmgr *om = mk(64);
    mlog *l = om_log(om);
    tp_loop *loop = tp_loop_create();
    uint32_t count = 4000, vlen = 200, gen[4000];
    make_garbage(om, count, vlen, 2, gen);
    /* a few removed keys: their tombstones must keep them removed */
    char k[32];
    for (uint32_t i = 1; i < 100; i += 7) {
        key_of(k, i);
        CU_ASSERT_EQUAL(om_remove(om, T1, k, (uint16_t)strlen(k), NULL, NULL), CRAM_OK);
        gen[i] = 0;
    }
    CU_ASSERT_EQUAL(log_roll(l), 0);
    struct log_stats before;
    log_get_stats(l, &before);
    struct lc_config cfg = { .eager = true, .combined_only = true };
    lc_cleaner *c = mk_cleaner(loop, om, &cfg);
    lc_kick(c);
    settle(loop, c);
    struct lc_stats st;
    lc_get_stats(c, &st);
    struct log_stats after;
    log_get_stats(l, &after);
    printf("\n  combined: %llu segments cleaned into %llu survivors, %llu bytes copied, "
           "segments %u -> %u\n", (unsigned long long)st.segments_cleaned,
           (unsigned long long)st.survivors, (unsigned long long)st.bytes_copied,
           before.segments_in_use, after.segments_in_use);
    CU_ASSERT(st.segments_cleaned > st.survivors);
    CU_ASSERT(st.survivors > 0);
    CU_ASSERT(after.segments_in_use < before.segments_in_use);
    CU_ASSERT(after.charged_bytes < before.charged_bytes);
    CU_ASSERT_EQUAL(check_all(om, count, gen, vlen), 0);
    /* the head's digest lists exactly the segments in the log */
    uint64_t dig[256], ids[256];
    uint32_t nd = head_digest(l, dig);
    size_t ni = log_ids(l, ids);
    CU_ASSERT_EQUAL(nd, ni);
    for (uint32_t i = 0; i < nd; i++) {
        bool found = false;
        for (size_t j = 0; j < ni; j++)
            found |= dig[i] == ids[j];
        CU_ASSERT(found);
    }
    lc_destroy(c);
    tp_loop_destroy(loop);
    om_destroy(om);
}

/* A backup refusing a replica as full (the replica manager calls
 * lc_backup_full) starts a combined pass although neither memory nor the
 * disk_factor estimate asks for one; it is counted, keeps every object
 * readable, and leaves fewer segments. */
static void test_backup_full_trigger(void)
{
    objmgr *om = mk(64);
    mlog *l = om_log(om);
    tp_loop *loop = tp_loop_create();
    CU_ASSERT_PTR_NOT_NULL_FATAL(loop);
    uint32_t count = 4000, vlen = 200, gen[4000];
    make_garbage(om, count, vlen, 2, gen);
    CU_ASSERT_EQUAL(log_roll(l), 0);
    struct log_stats before;
    log_get_stats(l, &before);
    CU_ASSERT(before.charged_bytes < before.memory_bytes * 3 / 4);   /* memory is not short */
    struct lc_config cfg = { .disk_factor = 100 };     /* the estimate never fires */
    lc_cleaner *c = mk_cleaner(loop, om, &cfg);
    lc_kick(c);
    settle(loop, c);
    struct lc_stats st;
    lc_get_stats(c, &st);
    CU_ASSERT_EQUAL(st.passes, 0);                  /* nothing due without the notice */
    lc_backup_full(c);                              /* as the replica manager calls it */
    CU_ASSERT_EQUAL(st.passes, 0);                  /* decided later, from the loop */
    settle(loop, c);
    lc_get_stats(c, &st);
    struct log_stats after;
    log_get_stats(l, &after);
    printf("\n  backup full: %llu passes (%llu for backup disk), %llu segments cleaned into %llu "
           "survivors, no compaction (%llu); segments in use %u -> %u\n",
           (unsigned long long)st.passes, (unsigned long long)st.passes_backup_full,
           (unsigned long long)st.segments_cleaned, (unsigned long long)st.survivors,
           (unsigned long long)st.segments_compacted, before.segments_in_use,
           after.segments_in_use);
    CU_ASSERT_EQUAL(st.passes_backup_full, 1);      /* one notice, one pass */
    CU_ASSERT_EQUAL(st.segments_compacted, 0);
    CU_ASSERT(st.segments_cleaned > st.survivors);
    CU_ASSERT(after.segments_in_use < before.segments_in_use);
    CU_ASSERT_EQUAL(check_all(om, count, gen, vlen), 0);
    /* the notice is used up: no further pass without another one */
    uint64_t passes = st.passes;
    lc_kick(c);
    settle(loop, c);
    lc_get_stats(c, &st);
    CU_ASSERT_EQUAL(st.passes, passes);
    lc_destroy(c);
    tp_loop_destroy(loop);
    om_destroy(om);
}

/* A reader thread holds a pointer into a segment the cleaner compacts: the
 * old memory stays intact (not freed, not reused) until it leaves. */
struct reader {
    lc_epoch *ep;
    const uint8_t *ptr;          /* value inside the segment */
    uint8_t copy[200];
    int go, done, inside, leave;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    int slot = lc_epoch_register(r->ep);
    pthread_mutex_lock(&r->mu);
    lc_epoch_enter(r->ep, slot);
    r->inside = 1;
    pthread_cond_broadcast(&r->cv);
    while (!r->leave)
        pthread_cond_wait(&r->cv, &r->mu);
    /* the bytes it points at are still what it first saw */
    r->done = memcmp(r->ptr, r->copy, sizeof r->copy) == 0 ? 1 : -1;
    lc_epoch_exit(r->ep, slot);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static void test_inflight_reader(void)
{
    objmgr *om = mk(32);
    mlog *l = om_log(om);
    tp_loop *loop = tp_loop_create();
    uint32_t count = 1500, vlen = 200, gen[1500];
    make_garbage(om, count, vlen, 1, gen);
    CU_ASSERT_EQUAL(log_roll(l), 0);
    /* object 1 (never overwritten) lives in the first segment */
    log_ref r1 = ref_of(om, 1);
    uint32_t slot = log_ref_slot(r1);
    struct lc_config cfg = { .eager = true };
    lc_cleaner *c = mk_cleaner(loop, om, &cfg);
    struct reader rd = { .ep = lc_epochs(c) };
    pthread_mutex_init(&rd.mu, NULL);
    pthread_cond_init(&rd.cv, NULL);
    const struct seg_entry_hdr *h = log_entry_get(l, r1);
    rd.ptr = log_entry_body(h) + sizeof(struct seg_object) + 12;
    memcpy(rd.copy, rd.ptr, sizeof rd.copy);
    pthread_t th;
    pthread_create(&th, NULL, reader_main, &rd);
    pthread_mutex_lock(&rd.mu);
    while (!rd.inside)
        pthread_cond_wait(&rd.cv, &rd.mu);
    pthread_mutex_unlock(&rd.mu);
    /* clean while the reader is inside */
    lc_kick(c);
    uint64_t end = clock_mono_ms() + 10000;
    while (log_segment(l, slot)->state == LOG_SEG_CLOSED && clock_mono_ms() < end)
        tp_loop_poll(loop, 5);
    for (int i = 0; i < 50; i++)
        tp_loop_poll(loop, 2);
    /* the object moved, its old segment left the log but is not free */
    CU_ASSERT(ref_of(om, 1) != r1);
    CU_ASSERT_EQUAL(check_i(om, 1, gen[1], vlen), 0);
    CU_ASSERT_EQUAL(log_segment(l, slot)->state, LOG_SEG_CLEANED);
    CU_ASSERT(lc_busy(c));
    pthread_mutex_lock(&rd.mu);
    rd.leave = 1;
    pthread_cond_broadcast(&rd.cv);
    pthread_mutex_unlock(&rd.mu);
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(rd.done, 1);
    settle(loop, c);
    CU_ASSERT(log_segment(l, slot)->state != LOG_SEG_CLEANED);
    pthread_mutex_destroy(&rd.mu);
    pthread_cond_destroy(&rd.cv);
    lc_destroy(c);
    tp_loop_destroy(loop);
    om_destroy(om);
}

/* Random overwrites at ~90% live data with the cleaner running: no write
 * fails for lack of room while cleaning can free space, the budget is never
 * exceeded, every object reads back; a store truly full of live data says
 * CRAM_NO_TABLE_SPACE. */
static void test_overwrite_90(void)
{
    const uint32_t segsz = 256 * 1024;
    objmgr *om = mk_seg(64, segsz);        /* 16 MiB of 256 KiB segments */
    mlog *l = om_log(om);
    tp_loop *loop = tp_loop_create();
    lc_cleaner *c = mk_cleaner(loop, om, NULL);
    const uint32_t vlen = 100;
    uint32_t entry = (uint32_t)seg_entry_size(sizeof(struct seg_object) + 12 + vlen);
    uint32_t count = (uint32_t)(0.90 * 64 * segsz / entry);
    uint32_t *gen = calloc(count, sizeof *gen);
    uint64_t seed = 88172645463325252ull;
    uint64_t writes = 0, retries = 0, total = 10ull * 64 * segsz / entry;
    for (uint32_t i = 0; i < count; i++) {
        cram_status st;
        while ((st = put_i(om, i, 1, vlen)) != CRAM_OK) {
            CU_ASSERT_FATAL(st == CRAM_NO_TABLE_SPACE && lc_can_free(c));
            retries++;
            tp_loop_poll(loop, 1);
        }
        gen[i] = 1;
        tp_loop_poll(loop, 0);
    }
    uint64_t maxcharged = 0;
    while (writes < total) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        uint32_t i = (uint32_t)(seed % count);
        cram_status st = put_i(om, i, gen[i] + 1, vlen);
        if (st == CRAM_OK) {
            gen[i]++;
            writes++;
        } else {
            CU_ASSERT_FATAL(st == CRAM_NO_TABLE_SPACE);
            CU_ASSERT_FATAL(lc_can_free(c));     /* else: RETRY would never end */
            retries++;
            tp_loop_poll(loop, 1);
        }
        if ((writes & 63) == 0)
            tp_loop_poll(loop, 0);
        if (l->charged > maxcharged)
            maxcharged = l->charged;
    }
    struct lc_stats st;
    lc_get_stats(c, &st);
    printf("\n  90%%: %llu writes, %llu retries, %llu compacted, %llu cleaned, "
           "copied/freed %.2f, max in use %llu of %llu\n", (unsigned long long)writes,
           (unsigned long long)retries, (unsigned long long)st.segments_compacted,
           (unsigned long long)st.segments_cleaned,
           st.bytes_freed ? (double)st.bytes_copied / (double)st.bytes_freed : 0.0,
           (unsigned long long)maxcharged, (unsigned long long)st.memory_bytes);
    CU_ASSERT(maxcharged <= st.memory_bytes);
    CU_ASSERT_EQUAL(check_all(om, count, gen, vlen), 0);
    /* the live bytes the cleaner chose by are exact: tombstones that died
     * with the segments they name are no longer counted anywhere */
    settle(loop, c);
    CU_ASSERT_EQUAL(check_accounting(om), 0);
    struct log_stats ls;
    log_get_stats(l, &ls);
    printf("  live tombstones %llu bytes (%.1f%% of the memory), %llu bytes died\n",
           (unsigned long long)ls.tomb_bytes, 100.0 * (double)ls.tomb_bytes / (double)ls.memory_bytes,
           (unsigned long long)ls.tomb_dead_bytes);
    CU_ASSERT(ls.tomb_dead_bytes > 0);
    /* new keys until live data fills the memory: then NO_TABLE_SPACE, and
     * lc_can_free says so (no endless RETRY) */
    settle(loop, c);
    uint32_t extra = 0;
    for (;; extra++) {
        cram_status s2 = put_i(om, count + extra, 1, vlen);
        if (s2 == CRAM_OK)
            continue;
        CU_ASSERT_FATAL(s2 == CRAM_NO_TABLE_SPACE);
        if (!lc_can_free(c))
            break;
        settle(loop, c);
        CU_ASSERT_FATAL(extra < count);
    }
    lc_get_stats(c, &st);
    printf("  full at %u more objects: live %llu of %llu bytes\n", extra,
           (unsigned long long)st.live_bytes, (unsigned long long)st.memory_bytes);
    CU_ASSERT(st.live_bytes > st.memory_bytes * 85 / 100);
    free(gen);
    lc_destroy(c);
    tp_loop_destroy(loop);
    om_destroy(om);
}

/* ---- the resurrection hole --------------------------------------------- */

static bool in_log(const struct log_segment *s)
{
    return s->state == LOG_SEG_HEAD || s->state == LOG_SEG_CLOSED;
}

static uint32_t slot_by_id(const mlog *l, uint64_t id)
{
    for (uint32_t i = 0; i < log_nsegments(l); i++)
        if (in_log(log_segment(l, i)) && log_segment(l, i)->id == id)
            return i;
    return LOG_NO_SLOT;
}

/* Entries of key "K" in the log: objects of version ov (if ov) plus
 * tombstones of version tv (if tv) naming segment tseg (if tseg). */
static int count_k(const mlog *l, uint64_t ov, uint64_t tv, uint64_t tseg)
{
    int n = 0;
    for (uint32_t i = 0; i < log_nsegments(l); i++) {
        const struct log_segment *s = log_segment(l, i);
        if (!in_log(s))
            continue;
        struct seg_iter it;
        struct seg_entry e;
        seg_iter_init(&it, log_segment_base(l, i), s->w.used);
        while (seg_iter_next(&it, &e) == SEG_ITER_OK) {
            const uint8_t *key;
            if (e.type == SEG_ENTRY_OBJECT && ov != 0) {
                const struct seg_object *o;
                const uint8_t *v;
                uint32_t vl;
                if (seg_parse_object(&e, &o, &key, &v, &vl) && o->key_len == 1 && key[0] == 'K' &&
                    o->version == ov)
                    n++;
            } else if (e.type == SEG_ENTRY_TOMBSTONE && tv != 0) {
                const struct seg_tombstone *t;
                if (seg_parse_tombstone(&e, &t, &key) && t->key_len == 1 && key[0] == 'K' &&
                    t->version == tv && (tseg == 0 || t->segment_id == tseg))
                    n++;
            }
        }
    }
    return n;
}

/*
 * The hole the overwrite tombstones close: K v1 goes into segment A (among
 * objects never overwritten, so A stays in the log), K is overwritten (v2 in
 * segment B) and removed (tombstone naming B, in segment C).  The cleaner
 * then cleans B and C -- the remove's tombstone dies with B -- while A and
 * its dead v1 stay.  A crash recovery replays every segment of the log (its
 * replicas: no compaction here, so memory holds what backups hold), in both
 * orders: K must stay removed, because the overwrite left a tombstone for v1
 * naming A, copied into a survivor as long as A is in the log.  (Without it,
 * replay brings v1 back.)
 */
static void test_no_resurrection(void)
{
    enum { NFIX = 300, NGARB = 900, VL = 200 };
    objmgr *om = mk(64);
    mlog *l = om_log(om);
    tp_loop *loop = tp_loop_create();
    CU_ASSERT_PTR_NOT_NULL_FATAL(loop);
    uint8_t v[VL];
    uint32_t gen[NFIX + NGARB] = { 0 };
    uint64_t v1 = 0, v2 = 0;
    memset(v, 'k', sizeof v);
    /* segment A: K v1 amid objects that are never overwritten */
    put_range(om, 0, NFIX / 2, 1, VL, gen);
    CU_ASSERT_EQUAL_FATAL(om_write(om, T1, "K", 1, v, VL, NULL, &v1), CRAM_OK);
    put_range(om, NFIX / 2, NFIX, 1, VL, gen);
    uint64_t a_id = log_segment_id_of(l, ref_of(om, NFIX / 2));
    CU_ASSERT_EQUAL(log_roll(l), 0);
    /* segment B: K v2 among garbage-to-be */
    CU_ASSERT_EQUAL_FATAL(om_write(om, T1, "K", 1, v, VL, NULL, &v2), CRAM_OK);
    uint64_t b_id = log_segment(l, log_head_slot(l))->id;
    CU_ASSERT(b_id != a_id);
    put_range(om, NFIX, NFIX + NGARB / 4, 1, VL, gen);
    /* the overwrite wrote a tombstone for v1 naming A */
    CU_ASSERT_EQUAL(count_k(l, 0, v1, a_id), 1);
    CU_ASSERT_EQUAL(log_roll(l), 0);
    /* segment C: the remove (its tombstone names B) among more garbage */
    CU_ASSERT_EQUAL(om_remove(om, T1, "K", 1, NULL, NULL), CRAM_OK);
    uint64_t c_id = log_segment(l, log_head_slot(l))->id;
    put_range(om, NFIX + NGARB / 4, NFIX + NGARB, 1, VL, gen);
    CU_ASSERT_EQUAL_FATAL(count_k(l, 0, v2, b_id), 1);
    CU_ASSERT_EQUAL(check_accounting(om), 0);
    /* overwrite the garbage round after round, cleaning in between, until B
     * and C have left the log and the remove's tombstone with them; one
     * survivor per pass, so A (nearly all live) is never worth cleaning */
    struct lc_config cfg = { .eager = true, .combined_only = true, .max_survivors = 1 };
    lc_cleaner *c = mk_cleaner(loop, om, &cfg);
    int round;
    for (round = 0; round < 40; round++) {
        if (slot_by_id(l, b_id) == LOG_NO_SLOT && slot_by_id(l, c_id) == LOG_NO_SLOT &&
            count_k(l, 0, v2, 0) == 0)
            break;
        put_range(om, NFIX, NFIX + NGARB, 1, VL, gen);
        CU_ASSERT_EQUAL(log_roll(l), 0);
        lc_kick(c);
        settle(loop, c);
        CU_ASSERT_EQUAL(check_accounting(om), 0);
    }
    struct lc_stats st;
    lc_get_stats(c, &st);
    printf("\n  %d rounds: %llu segments cleaned, %llu tombstones dropped\n", round,
           (unsigned long long)st.segments_cleaned, (unsigned long long)st.tombstones_dropped);
    /* the scenario holds: B, C and the remove's tombstone are gone; A with
     * the dead v1 is not, nor the tombstone naming it */
    CU_ASSERT_EQUAL_FATAL(slot_by_id(l, b_id), LOG_NO_SLOT);
    CU_ASSERT_EQUAL_FATAL(slot_by_id(l, c_id), LOG_NO_SLOT);
    CU_ASSERT_EQUAL_FATAL(count_k(l, 0, v2, 0), 0);
    CU_ASSERT_FATAL(slot_by_id(l, a_id) != LOG_NO_SLOT);
    CU_ASSERT_EQUAL_FATAL(count_k(l, v1, 0, 0), 1);
    CU_ASSERT_EQUAL(count_k(l, 0, v1, a_id), 1);
    CU_ASSERT_EQUAL(om_read(om, T1, "K", 1, NULL, NULL, NULL, NULL), CRAM_OBJECT_DOESNT_EXIST);
    lc_destroy(c);
    tp_loop_destroy(loop);

    /* crash: a recovery master replays every segment of the log, newest
     * first and oldest first */
    for (int dir = 0; dir < 2; dir++) {
        objmgr *rm = mk(128);
        CU_ASSERT_EQUAL(om_take_tablet(rm, T1, 0, UINT64_MAX, OM_TABLET_RECOVERING), CRAM_OK);
        struct om_replay rp = { 0 };
        uint32_t n = log_nsegments(l);
        for (uint32_t x = 0; x < n; x++) {
            uint32_t i = dir == 0 ? n - 1 - x : x;
            const struct log_segment *s = log_segment(l, i);
            if (!in_log(s))
                continue;
            struct seg_iter it;
            struct seg_entry e;
            seg_iter_init(&it, log_segment_base(l, i), s->w.used);
            int rc;
            while ((rc = seg_iter_next(&it, &e)) == SEG_ITER_OK)
                CU_ASSERT_EQUAL_FATAL(om_replay_entry(rm, &rp, &e), CRAM_OK);
            CU_ASSERT_EQUAL(rc, SEG_ITER_END);
        }
        struct om_tablet whole = { .table_id = T1, .start_hash = 0, .end_hash = UINT64_MAX };
        om_replay_end(rm, &rp, &whole, 1);
        CU_ASSERT_EQUAL(om_replay_commit(rm, &rp), 0);
        om_replay_free(&rp);
        CU_ASSERT_EQUAL(om_take_tablet(rm, T1, 0, UINT64_MAX, OM_TABLET_NORMAL), CRAM_OK);
        /* the removed key stays removed; everything else is as written */
        CU_ASSERT_EQUAL(om_read(rm, T1, "K", 1, NULL, NULL, NULL, NULL), CRAM_OBJECT_DOESNT_EXIST);
        CU_ASSERT_EQUAL(check_all(rm, NFIX + NGARB, gen, VL), 0);
        om_destroy(rm);
    }
    om_destroy(om);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("cleaner", NULL, NULL);
    CU_add_test(s, "liveness rules", test_liveness);
    CU_add_test(s, "cost-benefit order", test_cost_benefit);
    CU_add_test(s, "epoch rule", test_epoch_rule);
    CU_add_test(s, "compaction frees memory, objects readable", test_compaction);
    CU_add_test(s, "combined cleaning: survivors, digest, tombstones", test_combined);
    CU_add_test(s, "backup full starts a combined pass", test_backup_full_trigger);
    CU_add_test(s, "in-flight reader holds a cleaned segment", test_inflight_reader);
    CU_add_test(s, "random overwrites at 90%", test_overwrite_90);
    CU_add_test(s, "overwrite, remove, clean, recover: the key stays removed", test_no_resurrection);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
