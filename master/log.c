/* log.c -- arena, segments, head rolling, side segments (see log.h). */
#include "master/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "common/crc32c.h"
#include "common/log.h"

#define LOG_ARENA_ALIGN (2u * 1024 * 1024)

/* Fixed entries at the start of a new head, not counting the digest's ids. */
static uint32_t head_overhead(const mlog *l)
{
    return (uint32_t)(seg_entry_size(sizeof(struct seg_header_body)) +
                      seg_entry_size(sizeof(struct seg_log_digest) + 8ull * l->nsegs) +
                      seg_entry_size(sizeof(struct seg_safe_version)));
}

mlog *log_create(const struct log_config *cfg, char *err, size_t errlen)
{
    uint32_t sb = cfg->segment_bytes;
    if (sb < LOG_MIN_SEGMENT || sb > LOG_MAX_SEGMENT || (sb & (sb - 1)) != 0) {
        snprintf(err, errlen, "segment size %u: must be a power of two in [%u, %u]",
                 sb, LOG_MIN_SEGMENT, LOG_MAX_SEGMENT);
        return NULL;
    }
    uint64_t n = cfg->memory_bytes / sb;
    if (n < 2 || n >= LOG_MAX_SEGMENTS) {
        snprintf(err, errlen, "memory %llu bytes gives %llu segments of %u bytes: need 2..%u",
                 (unsigned long long)cfg->memory_bytes, (unsigned long long)n, sb,
                 LOG_MAX_SEGMENTS - 1);
        return NULL;
    }
    /* The digest of a new head lists every segment; keep it to a quarter of
     * a segment so objects still fit next to it. */
    if (seg_entry_size(sizeof(struct seg_log_digest) + 8 * n) > sb / 4) {
        snprintf(err, errlen, "%llu segments of %u bytes: too many for the log digest; "
                 "use larger segments", (unsigned long long)n, sb);
        return NULL;
    }

    mlog *l = calloc(1, sizeof *l);
    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->segs = calloc(n, sizeof *l->segs);
    l->digest_scratch = calloc(n, sizeof *l->digest_scratch);
    if (l->segs == NULL || l->digest_scratch == NULL) {
        snprintf(err, errlen, "out of memory");
        goto free_meta;
    }

    size_t arena = (size_t)n * sb;
    l->map_bytes = arena + LOG_ARENA_ALIGN;
    void *m = mmap(NULL, l->map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "mmap of %zu bytes for the log: %s", l->map_bytes, strerror(errno));
        goto free_meta;
    }
    l->map_base = m;
    l->arena = (uint8_t *)(((uintptr_t)m + LOG_ARENA_ALIGN - 1) & ~(uintptr_t)(LOG_ARENA_ALIGN - 1));
    if (cfg->hugepages && madvise(l->arena, arena, MADV_HUGEPAGE) != 0)
        CRAM_WARN("madvise(MADV_HUGEPAGE) on the log arena: %s (continuing with small pages)",
                  strerror(errno));

    l->segment_bytes = sb;
    l->seg_shift = (uint32_t)__builtin_ctz(sb);
    l->nsegs = (uint32_t)n;
    l->head = LOG_NO_SLOT;
    l->master_id = cfg->master_id;
    l->next_segment_id = 1;
    /* free list in slot order, so the log fills the arena from the front */
    l->free_head = LOG_NO_SLOT;
    for (uint32_t i = l->nsegs; i-- > 0;) {
        l->segs[i].state = LOG_SEG_FREE;
        l->segs[i].next_free = l->free_head;
        l->free_head = i;
    }
    l->nfree = l->nsegs;
    return l;

free_meta:
    free(l->digest_scratch);
    free(l->segs);
    free(l);
    return NULL;
}

void log_destroy(mlog *l)
{
    if (l == NULL)
        return;
    munmap(l->map_base, l->map_bytes);
    free(l->digest_scratch);
    free(l->segs);
    free(l);
}

