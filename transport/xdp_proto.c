/*
 * xdp_proto.c -- the xdp: transport's message protocol (see xdp_proto.h for
 * the packet format and the rules).  Pure: no sockets, no clock reads.
 *
 * Objects:
 *   xp_txm   one message being sent (a request of a call, or a response of
 *            a server rpc): copy of the bytes, window state relative to cum
 *            (ackmap / needmap bit i = fragment cum+i), send times.
 *   xp_rxm   one message being reassembled: buffer + one bit per fragment.
 *   xp_call  a client RPC; lives in its channel's id ring once it has an id.
 *   xp_srpc  a server RPC slot; a tombstone (DONE) after the response is
 *            acknowledged, freed when the client's low-water mark passes it.
 *
 * Callbacks (xp_done_fn, ops->request) may close channels or open new
 * calls, so code that runs them touches nothing of the object afterwards and
 * list walks that run them restart from the head.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "common/log.h"
#include "common/wire.h"
#include "transport/xdp_proto.h"

#define XP_MASK (XP_CHAN_WINDOW - 1)
#define XP_PEER_BUCKETS 256
#define XP_PEER_IDLE_NS 30000000000ull  /* an idle peer record (tombstones only) is dropped */
#define XP_SWEEP_NS 1000000000ull
#define XP_FAST_GAP_NS 200000ull        /* a hole resent at most once per 200 us by fast retransmit */
#define XP_DACK_NS 1000000ull           /* delayed response ack (< XP_RTO_MIN_NS) */

_Static_assert((XP_CHAN_WINDOW & (XP_CHAN_WINDOW - 1)) == 0, "XP_CHAN_WINDOW must be a power of 2");
_Static_assert(XP_WINDOW == 64, "ack bitmaps are 64 bits");

/* Whether more than d ns passed from t to now.  Callers' clocks are read at
 * different moments (a reply stamped after the tick's `now` was read), so
 * t may be a little after now: that is "not yet", never a huge interval. */
static int older_than(uint64_t now, uint64_t t, uint64_t d)
{
    return now > t && now - t > d;
}

/* ---- little-endian helpers ---------------------------------------------- */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

void xp_hdr_encode(const struct xp_hdr *h, uint8_t *o)
{
    put16(o, XP_MAGIC);
    o[2] = XP_VERSION;
    o[3] = h->type;
    o[4] = h->flags;
    o[5] = 0;
    put16(o + 6, h->plen);
    put32(o + 8, h->frag);
    put32(o + 12, h->nfrags);
    put32(o + 16, h->msg_len);
    put16(o + 20, h->frag_size);
    put16(o + 22, 0);
    put64(o + 24, h->cnonce);
    put64(o + 32, h->snonce);
    put64(o + 40, h->id);
    put64(o + 48, h->aux);
}

uint32_t xp_nfrags(uint32_t len, uint32_t fs)
{
    return len == 0 ? 1 : (len + fs - 1) / fs;
}

/* Payload length fragment f of a message must carry. */
static uint32_t frag_len(uint32_t len, uint32_t fs, uint32_t f)
{
    uint64_t off = (uint64_t)f * fs;
    if (off >= len)
        return 0;
    return len - off < fs ? (uint32_t)(len - off) : fs;
}

int xp_hdr_decode(const uint8_t *p, size_t len, struct xp_hdr *h)
{
    if (len < XP_HDR_LEN || get16(p) != XP_MAGIC || p[2] != XP_VERSION)
        return -1;
    h->type = p[3];
    h->flags = p[4];
    h->plen = get16(p + 6);
    h->frag = get32(p + 8);
    h->nfrags = get32(p + 12);
    h->msg_len = get32(p + 16);
    h->frag_size = get16(p + 20);
    h->cnonce = get64(p + 24);
    h->snonce = get64(p + 32);
    h->id = get64(p + 40);
    h->aux = get64(p + 48);
    if (h->type < XP_T_REQ || h->type > XP_T_RESET || h->id == 0 || h->cnonce == 0)
        return -1;
    if ((size_t)h->plen != len - XP_HDR_LEN)
        return -1;
    if (h->type == XP_T_RESET)
        return h->plen == 0 ? 0 : -1;
    if (h->msg_len > WIRE_MAX_MESSAGE || h->frag_size < XP_MIN_FRAG || h->frag_size > XP_MAX_FRAG ||
        h->nfrags != xp_nfrags(h->msg_len, h->frag_size))
        return -1;
    if (h->type == XP_T_REQ || h->type == XP_T_RESP) {
        if (h->frag >= h->nfrags || h->plen != frag_len(h->msg_len, h->frag_size, h->frag))
            return -1;
    } else if (h->plen != 0 || h->frag > h->nfrags) {
        return -1;
    }
    return 0;
}

/* ---- objects ------------------------------------------------------------ */

struct xp_txm {
    struct xp_txm *anext, *aprev;   /* engine's list of messages with packets to send */
    int active;
    uint8_t type;                   /* XP_T_REQ / XP_T_RESP */
    struct xp_chan *chan;           /* REQ: snonce and low-water come from it */
    struct xp_addr to;
    uint16_t lport;
    uint64_t cnonce, id;
    uint8_t *buf;
    uint32_t len, nfrags, fs;
    uint32_t cum;                   /* fragments below are acknowledged */
    uint32_t next;                  /* first fragment never sent */
    uint64_t ackmap, needmap;       /* bit i: fragment cum+i acked / to be resent */
    uint64_t sent_ns[XP_WINDOW];    /* by fragment % XP_WINDOW */
    uint64_t rto, rto_at, last_progress;
    int stopped;                    /* fully acked or abandoned: sends nothing more */
};

struct xp_rxm {
    uint8_t *buf;
    uint64_t *got;                  /* one bit per fragment */
    uint32_t len, nfrags, fs, ngot, cum, since_ack;
    int started;
};

