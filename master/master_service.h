/*
 * master_service.h -- the master service: RPC handlers over the object
 * manager (log + hash table + tablets).  Runs on the server's dispatch thread;
 * every function here must be called from that thread.
 */
#ifndef CRAM_MASTER_SERVICE_H
#define CRAM_MASTER_SERVICE_H

#include <stddef.h>
#include <stdint.h>
#include "transport/transport.h"
#include "common/serverlist.h"
#include "common/wire.h"

typedef struct master_service master_service;

struct master_config {
    uint64_t memory_bytes;     /* log arena size; rounded down to whole segments */
    uint32_t segment_bytes;    /* default 8 MiB; >= 64 KiB and a power of two */
    uint32_t max_value_bytes;  /* default CRAM_MAX_VALUE_LEN; <= segment_bytes / 2 */
    uint64_t hash_buckets;     /* 0 = derived from memory_bytes */
    int      hugepages;        /* madvise(MADV_HUGEPAGE) on the arena */
    int      prefault;         /* fault the log's memory in at start (--prefault) */
    /* log cleaner (logcleaner/lc.h), started by master_set_replication: */
    double   cleaner_threshold;   /* 0 = 0.90 of memory in use; < 0 = no cleaner */
    double   cleaner_disk_factor; /* 0 = 1.5: combined cleaning above this x
                                   * memory / segment size segments in the log */
};

/* Allocates the arena and the hash table.  NULL with a message in err. */
master_service *master_create(const struct master_config *cfg, char *err, size_t errlen);
void            master_destroy(master_service *m);

/* The id the coordinator gave this server; requests with another non-zero
 * target id get CRAM_WRONG_SERVER.  0 until enlisted (then every data-path
 * request is answered CRAM_RETRY). */
void master_set_server_id(master_service *m, uint64_t server_id);

/* Handle one request whose header says service WIRE_SVC_MASTER.  req/len is
 * the whole message (header included), already known to be >= sizeof(hdr).
 * Replies (now or deferred) through tp_rpc_reply. */
void master_handle(master_service *m, tp_rpc *rpc, const uint8_t *req, uint32_t len);

/* Additions (additive to the contract above): */
struct objmgr;
/* The object manager behind the service (server wiring, recovery replay, tests). */
struct objmgr *master_objmgr(master_service *m);
/* Version of the newest server list received through SERVER_LIST_UPDATE. */
uint64_t master_server_list_version(const master_service *m);

/*
 * Replication (master/replica_mgr.h).  Call once, before the master takes
 * writes (e.g. right after enlisting, with the cluster settings' replicas
 * and durability): replicas 0 keeps today's behaviour (ack after the
 * in-memory append); otherwise every write-type request is acknowledged only
 * once R backups hold its bytes, and answered CRAM_RETRY (nothing appended)
 * while fewer than R backups are usable.  sync != 0: durability "sync"
 * (backups fdatasync before acknowledging).  loop is the dispatch loop the
 * master runs on.  0, or -1 (bad R, out of memory, already set).
 */
int master_set_replication(master_service *m, tp_loop *loop, uint32_t replicas, int sync);
/* The server's server list (not owned; must outlive m).  The replica manager
 * subscribes to it; SERVER_LIST_UPDATE requests reaching master_handle are
 * applied to it (sl_apply) and answered with its status.  0, or -1 if the
 * list is out of subscriber slots. */
int master_set_server_list(master_service *m, server_list *sl);
/* The coordinator's resolved locator ("tcp:..."), used for
 * SET_MASTER_RECOVERY_INFO; call again when the leader changes. */
void master_set_coordinator(master_service *m, const char *locator);
/* The replica manager (NULL with replicas 0): stats and tests. */
struct replica_mgr;
struct replica_mgr *master_replica_mgr(master_service *m);
/* The recovery-master side (master/recovery.h): RECOVER requests reaching
 * master_handle start a recovery there.  It runs on the loop given to
 * master_set_replication (also with replicas 0) and reports to the locator
 * given to master_set_coordinator. */
struct rec_mgr;
struct rec_mgr *master_recovery(master_service *m);

#endif
