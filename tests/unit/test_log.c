/* test_log.c -- segments and the log: append, verifying iteration, corruption
 * detection, head rolling with digests, full log, certificates, side segments. */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "master/log.h"
#include "common/segment.h"

#define SEGSZ (64u * 1024)

static mlog *mk(uint32_t nsegs)
{
    char err[256];
    struct log_config c = { .memory_bytes = (uint64_t)nsegs * SEGSZ, .segment_bytes = SEGSZ,
                            .hugepages = 1, .master_id = 77 };
    mlog *l = log_create(&c, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    return l;
}

static int append_blob(mlog *l, uint32_t i, uint32_t len, log_ref *ref)
{
    static uint8_t buf[8192];
    memset(buf, (int)(i & 0xff), len);
    memcpy(buf, &i, sizeof i);
    struct iovec iov[2] = { { buf, len / 2 }, { buf + len / 2, len - len / 2 } };
    return log_append(l, SEG_ENTRY_OBJECT, iov, 2, ref);
}

static void test_config_checks(void)
{
    char err[256];
    struct log_config c = { .memory_bytes = 1 << 20, .segment_bytes = 100000 };
    CU_ASSERT_PTR_NULL(log_create(&c, err, sizeof err));
    c.segment_bytes = 32 * 1024;
    CU_ASSERT_PTR_NULL(log_create(&c, err, sizeof err));
    c.segment_bytes = SEGSZ;
    c.memory_bytes = SEGSZ;     /* one segment: too few */
    CU_ASSERT_PTR_NULL(log_create(&c, err, sizeof err));
    c.memory_bytes = (uint64_t)SEGSZ * 4096;   /* digest would not fit a quarter segment */
    CU_ASSERT_PTR_NULL(log_create(&c, err, sizeof err));
}

static void test_append_iterate(void)
{
    mlog *l = mk(4);
    log_ref refs[100];
    for (uint32_t i = 0; i < 100; i++)
        CU_ASSERT_EQUAL_FATAL(append_blob(l, i, 100 + i, &refs[i]), 0);
    /* every ref reads back through the one accessor */
    for (uint32_t i = 0; i < 100; i++) {
        const struct seg_entry_hdr *h = log_entry_get(l, refs[i]);
        CU_ASSERT_EQUAL(h->type, SEG_ENTRY_OBJECT);
        CU_ASSERT_EQUAL(h->length, 100 + i);
        uint32_t v;
        memcpy(&v, log_entry_body(h), sizeof v);
        CU_ASSERT_EQUAL(v, i);
        CU_ASSERT(seg_entry_check(h));
    }
    /* iterate the head: SEGHDR, DIGEST, SAFE_VERSION, then 100 objects */
    uint32_t slot = log_head_slot(l);
    const struct log_segment *s = log_segment(l, slot);
    struct seg_iter it;
    struct seg_entry e;
    seg_iter_init(&it, log_segment_base(l, slot), s->w.used);
    int types[4] = { 0 };
    uint32_t n = 0;
    while (seg_iter_next(&it, &e) == SEG_ITER_OK) {
        if (n < 3)
            types[n] = e.type;
        if (n == 0) {
            struct seg_header_body hb;
            memcpy(&hb, e.body, sizeof hb);
            CU_ASSERT_EQUAL(hb.magic, SEG_MAGIC);
            CU_ASSERT_EQUAL(hb.master_id, 77);
            CU_ASSERT_EQUAL(hb.segment_id, s->id);
            CU_ASSERT_EQUAL(hb.capacity, SEGSZ);
        }
        n++;
    }
    CU_ASSERT_EQUAL(it.status, SEG_ITER_END);
    CU_ASSERT_EQUAL(n, 103);
    CU_ASSERT_EQUAL(types[0], SEG_ENTRY_SEGHDR);
    CU_ASSERT_EQUAL(types[1], SEG_ENTRY_LOG_DIGEST);
    CU_ASSERT_EQUAL(types[2], SEG_ENTRY_SAFE_VERSION);
    log_destroy(l);
}

static void test_corruption_detected(void)
{
    mlog *l = mk(2);
    log_ref r;
    for (uint32_t i = 0; i < 10; i++)
        CU_ASSERT_EQUAL_FATAL(append_blob(l, i, 300, &r), 0);
    uint32_t slot = log_head_slot(l);
    uint32_t used = log_segment(l, slot)->w.used;
    struct seg_certificate cert = log_segment_certificate(l, slot);
    uint8_t *copy = malloc(used);
    memcpy(copy, log_segment_base(l, slot), used);
    CU_ASSERT(seg_verify(copy, used, &cert));
    /* flip every 37th byte, one at a time: iteration and verification catch each */
    for (uint32_t pos = 0; pos < used; pos += 37) {
        copy[pos] ^= 0x40;
        struct seg_iter it;
        struct seg_entry e;
        seg_iter_init(&it, copy, used);
        while (seg_iter_next(&it, &e) == SEG_ITER_OK)
            ;
        CU_ASSERT_EQUAL(it.status, SEG_ITER_CORRUPT);
        CU_ASSERT_FALSE(seg_verify(copy, used, &cert));
        copy[pos] ^= 0x40;
    }
    CU_ASSERT(seg_verify(copy, used, &cert));
    /* a truncated replica or a wrong certificate fails */
    struct seg_certificate bad = cert;
    bad.length -= 1;
    CU_ASSERT_FALSE(seg_verify(copy, used, &bad));
    bad = cert;
    bad.crc32c ^= 1;
    CU_ASSERT_FALSE(seg_verify(copy, used, &bad));
    CU_ASSERT_FALSE(seg_verify(copy, used - 1, &cert));
    /* a certificate for a prefix of whole entries verifies the prefix */
    free(copy);
    log_destroy(l);
}

static void test_certificate_prefix(void)
{
    mlog *l = mk(2);
    log_ref r;
    CU_ASSERT_EQUAL_FATAL(append_blob(l, 1, 500, &r), 0);
    uint32_t slot = log_head_slot(l);
    struct seg_certificate c1 = log_segment_certificate(l, slot);
    CU_ASSERT_EQUAL_FATAL(append_blob(l, 2, 500, &r), 0);
    struct seg_certificate c2 = log_segment_certificate(l, slot);
    CU_ASSERT(c2.length > c1.length);
    const uint8_t *base = log_segment_base(l, slot);
    CU_ASSERT(seg_verify(base, c2.length, &c1));     /* older certificate, prefix */
    CU_ASSERT(seg_verify(base, c2.length, &c2));
    struct seg_certificate mixed = { c2.length, c1.crc32c };
    CU_ASSERT_FALSE(seg_verify(base, c2.length, &mixed));
    log_destroy(l);
}

static void test_roll_and_digest(void)
{
    mlog *l = mk(8);
    log_ref r;
    uint32_t first = LOG_NO_SLOT, rolls = 0, prev = LOG_NO_SLOT;
    log_safe_version_raise(l, 41);
    for (uint32_t i = 0; i < 150; i++) {
        CU_ASSERT_EQUAL_FATAL(append_blob(l, i, 2000, &r), 0);
        if (first == LOG_NO_SLOT)
            first = log_head_slot(l);
        if (log_head_slot(l) != prev) {
            rolls++;
            prev = log_head_slot(l);
            /* new head: the digest lists every segment in the log, itself included */
            const uint8_t *base = log_segment_base(l, prev);
            struct seg_iter it;
            struct seg_entry e;
            seg_iter_init(&it, base, log_segment(l, prev)->w.used);
            CU_ASSERT_EQUAL(seg_iter_next(&it, &e), SEG_ITER_OK);
            CU_ASSERT_EQUAL(seg_iter_next(&it, &e), SEG_ITER_OK);
            CU_ASSERT_EQUAL_FATAL(e.type, SEG_ENTRY_LOG_DIGEST);
            struct seg_log_digest dg;
            memcpy(&dg, e.body, sizeof dg);
            CU_ASSERT_EQUAL(dg.count, rolls);
            CU_ASSERT_EQUAL(e.length, sizeof dg + 8u * dg.count);
            uint64_t last;
            memcpy(&last, e.body + sizeof dg + 8u * (dg.count - 1), 8);
            CU_ASSERT_EQUAL(last, log_segment(l, prev)->id);
            CU_ASSERT_EQUAL(seg_iter_next(&it, &e), SEG_ITER_OK);
            CU_ASSERT_EQUAL(e.type, SEG_ENTRY_SAFE_VERSION);
            struct seg_safe_version sv;
            memcpy(&sv, e.body, sizeof sv);
            CU_ASSERT_EQUAL(sv.safe_version, 41);
        }
        CU_ASSERT_EQUAL(log_segment_id_of(l, r), log_segment(l, log_head_slot(l))->id);
    }
    CU_ASSERT(rolls >= 4);
    /* closed segments are immutable and verify against their certificates */
    for (uint32_t s = 0; s < log_nsegments(l); s++) {
        if (log_segment(l, s)->state == LOG_SEG_FREE)
            continue;
        struct seg_certificate c = log_segment_certificate(l, s);
        CU_ASSERT(seg_verify(log_segment_base(l, s), c.length, &c));
        if (s != log_head_slot(l))
            CU_ASSERT_EQUAL(log_segment(l, s)->state, LOG_SEG_CLOSED);
    }
    log_destroy(l);
}

static void test_full_log(void)
{
    mlog *l = mk(3);
    log_ref r, last = 0;
    uint32_t n = 0;
    while (append_blob(l, n, 4000, &r) == 0) {
        last = r;
        n++;
        CU_ASSERT_FATAL(n < 1000);
    }
    struct log_stats st1;
    log_get_stats(l, &st1);
    CU_ASSERT_EQUAL(st1.segments_free, 0);
    uint32_t head = log_head_slot(l);
    uint32_t used = log_segment(l, head)->w.used;
    /* failed appends leave no trace; smaller ones still fit the head's tail */
    CU_ASSERT_NOT_EQUAL(append_blob(l, 9999, 4000, &r), 0);
    CU_ASSERT_EQUAL(log_head_slot(l), head);
    CU_ASSERT_EQUAL(log_segment(l, head)->w.used, used);
    struct log_stats st2;
    log_get_stats(l, &st2);
    CU_ASSERT_EQUAL(st1.bytes_used, st2.bytes_used);
    uint32_t v;
    memcpy(&v, log_entry_body(log_entry_get(l, last)), sizeof v);
    CU_ASSERT_EQUAL(v, n - 1);
    /* too large for any segment: refused without rolling */
    uint8_t *big = calloc(1, SEGSZ);
    struct iovec iov = { big, SEGSZ };
    CU_ASSERT_NOT_EQUAL(log_append(l, SEG_ENTRY_OBJECT, &iov, 1, &r), 0);
    free(big);
    struct seg_certificate c = log_segment_certificate(l, head);
    CU_ASSERT(seg_verify(log_segment_base(l, head), c.length, &c));
    /* the head can still be filled to the last byte */
    uint32_t room = SEGSZ - log_segment(l, head)->w.used;
    if (room >= sizeof(struct seg_entry_hdr) + 8) {
        CU_ASSERT_EQUAL(append_blob(l, 5, room - (uint32_t)sizeof(struct seg_entry_hdr), &r), 0);
        CU_ASSERT_EQUAL(log_segment(l, head)->w.used, SEGSZ);
    }
    log_destroy(l);
}

/* pages of [p, p + len) resident now (mincore) */
static size_t resident_pages(const void *p, size_t len)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), n = (len + pg - 1) / pg, r = 0;
    unsigned char *v = malloc(n);
    CU_ASSERT_FATAL(v != NULL);
    CU_ASSERT_FATAL(mincore((void *)p, len, v) == 0);
    for (size_t i = 0; i < n; i++)
        r += v[i] & 1;
    free(v);
    return r;
}

