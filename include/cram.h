/*
 * cram.h -- the public C API of cram, a RAMCloud-style in-memory storage system.
 *
 * This header is the manual of libcram.  Read "Concepts" once; every function
 * below documents its parameters, who owns what, and which statuses it returns.
 *
 * Concepts
 * --------
 * A cluster (named, default "main") holds tables.  A table is split into
 * tablets: contiguous ranges of the 64-bit key hash, each owned by exactly one
 * master.  An object is {table, key (1..65535 bytes), value (0..1 MiB),
 * version}.  Versions rise monotonically per key, also across remove and
 * re-create.
 *
 * Locators
 *   "zk:host:port[,host:port...]"  ZooKeeper ensemble; the library reads the
 *                                  coordinator's locator from it (normal case).
 *   "tcp:host=H,port=P"            the coordinator itself (single-coordinator setups).
 *
 * Threads
 *   A cram_client handle is used by one thread at a time.  Use one handle per
 *   thread; handles share nothing and need no locking.  A handle keeps no
 *   background threads (ZooKeeper is contacted only while locating the
 *   coordinator and the connection is closed again).
 *
 * Errors
 *   Every call returns a cram_status; CRAM_OK is 0.  CRAM_RETRY and
 *   CRAM_UNKNOWN_TABLET never reach callers: the library refreshes its cached
 *   table configuration (after CRAM_RETRY only from the fourth in a row: the
 *   owner is right but busy), re-routes and retries with jittered back-off; on a
 *   transport error or RPC timeout it re-locates the coordinator and the
 *   tablet's owner and retries, until the handle's timeout (cram_set_timeout,
 *   default 30 s) expires, which returns CRAM_TIMEOUT.
 *
 * Durability
 *   A write returns only after the owning master has appended it to its log;
 *   with replication (see docs/operations.md) only after R backups hold it.
 *   Retries of increments and conditional writes are at-least-once across a
 *   server crash until exactly-once RPCs exist (the wire format reserves the
 *   fields for them).
 *
 * Out-pointers: every out-pointer may be NULL.
 */
#ifndef CRAM_H
#define CRAM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CRAM_MAX_KEY_LEN   65535u          /* bytes */
#define CRAM_MAX_VALUE_LEN (1u << 20)      /* bytes, default server limit */

/*
 * Status codes.  Values are explicit and never renumbered: they travel on the
 * wire.  If you add one: give it the next value, move CRAM_STATUS_MAX, add its
 * text to common/status.c and its row to docs/protocol.md.
 */
typedef enum cram_status {
    CRAM_OK                   = 0,
    CRAM_UNKNOWN_TABLET       = 1,  /* server does not own the key's tablet (internal; retried) */
    CRAM_TABLE_DOESNT_EXIST   = 2,
    CRAM_OBJECT_DOESNT_EXIST  = 3,
    CRAM_OBJECT_EXISTS        = 4,  /* reject rule 'exists' matched */
    CRAM_WRONG_VERSION        = 5,  /* reject rule on the version matched */
    CRAM_NO_TABLE_SPACE       = 6,  /* the master's log is full */
    CRAM_RETRY                = 7,  /* transient; retried by the library */
    CRAM_TIMEOUT              = 8,  /* the handle's timeout expired */
    CRAM_REQUEST_FORMAT_ERROR = 9,  /* malformed request on the wire */
    CRAM_REQUEST_TOO_LARGE    = 10, /* key, value or message over the limits */
    CRAM_INVALID_ARGUMENT     = 11, /* bad argument given to a library call */
    CRAM_TRANSPORT_ERROR      = 12, /* connection failed or broke */
    CRAM_INTERNAL_ERROR       = 13,
    CRAM_INVALID_OBJECT       = 14, /* increment of a value that is not 8 bytes */
    CRAM_UNIMPLEMENTED_REQUEST= 15, /* opcode unknown to the server */
    CRAM_WRONG_SERVER         = 16, /* request meant for another server incarnation */
    CRAM_NO_MEMORY            = 17,
    CRAM_NOT_FOUND            = 18, /* a named thing (server, record) does not exist */
    CRAM_COORDINATOR_UNAVAILABLE = 19, /* no coordinator could be located */
    CRAM_BACKUP_FULL          = 20, /* a backup's storage is full (internal; another is chosen) */
    CRAM_CALLER_NOT_IN_CLUSTER = 21, /* the caller was declared crashed (internal) */
    CRAM_STATUS_MAX           = 21
} cram_status;

