/*
 * test_recovery_partition.c -- the coordinator's recovery planning
 * (coordinator/recovery.h): partitions are bounded in bytes and objects,
 * cover every key-hash range of every tablet exactly once (with stats, with
 * partial stats, without stats, random layouts), and the log check finds the
 * newest digest, ignores stale open replicas and reports missing segments.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/coord_util.h"
#include "coordinator/recovery.h"

static int piece_cmp(const void *a, const void *b)
{
    const struct rcv_piece *x = a, *y = b;
    if (x->table_id != y->table_id)
        return x->table_id < y->table_id ? -1 : 1;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* Every tablet is tiled by pieces of its table with no gap and no overlap,
 * and no piece lies outside a tablet.  Returns 1 if so. */
static int covers_exactly(const struct rcv_range *t, size_t n, const struct rcv_piece *p0, size_t np)
{
    struct rcv_piece *p = malloc((np + 1) * sizeof(*p));
    memcpy(p, p0, np * sizeof(*p));
    qsort(p, np, sizeof(*p), piece_cmp);
    size_t used = 0;
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++) {
        /* pieces of this tablet: those of its table starting inside it */
        uint64_t next = t[i].start;
        int done = 0;
        for (size_t k = 0; k < np && ok && !done; k++) {
            if (p[k].table_id != t[i].table_id || p[k].start < t[i].start || p[k].start > t[i].end)
                continue;
            if (p[k].start != next || p[k].end < p[k].start || p[k].end > t[i].end)
                ok = 0;
            used++;
            if (p[k].end == t[i].end)
                done = 1;
            else
                next = p[k].end + 1;
        }
        ok &= done;
    }
    free(p);
    return ok && used == np;
}

static void check_bounds(const struct rcv_piece *p, size_t np, uint32_t nparts,
                         uint64_t maxb, uint64_t maxo, uint64_t *tb, uint64_t *to)
{
    uint64_t *pb = calloc(nparts + 1, sizeof(*pb)), *po = calloc(nparts + 1, sizeof(*po));
    *tb = *to = 0;
    for (size_t i = 0; i < np; i++) {
        CU_ASSERT_FATAL(p[i].partition < nparts);
        pb[p[i].partition] += p[i].bytes;
        po[p[i].partition] += p[i].objects;
        *tb += p[i].bytes;
        *to += p[i].objects;
        if (i > 0)
            CU_ASSERT(p[i - 1].partition <= p[i].partition);
    }
    for (uint32_t k = 0; k < nparts; k++) {
        CU_ASSERT(maxb == 0 || pb[k] <= maxb);
        CU_ASSERT(maxo == 0 || po[k] <= maxo);
        CU_ASSERT(pb[k] > 0 || po[k] > 0 || nparts == 1);   /* no empty partition */
    }
    free(pb);
    free(po);
}

static void test_subrange(void)
{
    uint64_t s, e, prev = 0;
    for (uint32_t k = 1; k <= 7; k++) {
        for (uint32_t i = 0; i < k; i++) {
            rcv_subrange(0, UINT64_MAX, k, i, &s, &e);
            CU_ASSERT(i == 0 ? s == 0 : s == prev + 1);
            CU_ASSERT(e >= s);
            prev = e;
        }
        CU_ASSERT(prev == UINT64_MAX);
    }
    rcv_subrange(10, 12, 3, 1, &s, &e);
    CU_ASSERT(s == 11 && e == 11);
    rcv_subrange(5, 5, 1, 0, &s, &e);
    CU_ASSERT(s == 5 && e == 5);
}

static void test_empty_and_bad(void)
{
    struct rcv_piece *p;
    size_t np;
    uint32_t nparts;
    CU_ASSERT(rcv_partition(NULL, 0, NULL, 0, 0, 100, 100, &p, &np, &nparts) == 0);
    CU_ASSERT(np == 0 && nparts == 0 && p == NULL);
    struct rcv_range bad = { 1, 10, 5 };
    CU_ASSERT(rcv_partition(&bad, 1, NULL, 0, 0, 100, 100, &p, &np, &nparts) == -1);
}

/* One whole-space tablet, stats say 1000 bytes / 100 objects: bounds of 300
 * bytes split it into 4 equal subranges of 250 bytes, each its own partition. */
