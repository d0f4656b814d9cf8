/*
 * objmgr.h -- objects on top of the log and the hash table: tablets owned,
 * read / write / remove / increment with reject rules, enumeration.
 *
 * Versions: a new version is max(current version, safe version) + 1.  The
 * safe version (log_safe_version) is master-wide: raised to the version of
 * every removed object (and of every object dropped with a tablet), and
 * written into every new head as a SEG_ENTRY_SAFE_VERSION entry.  So versions
 * of a key never go backwards, also across remove + re-create.
 *
 * Values returned by om_read / om_enumerate point straight into log memory:
 * valid until the next mutating call on the objmgr (the cleaner, later, will
 * hold segments for in-flight readers through epochs).
 *
 * Thread rule: one objmgr belongs to the dispatch thread; every function here
 * is called from it.  (Workers read closed segments through the log, and
 * hash-table entries atomically; see log.h and hashtable.h.)
 */
#ifndef CRAM_MASTER_OBJMGR_H
#define CRAM_MASTER_OBJMGR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "cram.h"
#include "master/hashtable.h"
#include "master/log.h"

struct om_config {
    uint64_t memory_bytes;     /* log arena; rounded down to whole segments */
    uint32_t segment_bytes;    /* power of two >= 64 KiB */
    uint32_t max_value_bytes;  /* 0 = CRAM_MAX_VALUE_LEN; capped to what fits a segment */
    uint64_t hash_buckets;     /* 0 = memory_bytes / 512 (>= 1024): ~1/8 of
                                * the log in buckets, room for ~16 entries per KiB */
    int      hugepages;
    int      prefault;         /* log_config.prefault */
    uint64_t master_id;        /* written into segment headers (0 before enlisting) */
};

enum om_tablet_state { OM_TABLET_NORMAL = 0, OM_TABLET_RECOVERING = 1 };

struct om_tablet {
    uint64_t table_id;
    uint64_t start_hash;       /* inclusive */
    uint64_t end_hash;         /* inclusive */
    int      state;            /* enum om_tablet_state */
    /* kept incrementally by write / remove / increment / replay: log bytes
     * (entry header included) and count of the live objects in the tablet
     * (GET_SERVER_STATS tablet_stats: the coordinator's partitioning "will") */
    uint64_t bytes;
    uint64_t objects;
};

struct om_stats {
    uint64_t reads, writes, removes, increments;
    uint64_t objects;          /* live objects in the hash table */
    uint64_t live_bytes;       /* log bytes of live objects + tombstones */
    uint32_t tablets;
    uint64_t hash_buckets;
    uint64_t hash_overflow_buckets;
    struct log_stats log;
};

typedef struct objmgr objmgr;

objmgr *om_create(const struct om_config *cfg, char *err, size_t errlen);
void    om_destroy(objmgr *om);

mlog *om_log(objmgr *om);
ht   *om_hashtable(objmgr *om);
uint32_t om_max_value_bytes(const objmgr *om);

/* ---- tablets ----------------------------------------------------------- */

/* Take ownership of [start, end] of a table.  Taking a range equal to an
 * owned tablet updates its state (RECOVERING -> NORMAL).  CRAM_OK,
 * CRAM_INVALID_ARGUMENT (start > end, or overlaps another owned tablet of
 * the table), CRAM_NO_MEMORY. */
cram_status om_take_tablet(objmgr *om, uint64_t table, uint64_t start, uint64_t end, int state);
/* Drop every owned tablet of the table inside [start, end] and remove their
 * objects from the hash table (their log space becomes dead).  Dropping what
 * is not owned is CRAM_OK. */
cram_status om_drop_tablet(objmgr *om, uint64_t table, uint64_t start, uint64_t end);
/* CRAM_OK if a NORMAL tablet holds (table, hash); CRAM_RETRY if a
 * RECOVERING one does; else CRAM_UNKNOWN_TABLET. */
cram_status om_check_tablet(const objmgr *om, uint64_t table, uint64_t hash);
uint32_t om_tablet_count(const objmgr *om);
const struct om_tablet *om_tablet_get(const objmgr *om, uint32_t i);

/* ---- operations -------------------------------------------------------- */
/* rules may be NULL.  Out-pointers may be NULL.  Keys: 1..65535 bytes (the
 * wire parser checks); values <= om_max_value_bytes, and key + value and
 * the key's tombstone must fit a fresh segment together (an overwrite
 * appends the tombstone of the replaced version next to the new one, in the
 * same segment), else
 * CRAM_REQUEST_TOO_LARGE.  Every op answers CRAM_UNKNOWN_TABLET / CRAM_RETRY
 * per om_check_tablet, and CRAM_NO_TABLE_SPACE when the log is full (nothing
 * changed).  *version is the new version on success, else the current one
 * (0 if the object does not exist). */

cram_status om_read(objmgr *om, uint64_t table, const void *key, uint16_t key_len,
                    const cram_reject_rules *rules, uint64_t *version,
                    const void **value, uint32_t *value_len);
cram_status om_write(objmgr *om, uint64_t table, const void *key, uint16_t key_len,
                     const void *value, uint32_t value_len,
                     const cram_reject_rules *rules, uint64_t *version);
/* Removing a missing object is CRAM_OK with *version 0 (unless a rule says otherwise). */
cram_status om_remove(objmgr *om, uint64_t table, const void *key, uint16_t key_len,
                      const cram_reject_rules *rules, uint64_t *version);
/* Missing objects start at 0; values that are not 8 bytes: CRAM_INVALID_OBJECT.
 * Wraps around on overflow (two's complement). */
