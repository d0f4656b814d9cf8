/*
 * replica_mgr.h -- the master's replica manager: makes the log durable by
 * replicating every segment to R backups (RAMCloud style), and holds back
 * the replies of write-type requests until their bytes are on all R.
 *
 * What it does:
 *   - Placement: each segment gets R replicas on distinct backups (servers
 *     whose server-list entry is up and offers the backup service), never the
 *     master itself, on distinct failure domains where enough exist (else
 *     the constraint is relaxed), the least loaded of a few random
 *     candidates (rm_choose_backup).
 *   - Group commit: at most one BACKUP_WRITE in flight per replica; all that
 *     is appended meanwhile rides in the next one, sent from the loop's
 *     at-flush hook or from the previous write's completion.  At most
 *     max_inflight BACKUP_WRITEs are outstanding per backup.
 *   - Ordering: a new head is durably open on all its replicas before the
 *     old head's CLOSE is sent.
 *   - Deferred replies (rm_reply_durable): a reply is sent once the head
 *     position current at the call (and everything before it in the log) is
 *     held by R replicas.
 *   - Failures: a failed BACKUP_WRITE (transport error, timeout,
 *     CRAM_BACKUP_FULL, CRAM_WRONG_SERVER ...) or a backup marked crashed in
 *     the server list moves the replica to another backup, which gets the
 *     whole replica again from offset 0.  Losing a replica of the open head
 *     that may hold bytes makes the manager roll the log to a new head with
 *     a higher epoch, close the old head everywhere, and record {new head
 *     segment id, epoch} at the coordinator (SET_MASTER_RECOVERY_INFO); no
 *     reply is released from the loss until that is recorded, so recovery
 *     can ignore stale open replicas.  A further loss before that (or no
 *     free segment) raises the head's epoch in place and re-sends it to all
 *     its replicas instead of rolling again.
 *   - R = 0: no manager at all (the master service replies at once).
 *
 * Thread rule: a replica_mgr, its segment and backup tables, its sessions and
 * its pending replies belong to the dispatch thread (the tp_loop's thread);
 * every function here is called there, and every callback it registers
 * (transport completions, timers, the at-flush hook, server-list and log
 * events) runs there.  Nothing is locked.
 */
#ifndef CRAM_MASTER_REPLICA_MGR_H
#define CRAM_MASTER_REPLICA_MGR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include "cram.h"
#include "common/serverlist.h"
#include "master/log.h"
#include "transport/transport.h"

#define RM_MAX_REPLICAS 8

typedef struct replica_mgr replica_mgr;

struct rm_config {
    uint32_t replicas;          /* R: 1..RM_MAX_REPLICAS */
    bool     sync;              /* durability "sync": WIRE_BACKUP_SYNC on every write */
    uint32_t rpc_timeout_ms;    /* per BACKUP_WRITE; 0 = 5000 (test-scaled) */
    uint32_t max_inflight;      /* BACKUP_WRITEs outstanding per backup; 0 = 4 */
    uint32_t candidates;        /* random candidates per placement; 0 = 3 */
};

/* A manager for log `log` on loop `loop`; registers itself as the log's
 * event hook.  Segments already in the log are replicated too.  NULL if out
 * of memory or the config is invalid.  Not thread-safe, like all of it. */
replica_mgr *rm_create(tp_loop *loop, mlog *log, const struct rm_config *cfg);
/* Closes its sessions and cancels its timers.  Replies still held back are
 * answered CRAM_RETRY (the process is going away: to the client this is the
 * same as the master crashing). */
void rm_destroy(replica_mgr *rm);

/* This master's server id (never used as a backup; names it in
 * SET_MASTER_RECOVERY_INFO). */
void rm_set_server_id(replica_mgr *rm, uint64_t id);
/* The server's server list (not owned; must outlive rm): where backups are
 * and when they crash.  Subscribes to it. 0, or -1 if out of subscriber slots. */
