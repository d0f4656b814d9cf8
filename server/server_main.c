/*
 * server_main.c -- cram-server: one dispatch thread (a tp_loop) serving the
 * master service on a listener, plus enlistment with the coordinator, the
 * server's copy of the server list (SERVER_LIST_UPDATE pushes are applied
 * here, before any service sees them) and the failure detector (pings of
 * random peers, crash hints to the coordinator).
 *
 * Threads: the main thread runs the tp_loop and owns everything below
 * (listener, master, server list, failure detector, coordinator session,
 * enlistment state).  Two helpers: a signal thread (sigwait, then sets
 * `stopping` and wakes the loop) and, while a "zk:" coordinator locator is
 * being resolved, a short-lived locate thread that blocks in coordloc_find
 * and posts its result to the loop.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cram.pb-c.h"
#include "common/clock.h"
#include "common/coordloc.h"
#include "common/locator.h"
#include "common/log.h"
#include "common/serverlist.h"
#include "common/wire.h"
#include "master/master_service.h"
#include "backup/backup_service.h"
#include "server/failure_detector.h"
#include "transport/transport.h"

#define SRV_LOCATE_MS     2000      /* per attempt to read the leader record */
#define SRV_ENLIST_MS     5000      /* per ENLIST_SERVER RPC */
#define SRV_BACKOFF_MIN   100       /* ms between enlistment attempts ... */
#define SRV_BACKOFF_MAX   2000      /* ... doubling up to this */
#define SRV_HINT_MS       2000      /* per HINT_SERVER_CRASHED RPC */

#define SRV_SVC_MASTER 1u
#define SRV_SVC_BACKUP 2u

#define SRV_MAX_LISTEN 8            /* --listen locators (one per transport) */

struct server {
    /* set up by main, then read-only */
    const char *coordinator;
    const char *cluster;
    const char *failure_domain;
    uint32_t services;
    uint64_t memory_bytes;

    /* main (loop) thread only */
    tp_loop *loop;
    tp_listener *listeners[SRV_MAX_LISTEN];    /* one per --listen locator, same loop */
    int nlisteners;
    master_service *master;
    backup_service *backup;
    char locator[512];              /* the listeners' locators joined by ';' (advertised) */
    tp_session *csess;              /* to the coordinator (enlistment, then crash hints) */
    uint32_t backoff_ms;
    uint32_t attempts;
    uint64_t server_id;             /* 0 until enlisted */
    char coord_loc[512];            /* the coordinator's locator as last found */
    server_list *sl;                /* the cluster's server list (pushed by the coordinator) */
    fdet *fd;                       /* failure detector: starts once enlisted */
    uint32_t replicas;              /* cluster settings handed out at enlistment */
    int replication_set;            /* master_set_replication done (once) */
    char durability[16];

    /* locate thread: started and joined by the loop thread; it writes
     * found_loc/locate_st before tp_loop_post (which orders the accesses). */
    pthread_t locate_thread;
    int locating;
    char found_loc[512];
    cram_status locate_st;

    atomic_int stopping;            /* any thread */
    sigset_t sigs;
};

static void enlist_attempt(void *arg);

static void reply_status(tp_rpc *rpc, int32_t status)
{
    struct wire_resp_hdr h = { .status = status };
    struct iovec iov = { &h, sizeof(h) };
    tp_rpc_reply(rpc, &iov, 1);
}

/* PING: an empty body is answered OK.  A body of exactly a struct
 * wire_target names the server the sender means (failure detection): a
 * process that is not that server answers CRAM_WRONG_SERVER, one that is not
 * enlisted yet CRAM_RETRY -- so a newcomer at a dead server's locator never
 * vouches for it.  Other bodies are ignored, as before. */
static void handle_ping(struct server *s, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct wire_target t;
    if (len != sizeof(struct wire_req_hdr) + sizeof(t)) {
        reply_status(rpc, CRAM_OK);
        return;
    }
    memcpy(&t, req + sizeof(struct wire_req_hdr), sizeof(t));
    if (t.target_server_id == 0 || t.target_server_id == s->server_id)
        reply_status(rpc, CRAM_OK);
    else
        reply_status(rpc, s->server_id == 0 ? CRAM_RETRY : CRAM_WRONG_SERVER);
}

/* Stop at once if the list says this server was declared crashed: the
 * cluster has moved on without it, and serving on would mean zombie writes. */