enum { CALL_PENDING, CALL_SEND, CALL_WAIT, CALL_DONE };

struct xp_call {
    struct xp_chan *chan;
    struct xp_call *next, *prev;    /* engine's list of calls */
    struct xp_call *qnext;          /* channel's FIFO of calls without an id */
    int state;
    uint64_t id;
    xp_done_fn cb;
    void *arg;
    uint64_t deadline;              /* 0 = none */
    uint64_t ping_at, ping_iv;
    struct xp_txm tx;
    struct xp_rxm rx;
};

struct xp_chan {
    struct xp_engine *e;
    struct xp_chan *next, *prev;    /* engine's list */
    struct xp_chan *hnext;          /* engine's nonce hash chain */
    struct xp_addr srv;
    uint16_t lport;
    uint64_t nonce, snonce;
    int dead;
    uint64_t low, next_id;          /* ids in [low, next_id) may be in the ring */
    uint64_t last_heard;
    struct xp_call *ring[XP_CHAN_WINDOW];
    struct xp_call *qhead, *qtail;  /* calls waiting for an id */
};

enum { SRPC_RECV, SRPC_PROC, SRPC_RESP, SRPC_DONE };

struct xp_srpc {
    struct xp_engine *e;            /* NULL once orphaned */
    struct xp_peer *p;
    struct xp_srpc *rnext, *rprev;  /* engine's list of RECV/RESP rpcs */
    int state;
    uint64_t id;
    uint64_t last_in;
    struct xp_rxm rx;
    struct xp_txm tx;
};

struct xp_peer {
    struct xp_peer *hnext;          /* hash chain */
    struct xp_peer *next, *prev;    /* engine's list */
    struct xp_addr addr;
    uint16_t lport;
    uint64_t cnonce, low, last_heard;
    uint32_t nlive;                 /* slots not DONE */
    struct xp_srpc *slots[XP_CHAN_WINDOW];
};

struct xp_engine {
    struct xp_ops ops;
    void *ctx;
    uint32_t fs;
    uint64_t nonce;
    struct xp_txm *act_head, *act_tail;
    struct xp_call *calls;
    struct xp_chan *chans;
    struct xp_chan *chash[XP_PEER_BUCKETS];
    struct xp_peer *peers;
    struct xp_peer *phash[XP_PEER_BUCKETS];
    uint32_t npeers;
    struct xp_srpc *srpcs;          /* RECV and RESP (have timers or budget) */
    uint64_t rx_bytes;
    uint64_t next_sweep;
    int tx_blocked;
    /* one delayed response ack: the client's next request implies it (its
     * low-water mark passes the id), else it goes at dack_at */
    int dack;
    struct xp_addr dack_to;
    uint16_t dack_lport;
    uint64_t dack_snonce, dack_at;
    struct xp_hdr dack_hdr;
    struct xp_stats st;
};

/* ---- tx messages ---------------------------------------------------------- */

static void act_link(struct xp_engine *e, struct xp_txm *t)
{
    if (t->active)
        return;
    t->active = 1;
    t->anext = NULL;
    t->aprev = e->act_tail;
    if (e->act_tail)
        e->act_tail->anext = t;
    else
        e->act_head = t;
    e->act_tail = t;
}

static void act_unlink(struct xp_engine *e, struct xp_txm *t)
{
    if (!t->active)
        return;
    if (t->aprev)
        t->aprev->anext = t->anext;
    else
        e->act_head = t->anext;
    if (t->anext)
        t->anext->aprev = t->aprev;
    else
        e->act_tail = t->aprev;
    t->active = 0;
    t->anext = t->aprev = NULL;
}

static int txm_has_work(const struct xp_txm *t)
{
    if (t->stopped)
        return 0;
    return t->needmap != 0 || (t->next < t->nfrags && t->next < t->cum + XP_WINDOW);
}

static void txm_kick(struct xp_engine *e, struct xp_txm *t)
{
    if (txm_has_work(t))
        act_link(e, t);
}

/* Copy iov into a new tx message.  Returns 0 or -1 (no memory). */
static int txm_init(struct xp_txm *t, uint8_t type, const struct iovec *iov, int iovcnt,
                    uint32_t len, uint32_t fs, uint64_t now)
{
    memset(t, 0, sizeof *t);
    t->type = type;
    t->buf = malloc(len ? len : 1);
    if (t->buf == NULL)
        return -1;
    uint32_t off = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len)
            memcpy(t->buf + off, iov[i].iov_base, iov[i].iov_len);
        off += (uint32_t)iov[i].iov_len;
    }
    t->len = len;
    t->fs = fs;
    t->nfrags = xp_nfrags(len, fs);
    t->rto = XP_RTO_MIN_NS;
    t->last_progress = now;
    return 0;
}

static void txm_free(struct xp_engine *e, struct xp_txm *t)
{
    if (e)
        act_unlink(e, t);
    free(t->buf);
    t->buf = NULL;
    t->stopped = 1;
}

static void txm_header(struct xp_engine *e, const struct xp_txm *t, struct xp_hdr *h)
{
    memset(h, 0, sizeof *h);
    h->type = t->type;
    h->nfrags = t->nfrags;
    h->msg_len = t->len;
    h->frag_size = (uint16_t)t->fs;
    h->cnonce = t->cnonce;
    h->id = t->id;
    if (t->type == XP_T_REQ) {
        h->snonce = t->chan->snonce;
        h->aux = t->chan->low;
        /* this request's low-water mark releases the delayed-ack response */
        if (e->dack && e->dack_hdr.cnonce == t->cnonce && e->dack_hdr.id < h->aux)
            e->dack = 0;
    } else {
        h->snonce = e->nonce;
    }
}

