/* recovery.c -- crash-recovery planning: log check and partitioning; see recovery.h. */
#include <stdio.h>
#include <sys/types.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/recovery.h"

typedef unsigned __int128 u128;

static u128 width(uint64_t start, uint64_t end)
{
    return (u128)end - start + 1;
}

uint64_t rcv_partition_bytes(uint64_t max_bytes, uint64_t log_bytes, uint32_t masters)
{
    if (masters <= 1 || log_bytes == 0)
        return max_bytes;
    uint64_t per = log_bytes / masters + 1;
    per += per / 20;
    if (per < log_bytes / masters)     /* overflow: no useful bound */
        return max_bytes;
    return max_bytes == 0 || per < max_bytes ? per : max_bytes;
}

void rcv_subrange(uint64_t start, uint64_t end, uint32_t k, uint32_t i, uint64_t *s, uint64_t *e)
{
    u128 w = width(start, end);
    *s = start + (uint64_t)(w * i / k);
    *e = start + (uint64_t)(w * (i + 1) / k - 1);
}

/* x * num / den without overflow (num <= den, both <= 2^64). */
static uint64_t scale(uint64_t x, u128 num, u128 den)
{
    if (den == 0)
        return 0;
    /* x < 2^64 and num <= 2^64: the product fits 128 bits only if it is
     * below 2^128, which holds unless both are at their maximum */
    if (num == den)
        return x;
    return (uint64_t)((u128)x * num / den);
}

/* Estimate each tablet's size from the stats (est[i].bytes/objects); known[i]
 * tells whether any stat overlapped tablet i. */
static void estimate(const struct rcv_range *t, size_t n, const struct rcv_stat *st, size_t ns,
                     uint64_t fallback, struct rcv_piece *est, bool *known)
{
    uint64_t known_bytes = 0;
    u128 unknown_width = 0;
    for (size_t i = 0; i < n; i++) {
        est[i] = (struct rcv_piece){ t[i].table_id, t[i].start, t[i].end, 0, 0, 0 };
        known[i] = false;
        for (size_t k = 0; k < ns; k++) {
            if (st[k].table_id != t[i].table_id || st[k].start > st[k].end ||
                st[k].end < t[i].start || st[k].start > t[i].end)
                continue;
            uint64_t os = st[k].start > t[i].start ? st[k].start : t[i].start;
            uint64_t oe = st[k].end < t[i].end ? st[k].end : t[i].end;
            u128 sw = width(st[k].start, st[k].end), ow = width(os, oe);
            est[i].bytes += scale(st[k].bytes, ow, sw);
            est[i].objects += scale(st[k].objects, ow, sw);
            known[i] = true;
        }
        if (known[i])
            known_bytes += est[i].bytes;
        else
            unknown_width += width(t[i].start, t[i].end);
    }
    uint64_t rest = fallback > known_bytes ? fallback - known_bytes : 0;
    for (size_t i = 0; i < n; i++)
        if (!known[i])
            est[i].bytes = scale(rest, width(t[i].start, t[i].end), unknown_width);
}

/* Subranges a tablet of this size needs under the bounds (uncapped). */
static uint64_t pieces_needed(const struct rcv_piece *p, uint64_t max_bytes, uint64_t max_objects)
{
    uint64_t k = 1;
    if (max_bytes && p->bytes > max_bytes) {
        uint64_t kb = p->bytes / max_bytes + (p->bytes % max_bytes != 0);
        k = kb > k ? kb : k;
    }
    if (max_objects && p->objects > max_objects) {
        uint64_t ko = p->objects / max_objects + (p->objects % max_objects != 0);
        k = ko > k ? ko : k;
    }
    return k;
}

static int piece_size_cmp(const void *a, const void *b)
{
    const struct rcv_piece *x = a, *y = b;
    if (x->bytes != y->bytes)
        return x->bytes > y->bytes ? -1 : 1;
    if (x->objects != y->objects)
        return x->objects > y->objects ? -1 : 1;
    if (x->table_id != y->table_id)
        return x->table_id < y->table_id ? -1 : 1;
    return x->start < y->start ? -1 : x->start > y->start;
}

static int piece_order_cmp(const void *a, const void *b)
{
    const struct rcv_piece *x = a, *y = b;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    if (x->table_id != y->table_id)
        return x->table_id < y->table_id ? -1 : 1;
    return x->start < y->start ? -1 : x->start > y->start;
}