static void test_split_large_tablet(void)
{
    struct rcv_range t = { 7, 0, UINT64_MAX };
    struct rcv_stat st = { 7, 0, UINT64_MAX, 1000, 100 };
    struct rcv_piece *p;
    size_t np;
    uint32_t nparts;
    CU_ASSERT_FATAL(rcv_partition(&t, 1, &st, 1, 0, 300, 0, &p, &np, &nparts) == 0);
    CU_ASSERT(np == 4 && nparts == 4);
    CU_ASSERT(covers_exactly(&t, 1, p, np));
    uint64_t tb, to;
    check_bounds(p, np, nparts, 300, 0, &tb, &to);
    CU_ASSERT(tb == 1000 && to == 100);
    for (size_t i = 0; i < np; i++)
        CU_ASSERT(p[i].bytes == 250);
    free(p);
    /* the object bound splits too: 100 objects, at most 30 each -> 4 */
    CU_ASSERT_FATAL(rcv_partition(&t, 1, &st, 1, 0, 0, 30, &p, &np, &nparts) == 0);
    CU_ASSERT(np == 4 && nparts == 4);
    check_bounds(p, np, nparts, 0, 30, &tb, &to);
    CU_ASSERT(covers_exactly(&t, 1, p, np));
    free(p);
    /* no bounds: one partition holding the whole tablet */
    CU_ASSERT_FATAL(rcv_partition(&t, 1, &st, 1, 0, 0, 0, &p, &np, &nparts) == 0);
    CU_ASSERT(np == 1 && nparts == 1 && p[0].start == 0 && p[0].end == UINT64_MAX);
    free(p);
}

/* Many small tablets are packed together up to the bound. */
static void test_pack_small_tablets(void)
{
    struct rcv_range t[10];
    struct rcv_stat st[10];
    for (uint32_t i = 0; i < 10; i++) {
        t[i].table_id = 1 + i % 2;
        coord_tablet_range(5, i / 2, &t[i].start, &t[i].end);
        st[i] = (struct rcv_stat){ t[i].table_id, t[i].start, t[i].end, 100, 10 };
    }
    struct rcv_piece *p;
    size_t np;
    uint32_t nparts;
    CU_ASSERT_FATAL(rcv_partition(t, 10, st, 10, 0, 350, 1000, &p, &np, &nparts) == 0);
    CU_ASSERT(np == 10);
    CU_ASSERT(nparts == 4);          /* 3+3+3+1 */
    uint64_t tb, to;
    check_bounds(p, np, nparts, 350, 1000, &tb, &to);
    CU_ASSERT(tb == 1000 && to == 100);
    CU_ASSERT(covers_exactly(t, 10, p, np));
    free(p);
}

/* Without stats the replica bytes are spread by hash-range width. */
static void test_fallback_by_width(void)
{
    struct rcv_range t[2] = { { 3, 0, (UINT64_MAX / 4) }, { 3, (UINT64_MAX / 4) + 1, UINT64_MAX } };
    struct rcv_piece *p;
    size_t np;
    uint32_t nparts;
    CU_ASSERT_FATAL(rcv_partition(t, 2, NULL, 0, 4000, 1000, 0, &p, &np, &nparts) == 0);
    uint64_t tb, to;
    check_bounds(p, np, nparts, 1000, 0, &tb, &to);
    CU_ASSERT(covers_exactly(t, 2, p, np));
    CU_ASSERT(tb >= 3990 && tb <= 4000);
    CU_ASSERT(np == 4 && nparts == 4);    /* ~1000 + 3 x ~1000 */
    uint64_t first = 0;
    for (size_t i = 0; i < np; i++)
        if (p[i].start <= UINT64_MAX / 4)
            first += p[i].bytes;
    CU_ASSERT(first >= 990 && first <= 1000);
    free(p);
    /* partial stats: the known tablet counts as reported, the rest of the
     * replica bytes go to the unknown one */
    struct rcv_stat st = { 3, 0, UINT64_MAX / 4, 200, 5 };
    CU_ASSERT_FATAL(rcv_partition(t, 2, &st, 1, 4000, 0, 0, &p, &np, &nparts) == 0);
    CU_ASSERT(np == 2 && nparts == 1);
    for (size_t i = 0; i < np; i++)
        CU_ASSERT(p[i].bytes == (p[i].start == 0 ? 200u : 3800u));
    free(p);
}

/* Stats that cover a tablet only in part, or that are wider than it (a
 * tablet split since), count proportionally. */