/* Send fragment f.  Returns 0 or -1 (TX full). */
static int txm_send_frag(struct xp_engine *e, struct xp_txm *t, uint32_t f, int please_ack,
                         uint64_t now)
{
    struct xp_hdr h;
    uint8_t hb[XP_HDR_LEN];
    txm_header(e, t, &h);
    h.frag = f;
    h.plen = (uint16_t)frag_len(t->len, t->fs, f);
    h.flags = please_ack ? XP_F_PLEASE_ACK : 0;
    xp_hdr_encode(&h, hb);
    if (e->ops.xmit(e->ctx, &t->to, t->lport, hb, t->buf + (size_t)f * t->fs, h.plen) != 0) {
        e->st.tx_full++;
        e->tx_blocked = 1;
        return -1;
    }
    e->st.pkts_out++;
    t->sent_ns[f % XP_WINDOW] = now;
    if (t->rto_at == 0)
        t->rto_at = now + t->rto;
    return 0;
}

/* Send up to budget packets: requested resends first, then new fragments.
 * Returns packets sent, or -1 if the TX path filled up. */
static int txm_send_some(struct xp_engine *e, struct xp_txm *t, int budget, uint64_t now)
{
    int n = 0;
    while (t->needmap && n < budget) {
        int bit = __builtin_ctzll(t->needmap);
        uint64_t rest = t->needmap & ~(1ull << bit);
        if (txm_send_frag(e, t, t->cum + (uint32_t)bit, rest == 0, now) != 0)
            return -1;
        t->needmap = rest;
        n++;
    }
    while (n < budget && t->next < t->nfrags && t->next < t->cum + XP_WINDOW) {
        /* ask for an ack when the window is about to close */
        int pa = t->next + 1 == t->cum + XP_WINDOW;
        if (txm_send_frag(e, t, t->next, pa, now) != 0)
            return -1;
        t->next++;
        n++;
    }
    return n;
}

/* Apply an acknowledgement: fragments below cum, plus bitmap bit i =
 * fragment cum+1+i.  Holes below the highest acked fragment that were sent
 * a while ago are queued for resending.  Returns 1 if anything new was acked. */
static int txm_ack(struct xp_engine *e, struct xp_txm *t, uint32_t cum, uint64_t bits, uint64_t now)
{
    int progress = 0;
    if (t->stopped || cum > t->nfrags || cum > t->next)
        return 0;
    if (cum > t->cum) {
        uint32_t d = cum - t->cum;
        t->ackmap = d >= 64 ? 0 : t->ackmap >> d;
        t->needmap = d >= 64 ? 0 : t->needmap >> d;
        t->cum = cum;
        progress = 1;
    }
    uint32_t hi = 0;
    for (int i = 0; i < 63 && bits; i++) {
        if (!(bits & (1ull << i)))
            continue;
        uint32_t f = cum + 1 + (uint32_t)i;
        if (f >= t->next)
            break;
        uint32_t rel = f - t->cum;
        if (rel < 64 && !(t->ackmap & (1ull << rel))) {
            t->ackmap |= 1ull << rel;
            t->needmap &= ~(1ull << rel);
            progress = 1;
        }
        hi = f;
    }
    while (t->cum < t->next && (t->ackmap & 1)) {
        t->ackmap >>= 1;
        t->needmap >>= 1;
        t->cum++;
    }
    if (progress) {
        t->last_progress = now;
        t->rto = XP_RTO_MIN_NS;
        t->rto_at = t->cum < t->next ? now + t->rto : 0;
    }
    /* fast retransmit: holes below the highest fragment the receiver has */
    for (uint32_t f = t->cum; f < hi; f++) {
        uint32_t rel = f - t->cum;
        if (rel >= 64 || (t->ackmap & (1ull << rel)) || (t->needmap & (1ull << rel)))
            continue;
        if (t->sent_ns[f % XP_WINDOW] + XP_FAST_GAP_NS <= now) {
            t->needmap |= 1ull << rel;
            e->st.fast_retransmits++;
        }
    }
    if (t->cum == t->nfrags)
        t->stopped = 1, t->rto_at = 0;
    if (t->stopped)
        act_unlink(e, t);
    else
        txm_kick(e, t);
    return progress;
}

/* Retransmission timer: every sent, unacked fragment of the window is resent. */
static int txm_timer(struct xp_engine *e, struct xp_txm *t, uint64_t now)
{
    if (t->stopped || t->rto_at == 0 || now < t->rto_at || t->cum >= t->next)
        return 0;
    for (uint32_t f = t->cum; f < t->next && f < t->cum + XP_WINDOW; f++) {
        uint32_t rel = f - t->cum;
        if (!(t->ackmap & (1ull << rel)))
            t->needmap |= 1ull << rel;
    }
    e->st.retransmits++;
    t->rto = t->rto * 2 > XP_RTO_MAX_NS ? XP_RTO_MAX_NS : t->rto * 2;
    t->rto_at = now + t->rto;
    txm_kick(e, t);
    return 1;
}

/* ---- rx messages ---------------------------------------------------------- */

static void rxm_free(struct xp_engine *e, struct xp_rxm *r)
{
    if (r->started && e)
        e->rx_bytes -= r->len;
    free(r->buf);
    free(r->got);
    memset(r, 0, sizeof *r);
}

/* Store one data fragment.  Returns 1 new, 0 duplicate, -1 dropped
 * (inconsistent with earlier fragments, or over the memory budget). */
