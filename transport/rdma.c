/*
 * rdma.c -- the rdma: transport's verbs layer (see rdma.h).  Thin on
 * purpose: every decision (framing, credits, which buffer to re-post,
 * reassembly, zero-copy plans) is rdma_buf.c's, unit-tested without a
 * device; this file turns them into librdmacm / libibverbs calls.
 *
 * Threads: a connection and everything on it belongs to its loop's thread;
 * the devices (one PD each), the registered-region table and the guards
 * with their holds are process-wide under rd_mu.  Verbs calls that register
 * memory run under rd_mu; deregistration runs after dropping it.
 */
#ifdef CRAM_HAVE_RDMA

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#include "common/clock.h"
#include "common/log.h"
#include "common/wire.h"
#include "transport/rdma.h"
#include "transport/rdma_buf.h"
#include "transport/transport_int.h"

#define RD_TX_SLOTS RB_RX_DEPTH
#define RD_WR_SEND (1ull << 63)        /* wr_id bit: a send slot (else a receive buffer) */
#define RD_MAX_GUARDS 8

/* Access flags of pinned log registrations: LOCAL_WRITE although the NIC
 * only reads them, so pinning breaks copy-on-write of untouched anonymous
 * pages (a read-only pin would pin the shared zero page the log later
 * writes past). */
#define RD_LOG_ACCESS IBV_ACCESS_LOCAL_WRITE

/* ---- process-wide: devices, registered memory, guards ------------------------ */

struct rd_dev {
    struct ibv_context *ctx;           /* rdma_cm's; lives as long as the process */
    struct ibv_pd *pd;                 /* shared by the device's connections; kept */
    int odp;                           /* can send from ODP memory */
};

struct rd_guard {
    tp_loop *loop;                     /* NULL = free entry */
    struct tp_rdma_guard g;
    struct rb_holds holds;
};

static pthread_mutex_t rd_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rd_dev rd_devs[RB_MAX_DEVS];       /* under rd_mu */
static int rd_ndevs;
static struct rb_regtab rd_tab = { .free_head = UINT32_MAX };
static struct rd_guard rd_guards[RD_MAX_GUARDS];

static void dereg_all(void **mrs, int n)
{
    for (int i = 0; i < n; i++)
        if (mrs[i] != NULL && ibv_dereg_mr(mrs[i]) != 0)
            CRAM_WARN("rdma: ibv_dereg_mr: %s", strerror(errno));
}

/* Give region idx its own registration on device d (rd_mu held). */
static void reg_on_dev(int idx, int d)
{
    struct rb_reg *r = &rd_tab.e[idx];
    struct ibv_mr *mr = ibv_reg_mr(rd_devs[d].pd, (void *)r->addr, r->len, RD_LOG_ACCESS);
    if (mr == NULL) {                  /* its responses are copied on this device */
        CRAM_WARN("rdma: registering %zu bytes of log memory: %s (responses from it are copied)",
                  r->len, strerror(errno));
        return;
    }
    rb_reg_set_key(&rd_tab, idx, d, mr->lkey, mr);
}

int tp_rdma_register(void *addr, size_t len)
{
    pthread_mutex_lock(&rd_mu);
    int idx = rb_reg_add(&rd_tab, (uintptr_t)addr, len);
    for (int d = 0; idx >= 0 && d < rd_ndevs; d++)
        if (rb_reg_needs_mr(&rd_tab, idx, d))
            reg_on_dev(idx, d);
    pthread_mutex_unlock(&rd_mu);
    return idx >= 0 ? 0 : -1;
}

void tp_rdma_unregister(void *addr)
{
    void *mrs[RB_MAX_DEVS];
    pthread_mutex_lock(&rd_mu);
    int rc = rb_reg_remove(&rd_tab, (uintptr_t)addr, mrs);
    pthread_mutex_unlock(&rd_mu);
    if (rc == 1)
        dereg_all(mrs, RB_MAX_DEVS);
}

int tp_rdma_registered(const void *addr, size_t len)
{
    pthread_mutex_lock(&rd_mu);
    /* a region counts whether or not a device keyed it yet */
    int idx = rb_reg_lookup(&rd_tab, (uintptr_t)addr);
    uint32_t pos = 0;
    for (; idx < 0 && pos < rd_tab.nlive; pos++) {
        const struct rb_reg *r = &rd_tab.e[rd_tab.sorted[pos]];
        if ((uintptr_t)addr >= r->addr && (uintptr_t)addr - r->addr < r->len)
            idx = (int)rd_tab.sorted[pos];
    }
    int yes = idx >= 0 && (uintptr_t)addr - rd_tab.e[idx].addr + len <= rd_tab.e[idx].len;
    pthread_mutex_unlock(&rd_mu);
    return yes;
}

/* Register the arena on demand on device d if it can send from ODP memory
 * (rd_mu held). */
static void odp_on_dev(int d)
{
    if (!rd_devs[d].odp || rd_tab.arena_len == 0 || rd_tab.odp[d].addr != 0)
        return;
    struct ibv_mr *mr = ibv_reg_mr(rd_devs[d].pd, (void *)rd_tab.arena, rd_tab.arena_len,
                                   IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_ON_DEMAND);
    if (mr == NULL) {
        CRAM_WARN("rdma: ODP registration of the log arena: %s (registering per segment)",
                  strerror(errno));
        rd_devs[d].odp = 0;
        return;
    }
    rb_reg_set_odp(&rd_tab, d, mr->lkey, mr);
}