static void test_stats_overlap(void)
{
    struct rcv_range t = { 9, 0, (1ull << 63) - 1 };       /* half the space */
    struct rcv_stat st = { 9, 0, UINT64_MAX, 1000, 100 };  /* whole space */
    struct rcv_stat other = { 8, 0, UINT64_MAX, 99999, 9999 };
    struct rcv_stat both[2] = { st, other };
    struct rcv_piece *p;
    size_t np;
    uint32_t nparts;
    CU_ASSERT_FATAL(rcv_partition(&t, 1, both, 2, 0, 0, 0, &p, &np, &nparts) == 0);
    CU_ASSERT(np == 1 && p[0].bytes == 500 && p[0].objects == 50);
    free(p);
}

static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

/* Random tablet layouts, random stats (some missing), random bounds: always
 * exact coverage and bounded partitions (unless a piece cannot be split
 * further). */
static void test_random_layouts(void)
{
    for (int iter = 0; iter < 500; iter++) {
        size_t n = 1 + rnd() % 40;
        struct rcv_range *t = calloc(n, sizeof(*t));
        struct rcv_stat *st = calloc(n, sizeof(*st));
        size_t ns = 0, i = 0;
        uint64_t table = 1;
        while (i < n) {
            uint32_t span = 1 + (uint32_t)(rnd() % 8);
            for (uint32_t k = 0; k < span && i < n; k++, i++) {
                t[i].table_id = table;
                coord_tablet_range(span, k, &t[i].start, &t[i].end);
                if (i + 1 == n && k + 1 < span) {
                    /* the last table's remaining range in one tablet */
                    t[i].end = UINT64_MAX;
                }
                if (rnd() % 3 != 0)
                    st[ns++] = (struct rcv_stat){ table, t[i].start, t[i].end, rnd() % 100000, rnd() % 5000 };
            }
            table++;
        }
        if (iter % 7 == 0)
            ns = 0;                                   /* no stats at all */
        if (iter % 11 == 0) {                         /* a tiny tablet */
            t[0].end = t[0].start + rnd() % 3;
            if (n > 1 && t[1].table_id == t[0].table_id)
                t[1].start = t[0].end + 1;
            else if (t[0].end != UINT64_MAX)
                t[0].end = UINT64_MAX;                /* keep the table whole */
            ns = 0;
        }
        uint64_t maxb = rnd() % 4 == 0 ? 0 : 1000 + rnd() % 50000;
        uint64_t maxo = rnd() % 4 == 0 ? 0 : 100 + rnd() % 2000;
        uint64_t fallback = rnd() % 500000;
        struct rcv_piece *p;
        size_t np;
        uint32_t nparts;
        CU_ASSERT_FATAL(rcv_partition(t, n, st, ns, fallback, maxb, maxo, &p, &np, &nparts) == 0);
        CU_ASSERT(covers_exactly(t, n, p, np));
        CU_ASSERT(np <= RCV_MAX_PIECES);
        /* bounds hold wherever the piece itself is within them */
        uint64_t *pb = calloc(nparts + 1, sizeof(*pb)), *po = calloc(nparts + 1, sizeof(*po));
        uint32_t *cnt = calloc(nparts + 1, sizeof(*cnt));
        for (size_t k = 0; k < np; k++) {
            CU_ASSERT_FATAL(p[k].partition < nparts);
            pb[p[k].partition] += p[k].bytes;
            po[p[k].partition] += p[k].objects;
            cnt[p[k].partition]++;
        }
        for (uint32_t k = 0; k < nparts; k++) {
            CU_ASSERT(cnt[k] > 0);
            if (cnt[k] > 1) {
                CU_ASSERT(maxb == 0 || pb[k] <= maxb);
                CU_ASSERT(maxo == 0 || po[k] <= maxo);
            }
        }
        for (size_t k = 0; k < np; k++) {
            if (p[k].end - p[k].start > 0) {     /* splittable pieces obey the bounds */
                CU_ASSERT(maxb == 0 || p[k].bytes <= maxb);
                CU_ASSERT(maxo == 0 || p[k].objects <= maxo);
            }
        }
        free(pb);
        free(po);
        free(cnt);
        free(p);
        free(st);
        free(t);
    }
}

