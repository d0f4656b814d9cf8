/* zkstore.c -- ZooKeeper storage for the coordinator; see zkstore.h. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include "cram.pb-c.h"
#include "common/log.h"
#include "coordinator/zkstore.h"

#define ZKS_PATH_MAX 600
#define ZKS_SESSION_MS 6000

struct zks {
    zhandle_t *zh;
    char root[ZKS_PATH_MAX];
    int fence_version;            /* version of R/epoch we won; -1 before zks_claim */
    /* Session state, written by ZooKeeper's event thread (watcher) and read
     * by the owner thread: guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int connected;
    int expired;
    uint64_t down_since_ms;       /* monotonic ms of the last loss of connection; 0 while connected */
    uint64_t events;              /* watch and session events seen (zks_wait_event) */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void zks_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh;
    (void)path;
    struct zks *z = ctx;
    if (z == NULL)
        return;
    pthread_mutex_lock(&z->mu);
    z->events++;
    if (type != ZOO_SESSION_EVENT) {
        /* a watch set with zks_watch fired */
        pthread_cond_broadcast(&z->cond);
        pthread_mutex_unlock(&z->mu);
        return;
    }
    if (state == ZOO_CONNECTED_STATE) {
        z->connected = 1;
        z->down_since_ms = 0;
    } else if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE) {
        z->expired = 1;
        z->connected = 0;
    } else {
        if (z->connected || z->down_since_ms == 0)
            z->down_since_ms = mono_ms();
        z->connected = 0;
    }
    pthread_cond_broadcast(&z->cond);
    pthread_mutex_unlock(&z->mu);
}

static void full_path(const zks *z, const char *rel, char *out, size_t outlen)
{
    int n;
    if (rel == NULL || rel[0] == '\0')
        n = snprintf(out, outlen, "%s", z->root);
    else
        n = snprintf(out, outlen, "%s/%s", z->root, rel);
    /* paths are built from validated names well below the buffer size */
    CRAM_ASSERT(n >= 0 && (size_t)n < outlen);
}

zks *zks_open(const char *hosts, const char *cluster, uint32_t timeout_ms, char *err, size_t errlen)
{
    return zks_open_session(hosts, cluster, timeout_ms, ZKS_SESSION_MS, err, errlen);
}

zks *zks_open_session(const char *hosts, const char *cluster, uint32_t timeout_ms, uint32_t session_ms,
                      char *err, size_t errlen)
{
    zks *z = calloc(1, sizeof(*z));
    if (z == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&z->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&z->cond, &ca);
    pthread_condattr_destroy(&ca);
    z->fence_version = -1;
    snprintf(z->root, sizeof(z->root), "/cram/%s", cluster ? cluster : "main");
    zoo_set_debug_level(log_level_current <= LOG_LVL_DEBUG ? ZOO_LOG_LEVEL_INFO : (ZooLogLevel)0);
    if (session_ms == 0)
        session_ms = ZKS_SESSION_MS;
    z->zh = zookeeper_init(hosts, zks_watcher, (int)session_ms, NULL, z, 0);
    if (z->zh == NULL) {
        snprintf(err, errlen, "zookeeper_init(%s): %s", hosts, strerror(errno));
        goto out_free;
    }
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&z->mu);
    while (!z->connected && !z->expired) {
        if (pthread_cond_timedwait(&z->cond, &z->mu, &dl) == ETIMEDOUT)
            break;
    }
    int ok = z->connected;
    pthread_mutex_unlock(&z->mu);
    if (!ok) {
        snprintf(err, errlen, "cannot connect to ZooKeeper at %s within %u ms", hosts, timeout_ms);
        goto out_close;
    }
    return z;

out_close:
    zookeeper_close(z->zh);
out_free:
    pthread_cond_destroy(&z->cond);
    pthread_mutex_destroy(&z->mu);
    free(z);
    return NULL;
}

void zks_close(zks *z)
{
    if (z == NULL)
        return;
    zookeeper_close(z->zh);
    pthread_cond_destroy(&z->cond);
    pthread_mutex_destroy(&z->mu);
    free(z);
}

const char *zks_root(const zks *z) { return z->root; }
uint64_t zks_epoch(const zks *z) { return z->fence_version < 0 ? 0 : (uint64_t)z->fence_version; }
void *zks_raw(zks *z) { return z->zh; }

uint32_t zks_session_ms(const zks *z)
{
    int t = zoo_recv_timeout(z->zh);
    return t > 0 ? (uint32_t)t : 0;
}