cram_status om_increment(objmgr *om, uint64_t table, const void *key, uint16_t key_len,
                         int64_t delta, const cram_reject_rules *rules,
                         int64_t *new_value, uint64_t *version);

/* Start loading the hash bucket of a key into the cache (multi-ops call this
 * a few items ahead so the cache misses of several items overlap). */
void om_prefetch(const objmgr *om, uint64_t table, const void *key, uint16_t key_len);

/* Reject-rule decision, exactly as in cram.h. */
cram_status om_reject(const cram_reject_rules *rules, bool exists, uint64_t version);

/*
 * Enumerate objects of table with key hash in [max(cursor, tablet_start),
 * tablet_end], in increasing key-hash order.  emit() is called per object;
 * objects are emitted while the running total of (item_overhead + key_len +
 * value_len) stays <= max_bytes, but always at least one key hash's objects,
 * and all objects of one key hash together.  On return *next_cursor is the
 * hash to continue from and *done is true if nothing remains at or after it.
 * The tablet must be owned (om_check_tablet on tablet_start and tablet_end
 * in the same tablet): else CRAM_UNKNOWN_TABLET / CRAM_RETRY.
 * emit returns 0, or non-zero to abort the enumeration with
 * CRAM_INTERNAL_ERROR.
 */
typedef int (*om_enum_fn)(void *ctx, uint64_t key_hash, uint64_t version,
                          const void *key, uint16_t key_len,
                          const void *value, uint32_t value_len);
cram_status om_enumerate(objmgr *om, uint64_t table, uint64_t tablet_start, uint64_t tablet_end,
                         uint64_t cursor, uint64_t max_bytes, uint32_t item_overhead,
                         om_enum_fn emit, void *ctx,
                         uint64_t *next_cursor, bool *done, uint32_t *count);

void om_get_stats(const objmgr *om, struct om_stats *st);

/* ---- recovery replay (master/recovery.c) -------------------------------- */
/*
 * Replay of a crashed master's entries into tablets this master holds in
 * state RECOVERING, RAMCloud style: the highest version of a key wins; a
 * tombstone removes an object of its version or older and, while the replay
 * runs, stays in the hash table so older objects arriving later are
 * rejected (duplicate entries -- the same segment from two replicas -- are
 * rejected the same way).  Entries are appended to side segments (log.h),
 * which join the log at om_replay_commit.
 *
 * An object replacing an older object already replayed here is preceded by
 * a tombstone for the older one (naming its side segment), as any
 * overwrite (om_write) is: no dead object stays in this log without a
 * tombstone that outlives it in the cleaner's eyes.
 *
 * A replayed tombstone's segment_id is rewritten to name the side segment
 * holding the object it kills in this log (0 if none is here), so the
 * cleaner's rule "a tombstone stays while the segment it refers to is in
 * the log" holds for this master's log.
 *
 * During a replay the hash table may hold TOMBSTONE references for
 * RECOVERING tablets: every hash-table walker must check the entry type
 * (the objmgr's own do).  om_replay_end removes them again.
 *
 * Thread rule: like the rest of objmgr, dispatch thread only (replay runs
 * there in slices of one received chunk; see recovery.c).
 */
struct om_replay {
    uint32_t *slots;           /* side segments filled so far */
    uint32_t nslots, capslots;
    bool committed;            /* slots joined the log */
    bool ended;                /* om_replay_end ran: tombstones left the hash table */
    uint64_t tomb_bytes;       /* live bytes of the tombstones appended and kept */
    uint64_t synth_tomb_bytes; /* live bytes of the tombstones written for objects
                                * replaced during the replay (never in the hash
                                * table; see om_replay_entry) */
    /* tombstones put into the hash table, so om_replay_end removes them in
     * O(tombstones) instead of walking the tablets' buckets */
    struct om_tomb_ref { uint64_t hash; log_ref ref; } *tombs;
    uint32_t ntombs, captombs;
    bool tombs_lost;           /* out of memory recording one: walk instead */
    uint64_t max_version;      /* highest safe version / version seen */
    uint64_t objects, tombstones;          /* entries appended */
    uint64_t ignored;          /* older / duplicate entries dropped */
    uint64_t foreign;          /* entries outside the RECOVERING tablets */
    uint64_t bytes;            /* entry bytes looked at */
};

/* Replay one entry (already CRC-checked by the caller).  CRAM_OK (applied
 * or ignored), CRAM_NO_TABLE_SPACE (no free segment for a side segment),
 * CRAM_NO_MEMORY, CRAM_INVALID_OBJECT (a body whose lengths do not add up). */
cram_status om_replay_entry(objmgr *om, struct om_replay *rp, const struct seg_entry *e);
/* Replay is complete: drop the tombstones from the hash table for the
 * tablets [table, start, end] given (tombstones stay in the side segments)
 * and raise the safe version to rp->max_version. */
void om_replay_end(objmgr *om, struct om_replay *rp, const struct om_tablet *tablets, uint32_t n);
/* Join the side segments to the log (then the replica manager replicates
 * them).  0, or -1 if no segment is free for the new head. */
int  om_replay_commit(objmgr *om, struct om_replay *rp);
/* Give up: drop the tablets (objects and tombstones replayed into them leave
 * the hash table), give uncommitted side segments back, free rp's memory. */
void om_replay_abort(objmgr *om, struct om_replay *rp, const struct om_tablet *tablets, uint32_t n);
/* Free rp's memory (after commit). */
void om_replay_free(struct om_replay *rp);

#endif /* CRAM_MASTER_OBJMGR_H */
