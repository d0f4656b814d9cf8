/*
 * loop.c -- the event loop under every transport: epoll, timers, callbacks
 * posted from other threads, busy-poll-then-block, and the public wrappers
 * that route tp_* calls to the transport chosen by the locator prefix.
 *
 * Threads: a tp_loop belongs to the thread calling tp_loop_poll.  The only
 * state touched by other threads is the posted-callback queue (post_mu) and
 * the eventfd used to wake the loop.
 *
 * Timers live in a slab (stable indices, so an id can name a slot) ordered by
 * a binary min-heap of slot indices keyed by deadline.  A timer id is
 * (generation << 32 | slot + 1), so cancelling a fired or reused timer is a
 * harmless no-op.
 *
 * Objects deleted while a batch of epoll events is being handled may still be
 * named by later events of the batch: transports free them through
 * tp_loop_defer_free, which runs when the outermost dispatch round ends.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include "common/clock.h"
#include "common/log.h"
#include "transport/transport_int.h"

#define TP_MAX_EVENTS 64
#define TP_CACHE_BLOCK 256      /* bytes per cached block */
#define TP_CACHE_MAX 1024       /* blocks kept on the free list */

struct tp_timer {
    uint64_t deadline_ns;
    uint64_t seq;               /* creation order: a round fires only older timers */
    tp_fn fn;
    void *arg;
    uint32_t heap_idx;          /* position in heap; UINT32_MAX when the slot is free */
    uint32_t gen;
    uint32_t next_free;
};

struct tp_post {
    struct tp_post *next;
    tp_fn fn;
    void *arg;
};

struct tp_cb {
    tp_fn fn;
    void *arg;
};

struct tp_poller {
    uint64_t id;
    tp_poll_fn fn;
    void *arg;
};

/* A growable array of callbacks (deferred frees, flush hooks). */
struct tp_cblist {
    struct tp_cb *v;
    size_t n, cap;
};

struct tp_loop {
    int epfd;
    int evfd;                   /* eventfd: wake-ups from other threads */
    struct tp_fdh evh;
    uint32_t poll_us;
    uint64_t last_activity_ns;
    int depth;                  /* dispatch nesting */

    /* timers (loop thread only) */
    struct tp_timer *tslots;
    uint32_t tcap, tfree;       /* tfree: head of free slot list, UINT32_MAX = none */
    uint32_t *heap;
    uint32_t hlen;
    uint64_t tseq;

    /* posted callbacks: guarded by post_mu; npost is read without the lock
     * as a hint (a stale 0 is fixed by the eventfd wake-up). */
    pthread_mutex_t post_mu;
    struct tp_post *post_head, *post_tail;
    atomic_uint npost;

    struct tp_poller *pollers;
    int npollers, cappollers;
    unsigned spin_rounds;           /* spinning rounds since the last epoll_wait */
    uint64_t poller_seq;

    struct tp_cblist dfree;     /* run when depth returns to 0 */
    struct tp_cblist flush;     /* run at the end of every dispatch round */

    tp_session *sessions;
    tp_listener *listeners;

    void *cache;                /* free list of TP_CACHE_BLOCK blocks */
    int ncache;
};

/* ---- small helpers ------------------------------------------------------ */

static int cblist_push(struct tp_cblist *cl, tp_fn fn, void *arg)
{
    if (cl->n == cl->cap) {
        size_t nc = cl->cap ? cl->cap * 2 : 16;
        struct tp_cb *v = realloc(cl->v, nc * sizeof *v);
        if (v == NULL)
            return -1;
        cl->v = v;
        cl->cap = nc;
    }
    cl->v[cl->n].fn = fn;
    cl->v[cl->n].arg = arg;
    cl->n++;
    return 0;
}

/* Run every callback, including ones pushed while running. */
static int cblist_run(struct tp_cblist *cl)
{
    size_t i;
    for (i = 0; i < cl->n; i++) {
        struct tp_cb cb = cl->v[i];
        cb.fn(cb.arg);
    }
    cl->n = 0;
    return (int)i;
}

/* ---- loop lifecycle ----------------------------------------------------- */

static void loop_evfd_ready(void *arg, uint32_t events)
{
    tp_loop *l = arg;
    uint64_t v;
    (void)events;
    while (read(l->evfd, &v, sizeof v) < 0 && errno == EINTR)
        ;
}

