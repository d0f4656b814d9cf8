/*
 * lc.h -- the log cleaner: two-level cleaning of the master's log, as in
 * RAMCloud's log-structured memory (FAST'14).  See docs/cleaner.md.
 *
 *   In-memory compaction: a closed segment's live entries are copied into a
 *   new, smaller allocation (log_compact_open: seglet-granular) that keeps
 *   the segment's id; its replicas on backups stay as they are (no backup
 *   I/O), the old allocation is freed.  Chosen greedily (most memory freed
 *   per byte copied).
 *   Combined cleaning: segments chosen by cost-benefit
 *   (1-u)*age/(1+u), u = live bytes / segment size (their footprint on
 *   backups), have their live entries copied, oldest first, into survivor
 *   segments that join the log and are replicated; the cleaned segments
 *   leave the log (the next head's digest lists the survivors, not them)
 *   and, once that head and the survivors are durable, their replicas are
 *   freed (rm_free_segment) and then their memory.
 *
 * Liveness (lc_entry_live): an object is live while the hash-table entry for
 * its key refers to exactly it; a tombstone while the segment holding the
 * object it removed (seg_tombstone.segment_id) is in the log; segment
 * headers, digests and safe-version entries are never copied (every head
 * carries a fresh digest and safe version).
 *
 * Threads (DESIGN.md §9): one worker thread reads closed segments and the
 * hash table (atomic entries) and writes only into the segments handed to it
 * (survivors, compaction targets).  It hands back a relocation list; the
 * dispatch thread applies each relocation only if the hash-table entry still
 * holds the old reference (ht_replace_if), commits the segments, and frees
 * memory only after lc_epoch says no reader can point into it.  Every lc_*
 * function is called on the dispatch thread (the tp_loop's), except the
 * lc_epoch_* calls readers make.
 *
 * Start: a pass starts when the budget in use (log_stats.charged_bytes)
 * reaches `threshold` of the memory, or the log holds more than
 * `disk_factor` x (memory / segment size) segments (their replicas' backup
 * disk space), or a backup refused a replica as full (lc_backup_full,
 * rm_disk_short), or a write found no room.  Writes that find no room get
 * CRAM_RETRY from the master service while lc_can_free says cleaning can
 * still make room, CRAM_NO_TABLE_SPACE otherwise.
 */
#ifndef CRAM_LC_H
#define CRAM_LC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "master/hashtable.h"
#include "master/log.h"
#include "logcleaner/lc_epoch.h"
#include "transport/transport.h"

struct replica_mgr;
typedef struct lc_cleaner lc_cleaner;

struct lc_config {
    double   threshold;         /* 0 = 0.90: clean when this much of the memory is in use */
    double   disk_factor;       /* 0 = 1.5: combined cleaning when the log holds more
                                 * segments than this x memory / segment size */
    uint32_t reserve_segments;  /* 0 = 1: memory only the cleaner may use, plus the
                                 * start of a new head (a survivor or compaction
                                 * target, and the head that lists a combined
                                 * pass's survivors) */
    uint32_t max_survivors;     /* 0 = 4: survivor segments per combined pass */
    bool     disabled;          /* never clean (tests, --cleaner-threshold 0) */
    bool     combined_only;     /* no in-memory compaction (tests, comparisons) */
    bool     eager;             /* clean whatever is worth it, not only when memory
                                 * runs low (tests) */
};

/* A cleaner for log l indexed by t, replicated by rm (NULL: R = 0), on loop.
 * Chains itself in front of the log's event hook (create it after the
 * replica manager).  NULL with a message in err. */
lc_cleaner *lc_create(tp_loop *loop, mlog *l, ht *t, struct replica_mgr *rm,
                      const struct lc_config *cfg, char *err, size_t errlen);
/* Stops the worker (a pass in progress is abandoned: its segments are given
 * back) and restores the log hook. */
void lc_destroy(lc_cleaner *c);

/* Start a pass now if one is due and none runs. */
void lc_kick(lc_cleaner *c);
/* A backup refused a replica because its storage is full (arg: the
 * lc_cleaner).  lc_create registers it with the replica manager
 * (rm_set_backup_full_hook); tests may call it directly.  The next decision
 * (from a 0-delay timer) treats backup disk as short, like the disk_factor
 * trigger: a combined pass by cost-benefit, logged with that reason, unless
 * every backup is full (then no pass can complete; logged, see lc.c). */
void lc_backup_full(void *arg);
/* A write found no room: true (and a pass is started) if cleaning can still
 * free enough memory for a new head; false if live data fills the memory. */
bool lc_can_free(lc_cleaner *c);
/* True while a pass runs, memory waits for readers to leave, or cleaned
 * segments' replicas wait for their survivors to be durable. */
bool lc_busy(const lc_cleaner *c);
/* The epochs that guard freed log memory (register readers here). */
lc_epoch *lc_epochs(lc_cleaner *c);

struct lc_stats {
    uint64_t memory_bytes;          /* budget */
    uint64_t charged_bytes;         /* budget in use */
    uint64_t live_bytes;            /* live entries in the log */
    uint64_t bytes_copied;          /* entries copied by the cleaner */
    uint64_t bytes_freed;           /* memory given back (net of what it wrote) */
    uint64_t segments_compacted;
    uint64_t segments_cleaned;      /* by combined cleaning */
    uint64_t survivors;             /* survivor segments written */
    uint64_t passes;
    uint64_t relocations_lost;      /* entries changed while being copied */
    uint64_t tombstones_dropped;
    uint64_t time_ns;               /* worker time spent cleaning */
    uint64_t retries;               /* writes answered RETRY (lc_can_free true) */
    uint64_t passes_backup_full;    /* combined passes started because backup disk was
                                     * short (a backup refused a replica as full) */
    uint32_t segments_in_log;
};
void lc_get_stats(const lc_cleaner *c, struct lc_stats *st);

/* ---- pure parts (exposed for tests) ------------------------------------ */

/* Cost-benefit of cleaning a segment: (1-u+t)*age/(1+u), u = live/size,
 * t = named/size (bytes of live tombstones elsewhere that name it). */
double lc_cost_benefit(uint32_t live_bytes, uint64_t named_bytes, uint32_t size, uint64_t age_ms);
/* Is the entry at ref live?  log_ids: sorted ids of the segments in the log. */
bool lc_entry_live(const mlog *l, const ht *t, log_ref ref, const uint64_t *log_ids, size_t nids);

#endif /* CRAM_LC_H */