uint64_t zks_disconnected_ms(const zks *z)
{
    struct zks *m = (struct zks *)z;
    pthread_mutex_lock(&m->mu);
    uint64_t since = m->connected || m->expired ? 0 : m->down_since_ms;
    pthread_mutex_unlock(&m->mu);
    if (since == 0)
        return 0;
    uint64_t now = mono_ms();
    return now > since ? now - since : 1;
}

uint64_t zks_events(const zks *z)
{
    struct zks *m = (struct zks *)z;
    pthread_mutex_lock(&m->mu);
    uint64_t n = m->events;
    pthread_mutex_unlock(&m->mu);
    return n;
}

void zks_wait_event(zks *z, uint64_t seen, uint32_t timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&z->mu);
    while (z->events == seen && !z->expired)
        if (pthread_cond_timedwait(&z->cond, &z->mu, &dl) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&z->mu);
}

int zks_watch(zks *z, const char *path)
{
    char p[ZKS_PATH_MAX];
    full_path(z, path, p, sizeof(p));
    struct Stat st;
    return zoo_exists(z->zh, p, 1, &st);
}

bool zks_expired(const zks *z)
{
    struct zks *m = (struct zks *)z;
    pthread_mutex_lock(&m->mu);
    bool e = m->expired != 0;
    pthread_mutex_unlock(&m->mu);
    return e;
}

/* Delete abs_path and everything below it. */
static int wipe_abs(zks *z, const char *abs_path)
{
    /* A child can appear while we delete (an ephemeral node of a session
     * that is still closing, a late election node): then the final delete
     * says ZNOTEMPTY and the children are wiped again, a bounded number of
     * times. */
    int rc = ZNOTEMPTY;
    for (int attempt = 0; attempt < 20 && rc == ZNOTEMPTY; attempt++) {
        struct String_vector kids = { 0, NULL };
        rc = zoo_get_children(z->zh, abs_path, 0, &kids);
        if (rc == ZNONODE)
            return ZOK;
        if (rc != ZOK)
            return rc;
        for (int i = 0; i < kids.count && rc == ZOK; i++) {
            char child[ZKS_PATH_MAX];
            snprintf(child, sizeof(child), "%s/%s", abs_path, kids.data[i]);
            rc = wipe_abs(z, child);
        }
        deallocate_String_vector(&kids);
        if (rc != ZOK)
            return rc;
        rc = zoo_delete(z->zh, abs_path, -1);
        if (rc == ZNOTEMPTY)
            usleep(10 * 1000);
    }
    return rc == ZNONODE ? ZOK : rc;
}

int zks_wipe(zks *z)
{
    return wipe_abs(z, z->root);
}

static int create_if_missing(zks *z, const char *abs_path)
{
    int rc = zoo_create(z->zh, abs_path, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT, NULL, 0);
    return rc == ZNODEEXISTS ? ZOK : rc;
}

int zks_ensure_layout(zks *z)
{
    static const char *const dirs[] = { "", "servers", "tables", "intents", "recoveries", "epoch", "election" };
    int rc = create_if_missing(z, "/cram");
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && rc == ZOK; i++) {
        char p[ZKS_PATH_MAX];
        full_path(z, dirs[i], p, sizeof(p));
        rc = create_if_missing(z, p);
    }
    return rc;
}

bool zks_owner_gone(const uint8_t *data, size_t len)
{
    if (getenv("CRAM_TEST_NO_PID_CHECK") != NULL)
        return false;
    Cram__LeaderRecord *rec = cram__leader_record__unpack(NULL, len, data);
    if (rec == NULL)
        return false;
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    bool dead = rec->pid != 0 && (pid_t)rec->pid != getpid() && strcmp(rec->host, host) == 0 &&
                kill((pid_t)rec->pid, 0) != 0 && errno == ESRCH;
    cram__leader_record__free_unpacked(rec, NULL);
    return dead;
}

int zks_remove_if_gone(zks *z, const char *path)
{
    char abs[ZKS_PATH_MAX];
    full_path(z, path, abs, sizeof(abs));
    char buf[1024];
    int len = (int)sizeof(buf);
    struct Stat st;
    int rc = zoo_get(z->zh, abs, 0, buf, &len, &st);
    if (rc != ZOK)
        return rc;
    if (len <= 0 || len >= (int)sizeof(buf) || !zks_owner_gone((const uint8_t *)buf, (size_t)len))
        return ZNODEEXISTS;
    rc = zoo_delete(z->zh, abs, st.version);
    if (rc == ZOK)
        CRAM_INFO("%s belonged to a process on this host that is gone; removed it", abs);
    return rc;
}