uint32_t log_max_entry_body(const mlog *l)
{
    return l->segment_bytes - head_overhead(l) - (uint32_t)sizeof(struct seg_entry_hdr);
}

/* Take a free segment and write its segment header. */
static uint32_t seg_open(mlog *l, uint8_t state)
{
    uint32_t slot = l->free_head;
    if (slot == LOG_NO_SLOT)
        return LOG_NO_SLOT;
    struct log_segment *s = &l->segs[slot];
    l->free_head = s->next_free;
    l->nfree--;
    s->next_free = LOG_NO_SLOT;
    s->state = state;
    s->id = l->next_segment_id++;
    s->epoch = l->epoch;
    s->live_bytes = 0;
    seg_writer_init(&s->w, l->arena + ((size_t)slot << l->seg_shift), l->segment_bytes);
    struct seg_header_body hb = {
        .magic = SEG_MAGIC, .format = SEG_FORMAT_VERSION, .master_id = l->master_id,
        .segment_id = s->id, .epoch = s->epoch, .capacity = l->segment_bytes,
    };
    struct iovec iov = { &hb, sizeof hb };
    int64_t off = seg_append(&s->w, SEG_ENTRY_SEGHDR, &iov, 1);
    CRAM_ASSERT(off == 0);
    if (state != LOG_SEG_SIDE)      /* side segments count once committed */
        l->bytes_used += s->w.used;
    return slot;
}

static void seg_release(mlog *l, uint32_t slot)
{
    struct log_segment *s = &l->segs[slot];
    if (s->state != LOG_SEG_SIDE)
        l->bytes_used -= s->w.used;
    s->state = LOG_SEG_FREE;
    s->id = 0;
    s->w.used = 0;
    s->next_free = l->free_head;
    l->free_head = slot;
    l->nfree++;
}

int log_roll(mlog *l)
{
    uint32_t slot = seg_open(l, LOG_SEG_HEAD);
    if (slot == LOG_NO_SLOT)
        return -1;
    struct log_segment *s = &l->segs[slot];
    uint32_t old = l->head;
    if (old != LOG_NO_SLOT)
        l->segs[old].state = LOG_SEG_CLOSED;
    l->head = slot;

    /* digest: every segment now in the log, the new head included */
    uint32_t cnt = 0;
    for (uint32_t i = 0; i < l->nsegs; i++)
        if (l->segs[i].state == LOG_SEG_HEAD || l->segs[i].state == LOG_SEG_CLOSED)
            l->digest_scratch[cnt++] = l->segs[i].id;
    struct seg_log_digest dg = { .count = cnt, .reserved = 0 };
    struct iovec dv[2] = { { &dg, sizeof dg }, { l->digest_scratch, 8ull * cnt } };
    uint32_t before = s->w.used;
    int64_t off = seg_append(&s->w, SEG_ENTRY_LOG_DIGEST, dv, 2);
    CRAM_ASSERT(off >= 0);
    struct seg_safe_version sv = { .safe_version = l->safe_version };
    struct iovec sio = { &sv, sizeof sv };
    off = seg_append(&s->w, SEG_ENTRY_SAFE_VERSION, &sio, 1);
    CRAM_ASSERT(off >= 0);
    l->bytes_used += s->w.used - before;
    if (l->hook != NULL)
        l->hook(l->hook_arg, LOG_EV_HEAD_OPENED, slot, old);
    return 0;
}

void log_head_set_epoch(mlog *l, uint64_t epoch)
{
    CRAM_ASSERT(l->head != LOG_NO_SLOT);
    if (epoch > l->epoch)
        l->epoch = epoch;
    struct log_segment *s = &l->segs[l->head];
    s->epoch = epoch;
    uint8_t *base = s->w.base;
    struct seg_entry_hdr h;
    struct seg_header_body hb;
    memcpy(&h, base, sizeof h);
    CRAM_ASSERT(h.type == SEG_ENTRY_SEGHDR && h.length == sizeof hb);
    memcpy(&hb, base + sizeof h, sizeof hb);
    hb.epoch = epoch;
    memcpy(base + sizeof h, &hb, sizeof hb);
    h.crc32c = 0;
    uint32_t crc = crc32c(0, &h, sizeof h);
    h.crc32c = crc32c(crc, &hb, sizeof hb);
    memcpy(base, &h, sizeof h);
    /* the certificate folds in every entry header: walk them again */
    uint32_t cert = 0;
    for (uint32_t pos = 0; pos < s->w.used;) {
        memcpy(&h, base + pos, sizeof h);
        cert = crc32c(cert, &h, sizeof h);
        pos += (uint32_t)seg_entry_size(h.length);
    }
    s->w.cert_crc = cert;
}

