/*
 * log.h -- the master's in-memory log: one DRAM arena cut into segments.
 *
 * The arena is one anonymous mmap (2 MiB aligned, optionally
 * madvise(MADV_HUGEPAGE)) divided into equal power-of-two segments, each
 * addressed by its slot number.  Segments are FREE, the HEAD (the one open
 * segment of the log), CLOSED (full, part of the log, immutable) or SIDE
 * (being filled outside the log, e.g. by recovery replay, and joined to the
 * log later with log_side_commit).
 *
 * Every segment starts with a SEG_ENTRY_SEGHDR entry {master id, segment id,
 * epoch}.  Every new head additionally starts with a SEG_ENTRY_LOG_DIGEST
 * (the ids of every segment in the log, itself included) and a
 * SEG_ENTRY_SAFE_VERSION entry, so a recovery that finds the newest head can
 * prove it has the whole log and knows a safe version floor.
 *
 * Log references: a log_ref names an entry as (segment slot, offset) packed
 * into LOG_REF_BITS bits; 0 is never a valid reference.  Entries are only
 * ever reached through log_entry_get(), so segments can later be made of
 * seglets without touching the callers.
 *
 * Thread rule: only the dispatch thread calls the mutating functions
 * (log_append, log_roll, log_side_open/commit/abort, log_segment_free,
 * log_safe_version_raise, log_head_set_epoch -- which rewrites the head's
 * first entry, so no other thread may read the head) and reads the head's
 * fill level.  The event hook runs on the dispatch thread too.  A side segment
 * opened by the dispatch thread may be handed to one worker (recovery
 * replay), which alone calls log_side_append / log_live_add on it until it
 * hands it back for log_side_commit or log_side_abort; log_side_append
 * touches nothing but that segment.  Other threads
 * (cleaner, replay, replication) may read CLOSED segments and the part of a
 * segment below a length handed to them by the dispatch thread; those bytes
 * never change while the segment is not freed.  Segments are freed only by
 * the dispatch thread (the cleaner will hand back lists; epochs protect
 * in-flight readers -- see DESIGN.md §7).
 */
#ifndef CRAM_MASTER_LOG_H
#define CRAM_MASTER_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include "common/segment.h"

typedef uint64_t log_ref;

#define LOG_REF_NULL        ((log_ref)0)
#define LOG_REF_OFFSET_BITS 28u                      /* segments up to 256 MiB */
#define LOG_REF_SLOT_BITS   20u                      /* up to 1M segments */
#define LOG_REF_BITS        (LOG_REF_OFFSET_BITS + LOG_REF_SLOT_BITS)   /* 48 */
#define LOG_MAX_SEGMENTS    (1u << LOG_REF_SLOT_BITS)
#define LOG_MIN_SEGMENT     (64u * 1024)
#define LOG_MAX_SEGMENT     (1u << LOG_REF_OFFSET_BITS)
#define LOG_NO_SLOT         UINT32_MAX

static inline log_ref log_ref_make(uint32_t slot, uint32_t offset)
{
    return ((log_ref)slot << LOG_REF_OFFSET_BITS) | offset;
}
static inline uint32_t log_ref_slot(log_ref r) { return (uint32_t)(r >> LOG_REF_OFFSET_BITS); }
static inline uint32_t log_ref_offset(log_ref r) { return (uint32_t)(r & ((1u << LOG_REF_OFFSET_BITS) - 1)); }

/* LOG_SEG_CLEANED: the cleaner took the segment out of the log (its live
 * entries were copied elsewhere, it is no longer in any new digest); its memory
 * stays untouched until log_segment_free, which the cleaner calls once no
 * in-flight reader can still point into it (epochs, logcleaner/lc_epoch.h). */
enum log_seg_state { LOG_SEG_FREE = 0, LOG_SEG_HEAD, LOG_SEG_CLOSED, LOG_SEG_SIDE,
                     LOG_SEG_CLEANED };

struct log_config {
    uint64_t memory_bytes;   /* rounded down to whole segments; >= 2 segments */
    uint32_t segment_bytes;  /* power of two, LOG_MIN_SEGMENT..LOG_MAX_SEGMENT */
    int      hugepages;      /* madvise(MADV_HUGEPAGE) on the arena */
    int      prefault;       /* fault in (zero) the memory_bytes the log fills
                              * first now, not on the first write to each page */
    uint64_t master_id;      /* written into every segment header */
};

