/* log.c -- arena, segments, head rolling, side segments (see log.h). */
#include "master/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/mem.h"

#define LOG_ARENA_ALIGN (2u * 1024 * 1024)
#define LOG_PAGE        4096u

/* Fixed entries at the start of a new head, not counting the digest's ids. */
static uint32_t head_overhead(const mlog *l)
{
    return (uint32_t)(seg_entry_size(sizeof(struct seg_header_body)) +
                      seg_entry_size(sizeof(struct seg_log_digest) + 8ull * l->nsegs) +
                      seg_entry_size(sizeof(struct seg_safe_version)));
}

/* ---- segment id -> slot ------------------------------------------------- */

static inline uint32_t id_home(const mlog *l, uint64_t id)
{
    return (uint32_t)((id * 0x9e3779b97f4a7c15ull) >> 32) & l->id_mask;
}

uint32_t log_slot_of_id(const mlog *l, uint64_t id)
{
    if (id == 0)
        return LOG_NO_SLOT;
    for (uint32_t i = id_home(l, id);; i = (i + 1) & l->id_mask) {
        uint32_t slot = l->id_index[i];
        if (slot == UINT32_MAX)
            return LOG_NO_SLOT;
        if (l->segs[slot].id == id)
            return slot;
    }
}

/* Index segs[slot].id (not indexed yet: ids are unique). */
static void id_insert(mlog *l, uint32_t slot)
{
    uint32_t i = id_home(l, l->segs[slot].id);
    while (l->id_index[i] != UINT32_MAX)
        i = (i + 1) & l->id_mask;
    l->id_index[i] = slot;
}

/* Position of the index entry holding slot for id, or UINT32_MAX. */
static uint32_t id_pos(const mlog *l, uint64_t id, uint32_t slot)
{
    for (uint32_t i = id_home(l, id);; i = (i + 1) & l->id_mask) {
        if (l->id_index[i] == UINT32_MAX)
            return UINT32_MAX;
        if (l->id_index[i] == slot)
            return i;
    }
}

/* Drop the entry of (id, slot) if there is one (backward-shift deletion). */
static void id_remove(mlog *l, uint64_t id, uint32_t slot)
{
    uint32_t i = id_pos(l, id, slot);
    if (i == UINT32_MAX)
        return;
    for (uint32_t j = (i + 1) & l->id_mask;; j = (j + 1) & l->id_mask) {
        uint32_t sj = l->id_index[j];
        if (sj == UINT32_MAX)
            break;
        uint32_t h = id_home(l, l->segs[sj].id);
        /* sj may move back to i if its home is not in (i, j] */
        if (((j - h) & l->id_mask) >= ((j - i) & l->id_mask)) {
            l->id_index[i] = sj;
            i = j;
        }
    }
    l->id_index[i] = UINT32_MAX;
}

/* ---- tombstone holders ----------------------------------------------------- */

