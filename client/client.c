/*
 * client.c -- the libcram handle: connecting, the per-server session cache,
 * synchronous RPCs over the handle's tp_loop, coordinator calls with retry,
 * and the table-config cache used for routing.
 *
 * Retry policy (see cram.h "Errors"): every library call has a deadline of
 * now + the handle's timeout.  Each RPC gets min(remaining, 5 s) so a dead
 * server is noticed; between attempts the call sleeps a jittered delay that
 * starts at ~1 ms and doubles up to ~100 ms.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/client_int.h"
#include "common/clock.h"
#include "common/coordloc.h"
#include "cram.pb-c.h"

/* ---- handle ------------------------------------------------------------- */

cram_status cl_client_new(const char *locator, const char *cluster, cram_client **out)
{
    cram_client *c;

    if (!locator || !out)
        return CRAM_INVALID_ARGUMENT;
    if (strncmp(locator, "zk:", 3) != 0 && strncmp(locator, "tcp:", 4) != 0)
        return CRAM_INVALID_ARGUMENT;
    if (strlen(locator) >= sizeof c->spec)
        return CRAM_INVALID_ARGUMENT;
    if (!cluster)
        cluster = "main";
    if (!cluster[0] || strlen(cluster) >= sizeof c->cluster || strchr(cluster, '/'))
        return CRAM_INVALID_ARGUMENT;
    c = calloc(1, sizeof *c);
    if (!c)
        return CRAM_NO_MEMORY;
    c->loop = tp_loop_create();
    if (!c->loop) {
        free(c);
        return CRAM_NO_MEMORY;
    }
    strcpy(c->spec, locator);
    strcpy(c->cluster, cluster);
    c->timeout_ms = CL_DEFAULT_TIMEOUT_MS;
    c->rng = clock_mono_ns() ^ (uint64_t)(uintptr_t)c ^ 0x9e3779b97f4a7c15ull;
    *out = c;
    return CRAM_OK;
}

cram_status cram_connect(const char *coordinator_locator, const char *cluster,
                         cram_client **out)
{
    cram_client *c;
    struct cl_retry r;
    struct wire_req_hdr ping = { .opcode = WIRE_OP_PING, .service = WIRE_SVC_PING };
    struct iovec iov = { &ping, sizeof ping };
    cram_status st;

    if (out)
        *out = NULL;
    if (!out)
        return CRAM_INVALID_ARGUMENT;
    st = cl_client_new(coordinator_locator, cluster, &c);
    if (st != CRAM_OK)
        return st;

    /* Prove that a coordinator answers, retrying briefly so a client started
     * together with its cluster does not fail at once. */
    c->timeout_ms = CL_CONNECT_TIMEOUT_MS;
    cl_retry_init(c, &r);
    c->timeout_ms = CL_DEFAULT_TIMEOUT_MS;
    for (;;) {
        if (!c->coord_loc[0]) {
            st = coordloc_find(c->spec, c->cluster, cl_rpc_timeout(&r), c->coord_loc,
                               sizeof c->coord_loc);
            if (st == CRAM_INVALID_ARGUMENT)
                goto out_free_client;
            if (st != CRAM_OK)
                c->coord_loc[0] = '\0';
        }
        if (c->coord_loc[0] && !c->coord) {
            c->coord = tp_session_open(c->loop, c->coord_loc, &st);
            if (!c->coord && st == CRAM_INVALID_ARGUMENT)
                goto out_free_client;
        }
        if (c->coord) {
            st = cl_rpc(c, c->coord, &iov, 1, cl_rpc_timeout(&r));
            if (st == CRAM_OK)
                break;
            if (st == CRAM_NO_MEMORY)
                goto out_free_client;
        }
        cl_coord_drop(c);
        if (cl_backoff(c, &r) != 0) {
            st = CRAM_COORDINATOR_UNAVAILABLE;
            goto out_free_client;
        }
    }
    *out = c;
    return CRAM_OK;

out_free_client:
    cram_disconnect(c);
    return st;
}

void cram_disconnect(cram_client *c)
{
    if (!c)
        return;
    while (c->tables) {
        struct cl_table *t = c->tables;
        c->tables = t->next;
        cl_table_free(t);
    }
    for (size_t i = 0; i < c->nsess; i++)
        if (c->sess[i].s)
            tp_session_close(c->sess[i].s);
    if (c->coord)
        tp_session_close(c->coord);
    tp_loop_destroy(c->loop);
    cl_async_free_all(c);          /* after the loop: its callbacks touch the ops */
    free(c->sess);
    free(c->rbuf);
    free(c);
}

void cram_set_timeout(cram_client *c, uint32_t ms)
{
    if (c)
        c->timeout_ms = ms ? ms : CL_DEFAULT_TIMEOUT_MS;
}

