/*
 * failure_detector.c -- random peer pings; see failure_detector.h.
 *
 * One ping is outstanding at a time: a tick that finds the previous ping
 * still waiting (its timeout is longer than the interval) skips its turn.
 * Sessions to peers are cached by server id and dropped once they die (the
 * peer is then suspected: its process closed the connection) or their
 * server is no longer up in the list.
 *
 * Also the coordinator's verification rule (fdet_verify_*), pure.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/wire.h"
#include "server/failure_detector.h"

#define FDET_MAX_SESSIONS 64        /* cached peer sessions; older ones are closed */

#define FDET_MAX_HINTED 16

struct fdet_hinted {
    uint64_t id;
    uint64_t at_ms;
};

struct fdet_sess {
    uint64_t id;
    tp_session *s;
};

struct fdet {
    tp_loop *loop;
    const server_list *sl;
    struct fdet_config cfg;
    fdet_hint_fn hint;
    void *hint_arg;
    uint64_t self_id;
    uint64_t timer;                 /* 0 = none */
    uint64_t rng;
    int started;
    int closing;                    /* fdet_destroy runs: callbacks do nothing */
    int inflight;                   /* a ping is outstanding */
    uint64_t inflight_id;
    uint64_t inflight_sent_ms;
    uint64_t tick_due_ms;           /* when the pending tick should run */
    uint64_t sent, failed, self_stalled;
    uint64_t max_stall_ms;
    struct fdet_hinted hinted[FDET_MAX_HINTED];   /* recent hints: one per suspect ... */
    int nhinted;                                  /* ... per 4 ping timeouts */
    struct fdet_sess sess[FDET_MAX_SESSIONS];
    int nsess;
};

static int fdet_eligible(const struct sl_entry *e, uint64_t self_id)
{
    char loc[sizeof(e->locators)];
    return e->status == SL_UP && e->id != self_id && sl_locator(e, "tcp", loc, sizeof(loc)) == 0;
}

const struct sl_entry *fdet_choose_peer(const server_list *sl, uint64_t self_id, uint64_t rnd)
{
    size_t n = sl_count(sl), k = 0;
    for (size_t i = 0; i < n; i++)
        k += fdet_eligible(sl_at(sl, i), self_id);
    if (k == 0)
        return NULL;
    size_t pick = (size_t)(rnd % k);
    for (size_t i = 0; i < n; i++) {
        const struct sl_entry *e = sl_at(sl, i);
        if (fdet_eligible(e, self_id) && pick-- == 0)
            return e;
    }
    return NULL;                    /* not reached */
}

static uint64_t fdet_rand(fdet *f)
{
    /* xorshift64*: plenty for picking peers */
    f->rng ^= f->rng >> 12;
    f->rng ^= f->rng << 25;
    f->rng ^= f->rng >> 27;
    return f->rng * 2685821657736338717ull;
}

static uint64_t fdet_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void fdet_drop_session(fdet *f, int i)
{
    tp_session *s = f->sess[i].s;
    f->sess[i] = f->sess[--f->nsess];
    tp_session_close(s);
}

static void fdet_suspect(fdet *f, uint64_t id, const char *why);

/* Close sessions that died or whose server is no longer up.  A session to
 * an up peer that died means the peer's end closed or reset it -- what the
 * kernel does when a process dies -- so the peer is suspected at once. */
static void fdet_prune(fdet *f)
{
    for (int i = f->nsess - 1; i >= 0; i--) {
        if (f->inflight && f->sess[i].id == f->inflight_id)
            continue;                   /* its ping completes first */
        uint64_t id = f->sess[i].id;
        const struct sl_entry *e = sl_find(f->sl, id);
        bool broke = !tp_session_alive(f->sess[i].s);
        if (broke || e == NULL || e->status != SL_UP)
            fdet_drop_session(f, i);
        if (broke && e != NULL && e->status == SL_UP)
            fdet_suspect(f, id, "its connection broke");
    }
}

