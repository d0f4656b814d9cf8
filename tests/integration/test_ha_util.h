/*
 * test_ha_util.h -- helpers shared by the coordinator high-availability
 * tests (test_ha_*.c; each includes this once): start extra coordinators
 * with their own flags and environment (fault points, session timeout), read
 * the leader record and snapshot ZooKeeper's nodes directly, wait for text
 * in a log.
 *
 * Coordinators started here live in struct h_proc slots of the test's own;
 * they are killed at exit (PDEATHSIG and an atexit hook) like the harness's.
 * Threads: single-threaded, like the tests.
 */
#ifndef CRAM_TEST_HA_UTIL_H
#define CRAM_TEST_HA_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include "cram.pb-c.h"
#include "harness.h"

#define HA_SESSION_MS 3000u          /* the coordinators' ZooKeeper session (scaled) */
#define HA_MAX_TRACKED 32

static pid_t ha_tracked[HA_MAX_TRACKED];

static inline void ha_atexit(void)
{
    for (int i = 0; i < HA_MAX_TRACKED; i++) {
        if (ha_tracked[i] > 0) {
            kill(ha_tracked[i], SIGCONT);
            kill(ha_tracked[i], SIGKILL);
            waitpid(ha_tracked[i], NULL, 0);
            ha_tracked[i] = 0;
        }
    }
}

static inline void ha_track(pid_t pid, int on)
{
    static int registered;
    if (!registered) {
        atexit(ha_atexit);
        registered = 1;
    }
    for (int i = 0; i < HA_MAX_TRACKED; i++) {
        if (on && ha_tracked[i] == 0) {
            ha_tracked[i] = pid;
            return;
        }
        if (!on && ha_tracked[i] == pid) {
            ha_tracked[i] = 0;
            return;
        }
    }
}

static inline void ha_sleep_ms(uint64_t ms)
{
    struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* fork/exec argv with env "NAME=VALUE" entries (NULL-terminated, may be
 * NULL) added; output appended to dir/<p->name>.log. */
static inline int ha_spawn(struct h_proc *p, const char *dir, char *const argv[], char *const env[])
{
    snprintf(p->log, sizeof(p->log), "%s/%s.log", dir, p->name);
    int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    dprintf(fd, "+");
    for (int i = 0; env && env[i]; i++)
        dprintf(fd, " %s", env[i]);
    for (int i = 0; argv[i]; i++)
        dprintf(fd, " %s", argv[i]);
    dprintf(fd, "\n");
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        setpgid(0, 0);
        for (int i = 0; env && env[i]; i++)
            putenv(env[i]);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fd);
    p->pid = pid;
    p->status = 0;
    ha_track(pid, 1);
    return 0;
}

/* Reap p if it exited; 1 while it runs. */
static inline int ha_alive(struct h_proc *p)
{
    if (p->pid <= 0)
        return 0;
    int st;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == 0)
        return 1;
    if (r == p->pid) {
        p->status = st;
        ha_track(p->pid, 0);
        p->pid = 0;
    }
    return 0;
}

/* Wait (scaled timeout_ms) for p to exit; its wait status, or -1. */
static inline int ha_wait_exit(struct h_proc *p, uint64_t timeout_ms)
{
    uint64_t deadline = h_now_ms() + h_ms(timeout_ms);
    while (h_now_ms() < deadline) {
        if (!ha_alive(p))
            return p->status;
        ha_sleep_ms(10);
    }
    return -1;
}

static inline int ha_kill(struct h_proc *p, int sig)
{
    if (p->pid <= 0)
        return -1;
    pid_t pid = p->pid;
    kill(pid, SIGCONT);
    kill(pid, sig);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    ha_track(pid, 0);
    p->pid = 0;
    p->status = st;
    return st;
}

/* SIGTERM and wait; 0 if it then exited cleanly (status 0), else -1. */
static inline int ha_stop(struct h_proc *p)
{
    if (p->pid <= 0)
        return 0;
    kill(p->pid, SIGCONT);
    kill(p->pid, SIGTERM);
    int st = ha_wait_exit(p, 15000);
    if (st == -1) {
        ha_kill(p, SIGKILL);
        return -1;
    }
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Start a coordinator of c's cluster listening on port (0 = any), with the
 * HA session timeout and optional fault spec (CRAM_FAULT).  Every HA
 * coordinator runs with CRAM_TEST_NO_PID_CHECK: a standby must wait for the
 * dead leader's session to expire, as it would on another host. */
static inline int ha_start_coord(struct h_cluster *c, struct h_proc *p, const char *zk, int port, int reset,
                          const char *fault)
{
    char bin[512], listen[128], session[32], repl[16];
    static char fault_env[256];
    snprintf(listen, sizeof(listen), "tcp:host=127.0.0.1,port=%d", port);
    snprintf(session, sizeof(session), "%llu", (unsigned long long)h_ms(HA_SESSION_MS));
    snprintf(repl, sizeof(repl), "%d", c->replicas >= 0 ? c->replicas : 1);
    char *argv[] = { (char *)h_bin("cram-coordinator", bin, sizeof(bin)), "--zk", (char *)zk,
                     "--cluster", c->cluster, "--listen", listen, "--zk-session-ms", session,
                     "--replicas", repl, reset ? "--reset" : NULL, NULL };
    char *env[3] = { "CRAM_TEST_NO_PID_CHECK=1", NULL, NULL };
    if (fault != NULL) {
        snprintf(fault_env, sizeof(fault_env), "CRAM_FAULT=%s", fault);
        env[1] = fault_env;
    }
    return ha_spawn(p, c->dir, argv, env);
}

/* Does the file contain text? */
static inline int ha_log_has(const char *path, const char *text)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char line[2048];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

static inline int ha_log_count(const char *path, const char *text)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char line[2048];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, text) != NULL;
    fclose(f);
    return n;
}