tp_loop *tp_loop_create(void)
{
    tp_loop *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    l->tfree = UINT32_MAX;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0)
        goto free_loop;
    l->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->evfd < 0)
        goto close_epfd;
    if (pthread_mutex_init(&l->post_mu, NULL) != 0)
        goto close_evfd;
    atomic_init(&l->npost, 0);
    if (tp_loop_add_fd(l, &l->evh, l->evfd, EPOLLIN, loop_evfd_ready, l) != 0)
        goto destroy_mutex;
    return l;

destroy_mutex:
    pthread_mutex_destroy(&l->post_mu);
close_evfd:
    close(l->evfd);
close_epfd:
    close(l->epfd);
free_loop:
    free(l);
    return NULL;
}

void tp_loop_destroy(tp_loop *l)
{
    if (l == NULL)
        return;
    /* depth is 0 here, so frees deferred by the closes run at once */
    while (l->sessions != NULL)
        tp_session_close(l->sessions);
    while (l->listeners != NULL)
        tp_listener_close(l->listeners);
    cblist_run(&l->flush);
    cblist_run(&l->dfree);
    free(l->flush.v);
    free(l->dfree.v);

    struct tp_post *p = l->post_head;
    while (p != NULL) {
        struct tp_post *n = p->next;
        free(p);
        p = n;
    }
    pthread_mutex_destroy(&l->post_mu);
    free(l->tslots);
    free(l->heap);
    free(l->pollers);
    while (l->cache != NULL) {
        void *n = *(void **)l->cache;
        free(l->cache);
        l->cache = n;
    }
    close(l->evfd);
    close(l->epfd);
    free(l);
}

void tp_loop_set_poll_us(tp_loop *l, uint32_t poll_us)
{
    l->poll_us = poll_us;
}

/* ---- fd handlers -------------------------------------------------------- */

int tp_loop_add_fd(tp_loop *l, struct tp_fdh *h, int fd, uint32_t events, tp_fd_fn fn, void *arg)
{
    struct epoll_event ev = { .events = events, .data.ptr = h };
    h->fd = fd;
    h->events = events;
    h->fn = fn;
    h->arg = arg;
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        h->fd = -1;
        return -1;
    }
    return 0;
}

int tp_loop_mod_fd(tp_loop *l, struct tp_fdh *h, uint32_t events)
{
    if (h->fd < 0)
        return -1;
    if (h->events == events)
        return 0;
    struct epoll_event ev = { .events = events, .data.ptr = h };
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, h->fd, &ev) != 0)
        return -1;
    h->events = events;
    return 0;
}

void tp_loop_del_fd(tp_loop *l, struct tp_fdh *h)
{
    if (h->fd < 0)
        return;
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, h->fd, NULL);
    h->fd = -1;
}

void tp_loop_defer_free(tp_loop *l, tp_fn fn, void *arg)
{
    if (l->depth == 0 || cblist_push(&l->dfree, fn, arg) != 0)
        fn(arg);   /* no dispatch running (or no memory): nothing can be stale */
}

int tp_loop_in_dispatch(const tp_loop *l)
{
    return l->depth;
}

int tp_loop_at_flush(tp_loop *l, tp_fn fn, void *arg)
{
    return cblist_push(&l->flush, fn, arg);
}

/* ---- pollers ------------------------------------------------------------ */

uint64_t tp_loop_add_poller(tp_loop *l, tp_poll_fn fn, void *arg)
{
    if (l->npollers == l->cappollers) {
        int nc = l->cappollers ? l->cappollers * 2 : 4;
        struct tp_poller *v = realloc(l->pollers, (size_t)nc * sizeof *v);
        if (v == NULL)
            return 0;
        l->pollers = v;
        l->cappollers = nc;
    }
    uint64_t id = ++l->poller_seq;
    l->pollers[l->npollers++] = (struct tp_poller){ id, fn, arg };
    return id;
}

void tp_loop_del_poller(tp_loop *l, uint64_t id)
{
    for (int i = 0; i < l->npollers; i++) {
        if (l->pollers[i].id == id) {
            memmove(&l->pollers[i], &l->pollers[i + 1],
                    (size_t)(l->npollers - i - 1) * sizeof l->pollers[0]);
            l->npollers--;
            return;
        }
    }
}