static tp_session *fdet_session(fdet *f, const struct sl_entry *e, cram_status *st)
{
    for (int i = 0; i < f->nsess; i++)
        if (f->sess[i].id == e->id)
            return f->sess[i].s;
    char loc[sizeof(e->locators)];
    if (sl_locator(e, "tcp", loc, sizeof(loc)) != 0) {
        *st = CRAM_INVALID_ARGUMENT;
        return NULL;
    }
    tp_session *s = tp_session_open(f->loop, loc, st);
    if (s == NULL)
        return NULL;
    if (f->nsess == FDET_MAX_SESSIONS) {
        /* evict one that is not carrying the outstanding ping */
        for (int i = 0; i < f->nsess; i++)
            if (!(f->inflight && f->sess[i].id == f->inflight_id)) {
                fdet_drop_session(f, i);
                break;
            }
    }
    f->sess[f->nsess++] = (struct fdet_sess){ e->id, s };
    return s;
}

static void fdet_suspect(fdet *f, uint64_t id, const char *why)
{
    if (f->closing)
        return;
    f->failed++;
    const struct sl_entry *e = sl_find(f->sl, id);
    if (e == NULL || e->status != SL_UP)
        return;                         /* already handled by the coordinator */
    uint64_t now = fdet_now_ms();
    uint64_t quiet = 4ull * f->cfg.timeout_ms;
    int slot = -1;
    for (int i = 0; i < f->nhinted; i++) {
        if (f->hinted[i].id == id) {
            if (now - f->hinted[i].at_ms < quiet)
                return;
            slot = i;
        }
    }
    if (slot < 0) {
        /* a free slot, else the oldest one */
        if (f->nhinted < FDET_MAX_HINTED) {
            slot = f->nhinted++;
        } else {
            slot = 0;
            for (int i = 1; i < f->nhinted; i++)
                if (f->hinted[i].at_ms < f->hinted[slot].at_ms)
                    slot = i;
        }
    }
    f->hinted[slot] = (struct fdet_hinted){ id, now };
    f->hint(f->hint_arg, id, why);
}

static void fdet_ping_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    fdet *f = arg;
    uint64_t id = f->inflight_id;
    f->inflight = 0;
    if (f->closing)
        return;
    const char *why = NULL;
    if (st == CRAM_TIMEOUT) {
        /* A timeout that fired well after it was due means this loop was
         * stalled: the answer may have arrived and wait unread behind it. */
        uint64_t due = f->inflight_sent_ms + f->cfg.timeout_ms;
        uint64_t now = fdet_now_ms();
        if (now > due && now - due > f->cfg.timeout_ms / 2) {
            f->self_stalled++;
            CRAM_DEBUG("ping of server %lu timed out %lu ms late (this server stalled): not reported",
                       (unsigned long)id, (unsigned long)(now - due));
            return;
        }
        why = "ping timed out";
    } else if (st != CRAM_OK) {
        why = "connection failed";
    } else {
        struct wire_resp_hdr h;
        if (len < sizeof(h)) {
            why = "malformed ping response";
        } else {
            memcpy(&h, resp, sizeof(h));
            if (h.status == CRAM_WRONG_SERVER)
                why = "another server answers at its locator";
            else if (h.status == CRAM_RETRY)
                why = "a process not enlisted answers at its locator";
        }
    }
    if (why != NULL)
        fdet_suspect(f, id, why);
}

static void fdet_tick(void *arg);

static void fdet_arm(fdet *f)
{
    f->tick_due_ms = fdet_now_ms() + f->cfg.interval_ms;
    f->timer = tp_timer_add(f->loop, (uint64_t)f->cfg.interval_ms * 1000u, fdet_tick, f);
}

static void fdet_tick(void *arg)
{
    fdet *f = arg;
    uint64_t now = fdet_now_ms();
    uint64_t late = now > f->tick_due_ms ? now - f->tick_due_ms : 0;
    if (late > f->max_stall_ms)
        f->max_stall_ms = late;
    if (late >= FDET_STALL_LOG_MS)
        CRAM_INFO("dispatch thread stalled: the failure detector's %u ms timer ran %lu ms late",
                  f->cfg.interval_ms, (unsigned long)late);
    fdet_arm(f);
    fdet_prune(f);
    if (f->inflight)
        return;
    const struct sl_entry *e = fdet_choose_peer(f->sl, f->self_id, fdet_rand(f));
    if (e == NULL)
        return;
    cram_status st;
    tp_session *s = fdet_session(f, e, &st);
    f->sent++;
    if (s == NULL) {
        fdet_suspect(f, e->id, "connection refused");
        return;
    }
    struct {
        struct wire_req_hdr h;
        struct wire_target t;
    } WIRE_PACKED req = { { .opcode = WIRE_OP_PING, .service = WIRE_SVC_PING }, { e->id } };
    struct iovec iov = { &req, sizeof(req) };
    f->inflight = 1;
    f->inflight_id = e->id;
    f->inflight_sent_ms = fdet_now_ms();
    st = tp_send(s, &iov, 1, f->cfg.timeout_ms, fdet_ping_done, f);
    if (st != CRAM_OK) {
        f->inflight = 0;
        fdet_suspect(f, e->id, "connection failed");
    }
}