/* A tablet far too large for the bound is capped at RCV_MAX_PIECES_PER_TABLET. */
static void test_piece_caps(void)
{
    struct rcv_range t = { 1, 0, UINT64_MAX };
    struct rcv_stat st = { 1, 0, UINT64_MAX, 1ull << 40, 1ull << 30 };
    struct rcv_piece *p;
    size_t np;
    uint32_t nparts;
    CU_ASSERT_FATAL(rcv_partition(&t, 1, &st, 1, 0, 1, 1, &p, &np, &nparts) == 0);
    CU_ASSERT(np == RCV_MAX_PIECES_PER_TABLET && nparts == np);
    CU_ASSERT(covers_exactly(&t, 1, p, np));
    free(p);
    /* many tables each wanting the per-tablet maximum: the total is capped */
    struct rcv_range many[20];
    struct rcv_stat ms[20];
    for (int i = 0; i < 20; i++) {
        many[i] = (struct rcv_range){ (uint64_t)i + 1, 0, UINT64_MAX };
        ms[i] = (struct rcv_stat){ (uint64_t)i + 1, 0, UINT64_MAX, 1ull << 40, 1ull << 30 };
    }
    CU_ASSERT_FATAL(rcv_partition(many, 20, ms, 20, 0, 1, 1, &p, &np, &nparts) == 0);
    CU_ASSERT(np <= RCV_MAX_PIECES && np >= 20);
    CU_ASSERT(covers_exactly(many, 20, p, np));
    free(p);
    /* a one-hash tablet cannot be split */
    struct rcv_range one = { 1, 42, 42 };
    struct rcv_stat os = { 1, 42, 42, 5000, 500 };
    CU_ASSERT_FATAL(rcv_partition(&one, 1, &os, 1, 0, 10, 10, &p, &np, &nparts) == 0);
    CU_ASSERT(np == 1 && nparts == 1 && p[0].start == 42 && p[0].end == 42 && p[0].bytes == 5000);
    free(p);
}

/* ---- log check ---- */

static const uint64_t dig3[] = { 1, 2, 3 };
static const uint64_t dig5[] = { 1, 3, 4, 5 };

static void test_log_complete(void)
{
    struct rcv_replica r[] = {
        { 10, 1, 0, 1000, true, true, dig3, 1, false },
        { 11, 1, 0, 1000, true, true, dig3, 1, false },
        { 10, 3, 0, 800, true, true, dig3, 3, false },
        { 12, 3, 0, 800, true, true, dig3, 3, false },
        { 11, 4, 0, 500, true, false, NULL, 0, false },
        { 12, 4, 0, 500, true, false, NULL, 0, false },
        { 10, 5, 0, 300, false, true, dig5, 4, false },
        { 11, 5, 0, 200, false, true, dig5, 4, false },
        { 12, 2, 0, 999, true, false, NULL, 0, false },      /* freed: not in the digest */
    };
    struct rcv_log log;
    char note[256];
    CU_ASSERT_FATAL(rcv_check_log(r, 9, false, 0, 0, &log, note, sizeof(note)) == 0);
    CU_ASSERT(log.complete);
    CU_ASSERT(log.digest_segment == 5 && log.nsegments == 4);
    CU_ASSERT(log.log_bytes == 1000 + 800 + 500 + 300);
    CU_ASSERT(log.norder == 8);
    for (size_t i = 1; i < log.norder; i++)
        CU_ASSERT(r[log.order[i - 1]].segment_id <= r[log.order[i]].segment_id);
    /* the longer open replica of the head comes first */
    CU_ASSERT(r[log.order[6]].segment_id == 5 && r[log.order[6]].length == 300);
    for (size_t i = 0; i < log.norder; i++)
        CU_ASSERT(r[log.order[i]].segment_id != 2);
    rcv_log_free(&log);
}