/* Wait (scaled) until the log contains text: 0, or -1. */
static inline int ha_wait_log(const char *path, const char *text, uint64_t timeout_ms)
{
    uint64_t deadline = h_now_ms() + h_ms(timeout_ms);
    while (h_now_ms() < deadline) {
        if (ha_log_has(path, text))
            return 0;
        ha_sleep_ms(20);
    }
    return -1;
}

static inline void ha_dump(const struct h_proc *p)
{
    FILE *f = fopen(p->log, "r");
    if (f == NULL)
        return;
    fprintf(stderr, "----- %s -----\n", p->log);
    char line[2048];
    while (fgets(line, sizeof(line), f))
        fputs(line, stderr);
    fclose(f);
}

/* ---- ZooKeeper, read directly ------------------------------------------ */

/* A handle on "h:p" (no "zk:"), connected within 10 s, or NULL. */
static inline zhandle_t *ha_zk_open(const char *hosts)
{
    zoo_set_debug_level((ZooLogLevel)0);
    zhandle_t *zh = zookeeper_init(hosts, NULL, 10000, NULL, NULL, 0);
    if (zh == NULL)
        return NULL;
    uint64_t deadline = h_now_ms() + 10000;
    while (zoo_state(zh) != ZOO_CONNECTED_STATE && h_now_ms() < deadline)
        ha_sleep_ms(10);
    if (zoo_state(zh) != ZOO_CONNECTED_STATE) {
        zookeeper_close(zh);
        return NULL;
    }
    return zh;
}

struct ha_leader {
    uint32_t pid;
    uint64_t epoch;
    char locator[256];
};

/* The leader record of cluster: 0, or -1 if there is none (or unreadable). */
static inline int ha_leader_get(zhandle_t *zh, const char *cluster, struct ha_leader *out)
{
    char path[300], buf[1024];
    snprintf(path, sizeof(path), "/cram/%s/coordinator", cluster);
    int len = (int)sizeof(buf);
    struct Stat st;
    if (zoo_get(zh, path, 0, buf, &len, &st) != ZOK || len <= 0 || len >= (int)sizeof(buf))
        return -1;
    Cram__LeaderRecord *r = cram__leader_record__unpack(NULL, (size_t)len, (const uint8_t *)buf);
    if (r == NULL)
        return -1;
    out->pid = r->pid;
    out->epoch = r->epoch;
    snprintf(out->locator, sizeof(out->locator), "%s", r->locator);
    cram__leader_record__free_unpacked(r, NULL);
    return 0;
}

/* Wait (scaled timeout) for a leader record naming pid; the ms it took, or
 * -1 on timeout. */
static inline int64_t ha_wait_leader(zhandle_t *zh, const char *cluster, pid_t pid, uint64_t timeout_ms)
{
    uint64_t t0 = h_now_ms(), deadline = t0 + h_ms(timeout_ms);
    while (h_now_ms() < deadline) {
        struct ha_leader l;
        if (ha_leader_get(zh, cluster, &l) == 0 && (pid_t)l.pid == pid)
            return (int64_t)(h_now_ms() - t0);
        ha_sleep_ms(10);
    }
    return -1;
}

/* Snapshot of every node below a root: path, mzxid, version. */
struct ha_node {
    char path[600];
    int64_t mzxid;
    int32_t version;
};

struct ha_snap {
    struct ha_node *n;
    int count, cap;
};

static inline int ha_snap_walk(zhandle_t *zh, const char *path, const char *skip, struct ha_snap *s)
{
    if (skip != NULL && strcmp(path, skip) == 0)
        return 0;
    struct Stat st;
    int rc = zoo_exists(zh, path, 0, &st);
    if (rc == ZNONODE)
        return 0;
    if (rc != ZOK)
        return -1;
    if (s->count == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        struct ha_node *n = realloc(s->n, (size_t)cap * sizeof(*n));
        if (n == NULL)
            return -1;
        s->n = n;
        s->cap = cap;
    }
    struct ha_node *e = &s->n[s->count++];
    snprintf(e->path, sizeof(e->path), "%s", path);
    e->mzxid = st.mzxid;
    e->version = st.version;
    struct String_vector kids = { 0, NULL };
    rc = zoo_get_children(zh, path, 0, &kids);
    if (rc == ZNONODE)
        return 0;
    if (rc != ZOK)
        return -1;
    for (int i = 0; i < kids.count && rc == ZOK; i++) {
        char child[600];
        if (snprintf(child, sizeof(child), "%.299s/%.200s", path, kids.data[i]) >= (int)sizeof(child) ||
            ha_snap_walk(zh, child, skip, s) != 0)
            rc = -1;
    }
    deallocate_String_vector(&kids);
    return rc == ZOK ? 0 : -1;
}