fdet *fdet_create(tp_loop *l, const server_list *sl, const struct fdet_config *cfg,
                  fdet_hint_fn hint, void *hint_arg)
{
    fdet *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->loop = l;
    f->sl = sl;
    f->cfg = *cfg;
    if (f->cfg.interval_ms == 0)
        f->cfg.interval_ms = FDET_DEFAULT_INTERVAL_MS;
    if (f->cfg.timeout_ms == 0)
        f->cfg.timeout_ms = FDET_DEFAULT_TIMEOUT_MS;
    f->hint = hint;
    f->hint_arg = hint_arg;
    f->rng = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ 0x9e3779b97f4a7c15ull;
    if (f->rng == 0)
        f->rng = 1;
    return f;
}

void fdet_start(fdet *f, uint64_t self_id)
{
    f->self_id = self_id;
    if (f->started)
        return;
    f->started = 1;
    fdet_arm(f);
}

void fdet_destroy(fdet *f)
{
    if (f == NULL)
        return;
    f->closing = 1;
    if (f->timer)
        tp_timer_cancel(f->loop, f->timer);
    while (f->nsess > 0)
        fdet_drop_session(f, f->nsess - 1);
    free(f);
}

uint64_t fdet_pings_sent(const fdet *f) { return f->sent; }
uint64_t fdet_pings_failed(const fdet *f) { return f->failed; }
uint64_t fdet_pings_self_stalled(const fdet *f) { return f->self_stalled; }
uint64_t fdet_max_stall_ms(const fdet *f) { return f->max_stall_ms; }

/* ---- verification rule (pure) ---------------------------------------- */

struct fdet_verify_config fdet_verify_defaults(const struct fdet_verify_config *cfg)
{
    struct fdet_verify_config c = cfg ? *cfg : (struct fdet_verify_config){ 0 };
    if (c.gone_tries == 0)
        c.gone_tries = FDET_VERIFY_GONE_TRIES;
    if (c.gone_interval_ms == 0)
        c.gone_interval_ms = FDET_VERIFY_GONE_INTERVAL_MS;
    if (c.probe_timeout_ms == 0)
        c.probe_timeout_ms = FDET_VERIFY_PROBE_TIMEOUT_MS;
    if (c.silent_ms == 0)
        c.silent_ms = FDET_VERIFY_SILENT_MS;
    return c;
}

void fdet_verify_begin(struct fdet_verify *v, uint64_t now_ms)
{
    *v = (struct fdet_verify){ .start_ms = now_ms };
}

enum fdet_verdict fdet_verify_step(struct fdet_verify *v, const struct fdet_verify_config *cfg,
                                   enum fdet_probe outcome, uint64_t now_ms, uint64_t *next_ms)
{
    v->probes++;
    switch (outcome) {
    case FDET_PROBE_ANSWERED:
        return FDET_ALIVE;
    case FDET_PROBE_GONE:
        if (++v->gone_run >= cfg->gone_tries)
            return FDET_DECLARE;
        *next_ms = now_ms + cfg->gone_interval_ms;
        return FDET_PROBE_AGAIN;
    case FDET_PROBE_SILENT:
        break;
    }
    /* connected but silent: slow, stopped, or its host is gone */
    v->gone_run = 0;
    v->silent++;
    if (v->silent >= 2 && now_ms >= v->start_ms && now_ms - v->start_ms >= cfg->silent_ms)
        return FDET_DECLARE;
    *next_ms = now_ms;
    return FDET_PROBE_AGAIN;
}