int rm_set_server_list(replica_mgr *rm, server_list *sl);
/* The coordinator's resolved locator ("tcp:..."), for
 * SET_MASTER_RECOVERY_INFO.  May be called again when the leader changes.
 * Without one, recovery info is not recorded (warned once). */
void rm_set_coordinator(replica_mgr *rm, const char *locator);

/* Called before a write-type operation appends: CRAM_OK if the head can have
 * R replicas; CRAM_RETRY (with a rate-limited warning saying why) if fewer
 * than R usable backups are known, or if every backup is full
 * (rm_backups_full) while a replica of a segment in the log waits for a
 * place: the write could not become durable before a backup frees space, so
 * it is refused before it appends instead of its reply being held. */
cram_status rm_check_writable(replica_mgr *rm);

/* Send the response iov[0..n) to rpc once everything appended to the log so
 * far is held by R replicas (at once if it already is).  The bytes are
 * copied.  Never fails: on out of memory it waits for durability in place
 * (runs the loop) and replies. */
void rm_reply_durable(replica_mgr *rm, tp_rpc *rpc, const struct iovec *iov, int n);

/* Call fn(arg) from the loop once everything appended to the log so far
 * (side segments joined with log_side_commit included) is held by R
 * replicas -- never from inside this call.  For recovery: replicate the
 * replayed segments, then report.  0, or -1 if out of memory.  Callbacks
 * still waiting when the manager is destroyed are dropped uncalled. */
int rm_when_durable(replica_mgr *rm, tp_fn fn, void *arg);

/* Drop every replica of a segment (cleaner, later): BACKUP_FREE to each
 * backup holding one, best effort, and stop tracking it.  The caller frees
 * the segment in the log afterwards. */
void rm_free_segment(replica_mgr *rm, uint32_t slot);

/* A segment's replicas, taken away from its slot (rm_detach_segment). */
struct rm_detached {
    uint64_t id;                        /* 0: nothing was tracked */
    int32_t  b[RM_MAX_REPLICAS];        /* backups holding (or being sent) one; -1 */
};

/* rm_free_segment in two steps, for combined cleaning: detach stops
 * tracking the segment in `slot` at once (its memory may go and the slot be
 * reused: it is never re-replicated, and writes still in flight for it
 * complete as stale) but leaves its replicas on the backups; free_detached
 * later sends the BACKUP_FREEs.  Between the two the segment has at most
 * the replicas it had, fewer if a backup fails (docs/cleaner.md). */
void rm_detach_segment(replica_mgr *rm, uint32_t slot, struct rm_detached *out);
void rm_free_detached(replica_mgr *rm, const struct rm_detached *d);

/* Recovery: replicate a full side segment (log_side_open; nothing will be
 * appended to it any more) now, as a closed segment, before it joins the
 * log -- so backups write it while the replay goes on.  Its replicas are in
 * no log digest until log_side_commit (a crash before leaves them unused);
 * at the commit it keeps them.  A side segment given back instead
 * (log_side_abort) must be rm_free_segment'ed first.  0, or -1 if slot is
 * not a side segment. */
int rm_replicate_side(replica_mgr *rm, uint32_t slot);

/* In-memory compaction (logcleaner/): the segment in slot `from` now lives in
 * slot `to` (same id, fewer bytes; log_compact_commit).  Its replicas stay
 * where they are, untouched (no backup I/O); if one must be re-created later,
 * the compacted bytes are sent.  Only for a segment that is closed on all R
 * replicas: else -1 and nothing changes (the cleaner compacts it later). */
int rm_move_segment(replica_mgr *rm, uint32_t from, uint32_t to);
/* True if the segment in `slot` is closed and fully replicated. */
bool rm_segment_done(const replica_mgr *rm, uint32_t slot);