/* ---- block cache -------------------------------------------------------- */

/* Blocks carry a 16-byte header recording whether they came from the cache. */
void *tp_loop_cache_get(tp_loop *l, size_t size)
{
    uint64_t *b;
    if (size + 16 <= TP_CACHE_BLOCK) {
        if (l->cache != NULL) {
            b = l->cache;
            l->cache = *(void **)b;
            l->ncache--;
        } else {
            b = malloc(TP_CACHE_BLOCK);
        }
        if (b == NULL)
            return NULL;
        b[0] = 1;
    } else {
        b = malloc(size + 16);
        if (b == NULL)
            return NULL;
        b[0] = 0;
    }
    return b + 2;
}

void tp_loop_cache_put(tp_loop *l, void *p)
{
    if (p == NULL)
        return;
    uint64_t *b = (uint64_t *)p - 2;
    if (b[0] == 1 && l->ncache < TP_CACHE_MAX) {
        *(void **)b = l->cache;
        l->cache = b;
        l->ncache++;
    } else {
        free(b);
    }
}

/* ---- timers ------------------------------------------------------------- */

static inline int timer_before(const tp_loop *l, uint32_t a, uint32_t b)
{
    const struct tp_timer *ta = &l->tslots[a], *tb = &l->tslots[b];
    return ta->deadline_ns < tb->deadline_ns ||
           (ta->deadline_ns == tb->deadline_ns && ta->seq < tb->seq);
}

static inline void heap_set(tp_loop *l, uint32_t i, uint32_t slot)
{
    l->heap[i] = slot;
    l->tslots[slot].heap_idx = i;
}

static void heap_up(tp_loop *l, uint32_t i)
{
    uint32_t slot = l->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!timer_before(l, slot, l->heap[parent]))
            break;
        heap_set(l, i, l->heap[parent]);
        i = parent;
    }
    heap_set(l, i, slot);
}

static void heap_down(tp_loop *l, uint32_t i)
{
    uint32_t slot = l->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= l->hlen)
            break;
        if (c + 1 < l->hlen && timer_before(l, l->heap[c + 1], l->heap[c]))
            c++;
        if (!timer_before(l, l->heap[c], slot))
            break;
        heap_set(l, i, l->heap[c]);
        i = c;
    }
    heap_set(l, i, slot);
}

static void heap_remove(tp_loop *l, uint32_t i)
{
    uint32_t last = l->heap[--l->hlen];
    if (i < l->hlen) {
        heap_set(l, i, last);
        heap_down(l, i);
        heap_up(l, l->tslots[last].heap_idx);
    }
}

static void timer_free_slot(tp_loop *l, uint32_t slot)
{
    struct tp_timer *t = &l->tslots[slot];
    t->heap_idx = UINT32_MAX;
    t->fn = NULL;
    t->next_free = l->tfree;
    l->tfree = slot;
}

uint64_t tp_timer_add(tp_loop *l, uint64_t delay_us, tp_fn fn, void *arg)
{
    if (l->tfree == UINT32_MAX) {
        uint32_t nc = l->tcap ? l->tcap * 2 : 64;
        struct tp_timer *ts = realloc(l->tslots, nc * sizeof *ts);
        if (ts == NULL)
            return 0;
        l->tslots = ts;
        uint32_t *h = realloc(l->heap, nc * sizeof *h);
        if (h == NULL)
            return 0;
        l->heap = h;
        for (uint32_t i = nc; i-- > l->tcap;) {
            ts[i].gen = 0;
            ts[i].heap_idx = UINT32_MAX;
            ts[i].next_free = l->tfree;
            l->tfree = i;
        }
        l->tcap = nc;
    }
    uint32_t slot = l->tfree;
    struct tp_timer *t = &l->tslots[slot];
    l->tfree = t->next_free;
    if (delay_us > UINT64_MAX / 2000)
        delay_us = UINT64_MAX / 2000;
    t->deadline_ns = clock_mono_ns() + delay_us * 1000;
    t->seq = l->tseq++;
    t->fn = fn;
    t->arg = arg;
    t->gen++;
    if (t->gen == 0)
        t->gen = 1;
    l->heap[l->hlen] = slot;
    t->heap_idx = l->hlen++;
    heap_up(l, t->heap_idx);
    return ((uint64_t)t->gen << 32) | (uint64_t)(slot + 1);
}