static void check_self(struct server *s)
{
    if (s->server_id == 0)
        return;
    const struct sl_entry *e = sl_find(s->sl, s->server_id);
    if (e != NULL && e->status != SL_UP) {
        CRAM_ERROR("server %lu declared %s by the coordinator; exiting", (unsigned long)s->server_id,
                   e->status == SL_CRASHED ? "crashed" : "removed");
        exit(1);
    }
}

static const char *status_name(int st)
{
    return st == SL_UP ? "up" : st == SL_CRASHED ? "crashed" : st == SL_REMOVED ? "removed" : "new";
}

/* Subscriber: log each change of the list (the first full list quietly). */
static void list_changed(void *arg, const struct sl_entry *e, int old_status)
{
    struct server *s = arg;
    if (old_status < 0 && e->status == SL_UP)
        CRAM_DEBUG("server list: server %lu up at %s", (unsigned long)e->id, e->locators);
    else
        CRAM_INFO("server list version %lu: server %lu is %s (was %s)", (unsigned long)sl_version(s->sl),
                  (unsigned long)e->id, status_name(e->status), status_name(old_status));
}

static void relocate(struct server *s);

/* SERVER_LIST_UPDATE (any service field): applied to the one server list.
 * A partial update that skips versions is refused with CRAM_RETRY, so the
 * coordinator sends the whole list instead; an old one is acknowledged and
 * ignored. */
static void handle_list_update(struct server *s, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    const uint8_t *body = req + sizeof(struct wire_req_hdr);
    size_t blen = len - sizeof(struct wire_req_hdr);
    Cram__ServerList *l = cram__server_list__unpack(NULL, blen, body);
    if (l == NULL) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    bool gap = !l->full && l->version > sl_version(s->sl) + 1;
    if (l->full && l->settings != NULL && l->version > sl_version(s->sl) &&
        (l->settings->replicas != s->replicas || strcmp(l->settings->durability, s->durability) != 0)) {
        CRAM_INFO("cluster settings: replicas=%u durability=%s", l->settings->replicas, l->settings->durability);
        s->replicas = l->settings->replicas;
        snprintf(s->durability, sizeof(s->durability), "%s", l->settings->durability);
    }
    uint64_t version = l->version;
    bool full = l->full;
    cram__server_list__free_unpacked(l, NULL);
    if (gap) {
        CRAM_DEBUG("server list update %lu skips versions after %lu: asking for the full list",
                   (unsigned long)version, (unsigned long)sl_version(s->sl));
        reply_status(rpc, CRAM_RETRY);
        return;
    }
    cram_status st = sl_apply(s->sl, body, blen);
    reply_status(rpc, st);
    if (st == CRAM_OK)
        check_self(s);
    /* A new leader sends every server the full list when it takes over:
     * read the leader record again, so the master service (recovery info,
     * recovery results) and crash hints go to the new coordinator. */
    if (st == CRAM_OK && full && s->server_id != 0)
        relocate(s);
}

/* ---- crash hints ------------------------------------------------------------ */

static void hint_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct server *s = arg;
    struct wire_resp_hdr h = { .status = st };
    if (st == CRAM_OK && len >= sizeof(h))
        memcpy(&h, resp, sizeof(h));
    if (st == CRAM_TRANSPORT_ERROR)
        relocate(s);                /* the coordinator may have moved */
    else if (h.status != CRAM_OK)
        CRAM_DEBUG("crash hint: %s", cram_strerror((cram_status)h.status));
}

/* A session to the coordinator, reopened if it broke; NULL if none. */
static tp_session *coord_session(struct server *s)
{
    if (s->csess != NULL && tp_session_alive(s->csess))
        return s->csess;
    if (s->csess != NULL) {
        tp_session_close(s->csess);
        s->csess = NULL;
    }
    cram_status st;
    if (s->coord_loc[0] != '\0')
        s->csess = tp_session_open(s->loop, s->coord_loc, &st);
    if (s->csess == NULL)
        relocate(s);
    return s->csess;
}