/* Per-slot metadata (kept outside the arena). */
struct log_segment {
    struct seg_writer w;     /* fill level, running certificate */
    uint64_t id;             /* segment id (0 while FREE) */
    uint64_t epoch;
    uint32_t live_bytes;     /* bytes of entries still needed (objects in the
                              * hash table, tombstones); kept by the object
                              * manager through log_live_add/sub, read by the
                              * cleaner's segment selection */
    uint64_t created_ms;     /* monotonic ms the segment's data was written
                              * (survivors and compacted segments: of their
                              * oldest source): the cleaner's age */
    uint32_t next_free;      /* free list link (slot) */
    uint32_t charged;        /* bytes of the memory budget this slot holds:
                              * HEAD / SIDE the capacity, CLOSED / CLEANED
                              * the fill level rounded up to seglets */
    uint8_t  state;          /* enum log_seg_state */
    bool     from_reserve;   /* SIDE slot the cleaner opened: its charge is in
                              * mlog.cleaner_charged */
    uint32_t touched;        /* FREE: bytes from the slot's start whose pages
                              * stayed resident from its last use */
    /* Tombstones naming this segment (by id; they move with the id when the
     * segment is compacted): `named_bytes` is the sum of the counted ones,
     * `holders` says which segments (by id) hold how many of those bytes,
     * so that when this segment leaves the log their holders' live_bytes
     * drop by exactly that much (log_tomb_add, log_cleaner_commit). */
    uint64_t named_bytes;
    struct log_tomb_holder *holders;     /* sorted by holder id */
    uint32_t nholders, capholders;
};

/* Bytes of counted tombstones naming one segment held by segment holder_id. */
struct log_tomb_holder {
    uint64_t holder_id;
    uint32_t bytes;
    uint32_t reserved;
};

/*
 * Events reported to the one hook (the replica manager), on the dispatch
 * thread, from inside the mutating call, after the log is consistent again.
 * The hook must not call mutating log functions.
 *   LOG_EV_HEAD_OPENED  slot became the head; old_slot is the previous head
 *                       (now CLOSED) or LOG_NO_SLOT
 *   LOG_EV_JOINED       side segment `slot` became CLOSED (log_side_commit);
 *                       reported before the head that lists it is opened
 *   LOG_EV_LOW_MEMORY   an append took the free memory (reserve excluded)
 *                       below the mark set with log_set_low_mark; once per
 *                       mark (slot = the head)
 */
enum log_event { LOG_EV_HEAD_OPENED = 1, LOG_EV_JOINED = 2, LOG_EV_LOW_MEMORY = 3 };
typedef void (*log_event_fn)(void *arg, int ev, uint32_t slot, uint32_t old_slot);

/*
 * Memory hook (one; NULL to remove), for registering log memory with an RDMA
 * device (master/log_rdma.c): in_use = true when slot `slot` comes into use
 * ([base, base+len) is its writer's whole capacity, pages not yet touched),
 * false right before a freed slot's pages go back to the OS.  Runs on the
 * dispatch thread inside the mutating call; must not call log functions.
 */
typedef void (*log_mem_fn)(void *arg, uint32_t slot, uint8_t *base, size_t len, bool in_use);

/* Fields are private to log.c; they are here so log_entry_get inlines. */
typedef struct mlog {
    uint8_t *arena;
    size_t   map_bytes;      /* whole mapping, for munmap */
    uint8_t *map_base;
    uint32_t seg_shift;      /* log2(segment_bytes) */
    uint32_t segment_bytes;
    uint32_t nsegs;          /* slots (virtual: more than the budget holds) */
    uint32_t seglet_bytes;   /* accounting / give-back granule */
    uint64_t budget;         /* memory_bytes rounded down to whole segments */
    uint64_t charged;        /* sum of the slots' `charged` (<= budget) */
    uint64_t reserve;        /* budget kept for the cleaner (log_set_reserve) */
    uint64_t cleaner_charged; /* charge of the SIDE slots the cleaner has open */
    uint64_t low_mark;       /* LOG_EV_LOW_MEMORY below this free memory; 0 = off */
    uint32_t head;           /* slot of the head, LOG_NO_SLOT before the first append */
    uint32_t free_head;      /* free list */
    uint32_t nfree;
    uint64_t master_id;
    uint64_t next_segment_id;
    uint64_t safe_version;   /* master-wide; persisted at every new head */
    uint64_t bytes_used;     /* sum of fill levels of non-free segments */
    uint64_t *digest_scratch;
    struct log_segment *segs;
    uint64_t epoch;          /* epoch given to segments opened from now on */
    log_event_fn hook;       /* replica manager: heads opened, segments closed */
    void    *hook_arg;
    log_mem_fn mem_hook;     /* slots taken / given back (log_set_mem_hook) */
    void    *mem_arg;
    /* segment id -> slot (open addressing, linear probing; entries are slot
     * numbers, UINT32_MAX empty): every slot with an id (HEAD, CLOSED, SIDE
     * with an id, CLEANED until a compaction target takes the id) */
    uint32_t *id_index;
    uint32_t id_mask;
    uint64_t tomb_dead_bytes;  /* counted tombstone bytes that died when the
                                * segment they name left the log (stats) */
    uint64_t resident_free;  /* pages free slots kept resident (see seg_release) */
    uint32_t *trim_scratch;
} mlog;