static inline int ha_node_cmp(const void *a, const void *b)
{
    return strcmp(((const struct ha_node *)a)->path, ((const struct ha_node *)b)->path);
}

/* Snapshot root's subtree, skipping the subtree `skip` (may be NULL). */
static inline int ha_snapshot(zhandle_t *zh, const char *root, const char *skip, struct ha_snap *s)
{
    memset(s, 0, sizeof(*s));
    if (ha_snap_walk(zh, root, skip, s) != 0)
        return -1;
    qsort(s->n, (size_t)s->count, sizeof(s->n[0]), ha_node_cmp);
    return 0;
}

/* Number of differences (added, removed or modified nodes), each printed. */
static inline int ha_snap_diff(const struct ha_snap *a, const struct ha_snap *b)
{
    int i = 0, j = 0, d = 0;
    while (i < a->count || j < b->count) {
        int c = i >= a->count ? 1 : j >= b->count ? -1 : strcmp(a->n[i].path, b->n[j].path);
        if (c < 0) {
            fprintf(stderr, "zk diff: %s removed\n", a->n[i++].path);
            d++;
        } else if (c > 0) {
            fprintf(stderr, "zk diff: %s added\n", b->n[j++].path);
            d++;
        } else {
            if (a->n[i].mzxid != b->n[j].mzxid || a->n[i].version != b->n[j].version) {
                fprintf(stderr, "zk diff: %s modified (version %d -> %d)\n", a->n[i].path,
                        a->n[i].version, b->n[j].version);
                d++;
            }
            i++;
            j++;
        }
    }
    return d;
}

static inline void ha_snap_free(struct ha_snap *s)
{
    free(s->n);
    memset(s, 0, sizeof(*s));
}

/* Delete path and everything below it (ZOK also if it did not exist). */
static inline int ha_zk_wipe(zhandle_t *zh, const char *path)
{
    struct String_vector kids = { 0, NULL };
    int rc = zoo_get_children(zh, path, 0, &kids);
    if (rc == ZNONODE)
        return ZOK;
    if (rc != ZOK)
        return rc;
    for (int i = 0; i < kids.count && rc == ZOK; i++) {
        char child[600];
        if (snprintf(child, sizeof(child), "%.299s/%.200s", path, kids.data[i]) >= (int)sizeof(child))
            rc = ZBADARGUMENTS;
        else
            rc = ha_zk_wipe(zh, child);
    }
    deallocate_String_vector(&kids);
    if (rc == ZOK)
        rc = zoo_delete(zh, path, -1);
    return rc == ZNONODE ? ZOK : rc;
}

/* Number of children of path, or -1. */
static inline int ha_children(zhandle_t *zh, const char *path)
{
    struct String_vector kids = { 0, NULL };
    if (zoo_get_children(zh, path, 0, &kids) != ZOK)
        return -1;
    int n = kids.count;
    deallocate_String_vector(&kids);
    return n;
}

/* ---- objects ----------------------------------------------------------- */

static inline int ha_write_keys(cram_client *cl, uint64_t table, const char *prefix, int n)
{
    int bad = 0;
    for (int i = 0; i < n; i++) {
        char key[48], val[48];
        int kl = snprintf(key, sizeof(key), "%s%d", prefix, i);
        int vl = snprintf(val, sizeof(val), "v-%s%d", prefix, i);
        cram_status st = cram_write(cl, table, key, (uint16_t)kl, val, (uint32_t)vl, NULL, NULL);
        if (st != CRAM_OK && bad++ < 3)
            fprintf(stderr, "write %s: %s\n", key, cram_status_name(st));
    }
    return bad;
}

static inline int ha_check_keys(cram_client *cl, uint64_t table, const char *prefix, int n)
{
    int bad = 0;
    for (int i = 0; i < n; i++) {
        char key[48], want[48], buf[48];
        uint32_t len = 0;
        int kl = snprintf(key, sizeof(key), "%s%d", prefix, i);
        int vl = snprintf(want, sizeof(want), "v-%s%d", prefix, i);
        cram_status st = cram_read(cl, table, key, (uint16_t)kl, NULL, NULL, buf, sizeof(buf), &len);
        if (st != CRAM_OK || len != (uint32_t)vl || memcmp(buf, want, len) != 0) {
            if (bad++ < 3)
                fprintf(stderr, "read %s: %s\n", key, cram_status_name(st));
        }
    }
    return bad;
}

#endif