void tp_timer_cancel(tp_loop *l, uint64_t id)
{
    uint32_t slot = (uint32_t)(id & 0xffffffffu);
    if (slot == 0 || slot > l->tcap)
        return;
    slot--;
    struct tp_timer *t = &l->tslots[slot];
    if (t->heap_idx == UINT32_MAX || t->gen != (uint32_t)(id >> 32))
        return;
    heap_remove(l, t->heap_idx);
    timer_free_slot(l, slot);
}

/* Fire timers that were due at `now` and created before this round began
 * (a zero-delay timer added by a timer callback waits for the next round). */
static int timers_run(tp_loop *l, uint64_t now)
{
    int n = 0;
    uint64_t seq_limit = l->tseq;
    while (l->hlen > 0) {
        uint32_t slot = l->heap[0];
        struct tp_timer *t = &l->tslots[slot];
        if (t->deadline_ns > now || t->seq >= seq_limit)
            break;
        tp_fn fn = t->fn;
        void *arg = t->arg;
        heap_remove(l, 0);
        timer_free_slot(l, slot);
        fn(arg);
        n++;
    }
    return n;
}

/* ---- posted callbacks --------------------------------------------------- */

int tp_loop_post(tp_loop *l, tp_fn fn, void *arg)
{
    struct tp_post *p = malloc(sizeof *p);
    if (p == NULL)
        return -1;
    p->next = NULL;
    p->fn = fn;
    p->arg = arg;
    pthread_mutex_lock(&l->post_mu);
    int was_empty = l->post_head == NULL;
    if (was_empty)
        l->post_head = p;
    else
        l->post_tail->next = p;
    l->post_tail = p;
    atomic_fetch_add_explicit(&l->npost, 1, memory_order_release);
    pthread_mutex_unlock(&l->post_mu);
    if (was_empty)          /* the loop wakes once per batch of posts */
        tp_loop_wake(l);
    return 0;
}