void tp_rdma_set_arena(void *addr, size_t len)
{
    pthread_mutex_lock(&rd_mu);
    rb_reg_set_arena(&rd_tab, (uintptr_t)addr, len);
    for (int d = 0; d < rd_ndevs; d++)
        odp_on_dev(d);
    pthread_mutex_unlock(&rd_mu);
}

/* The device of a connection's id: found, or added with its PD, ODP check
 * and registrations of everything registered so far.  -1 if out of slots. */
static int dev_get(struct ibv_context *ctx)
{
    pthread_mutex_lock(&rd_mu);
    int d = 0;
    while (d < rd_ndevs && rd_devs[d].ctx != ctx)
        d++;
    if (d == rd_ndevs) {
        struct ibv_pd *pd = rd_ndevs < RB_MAX_DEVS ? ibv_alloc_pd(ctx) : NULL;
        if (pd == NULL) {
            pthread_mutex_unlock(&rd_mu);
            return -1;
        }
        struct ibv_device_attr_ex ax;
        memset(&ax, 0, sizeof ax);
        int odp = ibv_query_device_ex(ctx, NULL, &ax) == 0 &&
                  (ax.odp_caps.general_caps & IBV_ODP_SUPPORT) &&
                  (ax.odp_caps.per_transport_caps.rc_odp_caps & IBV_ODP_SUPPORT_SEND);
        rd_devs[d] = (struct rd_dev){ ctx, pd, odp };
        rd_ndevs++;
        odp_on_dev(d);
        for (uint32_t i = 0; i < rd_tab.nlive; i++)
            if (rb_reg_needs_mr(&rd_tab, (int)rd_tab.sorted[i], d))
                reg_on_dev((int)rd_tab.sorted[i], d);
    }
    pthread_mutex_unlock(&rd_mu);
    return d;
}

int tp_rdma_set_guard(tp_loop *l, const struct tp_rdma_guard *g)
{
    int rc = -1;
    pthread_mutex_lock(&rd_mu);
    for (int i = 0; i < RD_MAX_GUARDS; i++)
        if (rd_guards[i].loop == l) {
            rb_holds_free(&rd_guards[i].holds);
            rd_guards[i].loop = NULL;
        }
    for (int i = 0; g != NULL && i < RD_MAX_GUARDS; i++)
        if (rd_guards[i].loop == NULL) {
            rd_guards[i].loop = l;
            rd_guards[i].g = *g;
            rb_holds_init(&rd_guards[i].holds);
            rc = 0;
            break;
        }
    pthread_mutex_unlock(&rd_mu);
    return g == NULL ? 0 : rc;
}

/* rd_mu held. */
static struct rd_guard *guard_of(tp_loop *l)
{
    for (int i = 0; i < RD_MAX_GUARDS; i++)
        if (rd_guards[i].loop == l)
            return &rd_guards[i];
    return NULL;
}

/* Tell the guard the oldest tag in flight if it changed.  Called on the
 * guard's loop thread, rd_mu held (the callbacks only store a value). */
static void guard_publish(struct rd_guard *gd)
{
    uint64_t oldest;
    if (gd != NULL && rb_holds_publish(&gd->holds, &oldest))
        gd->g.hold(gd->g.arg, oldest);
}

/* A send (or a queued message) is done with the memory it held. */
static void txref_release(tp_loop *l, struct rb_txref *x)
{
    if (x->tag == 0 && x->nreg == 0)
        return;
    void *dereg[RB_MAX_SGE * RB_MAX_DEVS];
    pthread_mutex_lock(&rd_mu);
    struct rd_guard *gd = guard_of(l);
    int n = rb_tx_release(x, &rd_tab, gd ? &gd->holds : NULL, dereg);
    guard_publish(gd);
    pthread_mutex_unlock(&rd_mu);
    dereg_all(dereg, n);
}

int tp_rdma_device_check(char *err, size_t errlen)
{
    int n = 0;
    errno = 0;
    struct ibv_device **l = ibv_get_device_list(&n);
    if (l == NULL || n == 0) {
        snprintf(err, errlen, "rdma: no RDMA device (ibv_get_device_list: %s)",
                 l == NULL ? strerror(errno ? errno : ENODEV) : "no devices");
        if (l)
            ibv_free_device_list(l);
        return -1;
    }
    ibv_free_device_list(l);
    return 0;
}

/* ---- connections ----------------------------------------------------------- */

/* A message waiting for credits / send slots.  Its bytes are plan[0..np):
 * pieces copied into buf, and (zero-copy responses) pieces of registered
 * memory held by ref until the message is fully posted. */
struct rd_msg {
    struct rd_msg *next;
    uint8_t type;
    uint64_t id;
    uint8_t *buf;                      /* the copied pieces */
    struct rb_sge plan[RB_MAX_SGE - 1];
    int np;
    uint32_t len, off;
    struct rb_txref ref;
};

struct rd_call {
    struct rd_call *next;
    uint64_t id;
    tp_response_fn cb;
    void *arg;
    uint64_t timer;
    struct rd_conn *c;
};

struct rd_listener;