static int rxm_accept(struct xp_engine *e, struct xp_rxm *r, const struct xp_hdr *h,
                      const uint8_t *pl)
{
    if (!r->started) {
        if (e->rx_bytes + h->msg_len > XP_RX_BUDGET) {
            e->st.budget_drops++;
            return -1;
        }
        r->buf = malloc(h->msg_len ? h->msg_len : 1);
        r->got = calloc((h->nfrags + 63) / 64, sizeof *r->got);
        if (r->buf == NULL || r->got == NULL) {
            free(r->buf);
            free(r->got);
            r->buf = NULL;
            r->got = NULL;
            e->st.budget_drops++;
            return -1;
        }
        r->len = h->msg_len;
        r->nfrags = h->nfrags;
        r->fs = h->frag_size;
        r->started = 1;
        e->rx_bytes += r->len;
    } else if (h->msg_len != r->len || h->frag_size != r->fs) {
        return -1;
    }
    if (r->got[h->frag / 64] & (1ull << (h->frag % 64)))
        return 0;
    r->got[h->frag / 64] |= 1ull << (h->frag % 64);
    if (h->plen)
        memcpy(r->buf + (size_t)h->frag * r->fs, pl, h->plen);
    r->ngot++;
    r->since_ack++;
    while (r->cum < r->nfrags && (r->got[r->cum / 64] & (1ull << (r->cum % 64))))
        r->cum++;
    return 1;
}

static int rxm_complete(const struct xp_rxm *r)
{
    return r->started && r->ngot == r->nfrags;
}

static uint64_t rxm_bitmap(const struct xp_rxm *r)
{
    uint64_t bits = 0;
    for (uint32_t i = 0; i < 63; i++) {
        uint32_t f = r->cum + 1 + i;
        if (f >= r->nfrags)
            break;
        if (r->got[f / 64] & (1ull << (f % 64)))
            bits |= 1ull << i;
    }
    return bits;
}

/* Whether a data packet just stored deserves an ack now. */
static int rxm_want_ack(const struct xp_rxm *r, const struct xp_hdr *h, int stored)
{
    if ((h->flags & XP_F_PLEASE_ACK) || rxm_complete(r))
        return 1;
    if (stored <= 0)
        return 0;
    int hole = r->cum < r->ngot;            /* something above cum arrived first */
    return r->since_ack >= (hole ? 4u : 16u);
}

/* Control packet (ack / reset): dropped if the TX path is full. */
static void send_ctl(struct xp_engine *e, const struct xp_addr *to, uint16_t lport,
                     const struct xp_hdr *h)
{
    uint8_t hb[XP_HDR_LEN];
    xp_hdr_encode(h, hb);
    if (e->ops.xmit(e->ctx, to, lport, hb, NULL, 0) != 0) {
        e->st.tx_full++;
        e->tx_blocked = 1;
        return;
    }
    e->st.pkts_out++;
    if (h->type != XP_T_RESET)
        e->st.acks_out++;
}

/* An ack for message hdr h (as received) from the receiver state r, or a
 * full ack when r is NULL. */
static void send_ack(struct xp_engine *e, const struct xp_addr *to, uint16_t lport, uint8_t type,
                     const struct xp_hdr *h, uint64_t snonce, struct xp_rxm *r)
{
    struct xp_hdr a;
    memset(&a, 0, sizeof a);
    a.type = type;
    a.nfrags = h->nfrags;
    a.msg_len = h->msg_len;
    a.frag_size = h->frag_size;
    a.cnonce = h->cnonce;
    a.snonce = snonce;
    a.id = h->id;
    if (r != NULL && r->started) {
        a.frag = r->cum;
        a.aux = rxm_bitmap(r);
        r->since_ack = 0;
    } else {
        a.frag = h->nfrags;
    }
    send_ctl(e, to, lport, &a);
}

static void dack_send(struct xp_engine *e)
{
    if (!e->dack)
        return;
    e->dack = 0;
    send_ack(e, &e->dack_to, e->dack_lport, XP_T_ACK_RESP, &e->dack_hdr, e->dack_snonce, NULL);
}

/* Ack a complete response a little later (XP_DACK_NS), hoping the next
 * request makes it unnecessary.  An older pending one goes now. */
static void dack_set(struct xp_engine *e, const struct xp_addr *to, uint16_t lport,
                     const struct xp_hdr *h, uint64_t snonce, uint64_t now)
{
    dack_send(e);
    e->dack = 1;
    e->dack_to = *to;
    e->dack_lport = lport;
    e->dack_hdr = *h;
    e->dack_snonce = snonce;
    e->dack_at = now + XP_DACK_NS;
}

/* ---- client channels ------------------------------------------------------ */

static unsigned hash64(uint64_t v)
{
    v ^= v >> 33;
    v *= 0xff51afd7ed558ccdull;
    v ^= v >> 33;
    return (unsigned)(v % XP_PEER_BUCKETS);
}

struct xp_chan *xp_chan_open(struct xp_engine *e, const struct xp_addr *server, uint16_t lport,
                             uint64_t nonce)
{
    if (nonce == 0)
        return NULL;
    struct xp_chan *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->e = e;
    c->srv = *server;
    c->lport = lport;
    c->nonce = nonce;
    c->low = c->next_id = 1;
    unsigned b = hash64(nonce);
    c->hnext = e->chash[b];
    e->chash[b] = c;
    c->next = e->chans;
    if (e->chans)
        e->chans->prev = c;
    e->chans = c;
    return c;
}

int xp_chan_alive(const struct xp_chan *c)
{
    return c != NULL && !c->dead;
}

static struct xp_chan *chan_find(struct xp_engine *e, uint64_t nonce)
{
    for (struct xp_chan *c = e->chash[hash64(nonce)]; c; c = c->hnext)
        if (c->nonce == nonce)
            return c;
    return NULL;
}

static void call_unlink_engine(struct xp_engine *e, struct xp_call *k)
{
    if (k->prev)
        k->prev->next = k->next;
    else if (e->calls == k)
        e->calls = k->next;
    if (k->next)
        k->next->prev = k->prev;
    k->next = k->prev = NULL;
}