static uint32_t holder_pos(const struct log_segment *t, uint64_t holder_id)
{
    uint32_t lo = 0, hi = t->nholders;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (t->holders[mid].holder_id < holder_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* 0, or -1 out of memory (then nothing is recorded). */
static int holder_add(struct log_segment *t, uint64_t holder_id, uint32_t bytes)
{
    uint32_t n = t->nholders;
    uint32_t p = n > 0 && t->holders[n - 1].holder_id == holder_id ? n - 1 : holder_pos(t, holder_id);
    if (p < n && t->holders[p].holder_id == holder_id) {
        t->holders[p].bytes += bytes;
        return 0;
    }
    if (n == t->capholders) {
        uint32_t cap = t->capholders ? t->capholders * 2 : 8;
        struct log_tomb_holder *nh = realloc(t->holders, cap * sizeof *nh);
        if (nh == NULL)
            return -1;
        t->holders = nh;
        t->capholders = cap;
    }
    memmove(&t->holders[p + 1], &t->holders[p], (n - p) * sizeof *t->holders);
    t->holders[p] = (struct log_tomb_holder){ holder_id, bytes, 0 };
    t->nholders++;
    return 0;
}

/* Bytes actually taken off (at most what was recorded). */
static uint32_t holder_sub(struct log_segment *t, uint64_t holder_id, uint32_t bytes)
{
    uint32_t p = holder_pos(t, holder_id);
    if (p >= t->nholders || t->holders[p].holder_id != holder_id)
        return 0;
    struct log_tomb_holder *h = &t->holders[p];
    if (bytes > h->bytes)
        bytes = h->bytes;
    h->bytes -= bytes;
    if (h->bytes == 0) {
        memmove(h, h + 1, (t->nholders - p - 1) * sizeof *h);
        t->nholders--;
    }
    return bytes;
}

static inline bool seg_counts(const struct log_segment *s)
{
    return s->state == LOG_SEG_HEAD || s->state == LOG_SEG_CLOSED || s->state == LOG_SEG_SIDE;
}

static inline void live_sub_sat(struct log_segment *s, uint32_t bytes)
{
    s->live_bytes = s->live_bytes > bytes ? s->live_bytes - bytes : 0;
}

bool log_tomb_add(mlog *l, log_ref ref, uint64_t target_id, uint32_t bytes)
{
    uint32_t ts = log_slot_of_id(l, target_id);
    if (ts == LOG_NO_SLOT || !seg_counts(&l->segs[ts]))
        return false;               /* its segment is gone: dead already */
    struct log_segment *t = &l->segs[ts], *h = &l->segs[log_ref_slot(ref)];
    if (holder_add(t, h->id, bytes) != 0)
        return false;               /* out of memory: not counted (the cleaner
                                     * still keeps it by the rule) */
    t->named_bytes += bytes;
    h->live_bytes += bytes;
    return true;
}

void log_tomb_sub(mlog *l, log_ref ref, uint64_t target_id, uint32_t bytes)
{
    uint32_t ts = log_slot_of_id(l, target_id);
    if (ts == LOG_NO_SLOT)
        return;
    struct log_segment *t = &l->segs[ts], *h = &l->segs[log_ref_slot(ref)];
    uint32_t got = holder_sub(t, h->id, bytes);
    t->named_bytes -= got;
    live_sub_sat(h, got);
}

void log_tomb_move(mlog *l, log_ref old_ref, log_ref new_ref, uint64_t target_id, uint32_t bytes)
{
    uint32_t ts = log_slot_of_id(l, target_id);
    if (ts == LOG_NO_SLOT || !seg_counts(&l->segs[ts]))
        return;
    struct log_segment *t = &l->segs[ts];
    struct log_segment *o = &l->segs[log_ref_slot(old_ref)], *n = &l->segs[log_ref_slot(new_ref)];
    uint32_t got = holder_sub(t, o->id, bytes);
    if (holder_add(t, n->id, bytes) != 0) {
        t->named_bytes -= got;
        return;
    }
    t->named_bytes += bytes - got;
    n->live_bytes += bytes;
}

/* Segment ts left the log: every counted tombstone naming it is dead. */
static void tomb_kill(mlog *l, uint32_t ts)
{
    struct log_segment *t = &l->segs[ts];
    for (uint32_t i = 0; i < t->nholders; i++) {
        uint32_t hs = log_slot_of_id(l, t->holders[i].holder_id);
        if (hs != LOG_NO_SLOT && hs != ts && seg_counts(&l->segs[hs]))
            live_sub_sat(&l->segs[hs], t->holders[i].bytes);
        l->tomb_dead_bytes += t->holders[i].bytes;
    }
    free(t->holders);
    t->holders = NULL;
    t->nholders = t->capholders = 0;
    t->named_bytes = 0;
}

/*
 * --prefault: fault in the budget's worth of slots at the front of the arena
 * (the free list hands those out first) before the master serves.  A master
 * otherwise pays a page fault and the zeroing of every page on its first
 * write there -- about a fifth of a recovery master's CPU while it replays a
 * crashed master's data at hundreds of MB/s.  The slots count as free slots
 * with resident pages (touched, resident_free), so the usual accounting keeps
 * resident memory within the budget.  Best effort: without the memory the
 * pages fault in on demand as before.
 */
static void log_prefault(mlog *l)
{
    uint32_t n = (uint32_t)(l->budget >> l->seg_shift);
    uint64_t t0 = clock_mono_ms();
    if (mem_prefault(l->arena, (size_t)n << l->seg_shift) != 0) {
        CRAM_WARN("could not fault in the log's %.1f MiB at start: %s (pages fault in on demand)",
                  (double)l->budget / (1 << 20), strerror(errno));
        /* a partial populate left pages that no slot's `touched` counts:
         * give them back, so resident memory stays what the log accounts */
        (void)madvise(l->arena, (size_t)n << l->seg_shift, MADV_DONTNEED);
        return;
    }
    for (uint32_t i = 0; i < n; i++)
        l->segs[i].touched = l->segment_bytes;
    l->resident_free = (uint64_t)n << l->seg_shift;
    CRAM_INFO("log: %.1f MiB faulted in at start in %llu ms",
              (double)l->budget / (1 << 20), (unsigned long long)(clock_mono_ms() - t0));
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
    if (n < 2 || n >= LOG_MAX_SEGMENTS / 2) {
        snprintf(err, errlen, "memory %llu bytes gives %llu segments of %u bytes: need 2..%u",
                 (unsigned long long)cfg->memory_bytes, (unsigned long long)n, sb,
                 LOG_MAX_SEGMENTS / 2 - 1);
        return NULL;
    }
    /* The digest of a new head lists every segment; keep it to a quarter of
     * a segment so objects still fit next to it. */
    if (seg_entry_size(sizeof(struct seg_log_digest) + 8 * n) > sb / 4) {
        snprintf(err, errlen, "%llu segments of %u bytes: too many for the log digest; "
                 "use larger segments", (unsigned long long)n, sb);
        return NULL;
    }
    /* Slots: up to twice the budget (compacted segments are smaller than a
     * slot), as many as the digest can list. */
    uint64_t slots = 2 * n;
    while (slots > n && seg_entry_size(sizeof(struct seg_log_digest) + 8 * slots) > sb / 4)
        slots--;

    mlog *l = calloc(1, sizeof *l);
    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->segs = calloc(slots, sizeof *l->segs);
    l->digest_scratch = calloc(slots, sizeof *l->digest_scratch);
    l->trim_scratch = calloc(slots, sizeof *l->trim_scratch);
    uint32_t icap = 1024;
    while (icap < 2 * slots)
        icap *= 2;
    l->id_index = malloc(icap * sizeof *l->id_index);
    l->id_mask = icap - 1;
    if (l->segs == NULL || l->digest_scratch == NULL || l->id_index == NULL ||
        l->trim_scratch == NULL) {
        snprintf(err, errlen, "out of memory");
        goto free_meta;
    }

    /* address space only: pages are touched (and counted) as segments fill */
    size_t arena = (size_t)slots * sb;
    l->map_bytes = arena + LOG_ARENA_ALIGN;
    void *m = mmap(NULL, l->map_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "mmap of %zu bytes for the log: %s", l->map_bytes, strerror(errno));
        goto free_meta;
    }
    l->map_base = m;
    l->arena = (uint8_t *)(((uintptr_t)m + LOG_ARENA_ALIGN - 1) & ~(uintptr_t)(LOG_ARENA_ALIGN - 1));
    if (cfg->hugepages && madvise(l->arena, arena, MADV_HUGEPAGE) != 0)
        CRAM_WARN("madvise(MADV_HUGEPAGE) on the log arena: %s (continuing with small pages)",
                  strerror(errno));

    memset(l->id_index, 0xff, icap * sizeof *l->id_index);
    l->segment_bytes = sb;
    l->seg_shift = (uint32_t)__builtin_ctz(sb);
    l->nsegs = (uint32_t)slots;
    l->seglet_bytes = sb / 64 > 4096 ? sb / 64 : 4096;
    l->budget = n * sb;
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
    if (cfg->prefault)
        log_prefault(l);
    return l;

free_meta:
    free(l->trim_scratch);
    free(l->id_index);
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
    for (uint32_t i = 0; i < l->nsegs; i++)
        free(l->segs[i].holders);
    free(l->trim_scratch);
    free(l->id_index);
    free(l->digest_scratch);
    free(l->segs);
    free(l);
}

uint32_t log_max_entry_body(const mlog *l)
{
    return l->segment_bytes - head_overhead(l) - (uint32_t)sizeof(struct seg_entry_hdr);
}

uint32_t log_head_start_bytes(const mlog *l)
{
    return log_seglet_round(l, head_overhead(l));
}

/* Free memory for writers once the cleaner has `extra` more bytes open. */
static uint64_t writer_free(const mlog *l, uint64_t extra)
{
    /* the cleaner's open slots come out of the reserve first: while it
     * compacts, writers keep the free memory they had (all but the start of
     * the head that lists a combined pass's survivors) */
    uint64_t keep = l->reserve, hs = log_head_start_bytes(l);
    uint64_t lent = l->cleaner_charged + extra, charged = l->charged + extra;
    if (keep > hs)
        keep -= lent < keep - hs ? lent : keep - hs;
    uint64_t lim = l->budget > keep ? l->budget - keep : 0;
    return charged < lim ? lim - charged : 0;
}

uint64_t log_free_bytes(const mlog *l, bool cleaner)
{
    if (!cleaner)
        return writer_free(l, 0);
    return l->charged < l->budget ? l->budget - l->charged : 0;
}

uint64_t log_free_bytes_after(const mlog *l, uint64_t cleaner_bytes)
{
    return writer_free(l, cleaner_bytes);
}

/* Free slots' resident pages go back to the OS until they fit next to the
 * budget in use (most recently freed -- at the front of the list -- kept). */
static void trim_resident(mlog *l)
{
    if (l->charged + l->resident_free <= l->budget)
        return;
    /* the slots at the back were freed longest ago: drop those first */
    uint32_t cnt = 0;
    for (uint32_t i = l->free_head; i != LOG_NO_SLOT; i = l->segs[i].next_free)
        l->trim_scratch[cnt++] = i;
    while (cnt > 0 && l->charged + l->resident_free > l->budget) {
        struct log_segment *s = &l->segs[l->trim_scratch[--cnt]];
        if (s->touched == 0)
            continue;
        (void)madvise(l->arena + ((size_t)l->trim_scratch[cnt] << l->seg_shift), s->touched,
                      MADV_DONTNEED);
        l->resident_free -= s->touched;
        s->touched = 0;
    }
}

/* Take a free slot charged `charge` bytes of the budget (the reserve only for
 * the cleaner); its writer gets capacity `charge`.  Nothing is written. */
static uint32_t slot_take(mlog *l, uint8_t state, uint32_t charge, uint32_t capacity, bool cleaner)
{
    uint32_t slot = l->free_head;
    if (slot == LOG_NO_SLOT || log_free_bytes(l, cleaner) < charge)
        return LOG_NO_SLOT;
    struct log_segment *s = &l->segs[slot];
    l->free_head = s->next_free;
    l->nfree--;
    s->next_free = LOG_NO_SLOT;
    /* pages it kept from its last use are reused (no faults, no zeroing);
     * those beyond what it may now hold go back */
    l->resident_free -= s->touched;
    if (s->touched > capacity) {
        uint32_t keep = (capacity + LOG_PAGE - 1) & ~(LOG_PAGE - 1);
        if (keep < s->touched)
            (void)madvise(l->arena + ((size_t)slot << l->seg_shift) + keep, s->touched - keep,
                          MADV_DONTNEED);
        s->touched = keep < s->touched ? keep : s->touched;
    }
    s->state = state;
    s->id = 0;
    s->epoch = l->epoch;
    s->live_bytes = 0;
    s->created_ms = clock_mono_ms();
    s->charged = charge;
    l->charged += charge;
    s->from_reserve = cleaner && state == LOG_SEG_SIDE;
    if (s->from_reserve)
        l->cleaner_charged += charge;
    trim_resident(l);
    seg_writer_init(&s->w, l->arena + ((size_t)slot << l->seg_shift), capacity);
    if (l->mem_hook != NULL)
        l->mem_hook(l->mem_arg, slot, s->w.base, capacity, true);
    return slot;
}

/* A cleaner's SIDE slot stops being one (committed or given back). */
static void side_done(mlog *l, struct log_segment *s)
{
    if (s->from_reserve) {
        l->cleaner_charged -= s->charged;
        s->from_reserve = false;
    }
}

/* A segment stopped growing: its charge shrinks to its fill level. */
static void charge_shrink(mlog *l, struct log_segment *s)
{
    uint32_t c = log_seglet_round(l, s->w.used);
    if (c < s->charged) {
        l->charged -= s->charged - c;
        s->charged = c;
    }
}

/* Take a free segment and write its segment header.  A head is charged
 * `charge` bytes now and grows seglet by seglet as it fills (log_append);
 * other segments are charged whole. */
static uint32_t seg_open(mlog *l, uint8_t state, uint32_t charge, bool cleaner)
{
    uint32_t slot = slot_take(l, state, charge, l->segment_bytes, cleaner);
    if (slot == LOG_NO_SLOT)
        return LOG_NO_SLOT;
    struct log_segment *s = &l->segs[slot];
    s->id = l->next_segment_id++;
    id_insert(l, slot);
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
    side_done(l, s);
    l->charged -= s->charged;
    s->charged = 0;
    if (l->mem_hook != NULL)
        l->mem_hook(l->mem_arg, slot, s->w.base, s->w.capacity, false);
    /* A free slot holds no budget.  Its pages stay resident for the next
     * use of the slot (page faults and zeroing are a large part of a busy
     * cleaner's cost) only while the budget in use plus such pages stays
     * within the memory; otherwise they go back to the OS. */
    uint32_t t = s->touched > s->w.used ? s->touched : s->w.used;
    t = (t + LOG_PAGE - 1) & ~(LOG_PAGE - 1);
    if (t > 0 && l->charged + l->resident_free + t > l->budget) {
        (void)madvise(l->arena + ((size_t)slot << l->seg_shift), l->segment_bytes, MADV_DONTNEED);
        t = 0;
    }
    s->touched = t;
    l->resident_free += t;
    if (s->id != 0)
        id_remove(l, s->id, slot);
    free(s->holders);
    s->holders = NULL;
    s->nholders = s->capholders = 0;
    s->named_bytes = 0;
    s->state = LOG_SEG_FREE;
    s->id = 0;
    s->w.used = 0;
    s->live_bytes = 0;
    s->next_free = l->free_head;
    l->free_head = slot;
    l->nfree++;
}

static int roll(mlog *l, bool cleaner)
{
    uint32_t slot = seg_open(l, LOG_SEG_HEAD, log_seglet_round(l, head_overhead(l)), cleaner);
    if (slot == LOG_NO_SLOT)
        return -1;
    struct log_segment *s = &l->segs[slot];
    uint32_t old = l->head;
    if (old != LOG_NO_SLOT) {
        l->segs[old].state = LOG_SEG_CLOSED;
        charge_shrink(l, &l->segs[old]);
    }
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

int log_roll(mlog *l)
{
    return roll(l, false);
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

/* The head grows to `want` bytes of charge (the caller checked the room). */
static void charge_head(mlog *l, struct log_segment *s, uint32_t want)
{
    l->charged += want - s->charged;
    s->charged = want;
    if (l->resident_free > 0)
        trim_resident(l);
    if (l->low_mark != 0 && log_free_bytes(l, false) < l->low_mark) {
        l->low_mark = 0;        /* once; the cleaner sets it again */
        if (l->hook != NULL)
            l->hook(l->hook_arg, LOG_EV_LOW_MEMORY, l->head, LOG_NO_SLOT);
    }
}

int log_append(mlog *l, uint8_t type, const struct iovec *parts, int n, log_ref *ref)
{
    uint64_t body = 0;
    for (int i = 0; i < n; i++)
        body += parts[i].iov_len;
    if (body > log_max_entry_body(l))
        return -1;
    uint32_t esize = (uint32_t)seg_entry_size(body);
    if (l->head == LOG_NO_SLOT || esize > l->segment_bytes - l->segs[l->head].w.used) {
        /* the new head must take the entry too, or nothing changes */
        if (log_free_bytes(l, false) < log_seglet_round(l, head_overhead(l) + esize) ||
            log_roll(l) != 0)
            return -1;
    }
    struct log_segment *s = &l->segs[l->head];
    /* the head is charged seglet by seglet as it fills */
    uint32_t want = log_seglet_round(l, s->w.used + esize);
    if (want > s->charged) {
        if (log_free_bytes(l, false) < want - s->charged)
            return -1;
        charge_head(l, s, want);
    }
    uint32_t before = s->w.used;
    int64_t off = seg_append(&s->w, type, parts, n);
    CRAM_ASSERT(off > 0);
    l->bytes_used += s->w.used - before;
    *ref = log_ref_make(l->head, (uint32_t)off);
    return 0;
}

int log_append_group(mlog *l, const struct log_group_entry *ents, int n, log_ref *refs)
{
    /* all entries must fit one fresh head together, and the head that takes
     * them is made ready (rolled, charged) before anything is appended */
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        uint64_t body = 0;
        for (int k = 0; k < ents[i].n; k++)
            body += ents[i].parts[k].iov_len;
        total += seg_entry_size(body);
    }
    if (n <= 0 || total > seg_entry_size(log_max_entry_body(l)))
        return -1;
    uint32_t esize = (uint32_t)total;
    if (l->head == LOG_NO_SLOT || esize > l->segment_bytes - l->segs[l->head].w.used) {
        if (log_free_bytes(l, false) < log_seglet_round(l, head_overhead(l) + esize) ||
            log_roll(l) != 0)
            return -1;
    }
    struct log_segment *s = &l->segs[l->head];
    uint32_t want = log_seglet_round(l, s->w.used + esize);
    if (want > s->charged) {
        if (log_free_bytes(l, false) < want - s->charged)
            return -1;
        charge_head(l, s, want);
    }
    uint32_t before = s->w.used;
    for (int i = 0; i < n; i++) {
        int64_t off = seg_append(&s->w, ents[i].type, ents[i].parts, ents[i].n);
        CRAM_ASSERT(off > 0);
        refs[i] = log_ref_make(l->head, (uint32_t)off);
    }
    l->bytes_used += s->w.used - before;
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
    return seg_open(l, LOG_SEG_SIDE, l->segment_bytes, false);
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

int log_side_copy(mlog *l, uint32_t slot, const struct seg_entry_hdr *e, log_ref *ref)
{
    CRAM_ASSERT(slot < l->nsegs && l->segs[slot].state == LOG_SEG_SIDE);
    struct seg_writer *w = &l->segs[slot].w;
    uint64_t size = seg_entry_size(e->length);
    if (size > (uint64_t)w->capacity - w->used)
        return -1;
    /* the entry's crc covers only its own header and body: it holds anywhere */
    uint32_t off = w->used;
    memcpy(w->base + off, e, size);
    w->cert_crc = crc32c(w->cert_crc, e, sizeof *e);
    w->used = off + (uint32_t)size;
    w->entries++;
    *ref = log_ref_make(slot, off);
    return 0;
}

int log_side_commit(mlog *l, const uint32_t *slots, uint32_t n)
{
    /* room for the new head once the side segments shrink to their fill */
    uint64_t shrink = 0;
    for (uint32_t i = 0; i < n; i++)
        shrink += l->segs[slots[i]].charged - log_seglet_round(l, l->segs[slots[i]].w.used);
    if (l->free_head == LOG_NO_SLOT || log_free_bytes(l, false) + shrink < l->segment_bytes)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        CRAM_ASSERT(slots[i] < l->nsegs && l->segs[slots[i]].state == LOG_SEG_SIDE);
        side_done(l, &l->segs[slots[i]]);
        l->segs[slots[i]].state = LOG_SEG_CLOSED;
        charge_shrink(l, &l->segs[slots[i]]);
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
    CRAM_ASSERT(slot < l->nsegs && (l->segs[slot].state == LOG_SEG_CLOSED ||
                                    l->segs[slot].state == LOG_SEG_CLEANED));
    seg_release(l, slot);
}

/* ---- cleaner ------------------------------------------------------------ */

uint32_t log_cleaner_open(mlog *l)
{
    return seg_open(l, LOG_SEG_SIDE, l->segment_bytes, true);
}

int log_cleaner_commit(mlog *l, const uint32_t *survivors, uint32_t ns,
                       const uint32_t *cleaned, uint32_t nc, bool new_head)
{
    uint32_t hdr = (uint32_t)seg_entry_size(sizeof(struct seg_header_body));
    uint64_t shrink = 0;
    for (uint32_t i = 0; i < ns; i++) {
        const struct log_segment *s = &l->segs[survivors[i]];
        CRAM_ASSERT(survivors[i] < l->nsegs && s->state == LOG_SEG_SIDE);
        shrink += s->charged - (s->w.used <= hdr ? 0 : log_seglet_round(l, s->w.used));
    }
    if (new_head && (l->free_head == LOG_NO_SLOT ||
                     log_free_bytes(l, true) + shrink < log_seglet_round(l, head_overhead(l))))
        return -1;
    for (uint32_t i = 0; i < ns; i++) {
        struct log_segment *s = &l->segs[survivors[i]];
        if (s->w.used <= hdr) {         /* nothing was copied into it */
            seg_release(l, survivors[i]);
            continue;
        }
        side_done(l, s);
        s->state = LOG_SEG_CLOSED;
        charge_shrink(l, s);
        l->bytes_used += s->w.used;
        if (l->hook != NULL)
            l->hook(l->hook_arg, LOG_EV_JOINED, survivors[i], LOG_NO_SLOT);
    }
    for (uint32_t i = 0; i < nc; i++) {
        CRAM_ASSERT(cleaned[i] < l->nsegs && l->segs[cleaned[i]].state == LOG_SEG_CLOSED);
        l->segs[cleaned[i]].state = LOG_SEG_CLEANED;
    }
    /* out of the log: the tombstones naming them are dead now */
    for (uint32_t i = 0; i < nc; i++)
        tomb_kill(l, cleaned[i]);
    if (new_head) {
        int rc = roll(l, true);
        CRAM_ASSERT(rc == 0);    /* room was checked above */
    }
    return 0;
}

int log_cleaner_roll(mlog *l)
{
    return roll(l, true);
}

uint32_t log_compact_open(mlog *l, uint32_t src, uint32_t bytes)
{
    CRAM_ASSERT(src < l->nsegs && l->segs[src].state == LOG_SEG_CLOSED);
    uint32_t c = log_seglet_round(l, bytes);
    if (c > l->segment_bytes)
        c = l->segment_bytes;
    return slot_take(l, LOG_SEG_SIDE, c, c, true);
}

void log_compact_commit(mlog *l, uint32_t src, uint32_t dst, uint32_t live_bytes)
{
    struct log_segment *s = &l->segs[src], *d = &l->segs[dst];
    CRAM_ASSERT(s->state == LOG_SEG_CLOSED && d->state == LOG_SEG_SIDE);
    d->id = s->id;
    /* the id (and the tombstones naming it) now belong to dst */
    uint32_t pos = id_pos(l, s->id, src);
    if (pos != UINT32_MAX)
        l->id_index[pos] = dst;
    else
        id_insert(l, dst);
    d->holders = s->holders;
    d->nholders = s->nholders;
    d->capholders = s->capholders;
    d->named_bytes = s->named_bytes;
    s->holders = NULL;
    s->nholders = s->capholders = 0;
    s->named_bytes = 0;
    d->epoch = s->epoch;
    d->created_ms = s->created_ms;
    d->live_bytes = live_bytes;
    side_done(l, d);
    d->state = LOG_SEG_CLOSED;
    charge_shrink(l, d);
    l->bytes_used += d->w.used;
    s->state = LOG_SEG_CLEANED;
}

struct seg_certificate log_segment_certificate(const mlog *l, uint32_t slot)
{
    return seg_writer_certificate(&l->segs[slot].w);
}

void log_get_stats(const mlog *l, struct log_stats *st)
{
    st->memory_bytes = l->budget;
    st->charged_bytes = l->charged;
    st->bytes_used = l->bytes_used;
    st->segment_bytes = l->segment_bytes;
    st->segments_total = (uint32_t)(l->budget / l->segment_bytes);
    /* as writers see it: whole segments they could still open (the
     * cleaner's reserve counts as in use) */
    st->segments_free = (uint32_t)(log_free_bytes(l, false) / l->segment_bytes);
    st->segments_in_use = st->segments_total - st->segments_free;
    st->live_bytes = 0;
    st->tomb_bytes = 0;
    for (uint32_t i = 0; i < l->nsegs; i++)
        if (l->segs[i].state == LOG_SEG_HEAD || l->segs[i].state == LOG_SEG_CLOSED) {
            st->live_bytes += l->segs[i].live_bytes;
            st->tomb_bytes += l->segs[i].named_bytes;
        }
    st->tomb_dead_bytes = l->tomb_dead_bytes;
}