static void test_log_missing(void)
{
    struct rcv_replica r[] = {
        { 10, 1, 0, 1000, true, true, dig3, 1, false },
        { 11, 5, 0, 200, false, true, dig5, 4, false },
        { 11, 4, 0, 500, true, false, NULL, 0, false },
    };
    struct rcv_log log;
    char note[256];
    CU_ASSERT_FATAL(rcv_check_log(r, 3, false, 0, 0, &log, note, sizeof(note)) == 0);
    CU_ASSERT(!log.complete);
    CU_ASSERT(strstr(note, " 3") != NULL);
    CU_ASSERT(strstr(note, "segment 5") != NULL);
    rcv_log_free(&log);
    /* no digest at all */
    CU_ASSERT_FATAL(rcv_check_log(&r[2], 1, false, 0, 0, &log, note, sizeof(note)) == 0);
    CU_ASSERT(!log.complete && strstr(note, "no log digest") != NULL);
    rcv_log_free(&log);
    /* the newest digest is closed: a newer head existed */
    struct rcv_replica c[] = { { 10, 3, 0, 800, true, true, dig3, 3, false }, { 10, 1, 0, 8, true, false, NULL, 0, false },
                               { 10, 2, 0, 8, true, false, NULL, 0, false } };
    CU_ASSERT_FATAL(rcv_check_log(c, 3, false, 0, 0, &log, note, sizeof(note)) == 0);
    CU_ASSERT(!log.complete && strstr(note, "closed") != NULL);
    rcv_log_free(&log);
    /* an open replica of the digest's segment lags behind a closed one of
     * the same segment: it was closed, so a newer head existed */
    struct rcv_replica lag[] = { { 10, 3, 0, 800, true, true, dig3, 3, false }, { 11, 3, 0, 700, false, true, dig3, 3, false },
                                 { 10, 1, 0, 8, true, false, NULL, 0, false }, { 10, 2, 0, 8, true, false, NULL, 0, false } };
    CU_ASSERT_FATAL(rcv_check_log(lag, 4, false, 0, 0, &log, note, sizeof(note)) == 0);
    CU_ASSERT(!log.complete && strstr(note, "closed") != NULL);
    rcv_log_free(&log);
    CU_ASSERT_FATAL(rcv_check_log(&lag[1], 3, false, 0, 0, &log, note, sizeof(note)) == 0);
    CU_ASSERT(log.complete && log.norder == 3);
    rcv_log_free(&log);
}

/* Open replicas below the recorded recovery info are ignored. */
static void test_log_stale_open(void)
{
    static const uint64_t dig2[] = { 1, 2 };
    struct rcv_replica r[] = {
        { 10, 1, 0, 1000, true, false, NULL, 0, false },
        { 10, 2, 1, 300, false, true, dig2, 2, false },     /* stale epoch 1 */
        { 11, 2, 2, 100, false, true, dig2, 2, false },     /* current epoch 2 */
    };
    struct rcv_log log;
    char note[256];
    CU_ASSERT_FATAL(rcv_check_log(r, 3, true, 2, 2, &log, note, sizeof(note)) == 0);
    CU_ASSERT(log.complete && log.norder == 2);
    CU_ASSERT(r[log.order[1]].backup_id == 11);
    CU_ASSERT(log.log_bytes == 1100);
    rcv_log_free(&log);
    /* only the stale one left: incomplete */
    struct rcv_replica s[] = { r[0], r[1] };
    CU_ASSERT_FATAL(rcv_check_log(s, 2, true, 2, 2, &log, note, sizeof(note)) == 0);
    CU_ASSERT(!log.complete);
    rcv_log_free(&log);
    /* without the info the stale one counts */
    CU_ASSERT_FATAL(rcv_check_log(s, 2, false, 0, 0, &log, note, sizeof(note)) == 0);
    CU_ASSERT(log.complete);
    rcv_log_free(&log);
}

/* The replica the master marked primary leads its segment among equally
 * good ones (its backup prefetches it), whatever the rotation would pick;
 * a better replica (closed vs open, longer) still wins over it; without
 * any primary the leaders rotate by segment id. */
static void test_log_primary_first(void)
{
    static const uint64_t dig[] = { 1, 2, 3, 4 };
    struct rcv_replica r[] = {
        { 10, 1, 0, 500, true, false, NULL, 0, false },
        { 11, 1, 0, 500, true, false, NULL, 0, true },
        { 12, 2, 0, 500, true, false, NULL, 0, true },
        { 10, 2, 0, 500, true, false, NULL, 0, false },
        { 11, 3, 0, 400, true, false, NULL, 0, true },   /* shorter: loses to the longer */
        { 12, 3, 0, 500, true, false, NULL, 0, false },
        { 10, 4, 0, 100, false, true, dig, 4, false },
        { 11, 4, 0, 100, false, true, dig, 4, false },
    };
    struct rcv_log log;
    char note[256];
    CU_ASSERT_FATAL(rcv_check_log(r, 8, false, 0, 0, &log, note, sizeof(note)) == 0);
    CU_ASSERT_FATAL(log.complete && log.norder == 8);
    CU_ASSERT(log.order[0] == 1 && log.order[1] == 0);     /* segment 1: primary on 11 */
    CU_ASSERT(log.order[2] == 2 && log.order[3] == 3);     /* segment 2: primary on 12 */
    CU_ASSERT(log.order[4] == 5 && log.order[5] == 4);     /* segment 3: the longer one */
    /* segment 4: no primary, rotation by id (4 % 2 = 0): backup 10 first */
    CU_ASSERT(r[log.order[6]].segment_id == 4 && r[log.order[6]].backup_id == 10);
    rcv_log_free(&log);
    /* the primary's backup is gone: the other replica alone, still complete */
    struct rcv_replica g[] = { r[0], r[3], r[5], r[6] };
    CU_ASSERT_FATAL(rcv_check_log(g, 4, false, 0, 0, &log, note, sizeof(note)) == 0);
    CU_ASSERT(log.complete && log.norder == 4);
    rcv_log_free(&log);
}