/* Give queued calls ids while the id window has room. */
static void chan_promote(struct xp_chan *c, uint64_t now)
{
    while (c->qhead && !c->dead && c->next_id - c->low < XP_CHAN_WINDOW) {
        struct xp_call *k = c->qhead;
        c->qhead = k->qnext;
        if (c->qhead == NULL)
            c->qtail = NULL;
        k->qnext = NULL;
        k->id = c->next_id++;
        c->ring[k->id & XP_MASK] = k;
        k->state = CALL_SEND;
        k->tx.id = k->id;
        k->tx.last_progress = now;
        txm_kick(c->e, &k->tx);
    }
}

/* Remove a call from every structure of its channel and engine. */
static void call_detach(struct xp_call *k)
{
    struct xp_chan *c = k->chan;
    struct xp_engine *e = c->e;
    call_unlink_engine(e, k);
    act_unlink(e, &k->tx);
    if (k->state == CALL_PENDING) {
        struct xp_call **pp = &c->qhead;
        c->qtail = NULL;
        while (*pp) {
            if (*pp == k)
                *pp = k->qnext;
            else {
                c->qtail = *pp;
                pp = &(*pp)->qnext;
            }
        }
    } else if (c->ring[k->id & XP_MASK] == k) {
        c->ring[k->id & XP_MASK] = NULL;
        while (c->low < c->next_id && c->ring[c->low & XP_MASK] == NULL)
            c->low++;
    }
    k->state = CALL_DONE;
}

/* Complete a call: detach, run its callback, free it.  The channel may be
 * gone when this returns. */
static void call_finish(struct xp_call *k, cram_status st, uint64_t now)
{
    struct xp_chan *c = k->chan;
    struct xp_engine *e = c->e;
    call_detach(k);
    chan_promote(c, now);
    txm_free(e, &k->tx);
    if (st == CRAM_OK)
        k->cb(k->arg, st, k->rx.buf, k->rx.len);
    else
        k->cb(k->arg, st, NULL, 0);
    rxm_free(e, &k->rx);
    free(k);
}

/* Fail every call of the channel (callbacks may close it: stop then). */
static void chan_fail_all(struct xp_chan *c, uint64_t now)
{
    struct xp_engine *e = c->e;
    c->dead = 1;
    for (;;) {
        struct xp_call *k = NULL;
        for (struct xp_call *x = e->calls; x; x = x->next)
            if (x->chan == c) {
                k = x;
                break;
            }
        if (k == NULL)
            return;
        int last = 1;
        for (struct xp_call *x = k->next; x; x = x->next)
            if (x->chan == c)
                last = 0;
        call_finish(k, CRAM_TRANSPORT_ERROR, now);
        if (last)               /* c may be freed by that callback */
            return;
    }
}