/*
 * Backup disk space (the log cleaner's real disk trigger, docs/cleaner.md).
 * A backup that refuses a new replica with CRAM_BACKUP_FULL is counted
 * (rm_stats.backup_full_refusals), marked full until it accepts a replica
 * again or this master frees one of its replicas there, and puts the manager
 * in a "disk short" state for RM_DISK_SHORT_MS (times CRAM_TEST_TIME_SCALE,
 * like the manager's RPC timeouts) after the last refusal, or until no
 * backup is marked full any more because rm_free_segment freed a replica on
 * each (combined cleaning gave space back).  Every refusal calls the hook
 * set here, from the loop, after the replica was handed to another backup;
 * the hook must not call back into the manager synchronously except for the
 * queries below (the cleaner only notes it and kicks itself from a timer).
 */
#define RM_DISK_SHORT_MS 5000
/* One hook (NULL fn: none); a second call replaces the first. */
void rm_set_backup_full_hook(replica_mgr *rm, tp_fn fn, void *arg);
/* True while backup disk space is short (see above). */
bool rm_disk_short(const replica_mgr *rm);
/* True if every usable backup has refused a replica and accepted none since:
 * a replica cannot be placed anywhere, so neither a new head nor a combined
 * pass's survivors can become durable until some backup has room. */
bool rm_backups_full(replica_mgr *rm);

struct rm_stats {
    uint32_t replicas;              /* R */
    uint64_t backup_writes;         /* BACKUP_WRITE RPCs sent */
    uint64_t backup_write_bytes;    /* segment bytes they carried */
    uint64_t backup_write_failures; /* that failed (replica moved) */
    uint64_t replicas_recreated;    /* replicas written again on another backup */
    uint64_t replies_deferred;      /* replies held back until durable */
    uint64_t replies_pending;       /* held back right now */
    uint64_t retries_no_backups;    /* writes answered RETRY: fewer than R backups */
    uint64_t backup_full_refusals;  /* new replicas refused with CRAM_BACKUP_FULL */
    uint64_t retries_backups_full;  /* writes answered RETRY: every backup full and a
                                     * replica waits for a place */
    uint64_t head_rolls_on_loss;    /* heads closed early because a replica was lost */
    uint64_t head_epoch_bumps;      /* heads re-sent under a higher epoch instead */
    uint64_t recovery_infos;        /* SET_MASTER_RECOVERY_INFO recorded */
    uint64_t last_rereplication_ms; /* backup crash notice -> every segment has R again */
    uint32_t segments_pending;      /* segments not yet fully replicated and closed */
};
void rm_get_stats(const replica_mgr *rm, struct rm_stats *st);

/* True when every segment is on R replicas, every closed one closed there,
 * no reply is held back and no recovery info is outstanding (tests). */
bool rm_idle(const replica_mgr *rm);
/* Backups currently holding (or being given) replicas of the segment in
 * `slot`: up to max ids into ids; returns how many (tests). */
uint32_t rm_segment_backups(const replica_mgr *rm, uint32_t slot, uint64_t *ids, uint32_t max);

/* ---- placement (pure; exposed for tests) ------------------------------- */

struct rm_candidate {
    uint64_t    id;
    const char *domain;     /* "" = none */
    uint32_t    load;       /* replicas the master keeps there */
    bool        usable;     /* up, offers the backup service, reachable locator */
    bool        avoid;      /* failed recently: chosen only if nothing else fits */
};

/* Choose a backup for one more replica of a segment whose replicas are
 * already on holders[0..nholders) (ids).  Never self_id, never a holder;
 * prefers a failure domain no holder has (when a domain is given), then not
 * avoided ones; among the eligible, the least loaded of `tries` picks drawn
 * with *seed (an xorshift state, updated).  Returns an index into c, or -1
 * if no usable candidate remains. */
int rm_choose_backup(const struct rm_candidate *c, size_t n, uint64_t self_id,
                     const uint64_t *holders, size_t nholders, uint32_t tries, uint64_t *seed);

#endif /* CRAM_MASTER_REPLICA_MGR_H */