int rcv_partition(const struct rcv_range *tablets, size_t n,
                  const struct rcv_stat *stats, size_t ns, uint64_t fallback_bytes,
                  uint64_t max_bytes, uint64_t max_objects,
                  struct rcv_piece **out, size_t *npieces, uint32_t *nparts)
{
    *out = NULL;
    *npieces = 0;
    *nparts = 0;
    for (size_t i = 0; i < n; i++)
        if (tablets[i].start > tablets[i].end)
            return -1;
    if (n == 0)
        return 0;
    struct rcv_piece *est = calloc(n, sizeof(*est));
    bool *known = calloc(n, sizeof(*known));
    uint64_t *k = calloc(n, sizeof(*k));
    struct rcv_piece *p = NULL;
    struct { uint64_t bytes, objects; } *bins = NULL;
    int rc = -1;
    if (est == NULL || known == NULL || k == NULL)
        goto out_free;
    estimate(tablets, n, stats, ns, fallback_bytes, est, known);

    /* How many subranges each tablet becomes: capped per tablet, by its
     * width, and (scaled down) for the whole recovery. */
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        k[i] = pieces_needed(&est[i], max_bytes, max_objects);
        if (k[i] > RCV_MAX_PIECES_PER_TABLET)
            k[i] = RCV_MAX_PIECES_PER_TABLET;
        if ((u128)k[i] > width(tablets[i].start, tablets[i].end))
            k[i] = (uint64_t)width(tablets[i].start, tablets[i].end);
        total += k[i];
    }
    if (total > RCV_MAX_PIECES && total > n) {
        uint64_t budget = RCV_MAX_PIECES > n ? RCV_MAX_PIECES : n;
        /* proportional share of the budget, at least one piece each */
        uint64_t sum = total;
        total = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t share = (uint64_t)((u128)k[i] * (budget - n) / sum) + 1;
            k[i] = share < k[i] ? share : k[i];
            total += k[i];
        }
    }
    p = calloc(total, sizeof(*p));
    if (p == NULL)
        goto out_free;
    size_t np = 0;
    for (size_t i = 0; i < n; i++) {
        for (uint32_t j = 0; j < k[i]; j++) {
            struct rcv_piece *q = &p[np++];
            q->table_id = tablets[i].table_id;
            rcv_subrange(tablets[i].start, tablets[i].end, (uint32_t)k[i], j, &q->start, &q->end);
            q->bytes = scale(est[i].bytes, j + 1, k[i]) - scale(est[i].bytes, j, k[i]);
            q->objects = scale(est[i].objects, j + 1, k[i]) - scale(est[i].objects, j, k[i]);
        }
    }

    /* First fit, largest first. */
    qsort(p, np, sizeof(*p), piece_size_cmp);
    bins = calloc(np, sizeof(*bins));
    if (bins == NULL)
        goto out_free;
    uint32_t nb = 0;
    for (size_t i = 0; i < np; i++) {
        uint32_t b;
        for (b = 0; b < nb; b++) {
            bool fits_b = max_bytes == 0 || bins[b].bytes + p[i].bytes <= max_bytes;
            bool fits_o = max_objects == 0 || bins[b].objects + p[i].objects <= max_objects;
            if (fits_b && fits_o)
                break;
        }
        if (b == nb)
            nb++;
        bins[b].bytes += p[i].bytes;
        bins[b].objects += p[i].objects;
        p[i].partition = b;
    }
    qsort(p, np, sizeof(*p), piece_order_cmp);
    *out = p;
    p = NULL;
    *npieces = np;
    *nparts = nb;
    rc = 0;

out_free:
    free(bins);
    free(p);
    free(k);
    free(known);
    free(est);
    return rc;
}

/* ---------------------------------------------------------------------
 * Log check
 * ------------------------------------------------------------------- */

static bool below(uint64_t aseg, uint64_t aep, uint64_t bseg, uint64_t bep)
{
    return aseg < bseg || (aseg == bseg && aep < bep);
}

static _Thread_local const struct rcv_replica *g_sort_r;   /* qsort has no context argument */

/* Preferred first: higher epoch, closed, longer, primary (its backup
 * prefetches it), then by backup id. */
