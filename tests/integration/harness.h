/*
 * harness.h -- real-process test harness for cram's integration tests.
 *
 * A test owns one cluster: a cram-coordinator on port_base and cram-servers
 * on port_base+1+i, all on 127.0.0.1, registered under its own cluster name
 * in the ZooKeeper that the CTest fixture started.  Processes are started
 * with fork/exec (their stdout/stderr go to <dir>/<name>.log), can be
 * stopped (SIGTERM) or killed (kill -9), and die with the test process
 * (PR_SET_PDEATHSIG) so a crashed test never leaves servers behind.
 *
 * Environment (set by tests/integration/CMakeLists.txt):
 *   CRAM_TEST_ZK          127.0.0.1:PORT of the fixture's ZooKeeper (required)
 *   CRAM_TEST_PORT_BASE   this test's first port (default 22410)
 *   CRAM_TEST_PORT_SLOT   ports this test may use from the base (10): the
 *                         coordinator, servers base+1..base+H_MAX_SERVERS,
 *                         the rest for standby coordinators
 *   CRAM_TEST_CLUSTER     this test's cluster name (default "it")
 *   CRAM_TEST_TIME_SCALE  multiplies every timeout (default 1; ASan runs use 3)
 *   CRAM_TEST_KEEP_LOGS   if set, keep the log dir also when the test passes
 *   CRAM_TEST_TRANSPORT   "xdp": run the cluster between network namespaces
 *                         (root only; h_init exits H_SKIP_CODE otherwise):
 *                         server i runs in namespace CRAM_TEST_NETNS-(i+1)
 *                         listening on "tcp:host=SUBNET.(i+1),port=P;xdp:host=
 *                         SUBNET.(i+1),port=24001+i", the test process (and so
 *                         the coordinator and `cram` it starts) enters
 *                         CRAM_TEST_NETNS-7 (SUBNET.7) and sets CRAM_TRANSPORT=xdp,
 *                         so its clients reach masters over xdp:; ZooKeeper
 *                         (CRAM_TEST_ZK) listens on the bridge address
 *                         SUBNET.254.  The namespaces and that ZooKeeper are
 *                         made by tests/integration/netns_it.sh (a CTest fixture).
 *   CRAM_TEST_NETNS, CRAM_TEST_NETNS_SUBNET   the namespaces' prefix and 10.A.B
 * Binaries come from CRAM_BIN_DIR, a compile definition naming the build dir.
 *
 * Threads: single-threaded, like the tests that use it.
 */
#ifndef CRAM_TEST_HARNESS_H
#define CRAM_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "cram.h"

#define H_MAX_SERVERS 6
#define H_SKIP_CODE 77          /* exit code of a skipped test (ctest SKIP_RETURN_CODE) */
#define H_XDP_PORT 24001        /* xdp: server i listens on UDP port H_XDP_PORT + i */
#define H_MAX_COORD_ARGS 8
#define H_MAX_SERVER_ARGS 8

struct h_proc {
    pid_t pid;                  /* 0 = not running (never started or reaped) */
    int   status;               /* wait status once reaped */
    char  name[32];             /* "coordinator", "server-0", ... */
    char  log[512];             /* its log file */
};

struct h_cluster {
    char cluster[64];           /* cluster name */
    char zk[128];               /* "zk:127.0.0.1:PORT" */
    char host[32];              /* the coordinator's address, "127.0.0.1" (xdp: SUBNET.7) */
    int  xdp;                   /* CRAM_TEST_TRANSPORT=xdp: namespaces, see above */
    int  port_base;             /* coordinator port; server i on port_base+1+i */
    char dir[256];              /* temp dir holding the logs */
    char memory[32];            /* --memory of servers started next (default "64M") */
    char segment[32];           /* --segment-size (default "1M") */
    int  replicas;              /* coordinator --replicas; -1 (default): h_start_cluster
                                 * uses min(2, servers - 1), h_start_coordinator omits it */
    char durability[16];        /* coordinator --durability ("" = omitted: its default) */
    unsigned backup_only;       /* bit i: server i runs --backup-only (h_wait_servers then
                                 * waits for its backup service instead of a master) */
    const char *coord_args[H_MAX_COORD_ARGS];   /* extra coordinator arguments, NULL-ended */
    const char *server_args[H_MAX_SERVERS][H_MAX_SERVER_ARGS];  /* extra arguments of server
                                                 * i, NULL-ended (e.g. --backup-storage) */
    struct h_proc coord;
    struct h_proc servers[H_MAX_SERVERS];
};

/* Fill c from the environment and create its log dir.  Returns 0, or -1
 * with the reason on stderr (e.g. CRAM_TEST_ZK unset). */
int  h_init(struct h_cluster *c);
/* Start the coordinator (with --reset when reset != 0: wipes the cluster's
 * ZooKeeper tree).  Returns once its port accepts connections (0) or -1. */
int  h_start_coordinator(struct h_cluster *c, int reset);
/* Start server i with c->memory / c->segment, replicas kept in
 * <dir>/backup-<i> (--backup-dir).  Does not wait. */
int  h_start_server(struct h_cluster *c, int i);
/* Wait until the coordinator lists n servers as up on this cluster's server
 * ports and a client can connect; timeout is scaled.  0 or -1. */