/* Text for a status; never NULL ("unknown status" for out-of-range values). */
const char *cram_strerror(cram_status s);
/* Symbolic name ("CRAM_OK", ...); never NULL. */
const char *cram_status_name(cram_status s);

typedef struct cram_client cram_client;

/*
 * Reject rules: conditions under which a read/write/remove/increment is
 * refused.  All-zero means "no conditions" (same as passing NULL).
 *   doesnt_exist      refuse if the object does not exist -> CRAM_OBJECT_DOESNT_EXIST
 *   exists            refuse if the object exists         -> CRAM_OBJECT_EXISTS
 *   version_le_given  refuse if version <= given_version  -> CRAM_WRONG_VERSION
 *   version_ne_given  refuse if version != given_version  -> CRAM_WRONG_VERSION
 * The version rules apply only when the object exists.
 */
typedef struct cram_reject_rules {
    uint64_t given_version;
    uint8_t  doesnt_exist;
    uint8_t  exists;
    uint8_t  version_le_given;
    uint8_t  version_ne_given;
} cram_reject_rules;

/*
 * Connect to a cluster.  coordinator_locator: see "Locators".  cluster: the
 * cluster name; NULL means "main".  On success *out is a new handle, owned by
 * the caller until cram_disconnect.  The call checks that a coordinator
 * answers, retrying for up to 5 s (so a client started together with its
 * cluster does not fail at once); the handle's timeout applies afterwards.
 * Returns CRAM_OK, CRAM_INVALID_ARGUMENT (bad locator),
 * CRAM_COORDINATOR_UNAVAILABLE (no leader record / coordinator unreachable),
 * CRAM_NO_MEMORY.
 */
cram_status cram_connect(const char *coordinator_locator, const char *cluster,
                         cram_client **out);
/* Close every connection and free the handle.  NULL is allowed. */
void cram_disconnect(cram_client *c);

/* Upper bound, in milliseconds, on each call including its retries (default
 * 30000).  0 restores the default. */
void cram_set_timeout(cram_client *c, uint32_t ms);

/* Create a table spread over server_span tablets (0 means 1), placed
 * round-robin on the masters.  Creating a table that exists returns CRAM_OK
 * and its id.  name: 1..255 bytes, NUL-terminated. */
cram_status cram_create_table(cram_client *c, const char *name, uint32_t server_span,
                              uint64_t *table_id);
/* Drop a table and all its objects.  Dropping a missing table returns CRAM_OK. */
cram_status cram_drop_table(cram_client *c, const char *name);
/* Look up a table's id.  CRAM_TABLE_DOESNT_EXIST if there is no such table. */
cram_status cram_get_table_id(cram_client *c, const char *name, uint64_t *table_id);

/*
 * Write value under key, creating or replacing the object.  rules may be NULL.
 * *version receives the new version.  Returns CRAM_OK, a reject-rule status,
 * CRAM_TABLE_DOESNT_EXIST, CRAM_REQUEST_TOO_LARGE, CRAM_NO_TABLE_SPACE,
 * CRAM_INVALID_ARGUMENT (key_len 0, NULL key), CRAM_TIMEOUT.
 */
cram_status cram_write(cram_client *c, uint64_t table, const void *key, uint16_t key_len,
                       const void *value, uint32_t value_len,
                       const cram_reject_rules *rules, uint64_t *version);

/*
 * Read an object.  Up to buf_len bytes of the value are copied into buf (buf
 * may be NULL when buf_len is 0); *value_len receives the full length, so a
 * short buffer still returns CRAM_OK and the caller can retry with a bigger
 * one.  Returns CRAM_OK, CRAM_OBJECT_DOESNT_EXIST, a reject-rule status,
 * CRAM_TABLE_DOESNT_EXIST, CRAM_TIMEOUT.
 */
cram_status cram_read(cram_client *c, uint64_t table, const void *key, uint16_t key_len,
                      const cram_reject_rules *rules, uint64_t *version,
                      void *buf, uint32_t buf_len, uint32_t *value_len);

/*
 * Remove an object.  *version receives the version of the removed object, or 0
 * if it did not exist (which is CRAM_OK unless rules say otherwise).
 */
cram_status cram_remove(cram_client *c, uint64_t table, const void *key, uint16_t key_len,
                        const cram_reject_rules *rules, uint64_t *version);

/*
 * Atomically add delta to the object's value, read as a little-endian int64.
 * A missing object starts from 0.  A value that is not exactly 8 bytes gives
 * CRAM_INVALID_OBJECT.  *new_value and *version receive the result.
 */