struct rd_conn {
    tp_loop *loop;
    struct rdma_cm_id *id;
    struct ibv_pd *pd;                 /* the device's (rd_devs[dev]); not ours */
    int dev;
    struct ibv_comp_channel *cc;
    struct ibv_cq *cq;
    uint8_t *rx_mem, *tx_mem;
    struct ibv_mr *rx_mr, *tx_mr;
    struct rb_txref txref[RD_TX_SLOTS];  /* registered memory a posted send reads */
    struct rb_rxring ring;
    struct rb_credits cr;
    struct rb_reasm ra;
    uint32_t txfree[RD_TX_SLOTS], ntxfree;
    uint32_t sends_out;                /* posted sends not completed */
    struct rd_msg *q_head, *q_tail;
    struct tp_fdh cch;
    uint64_t poller;
    int established, dead, refs;
    struct rd_listener *ls;            /* server side */
    struct rd_conn *lnext;             /* listener's list of connections */
    struct rd_session *sess;           /* client side */
    uint32_t max_inline;
    char peer[64];
};

struct rd_session {
    struct tp_session head;
    struct rdma_event_channel *ch;
    struct tp_fdh chh;
    struct rd_conn *c;
    struct rd_call *calls;
    uint64_t next_id;
    int dead;
};

struct rd_listener {
    struct tp_listener head;
    struct rdma_event_channel *ch;
    struct rdma_cm_id *id;
    struct tp_fdh chh;
    tp_request_fn fn;
    void *arg;
    struct rd_conn *conns;             /* accepted, not yet disconnected */
};

static void listener_forget(struct rd_listener *ls, struct rd_conn *c)
{
    for (struct rd_conn **pp = &ls->conns; *pp; pp = &(*pp)->lnext)
        if (*pp == c) {
            *pp = c->lnext;
            break;
        }
    c->ls = NULL;
}

struct rd_rpc {
    struct tp_rpc head;
    struct rd_conn *c;
    uint64_t id;
    uint8_t *req;
};

static const struct tp_session_ops rd_session_ops;
static const struct tp_listener_ops rd_listener_ops;
static const struct tp_rpc_ops rd_rpc_ops;

static void conn_fail(struct rd_conn *c);
static void conn_flush(struct rd_conn *c);

static void conn_unref(struct rd_conn *c)
{
    if (--c->refs > 0)
        return;
    rb_reasm_free(&c->ra);
    while (c->q_head) {
        struct rd_msg *m = c->q_head;
        c->q_head = m->next;
        txref_release(c->loop, &m->ref);
        free(m->buf);
        free(m);
    }
    if (c->id && c->id->qp)
        rdma_destroy_qp(c->id);
    /* the queue pair is gone: sends never completed read nothing more */
    for (uint32_t i = 0; i < RD_TX_SLOTS; i++)
        txref_release(c->loop, &c->txref[i]);
    if (c->rx_mr)
        ibv_dereg_mr(c->rx_mr);
    if (c->tx_mr)
        ibv_dereg_mr(c->tx_mr);
    if (c->cq)
        ibv_destroy_cq(c->cq);
    if (c->cc)
        ibv_destroy_comp_channel(c->cc);
    if (c->id)
        rdma_destroy_id(c->id);
    free(c->rx_mem);
    free(c->tx_mem);
    free(c);
}

static void conn_free_deferred(void *arg)
{
    conn_unref(arg);
}

static void conn_post_recvs(struct rd_conn *c)
{
    uint32_t idx[RB_RX_DEPTH];
    uint32_t n = rb_rx_take(&c->ring, idx, RB_RX_DEPTH);
    for (uint32_t i = 0; i < n; i++) {
        struct ibv_sge sge = { (uintptr_t)(c->rx_mem + (size_t)idx[i] * RB_BUF_SIZE), RB_BUF_SIZE,
                               c->rx_mr->lkey };
        struct ibv_recv_wr wr = { .wr_id = idx[i], .sg_list = &sge, .num_sge = 1 }, *bad;
        if (ibv_post_recv(c->id->qp, &wr, &bad) != 0) {
            CRAM_WARN("rdma %s: ibv_post_recv: %s", c->peer, strerror(errno));
            conn_fail(c);
            return;
        }
        if (c->established)
            rb_credits_reposted(&c->cr);
    }
}

/* CQ + channel, QP and the buffers for an id whose device is known (route
 * resolved / connect request), in the device's PD.  Returns 0 or -1. */