/*
 * Memory: the arena is address space for more slots than the budget
 * (memory_bytes) can hold, up to twice as many; what counts -- and what is
 * resident -- is each slot's `charged` bytes: a head or side segment holds a
 * whole segment, a closed one its fill level rounded up to seglets
 * (segment_bytes / 64, >= 4 KiB).  A freed slot's pages go back to the OS
 * (MADV_DONTNEED), unless they fit next to the budget in use: then they stay
 * for the slot's next use (no page faults; given back as soon as the budget
 * in use grows into them).  So a segment compacted into a new, smaller allocation
 * (log_compact_open/commit) really gives memory back, and the sum of the
 * charges never exceeds memory_bytes.  `reserve` bytes of the budget are
 * usable only by the cleaner (survivor and compaction targets, and the head
 * that lists them), so cleaning can always make progress.  The slots the
 * cleaner has open are charged to the reserve first (writers give up only
 * what the cleaner uses beyond it), except for the start of the head that
 * lists a combined pass's survivors.
 *
 * Returns NULL with a message in err on bad config or out of memory. */
mlog *log_create(const struct log_config *cfg, char *err, size_t errlen);
void  log_destroy(mlog *l);

/* The one accessor: the entry header a reference points to (its body
 * follows the header).  ref must come from this log and its segment must
 * not have been freed. */
static inline const struct seg_entry_hdr *log_entry_get(const mlog *l, log_ref ref)
{
    return (const struct seg_entry_hdr *)(l->arena +
        ((size_t)log_ref_slot(ref) << l->seg_shift) + log_ref_offset(ref));
}
static inline const uint8_t *log_entry_body(const struct seg_entry_hdr *h)
{
    return (const uint8_t *)h + sizeof *h;
}

/* Largest body a single entry may have (it must fit into a fresh head next
 * to the segment header, the log digest and the safe version). */
uint32_t log_max_entry_body(const mlog *l);

/* Append one entry (body = parts concatenated) to the head, rolling to a new
 * head when it does not fit.  0 and *ref on success; -1 when there is no
 * room (no free segment, or the entry is larger than log_max_entry_body):
 * then the log is unchanged. */
int log_append(mlog *l, uint8_t type, const struct iovec *parts, int n, log_ref *ref);

/* Append several entries together (e.g. an object and the tombstone of the
 * version it replaces): all land in the same head segment, back to back in
 * the order given -- rolling first if they do not all fit the current head
 * -- so they reach backups in the same replication, or none is appended
 * (-1: no room, or together larger than a fresh head; the log is unchanged).
 * refs[i] is the reference of ents[i]. */
struct log_group_entry {
    uint8_t type;
    const struct iovec *parts;
    int n;
};
int log_append_group(mlog *l, const struct log_group_entry *ents, int n, log_ref *refs);

/* Close the head (if any) and open a new one.  0, or -1 if no segment is free. */
int log_roll(mlog *l);

/* Give the head a new epoch in place (raising the log's epoch to it): the
 * epoch in its segment header entry is rewritten, that entry's crc and the
 * head's running certificate recomputed.  For the replica manager, when a
 * replica of the head is lost and the head is re-sent to all its backups
 * under a higher epoch.  Nothing else in the segment changes. */
void log_head_set_epoch(mlog *l, uint64_t epoch);

/* Segments opened from now on carry epoch e (in their header and metadata);
 * never lowered. */
static inline void log_raise_epoch(mlog *l, uint64_t e) { if (e > l->epoch) l->epoch = e; }
static inline uint64_t log_epoch(const mlog *l) { return l->epoch; }

/* Register the event hook (one; NULL to remove). */
static inline void log_set_hook(mlog *l, log_event_fn fn, void *arg) { l->hook = fn; l->hook_arg = arg; }