/* Failure detector callback: tell the coordinator, which verifies. */
static void send_hint(void *arg, uint64_t id, const char *why)
{
    struct server *s = arg;
    CRAM_INFO("server %lu looks down (%s); telling the coordinator", (unsigned long)id, why);
    tp_session *cs = coord_session(s);
    if (cs == NULL) {
        CRAM_WARN("no session to the coordinator: crash hint for server %lu dropped", (unsigned long)id);
        return;
    }
    Cram__ServerIdRequest rq = CRAM__SERVER_ID_REQUEST__INIT;
    rq.server_id = id;
    uint8_t buf[32];
    size_t blen = cram__server_id_request__get_packed_size(&rq);
    CRAM_ASSERT(blen <= sizeof(buf));
    cram__server_id_request__pack(&rq, buf);
    struct wire_req_hdr h = { .opcode = WIRE_OP_HINT_SERVER_CRASHED, .service = WIRE_SVC_COORDINATOR };
    struct iovec iov[2] = { { &h, sizeof(h) }, { buf, blen } };
    if (tp_send(cs, iov, 2, (uint32_t)clock_test_scaled_ms(SRV_HINT_MS), hint_done, s) != CRAM_OK)
        CRAM_WARN("crash hint for server %lu could not be sent", (unsigned long)id);
}

/* Request dispatch (loop thread). */
static void on_request(void *arg, tp_rpc *rpc)
{
    struct server *s = arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    struct wire_req_hdr h;
    if (req == NULL || len < sizeof(h)) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    memcpy(&h, req, sizeof(h));
    if (h.service == WIRE_SVC_PING && h.opcode == WIRE_OP_PING)
        handle_ping(s, rpc, req, len);
    else if (h.opcode == WIRE_OP_SERVER_LIST_UPDATE)
        handle_list_update(s, rpc, req, len);
    else if (h.service == WIRE_SVC_MASTER && s->master != NULL)
        master_handle(s->master, rpc, req, len);
    else if (h.service == WIRE_SVC_BACKUP && s->backup != NULL)
        backup_handle(s->backup, rpc, req, len);
    else
        reply_status(rpc, CRAM_UNIMPLEMENTED_REQUEST);
}

/* ---- enlistment ---------------------------------------------------------- */

static void enlist_retry(struct server *s)
{
    if (atomic_load(&s->stopping))
        return;
    uint32_t d = s->backoff_ms;
    s->backoff_ms = s->backoff_ms * 2 > SRV_BACKOFF_MAX ? SRV_BACKOFF_MAX : s->backoff_ms * 2;
    tp_timer_add(s->loop, (uint64_t)d * 1000, enlist_attempt, s);
}

static void enlist_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct server *s = arg;
    struct wire_resp_hdr h = { .status = st };
    if (st == CRAM_OK) {
        if (len < sizeof(h))
            h.status = CRAM_REQUEST_FORMAT_ERROR;
        else
            memcpy(&h, resp, sizeof(h));
    }
    Cram__EnlistServerResponse *r = NULL;
    if (h.status == CRAM_OK) {
        r = cram__enlist_server_response__unpack(NULL, len - sizeof(h), resp + sizeof(h));
        if (r == NULL || r->server_id == 0)
            h.status = CRAM_REQUEST_FORMAT_ERROR;
    }
    if (h.status != CRAM_OK) {
        if (r != NULL)
            cram__enlist_server_response__free_unpacked(r, NULL);
        CRAM_LOG(s->attempts == 1 || s->attempts % 30 == 0 ? LOG_LVL_WARN : LOG_LVL_DEBUG,
                 "enlisting with the coordinator at %s failed: %s; retrying", s->coord_loc,
                 cram_strerror((cram_status)h.status));
        enlist_retry(s);
        return;
    }
    s->server_id = r->server_id;
    if (s->master != NULL)
        master_set_server_id(s->master, s->server_id);
    if (s->backup != NULL)
        backup_set_server_id(s->backup, s->server_id);
    s->replicas = r->settings ? r->settings->replicas : 0;
    snprintf(s->durability, sizeof(s->durability), "%s",
             r->settings && r->settings->durability[0] ? r->settings->durability : "?");
    CRAM_INFO("serving as server %lu on %s (cluster settings: replicas=%u durability=%s)",
              (unsigned long)s->server_id, s->locator, s->replicas, s->durability);
    cram__enlist_server_response__free_unpacked(r, NULL);
    if (s->master != NULL && !s->replication_set) {
        /* R and the durability level are cluster settings fixed at enlistment */
        if (master_set_replication(s->master, s->loop, s->replicas,
                                   strcmp(s->durability, "sync") == 0) != 0) {
            CRAM_ERROR("cannot start replication (replicas=%u): out of memory", s->replicas);
            exit(1);
        }
        s->replication_set = 1;
    }
    check_self(s);                      /* the list may have arrived first */
    fdet_start(s->fd, s->server_id);
}

