/* election.c -- coordinator leader election; see election.h. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include "cram.pb-c.h"
#include "common/log.h"
#include "coordinator/election.h"

#define ELECT_POLL_MS 250           /* longest wait between looks at *stop */
#define ELECT_RECHECK_MS 1000       /* look at the predecessor again without an event */

struct elect {
    zks *z;
    char node[64];                  /* "n-0000000007" */
};

long long elect_seq(const char *name)
{
    const char *dash = name ? strrchr(name, '-') : NULL;
    if (dash == NULL || dash[1] == '\0')
        return -1;
    long long v = 0;
    for (const char *p = dash + 1; *p; p++) {
        if (*p < '0' || *p > '9' || v > (LLONG_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

int elect_predecessor(char *const *names, int n, const char *mine)
{
    long long me = elect_seq(mine);
    if (me < 0)
        return -1;
    int best = -1;
    long long best_seq = -1;
    for (int i = 0; i < n; i++) {
        long long s = elect_seq(names[i]);
        if (s >= 0 && s < me && s > best_seq) {
            best = i;
            best_seq = s;
        }
    }
    return best;
}

elect *elect_join(zks *z, const char *locator, int *rc)
{
    elect *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        *rc = ZSYSTEMERROR;
        return NULL;
    }
    e->z = z;
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    Cram__LeaderRecord rec = CRAM__LEADER_RECORD__INIT;
    rec.locator = (char *)locator;
    rec.pid = (uint32_t)getpid();
    rec.host = host;
    uint8_t buf[1024];
    size_t len = cram__leader_record__get_packed_size(&rec);
    if (len > sizeof(buf)) {
        *rc = ZBADARGUMENTS;
        goto out_free;
    }
    cram__leader_record__pack(&rec, buf);
    char path[600], created[600];
    snprintf(path, sizeof(path), "%s/election/n-", zks_root(z));
    /* An unknown outcome (connection lost mid-create) is retried: a node
     * created by the lost attempt is ours too (same session) and harmless --
     * it only sorts before this one, and goes with the session. */
    for (int tries = 0;; tries++) {
        *rc = zoo_create(zks_raw(z), path, (const char *)buf, (int)len, &ZOO_OPEN_ACL_UNSAFE,
                         ZOO_EPHEMERAL | ZOO_SEQUENCE, created, sizeof(created));
        if ((*rc != ZCONNECTIONLOSS && *rc != ZOPERATIONTIMEOUT) || zks_expired(z) || tries >= 100)
            break;
        usleep(ELECT_POLL_MS * 1000);
    }
    if (*rc != ZOK)
        goto out_free;
    const char *slash = strrchr(created, '/');
    const char *name = slash ? slash + 1 : created;
    if (strlen(name) >= sizeof(e->node)) {
        *rc = ZBADARGUMENTS;        /* cannot happen: "n-" and 10 digits */
        goto out_free;
    }
    memcpy(e->node, name, strlen(name) + 1);
    return e;

out_free:
    free(e);
    return NULL;
}

const char *elect_node(const elect *e) { return e->node; }

/* Our own earlier nodes (a create retried after connection loss) are not
 * predecessors to wait for: they are deleted. */
static bool own_node(zks *z, const char *name)
{
    char path[128];
    snprintf(path, sizeof(path), "election/%s", name);
    char abs[700];
    snprintf(abs, sizeof(abs), "%s/%s", zks_root(z), path);
    struct Stat st;
    const clientid_t *me = zoo_client_id(zks_raw(z));
    if (me == NULL || zoo_exists(zks_raw(z), abs, 0, &st) != ZOK || st.ephemeralOwner != me->client_id)
        return false;
    zoo_delete(zks_raw(z), abs, -1);
    return true;
}

int elect_wait(elect *e, volatile int *stop)
{
    zks *z = e->z;
    char last_pred[64] = "";
    for (;;) {
        if (stop != NULL && *stop)
            return ZCLOSING;
        if (zks_expired(z))
            return ZSESSIONEXPIRED;
        uint64_t seen = zks_events(z);
        char **names = NULL;
        int n = 0;
        int rc = zks_children(z, "election", &names, &n);
        if (rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT) {
            zks_wait_event(z, seen, ELECT_POLL_MS);
            continue;
        }
        if (rc != ZOK)
            return rc;
        bool present = false;
        for (int i = 0; i < n; i++)
            present |= strcmp(names[i], e->node) == 0;
        if (!present) {
            zks_free_names(names, n);
            /* only the session's end removes it (or someone who thought we
             * were dead: then we cannot trust our place) */
            CRAM_WARN("election node %s is gone", e->node);
            return ZNONODE;
        }
        int p = elect_predecessor(names, n, e->node);
        if (p < 0) {
            zks_free_names(names, n);
            return ZOK;
        }
        char pred[64];
        snprintf(pred, sizeof(pred), "%s", names[p]);
        zks_free_names(names, n);
        char ppath[128];
        snprintf(ppath, sizeof(ppath), "election/%s", pred);
        if (own_node(z, pred))
            continue;
        rc = zks_remove_if_gone(z, ppath);
        if (rc == ZOK || rc == ZNONODE)
            continue;
        /* Watch the predecessor; the watch (or a session event) wakes us. */
        rc = zks_watch(z, ppath);
        if (rc == ZNONODE)
            continue;
        if (strcmp(pred, last_pred) != 0) {
            CRAM_INFO("standby: election node %s waits for %s", e->node, pred);
            snprintf(last_pred, sizeof(last_pred), "%s", pred);
        }
        /* Sleep until an event, *stop, or ELECT_RECHECK_MS (a predecessor
         * killed on this host is noticed by the periodic look). */
        for (int waited = 0; waited < ELECT_RECHECK_MS && zks_events(z) == seen; waited += ELECT_POLL_MS) {
            if ((stop != NULL && *stop) || zks_expired(z))
                break;
            zks_wait_event(z, seen, ELECT_POLL_MS);
        }
    }
}

void elect_free(elect *e, bool remove)
{
    if (e == NULL)
        return;
    if (remove) {
        char abs[700];
        snprintf(abs, sizeof(abs), "%s/election/%s", zks_root(e->z), e->node);
        zoo_delete(zks_raw(e->z), abs, -1);
    }
    free(e);
}
