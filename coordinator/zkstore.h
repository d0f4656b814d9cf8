/*
 * zkstore.h -- the coordinator's ZooKeeper storage layer (prefix zks_).
 *
 * Layout under the cluster root R = /cram/<cluster>:
 *   R/coordinator   LeaderRecord, ephemeral: who leads (clients read it)
 *   R/epoch         empty, persistent; its version is the leader epoch
 *   R/settings      ClusterSettings
 *   R/ids           IdCounters
 *   R/servers/<id as 16 hex digits>   ServerEntry
 *   R/tables/<name> TableRecord
 *   R/intents/i-<seq>  IntentRecord (persistent sequential)
 *   R/recoveries/<crashed master id as 16 hex digits>  RecoveryRecord (while one runs)
 *   R/election/n-<seq> LeaderRecord with epoch 0 (ephemeral sequential): one
 *                   per running coordinator; the lowest one may claim
 *                   leadership (election.h)
 *
 * Fencing: a coordinator becomes leader with zks_claim, which in one
 * zoo_multi creates the ephemeral leader record and bumps R/epoch; the new
 * version of R/epoch is its epoch (also stored in LeaderRecord.epoch).  Every
 * later write goes through zks_commit, which runs the caller's ops in one
 * zoo_multi together with a check op on R/epoch's version: once another
 * coordinator has claimed leadership, every write of the old one fails with
 * ZKS_FENCED and nothing of it is applied.  The only unfenced writes are
 * zks_wipe and zks_ensure_layout (idempotent creation of empty directories),
 * which run before leadership is claimed.
 *
 * Threads: a zks handle is used by one thread at a time (the coordinator's
 * worker).  ZooKeeper's own client threads live inside libzookeeper_mt.
 * Return values: 0 (ZOK), ZKS_FENCED, or a negative ZooKeeper error (ZNONODE...).
 */
#ifndef CRAM_ZKSTORE_H
#define CRAM_ZKSTORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

typedef struct zks zks;

#define ZKS_FENCED 1          /* another coordinator claimed leadership */
#define ZKS_MAX_OPS 16

enum zks_op_kind { ZKS_CREATE, ZKS_SET, ZKS_DELETE };

struct zks_op {
    enum zks_op_kind kind;
    const char *path;         /* relative to the cluster root, e.g. "tables/foo" */
    const void *data;         /* CREATE/SET */
    size_t len;
    bool sequential;          /* CREATE: persistent sequential node */
    char *created;            /* CREATE: out, the created path relative to the root (may be NULL) */
    size_t created_len;
};

/* Connect to hosts ("h:p[,h:p]") within timeout_ms.  NULL with a message in
 * err on failure. */
zks *zks_open(const char *hosts, const char *cluster, uint32_t timeout_ms, char *err, size_t errlen);
/* The same with the ZooKeeper session timeout to ask for (0 = 6000 ms; the
 * server clamps it to 2..20 tickTimes). */
zks *zks_open_session(const char *hosts, const char *cluster, uint32_t timeout_ms, uint32_t session_ms,
                      char *err, size_t errlen);
void zks_close(zks *z);
/* The session timeout the server granted (ms; 0 if unknown). */
uint32_t zks_session_ms(const zks *z);
/* 0 while connected (or expired), else how long (ms) the connection has
 * been lost: the session survives if it comes back within the session
 * timeout. */
uint64_t zks_disconnected_ms(const zks *z);
/* "/cram/<cluster>" */
const char *zks_root(const zks *z);
/* Watches: zks_watch sets a one-shot watch on path (ZOK: it exists,
 * ZNONODE: it does not, the watch fires when it appears); zks_events counts
 * the watch and session events seen so far; zks_wait_event blocks until
 * that count differs from `seen`, the session expires, or timeout_ms. */
int zks_watch(zks *z, const char *path);
uint64_t zks_events(const zks *z);
void zks_wait_event(zks *z, uint64_t seen, uint32_t timeout_ms);
/* True once the ZooKeeper session expired (the handle is dead: leadership lost). */
bool zks_expired(const zks *z);

/* Delete the whole cluster root recursively (unfenced; --reset). */
int zks_wipe(zks *z);
/* Create /cram, the root and its directories and R/epoch where missing (unfenced). */
int zks_ensure_layout(zks *z);

/* Become leader: wait while another leader record exists (polling every
 * 250 ms until *stop becomes non-zero, then returns ZCLOSING), then create
 * the ephemeral leader record {locator, epoch, pid, host} and bump the epoch
 * atomically.  A record left by a dead process on this host is removed at
 * once rather than waiting for its session to expire. */
int zks_claim(zks *z, const char *locator, volatile int *stop);
/* data is a packed LeaderRecord whose process ran on this host and no
 * longer exists (its ephemeral nodes linger until its session expires).
 * Always false when the environment has CRAM_TEST_NO_PID_CHECK (tests that
 * measure take-over by session expiry, as across hosts). */
bool zks_owner_gone(const uint8_t *data, size_t len);
/* Delete the node at path (relative) if zks_owner_gone says so: ZOK when
 * deleted, ZNODEEXISTS when its owner may live, or a ZooKeeper error. */
int zks_remove_if_gone(zks *z, const char *path);

/* The epoch won by zks_claim (0 before). */
uint64_t zks_epoch(const zks *z);

/* Is this handle still the leader?  One read of the leader record: ZOK if
 * it exists and belongs to this session, ZKS_FENCED if not, or the error
 * (ZSESSIONEXPIRED after an expiry, ZCONNECTIONLOSS...). */
int zks_check_leader(zks *z);

/* THE fenced write: ops applied atomically iff this handle is still leader. */
int zks_commit(zks *z, struct zks_op *ops, int n);

/* Read a node: *data is malloc'ed (caller frees; NULL when empty), *len its length. */
int zks_get(zks *z, const char *path, uint8_t **data, size_t *len);
/* Children of a directory, sorted by name.  *names is a malloc'ed array of
 * malloc'ed strings; free with zks_free_names. */
int zks_children(zks *z, const char *path, char ***names, int *count);
void zks_free_names(char **names, int count);

/* Test hook: the raw handle (zhandle_t *) for tests that must act as "another
 * coordinator". */
void *zks_raw(zks *z);

#endif