int  h_wait_servers(struct h_cluster *c, int n, uint64_t timeout_ms);
/* Coordinator (reset) + n servers + wait.  0 or -1 (logs dumped). */
int  h_start_cluster(struct h_cluster *c, int n);

/* Signal a process and reap it (sig = SIGKILL for kill -9).  Returns its
 * wait status, or -1 if it was not running. */
int  h_kill(struct h_proc *p, int sig);
/* SIGTERM, wait (scaled 10 s), then SIGKILL.  Returns the wait status or -1. */
int  h_stop(struct h_proc *p);
/* SIGTERM every running server at once, then wait for each as h_stop does. */
void h_stop_servers(struct h_cluster *c);
/* 1 if the process is still running (reaps it if it exited). */
int  h_alive(struct h_proc *p);
/* Stop every process of the cluster (SIGTERM to all, then wait).  If bad != 0
 * or a process exits abnormally (crash, sanitizer report, non-zero status),
 * print the tail of every log to stderr and keep the dir, else remove it.
 * Returns 1 if bad or a process exited abnormally, else 0: main's exit code. */
int  h_finish(struct h_cluster *c, int bad);
/* Print the last lines of every log of the cluster to stderr. */
void h_dump_logs(const struct h_cluster *c);

/* A new client handle on the cluster (NULL on failure, reason printed). */
cram_client *h_connect(const struct h_cluster *c);

/* Create table name as a single tablet: its id into *table and the tablet
 * (owner, locator) into *tablet.  0, or -1 with the reason on stderr. */
int  h_create_one_tablet(cram_client *cl, const char *name, uint64_t *table,
                         cram_tablet_info *tablet);

/* ms times CRAM_TEST_TIME_SCALE. */
uint64_t h_ms(uint64_t ms);
/* Milliseconds on the monotonic clock. */
uint64_t h_now_ms(void);
/* Full path of a built program ("cram", "cram-server", ...). */
const char *h_bin(const char *prog, char *buf, size_t len);

/* Run argv[0] (a path) with argv, wait at most timeout_ms (scaled) and
 * capture up to outlen-1 bytes of its stdout into out (NUL-terminated; out
 * may be NULL).  stderr goes to this process's stderr.  Returns the exit
 * code, 128+signal if it died of a signal, or -1 if it could not run or
 * timed out (then it is killed). */
int  h_run(char *const argv[], char *out, size_t outlen, uint64_t timeout_ms);

/* The address of the process listening on port: 127.0.0.1, or with xdp the
 * namespace address of the server or coordinator that owns the port. */
const char *h_host_of_port(int port);

/* A blocking TCP connection to h_host_of_port(port):port with 5 s (scaled) send and
 * receive timeouts, or -1. */
int  h_tcp_connect(int port);

/* A set of objects with checkable values, for tests that overwrite objects
 * and read them back: key k (0 <= k < nkeys) is H_OBJ_KEYFMT (H_OBJ_KLEN
 * bytes); its value at generation g is vlen bytes, k and g then a pattern
 * of both (h_obj_val), so a read shows which write it returns.  gen[k] is
 * the latest generation a write of k was acknowledged with (0 = never
 * written).  Multi-ops go out in batches of at most batch ops; the set owns
 * the gen array and the batch buffers (h_objs_init .. h_objs_free), not the
 * client. */
#define H_OBJ_KEYFMT "key%08u"
#define H_OBJ_KLEN   11

struct h_objs {
    cram_client *cl;            /* not owned */
    uint64_t table;
    uint32_t nkeys;
    uint32_t vlen;              /* value bytes, >= 8 */
    size_t   batch;             /* most ops per multi-op */
    uint32_t *gen;              /* [nkeys] latest acknowledged generation */
    uint64_t seed;              /* xorshift64 state of h_objs_write_random */
    /* buffers of one batch */
    cram_multi_op *ops;
    char     (*kb)[16];         /* keys */
    uint8_t  *vb;               /* batch values of vlen bytes (written or read) */
    uint32_t *g;                /* generation each op writes */
    uint32_t *keys;             /* key numbers for h_objs_fill / h_objs_write_random */
    uint8_t  *want;             /* one expected value */
};

/* Set up o for nkeys objects of vlen bytes in table, none written yet.
 * Returns 0, or -1 (out of memory; o is then freed). */
int  h_objs_init(struct h_objs *o, cram_client *cl, uint64_t table, uint32_t nkeys,
                 uint32_t vlen, size_t batch);
void h_objs_free(struct h_objs *o);
/* The vlen-byte value of key k at generation g into v. */
void h_obj_val(uint8_t *v, uint32_t vlen, uint32_t k, uint32_t g);
/* One multi-write of keys[0..n) (n <= batch) with their next generation (a
 * key twice: the later op writes the later one); gen[] follows the
 * acknowledged writes.  0 if every op was acknowledged, else -1 (the first
 * failures printed). */
int  h_objs_write(struct h_objs *o, const uint32_t *keys, size_t n);
/* Write every object once, in key order; stops at the first batch that
 * fails.  0 or -1. */
int  h_objs_fill(struct h_objs *o);
/* h_objs_write of batch keys drawn at random (xorshift64 from o->seed). */
int  h_objs_write_random(struct h_objs *o);
/* Read every object back: returns how many are missing or not at their
 * latest acknowledged generation (the first ones printed); nkeys if a
 * multi-read fails as a whole. */
int  h_objs_verify(struct h_objs *o);

#endif