void cram_set_poll_us(cram_client *c, uint32_t us)
{
    if (!c)
        return;
    c->poll_us = us;
    tp_loop_set_poll_us(c->loop, us);
}

uint32_t cram_get_poll_us(const cram_client *c)
{
    return c ? c->poll_us : 0;
}

cram_status cram_get_coordinator_locator(cram_client *c, char *buf, size_t buflen)
{
    struct cl_retry r;
    cram_status st;

    if (!c || !buf || buflen == 0)
        return CRAM_INVALID_ARGUMENT;
    if (!c->coord_loc[0]) {
        cl_retry_init(c, &r);
        st = coordloc_find(c->spec, c->cluster, cl_rpc_timeout(&r), c->coord_loc,
                           sizeof c->coord_loc);
        if (st != CRAM_OK) {
            c->coord_loc[0] = '\0';
            return st;
        }
    }
    if (strlen(c->coord_loc) >= buflen)
        return CRAM_INVALID_ARGUMENT;
    strcpy(buf, c->coord_loc);
    return CRAM_OK;
}

void cram_free(void *p)
{
    free(p);
}

/* ---- retry -------------------------------------------------------------- */

void cl_retry_init(const cram_client *c, struct cl_retry *r)
{
    r->deadline_ms = clock_mono_ms() + c->timeout_ms;
    r->backoff_us = CL_BACKOFF_START_US;
}

uint32_t cl_rpc_timeout(const struct cl_retry *r)
{
    uint64_t now = clock_mono_ms();
    uint64_t left = r->deadline_ms > now ? r->deadline_ms - now : 1;

    return left < CL_RPC_TIMEOUT_MS ? (uint32_t)left : CL_RPC_TIMEOUT_MS;
}

static uint64_t cl_rand(cram_client *c)
{
    /* xorshift64*: jitter only, not security */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 0x2545f4914f6cdd1dull;
}

uint32_t cl_backoff_next_us(cram_client *c, struct cl_retry *r)
{
    /* uniform in [backoff/2, backoff] so retrying clients spread out */
    uint32_t delay_us = r->backoff_us / 2 + (uint32_t)(cl_rand(c) % (r->backoff_us / 2 + 1));

    r->backoff_us = r->backoff_us * 2 > CL_BACKOFF_CAP_US ? CL_BACKOFF_CAP_US
                                                         : r->backoff_us * 2;
    return delay_us;
}

int cl_backoff(cram_client *c, struct cl_retry *r)
{
    uint64_t now = clock_mono_ms();
    uint64_t delay_us;
    struct timespec ts;

    if (now >= r->deadline_ms)
        return -1;
    delay_us = cl_backoff_next_us(c, r);
    if (delay_us / 1000 >= r->deadline_ms - now)
        delay_us = (r->deadline_ms - now) * 1000;
    ts.tv_sec = (time_t)(delay_us / 1000000);
    ts.tv_nsec = (long)(delay_us % 1000000) * 1000;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

int cl_status_is_reroute(cram_status st)
{
    return st == CRAM_RETRY || st == CRAM_UNKNOWN_TABLET || st == CRAM_WRONG_SERVER;
}

/* UNKNOWN_TABLET and WRONG_SERVER say the map is stale.  RETRY says the
 * owner is right but cannot serve yet (its log is full while the cleaner
 * makes room, the tablet is still being recovered, the server is not
 * enlisted yet): fetching the map on each one only loads the coordinator
 * (a full log answered thousands of RETRYs a second, each followed by a
 * GET_TABLE_CONFIG).  After a few in a row the map is fetched again anyway,
 * in case the owner changed meanwhile. */
int cl_reroute_refresh(const struct cl_retry *r, cram_status st)
{
    return st != CRAM_RETRY || r->backoff_us >= CL_REFRESH_AFTER_US;
}

/* ---- sessions ----------------------------------------------------------- */

int cl_sess_slot(cram_client *c, const char *locator)
{
    for (size_t i = 0; i < c->nsess; i++)
        if (strcmp(c->sess[i].locator, locator) == 0)
            return (int)i;
    if (strlen(locator) >= CL_LOC_MAX)
        return -1;
    if (c->nsess == c->capsess) {
        size_t cap = c->capsess ? c->capsess * 2 : 8;
        struct cl_sess *s = realloc(c->sess, cap * sizeof *s);
        if (!s)
            return -1;
        c->sess = s;
        c->capsess = cap;
    }
    strcpy(c->sess[c->nsess].locator, locator);
    c->sess[c->nsess].s = NULL;
    return (int)c->nsess++;
}

/* A session on the first of the ';'-joined locators (cl_pick_locator's
 * order) that opens: a protocol this build lacks (CRAM_INVALID_ARGUMENT) or
 * one that cannot be used here (CRAM_TRANSPORT_ERROR: rdma without a device,
 * xdp without root or with the interface taken by another process) falls
 * through to the next.  *st is CRAM_TRANSPORT_ERROR if any candidate was
 * usable in principle, so callers retry, else CRAM_INVALID_ARGUMENT. */
static tp_session *cl_open_first(tp_loop *loop, const char *locators, cram_status *st)
{
    cram_status best = CRAM_INVALID_ARGUMENT;
    const char *p = locators;

    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char one[CL_LOC_MAX];
        if (len > 0 && len < sizeof one) {
            cram_status s1 = CRAM_INVALID_ARGUMENT;
            memcpy(one, p, len);
            one[len] = '\0';
            tp_session *s = tp_session_open(loop, one, &s1);
            if (s) {
                *st = CRAM_OK;
                return s;
            }
            if (s1 != CRAM_INVALID_ARGUMENT)
                best = s1;
        }
        if (!end)
            break;
        p = end + 1;
    }
    *st = best;
    return NULL;
}