void tp_loop_wake(tp_loop *l)
{
    uint64_t one = 1;
    while (write(l->evfd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

static int posts_run(tp_loop *l)
{
    if (atomic_load_explicit(&l->npost, memory_order_acquire) == 0)
        return 0;
    pthread_mutex_lock(&l->post_mu);
    struct tp_post *p = l->post_head;
    l->post_head = l->post_tail = NULL;
    atomic_store_explicit(&l->npost, 0, memory_order_relaxed);
    pthread_mutex_unlock(&l->post_mu);
    int n = 0;
    while (p != NULL) {
        struct tp_post *next = p->next;
        tp_fn fn = p->fn;
        void *arg = p->arg;
        free(p);
        fn(arg);
        p = next;
        n++;
    }
    return n;
}

/* ---- dispatch ----------------------------------------------------------- */

/* One round: wait up to wait_ns (UINT64_MAX = forever) for I/O, then run
 * I/O handlers, due timers, posted callbacks, pollers and flush hooks. */
/* While spinning with pollers (a kernel-bypass transport with work), only
 * every TP_SPIN_EPOLL-th round asks epoll: the pollers see their rings
 * without a syscall, and an epoll_wait per round (~0.5 us) would otherwise
 * be most of the time a spinning loop takes to notice a packet.  fd events
 * then wait at most that many rounds (a few us). */
#define TP_SPIN_EPOLL 16

static int loop_round(tp_loop *l, uint64_t wait_ns, int spinning)
{
    struct epoll_event evs[TP_MAX_EVENTS];
    int n = 0, nev;
    l->depth++;
    /* corked output of an enclosing round (a callback running the loop
     * itself, e.g. tp_call) must leave before we block */
    if (l->flush.n > 0)
        cblist_run(&l->flush);
    if (spinning && wait_ns == 0 && l->npollers > 0 && ++l->spin_rounds < TP_SPIN_EPOLL) {
        nev = 0;                    /* pollers only this round (see TP_SPIN_EPOLL) */
    } else if (wait_ns == 0) {
        l->spin_rounds = 0;
        nev = epoll_wait(l->epfd, evs, TP_MAX_EVENTS, 0);
    } else if (wait_ns == UINT64_MAX) {
        nev = epoll_wait(l->epfd, evs, TP_MAX_EVENTS, -1);
    } else {
        struct timespec ts = { .tv_sec = (time_t)(wait_ns / 1000000000u),
                               .tv_nsec = (long)(wait_ns % 1000000000u) };
        nev = epoll_pwait2(l->epfd, evs, TP_MAX_EVENTS, &ts, NULL);
        if (nev < 0 && errno == ENOSYS) {
            uint64_t ms = (wait_ns + 999999) / 1000000;
            nev = epoll_wait(l->epfd, evs, TP_MAX_EVENTS, ms > INT32_MAX ? INT32_MAX : (int)ms);
        }
    }
    if (nev < 0 && errno != EINTR)
        CRAM_WARN("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < nev; i++) {
        struct tp_fdh *h = evs[i].data.ptr;
        if (h->fd < 0)          /* deleted earlier in this batch */
            continue;
        h->fn(h->arg, evs[i].events);
        n++;
    }
    if (l->hlen > 0)
        n += timers_run(l, clock_mono_ns());
    n += posts_run(l);
    for (int i = 0; i < l->npollers; i++)
        n += l->pollers[i].fn(l->pollers[i].arg);
    cblist_run(&l->flush);
    l->depth--;
    if (l->depth == 0 && l->dfree.n > 0)
        cblist_run(&l->dfree);
    return n;
}

int tp_loop_poll(tp_loop *l, int timeout_ms)
{
    uint64_t now = clock_mono_ns();
    uint64_t end = timeout_ms < 0 ? UINT64_MAX : now + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        uint64_t wait;
        int spinning = l->poll_us > 0 &&
                       now < l->last_activity_ns + (uint64_t)l->poll_us * 1000u;
        if (spinning || timeout_ms == 0 ||
            atomic_load_explicit(&l->npost, memory_order_relaxed) > 0) {
            wait = 0;
        } else {
            wait = end == UINT64_MAX ? UINT64_MAX : end - now;
            if (l->hlen > 0) {
                uint64_t dl = l->tslots[l->heap[0]].deadline_ns;
                uint64_t tw = dl > now ? dl - now : 0;
                if (tw < wait)
                    wait = tw;
            }
        }
        int n = loop_round(l, wait, spinning);
        now = clock_mono_ns();
        if (n > 0) {
            l->last_activity_ns = now;
            return n;
        }
        if (now >= end)
            return 0;
    }
}

/* ---- routing of the public API to transports ---------------------------- */

/* Transports by locator prefix.  A new one supplies its ops in its own file
 * and is listed here behind its build flag, e.g.
 *   #ifdef CRAM_HAVE_RDMA
 *       &tp_rdma_ops,
 *   #endif
 * (the flag is defined by CMake only when the library was found, so a
 * transport whose file is not written yet must not be listed). */
static const struct tp_transport_ops *const tp_transports[] = {
    &tp_tcp_ops,
#ifdef CRAM_HAVE_XDP
    &tp_xdp_ops,
#endif
#ifdef CRAM_HAVE_RDMA
    &tp_rdma_ops,
#endif
};

static const struct tp_transport_ops *tp_find_transport(const struct locator *loc)
{
    for (size_t i = 0; i < sizeof tp_transports / sizeof tp_transports[0]; i++)
        if (strcmp(tp_transports[i]->proto, loc->proto) == 0)
            return tp_transports[i];
    return NULL;
}

tp_listener *tp_listen(tp_loop *l, const char *locator, tp_request_fn fn, void *arg,
                       char *err, size_t errlen)
{
    struct locator loc;
    if (l == NULL || fn == NULL) {
        snprintf(err, errlen, "tp_listen: no loop or handler");
        return NULL;
    }
    if (loc_parse(locator, &loc, err, errlen) != 0)
        return NULL;
    const struct tp_transport_ops *t = tp_find_transport(&loc);
    if (t == NULL) {
        snprintf(err, errlen, "no transport for locator protocol '%s'", loc.proto);
        return NULL;
    }
    return t->listen(l, &loc, fn, arg, err, errlen);
}

const char *tp_listener_locator(const tp_listener *ls)
{
    return ls->locator;
}

void tp_listener_close(tp_listener *ls)
{
    if (ls != NULL)
        ls->ops->close(ls);
}

const uint8_t *tp_rpc_request(const tp_rpc *rpc, uint32_t *len)
{
    if (len != NULL)
        *len = rpc->req_len;
    return rpc->req;
}

const char *tp_rpc_peer(const tp_rpc *rpc)
{
    return rpc->ops->peer(rpc);
}

void tp_rpc_reply(tp_rpc *rpc, const struct iovec *iov, int iovcnt)
{
    rpc->ops->reply(rpc, iov, iovcnt);
}

tp_session *tp_session_open(tp_loop *l, const char *locator, cram_status *st)
{
    struct locator loc;
    char err[256];
    cram_status dummy;
    if (st == NULL)
        st = &dummy;
    if (l == NULL || loc_parse(locator, &loc, err, sizeof err) != 0) {
        *st = CRAM_INVALID_ARGUMENT;
        return NULL;
    }
    const struct tp_transport_ops *t = tp_find_transport(&loc);
    if (t == NULL) {
        *st = CRAM_INVALID_ARGUMENT;
        return NULL;
    }
    return t->session_open(l, &loc, locator, st);
}

int tp_session_alive(const tp_session *s)
{
    return s != NULL && s->ops->alive(s);
}

const char *tp_session_locator(const tp_session *s)
{
    return s->locator;
}

void tp_session_close(tp_session *s)
{
    if (s != NULL)
        s->ops->close(s);
}

cram_status tp_send(tp_session *s, const struct iovec *iov, int iovcnt, uint32_t timeout_ms,
                    tp_response_fn cb, void *arg)
{
    if (s == NULL || cb == NULL || iovcnt < 0 || (iovcnt > 0 && iov == NULL))
        return CRAM_TRANSPORT_ERROR;
    return s->ops->send(s, iov, iovcnt, timeout_ms, cb, arg);
}

struct tp_call_state {
    int done;
    cram_status st;
    uint8_t *resp;
    uint32_t len;
};

static void tp_call_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct tp_call_state *cs = arg;
    cs->done = 1;
    cs->st = st;
    if (st == CRAM_OK) {
        cs->resp = malloc(len ? len : 1);
        if (cs->resp == NULL) {
            cs->st = CRAM_NO_MEMORY;
            return;
        }
        memcpy(cs->resp, resp, len);
        cs->len = len;
    }
}

cram_status tp_call(tp_session *s, const struct iovec *iov, int iovcnt, uint32_t timeout_ms,
                    uint8_t **resp, uint32_t *len)
{
    struct tp_call_state cs = { 0, CRAM_OK, NULL, 0 };
    if (resp != NULL)
        *resp = NULL;
    if (len != NULL)
        *len = 0;
    if (s == NULL)
        return CRAM_TRANSPORT_ERROR;
    tp_loop *l = s->loop;       /* s may be closed by a callback while we poll */
    cram_status st = tp_send(s, iov, iovcnt, timeout_ms, tp_call_done, &cs);
    if (st != CRAM_OK)
        return st;
    while (!cs.done)
        tp_loop_poll(l, -1);
    if (cs.st == CRAM_OK) {
        if (resp != NULL)
            *resp = cs.resp;
        else
            free(cs.resp);
        if (len != NULL)
            *len = cs.len;
    }
    return cs.st;
}

/* ---- bookkeeping -------------------------------------------------------- */

void tp_loop_link_session(tp_loop *l, tp_session *s)
{
    s->loop = l;
    s->prev = NULL;
    s->next = l->sessions;
    if (l->sessions != NULL)
        l->sessions->prev = s;
    l->sessions = s;
}

void tp_loop_unlink_session(tp_loop *l, tp_session *s)
{
    if (s->prev != NULL)
        s->prev->next = s->next;
    else if (l->sessions == s)
        l->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

void tp_loop_link_listener(tp_loop *l, tp_listener *ls)
{
    ls->loop = l;
    ls->prev = NULL;
    ls->next = l->listeners;
    if (l->listeners != NULL)
        l->listeners->prev = ls;
    l->listeners = ls;
}

void tp_loop_unlink_listener(tp_loop *l, tp_listener *ls)
{
    if (ls->prev != NULL)
        ls->prev->next = ls->next;
    else if (l->listeners == ls)
        l->listeners = ls->next;
    if (ls->next != NULL)
        ls->next->prev = ls->prev;
    ls->next = ls->prev = NULL;
}