static int conn_setup(struct rd_conn *c)
{
    c->dev = dev_get(c->id->verbs);
    c->pd = c->dev >= 0 ? rd_devs[c->dev].pd : NULL;
    c->cc = c->pd ? ibv_create_comp_channel(c->id->verbs) : NULL;
    c->cq = c->cc ? ibv_create_cq(c->id->verbs, RB_RX_DEPTH + RD_TX_SLOTS, c, c->cc, 0) : NULL;
    if (c->cq == NULL)
        return -1;
    struct ibv_qp_init_attr qa = {
        .send_cq = c->cq, .recv_cq = c->cq, .qp_type = IBV_QPT_RC,
        .cap = { .max_send_wr = RD_TX_SLOTS, .max_recv_wr = RB_RX_DEPTH,
                 .max_send_sge = RB_MAX_SGE, .max_recv_sge = 1, .max_inline_data = RB_INLINE_MAX },
    };
    if (rdma_create_qp(c->id, c->pd, &qa) != 0)
        return -1;
    c->max_inline = qa.cap.max_inline_data;
    c->rx_mem = aligned_alloc(4096, (size_t)RB_RX_DEPTH * RB_BUF_SIZE);
    c->tx_mem = aligned_alloc(4096, (size_t)RD_TX_SLOTS * RB_BUF_SIZE);
    if (c->rx_mem == NULL || c->tx_mem == NULL)
        return -1;
    c->rx_mr = ibv_reg_mr(c->pd, c->rx_mem, (size_t)RB_RX_DEPTH * RB_BUF_SIZE, IBV_ACCESS_LOCAL_WRITE);
    c->tx_mr = ibv_reg_mr(c->pd, c->tx_mem, (size_t)RD_TX_SLOTS * RB_BUF_SIZE, IBV_ACCESS_LOCAL_WRITE);
    if (c->rx_mr == NULL || c->tx_mr == NULL)
        return -1;
    rb_rx_init(&c->ring, c->rx_mem, RB_RX_DEPTH);
    rb_credits_init(&c->cr, RB_RX_DEPTH);
    for (uint32_t i = 0; i < RD_TX_SLOTS; i++)
        c->txfree[c->ntxfree++] = i;
    conn_post_recvs(c);
    if (c->dead || ibv_req_notify_cq(c->cq, 0) != 0)
        return -1;
    int fl = fcntl(c->cc->fd, F_GETFL);
    fcntl(c->cc->fd, F_SETFL, fl | O_NONBLOCK);
    return 0;
}

/* ---- sending --------------------------------------------------------------- */

/* Post one frame of message m: header and copied pieces in a send slot,
 * registered pieces as direct scatter entries (each holding its memory
 * until the completion).  Returns 0 or -1. */
static int post_frame(struct rd_conn *c, const struct rb_hdr *h0, const struct rd_msg *m)
{
    struct rb_sge win[RB_MAX_SGE - 1];
    int nw = 0;
    if (m != NULL && h0->len > 0) {
        nw = rb_plan_window(m->plan, m->np, h0->off, h0->len, win);
        CRAM_ASSERT(nw > 0);
    }
    uint32_t slot = c->txfree[c->ntxfree - 1];
    if (m != NULL && m->ref.nreg > 0) {
        pthread_mutex_lock(&rd_mu);
        struct rd_guard *gd = guard_of(c->loop);
        int rc = rb_tx_hold(&c->txref[slot], &rd_tab, gd ? &gd->holds : NULL, win, nw, m->ref.tag);
        guard_publish(gd);
        pthread_mutex_unlock(&rd_mu);
        if (rc != 0) {
            CRAM_WARN("rdma %s: out of memory holding a zero-copy send", c->peer);
            return -1;
        }
    }
    c->ntxfree--;
    uint8_t *p = c->tx_mem + (size_t)slot * RB_BUF_SIZE;
    struct rb_hdr h = *h0;
    h.credits = rb_credits_on_send(&c->cr);
    rb_hdr_encode(&h, p);
    struct rb_sgl sgl[RB_MAX_SGE];
    uint32_t used;
    int ns = rb_sgl_build(win, nw, p, c->tx_mr->lkey, sgl, &used);
    struct ibv_sge sge[RB_MAX_SGE];
    for (int i = 0; i < ns; i++)
        sge[i] = (struct ibv_sge){ sgl[i].addr, sgl[i].len, sgl[i].lkey };
    struct ibv_send_wr wr = { .wr_id = RD_WR_SEND | slot, .sg_list = sge, .num_sge = ns,
                              .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED }, *bad;
    if (ns == 1 && rb_use_inline(sgl[0].len, c->max_inline))
        wr.send_flags |= IBV_SEND_INLINE;
    if (ibv_post_send(c->id->qp, &wr, &bad) != 0) {
        CRAM_WARN("rdma %s: ibv_post_send: %s", c->peer, strerror(errno));
        txref_release(c->loop, &c->txref[slot]);
        c->txfree[c->ntxfree++] = slot;
        return -1;
    }
    c->sends_out++;
    return 0;
}

static void msg_free(struct rd_conn *c, struct rd_msg *m)
{
    txref_release(c->loop, &m->ref);
    free(m->buf);
    free(m);
}

/* Send queued frames while credits and send slots last. */
static void conn_flush(struct rd_conn *c)
{
    while (!c->dead && c->established && c->q_head && c->ntxfree > 0 && rb_credits_can_send(&c->cr, 0)) {
        struct rd_msg *m = c->q_head;
        uint32_t n = m->len - m->off < RB_MAX_PAYLOAD ? m->len - m->off : RB_MAX_PAYLOAD;
        struct rb_hdr h = { .type = m->type, .len = n, .id = m->id, .total = m->len, .off = m->off };
        if (post_frame(c, &h, m) != 0) {
            conn_fail(c);
            return;
        }
        m->off += n;
        if (m->off >= m->len) {
            c->q_head = m->next;
            if (c->q_head == NULL)
                c->q_tail = NULL;
            msg_free(c, m);            /* its frames hold what they read */
        }
    }
    if (!c->dead && c->established && c->q_head == NULL && c->ntxfree > 0 &&
        rb_credits_want_explicit(&c->cr, RB_RX_DEPTH)) {
        struct rb_hdr h = { .type = RB_T_CREDIT };
        if (post_frame(c, &h, NULL) != 0)
            conn_fail(c);
    }
}