cram_status cram_increment_int64(cram_client *c, uint64_t table, const void *key,
                                 uint16_t key_len, int64_t delta,
                                 const cram_reject_rules *rules,
                                 int64_t *new_value, uint64_t *version);

/*
 * One element of a multi-operation.  Inputs: table, key, key_len, rules (may
 * be NULL); value/value_len for writes; buf/buf_len for reads.  Outputs:
 * status, version, and for reads value_len_out (full length; at most buf_len
 * bytes are copied into buf).
 */
typedef struct cram_multi_op {
    uint64_t table;
    const void *key;
    uint16_t key_len;
    const void *value;          /* write: input */
    uint32_t value_len;         /* write: input */
    void *buf;                  /* read: output buffer */
    uint32_t buf_len;           /* read: its size */
    uint32_t value_len_out;     /* read: full value length */
    const cram_reject_rules *rules;
    uint64_t version;           /* out */
    cram_status status;         /* out: this op's own result */
} cram_multi_op;

/*
 * Multi-operations fan out to every master involved in parallel.  The call
 * returns CRAM_OK (or a call-level error: CRAM_INVALID_ARGUMENT for a NULL ops
 * with n > 0, CRAM_NO_MEMORY) and each op's result is in ops[i].status and
 * ops[i].version.  The ops are independent: there is no atomicity across them.
 * Per-op statuses besides the operation's own result: CRAM_INVALID_ARGUMENT
 * (NULL key, key_len 0, NULL value/buf with a non-zero length) and
 * CRAM_REQUEST_TOO_LARGE (value over CRAM_MAX_VALUE_LEN) for ops that were
 * not sent; CRAM_TABLE_DOESNT_EXIST; CRAM_TIMEOUT for ops still unfinished
 * when the handle's timeout expired (the call itself still returns CRAM_OK).
 */
cram_status cram_multi_read(cram_client *c, cram_multi_op *ops, size_t n);
cram_status cram_multi_write(cram_client *c, cram_multi_op *ops, size_t n);
cram_status cram_multi_remove(cram_client *c, cram_multi_op *ops, size_t n);

/*
 * Enumerate a table: every object that exists for the whole enumeration is
 * returned exactly once; objects written or removed meanwhile may or may not
 * appear.  Order is by key hash, not by key.  An enumerator uses its handle
 * (calls on it count as calls on the handle, with the handle's timeout per
 * cram_enumerate_next); end it before disconnecting the handle.
 */
typedef struct cram_enumerator cram_enumerator;
cram_status cram_enumerate_begin(cram_client *c, uint64_t table, cram_enumerator **out);
/* Returns CRAM_OK with the next object, or CRAM_OBJECT_DOESNT_EXIST when the
 * table is exhausted.  The key and value pointers stay valid until the next
 * call on the enumerator. */
cram_status cram_enumerate_next(cram_enumerator *e, const void **key, uint16_t *key_len,
                                const void **value, uint32_t *value_len,
                                uint64_t *version);
void        cram_enumerate_end(cram_enumerator *e);

/* ---- additions: tuning, administration ------------------------------- */

/*
 * Polling policy of the handle: after a response arrives the handle keeps
 * polling its connections for us microseconds before it blocks in the
 * kernel (epoll) again.  0 (the default) blocks at once: lowest CPU use,
 * one extra wake-up per RPC.  A spinning handle burns a core while it waits.
 * NULL c is ignored.
 */
void     cram_set_poll_us(cram_client *c, uint32_t us);
/* The value set by cram_set_poll_us (0 for NULL c). */
uint32_t cram_get_poll_us(const cram_client *c);

/*
 * The coordinator's locator ("tcp:host=...,port=...") this handle talks to,
 * looked up again if the handle has lost it.  buf receives the
 * NUL-terminated text.  Returns CRAM_OK, CRAM_INVALID_ARGUMENT (NULL c or
 * buf, buflen too small), CRAM_COORDINATOR_UNAVAILABLE.
 */
cram_status cram_get_coordinator_locator(cram_client *c, char *buf, size_t buflen);

/* Free an array returned by cram_list_tables, cram_list_servers or
 * cram_get_tablets.  NULL is allowed. */
void cram_free(void *p);

/* One table, as listed by cram_list_tables. */
typedef struct cram_table_info {
    char name[256];             /* NUL-terminated */
    uint64_t table_id;
    uint32_t tablet_count;
} cram_table_info;