/* The coordinator's locator is known (or not): send ENLIST_SERVER. */
static void enlist_located(void *arg)
{
    struct server *s = arg;
    if (s->locating) {
        pthread_join(s->locate_thread, NULL);
        s->locating = 0;
    }
    if (atomic_load(&s->stopping))
        return;
    if (s->locate_st == CRAM_OK) {
        snprintf(s->coord_loc, sizeof(s->coord_loc), "%s", s->found_loc);
        if (s->master != NULL)
            master_set_coordinator(s->master, s->coord_loc);
    }
    if (s->server_id != 0) {
        /* enlisted already: this was a re-locate for crash hints */
        if (s->locate_st == CRAM_OK && s->csess != NULL && !tp_session_alive(s->csess)) {
            tp_session_close(s->csess);
            s->csess = NULL;
        }
        if (s->locate_st == CRAM_OK)
            CRAM_DEBUG("coordinator located at %s", s->coord_loc);
        return;
    }
    if (s->locate_st != CRAM_OK) {
        CRAM_LOG(s->attempts == 1 || s->attempts % 30 == 0 ? LOG_LVL_WARN : LOG_LVL_DEBUG,
                 "cannot locate the coordinator through %s (cluster %s): %s; retrying",
                 s->coordinator, s->cluster, cram_strerror(s->locate_st));
        enlist_retry(s);
        return;
    }
    cram_status st;
    s->csess = tp_session_open(s->loop, s->coord_loc, &st);
    if (s->csess == NULL) {
        CRAM_LOG(s->attempts == 1 || s->attempts % 30 == 0 ? LOG_LVL_WARN : LOG_LVL_DEBUG,
                 "cannot reach the coordinator at %s: %s; retrying", s->coord_loc, cram_strerror(st));
        enlist_retry(s);
        return;
    }
    Cram__EnlistServerRequest rq = CRAM__ENLIST_SERVER_REQUEST__INIT;
    char *locs[SRV_MAX_LISTEN];
    for (int i = 0; i < s->nlisteners; i++)
        locs[i] = (char *)tp_listener_locator(s->listeners[i]);
    rq.n_locators = (size_t)s->nlisteners;
    rq.locators = locs;
    rq.services = s->services;
    rq.failure_domain = (char *)s->failure_domain;
    rq.memory_bytes = s->memory_bytes;
    uint8_t buf[4096];
    size_t len = cram__enlist_server_request__get_packed_size(&rq);
    CRAM_ASSERT(len <= sizeof(buf));
    cram__enlist_server_request__pack(&rq, buf);
    struct wire_req_hdr h = { .opcode = WIRE_OP_ENLIST_SERVER, .service = WIRE_SVC_COORDINATOR };
    struct iovec iov[2] = { { &h, sizeof(h) }, { buf, len } };
    st = tp_send(s->csess, iov, 2, (uint32_t)clock_test_scaled_ms(SRV_ENLIST_MS), enlist_done, s);
    if (st != CRAM_OK) {
        CRAM_DEBUG("enlist send failed: %s", cram_strerror(st));
        enlist_retry(s);
    }
}

static void *locate_main(void *arg)
{
    struct server *s = arg;
    s->locate_st = coordloc_find(s->coordinator, s->cluster, (uint32_t)clock_test_scaled_ms(SRV_LOCATE_MS),
                                 s->found_loc, sizeof(s->found_loc));
    if (tp_loop_post(s->loop, enlist_located, s) != 0)
        CRAM_ERROR("tp_loop_post failed: enlistment stalls");
    return NULL;
}

/* One enlistment attempt: (re)locate the coordinator, then enlist. */
static void enlist_attempt(void *arg)
{
    struct server *s = arg;
    if (atomic_load(&s->stopping) || s->server_id != 0)
        return;
    s->attempts++;
    if (s->csess != NULL) {
        tp_session_close(s->csess);
        s->csess = NULL;
    }
    if (strncmp(s->coordinator, "zk:", 3) != 0) {
        s->locate_st = coordloc_find(s->coordinator, s->cluster, 0, s->found_loc, sizeof(s->found_loc));
        enlist_located(s);
        return;
    }
    if (pthread_create(&s->locate_thread, NULL, locate_main, s) != 0) {
        CRAM_WARN("cannot start the locate thread: %s", strerror(errno));
        enlist_retry(s);
        return;
    }
    s->locating = 1;
}

/* Find the coordinator again (it may have moved to a new leader) for crash
 * hints, in the background; the next hint uses the new locator. */