static bool transient(int rc)
{
    return rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT;
}

static void nap_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* After a claim whose outcome is unknown (connection lost during the multi):
 * if the leader record is ours (created by this session), adopt the epoch it
 * names.  Returns true then. */
static bool adopt_own_record(zks *z, const char *leader, const char *epoch)
{
    char buf[1024];
    int len = (int)sizeof(buf);
    struct Stat st, est;
    const clientid_t *me = zoo_client_id(z->zh);
    if (me == NULL || zoo_get(z->zh, leader, 0, buf, &len, &st) != ZOK || st.ephemeralOwner != me->client_id ||
        len <= 0 || len >= (int)sizeof(buf))
        return false;
    Cram__LeaderRecord *rec = cram__leader_record__unpack(NULL, (size_t)len, (const uint8_t *)buf);
    if (rec == NULL)
        return false;
    bool ok = zoo_exists(z->zh, epoch, 0, &est) == ZOK && (uint64_t)est.version == rec->epoch;
    if (ok)
        z->fence_version = est.version;
    cram__leader_record__free_unpacked(rec, NULL);
    return ok;
}

int zks_claim(zks *z, const char *locator, volatile int *stop)
{
    char leader[ZKS_PATH_MAX], epoch[ZKS_PATH_MAX];
    full_path(z, "coordinator", leader, sizeof(leader));
    full_path(z, "epoch", epoch, sizeof(epoch));
    int waited = 0;
    for (;;) {
        if (stop != NULL && *stop)
            return ZCLOSING;
        if (zks_expired(z))
            return ZSESSIONEXPIRED;
        struct Stat st;
        int rc = zoo_exists(z->zh, epoch, 0, &st);
        if (transient(rc)) {
            nap_ms(250);            /* ZooKeeper away for a moment: the session may survive */
            continue;
        }
        if (rc != ZOK)
            return rc;
        char host[256] = "";
        gethostname(host, sizeof(host) - 1);
        Cram__LeaderRecord rec = CRAM__LEADER_RECORD__INIT;
        rec.locator = (char *)locator;
        rec.epoch = (uint64_t)st.version + 1;
        rec.pid = (uint32_t)getpid();
        rec.host = host;
        uint8_t buf[1024];
        size_t len = cram__leader_record__get_packed_size(&rec);
        if (len > sizeof(buf))
            return ZBADARGUMENTS;
        cram__leader_record__pack(&rec, buf);

        zoo_op_t ops[2];
        zoo_op_result_t res[2];
        memset(res, 0, sizeof(res));
        zoo_create_op_init(&ops[0], leader, (const char *)buf, (int)len, &ZOO_OPEN_ACL_UNSAFE,
                           ZOO_EPHEMERAL, NULL, 0);
        zoo_set_op_init(&ops[1], epoch, NULL, -1, st.version, NULL);
        rc = zoo_multi(z->zh, 2, ops, res);
        if (rc == ZOK) {
            z->fence_version = st.version + 1;
            return ZOK;
        }
        if (transient(rc)) {
            nap_ms(250);            /* it may have been applied: the next round looks */
            continue;
        }
        if (res[0].err == ZNODEEXISTS) {
            if (adopt_own_record(z, leader, epoch))
                return ZOK;
            if (zks_remove_if_gone(z, "coordinator") == ZOK)
                continue;
            if (!waited++)
                CRAM_INFO("another coordinator's leader record exists at %s; waiting for it to go away",
                          leader);
            nap_ms(250);
            continue;
        }
        if (res[1].err == ZBADVERSION)
            continue;       /* raced with another claimant: read the epoch again */
        return rc;
    }
}

int zks_check_leader(zks *z)
{
    char leader[ZKS_PATH_MAX];
    full_path(z, "coordinator", leader, sizeof(leader));
    struct Stat st;
    int rc = zoo_exists(z->zh, leader, 0, &st);
    if (rc == ZNONODE)
        return ZKS_FENCED;
    if (rc != ZOK)
        return rc;
    const clientid_t *me = zoo_client_id(z->zh);
    return me != NULL && st.ephemeralOwner == me->client_id && z->fence_version >= 0 ? ZOK : ZKS_FENCED;
}