tp_session *cl_sess_get(cram_client *c, int slot, cram_status *st)
{
    struct cl_sess *s;

    if (slot < 0 || (size_t)slot >= c->nsess) {
        *st = CRAM_TRANSPORT_ERROR;
        return NULL;
    }
    s = &c->sess[slot];
    if (s->s && !tp_session_alive(s->s)) {
        tp_session_close(s->s);
        s->s = NULL;
    }
    if (!s->s)
        s->s = cl_open_first(c->loop, s->locator, st);
    return s->s;
}

void cl_sess_drop(cram_client *c, int slot)
{
    if (slot < 0 || (size_t)slot >= c->nsess || !c->sess[slot].s)
        return;
    tp_session_close(c->sess[slot].s);
    c->sess[slot].s = NULL;
}

void cl_coord_drop(cram_client *c)
{
    if (c->coord)
        tp_session_close(c->coord);
    c->coord = NULL;
    c->coord_loc[0] = '\0';
}

/* ---- synchronous RPC ---------------------------------------------------- */

struct cl_wait {
    cram_client *c;
    int done;
    cram_status st;
};

static int cl_rbuf_reserve(cram_client *c, size_t len)
{
    if (len <= c->rcap)
        return 0;
    size_t cap = c->rcap ? c->rcap : 4096;
    while (cap < len)
        cap *= 2;
    uint8_t *b = realloc(c->rbuf, cap);
    if (!b)
        return -1;
    c->rbuf = b;
    c->rcap = cap;
    return 0;
}

static void cl_rpc_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct cl_wait *w = arg;

    w->done = 1;
    w->st = st;
    if (st != CRAM_OK)
        return;
    if (cl_rbuf_reserve(w->c, len) != 0) {
        w->st = CRAM_NO_MEMORY;
        return;
    }
    if (len)
        memcpy(w->c->rbuf, resp, len);
    w->c->rlen = len;
}

cram_status cl_rpc(cram_client *c, tp_session *s, const struct iovec *iov, int iovcnt,
                   uint32_t timeout_ms)
{
    struct cl_wait w = { .c = c };
    cram_status st;

    c->rlen = 0;
    st = tp_send(s, iov, iovcnt, timeout_ms ? timeout_ms : 1, cl_rpc_done, &w);
    if (st != CRAM_OK)
        return st;
    /* the transport guarantees the callback (response, timeout or error) */
    while (!w.done)
        tp_loop_poll(c->loop, -1);
    return w.st;
}

/* ---- coordinator -------------------------------------------------------- */

/* Make sure c->coord is a live session; CRAM_OK or the reason it is not. */
static cram_status cl_coord_session(cram_client *c, struct cl_retry *r)
{
    cram_status st;

    if (c->coord && tp_session_alive(c->coord))
        return CRAM_OK;
    if (c->coord) {
        tp_session_close(c->coord);
        c->coord = NULL;
    }
    if (!c->coord_loc[0]) {
        st = coordloc_find(c->spec, c->cluster, cl_rpc_timeout(r), c->coord_loc,
                           sizeof c->coord_loc);
        if (st != CRAM_OK) {
            c->coord_loc[0] = '\0';
            return st;
        }
    }
    c->coord = tp_session_open(c->loop, c->coord_loc, &st);
    if (!c->coord) {
        c->coord_loc[0] = '\0';
        return st;
    }
    return CRAM_OK;
}

