/*
 * coordinator_main.c -- cram-coordinator: flags, signals, then coord_run once
 * per term (a coordinator that loses leadership starts again as a standby).
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/locator.h"
#include "common/log.h"
#include "coordinator/coordinator.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: cram-coordinator --zk zk:HOST:PORT[,HOST:PORT...] [options]\n"
"\n"
"Runs the cram coordinator: server list, tables and tablet map, kept in\n"
"ZooKeeper under /cram/<cluster>/.  Clients and servers find it through the\n"
"leader record /cram/<cluster>/coordinator.\n"
"\n"
"  --zk zk:H:P[,H:P]       ZooKeeper ensemble (required)\n"
"  --cluster NAME          cluster name (default: main)\n"
"  --listen LOCATOR        where to listen (default: tcp:host=127.0.0.1,port=0 = a free port)\n"
"  --log-level LEVEL       debug, info, warn or error (default: info)\n"
"  --poll-us N             dispatch thread spins N us after activity before sleeping (default: 0)\n"
"  --replicas R            cluster setting: replicas per segment (default: 3, or the stored value)\n"
"  --durability MODE       cluster setting: buffered or sync (default: buffered, or the stored value)\n"
"  --reset                 wipe /cram/<cluster> in ZooKeeper before starting (a fresh cluster)\n"
"  --zk-session-ms MS      ZooKeeper session timeout (default: 6000; the server keeps it within\n"
"                          2..20 tickTimes): a standby takes over at most this long after the\n"
"                          leader's process or host dies\n"
"  --exit-on-loss          exit (status 3) when leadership is lost, instead of joining the\n"
"                          election again as a standby\n"
"  --verify-tries N        failure verification: a suspected server whose connection is refused\n"
"                          or reset this many times in a row is declared crashed (default: 2)\n"
"  --verify-interval-ms MS between those probe PINGs (default: 40)\n"
"  --verify-timeout-ms MS  how long each probe PING waits for its answer (default: 500)\n"
"  --verify-silent-ms MS   a suspected server that is connected but answers no probe for this\n"
"                          long is declared crashed: it may just be busy (default: 4000; this is\n"
"                          also how long a crashed host, which resets nothing, takes)\n"
"  --partition-bytes N     crash recovery: bytes per partition (recovery master), K/M/G\n"
"                          suffixes (default: 256M); at most the log's size / live masters\n"
"  --partition-objects N   crash recovery: objects per partition (default: 4M)\n"
"  --stats-interval-ms MS  how often every master's tablet sizes are polled, to partition its\n"
"                          tablets if it crashes (default: 1000; 0 = never)\n"
"  --recovery-retry-ms MS  a recovery waiting for missing replicas asks the backups again\n"
"                          after this long, and soon after a server enlists (default: 1000)\n"
"  --help                  this text\n"
"\n"
"Any number of coordinators may run for one cluster: they elect a leader through\n"
"ZooKeeper (/cram/<cluster>/election) and the others wait as standbys; the leader\n"
"publishes its locator in the leader record.  Every ZooKeeper write of the leader\n"
"is fenced by the epoch it won, so a deposed leader (paused, partitioned, session\n"
"expired) changes nothing; it stops serving and joins again as a standby.\n"
"\n"
"Cluster settings are stored in ZooKeeper (/cram/<cluster>/settings) and handed\n"
"to servers when they enlist; a value given on the command line replaces the\n"
"stored one.  A server is declared crashed only when none of the verification\n"
"PINGs is answered; the --verify-*-ms times are multiplied by the\n"
"environment variable CRAM_TEST_TIME_SCALE (default 1).  SIGTERM or SIGINT\n"
"stops the coordinator cleanly.\n");
}

struct sigctx {
    sigset_t set;
    pthread_mutex_t mu;         /* guards c and stopped: main clears c before coord_destroy */
    coord *c;
    int stopped;                /* a stop signal came: no new coordinator starts */
};

/* Waits for SIGTERM/SIGINT (blocked in every other thread) and stops the
 * coordinator from normal thread context. */