/* At least as many partitions as recovery masters when the data is small;
 * the configured bound when it is large. */
static void test_partition_bytes_masters(void)
{
    CU_ASSERT(rcv_partition_bytes(256u << 20, 100u << 20, 4) > (25u << 20));
    CU_ASSERT(rcv_partition_bytes(256u << 20, 100u << 20, 4) <= (25u << 20) / 100 * 106);
    CU_ASSERT(rcv_partition_bytes(256u << 20, 4ull << 30, 4) == 256u << 20);
    CU_ASSERT(rcv_partition_bytes(256u << 20, 100u << 20, 1) == 256u << 20);
    CU_ASSERT(rcv_partition_bytes(256u << 20, 0, 4) == 256u << 20);
    CU_ASSERT(rcv_partition_bytes(0, 1000, 4) == 263);      /* 251 + 5 % */          /* 0 = unbounded: now bounded */
    CU_ASSERT(rcv_partition_bytes(0, UINT64_MAX, 2) >= UINT64_MAX / 2);   /* no overflow */
    CU_ASSERT(rcv_partition_bytes(256u << 20, 3, 4) >= 1);
    /* one tablet, 100 MB of stats, log 105 MB, 4 masters -> 4 partitions;
     * ten tablets of 10 MB -> 4 or fewer would leave a master idle: >= 4 */
    struct rcv_range t = { 7, 0, UINT64_MAX };
    struct rcv_stat st = { 7, 0, UINT64_MAX, 100u << 20, 100000 };
    struct rcv_piece *p;
    size_t np;
    uint32_t nparts;
    uint64_t b = rcv_partition_bytes(256u << 20, 105u << 20, 4);
    CU_ASSERT_FATAL(rcv_partition(&t, 1, &st, 1, 105u << 20, b, 4u << 20, &p, &np, &nparts) == 0);
    CU_ASSERT(nparts == 4);
    CU_ASSERT(covers_exactly(&t, 1, p, np));
    free(p);
    struct rcv_range tt[10];
    struct rcv_stat ss[10];
    for (uint32_t i = 0; i < 10; i++) {
        tt[i].table_id = 1;
        coord_tablet_range(10, i, &tt[i].start, &tt[i].end);
        ss[i] = (struct rcv_stat){ 1, tt[i].start, tt[i].end, 10u << 20, 10000 };
    }
    b = rcv_partition_bytes(256u << 20, 105u << 20, 4);
    CU_ASSERT_FATAL(rcv_partition(tt, 10, ss, 10, 105u << 20, b, 4u << 20, &p, &np, &nparts) == 0);
    CU_ASSERT(nparts >= 4);
    CU_ASSERT(covers_exactly(tt, 10, p, np));
    free(p);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("recovery_partition", NULL, NULL);
    CU_add_test(s, "subrange", test_subrange);
    CU_add_test(s, "empty and bad input", test_empty_and_bad);
    CU_add_test(s, "large tablet split", test_split_large_tablet);
    CU_add_test(s, "small tablets packed", test_pack_small_tablets);
    CU_add_test(s, "fallback by width", test_fallback_by_width);
    CU_add_test(s, "stats overlap", test_stats_overlap);
    CU_add_test(s, "random layouts", test_random_layouts);
    CU_add_test(s, "piece caps", test_piece_caps);
    CU_add_test(s, "log complete", test_log_complete);
    CU_add_test(s, "log missing", test_log_missing);
    CU_add_test(s, "log stale open", test_log_stale_open);
    CU_add_test(s, "log primary first", test_log_primary_first);
    CU_add_test(s, "partition bytes per master", test_partition_bytes_masters);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