int log_append(mlog *l, uint8_t type, const struct iovec *parts, int n, log_ref *ref)
{
    uint64_t body = 0;
    for (int i = 0; i < n; i++)
        body += parts[i].iov_len;
    if (body > log_max_entry_body(l))
        return -1;
    if (l->head == LOG_NO_SLOT || seg_entry_size(body) >
            (uint64_t)l->segment_bytes - l->segs[l->head].w.used) {
        if (log_roll(l) != 0)
            return -1;
    }
    struct log_segment *s = &l->segs[l->head];
    uint32_t before = s->w.used;
    int64_t off = seg_append(&s->w, type, parts, n);
    CRAM_ASSERT(off > 0);
    l->bytes_used += s->w.used - before;
    *ref = log_ref_make(l->head, (uint32_t)off);
    return 0;
}

uint64_t log_segment_id_of(const mlog *l, log_ref ref)
{
    return l->segs[log_ref_slot(ref)].id;
}

void log_safe_version_raise(mlog *l, uint64_t v)
{
    if (v > l->safe_version)
        l->safe_version = v;
}

uint32_t log_side_open(mlog *l)
{
    return seg_open(l, LOG_SEG_SIDE);
}

int log_side_append(mlog *l, uint32_t slot, uint8_t type, const struct iovec *parts, int n,
                    log_ref *ref)
{
    CRAM_ASSERT(slot < l->nsegs && l->segs[slot].state == LOG_SEG_SIDE);
    /* touches only the side segment itself: see the thread rule in log.h */
    int64_t off = seg_append(&l->segs[slot].w, type, parts, n);
    if (off < 0)
        return -1;
    *ref = log_ref_make(slot, (uint32_t)off);
    return 0;
}

int log_side_commit(mlog *l, const uint32_t *slots, uint32_t n)
{
    if (l->free_head == LOG_NO_SLOT)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        CRAM_ASSERT(slots[i] < l->nsegs && l->segs[slots[i]].state == LOG_SEG_SIDE);
        l->segs[slots[i]].state = LOG_SEG_CLOSED;
        l->bytes_used += l->segs[slots[i]].w.used;
        if (l->hook != NULL)
            l->hook(l->hook_arg, LOG_EV_JOINED, slots[i], LOG_NO_SLOT);
    }
    int rc = log_roll(l);
    CRAM_ASSERT(rc == 0);    /* a free segment was checked above */
    return 0;
}

void log_side_abort(mlog *l, uint32_t slot)
{
    CRAM_ASSERT(slot < l->nsegs && l->segs[slot].state == LOG_SEG_SIDE);
    seg_release(l, slot);
}

void log_segment_free(mlog *l, uint32_t slot)
{
    CRAM_ASSERT(slot < l->nsegs && l->segs[slot].state == LOG_SEG_CLOSED);
    seg_release(l, slot);
}

struct seg_certificate log_segment_certificate(const mlog *l, uint32_t slot)
{
    return seg_writer_certificate(&l->segs[slot].w);
}

void log_get_stats(const mlog *l, struct log_stats *st)
{
    st->memory_bytes = (uint64_t)l->nsegs * l->segment_bytes;
    st->bytes_used = l->bytes_used;
    st->segment_bytes = l->segment_bytes;
    st->segments_total = l->nsegs;
    st->segments_free = l->nfree;
    st->segments_in_use = l->nsegs - l->nfree;
}