/* Report LOG_EV_LOW_MEMORY once, when an append leaves less than `bytes` of
 * free memory (log_free_bytes(l, false)); 0 turns it off.  The cleaner sets
 * it when it finds nothing to do yet, so it starts as soon as memory runs
 * short rather than at the next head or the first write refused. */
static inline void log_set_low_mark(mlog *l, uint64_t bytes) { l->low_mark = bytes; }

/* Register the memory hook (above); slots already in use are not reported. */
static inline void log_set_mem_hook(mlog *l, log_mem_fn fn, void *arg) { l->mem_hook = fn; l->mem_arg = arg; }

/* Master id written into the headers of segments opened from now on (the
 * server learns its id when it enlists, before it takes any writes). */
static inline void log_set_master_id(mlog *l, uint64_t id) { l->master_id = id; }

/* Id of the segment an entry lives in (for tombstones). */
uint64_t log_segment_id_of(const mlog *l, log_ref ref);

/* Liveness accounting of the entry at ref (its whole size, header included). */
static inline void log_live_add(mlog *l, log_ref ref, uint32_t bytes)
{
    l->segs[log_ref_slot(ref)].live_bytes += bytes;
}
static inline void log_live_sub(mlog *l, log_ref ref, uint32_t bytes)
{
    l->segs[log_ref_slot(ref)].live_bytes -= bytes;
}

/* Slot of the segment with this id (in the log, side, or cleaned but not yet
 * freed), or LOG_NO_SLOT. */
uint32_t log_slot_of_id(const mlog *l, uint64_t id);

/*
 * Tombstone accounting.  A tombstone is live while the segment it names
 * (seg_tombstone.segment_id) is in the log; its bytes count in its holder's
 * live_bytes until then.  These keep that exact, so the cleaner's selection
 * sees tombstones die:
 *   log_tomb_add    the tombstone entry at ref (bytes, header included)
 *                   names segment target_id: live_bytes of its holder grow
 *                   and the target records the holder.  false (nothing
 *                   counted) if no segment of this log has that id.
 *   log_tomb_sub    it stopped counting while its target stays (replay);
 *   log_tomb_move   the cleaner copied it from old_ref to new_ref (live bytes
 *                   of new_ref's segment grow; old_ref's are not touched:
 *                   its segment is leaving the log).
 * When a segment leaves the log (log_cleaner_commit) every counted tombstone
 * naming it dies: its holders' live_bytes drop by the recorded bytes.
 */
bool log_tomb_add(mlog *l, log_ref ref, uint64_t target_id, uint32_t bytes);
void log_tomb_sub(mlog *l, log_ref ref, uint64_t target_id, uint32_t bytes);
void log_tomb_move(mlog *l, log_ref old_ref, log_ref new_ref, uint64_t target_id, uint32_t bytes);

/* Master-wide safe version: raised (never lowered) by the object manager;
 * written into every new head. */
static inline uint64_t log_safe_version(const mlog *l) { return l->safe_version; }
void log_safe_version_raise(mlog *l, uint64_t v);

/* ---- side segments (recovery replay) ---------------------------------- */

/* Take a free segment outside the log; it gets a segment header.  Returns its
 * slot, or LOG_NO_SLOT if none is free. */
uint32_t log_side_open(mlog *l);
/* Append to a side segment.  0/-1 as log_append (no rolling: a full side
 * segment stays full; open another). */
int log_side_append(mlog *l, uint32_t slot, uint8_t type, const struct iovec *parts, int n,
                    log_ref *ref);
/* Copy a whole entry (header, crc and body as they are: its crc holds
 * anywhere) to the end of a side segment; the cleaner's copy, without
 * hashing the body again.  0/-1 as log_side_append. */
int log_side_copy(mlog *l, uint32_t slot, const struct seg_entry_hdr *e, log_ref *ref);
/* Join side segments to the log: they become CLOSED and a new head is opened
 * whose digest includes them.  0, or -1 (nothing changes) if no segment is
 * free for the new head. */
int log_side_commit(mlog *l, const uint32_t *slots, uint32_t n);
/* Give a side segment back unused. */
void log_side_abort(mlog *l, uint32_t slot);

/* ---- cleaner (logcleaner/) ---------------------------------------------- */
/* All on the dispatch thread.  The slots opened here are handed to one cleaner
 * worker which alone writes into them (through their seg_writer) until it
 * hands them back; their memory comes from the reserve if need be. */

