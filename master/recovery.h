/*
 * recovery.h -- the recovery-master side of crash recovery (DESIGN.md §6).
 *
 * The coordinator sends RECOVER (protobuf RecoverRequest) naming a partition
 * of a crashed master's tablets and every replica of every segment of its
 * log.  rec_start answers at once ("accepted") and then:
 *
 *   1. takes the partition's tablets in state RECOVERING (requests for them
 *      get CRAM_RETRY);
 *   2. fetches each segment's entries for the partition from backups with
 *      BACKUP_GET_RECOVERY_DATA, at most REC_MAX_INFLIGHT RPCs outstanding,
 *      the segment's first replica first and its next replica on an error,
 *      CRAM_NOT_FOUND, a timeout or a bad entry (restarting that segment at
 *      offset 0: replay is idempotent); requests to the first replica say
 *      how many partitions the recovery has (`readers`), so the backup can
 *      drop its in-memory copy once all of them read it;
 *   3. checks every entry's CRC (seg_iter) and replays it straight from the
 *      received message into side segments (om_replay_entry: highest version
 *      wins, tombstones block older objects, duplicates are harmless, the
 *      safe version is raised to every SAFE_VERSION and version seen);
 *   4. hands each side segment to the replica manager as soon as the replay
 *      moved on to the next one (rm_replicate_side: backups write it while
 *      replay goes on), joins the side segments to the log at the end and
 *      waits until the replica manager holds them all on R backups
 *      (rm_when_durable).  If the replay is dropped, the early replicas are
 *      freed (they are in no log digest, so a backup copy is never used);
 *   5. reports RECOVERY_MASTER_FINISHED (ok, counters) to the coordinator
 *      and, when it answers CRAM_OK, makes the tablets NORMAL.  If the
 *      coordinator answers an error, or the replay fails, what was replayed
 *      for those tablets is dropped (and a failure is still reported).
 *      A transport error, a timeout or CRAM_RETRY (the coordinator could
 *      not record the result yet, or its leader changes) is not an answer:
 *      the report is re-sent (backing off up to REC_FINISH_RETRY_MAX_MS, to
 *      the locator last given to rec_set_coordinator) until one comes --
 *      dropping the data then could lose it if the coordinator had already
 *      recorded this master as the owner.  Meanwhile the tablets stay
 *      RECOVERING (clients get CRAM_RETRY).
 *
 * Where the work runs (the choice DESIGN.md §9 asks to document): on the
 * dispatch thread, in slices.  Each GET_RECOVERY_DATA response (at most
 * REC_CHUNK_BYTES of entries) is verified and replayed inside its completion
 * callback, so one slice is one chunk and normal requests are served between
 * chunks; the hash table and the log are only ever touched by the dispatch
 * thread, and the replay copies each entry exactly once (message -> side
 * segment) and hashes each key once.
 *
 * Fault point: CRAM_FAULT=master.recovery.mid_replay:exit prints
 * "FAULT master.recovery.mid_replay hit" to stderr and _exit(99)s right after
 * the first chunk was replayed.
 *
 * Thread rule: a rec_mgr and its recoveries belong to the dispatch thread;
 * every function here and every callback it registers run there.
 */
#ifndef CRAM_MASTER_RECOVERY_H
#define CRAM_MASTER_RECOVERY_H

#include <stddef.h>
#include <stdint.h>
#include "cram.h"
#include "transport/transport.h"

#define REC_MAX_INFLIGHT   8u                  /* GET_RECOVERY_DATA outstanding per recovery */
#define REC_CHUNK_BYTES    (1u << 20)          /* max_bytes asked per GET_RECOVERY_DATA */
#define REC_RPC_TIMEOUT_MS 10000u              /* per GET_RECOVERY_DATA (test-scaled) */
#define REC_FINISH_TIMEOUT_MS 30000u           /* RECOVERY_MASTER_FINISHED (test-scaled) */
#define REC_FINISH_RETRY_MS 200u               /* first delay before re-sending the report ... */
#define REC_FINISH_RETRY_MAX_MS 2000u          /* ... doubling up to this (test-scaled) */

struct objmgr;
struct replica_mgr;
typedef struct rec_mgr rec_mgr;

/* A manager for the master whose objects om holds.  NULL if out of memory. */
rec_mgr *rec_create(struct objmgr *om);
/* Recoveries still running are dropped: their tablets and replayed data
 * go away, nothing is reported.  Call before the replica manager and the
 * loop are destroyed. */
void rec_destroy(rec_mgr *r);

/* The dispatch loop (outgoing RPCs, timers); required before rec_start. */
void rec_set_loop(rec_mgr *r, tp_loop *loop);
/* The replica manager (NULL with R = 0: no replication to wait for). */
void rec_set_replica_mgr(rec_mgr *r, struct replica_mgr *rm);
/* This master's server id (named in RECOVERY_MASTER_FINISHED). */
void rec_set_server_id(rec_mgr *r, uint64_t id);
/* The coordinator's locator, where RECOVERY_MASTER_FINISHED goes. */
void rec_set_coordinator(rec_mgr *r, const char *locator);

/* Handle a RECOVER body (a packed RecoverRequest, len bytes).  Returns the
 * status to answer at once: CRAM_OK (accepted; or already running under the
 * same recovery id and partition), CRAM_REQUEST_FORMAT_ERROR (unparsable,
 * no tablets, start > end, no replicas, a replica without a locator),
 * CRAM_RETRY (no server id, loop or coordinator yet), CRAM_INVALID_ARGUMENT
 * (a tablet overlaps one this master owns), CRAM_NO_MEMORY. */
cram_status rec_start(rec_mgr *r, const uint8_t *body, size_t len);

/* Recoveries in progress (tests, stats). */
uint32_t rec_active(const rec_mgr *r);

struct rec_stats {
    uint64_t started, succeeded, failed;
    uint64_t segments, bytes, objects, tombstones;   /* totals over finished recoveries */
};
void rec_get_stats(const rec_mgr *r, struct rec_stats *st);

#endif /* CRAM_MASTER_RECOVERY_H */