/* Plan a zero-copy response (rd_mu held): pieces in registered memory stay
 * where they are, held under the guard's current tag.  Returns the number
 * of plan entries, or 0 when it would not help (nothing registered, too
 * many pieces, no guard on this loop, out of memory). */
static int plan_zero_copy(struct rd_conn *c, const struct iovec *iov, int iovcnt, uint32_t len,
                          struct rd_msg *m)
{
    struct rd_guard *gd = guard_of(c->loop);
    if (gd == NULL || rd_tab.nlive == 0 || c->dev < 0)
        return 0;
    int np = rb_plan(iov, iovcnt, 0, len, &rd_tab, c->dev, m->plan);
    int direct = 0;
    for (int i = 0; i < np; i++)
        direct |= m->plan[i].addr != 0;
    if (np <= 0 || !direct)
        return 0;
    if (rb_tx_hold(&m->ref, &rd_tab, &gd->holds, m->plan, np, gd->g.now(gd->g.arg)) != 0)
        return 0;
    guard_publish(gd);
    return np;
}

/* Queue a message (zc: responses may be sent from registered memory). */
static int conn_queue(struct rd_conn *c, uint8_t type, uint64_t id, const struct iovec *iov, int iovcnt,
                      uint32_t len, int zc)
{
    struct rd_msg *m = calloc(1, sizeof *m);
    if (m == NULL)
        return -1;
    if (zc) {
        pthread_mutex_lock(&rd_mu);
        m->np = plan_zero_copy(c, iov, iovcnt, len, m);
        pthread_mutex_unlock(&rd_mu);
    }
    uint32_t ncopy = 0;
    for (int i = 0; i < m->np; i++)
        ncopy += m->plan[i].addr == 0 ? m->plan[i].len : 0;
    if (m->np == 0)
        ncopy = len;
    m->buf = malloc(ncopy ? ncopy : 1);
    if (m->buf == NULL) {
        msg_free(c, m);
        return -1;
    }
    uint32_t off = 0;
    if (m->np == 0) {                  /* all copied: one piece */
        for (int i = 0; i < iovcnt; i++) {
            if (iov[i].iov_len)
                memcpy(m->buf + off, iov[i].iov_base, iov[i].iov_len);
            off += (uint32_t)iov[i].iov_len;
        }
        m->plan[0] = (struct rb_sge){ .addr = 0, .src = m->buf, .len = len, .reg = -1 };
        m->np = 1;
    } else {                           /* the copied pieces move into buf */
        for (int i = 0; i < m->np; i++)
            if (m->plan[i].addr == 0) {
                memcpy(m->buf + off, m->plan[i].src, m->plan[i].len);
                m->plan[i].src = m->buf + off;
                off += m->plan[i].len;
            }
    }
    m->type = type;
    m->id = id;
    m->len = len;
    if (c->q_tail)
        c->q_tail->next = m;
    else
        c->q_head = m;
    c->q_tail = m;
    conn_flush(c);
    return 0;
}

/* ---- receiving --------------------------------------------------------------- */

static void session_deliver(struct rd_session *s, uint64_t id, cram_status st, const uint8_t *resp, uint32_t len);

static void conn_message(struct rd_conn *c, uint8_t type, uint64_t id, uint8_t *msg, uint32_t len)
{
    if (type == RB_T_REQ && c->ls) {
        struct rd_rpc *r = malloc(sizeof *r);
        if (r == NULL) {
            free(msg);
            return;
        }
        r->head.ops = &rd_rpc_ops;
        r->head.req = msg;
        r->head.req_len = len;
        r->c = c;
        r->id = id;
        r->req = msg;
        c->refs++;
        c->ls->fn(c->ls->arg, &r->head);
    } else if (type == RB_T_RESP && c->sess) {
        session_deliver(c->sess, id, CRAM_OK, msg, len);
        free(msg);
    } else {
        free(msg);
        conn_fail(c);                  /* a request to a client or the reverse */
    }
}

/* Drain the CQ.  Returns completions handled. */
static int conn_poll_cq(struct rd_conn *c)
{
    struct ibv_wc wc[32];
    int total = 0;
    c->refs++;                         /* callbacks may close the connection */
    while (!c->dead) {
        int n = ibv_poll_cq(c->cq, 32, wc);
        if (n <= 0)
            break;
        total += n;
        for (int i = 0; i < n; i++) {
            if (wc[i].wr_id & RD_WR_SEND) {
                /* done (or flushed): the slot and what it read are free */
                uint32_t slot = (uint32_t)(wc[i].wr_id & 0xffffffffu);
                txref_release(c->loop, &c->txref[slot]);
                c->txfree[c->ntxfree++] = slot;
                c->sends_out--;
            }
            if (c->dead)
                continue;
            if (wc[i].status != IBV_WC_SUCCESS) {
                CRAM_WARN("rdma %s: completion error: %s", c->peer, ibv_wc_status_str(wc[i].status));
                conn_fail(c);
                continue;
            }
            if (wc[i].wr_id & RD_WR_SEND)
                continue;
            uint8_t *buf = rb_rx_complete(&c->ring, wc[i].wr_id);
            struct rb_hdr h;
            if (buf == NULL || rb_hdr_decode(buf, wc[i].byte_len, &h) != 0 ||
                rb_credits_grant(&c->cr, h.credits, RB_RX_DEPTH) != 0) {
                CRAM_WARN("rdma %s: malformed frame: closing", c->peer);
                conn_fail(c);
                continue;
            }
            uint8_t *msg = NULL;
            uint32_t len = 0;
            int rc = h.type == RB_T_CREDIT ? 0 : rb_reasm_add(&c->ra, &h, buf + RB_HDR_LEN, &msg, &len);
            rb_rx_release(&c->ring, (uint32_t)wc[i].wr_id);
            if (rc < 0) {
                CRAM_WARN("rdma %s: bad framing: closing", c->peer);
                conn_fail(c);
                continue;
            }
            if (rc == 1)
                conn_message(c, h.type, h.id, msg, len);
        }
        if (!c->dead)
            conn_post_recvs(c);
    }
    if (!c->dead)
        conn_flush(c);
    conn_unref(c);
    return total;
}