static void relocate(struct server *s)
{
    if (s->locating || atomic_load(&s->stopping) || strncmp(s->coordinator, "zk:", 3) != 0)
        return;
    if (pthread_create(&s->locate_thread, NULL, locate_main, s) != 0) {
        CRAM_WARN("cannot start the locate thread: %s", strerror(errno));
        return;
    }
    s->locating = 1;
}

/* ---- flags, signals, main ------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
"usage: cram-server --coordinator LOCATOR [options]\n"
"\n"
"Runs a cram storage server: a master service (objects in a DRAM log) on one\n"
"dispatch thread.  It finds the coordinator, enlists, and serves.\n"
"\n"
"  --coordinator LOCATOR   zk:H:P[,H:P] (read the leader record) or tcp:host=H,port=P (required)\n"
"  --cluster NAME          cluster name (default: main)\n"
"  --listen LOCATORS       where to listen: one locator or several joined by ';', one per\n"
"                          transport, e.g. \"tcp:host=10.0.0.1,port=0;xdp:host=10.0.0.1,port=24001\";\n"
"                          all are advertised, in this order (clients use tcp unless told\n"
"                          otherwise, e.g. CRAM_TRANSPORT=xdp; servers talk to each other over tcp)\n"
"                          (default: tcp:host=127.0.0.1,port=0 = a free port)\n"
"  --memory SIZE           log memory, e.g. 64M, 1G (default: 1G)\n"
"  --segment-size SIZE     log segment size, a power of two >= 64K (default: 8M)\n"
"  --poll-us N             dispatch thread spins N us after activity, then sleeps;\n"
"                          0 = block at once (default: 50)\n"
"  --hugepages             back the log with transparent huge pages (madvise)\n"
"  --prefault              fault in (zero) the log's --memory and the backup's\n"
"                          --backup-buffers at start, before serving: resident from the\n"
"                          start, no page faults when the log first fills or a recovery\n"
"                          sends the backup many replicas at once; start-up takes\n"
"                          0.1 s per GiB, up to 2.5 s in a VM whose free memory went\n"
"                          back to the host\n"
"  --master-only           run only the master service\n"
"  --backup-only           run only the backup service\n"
"  --backup-dir DIR        where the backup service keeps replica files (created if missing;\n"
"                          default: /tmp/cram-backup-<cluster>-<pid>, which a restarted\n"
"                          server does not find again -- give a directory to keep replicas)\n"
"  --backup-storage SIZE   replica bytes the backup holds at most (default: 4G)\n"
"  --backup-buffers SIZE   memory the backup keeps for reuse as replica buffers (open\n"
"                          replicas, recovery copies) when they are free (default: 256M);\n"
"                          with --prefault it is faulted in at start and kept\n"
"  --cleaner-threshold F   the log cleaner starts when this fraction of --memory is in use\n"
"                          (default 0.90; a negative value turns the cleaner off)\n"
"  --cleaner-disk-factor F combined cleaning (which frees backup disk) runs once the log\n"
"                          holds F x --memory of segments (default 1.5; >= 1)\n"
"  --failure-domain NAME   failure domain label (replicas avoid sharing one; default: none)\n"
"  --ping-interval-ms MS   failure detection: ping one random peer this often (default: 100)\n"
"  --ping-timeout-ms MS    a ping unanswered this long (or a connection to the peer that breaks)\n"
"                          makes its peer a suspect, reported to the coordinator, which verifies\n"
"                          before declaring a crash (default: 250)\n"
"  --log-level LEVEL       debug, info, warn or error (default: info)\n"
"  --help                  this text\n"
"\n"
"Without --master-only/--backup-only a server offers both services.  The --ping-* times are multiplied by the\n"
"environment variable CRAM_TEST_TIME_SCALE (default 1).  A server that the\n"
"coordinator's server list shows as crashed exits at once with status 1.\n"
"SIGTERM or SIGINT stops the server cleanly.\n");
}

/* A plain decimal number.  Returns 0 or -1. */
static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (s[0] < '0' || s[0] > '9')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

/* "64M", "1G", "512K", "4096" -> bytes.  Returns 0 or -1. */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (s[0] == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    unsigned shift = 0;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: return -1;
    }
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end != '\0' || v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