cram_status cl_coord_call(cram_client *c, struct cl_retry *r, uint16_t opcode,
                          const void *body, size_t body_len,
                          const uint8_t **resp_body, size_t *resp_body_len)
{
    struct wire_req_hdr h = { .opcode = opcode, .service = WIRE_SVC_COORDINATOR };
    struct iovec iov[2] = { { &h, sizeof h }, { (void *)body, body_len } };
    cram_status st;
    cram_status sst;

    for (;;) {
        st = cl_coord_session(c, r);
        if (st == CRAM_INVALID_ARGUMENT)
            return st;
        if (st == CRAM_OK) {
            st = cl_rpc(c, c->coord, iov, body_len ? 2 : 1, cl_rpc_timeout(r));
            if (st == CRAM_NO_MEMORY || st == CRAM_REQUEST_TOO_LARGE)
                return st;
            if (st == CRAM_OK) {
                if (cl_parse_status(c->rbuf, c->rlen, &sst) != 0)
                    return CRAM_INTERNAL_ERROR;
                /* reroute statuses never reach callers; from the
                 * coordinator they can only mean "try again" */
                if (!cl_status_is_reroute(sst)) {
                    *resp_body = c->rbuf + sizeof(struct wire_resp_hdr);
                    *resp_body_len = c->rlen - sizeof(struct wire_resp_hdr);
                    return sst;
                }
            } else {
                cl_coord_drop(c);
            }
        }
        if (cl_backoff(c, r) != 0)
            return CRAM_TIMEOUT;
    }
}

/* ---- table config cache ------------------------------------------------- */

void cl_table_free(struct cl_table *t)
{
    if (!t)
        return;
    free(t->t);
    free(t);
}

void cl_table_invalidate(cram_client *c, uint64_t table_id)
{
    for (struct cl_table *t = c->tables; t; t = t->next)
        if (t->id == table_id)
            t->stale = 1;
}

/* Turn a TableConfig into a cl_table (session slots resolved). */
static cram_status cl_table_build(cram_client *c, const Cram__TableConfig *cfg,
                                  struct cl_table *t)
{
    struct cl_tablet *tab = calloc(cfg->n_tablets ? cfg->n_tablets : 1, sizeof *tab);

    if (!tab)
        return CRAM_NO_MEMORY;
    for (size_t i = 0; i < cfg->n_tablets; i++) {
        const Cram__TabletLocation *tl = cfg->tablets[i];
        if (!tl || !tl->tablet) {
            free(tab);
            return CRAM_INTERNAL_ERROR;
        }
        tab[i].start = tl->tablet->start_hash;
        tab[i].end = tl->tablet->end_hash;
        tab[i].server_id = tl->tablet->server_id;
        tab[i].recovering = tl->tablet->state == CRAM__TABLET_STATE__TABLET_RECOVERING;
        tab[i].sess = -1;
        if (cl_pick_locator(tl->locators, tl->n_locators, tab[i].locator,
                            sizeof tab[i].locator) == 0)
            tab[i].sess = cl_sess_slot(c, tab[i].locator);
    }
    free(t->t);
    t->t = tab;
    t->n = cfg->n_tablets;
    if (cl_table_normalize(t) != 0)
        return CRAM_INTERNAL_ERROR;
    return CRAM_OK;
}

cram_status cl_table_get(cram_client *c, struct cl_retry *r, uint64_t table_id,
                         struct cl_table **out)
{
    struct cl_table *t;
    Cram__TableConfigRequest rq = CRAM__TABLE_CONFIG_REQUEST__INIT;
    Cram__TableConfig *cfg;
    uint8_t buf[32];
    const uint8_t *body;
    size_t body_len;
    cram_status st;

    for (t = c->tables; t; t = t->next)
        if (t->id == table_id)
            break;
    if (t && !t->stale) {
        *out = t;
        return CRAM_OK;
    }
    rq.table_id = table_id;
    size_t n = cram__table_config_request__pack(&rq, buf);
    st = cl_coord_call(c, r, WIRE_OP_GET_TABLE_CONFIG, buf, n, &body, &body_len);
    if (st != CRAM_OK)
        return st;
    cfg = cram__table_config__unpack(NULL, body_len, body);
    if (!cfg)
        return CRAM_INTERNAL_ERROR;
    if (cfg->table_id != table_id && cfg->table_id != 0) {
        cram__table_config__free_unpacked(cfg, NULL);
        return CRAM_INTERNAL_ERROR;
    }
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t) {
            cram__table_config__free_unpacked(cfg, NULL);
            return CRAM_NO_MEMORY;
        }
        t->id = table_id;
        t->next = c->tables;
        c->tables = t;
    }
    st = cl_table_build(c, cfg, t);
    cram__table_config__free_unpacked(cfg, NULL);
    if (st != CRAM_OK) {
        t->stale = 1;
        return st;
    }
    t->stale = 0;
    *out = t;
    return CRAM_OK;
}