static int conn_busy(const struct rd_conn *c)
{
    return c->sends_out > 0 || c->q_head != NULL || (c->sess && c->sess->calls != NULL);
}

static int conn_poller(void *arg)
{
    struct rd_conn *c = arg;
    int n = c->dead ? 0 : conn_poll_cq(c);
    if (!conn_busy(c) || c->dead) {
        tp_loop_del_poller(c->loop, c->poller);
        c->poller = 0;
    }
    return n;
}

static void conn_update_poller(struct rd_conn *c)
{
    if (!c->dead && conn_busy(c) && c->poller == 0)
        c->poller = tp_loop_add_poller(c->loop, conn_poller, c);
}

static void conn_cq_ready(void *arg, uint32_t events)
{
    struct rd_conn *c = arg;
    struct ibv_cq *cq;
    void *ctx;
    (void)events;
    if (ibv_get_cq_event(c->cc, &cq, &ctx) == 0) {
        ibv_ack_cq_events(cq, 1);
        ibv_req_notify_cq(cq, 0);      /* re-arm before draining: nothing is missed */
    }
    conn_poll_cq(c);
    conn_update_poller(c);
}

static void conn_fail(struct rd_conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    if (c->poller) {
        tp_loop_del_poller(c->loop, c->poller);
        c->poller = 0;
    }
    tp_loop_del_fd(c->loop, &c->cch);
    if (c->id)
        rdma_disconnect(c->id);
    if (c->sess) {
        struct rd_session *s = c->sess;
        s->dead = 1;
        while (s->calls)
            session_deliver(s, s->calls->id, CRAM_TRANSPORT_ERROR, NULL, 0);
    }
}

static struct rd_conn *conn_new(tp_loop *l, struct rdma_cm_id *id)
{
    struct rd_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->loop = l;
    c->id = id;
    c->refs = 1;
    c->cch.fd = -1;
    struct sockaddr_in *sa = (struct sockaddr_in *)rdma_get_peer_addr(id);
    char ip[INET_ADDRSTRLEN] = "?";
    if (sa && sa->sin_family == AF_INET)
        inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "%s:%u", ip, sa ? ntohs(sa->sin_port) : 0);
    return c;
}

static int conn_arm(struct rd_conn *c)
{
    return tp_loop_add_fd(c->loop, &c->cch, c->cc->fd, EPOLLIN, conn_cq_ready, c);
}

/* ---- server side -------------------------------------------------------------- */

static void rd_rpc_reply(tp_rpc *rpc, const struct iovec *iov, int iovcnt)
{
    struct rd_rpc *r = (struct rd_rpc *)rpc;
    struct rd_conn *c = r->c;
    uint64_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    /* a response may be sent from registered log memory (no copy; held
     * until its sends complete -- see tp_rdma_set_guard) */
    if (!c->dead) {
        if (len > WIRE_MAX_MESSAGE || conn_queue(c, RB_T_RESP, r->id, iov, iovcnt, (uint32_t)len, 1) != 0)
            conn_fail(c);
        conn_update_poller(c);
    }
    free(r->req);
    free(r);
    conn_unref(c);
}

static const char *rd_rpc_peer(const tp_rpc *rpc)
{
    return ((const struct rd_rpc *)rpc)->c->peer;
}

static const struct tp_rpc_ops rd_rpc_ops = { rd_rpc_reply, rd_rpc_peer };

static void listener_cm_ready(void *arg, uint32_t events)
{
    struct rd_listener *ls = arg;
    struct rdma_cm_event *ev;
    (void)events;
    while (rdma_get_cm_event(ls->ch, &ev) == 0) {
        struct rdma_cm_id *id = ev->id;
        struct rd_conn *c = id->context;
        enum rdma_cm_event_type type = ev->event;
        rdma_ack_cm_event(ev);
        if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
            c = conn_new(ls->head.loop, id);
            if (c == NULL) {
                rdma_reject(id, NULL, 0);
                rdma_destroy_id(id);
                continue;
            }
            id->context = c;
            c->ls = ls;
            c->lnext = ls->conns;
            ls->conns = c;
            struct rdma_conn_param p = { .responder_resources = 1, .initiator_depth = 1, .rnr_retry_count = 7 };
            if (conn_setup(c) != 0 || conn_arm(c) != 0 || rdma_accept(id, &p) != 0) {
                CRAM_WARN("rdma: accepting %s failed: %s", c->peer, strerror(errno));
                listener_forget(ls, c);
                conn_fail(c);
                tp_loop_defer_free(c->loop, conn_free_deferred, c);
            }
        } else if (type == RDMA_CM_EVENT_ESTABLISHED && c) {
            c->established = 1;
            conn_flush(c);
        } else if ((type == RDMA_CM_EVENT_DISCONNECTED || type == RDMA_CM_EVENT_TIMEWAIT_EXIT) && c &&
                   !c->dead) {
            listener_forget(ls, c);
            conn_fail(c);
            tp_loop_defer_free(c->loop, conn_free_deferred, c);
        }
    }
}