/*
 * List every table of the cluster.  On CRAM_OK *tables is a new array of *n
 * entries (NULL when n is 0), freed by the caller with cram_free.
 * Returns CRAM_OK, CRAM_INVALID_ARGUMENT (NULL c, tables or n),
 * CRAM_TIMEOUT, CRAM_NO_MEMORY, CRAM_INTERNAL_ERROR (malformed answer).
 */
cram_status cram_list_tables(cram_client *c, cram_table_info **tables, size_t *n);

#define CRAM_SERVICE_MASTER 1u  /* bits of cram_server_info.services */
#define CRAM_SERVICE_BACKUP 2u

typedef enum cram_server_state {
    CRAM_SERVER_UP      = 0,
    CRAM_SERVER_CRASHED = 1,    /* declared dead; its data is (being) recovered */
    CRAM_SERVER_REMOVED = 2
} cram_server_state;

/* One server of the cluster, as listed by cram_list_servers. */
typedef struct cram_server_info {
    uint64_t server_id;         /* (generation << 32) | index */
    char locators[512];         /* the server's locators joined by ';' (truncated if longer) */
    uint32_t services;          /* CRAM_SERVICE_* bits */
    cram_server_state status;
    char failure_domain[64];
    uint64_t memory_bytes;
    uint64_t enlisted_at_ms;    /* wall clock, ms since the epoch */
} cram_server_info;

/*
 * List the servers the coordinator knows (crashed and removed ones
 * included).  On CRAM_OK *servers is a new array of *n entries, freed with
 * cram_free.  Statuses as for cram_list_tables.
 */
cram_status cram_list_servers(cram_client *c, cram_server_info **servers, size_t *n);

/* One tablet of a table, as returned by cram_get_tablets. */
typedef struct cram_tablet_info {
    uint64_t table_id;
    uint64_t start_hash;        /* inclusive */
    uint64_t end_hash;          /* inclusive */
    uint64_t server_id;         /* owner */
    int recovering;             /* 1 while the tablet is being recovered */
    char locator[256];          /* the owner's locator used by this library ("" if none) */
} cram_tablet_info;

/*
 * The tablets of table `name`, sorted by start_hash.  On CRAM_OK *tablets is
 * a new array of *n entries, freed with cram_free.  Returns CRAM_OK,
 * CRAM_TABLE_DOESNT_EXIST, CRAM_INVALID_ARGUMENT, CRAM_TIMEOUT,
 * CRAM_NO_MEMORY, CRAM_INTERNAL_ERROR.
 */
cram_status cram_get_tablets(cram_client *c, const char *name, cram_tablet_info **tablets,
                             size_t *n);

/* Statistics of one server (mirrors ServerStats in proto/cram.proto). */
typedef struct cram_server_stats {
    uint64_t server_id;
    uint64_t memory_bytes;      /* log arena size */
    uint64_t log_bytes_used;    /* bytes in segments in use */
    uint64_t live_bytes;        /* bytes of live objects + tombstones */
    uint64_t objects;
    uint32_t segments_total;
    uint32_t segments_in_use;
    uint32_t segment_bytes;
    uint64_t reads;
    uint64_t writes;
    uint64_t removes;
    uint64_t increments;
    uint32_t tablets;
    uint64_t hash_buckets;
    uint64_t uptime_ms;
    /* replication (all 0 when the cluster's R is 0) */
    uint32_t replicas;              /* R */
    uint64_t backup_writes;         /* BACKUP_WRITE RPCs sent */
    uint64_t backup_write_bytes;    /* segment bytes they carried */
    uint64_t replicas_recreated;    /* replicas written again after a backup was lost */
    uint64_t last_rereplication_ms; /* last backup loss -> R replicas again */
    uint64_t replies_pending;       /* write replies waiting for their backups now */
    /* log cleaner (docs/cleaner.md) */
    uint64_t memory_in_use;         /* log memory in use, <= memory_bytes */
    uint64_t cleaner_bytes_copied;  /* live bytes the cleaner copied */
    uint64_t cleaner_bytes_freed;   /* memory it gave back */
    uint64_t cleaner_time_ms;       /* cleaner worker time */
    uint64_t segments_compacted;    /* in-memory compactions (no backup I/O) */
    uint64_t segments_cleaned;      /* segments cleaned by combined cleaning */
    uint64_t cleaner_retries;       /* writes answered RETRY while cleaning made room */
    /* backup disk space */
    uint64_t backup_full_refusals;  /* new replicas backups refused as full (each starts
                                     * combined cleaning, which frees replicas) */
} cram_server_stats;