static void *signal_thread(void *arg)
{
    struct server *s = arg;
    int sig;
    if (sigwait(&s->sigs, &sig) == 0) {
        CRAM_INFO("signal %d: shutting down", sig);
        atomic_store(&s->stopping, 1);
        tp_loop_wake(s->loop);
    }
    return NULL;
}

static int label_valid(const char *s)
{
    size_t n = strnlen(s, 256);
    if (n > 255)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    enum { O_COORD = 1, O_CLUSTER, O_LISTEN, O_MEM, O_SEG, O_POLL, O_HUGE, O_PREFAULT, O_MONLY, O_BONLY,
           O_FD, O_LOG, O_PING_INT, O_PING_TO, O_BDIR, O_BSTORE, O_CLEAN_T, O_CLEAN_D, O_BBUF, O_HELP };
    static const struct option opts[] = {
        { "coordinator", required_argument, NULL, O_COORD },
        { "cluster", required_argument, NULL, O_CLUSTER },
        { "listen", required_argument, NULL, O_LISTEN },
        { "memory", required_argument, NULL, O_MEM },
        { "segment-size", required_argument, NULL, O_SEG },
        { "poll-us", required_argument, NULL, O_POLL },
        { "hugepages", no_argument, NULL, O_HUGE },
        { "prefault", no_argument, NULL, O_PREFAULT },
        { "backup-buffers", required_argument, NULL, O_BBUF },
        { "master-only", no_argument, NULL, O_MONLY },
        { "backup-only", no_argument, NULL, O_BONLY },
        { "failure-domain", required_argument, NULL, O_FD },
        { "log-level", required_argument, NULL, O_LOG },
        { "ping-interval-ms", required_argument, NULL, O_PING_INT },
        { "ping-timeout-ms", required_argument, NULL, O_PING_TO },
        { "backup-dir", required_argument, NULL, O_BDIR },
        { "backup-storage", required_argument, NULL, O_BSTORE },
        { "cleaner-threshold", required_argument, NULL, O_CLEAN_T },
        { "cleaner-disk-factor", required_argument, NULL, O_CLEAN_D },
        { "help", no_argument, NULL, O_HELP },
        { NULL, 0, NULL, 0 },
    };
    static struct server srv;
    struct server *s = &srv;
    s->cluster = "main";
    s->failure_domain = "";
    s->memory_bytes = 1ull << 30;
    s->backoff_ms = SRV_BACKOFF_MIN;
    const char *listen = "tcp:host=127.0.0.1,port=0";
    uint64_t seg = 8ull << 20;
    uint64_t poll_us = 50;
    uint64_t ping_interval = FDET_DEFAULT_INTERVAL_MS, ping_timeout = FDET_DEFAULT_TIMEOUT_MS;
    int hugepages = 0, prefault = 0, master_only = 0, backup_only = 0;
    const char *backup_dir = NULL;
    char backup_dir_default[256];
    uint64_t backup_storage = 4ull << 30;
    uint64_t backup_buffers = 256ull << 20;
    double cleaner_threshold = 0, cleaner_disk_factor = 0;    /* 0 = the master's defaults */
    int level = LOG_LVL_INFO;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case O_COORD: s->coordinator = optarg; break;
        case O_CLUSTER: s->cluster = optarg; break;
        case O_LISTEN: listen = optarg; break;
        case O_MEM:
            if (parse_size(optarg, &s->memory_bytes) != 0 || s->memory_bytes == 0) {
                fprintf(stderr, "cram-server: bad --memory '%s'\n", optarg);
                return 2;
            }
            break;
        case O_SEG:
            if (parse_size(optarg, &seg) != 0 || seg < (64u << 10) || seg > (1u << 30) || (seg & (seg - 1))) {
                fprintf(stderr, "cram-server: bad --segment-size '%s' (a power of two, 64K..1G)\n", optarg);
                return 2;
            }
            break;
        case O_POLL:
            if (parse_u64(optarg, &poll_us) != 0 || poll_us > 10000000) {
                fprintf(stderr, "cram-server: bad --poll-us '%s'\n", optarg);
                return 2;
            }
            break;
        case O_HUGE: hugepages = 1; break;
        case O_PREFAULT: prefault = 1; break;
        case O_MONLY: master_only = 1; break;
        case O_BONLY: backup_only = 1; break;
        case O_FD:
            if (!label_valid(optarg)) {
                fprintf(stderr, "cram-server: bad --failure-domain (at most 255 printable characters)\n");
                return 2;
            }
            s->failure_domain = optarg;
            break;
        case O_LOG:
            level = log_level_parse(optarg);
            if (level < 0) {
                fprintf(stderr, "cram-server: bad --log-level '%s'\n", optarg);
                return 2;
            }
            break;
        case O_PING_INT:
        case O_PING_TO: {
            uint64_t *dst = o == O_PING_INT ? &ping_interval : &ping_timeout;
            if (parse_u64(optarg, dst) != 0 || *dst == 0 || *dst > 600000) {
                fprintf(stderr, "cram-server: bad --%s '%s' (1..600000)\n",
                        o == O_PING_INT ? "ping-interval-ms" : "ping-timeout-ms", optarg);
                return 2;
            }
            break;
        }
        case O_BDIR: backup_dir = optarg; break;
        case O_CLEAN_T:
        case O_CLEAN_D: {
            char *end;
            double v = strtod(optarg, &end);
            if (*end != '\0' || end == optarg || v != v || v > (o == O_CLEAN_T ? 1.0 : 100.0) ||
                (o == O_CLEAN_D && v < 1.0)) {
                fprintf(stderr, "cram-server: bad --%s '%s'\n",
                        o == O_CLEAN_T ? "cleaner-threshold" : "cleaner-disk-factor", optarg);
                return 2;
            }
            *(o == O_CLEAN_T ? &cleaner_threshold : &cleaner_disk_factor) = v;
            break;
        }
        case O_BSTORE:
            if (parse_size(optarg, &backup_storage) != 0 || backup_storage == 0) {
                fprintf(stderr, "cram-server: bad --backup-storage '%s'\n", optarg);
                return 2;
            }
            break;
        case O_BBUF:
            if (parse_size(optarg, &backup_buffers) != 0 || backup_buffers == 0) {
                fprintf(stderr, "cram-server: bad --backup-buffers '%s'\n", optarg);
                return 2;
            }
            break;
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cram-server: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (s->coordinator == NULL) {
        fprintf(stderr, "cram-server: --coordinator is required\n");
        usage(stderr);
        return 2;
    }
    if (master_only && backup_only) {
        fprintf(stderr, "cram-server: --master-only and --backup-only exclude each other\n");
        return 2;
    }
    struct locator cl;
    char err[256];
    if (loc_parse(s->coordinator, &cl, err, sizeof(err)) != 0) {
        fprintf(stderr, "cram-server: bad --coordinator '%s': %s\n", s->coordinator, err);
        return 2;
    }
    s->services = master_only ? SRV_SVC_MASTER : backup_only ? SRV_SVC_BACKUP : SRV_SVC_MASTER | SRV_SVC_BACKUP;
    log_init("cram-server", level);

    sigemptyset(&s->sigs);
    sigaddset(&s->sigs, SIGTERM);
    sigaddset(&s->sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &s->sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = 1;
    s->loop = tp_loop_create();
    if (s->loop == NULL) {
        CRAM_ERROR("cannot create the event loop");
        return 1;
    }
    tp_loop_set_poll_us(s->loop, (uint32_t)poll_us);
    struct fdet_config fc = {
        .interval_ms = (uint32_t)clock_test_scaled_ms(ping_interval),
        .timeout_ms = (uint32_t)clock_test_scaled_ms(ping_timeout),
    };
    s->sl = sl_create();
    s->fd = s->sl ? fdet_create(s->loop, s->sl, &fc, send_hint, s) : NULL;
    if (s->fd == NULL || sl_subscribe(s->sl, list_changed, s) != 0) {
        CRAM_ERROR("out of memory");
        goto out_list;
    }
    if (!backup_only) {
        struct master_config mc = {
            .memory_bytes = s->memory_bytes,
            .segment_bytes = (uint32_t)seg,
            .max_value_bytes = CRAM_MAX_VALUE_LEN < seg / 2 ? CRAM_MAX_VALUE_LEN : (uint32_t)(seg / 2),
            .hash_buckets = 0,
            .hugepages = hugepages,
            .prefault = prefault,
            .cleaner_threshold = cleaner_threshold,
            .cleaner_disk_factor = cleaner_disk_factor,
        };
        s->master = master_create(&mc, err, sizeof(err));
        if (s->master == NULL) {
            CRAM_ERROR("cannot create the master service: %s", err);
            goto out_list;
        }
        /* the master (replica manager) reads and subscribes to our one list */
        if (master_set_server_list(s->master, s->sl) != 0) {
            CRAM_ERROR("cannot hand the server list to the master service");
            goto out_master;
        }
    }
    if (!master_only) {
        if (backup_dir == NULL) {
            snprintf(backup_dir_default, sizeof(backup_dir_default), "/tmp/cram-backup-%s-%d",
                     s->cluster, (int)getpid());
            backup_dir = backup_dir_default;
        }
        struct backup_config bc = {
            .dir = backup_dir,
            .storage_bytes = backup_storage,
            .max_replica_bytes = 1u << 30,      /* accept any master's segment size */
            .buffer_bytes = backup_buffers,
            .prefault_buffer = prefault ? (uint32_t)seg : 0,
        };
        s->backup = backup_create(&bc, s->loop, s->sl, err, sizeof(err));
        if (s->backup == NULL) {
            CRAM_ERROR("cannot start the backup service on %s: %s", backup_dir, err);
            goto out_master;
        }
        CRAM_INFO("backup service: %s, %lu MB of storage, %zu replicas found", backup_dir,
                  (unsigned long)(backup_storage >> 20), backup_replica_count(s->backup));
    }
    /* one listener per ';'-separated locator, all on this loop */
    size_t off = 0;
    for (const char *p = listen; *p != '\0';) {
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char one[512];
        if (n >= sizeof(one)) {
            CRAM_ERROR("--listen: locator too long: %.*s", (int)n, p);
            goto out_listener;
        }
        memcpy(one, p, n);
        one[n] = '\0';
        p = end ? end + 1 : p + n;
        if (n == 0)
            continue;
        if (s->nlisteners == SRV_MAX_LISTEN) {
            CRAM_ERROR("--listen: more than %d locators", SRV_MAX_LISTEN);
            goto out_listener;
        }
        tp_listener *ls = tp_listen(s->loop, one, on_request, s, err, sizeof(err));
        if (ls == NULL) {
            CRAM_ERROR("cannot listen on %s: %s", one, err);
            goto out_listener;
        }
        s->listeners[s->nlisteners++] = ls;
        int w = snprintf(s->locator + off, sizeof(s->locator) - off, "%s%s", off ? ";" : "",
                         tp_listener_locator(ls));
        if (w < 0 || (size_t)w >= sizeof(s->locator) - off) {
            CRAM_ERROR("--listen: the advertised locators exceed %zu bytes", sizeof(s->locator) - 1);
            goto out_listener;
        }
        off += (size_t)w;
    }
    if (s->nlisteners == 0) {
        CRAM_ERROR("--listen: no locator in '%s'", listen);
        goto out_listener;
    }
    CRAM_INFO("listening on %s (memory %lu MB, segments %lu KB, poll %lu us); enlisting via %s",
              s->locator, (unsigned long)(s->memory_bytes >> 20), (unsigned long)(seg >> 10),
              (unsigned long)poll_us, s->coordinator);

    pthread_t st;
    if (pthread_create(&st, NULL, signal_thread, s) != 0) {
        CRAM_ERROR("cannot start the signal thread");
        goto out_listener;
    }
    pthread_detach(st);

    enlist_attempt(s);
    while (!atomic_load(&s->stopping))
        tp_loop_poll(s->loop, -1);
    rc = 0;
    CRAM_INFO("failure detector: %lu pings, %lu failed, %lu timed out while this server stalled "
              "(not reported); longest stall of the dispatch thread %lu ms",
              (unsigned long)fdet_pings_sent(s->fd), (unsigned long)fdet_pings_failed(s->fd),
              (unsigned long)fdet_pings_self_stalled(s->fd), (unsigned long)fdet_max_stall_ms(s->fd));

    if (s->locating) {
        pthread_join(s->locate_thread, NULL);
        s->locating = 0;
    }
    fdet_destroy(s->fd);
    s->fd = NULL;
    if (s->csess != NULL) {
        tp_session_close(s->csess);
        s->csess = NULL;
    }
    while (tp_loop_poll(s->loop, 0) > 0)    /* run what was posted meanwhile */
        ;
out_listener:
    for (int i = 0; i < s->nlisteners; i++)
        tp_listener_close(s->listeners[i]);
    /* flushes replicas to disk and answers what waits; before the loop goes */
    if (s->backup != NULL)
        backup_destroy(s->backup);
out_master:
    if (s->master != NULL)
        master_destroy(s->master);
out_list:
    fdet_destroy(s->fd);
    sl_destroy(s->sl);
    tp_loop_destroy(s->loop);
    CRAM_INFO("cram-server exiting");
    return rc;
}