static void rd_listener_close(tp_listener *h)
{
    struct rd_listener *ls = (struct rd_listener *)h;
    tp_loop_del_fd(h->loop, &ls->chh);
    while (ls->conns) {                /* its connections go with it */
        struct rd_conn *c = ls->conns;
        listener_forget(ls, c);
        conn_fail(c);
        tp_loop_defer_free(c->loop, conn_free_deferred, c);
    }
    rdma_destroy_id(ls->id);
    rdma_destroy_event_channel(ls->ch);
    tp_loop_unlink_listener(h->loop, h);
    free(ls);
}

static const struct tp_listener_ops rd_listener_ops = { rd_listener_close };

static int resolve(const struct locator *loc, struct sockaddr_in *sa, char *err, size_t errlen)
{
    char host[256];
    uint16_t port;
    if (loc_tcp_addr(loc, host, sizeof host, &port, err, errlen) != 0)
        return -1;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons(port);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        snprintf(err, errlen, "rdma: host must be an IPv4 address");
        return -1;
    }
    return 0;
}

static tp_listener *rd_listen(tp_loop *l, const struct locator *loc, tp_request_fn fn, void *arg,
                              char *err, size_t errlen)
{
    struct sockaddr_in sa;
    if (resolve(loc, &sa, err, errlen) != 0)
        return NULL;
    if (tp_rdma_device_check(err, errlen) != 0) {
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, ": refusing rdma: locator");
        return NULL;
    }
    struct rd_listener *ls = calloc(1, sizeof *ls);
    if (ls == NULL)
        return NULL;
    ls->fn = fn;
    ls->arg = arg;
    ls->ch = rdma_create_event_channel();
    if (ls->ch == NULL || rdma_create_id(ls->ch, &ls->id, ls, RDMA_PS_TCP) != 0 ||
        rdma_bind_addr(ls->id, (struct sockaddr *)&sa) != 0 || rdma_listen(ls->id, 64) != 0) {
        snprintf(err, errlen, "rdma: listen: %s", strerror(errno));
        goto free_ls;
    }
    int fl = fcntl(ls->ch->fd, F_GETFL);
    fcntl(ls->ch->fd, F_SETFL, fl | O_NONBLOCK);
    if (tp_loop_add_fd(l, &ls->chh, ls->ch->fd, EPOLLIN, listener_cm_ready, ls) != 0) {
        snprintf(err, errlen, "rdma: epoll: %s", strerror(errno));
        goto free_ls;
    }
    uint16_t port = ntohs(rdma_get_src_port(ls->id));
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
    ls->head.ops = &rd_listener_ops;
    snprintf(ls->head.locator, sizeof ls->head.locator, "rdma:host=%s,port=%u", host, port);
    tp_loop_link_listener(l, &ls->head);
    return &ls->head;

free_ls:
    if (ls->id)
        rdma_destroy_id(ls->id);
    if (ls->ch)
        rdma_destroy_event_channel(ls->ch);
    free(ls);
    return NULL;
}

/* ---- client side ---------------------------------------------------------------- */

static void session_deliver(struct rd_session *s, uint64_t id, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct rd_call **pp = &s->calls;
    while (*pp && (*pp)->id != id)
        pp = &(*pp)->next;
    struct rd_call *k = *pp;
    if (k == NULL)
        return;                        /* timed out earlier */
    *pp = k->next;
    if (k->timer)
        tp_timer_cancel(s->head.loop, k->timer);
    k->cb(k->arg, st, resp, len);
    free(k);
}

static void call_timeout(void *arg)
{
    struct rd_call *k = arg;
    struct rd_session *s = k->c->sess;
    k->timer = 0;
    session_deliver(s, k->id, CRAM_TIMEOUT, NULL, 0);
}

static void session_cm_ready(void *arg, uint32_t events)
{
    struct rd_session *s = arg;
    struct rdma_cm_event *ev;
    (void)events;
    while (rdma_get_cm_event(s->ch, &ev) == 0) {
        enum rdma_cm_event_type type = ev->event;
        rdma_ack_cm_event(ev);
        struct rd_conn *c = s->c;
        if (c == NULL || c->dead)
            continue;
        int bad = 0;
        if (type == RDMA_CM_EVENT_ADDR_RESOLVED) {
            bad = rdma_resolve_route(c->id, 2000) != 0;
        } else if (type == RDMA_CM_EVENT_ROUTE_RESOLVED) {
            struct rdma_conn_param p = { .responder_resources = 1, .initiator_depth = 1,
                                         .retry_count = 7, .rnr_retry_count = 7 };
            bad = conn_setup(c) != 0 || conn_arm(c) != 0 || rdma_connect(c->id, &p) != 0;
        } else if (type == RDMA_CM_EVENT_ESTABLISHED) {
            c->established = 1;
            conn_flush(c);
            conn_update_poller(c);
        } else {
            bad = 1;                   /* errors, rejection, disconnect */
        }
        if (bad) {
            CRAM_WARN("rdma: session to %s: %s", s->head.locator, rdma_event_str(type));
            conn_fail(c);
        }
    }
}