static void *signal_thread(void *arg)
{
    struct sigctx *s = arg;
    int sig;
    if (sigwait(&s->set, &sig) == 0) {
        CRAM_INFO("signal %d: shutting down", sig);
        pthread_mutex_lock(&s->mu);
        s->stopped = 1;
        if (s->c != NULL)
            coord_stop(s->c);
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

static int parse_u32(const char *s, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max || s[0] == '-')
        return -1;
    *out = (uint32_t)v;
    return 0;
}

/* A count with an optional K/M/G suffix (powers of 1024). */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || s[0] == '-')
        return -1;
    unsigned shift = 0;
    if (*end == 'K' || *end == 'k')
        shift = 10;
    else if (*end == 'M' || *end == 'm')
        shift = 20;
    else if (*end == 'G' || *end == 'g')
        shift = 30;
    if (shift)
        end++;
    if (*end || v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

int main(int argc, char **argv)
{
    enum { O_ZK = 1, O_CLUSTER, O_LISTEN, O_LOG, O_POLL, O_REPL, O_DUR, O_RESET, O_VTRIES, O_VINT,
           O_VTIMEOUT, O_VSILENT, O_SESSION, O_EXIT_ON_LOSS, O_PBYTES, O_POBJECTS, O_STATS_MS, O_RETRY_MS, O_HELP };
    static const struct option opts[] = {
        { "zk", required_argument, NULL, O_ZK },
        { "cluster", required_argument, NULL, O_CLUSTER },
        { "listen", required_argument, NULL, O_LISTEN },
        { "log-level", required_argument, NULL, O_LOG },
        { "poll-us", required_argument, NULL, O_POLL },
        { "replicas", required_argument, NULL, O_REPL },
        { "durability", required_argument, NULL, O_DUR },
        { "reset", no_argument, NULL, O_RESET },
        { "verify-tries", required_argument, NULL, O_VTRIES },
        { "verify-interval-ms", required_argument, NULL, O_VINT },
        { "verify-timeout-ms", required_argument, NULL, O_VTIMEOUT },
        { "verify-silent-ms", required_argument, NULL, O_VSILENT },
        { "zk-session-ms", required_argument, NULL, O_SESSION },
        { "exit-on-loss", no_argument, NULL, O_EXIT_ON_LOSS },
        { "partition-bytes", required_argument, NULL, O_PBYTES },
        { "partition-objects", required_argument, NULL, O_POBJECTS },
        { "stats-interval-ms", required_argument, NULL, O_STATS_MS },
        { "recovery-retry-ms", required_argument, NULL, O_RETRY_MS },
        { "help", no_argument, NULL, O_HELP },
        { NULL, 0, NULL, 0 },
    };
    struct coord_config cfg = {
        .cluster = "main",
        .listen = "tcp:host=127.0.0.1,port=0",
        .poll_us = 0,
        .replicas = 3,
        .durability = "buffered",
    };
    const char *zk = NULL;
    bool exit_on_loss = false;
    int level = LOG_LVL_INFO;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case O_ZK: zk = optarg; break;
        case O_CLUSTER: cfg.cluster = optarg; break;
        case O_LISTEN: cfg.listen = optarg; break;
        case O_LOG:
            level = log_level_parse(optarg);
            if (level < 0) {
                fprintf(stderr, "cram-coordinator: bad --log-level '%s'\n", optarg);
                return 2;
            }
            break;
        case O_POLL:
            if (parse_u32(optarg, 10000000, &cfg.poll_us) != 0) {
                fprintf(stderr, "cram-coordinator: bad --poll-us '%s'\n", optarg);
                return 2;
            }
            break;
        case O_REPL:
            if (parse_u32(optarg, 16, &cfg.replicas) != 0) {
                fprintf(stderr, "cram-coordinator: bad --replicas '%s' (0..16)\n", optarg);
                return 2;
            }
            cfg.replicas_set = true;
            break;
        case O_DUR:
            if (strcmp(optarg, "buffered") != 0 && strcmp(optarg, "sync") != 0) {
                fprintf(stderr, "cram-coordinator: --durability must be buffered or sync\n");
                return 2;
            }
            cfg.durability = optarg;
            cfg.durability_set = true;
            break;
        case O_RESET: cfg.reset = true; break;
        case O_VTRIES:
            if (parse_u32(optarg, 100, &cfg.verify_tries) != 0 || cfg.verify_tries == 0) {
                fprintf(stderr, "cram-coordinator: bad --verify-tries '%s' (1..100)\n", optarg);
                return 2;
            }
            break;
        case O_VINT:
        case O_VTIMEOUT:
        case O_VSILENT: {
            uint32_t *dst = o == O_VINT ? &cfg.verify_interval_ms
                          : o == O_VTIMEOUT ? &cfg.verify_timeout_ms : &cfg.verify_silent_ms;
            if (parse_u32(optarg, 600000, dst) != 0 || *dst == 0) {
                fprintf(stderr, "cram-coordinator: bad --%s '%s' (1..600000 ms)\n",
                        o == O_VINT ? "verify-interval-ms"
                        : o == O_VTIMEOUT ? "verify-timeout-ms" : "verify-silent-ms", optarg);
                return 2;
            }
            break;
        }
        case O_SESSION:
            if (parse_u32(optarg, 600000, &cfg.zk_session_ms) != 0 || cfg.zk_session_ms < 100) {
                fprintf(stderr, "cram-coordinator: bad --zk-session-ms '%s' (100..600000)\n", optarg);
                return 2;
            }
            break;
        case O_EXIT_ON_LOSS: exit_on_loss = true; break;
        case O_PBYTES:
        case O_POBJECTS: {
            uint64_t *dst = o == O_PBYTES ? &cfg.partition_bytes : &cfg.partition_objects;
            if (parse_size(optarg, dst) != 0 || *dst == 0) {
                fprintf(stderr, "cram-coordinator: bad --%s '%s' (a positive number, K/M/G suffix allowed)\n",
                        o == O_PBYTES ? "partition-bytes" : "partition-objects", optarg);
                return 2;
            }
            break;
        }
        case O_STATS_MS:
            if (parse_u32(optarg, 3600000, &cfg.stats_interval_ms) != 0) {
                fprintf(stderr, "cram-coordinator: bad --stats-interval-ms '%s' (0..3600000)\n", optarg);
                return 2;
            }
            if (cfg.stats_interval_ms == 0)
                cfg.stats_interval_ms = UINT32_MAX;     /* 0 on the command line: no polling */
            break;
        case O_RETRY_MS:
            if (parse_u32(optarg, 600000, &cfg.recovery_retry_ms) != 0 || cfg.recovery_retry_ms == 0) {
                fprintf(stderr, "cram-coordinator: bad --recovery-retry-ms '%s' (1..600000)\n", optarg);
                return 2;
            }
            break;
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cram-coordinator: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (zk == NULL) {
        fprintf(stderr, "cram-coordinator: --zk is required\n");
        usage(stderr);
        return 2;
    }
    struct locator zl;
    char err[256];
    if (loc_parse(zk, &zl, err, sizeof(err)) != 0 || strcmp(zl.proto, "zk") != 0) {
        fprintf(stderr, "cram-coordinator: bad --zk '%s': %s\n", zk,
                strcmp(zl.proto, "zk") ? "expected zk:HOST:PORT[,HOST:PORT]" : err);
        return 2;
    }
    cfg.zk_hosts = zl.zk_hosts;
    log_init("cram-coordinator", level);

    /* Block the stop signals in every thread (ZooKeeper's included, created
     * later); one thread waits for them. */
    static struct sigctx sc = { .mu = PTHREAD_MUTEX_INITIALIZER };
    sigemptyset(&sc.set);
    sigaddset(&sc.set, SIGTERM);
    sigaddset(&sc.set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sc.set, NULL);
    signal(SIGPIPE, SIG_IGN);

    pthread_t st;
    if (pthread_create(&st, NULL, signal_thread, &sc) != 0) {
        CRAM_ERROR("cannot start the signal thread");
        return 1;
    }
    pthread_detach(st);
    /* One coord per term: a coordinator that loses leadership (or, as a
     * standby, its ZooKeeper session) is destroyed and a fresh one joins the
     * election again, unless --exit-on-loss or a stop signal. */
    int rc;
    for (int term = 0;; term++) {
        coord *c = coord_create(&cfg, err, sizeof(err));
        if (c == NULL) {
            CRAM_ERROR("cannot start: %s", err);
            return 1;
        }
        pthread_mutex_lock(&sc.mu);
        sc.c = c;
        if (sc.stopped)
            coord_stop(c);
        pthread_mutex_unlock(&sc.mu);
        CRAM_INFO("cram-coordinator listening on %s, cluster '%s', ZooKeeper %s", coord_locator(c),
                  cfg.cluster, cfg.zk_hosts);
        rc = coord_run(c);
        bool lost = rc != 0 && coord_lost_leadership(c);
        pthread_mutex_lock(&sc.mu);
        sc.c = NULL;
        bool stopped = sc.stopped != 0;
        pthread_mutex_unlock(&sc.mu);
        coord_destroy(c);
        if (stopped || (!lost && (rc == 0 || term == 0)))
            break;
        if (!lost) {
            /* a later term (a standby joining again) failed on ZooKeeper
             * trouble: keep trying, once a second */
            CRAM_WARN("could not join the election again; retrying in 1 s");
            struct timespec ts = { 1, 0 };
            nanosleep(&ts, NULL);
            pthread_mutex_lock(&sc.mu);
            stopped = sc.stopped != 0;
            pthread_mutex_unlock(&sc.mu);
            if (stopped)
                break;
            continue;
        }
        if (exit_on_loss) {
            CRAM_INFO("cram-coordinator exiting: leadership lost (--exit-on-loss)");
            return 3;
        }
        CRAM_INFO("leadership or ZooKeeper session lost: joining the election again as a standby");
        cfg.reset = false;          /* never wipe the state the new leader owns */
    }
    CRAM_INFO("cram-coordinator exiting%s", rc ? " after an error" : "");
    return rc ? 1 : 0;
}