/* Budget bytes kept for the cleaner (default 0). */
static inline void log_set_reserve(mlog *l, uint64_t bytes) { l->reserve = bytes; }
/* Budget bytes a new head is charged at first (it grows as it fills). */
uint32_t log_head_start_bytes(const mlog *l);
/* Budget bytes still free for ordinary appends / for the cleaner. */
uint64_t log_free_bytes(const mlog *l, bool cleaner);
/* Budget bytes free for ordinary appends once the cleaner has opened slots
 * charged `cleaner_bytes` more (what the reserve cannot lend is theirs). */
uint64_t log_free_bytes_after(const mlog *l, uint64_t cleaner_bytes);
/* Round up to whole seglets. */
static inline uint32_t log_seglet_round(const mlog *l, uint32_t bytes)
{
    return (bytes + l->seglet_bytes - 1) / l->seglet_bytes * l->seglet_bytes;
}
/* A survivor segment (state SIDE) with a fresh id and a segment header.
 * LOG_NO_SLOT if no slot or budget is left. */
uint32_t log_cleaner_open(mlog *l);
/* Combined cleaning: survivors (SIDE, from log_cleaner_open) join the log,
 * cleaned (CLOSED) segments leave it (CLEANED: out of every new digest, memory
 * kept), and -- with new_head -- a new head whose digest says so is opened.
 * Without it the next head (log_roll, log_cleaner_roll, or a full head) says
 * so; until that head is durable the replicas of the cleaned segments must
 * stay, because the durable digest still lists them and not the survivors.
 * Hook events: LOG_EV_JOINED per survivor, then LOG_EV_HEAD_OPENED.  A
 * survivor holding nothing but its header is given back instead.  0, or -1
 * (nothing changed) if with new_head no slot is free for it. */
int log_cleaner_commit(mlog *l, const uint32_t *survivors, uint32_t ns,
                       const uint32_t *cleaned, uint32_t nc, bool new_head);
/* A new head for the cleaner (the reserve may pay for it): its digest takes
 * in what earlier commits without new_head changed.  0, or -1 if no slot or
 * memory is free. */
int log_cleaner_roll(mlog *l);
/* In-memory compaction of CLOSED segment src: a slot (state SIDE, charged
 * `bytes` rounded up to seglets, writer capacity the same) that will take
 * src's identity; nothing is written into it.  LOG_NO_SLOT if none. */
uint32_t log_compact_open(mlog *l, uint32_t src, uint32_t bytes);
/* dst (filled by the worker: src's segment header first, then live entries)
 * takes src's place: id, epoch, live_bytes (the caller's figure), state
 * CLOSED, charge shrunk to its fill level; src becomes CLEANED. */
void log_compact_commit(mlog *l, uint32_t src, uint32_t dst, uint32_t live_bytes);
/* A survivor's age (before log_cleaner_commit). */
static inline void log_segment_set_created(mlog *l, uint32_t slot, uint64_t ms)
{
    l->segs[slot].created_ms = ms;
}

/* ---- segments ---------------------------------------------------------- */

/* Return a CLOSED or CLEANED segment to the free list (cleaner); its pages go
 * back to the OS.  The caller guarantees nothing references it any more. */
void log_segment_free(mlog *l, uint32_t slot);

static inline uint32_t log_head_slot(const mlog *l) { return l->head; }
static inline uint32_t log_nsegments(const mlog *l) { return l->nsegs; }
static inline const struct log_segment *log_segment(const mlog *l, uint32_t slot) { return &l->segs[slot]; }
static inline const uint8_t *log_segment_base(const mlog *l, uint32_t slot)
{
    return l->arena + ((size_t)slot << l->seg_shift);
}
struct seg_certificate log_segment_certificate(const mlog *l, uint32_t slot);

struct log_stats {
    uint64_t memory_bytes;   /* the budget */
    uint64_t charged_bytes;  /* budget in use (seglet-rounded; <= memory_bytes) */
    uint64_t live_bytes;     /* sum of live_bytes of the segments in the log */
    uint64_t tomb_bytes;     /* of which counted tombstones naming segments in the log */
    uint64_t tomb_dead_bytes;  /* counted tombstone bytes that died so far */
    uint64_t bytes_used;
    uint32_t segment_bytes;
    uint32_t segments_total;   /* memory_bytes / segment_bytes */
    uint32_t segments_in_use;  /* total - free */
    uint32_t segments_free;    /* whole segments ordinary appends could still open */
};
void log_get_stats(const mlog *l, struct log_stats *st);

#endif /* CRAM_MASTER_LOG_H */
