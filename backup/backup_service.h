/*
 * backup_service.h -- the backup service: holds replicas of masters' log
 * segments, in memory while open and on disk once closed, and serves them
 * back for recovery.  Runs on the server's dispatch thread; disk I/O runs on
 * the service's own worker thread(s), which post completions back to the
 * dispatch loop.  Every function here is called on the dispatch thread.
 */
#ifndef CRAM_BACKUP_SERVICE_H
#define CRAM_BACKUP_SERVICE_H

#include <stddef.h>
#include <stdint.h>
#include "transport/transport.h"
#include "common/serverlist.h"
#include "common/wire.h"

typedef struct backup_service backup_service;

struct backup_config {
    const char *dir;           /* --backup-dir: replica files live here (created if missing) */
    uint64_t storage_bytes;    /* --backup-storage: bytes of replicas held at most */
    uint32_t max_replica_bytes;/* largest segment accepted (>= the masters' segment size) */
    uint64_t buffer_bytes;     /* --backup-buffers: replica-sized buffers (open replicas,
                                * recovery copies) kept for reuse at most; 0 = 256 MiB */
    uint32_t prefault_buffer;  /* --prefault: fill that pool at start with buffers of
                                * this size (the segment size), faulted in, and keep
                                * them while idle; 0 = no */
};

/* Opens the directory and re-reads every replica file in it (a restarted
 * backup knows what it holds; torn or corrupt replicas are detected and
 * reported, not served).  sl is the server's server list (not owned), used
 * to refuse writes from masters that were declared crashed.  NULL + err on
 * failure. */
backup_service *backup_create(const struct backup_config *cfg, tp_loop *loop, server_list *sl,
                              char *err, size_t errlen);
/* Waits for in-flight disk writes, frees everything (files stay). */
void backup_destroy(backup_service *b);
/* Requests whose non-zero target id differs get CRAM_WRONG_SERVER. */
void backup_set_server_id(backup_service *b, uint64_t server_id);
/* Handle one request whose header says WIRE_SVC_BACKUP (req/len is the whole
 * message, len >= sizeof(struct wire_req_hdr)).  Replies now or deferred. */
void backup_handle(backup_service *b, tp_rpc *rpc, const uint8_t *req, uint32_t len);
/* Number of replicas held (for logs and stats). */
size_t backup_replica_count(const backup_service *b);
/* Replicas whose bytes are held in memory for recovery (read from disk by a
 * prefetch or a GET_RECOVERY_DATA, not yet dropped) -- for tests and stats. */
size_t backup_recovery_cached(const backup_service *b);
/* Bytes of free replica buffers the backup keeps for reuse (at most
 * backup_config.buffer_bytes) -- for tests and stats. */
uint64_t backup_buffer_pool_bytes(const backup_service *b);

/*
 * Additions (not part of the original contract; additive only).
 *
 * Lifecycle notes: backup_create takes an exclusive flock on DIR/.lock (a
 * second backup on the same directory fails to start) and registers an
 * eventfd on the loop for its worker's completions, so backup_destroy must
 * run before tp_loop_destroy.  backup_set_server_id must be called once the
 * server has enlisted: until then requests naming a target id are answered
 * CRAM_WRONG_SERVER.  Status choices beyond wire.h are listed at the top of
 * backup/backup_service.c (e.g. CRAM_WRONG_VERSION for a stale epoch).

 */

#endif