int zks_commit(zks *z, struct zks_op *ops, int n)
{
    if (n < 0 || n > ZKS_MAX_OPS || z->fence_version < 0)
        return ZBADARGUMENTS;
    zoo_op_t zops[ZKS_MAX_OPS + 1];
    zoo_op_result_t res[ZKS_MAX_OPS + 1];
    memset(res, 0, sizeof(res));
    char paths[ZKS_MAX_OPS + 1][ZKS_PATH_MAX];
    char created[ZKS_MAX_OPS][ZKS_PATH_MAX];

    full_path(z, "epoch", paths[0], sizeof(paths[0]));
    zoo_check_op_init(&zops[0], paths[0], z->fence_version);
    for (int i = 0; i < n; i++) {
        char *p = paths[i + 1];
        full_path(z, ops[i].path, p, ZKS_PATH_MAX);
        switch (ops[i].kind) {
        case ZKS_CREATE:
            created[i][0] = '\0';
            zoo_create_op_init(&zops[i + 1], p, ops[i].data, ops[i].data ? (int)ops[i].len : -1,
                               &ZOO_OPEN_ACL_UNSAFE,
                               ops[i].sequential ? ZOO_PERSISTENT_SEQUENTIAL : ZOO_PERSISTENT,
                               created[i], ZKS_PATH_MAX);
            break;
        case ZKS_SET:
            zoo_set_op_init(&zops[i + 1], p, ops[i].data, ops[i].data ? (int)ops[i].len : -1, -1, NULL);
            break;
        case ZKS_DELETE:
            zoo_delete_op_init(&zops[i + 1], p, -1);
            break;
        }
    }
    int rc = zoo_multi(z->zh, n + 1, zops, res);
    if (rc != ZOK) {
        if (res[0].err == ZBADVERSION || res[0].err == ZNONODE) {
            CRAM_ERROR("ZooKeeper write fenced: epoch %d is no longer the leader's", z->fence_version);
            return ZKS_FENCED;
        }
        return rc;
    }
    size_t rootlen = strlen(z->root);
    for (int i = 0; i < n; i++) {
        if (ops[i].kind == ZKS_CREATE && ops[i].created != NULL && ops[i].created_len > 0) {
            const char *c = created[i];
            if (strncmp(c, z->root, rootlen) == 0 && c[rootlen] == '/')
                c += rootlen + 1;
            snprintf(ops[i].created, ops[i].created_len, "%s", c);
        }
    }
    return ZOK;
}

int zks_get(zks *z, const char *path, uint8_t **data, size_t *len)
{
    char p[ZKS_PATH_MAX];
    full_path(z, path, p, sizeof(p));
    *data = NULL;
    *len = 0;
    for (int tries = 0; tries < 5; tries++) {
        struct Stat st;
        int rc = zoo_exists(z->zh, p, 0, &st);
        if (rc != ZOK)
            return rc;
        int cap = st.dataLength + 1;          /* +1: tells a grown node from a full buffer */
        uint8_t *buf = malloc((size_t)cap);
        if (buf == NULL)
            return ZSYSTEMERROR;
        int got = cap;
        rc = zoo_get(z->zh, p, 0, (char *)buf, &got, &st);
        if (rc != ZOK) {
            free(buf);
            return rc;
        }
        if (got < cap) {
            if (got <= 0) {
                free(buf);
                return ZOK;
            }
            *data = buf;
            *len = (size_t)got;
            return ZOK;
        }
        free(buf);                            /* changed between exists and get: again */
    }
    return ZSYSTEMERROR;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int zks_children(zks *z, const char *path, char ***names, int *count)
{
    char p[ZKS_PATH_MAX];
    full_path(z, path, p, sizeof(p));
    *names = NULL;
    *count = 0;
    struct String_vector kids = { 0, NULL };
    int rc = zoo_get_children(z->zh, p, 0, &kids);
    if (rc != ZOK)
        return rc;
    char **out = calloc((size_t)kids.count + 1, sizeof(char *));
    if (out == NULL) {
        deallocate_String_vector(&kids);
        return ZSYSTEMERROR;
    }
    for (int i = 0; i < kids.count; i++) {
        out[i] = strdup(kids.data[i]);
        if (out[i] == NULL) {
            zks_free_names(out, i);
            deallocate_String_vector(&kids);
            return ZSYSTEMERROR;
        }
    }
    qsort(out, (size_t)kids.count, sizeof(char *), cmp_names);
    *names = out;
    *count = kids.count;
    deallocate_String_vector(&kids);
    return ZOK;
}

void zks_free_names(char **names, int count)
{
    if (names == NULL)
        return;
    for (int i = 0; i < count; i++)
        free(names[i]);
    free(names);
}