static int replica_pref_cmp(const void *a, const void *b)
{
    const struct rcv_replica *x = &g_sort_r[*(const size_t *)a], *y = &g_sort_r[*(const size_t *)b];
    if (x->epoch != y->epoch)
        return x->epoch > y->epoch ? -1 : 1;
    if (x->closed != y->closed)
        return x->closed ? -1 : 1;
    if (x->length != y->length)
        return x->length > y->length ? -1 : 1;
    if (x->primary != y->primary)
        return x->primary ? -1 : 1;
    return x->backup_id < y->backup_id ? -1 : x->backup_id > y->backup_id;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int rcv_check_log(const struct rcv_replica *r, size_t n, bool have_info,
                  uint64_t info_segment, uint64_t info_epoch,
                  struct rcv_log *log, char *note, size_t notelen)
{
    memset(log, 0, sizeof(*log));
    if (notelen)
        note[0] = '\0';
    bool *usable = calloc(n + 1, sizeof(*usable));
    if (usable == NULL)
        return -1;
    /* The newest digest: highest segment id, an open replica preferred, then
     * the highest epoch. */
    ssize_t best = -1;
    for (size_t i = 0; i < n; i++) {
        usable[i] = r[i].closed || !have_info || !below(r[i].segment_id, r[i].epoch, info_segment, info_epoch);
        if (!usable[i] || !r[i].has_digest)
            continue;
        if (best < 0 || r[i].segment_id > r[best].segment_id ||
            (r[i].segment_id == r[best].segment_id &&
             ((!r[i].closed && r[best].closed) ||
              (r[i].closed == r[best].closed && r[i].epoch > r[best].epoch))))
            best = (ssize_t)i;
    }
    if (best < 0) {
        snprintf(note, notelen, "no log digest among %zu replicas: the head segment's replicas are missing", n);
        free(usable);
        return 0;
    }
    log->digest_segment = r[best].segment_id;
    bool head_closed = false;       /* some replica of the digest's segment was closed */
    for (size_t i = 0; i < n; i++)
        head_closed |= usable[i] && r[i].segment_id == r[best].segment_id && r[i].closed;
    if (head_closed) {
        snprintf(note, notelen, "the newest log digest (segment %lu) is in a closed segment: "
                 "the replicas of the head segment after it are missing", (unsigned long)r[best].segment_id);
        free(usable);
        return 0;
    }
    size_t nd = r[best].ndigest;
    uint64_t *segs = malloc((nd + 1) * sizeof(*segs));
    size_t *order = malloc((n + 1) * sizeof(*order));
    if (segs == NULL || order == NULL) {
        free(segs);
        free(order);
        free(usable);
        return -1;
    }
    memcpy(segs, r[best].digest, nd * sizeof(*segs));
    qsort(segs, nd, sizeof(*segs), u64_cmp);
    size_t u = 0;
    for (size_t i = 0; i < nd; i++)             /* dedupe */
        if (u == 0 || segs[u - 1] != segs[i])
            segs[u++] = segs[i];
    nd = u;

    size_t missing = 0, off = 0, norder = 0;
    uint64_t bytes = 0;
    for (size_t s = 0; s < nd; s++) {
        size_t first = norder;
        uint32_t longest = 0;
        for (size_t i = 0; i < n; i++) {
            if (usable[i] && r[i].segment_id == segs[s]) {
                order[norder++] = i;
                longest = r[i].length > longest ? r[i].length : longest;
            }
        }
        if (norder == first) {
            if (missing == 0)
                off = (size_t)snprintf(note, notelen, "log incomplete: the digest of segment %lu lists %zu "
                                       "segments; no replica of segment", (unsigned long)log->digest_segment, nd);
            if (missing < 8 && off < notelen)
                off += (size_t)snprintf(note + off, notelen - off, " %lu", (unsigned long)segs[s]);
            missing++;
            continue;
        }
        bytes += longest;
        g_sort_r = r;
        qsort(&order[first], norder - first, sizeof(*order), replica_pref_cmp);
        /* Spread the primaries: rotate among the equally good leaders. */
        size_t m = 1;
        while (first + m < norder && r[order[first + m]].epoch == r[order[first]].epoch &&
               r[order[first + m]].closed == r[order[first]].closed &&
               r[order[first + m]].length == r[order[first]].length &&
               r[order[first + m]].primary == r[order[first]].primary)
            m++;
        if (r[order[first]].primary)
            m = 1;                  /* the primary leads: its backup has it in memory */
        size_t rot = (size_t)(segs[s] % m);
        for (size_t t = 0; t < rot; t++) {
            size_t x = order[first];
            memmove(&order[first], &order[first + 1], (m - 1) * sizeof(*order));
            order[first + m - 1] = x;
        }
    }
    if (missing > 8 && off < notelen)
        snprintf(note + off, notelen - off, " (+%zu more)", missing - 8);
    free(segs);
    free(usable);
    log->complete = missing == 0;
    log->nsegments = nd;
    log->log_bytes = bytes;
    log->order = order;
    log->norder = norder;
    return 0;
}

void rcv_log_free(struct rcv_log *log)
{
    free(log->order);
    log->order = NULL;
    log->norder = 0;
}