/*
 * Ask one master for its statistics.  The server is named by locator (if
 * not NULL) or else by server_id (looked up in the coordinator's server
 * list).  Returns CRAM_OK, CRAM_NOT_FOUND (no such server id),
 * CRAM_INVALID_ARGUMENT (NULL c or out; neither id nor locator),
 * CRAM_TIMEOUT (the server did not answer within the handle's timeout),
 * CRAM_INTERNAL_ERROR (malformed answer).
 */
cram_status cram_get_server_stats(cram_client *c, uint64_t server_id, const char *locator,
                                  cram_server_stats *out);

/* One replica held by a backup (mirrors ReplicaInfo in proto/cram.proto). */
typedef struct cram_replica_info {
    uint64_t backup_id;         /* the server holding it */
    uint64_t master_id;         /* the master whose log segment it is */
    uint64_t segment_id;
    uint64_t epoch;
    uint32_t length;            /* bytes held (up to the last certificate) */
    uint32_t cert_length;       /* certificate: first cert_length bytes ... */
    uint32_t cert_crc32c;       /* ... have this checksum (common/segment.h) */
    uint8_t closed;             /* 1: the segment is complete */
    uint8_t verified;           /* 1: bytes checked against the certificate */
    uint8_t on_disk;            /* 1: on the backup's disk (else in its memory only) */
    uint8_t pad;
} cram_replica_info;

/*
 * Ask one backup (BACKUP_LIST) which replicas it holds: of master master_id,
 * or of every master when master_id is 0.  The backup is named by locator
 * (if not NULL) or else by server_id (looked up in the coordinator's server
 * list; a server that now has another id answers CRAM_WRONG_SERVER).  On
 * CRAM_OK *replicas is a new array of *n entries, freed with cram_free.
 * Returns CRAM_OK, CRAM_NOT_FOUND (no such server id), CRAM_INVALID_ARGUMENT,
 * CRAM_TIMEOUT, CRAM_NO_MEMORY, CRAM_INTERNAL_ERROR (malformed answer), or
 * the backup's error status (e.g. CRAM_UNIMPLEMENTED_REQUEST: no backup
 * service there).
 */
cram_status cram_list_replicas(cram_client *c, uint64_t server_id, const char *locator,
                               uint64_t master_id, cram_replica_info **replicas, size_t *n);

/* ---- additions: crash recovery status and cluster settings ------------ */

typedef enum cram_recovery_phase {
    CRAM_RECOVERY_STARTING    = 0,  /* asking the backups for the crashed master's replicas */
    CRAM_RECOVERY_WAITING_LOG = 1,  /* its log is incomplete: waiting for replicas (see note) */
    CRAM_RECOVERY_REPLAYING   = 2,  /* partitions handed to recovery masters */
    CRAM_RECOVERY_DONE        = 3,
    CRAM_RECOVERY_FAILED      = 4
} cram_recovery_phase;

/* One partition of a recovery (mirrors PartitionStatus in proto/cram.proto). */
typedef struct cram_recovery_partition {
    uint32_t partition_id;
    uint32_t tablet_count;      /* key-hash ranges in the partition */
    uint64_t recovery_master_id;/* 0 = not assigned yet */
    uint8_t done;               /* 1: replayed and owned by the recovery master */
    uint8_t pad[3];
    uint32_t attempts;          /* recovery masters it was handed to */
    uint64_t bytes_replayed;
    uint64_t segments_replayed;
    uint64_t replay_ms;
    uint64_t estimated_bytes;
    uint64_t estimated_objects;
} cram_recovery_partition;

/* One crash recovery (mirrors RecoveryRecord). */
typedef struct cram_recovery_info {
    uint64_t recovery_id;
    uint64_t crashed_master_id;
    cram_recovery_phase phase;
    uint64_t started_at_ms;     /* wall clock, ms since the epoch */
    uint64_t detected_at_ms;    /* when the master was declared crashed */
    uint64_t finished_at_ms;    /* 0 while it runs */
    uint64_t segments;          /* segments of the crashed master's log */
    uint64_t log_bytes;
    char note[512];             /* e.g. why it waits (NUL-terminated, may be truncated) */
    size_t partition_count;
    cram_recovery_partition *partitions;    /* partition_count entries, in the same allocation */
} cram_recovery_info;