/* --prefault: the budget's slots at the front are resident before the first
 * write, counted as free resident pages, and filling the log keeps resident
 * memory within the budget. */
static void test_prefault(void)
{
    char err[256];
    struct log_config c = { .memory_bytes = 8ull * SEGSZ, .segment_bytes = SEGSZ,
                            .prefault = 1, .master_id = 77 };
    mlog *l = log_create(&c, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    CU_ASSERT_EQUAL(resident_pages(log_segment_base(l, 0), 8 * SEGSZ), 8 * SEGSZ / pg);
    CU_ASSERT_EQUAL(resident_pages(log_segment_base(l, 8), SEGSZ), 0);  /* past the budget */
    CU_ASSERT_EQUAL(l->resident_free, l->budget);
    CU_ASSERT_EQUAL(l->charged, 0);
    log_ref r;
    uint32_t n = 0;
    while (append_blob(l, n, 4000, &r) == 0) {
        CU_ASSERT_FATAL(n < 1000);
        CU_ASSERT(l->charged + l->resident_free <= l->budget);
        n++;
    }
    CU_ASSERT(n > 100);
    CU_ASSERT_EQUAL(resident_pages(log_segment_base(l, 8), SEGSZ), 0);
    log_destroy(l);

    /* without it nothing is resident before the first write */
    c.prefault = 0;
    l = log_create(&c, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(resident_pages(log_segment_base(l, 0), 8 * SEGSZ), 0);
    CU_ASSERT_EQUAL(l->resident_free, 0);
    log_destroy(l);
}

static void test_side_segments(void)
{
    mlog *l = mk(6);
    log_ref r;
    CU_ASSERT_EQUAL_FATAL(append_blob(l, 1, 100, &r), 0);
    uint32_t head0 = log_head_slot(l);
    struct log_stats st0;
    log_get_stats(l, &st0);
    uint32_t s1 = log_side_open(l);
    CU_ASSERT_NOT_EQUAL_FATAL(s1, LOG_NO_SLOT);
    uint8_t b[64] = { 7 };
    struct iovec iov = { b, sizeof b };
    log_ref sr;
    CU_ASSERT_EQUAL(log_side_append(l, s1, SEG_ENTRY_OBJECT, &iov, 1, &sr), 0);
    CU_ASSERT_EQUAL(log_ref_slot(sr), s1);
    CU_ASSERT_EQUAL(log_entry_get(l, sr)->length, 64);
    uint32_t s2 = log_side_open(l);
    CU_ASSERT_EQUAL(log_side_append(l, s2, SEG_ENTRY_OBJECT, &iov, 1, &sr), 0);
    /* side segments are not part of the log's bytes until committed */
    struct log_stats st1;
    log_get_stats(l, &st1);
    CU_ASSERT_EQUAL(st1.bytes_used, st0.bytes_used);
    CU_ASSERT_EQUAL(st1.segments_in_use, st0.segments_in_use + 2);
    /* a side segment fills up without rolling */
    uint8_t *big = calloc(1, SEGSZ / 2);
    struct iovec biov = { big, SEGSZ / 2 };
    CU_ASSERT_EQUAL(log_side_append(l, s2, SEG_ENTRY_OBJECT, &biov, 1, &sr), 0);
    CU_ASSERT_NOT_EQUAL(log_side_append(l, s2, SEG_ENTRY_OBJECT, &biov, 1, &sr), 0);
    free(big);
    log_side_abort(l, s2);
    CU_ASSERT_EQUAL(log_segment(l, s2)->state, LOG_SEG_FREE);
    uint32_t side_used = log_segment(l, s1)->w.used;
    CU_ASSERT_EQUAL(log_side_commit(l, &s1, 1), 0);
    struct log_stats st2;
    log_get_stats(l, &st2);
    CU_ASSERT_EQUAL(st2.bytes_used, st0.bytes_used + side_used + log_segment(l, log_head_slot(l))->w.used);
    CU_ASSERT_EQUAL(log_segment(l, s1)->state, LOG_SEG_CLOSED);
    CU_ASSERT_NOT_EQUAL(log_head_slot(l), head0);
    /* new head's digest names the side segment */
    uint32_t h = log_head_slot(l);
    struct seg_iter it;
    struct seg_entry e;
    seg_iter_init(&it, log_segment_base(l, h), log_segment(l, h)->w.used);
    seg_iter_next(&it, &e);
    seg_iter_next(&it, &e);
    CU_ASSERT_EQUAL_FATAL(e.type, SEG_ENTRY_LOG_DIGEST);
    struct seg_log_digest dg;
    memcpy(&dg, e.body, sizeof dg);
    CU_ASSERT_EQUAL(dg.count, 3);
    bool found = false;
    for (uint32_t i = 0; i < dg.count; i++) {
        uint64_t id;
        memcpy(&id, e.body + sizeof dg + 8 * i, 8);
        if (id == log_segment(l, s1)->id)
            found = true;
    }
    CU_ASSERT(found);
    /* freeing a closed segment returns it */
    struct log_stats st;
    log_get_stats(l, &st);
    uint32_t charge = log_segment(l, s1)->charged;
    CU_ASSERT_EQUAL(charge, log_seglet_round(l, side_used));
    log_segment_free(l, s1);
    log_get_stats(l, &st2);
    CU_ASSERT_EQUAL(st2.charged_bytes, st.charged_bytes - charge);
    CU_ASSERT_EQUAL(st2.bytes_used, st.bytes_used - side_used);
    log_destroy(l);
}

static int low_events;
static void count_low(void *arg, int ev, uint32_t slot, uint32_t old_slot)
{
    (void)arg; (void)slot; (void)old_slot;
    low_events += ev == LOG_EV_LOW_MEMORY;
}

/* The cleaner's reserve: writers never get it, but the slots the cleaner
 * opens come out of it first (writers keep their free memory), except for the
 * start of the head a combined commit opens.  LOG_EV_LOW_MEMORY: once per
 * mark, when an append takes the free memory below it. */
static void test_reserve_and_low_mark(void)
{
    mlog *l = mk(8);
    uint64_t hs = log_head_start_bytes(l), reserve = SEGSZ + hs;
    log_set_reserve(l, reserve);
    log_set_hook(l, count_low, NULL);
    log_ref r;
    uint32_t n = 0;
    /* fill until writers have between 1 and 3 segments' worth left */
    while (log_free_bytes(l, false) > 2 * SEGSZ + SEGSZ / 2)
        CU_ASSERT_EQUAL_FATAL(append_blob(l, n++, 3000, &r), 0);
    uint64_t fw = log_free_bytes(l, false);
    CU_ASSERT_EQUAL(log_free_bytes(l, true), fw + reserve);
    CU_ASSERT_EQUAL(low_events, 0);
    uint32_t src = LOG_NO_SLOT;
    for (uint32_t i = 0; i < log_nsegments(l) && src == LOG_NO_SLOT; i++)
        if (log_segment(l, i)->state == LOG_SEG_CLOSED)
            src = i;
    CU_ASSERT_FATAL(src != LOG_NO_SLOT);

    /* a compaction target within the reserve: writers keep what they had */
    uint32_t t1 = log_compact_open(l, src, SEGSZ / 2);
    CU_ASSERT_FATAL(t1 != LOG_NO_SLOT);
    CU_ASSERT_EQUAL(log_free_bytes(l, false), fw);
    CU_ASSERT_EQUAL(log_free_bytes_after(l, SEGSZ / 2), fw);
    CU_ASSERT_EQUAL(log_free_bytes_after(l, SEGSZ / 2 + 8192), fw - 8192);
    /* a second one beyond it: writers give up only the part beyond */
    uint32_t t2 = log_compact_open(l, src, SEGSZ / 2 + 8192);
    CU_ASSERT_FATAL(t2 != LOG_NO_SLOT);
    CU_ASSERT_EQUAL(log_free_bytes(l, false), fw - 8192);
    log_side_abort(l, t2);
    log_side_abort(l, t1);
    CU_ASSERT_EQUAL(log_free_bytes(l, false), fw);
    CU_ASSERT_EQUAL(log_free_bytes(l, true), fw + reserve);
    /* a survivor takes a whole segment: lent too, the head start is not */
    uint32_t sv = log_cleaner_open(l);
    CU_ASSERT_FATAL(sv != LOG_NO_SLOT);
    CU_ASSERT_EQUAL(log_free_bytes(l, false), fw);
    CU_ASSERT_EQUAL(log_free_bytes(l, true), fw + hs);
    uint32_t t3 = log_compact_open(l, src, 4096);
    CU_ASSERT_FATAL(t3 != LOG_NO_SLOT);
    CU_ASSERT_EQUAL(log_free_bytes(l, false), fw - log_seglet_round(l, 4096));
    log_side_abort(l, t3);
    log_side_abort(l, sv);
    CU_ASSERT_EQUAL(log_free_bytes(l, false), fw);
    /* recovery side segments are no cleaner's: they take writers' memory */
    uint32_t rs = log_side_open(l);
    CU_ASSERT_FATAL(rs != LOG_NO_SLOT);
    CU_ASSERT_EQUAL(log_free_bytes(l, false), fw - SEGSZ);
    log_side_abort(l, rs);
    /* a compaction commit hands the target's charge back to the writers'
     * count: the source is still charged until freed */
    uint32_t used = log_segment(l, src)->w.used;
    uint32_t t4 = log_compact_open(l, src, used);
    CU_ASSERT_FATAL(t4 != LOG_NO_SLOT);
    const struct seg_entry_hdr *h = (const struct seg_entry_hdr *)log_segment_base(l, src);
    log_ref nr;
    for (uint32_t pos = 0; pos < used;) {
        h = (const struct seg_entry_hdr *)(log_segment_base(l, src) + pos);
        CU_ASSERT_EQUAL_FATAL(log_side_copy(l, t4, h, &nr), 0);
        pos += (uint32_t)seg_entry_size(h->length);
    }
    log_compact_commit(l, src, t4, used);
    CU_ASSERT_EQUAL(l->cleaner_charged, 0);
    log_segment_free(l, src);
    CU_ASSERT_EQUAL(log_free_bytes(l, false), fw);

    /* low mark: one event when an append crosses it, none after, again
     * once set again */
    log_set_low_mark(l, fw - SEGSZ / 2);
    uint64_t before = fw;
    while (low_events == 0) {
        before = log_free_bytes(l, false);
        CU_ASSERT_EQUAL_FATAL(append_blob(l, n++, 3000, &r), 0);
    }
    CU_ASSERT(before >= fw - SEGSZ / 2);
    CU_ASSERT(log_free_bytes(l, false) < fw - SEGSZ / 2);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL_FATAL(append_blob(l, n++, 3000, &r), 0);
    CU_ASSERT_EQUAL(low_events, 1);
    log_set_low_mark(l, log_free_bytes(l, false));
    while (low_events == 1 && append_blob(l, n++, 3000, &r) == 0)
        ;
    CU_ASSERT_EQUAL(low_events, 2);
    log_set_low_mark(l, 0);                 /* off */
    while (append_blob(l, n++, 3000, &r) == 0)
        ;
    CU_ASSERT_EQUAL(low_events, 2);
    CU_ASSERT_EQUAL(log_free_bytes(l, false), 0);
    CU_ASSERT(log_free_bytes(l, true) >= reserve - 3000);
    log_destroy(l);
}

/* Append a tombstone entry (its body is not looked at here). */
static log_ref append_tomb(mlog *l, uint64_t target_id)
{
    struct seg_tombstone t = { .table_id = 1, .version = 1, .segment_id = target_id, .key_len = 1 };
    struct iovec iov[2] = { { &t, sizeof t }, { "k", 1 } };
    log_ref r;
    CU_ASSERT_FATAL(log_append(l, SEG_ENTRY_TOMBSTONE, iov, 2, &r) == 0);
    return r;
}

/* Segment ids map to slots through every change of place; tombstone bytes
 * count in their holder while the segment they name is in the log, move with
 * the cleaner's copies and with a compacted segment's id, and die -- in every
 * holder at once -- when that segment leaves the log. */
static void test_tombstone_accounting(void)
{
    mlog *l = mk(16);
    log_ref a0;
    CU_ASSERT_EQUAL_FATAL(append_blob(l, 1, 100, &a0), 0);
    uint32_t A = log_ref_slot(a0);
    uint64_t aid = log_segment(l, A)->id;
    CU_ASSERT_EQUAL(log_slot_of_id(l, aid), A);
    CU_ASSERT_EQUAL(log_slot_of_id(l, 9999), LOG_NO_SLOT);
    CU_ASSERT_EQUAL(log_slot_of_id(l, 0), LOG_NO_SLOT);
    CU_ASSERT_EQUAL(log_roll(l), 0);
    /* holder H1: two tombstones naming A (one unknown id: not counted) */
    log_ref t1 = append_tomb(l, aid), t2 = append_tomb(l, aid), t3 = append_tomb(l, 9999);
    uint32_t H1 = log_ref_slot(t1);
    uint32_t tsz = (uint32_t)seg_entry_size(sizeof(struct seg_tombstone) + 1);
    CU_ASSERT(log_tomb_add(l, t1, aid, tsz));
    CU_ASSERT(log_tomb_add(l, t2, aid, tsz));
    CU_ASSERT(!log_tomb_add(l, t3, 9999, tsz));
    CU_ASSERT_EQUAL(log_segment(l, H1)->live_bytes, 2 * tsz);
    CU_ASSERT_EQUAL(log_segment(l, A)->named_bytes, 2 * tsz);
    CU_ASSERT_EQUAL(log_roll(l), 0);
    /* holder H2: one naming A, one naming H1 */
    log_ref t4 = append_tomb(l, aid), t5 = append_tomb(l, log_segment(l, H1)->id);
    uint32_t H2 = log_ref_slot(t4);
    CU_ASSERT(log_tomb_add(l, t4, aid, tsz));
    CU_ASSERT(log_tomb_add(l, t5, log_segment(l, H1)->id, tsz));
    CU_ASSERT_EQUAL(log_segment(l, H2)->live_bytes, 2 * tsz);
    CU_ASSERT_EQUAL(log_segment(l, A)->named_bytes, 3 * tsz);
    /* one stops counting (a replay superseded it) */
    log_tomb_sub(l, t2, aid, tsz);
    CU_ASSERT_EQUAL(log_segment(l, H1)->live_bytes, tsz);
    CU_ASSERT_EQUAL(log_segment(l, A)->named_bytes, 2 * tsz);
    CU_ASSERT_EQUAL(log_roll(l), 0);

    /* A is compacted: a new slot takes its id, and the tombstones naming it */
    uint32_t live_a = log_segment(l, A)->live_bytes;
    uint32_t A2 = log_compact_open(l, A, 4096);
    CU_ASSERT_FATAL(A2 != LOG_NO_SLOT);
    struct seg_header_body hb = { .magic = SEG_MAGIC, .format = SEG_FORMAT_VERSION, .segment_id = aid };
    struct iovec hv = { &hb, sizeof hb };
    log_ref hr;
    CU_ASSERT_EQUAL(log_side_append(l, A2, SEG_ENTRY_SEGHDR, &hv, 1, &hr), 0);
    log_compact_commit(l, A, A2, live_a);
    CU_ASSERT_EQUAL(log_slot_of_id(l, aid), A2);
    CU_ASSERT_EQUAL(log_segment(l, A2)->named_bytes, 2 * tsz);
    CU_ASSERT_EQUAL(log_segment(l, A)->named_bytes, 0);
    log_segment_free(l, A);
    CU_ASSERT_EQUAL(log_slot_of_id(l, aid), A2);

    /* combined cleaning of H1: its live tombstone (naming A) is copied into
     * a survivor; the one naming H1 (in H2) dies with H1 */
    uint32_t S = log_cleaner_open(l);
    CU_ASSERT_FATAL(S != LOG_NO_SLOT);
    const struct seg_entry_hdr *h = log_entry_get(l, t1);
    struct iovec tv = { (void *)log_entry_body(h), h->length };
    log_ref t1s;
    CU_ASSERT_EQUAL_FATAL(log_side_append(l, S, SEG_ENTRY_TOMBSTONE, &tv, 1, &t1s), 0);
    uint64_t h1id = log_segment(l, H1)->id;
    CU_ASSERT_EQUAL(log_cleaner_commit(l, &S, 1, &H1, 1, true), 0);
    log_tomb_move(l, t1, t1s, aid, tsz);
    CU_ASSERT_EQUAL(log_segment(l, S)->live_bytes, tsz);
    CU_ASSERT_EQUAL(log_segment(l, A2)->named_bytes, 2 * tsz);
    CU_ASSERT_EQUAL(log_segment(l, H2)->live_bytes, tsz);       /* t5 died */
    struct log_stats st;
    log_get_stats(l, &st);
    CU_ASSERT_EQUAL(st.tomb_dead_bytes, tsz);
    CU_ASSERT_EQUAL(st.tomb_bytes, 2 * tsz);
    log_segment_free(l, H1);
    CU_ASSERT_EQUAL(log_slot_of_id(l, h1id), LOG_NO_SLOT);

    /* A leaves the log: both tombstones naming it die, in S and in H2 */
    uint32_t S2 = log_cleaner_open(l);
    CU_ASSERT_FATAL(S2 != LOG_NO_SLOT);
    CU_ASSERT_EQUAL(log_cleaner_commit(l, &S2, 1, &A2, 1, true), 0);
    CU_ASSERT_EQUAL(log_segment(l, S)->live_bytes, 0);
    CU_ASSERT_EQUAL(log_segment(l, H2)->live_bytes, 0);
    log_get_stats(l, &st);
    CU_ASSERT_EQUAL(st.tomb_dead_bytes, 3 * tsz);
    CU_ASSERT_EQUAL(st.tomb_bytes, 0);
    /* a tombstone naming a segment that left the log is not counted */
    CU_ASSERT(!log_tomb_add(l, append_tomb(l, aid), aid, tsz));
    log_segment_free(l, A2);
    CU_ASSERT_EQUAL(log_slot_of_id(l, aid), LOG_NO_SLOT);
    /* the index survives many segments coming and going */
    uint64_t sid = log_segment(l, S)->id, h2id = log_segment(l, H2)->id;
    for (int r = 0; r < 3000; r++) {
        uint32_t x = log_side_open(l);
        CU_ASSERT_FATAL(x != LOG_NO_SLOT);
        uint64_t xid = log_segment(l, x)->id;
        CU_ASSERT_EQUAL(log_slot_of_id(l, xid), x);
        log_side_abort(l, x);
        CU_ASSERT_EQUAL(log_slot_of_id(l, xid), LOG_NO_SLOT);
    }
    CU_ASSERT_EQUAL(log_slot_of_id(l, sid), S);
    CU_ASSERT_EQUAL(log_slot_of_id(l, h2id), H2);
    log_destroy(l);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("log", NULL, NULL);
    CU_add_test(s, "config checks", test_config_checks);
    CU_add_test(s, "append and iterate", test_append_iterate);
    CU_add_test(s, "flipped bytes detected", test_corruption_detected);
    CU_add_test(s, "certificate of a prefix", test_certificate_prefix);
    CU_add_test(s, "segment roll and log digest", test_roll_and_digest);
    CU_add_test(s, "full log", test_full_log);
    CU_add_test(s, "side segments", test_side_segments);
    CU_add_test(s, "prefault", test_prefault);
    CU_add_test(s, "tombstone accounting", test_tombstone_accounting);
    CU_add_test(s, "cleaner reserve lent first; low-memory mark", test_reserve_and_low_mark);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
