/*
 * coordinator.h -- the coordinator service: server list, tables and tablet
 * map, kept in ZooKeeper (zkstore.h) and served over one tp_loop; it pushes
 * the versioned server list to every server (full after enlisting or a lost
 * update, else only the changes) and verifies crash hints with its own
 * probes before declaring a server crashed.
 *
 * Threads: coord_run's caller is the dispatch thread (owns the tp_loop and
 * the listener; receives RPCs, validates and unpacks them, and queues them).
 * One worker thread owns the cluster state and the ZooKeeper handle, handles
 * the queued requests one at a time, sends TAKE_TABLET/DROP_TABLET, server
 * list updates, verification PINGs, stats polls, BACKUP_LIST and RECOVER
 * to servers over its own private
 * tp_loop (which it polls between requests), and posts each reply back to
 * the dispatch thread with tp_loop_post.  coord_stop is the only call allowed from any
 * thread (and signal-handling threads).
 */
#ifndef CRAM_COORDINATOR_H
#define CRAM_COORDINATOR_H

#include <stdbool.h>
#include <stdint.h>

typedef struct coord coord;

struct coord_config {
    const char *zk_hosts;       /* "h:p[,h:p]" (the part after "zk:") */
    const char *cluster;        /* default "main" */
    const char *listen;         /* locator to listen on */
    uint32_t poll_us;           /* dispatch loop spin after activity */
    uint32_t replicas;          /* cluster setting R */
    bool replicas_set;          /* given on the command line: overrides the stored value */
    const char *durability;     /* "buffered" or "sync" */
    bool durability_set;
    bool reset;                 /* wipe the cluster's ZooKeeper state first */
    uint32_t zk_session_ms;     /* ZooKeeper session timeout to ask for; 0 = 6000.  A
                                 * standby takes over at most this long after the
                                 * leader's process or host dies */
    /* Failure verification (the rule: fdet_verify_step in
     * server/failure_detector.h): before declaring a suspected server crashed
     * the coordinator PINGs it, one probe at a time, each waiting
     * verify_timeout_ms; one answer means alive.  A connection refused or
     * reset (or another process answering at its locator) verify_tries times
     * in a row, verify_interval_ms apart, declares it: the process is gone.
     * A server that is connected but answers nothing is declared only after
     * verify_silent_ms: it may just be busy.  0 = defaults (2 tries, 40 ms,
     * 500 ms, 4000 ms).  The times are scaled by CRAM_TEST_TIME_SCALE. */
    uint32_t verify_tries;
    uint32_t verify_interval_ms;
    uint32_t verify_timeout_ms;
    uint32_t verify_silent_ms;
    /* Crash recovery: a crashed master's tablets are split into partitions
     * of at most partition_bytes and partition_objects each (0 = defaults,
     * 256 MiB and 4 Mi objects), sized by the tablet stats every master
     * reports to GET_SERVER_STATS polls every stats_interval_ms (0 = 1000,
     * UINT32_MAX = no polling).  A recovery that waits for missing replicas
     * (or a master to recover on) asks the backups again every
     * recovery_retry_ms (0 = 1000; scaled by CRAM_TEST_TIME_SCALE) and soon
     * after a server enlists. */
    uint64_t partition_bytes;
    uint64_t partition_objects;
    uint32_t stats_interval_ms;
    uint32_t recovery_retry_ms;
};

/* Creates the dispatch loop and the listener.  NULL with a message in err. */
coord *coord_create(const struct coord_config *cfg, char *err, size_t errlen);
/* The locator the coordinator listens on (with the real port). */
const char *coord_locator(const coord *c);
/* Start the worker (joins the election, waits as a standby until it wins,
 * claims leadership, loads state, finishes open intents) and run the dispatch
 * loop until coord_stop.  Returns 0 after a clean stop, -1 if the worker
 * failed (ZooKeeper unreachable, leadership lost). */
int  coord_run(coord *c);
/* After coord_run returned -1: true if it ended because this coordinator
 * lost leadership (fenced, or its ZooKeeper session expired) -- it wrote
 * nothing after that and may start again as a standby (a new coord). */
bool coord_lost_leadership(const coord *c);
/* Thread-safe: make coord_run return. */
void coord_stop(coord *c);
void coord_destroy(coord *c);

#endif