void xp_chan_close(struct xp_chan *c)
{
    if (c == NULL)
        return;
    struct xp_engine *e = c->e;
    c->dead = 1;
    if (e->dack && e->dack_hdr.cnonce == c->nonce)
        dack_send(e);                   /* no later request will imply it */
    /* callbacks run from here must not close c again: take it off the hash
     * first so nothing finds it */
    struct xp_chan **pp = &e->chash[hash64(c->nonce)];
    while (*pp && *pp != c)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = c->hnext;
    for (;;) {
        struct xp_call *k = NULL;
        for (struct xp_call *x = e->calls; x; x = x->next)
            if (x->chan == c) {
                k = x;
                break;
            }
        if (k == NULL)
            break;
        call_finish(k, CRAM_TRANSPORT_ERROR, 0);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        e->chans = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

cram_status xp_call(struct xp_chan *c, const struct iovec *iov, int iovcnt, uint64_t timeout_ns,
                    xp_done_fn cb, void *arg, uint64_t now)
{
    if (c == NULL || c->dead || cb == NULL || iovcnt < 0)
        return CRAM_TRANSPORT_ERROR;
    uint64_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    if (len > WIRE_MAX_MESSAGE)
        return CRAM_REQUEST_TOO_LARGE;
    struct xp_call *k = calloc(1, sizeof *k);
    if (k == NULL)
        return CRAM_TRANSPORT_ERROR;
    if (txm_init(&k->tx, XP_T_REQ, iov, iovcnt, (uint32_t)len, c->e->fs, now) != 0) {
        free(k);
        return CRAM_TRANSPORT_ERROR;
    }
    k->chan = c;
    k->cb = cb;
    k->arg = arg;
    k->deadline = timeout_ns ? now + timeout_ns : 0;
    k->state = CALL_PENDING;
    k->tx.chan = c;
    k->tx.to = c->srv;
    k->tx.lport = c->lport;
    k->tx.cnonce = c->nonce;
    k->next = c->e->calls;
    if (c->e->calls)
        c->e->calls->prev = k;
    c->e->calls = k;
    if (c->qtail)
        c->qtail->qnext = k;
    else
        c->qhead = k;
    c->qtail = k;
    chan_promote(c, now);
    return CRAM_OK;
}

static struct xp_call *chan_call(struct xp_chan *c, uint64_t id)
{
    if (id < c->low || id >= c->next_id)
        return NULL;
    struct xp_call *k = c->ring[id & XP_MASK];
    return k && k->id == id ? k : NULL;
}

/* The request is known to be fully received: stop sending it, start pinging. */
static void call_req_acked(struct xp_call *k, uint64_t now)
{
    if (k->state != CALL_SEND)
        return;
    k->state = CALL_WAIT;
    k->tx.stopped = 1;
    k->tx.rto_at = 0;
    act_unlink(k->chan->e, &k->tx);
    k->ping_iv = XP_PING_NS;
    k->ping_at = now + k->ping_iv;
}

static void client_input(struct xp_engine *e, const struct xp_addr *from, uint16_t lport,
                         const struct xp_hdr *h, const uint8_t *pl, uint64_t now)
{
    struct xp_chan *c = chan_find(e, h->cnonce);
    if (c == NULL || c->srv.ip != from->ip || c->srv.port != from->port) {
        /* a closed channel's response: ack it so the server can let go */
        if (h->type == XP_T_RESP)
            send_ack(e, from, lport, XP_T_ACK_RESP, h, h->snonce, NULL);
        return;
    }
    if (c->dead)
        return;
    if (c->snonce == 0) {
        c->snonce = h->snonce;
    } else if (h->snonce != c->snonce || h->type == XP_T_RESET) {
        chan_fail_all(c, now);          /* the server restarted: our RPCs are lost */
        return;
    }
    if (h->type == XP_T_RESET) {
        chan_fail_all(c, now);
        return;
    }
    c->last_heard = now;
    struct xp_call *k = chan_call(c, h->id);
    if (h->type == XP_T_ACK_REQ) {
        if (k && k->state == CALL_SEND) {
            if (h->frag == h->nfrags && h->nfrags == k->tx.nfrags)
                call_req_acked(k, now);
            else
                txm_ack(e, &k->tx, h->frag, h->aux, now);
        }
        return;
    }
    if (h->type != XP_T_RESP)
        return;
    if (k == NULL) {
        e->st.dup_in++;
        send_ack(e, from, lport, XP_T_ACK_RESP, h, c->snonce, NULL);
        return;
    }
    call_req_acked(k, now);             /* a response implies the whole request */
    int stored = rxm_accept(e, &k->rx, h, pl);
    if (stored == 0)
        e->st.dup_in++;
    if (stored < 0)
        return;
    if (rxm_complete(&k->rx)) {
        e->st.responses++;
        dack_set(e, from, lport, h, c->snonce, now);
        call_finish(k, CRAM_OK, now);
        return;
    }
    if (rxm_want_ack(&k->rx, h, stored))
        send_ack(e, from, lport, XP_T_ACK_RESP, h, c->snonce, &k->rx);
}

/* ---- server --------------------------------------------------------------- */

static unsigned peer_bucket(const struct xp_addr *a, uint64_t cnonce)
{
    return hash64(cnonce ^ ((uint64_t)a->ip << 16) ^ a->port);
}

static void srpc_list_add(struct xp_engine *e, struct xp_srpc *r)
{
    r->rprev = NULL;
    r->rnext = e->srpcs;
    if (e->srpcs)
        e->srpcs->rprev = r;
    e->srpcs = r;
}

static void srpc_list_del(struct xp_engine *e, struct xp_srpc *r)
{
    if (r->rprev)
        r->rprev->rnext = r->rnext;
    else if (e->srpcs == r)
        e->srpcs = r->rnext;
    if (r->rnext)
        r->rnext->rprev = r->rprev;
    r->rnext = r->rprev = NULL;
}

/* Drop slot r from its peer.  A PROC rpc (the application still holds it)
 * is orphaned instead of freed: xp_reply frees it. */
static void srpc_drop(struct xp_engine *e, struct xp_srpc *r)
{
    struct xp_peer *p = r->p;
    if (p && p->slots[r->id & XP_MASK] == r)
        p->slots[r->id & XP_MASK] = NULL;
    if (p && r->state != SRPC_DONE)
        p->nlive--;
    if (r->state == SRPC_RECV || r->state == SRPC_RESP)
        srpc_list_del(e, r);
    txm_free(e, &r->tx);
    if (r->state == SRPC_PROC) {
        /* orphan: the request bytes stay until xp_reply, off the budget */
        if (r->rx.started)
            e->rx_bytes -= r->rx.len;
        r->rx.started = 0;
        r->p = NULL;
        r->e = NULL;
        return;
    }
    rxm_free(e, &r->rx);
    free(r);
}

static void peer_advance_low(struct xp_engine *e, struct xp_peer *p, uint64_t low)
{
    if (low <= p->low)
        return;
    uint64_t n = low - p->low > XP_CHAN_WINDOW ? XP_CHAN_WINDOW : low - p->low;
    for (uint64_t i = 0; i < n; i++) {
        struct xp_srpc *r = p->slots[(p->low + i) & XP_MASK];
        if (r && r->id < low)
            srpc_drop(e, r);
    }
    p->low = low;
}

static void peer_free(struct xp_engine *e, struct xp_peer *p)
{
    for (int i = 0; i < XP_CHAN_WINDOW; i++)
        if (p->slots[i])
            srpc_drop(e, p->slots[i]);
    struct xp_peer **pp = &e->phash[peer_bucket(&p->addr, p->cnonce)];
    while (*pp && *pp != p)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = p->hnext;
    if (p->prev)
        p->prev->next = p->next;
    else
        e->peers = p->next;
    if (p->next)
        p->next->prev = p->prev;
    e->npeers--;
    free(p);
}

static struct xp_peer *peer_get(struct xp_engine *e, const struct xp_addr *a, uint16_t lport,
                                uint64_t cnonce, uint64_t low, uint64_t now)
{
    unsigned b = peer_bucket(a, cnonce);
    for (struct xp_peer *p = e->phash[b]; p; p = p->hnext)
        if (p->cnonce == cnonce && p->addr.ip == a->ip && p->addr.port == a->port)
            return p;
    if (e->npeers >= XP_MAX_PEERS) {
        /* make room: the longest-idle peer with nothing in progress */
        struct xp_peer *victim = NULL;
        for (struct xp_peer *p = e->peers; p; p = p->next)
            if (p->nlive == 0 && (victim == NULL || p->last_heard < victim->last_heard))
                victim = p;
        if (victim == NULL)
            return NULL;
        peer_free(e, victim);
    }
    struct xp_peer *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->addr = *a;
    p->lport = lport;
    p->cnonce = cnonce;
    p->low = low ? low : 1;
    p->last_heard = now;
    p->hnext = e->phash[b];
    e->phash[b] = p;
    p->next = e->peers;
    if (e->peers)
        e->peers->prev = p;
    e->peers = p;
    e->npeers++;
    return p;
}

static void server_input(struct xp_engine *e, const struct xp_addr *from, uint16_t lport,
                         const struct xp_hdr *h, const uint8_t *pl, uint64_t now)
{
    if (h->snonce != 0 && h->snonce != e->nonce) {
        /* the client talks to an earlier incarnation of this endpoint */
        struct xp_hdr rs;
        memset(&rs, 0, sizeof rs);
        rs.type = XP_T_RESET;
        rs.cnonce = h->cnonce;
        rs.snonce = e->nonce;
        rs.id = h->id;
        send_ctl(e, from, lport, &rs);
        return;
    }
    struct xp_peer *p;
    if (h->type == XP_T_ACK_RESP) {
        unsigned b = peer_bucket(from, h->cnonce);
        for (p = e->phash[b]; p; p = p->hnext)
            if (p->cnonce == h->cnonce && p->addr.ip == from->ip && p->addr.port == from->port)
                break;
        if (p == NULL || h->id < p->low || h->id >= p->low + XP_CHAN_WINDOW)
            return;
        p->last_heard = now;
        struct xp_srpc *r = p->slots[h->id & XP_MASK];
        if (r == NULL || r->id != h->id || r->state != SRPC_RESP)
            return;
        txm_ack(e, &r->tx, h->frag, h->aux, now);
        if (r->tx.cum == r->tx.nfrags) {            /* response delivered: tombstone */
            srpc_list_del(e, r);
            txm_free(e, &r->tx);
            r->state = SRPC_DONE;
            p->nlive--;
        }
        return;
    }
    if (h->type != XP_T_REQ)
        return;
    p = peer_get(e, from, lport, h->cnonce, h->aux, now);
    if (p == NULL) {
        e->st.budget_drops++;
        return;
    }
    p->last_heard = now;
    p->addr = *from;                    /* keep the latest MAC */
    peer_advance_low(e, p, h->aux);
    if (h->id < p->low) {
        e->st.dup_in++;
        return;
    }
    if (h->id >= p->low + XP_CHAN_WINDOW) {
        e->st.bad_in++;
        return;
    }
    struct xp_srpc *r = p->slots[h->id & XP_MASK];
    if (r != NULL && r->id != h->id) {   /* cannot happen with ids in the window */
        e->st.bad_in++;
        return;
    }
    if (r == NULL) {
        r = calloc(1, sizeof *r);
        if (r == NULL)
            return;
        r->e = e;
        r->p = p;
        r->id = h->id;
        r->state = SRPC_RECV;
        p->slots[h->id & XP_MASK] = r;
        p->nlive++;
        srpc_list_add(e, r);
    }
    r->last_in = now;
    if (r->state != SRPC_RECV) {
        e->st.dup_in++;
        if (h->flags & XP_F_PLEASE_ACK)
            send_ack(e, from, lport, XP_T_ACK_REQ, h, e->nonce, NULL);
        return;
    }
    int stored = rxm_accept(e, &r->rx, h, pl);
    if (stored == 0)
        e->st.dup_in++;
    if (stored < 0) {
        if (!r->rx.started) {           /* nothing held: forget the slot */
            srpc_drop(e, r);
        }
        return;
    }
    if (!rxm_complete(&r->rx)) {
        if (rxm_want_ack(&r->rx, h, stored))
            send_ack(e, from, lport, XP_T_ACK_REQ, h, e->nonce, &r->rx);
        return;
    }
    srpc_list_del(e, r);
    r->state = SRPC_PROC;
    e->st.requests++;
    uint64_t id = h->id;
    e->ops.request(e->ctx, r, lport, r->rx.buf, r->rx.len);
    /* A reply sent at once acknowledges the request by itself; a deferred
     * one gets an explicit full ack so the client stops resending.  (r may
     * be freed by now: look the slot up again.) */
    struct xp_srpc *again = p->slots[id & XP_MASK];
    if (again == r && again->id == id && again->state == SRPC_PROC)
        send_ack(e, from, lport, XP_T_ACK_REQ, h, e->nonce, NULL);
}

void xp_reply(struct xp_srpc *r, const struct iovec *iov, int iovcnt, uint64_t now)
{
    if (r == NULL)
        return;
    struct xp_engine *e = r->e;
    uint64_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    if (e == NULL || r->state != SRPC_PROC) {        /* orphan */
        rxm_free(e, &r->rx);
        free(r);
        return;
    }
    struct xp_peer *p = r->p;
    /* the iovecs may point into the request: copy before freeing it */
    if (len > WIRE_MAX_MESSAGE ||
        txm_init(&r->tx, XP_T_RESP, iov, iovcnt, (uint32_t)len, e->fs, now) != 0) {
        CRAM_WARN("xdp: response of %llu bytes dropped", (unsigned long long)len);
        rxm_free(e, &r->rx);
        r->state = SRPC_DONE;
        p->nlive--;
        return;
    }
    rxm_free(e, &r->rx);
    r->tx.to = p->addr;
    r->tx.lport = p->lport;
    r->tx.cnonce = p->cnonce;
    r->tx.id = r->id;
    r->state = SRPC_RESP;
    srpc_list_add(e, r);
    txm_kick(e, &r->tx);
    xp_flush(e, now);
}

const struct xp_addr *xp_srpc_peer(const struct xp_srpc *r)
{
    static const struct xp_addr none;
    return r->p ? &r->p->addr : &none;
}

/* ---- engine ----------------------------------------------------------------- */

struct xp_engine *xp_engine_create(const struct xp_ops *ops, void *ctx, uint32_t frag_size,
                                   uint64_t nonce)
{
    if (frag_size < XP_MIN_FRAG || frag_size > XP_MAX_FRAG || nonce == 0)
        return NULL;
    struct xp_engine *e = calloc(1, sizeof *e);
    if (e == NULL)
        return NULL;
    e->ops = *ops;
    e->ctx = ctx;
    e->fs = frag_size;
    e->nonce = nonce;
    return e;
}

void xp_engine_destroy(struct xp_engine *e)
{
    if (e == NULL)
        return;
    while (e->chans)
        xp_chan_close(e->chans);
    while (e->peers)
        peer_free(e, e->peers);
    free(e);
}

uint64_t xp_engine_nonce(const struct xp_engine *e)
{
    return e->nonce;
}

const struct xp_stats *xp_engine_stats(const struct xp_engine *e)
{
    return &e->st;
}

void xp_input(struct xp_engine *e, const struct xp_addr *from, uint16_t lport,
              const uint8_t *pkt, size_t len, uint64_t now)
{
    struct xp_hdr h;
    e->st.pkts_in++;
    if (xp_hdr_decode(pkt, len, &h) != 0) {
        e->st.bad_in++;
        return;
    }
    const uint8_t *pl = pkt + XP_HDR_LEN;
    if (h.type == XP_T_REQ || h.type == XP_T_ACK_RESP)
        server_input(e, from, lport, &h, pl, now);
    else
        client_input(e, from, lport, &h, pl, now);
}

int xp_flush(struct xp_engine *e, uint64_t now)
{
    int total = 0, progress = 1;
    e->tx_blocked = 0;
    while (progress && e->act_head) {
        progress = 0;
        struct xp_txm *t = e->act_head, *nx;
        for (; t; t = nx) {
            nx = t->anext;
            int n = txm_send_some(e, t, 16, now);
            if (n < 0)
                return total;
            progress += n;
            total += n;
            if (!txm_has_work(t))
                act_unlink(e, t);
        }
    }
    return total;
}

/* Periodic cleanup: half-received requests of vanished clients, idle peers. */
static void engine_sweep(struct xp_engine *e, uint64_t now)
{
    struct xp_srpc *r, *rn;
    for (r = e->srpcs; r; r = rn) {
        rn = r->rnext;
        if (r->state == SRPC_RECV && older_than(now, r->last_in, XP_DEAD_NS))
            srpc_drop(e, r);
    }
    struct xp_peer *p, *pn;
    for (p = e->peers; p; p = pn) {
        pn = p->next;
        if (p->nlive == 0 && older_than(now, p->last_heard, XP_PEER_IDLE_NS))
            peer_free(e, p);
    }
}

int xp_tick(struct xp_engine *e, uint64_t now)
{
    int work = 0;
    /* client calls: deadlines, request retransmission, pings, dead servers */
restart:
    for (struct xp_call *k = e->calls; k; k = k->next) {
        struct xp_chan *c = k->chan;
        if (k->deadline && now >= k->deadline) {
            CRAM_WARN("xdp: rpc %llu timed out (state %d, request %u/%u acked, %u sent; response %u/%u)",
                      (unsigned long long)k->id, k->state, k->tx.cum, k->tx.nfrags, k->tx.next,
                      k->rx.ngot, k->rx.nfrags);
            call_finish(k, CRAM_TIMEOUT, now);
            work++;
            goto restart;
        }
        if (k->state == CALL_PENDING)
            continue;
        uint64_t heard = c->last_heard > k->tx.last_progress ? c->last_heard : k->tx.last_progress;
        if (older_than(now, heard, XP_DEAD_NS)) {
            CRAM_WARN("xdp: no answer from server for %llu ms: channel dead",
                      (unsigned long long)((now - heard) / 1000000));
            chan_fail_all(c, now);
            work++;
            goto restart;
        }
        if (k->state == CALL_SEND) {
            work += txm_timer(e, &k->tx, now);
        } else if (k->state == CALL_WAIT && now >= k->ping_at) {
            /* still processing?  the server re-acks the whole request */
            if (txm_send_frag(e, &k->tx, k->tx.nfrags - 1, 1, now) == 0) {
                k->ping_iv = k->ping_iv * 2 > 1000000000ull ? 1000000000ull : k->ping_iv * 2;
                k->ping_at = now + k->ping_iv;
                work++;
            }
        }
    }
    /* server responses */
    struct xp_srpc *r, *rn;
    for (r = e->srpcs; r; r = rn) {
        rn = r->rnext;
        if (r->state != SRPC_RESP)
            continue;
        if (older_than(now, r->tx.last_progress, XP_DEAD_NS)) {
            /* the client is gone: keep a tombstone, drop the bytes */
            CRAM_WARN("xdp: response %llu abandoned (%u/%u acked, %u sent, ackmap %llx needmap %llx rto %llu)",
                      (unsigned long long)r->id, r->tx.cum, r->tx.nfrags, r->tx.next,
                      (unsigned long long)r->tx.ackmap, (unsigned long long)r->tx.needmap,
                      (unsigned long long)r->tx.rto);
            srpc_list_del(e, r);
            txm_free(e, &r->tx);
            r->state = SRPC_DONE;
            r->p->nlive--;
            work++;
            continue;
        }
        work += txm_timer(e, &r->tx, now);
    }
    if (e->dack && now >= e->dack_at) {
        dack_send(e);
        work++;
    }
    if (now >= e->next_sweep) {
        engine_sweep(e, now);
        e->next_sweep = now + XP_SWEEP_NS;
    }
    work += xp_flush(e, now);
    return work;
}

int xp_tx_waiting(const struct xp_engine *e)
{
    return e->act_head != NULL;
}

int xp_busy(const struct xp_engine *e)
{
    return e->act_head != NULL || e->calls != NULL || e->srpcs != NULL || e->dack;
}
