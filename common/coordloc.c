/*
 * coordloc.c -- finding the coordinator; see coordloc.h.
 *
 * A "zk:" locator is resolved with a short-lived ZooKeeper handle: connect
 * (bounded by the caller's timeout), read /cram/<cluster>/coordinator (a
 * LeaderRecord), close.  The ZooKeeper client's own logging is silenced
 * unless the log level is debug.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zookeeper/zookeeper.h>

#include "cram.pb-c.h"
#include "common/coordloc.h"
#include "common/locator.h"
#include "common/log.h"

/* Connection state shared between ZooKeeper's event thread (watcher) and
 * the caller; guarded by mu. */
struct coordloc_wait {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int state;            /* 0 connecting, 1 connected, -1 failed */
};

static void coordloc_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh;
    (void)path;
    struct coordloc_wait *w = ctx;
    if (type != ZOO_SESSION_EVENT || w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    if (state == ZOO_CONNECTED_STATE)
        w->state = 1;
    else if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE)
        w->state = -1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

static int cluster_valid(const char *c)
{
    size_t n = strnlen(c, 256);
    if (n == 0 || n > 255 || strchr(c, '/') || !strcmp(c, ".") || !strcmp(c, ".."))
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)c[i] < 0x20 || (unsigned char)c[i] > 0x7e)
            return 0;
    return 1;
}

void coordloc_root(const char *cluster, char *out, size_t outlen)
{
    snprintf(out, outlen, "/cram/%s", cluster ? cluster : "main");
}

/* Wait until connected or the deadline; returns 1 if connected. */
static int wait_connected(struct coordloc_wait *w, uint32_t timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    while (w->state == 0) {
        if (pthread_cond_timedwait(&w->cond, &w->mu, &dl) == ETIMEDOUT)
            break;
    }
    int ok = w->state == 1;
    pthread_mutex_unlock(&w->mu);
    return ok;
}

static cram_status read_leader(zhandle_t *zh, const char *path, char *out, size_t outlen)
{
    char buf[2048];
    int len = (int)sizeof(buf);
    struct Stat st;
    int rc = zoo_get(zh, path, 0, buf, &len, &st);
    if (rc != ZOK) {
        CRAM_DEBUG("coordloc: zoo_get %s: %s", path, zerror(rc));
        return CRAM_COORDINATOR_UNAVAILABLE;
    }
    if (len <= 0 || len >= (int)sizeof(buf))
        return CRAM_COORDINATOR_UNAVAILABLE;
    Cram__LeaderRecord *rec = cram__leader_record__unpack(NULL, (size_t)len, (const uint8_t *)buf);
    if (rec == NULL) {
        CRAM_WARN("coordloc: leader record at %s is corrupt", path);
        return CRAM_COORDINATOR_UNAVAILABLE;
    }
    cram_status s = CRAM_OK;
    size_t n = strlen(rec->locator);
    if (n == 0 || n >= outlen)
        s = CRAM_COORDINATOR_UNAVAILABLE;
    else
        memcpy(out, rec->locator, n + 1);
    cram__leader_record__free_unpacked(rec, NULL);
    return s;
}

cram_status coordloc_find(const char *locator, const char *cluster, uint32_t timeout_ms,
                          char *out, size_t outlen)
{
    if (locator == NULL || out == NULL || outlen == 0)
        return CRAM_INVALID_ARGUMENT;
    if (cluster == NULL)
        cluster = "main";
    if (!cluster_valid(cluster))
        return CRAM_INVALID_ARGUMENT;
    struct locator l;
    char err[128];
    if (loc_parse(locator, &l, err, sizeof(err)) != 0)
        return CRAM_INVALID_ARGUMENT;
    if (strcmp(l.proto, "zk") != 0) {
        size_t n = strlen(locator);
        if (n >= outlen)
            return CRAM_INVALID_ARGUMENT;
        memcpy(out, locator, n + 1);
        return CRAM_OK;
    }
    if (l.zk_hosts[0] == '\0')
        return CRAM_INVALID_ARGUMENT;

    struct coordloc_wait w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w.cond, &ca);
    pthread_condattr_destroy(&ca);

    zoo_set_debug_level(log_level_current <= LOG_LVL_DEBUG ? ZOO_LOG_LEVEL_INFO : (ZooLogLevel)0);
    int session_ms = timeout_ms < 4000 ? 4000 : (int)timeout_ms;
    zhandle_t *zh = zookeeper_init(l.zk_hosts, coordloc_watcher, session_ms, NULL, &w, 0);
    cram_status s = CRAM_COORDINATOR_UNAVAILABLE;
    if (zh == NULL) {
        CRAM_DEBUG("coordloc: zookeeper_init(%s): %s", l.zk_hosts, strerror(errno));
        goto out_destroy;
    }
    if (!wait_connected(&w, timeout_ms)) {
        CRAM_DEBUG("coordloc: no ZooKeeper connection to %s within %u ms", l.zk_hosts, timeout_ms);
        goto out_close;
    }
    char path[300];
    coordloc_root(cluster, path, sizeof(path) - 16);
    strcat(path, "/coordinator");
    s = read_leader(zh, path, out, outlen);

out_close:
    zookeeper_close(zh);
out_destroy:
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.mu);
    return s;
}