static tp_session *rd_session_open(tp_loop *l, const struct locator *loc, const char *locstr, cram_status *st)
{
    struct sockaddr_in sa;
    char err[256];
    *st = CRAM_INVALID_ARGUMENT;
    if (strlen(locstr) >= sizeof ((tp_session *)0)->locator || resolve(loc, &sa, err, sizeof err) != 0)
        return NULL;
    *st = CRAM_TRANSPORT_ERROR;
    if (tp_rdma_device_check(err, sizeof err) != 0) {
        CRAM_WARN("%s: cannot open %s", err, locstr);
        return NULL;
    }
    struct rd_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->next_id = 1;
    struct rdma_cm_id *id = NULL;
    s->ch = rdma_create_event_channel();
    if (s->ch == NULL || rdma_create_id(s->ch, &id, s, RDMA_PS_TCP) != 0)
        goto free_s;
    s->c = conn_new(l, id);
    if (s->c == NULL)
        goto free_s;
    s->c->sess = s;
    int fl = fcntl(s->ch->fd, F_GETFL);
    fcntl(s->ch->fd, F_SETFL, fl | O_NONBLOCK);
    if (tp_loop_add_fd(l, &s->chh, s->ch->fd, EPOLLIN, session_cm_ready, s) != 0 ||
        rdma_resolve_addr(id, NULL, (struct sockaddr *)&sa, 2000) != 0)
        goto free_conn;
    s->head.ops = &rd_session_ops;
    snprintf(s->head.locator, sizeof s->head.locator, "%s", locstr);
    tp_loop_link_session(l, &s->head);
    *st = CRAM_OK;
    return &s->head;

free_conn:
    tp_loop_del_fd(l, &s->chh);
    s->c->sess = NULL;
    conn_unref(s->c);                  /* destroys id */
    id = NULL;
free_s:
    if (id)
        rdma_destroy_id(id);
    if (s->ch)
        rdma_destroy_event_channel(s->ch);
    free(s);
    return NULL;
}

static cram_status rd_send(tp_session *h, const struct iovec *iov, int iovcnt, uint32_t timeout_ms,
                           tp_response_fn cb, void *arg)
{
    struct rd_session *s = (struct rd_session *)h;
    if (s->dead || s->c->dead)
        return CRAM_TRANSPORT_ERROR;
    uint64_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    if (len > WIRE_MAX_MESSAGE)
        return CRAM_REQUEST_TOO_LARGE;
    struct rd_call *k = calloc(1, sizeof *k);
    if (k == NULL)
        return CRAM_TRANSPORT_ERROR;
    k->id = s->next_id++;
    k->cb = cb;
    k->arg = arg;
    k->c = s->c;
    if (conn_queue(s->c, RB_T_REQ, k->id, iov, iovcnt, (uint32_t)len, 0) != 0) {
        free(k);
        return CRAM_TRANSPORT_ERROR;
    }
    if (timeout_ms)
        k->timer = tp_timer_add(h->loop, (uint64_t)timeout_ms * 1000, call_timeout, k);
    k->next = s->calls;
    s->calls = k;
    conn_update_poller(s->c);
    return CRAM_OK;
}

static int rd_alive(const tp_session *h)
{
    const struct rd_session *s = (const struct rd_session *)h;
    return !s->dead && !s->c->dead;
}

static void rd_session_close(tp_session *h)
{
    struct rd_session *s = (struct rd_session *)h;
    tp_loop *l = h->loop;
    tp_loop_unlink_session(l, h);
    conn_fail(s->c);                   /* fails outstanding calls */
    s->c->sess = NULL;
    tp_loop_del_fd(l, &s->chh);
    tp_loop_defer_free(l, conn_free_deferred, s->c);
    rdma_destroy_event_channel(s->ch);
    free(s);
}

static const struct tp_session_ops rd_session_ops = { rd_send, rd_alive, rd_session_close };

const struct tp_transport_ops tp_rdma_ops = { "rdma", rd_listen, rd_session_open };

#else /* !CRAM_HAVE_RDMA */

#include <stdio.h>
#include "transport/rdma.h"

int tp_rdma_device_check(char *err, size_t errlen)
{
    snprintf(err, errlen, "rdma: built without rdma-core (CRAM_WITH_RDMA off or libibverbs missing)");
    return -1;
}

int tp_rdma_register(void *addr, size_t len)
{
    (void)addr;
    (void)len;
    return -1;
}

void tp_rdma_unregister(void *addr)
{
    (void)addr;
}

int tp_rdma_registered(const void *addr, size_t len)
{
    (void)addr;
    (void)len;
    return 0;
}

void tp_rdma_set_arena(void *addr, size_t len)
{
    (void)addr;
    (void)len;
}

int tp_rdma_set_guard(tp_loop *l, const struct tp_rdma_guard *g)
{
    (void)l;
    return g == NULL ? 0 : -1;
}

#endif /* CRAM_HAVE_RDMA */