/*
 * The coordinator's crash recoveries: running ones first, then recently
 * finished ones (newest first).  On CRAM_OK *recoveries is a new array of
 * *n entries (NULL when n is 0) whose partitions live in the same
 * allocation: free it with one cram_free.  Returns CRAM_OK,
 * CRAM_INVALID_ARGUMENT (NULL c, recoveries or n), CRAM_TIMEOUT,
 * CRAM_NO_MEMORY, CRAM_INTERNAL_ERROR (malformed answer).
 */
cram_status cram_recovery_status(cram_client *c, cram_recovery_info **recoveries, size_t *n);

/*
 * The cluster settings the coordinator hands to servers: replicas per
 * segment (R) and the durability level ("buffered" or "sync", copied
 * NUL-terminated into durability, truncated to durability_len).  Either
 * output may be NULL.  Statuses as for cram_list_servers.
 */
cram_status cram_get_cluster_settings(cram_client *c, uint32_t *replicas, char *durability,
                                      size_t durability_len);

/* One coordinator process of the cluster, as ZooKeeper knows it. */
typedef struct cram_coordinator_info {
    char locator[256];          /* where it listens */
    char host[64];              /* host name it runs on ("" if unknown) */
    uint32_t pid;               /* its process id (0 if unknown) */
    int leader;                 /* 1 for the leader, 0 for a standby */
    uint64_t epoch;             /* the leader's epoch (0 for standbys) */
} cram_coordinator_info;

/*
 * The cluster's coordinators: the leader first (from its leader record),
 * then the standbys in election order.  With a zk: locator they are read
 * from ZooKeeper (a short-lived handle); with a tcp: locator the one entry
 * is that locator as leader (pid 0).  On CRAM_OK *coords is a new array of
 * *n entries (NULL when n is 0; n is 0 when no coordinator runs), freed
 * with cram_free.  Returns CRAM_OK, CRAM_INVALID_ARGUMENT,
 * CRAM_COORDINATOR_UNAVAILABLE (ZooKeeper unreachable), CRAM_NO_MEMORY.
 */
cram_status cram_list_coordinators(cram_client *c, cram_coordinator_info **coords, size_t *n);

/* ---- additions: asynchronous operations ------------------------------- */

/*
 * Asynchronous single-object operations let one thread keep many requests
 * in flight on one handle (the handle is still used by one thread only).
 *
 * An operation is described by a cram_multi_op (fields as for the
 * multi-ops).  cram_async_read / _write / _remove start it and return at
 * once; the op and every buffer it points to (key, value, buf) must stay
 * valid and unchanged until its callback has run.  Callbacks run only
 * inside cram_poll, on the calling thread, oldest completion first; when one
 * runs, op->status, op->version and (reads) op->value_len_out and buf hold
 * the result, exactly as for a multi-op element.  A callback may start new
 * operations.  Retries (moved tablets, lost connections) happen inside, as
 * for synchronous calls, until the handle's timeout counted from the start
 * of the op (then op->status is CRAM_TIMEOUT).  Synchronous calls may be
 * mixed in; they do not run callbacks.  Starting (or retrying) an op may
 * block while the table's configuration is fetched from the coordinator
 * (first use of a table, or after a tablet moved).  Ops still in flight when the handle
 * is disconnected are dropped without their callbacks.
 *
 * Start returns CRAM_OK (the callback will run exactly once), or an error
 * (CRAM_INVALID_ARGUMENT for a NULL c, op or fn, NULL key, key_len 0, NULL
 * value/buf with a non-zero length; CRAM_REQUEST_TOO_LARGE; CRAM_NO_MEMORY),
 * which is also stored in op->status; then the callback never runs.
 */
typedef void (*cram_async_fn)(void *arg, cram_multi_op *op);
cram_status cram_async_read(cram_client *c, cram_multi_op *op, cram_async_fn fn, void *arg);
cram_status cram_async_write(cram_client *c, cram_multi_op *op, cram_async_fn fn, void *arg);
cram_status cram_async_remove(cram_client *c, cram_multi_op *op, cram_async_fn fn, void *arg);

/*
 * Wait for completions and run their callbacks.  Blocks at most timeout_ms
 * (-1: until at least one callback ran or nothing is pending; 0: never
 * blocks).  Returns the number of callbacks run (0 when none completed in
 * time or nothing is pending), -1 for a NULL c.
 */
int cram_poll(cram_client *c, int timeout_ms);
/* Operations started whose callbacks have not run yet (0 for NULL c). */
size_t cram_async_pending(const cram_client *c);

#ifdef __cplusplus
}
#endif
#endif /* CRAM_H */
