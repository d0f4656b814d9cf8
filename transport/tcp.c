/*
 * tcp.c -- the tcp: transport.
 *
 * Frame: a 16-byte little-endian header {u32 length; u32 flags (bit 0 =
 * response); u64 rpc_id} followed by `length` bytes.  A frame whose length
 * exceeds WIRE_MAX_MESSAGE, whose flags carry unknown bits, or that travels
 * the wrong way (a response to a server, a request to a client) closes the
 * connection before anything is allocated for it.
 *
 * One struct tcp_conn per socket, used by both sides:
 *   - reads go into a per-connection buffer (one read(2) per readiness
 *     event; many frames per read; partial frames wait for the rest).  The
 *     buffer grows for a large frame and shrinks back when empty.
 *   - writes: outside loop dispatch a message goes out at once with one
 *     writev(2) straight from the caller's iovecs (no copy unless the socket
 *     is full).  Inside dispatch, small messages are corked into the
 *     connection's write buffer and flushed with one write at the end of the
 *     round, so a batch of requests read together is answered with one
 *     syscall.  Whatever the socket does not take waits for EPOLLOUT.
 *   - lifetime: reference counted.  The owner (session or listener) holds one
 *     reference, every server rpc not yet replied holds one, and the read
 *     path holds one while it delivers frames.  Closing marks the connection
 *     dead and closes the socket; the memory goes when the last reference
 *     does, so a deferred tp_rpc_reply after the peer left is safe (dropped).
 *
 * Client sessions keep their outstanding RPCs in a slab of pending records
 * (chunks of TCP_PEND_CHUNK, never moved, so timers can point at them); the
 * rpc id is (generation << 32 | slot + 1), so a response that arrives after
 * its RPC timed out finds a free or reused slot and is discarded.
 *
 * Read buffers are reference counted (struct tcp_rbuf): the connection
 * holds one reference, a frame being delivered holds one, and a server rpc
 * whose reply is deferred keeps the buffer holding its (large) request
 * instead of copying it.  A shared buffer is never compacted or moved: when
 * room runs out the connection moves the unparsed tail to a fresh buffer.
 *
 * Re-entrancy: callbacks may close sessions, send, or reply.  Delivery
 * advances the read offset before calling out, so a nested read on the same
 * connection (a callback running the loop) continues after the frame, and
 * the delivered bytes stay put (their buffer is shared while delivered).
 * Session memory is released only when no failure walk runs over it.
 *
 * Threads: all of it belongs to the loop's thread.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include "common/log.h"
#include "common/wire.h"
#include "transport/transport_int.h"

#define TCP_HDR_LEN 16u
#define TCP_F_RESPONSE 1u
#define TCP_RBUF_DEFAULT (64u * 1024)
#define TCP_RBUF_KEEP (256u * 1024)     /* larger read buffers are dropped when empty */
#define TCP_CORK_MAX (16u * 1024)       /* larger messages are written at once, uncopied */
#define TCP_IOV_MAX 64
#define TCP_PEND_CHUNK 256u
#define TCP_ACCEPT_BATCH 32
#define TCP_DEFER_NOCOPY 4096u          /* deferred requests this big keep the read buffer */
#define TCP_ACCEPT_BACKOFF_US 100000    /* pause accepting this long when out of fds */
/* A server connection whose unsent output exceeds this stops being read
 * until the peer drains it: a client that sends but never reads cannot make
 * the server queue replies without bound.  (Client connections are never
 * throttled: they must keep reading responses, or two peers could wait on
 * each other.) */
#define TCP_WQ_HIGH (8u * 1024 * 1024)

struct tcp_hdr {
    uint32_t len;
    uint32_t flags;
    uint64_t rpc_id;
} WIRE_PACKED;
_Static_assert(sizeof(struct tcp_hdr) == TCP_HDR_LEN, "tcp frame header");

struct tcp_session;
struct tcp_listener;

/* A read buffer; refs as described at the top. */
struct tcp_rbuf {
    int refs;
    uint32_t pad;
    uint8_t data[];
};

struct tcp_conn {
    struct tp_fdh fdh;
    tp_loop *loop;
    int fd;
    int refs;
    bool dead;                  /* closed: no more I/O, socket gone */
    bool server;
    bool connecting;            /* client: non-blocking connect in progress */
    bool wr_error;              /* a write failed: drop further output, wait for the hangup */
    bool flush_queued;          /* a flush hook is pending (holds a reference) */
    /* read side: rbuf == rb->data */
    struct tcp_rbuf *rb;
    uint8_t *rbuf;
    size_t rcap, rlen, rpos;    /* bytes [rpos, rlen) are unparsed */
    size_t need;                /* full size of the partial frame at rpos, 0 = unknown */
    /* write side: bytes [wpos, wlen) of wbuf wait to be written */
    uint8_t *wbuf;
    size_t wcap, wlen, wpos;
    /* owner */
    struct tcp_session *sess;           /* client side */
    struct tcp_listener *ls;            /* server side */
    struct tcp_conn *next, *prev;       /* listener's connection list */
    char peer[48];
};

struct tcp_pend {
    uint64_t id;                /* 0 = free */
    tp_response_fn cb;
    void *arg;
    uint64_t timer;
    struct tcp_session *sess;
    uint32_t gen;
    uint32_t next_free;
};

struct tcp_session {
    struct tp_session head;     /* first: the public object */
    struct tcp_conn *conn;
    struct tcp_pend **chunks;
    uint32_t nchunks, pfree, npend;
    bool failed;                /* connection broke or closed: no more sends */
    bool closed;                /* tp_session_close called */
    int busy;                   /* failure walks running over the pending slab */
};

struct tcp_listener {
    struct tp_listener head;
    struct tp_fdh fdh;
    int fd;
    tp_request_fn fn;
    void *arg;
    struct tcp_conn *conns;
    uint64_t backoff_timer;     /* accepting paused (out of fds) until it fires */
};

struct tcp_rpc {
    struct tp_rpc head;
    struct tcp_conn *conn;
    uint64_t id;
    uint8_t *owned;             /* small request copied once the handler returned unreplied */
    struct tcp_rbuf *rb;        /* or: the read buffer holding a large deferred request */
    bool in_handler;
    bool replied;
};

static const struct tp_session_ops tcp_session_ops;
static const struct tp_listener_ops tcp_listener_ops;
static const struct tp_rpc_ops tcp_rpc_ops;

static void tcp_conn_on_event(void *arg, uint32_t events);
static void tcp_session_fail(struct tcp_session *s);

/* ---- read buffers ------------------------------------------------------- */

static struct tcp_rbuf *tcp_rbuf_new(size_t cap)
{
    struct tcp_rbuf *rb = malloc(sizeof *rb + cap);
    if (rb != NULL)
        rb->refs = 1;
    return rb;
}

static void tcp_rbuf_put(struct tcp_rbuf *rb)
{
    if (rb != NULL && --rb->refs == 0)
        free(rb);
}

/* ---- connection lifetime ------------------------------------------------ */

static void tcp_conn_free(void *arg)
{
    struct tcp_conn *c = arg;
    tcp_rbuf_put(c->rb);
    free(c->wbuf);
    free(c);
}

static inline void tcp_conn_get(struct tcp_conn *c)
{
    c->refs++;
}

static void tcp_conn_put(struct tcp_conn *c)
{
    CRAM_ASSERT(c->refs > 0);
    if (--c->refs == 0)
        tp_loop_defer_free(c->loop, tcp_conn_free, c);   /* epoll may still name c->fdh */
}

static struct tcp_conn *tcp_conn_new(tp_loop *l, int fd, bool server)
{
    struct tcp_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->rb = tcp_rbuf_new(TCP_RBUF_DEFAULT);
    if (c->rb == NULL) {
        free(c);
        return NULL;
    }
    c->rbuf = c->rb->data;
    c->rcap = TCP_RBUF_DEFAULT;
    c->loop = l;
    c->fd = fd;
    c->refs = 1;                /* the owner's */
    c->server = server;
    c->fdh.fd = -1;
    return c;
}

/* Stop all I/O: the socket is closed at once, memory when refs drop. */
static void tcp_conn_shut(struct tcp_conn *c)
{
    if (c->dead)
        return;
    c->dead = true;
    tp_loop_del_fd(c->loop, &c->fdh);
    close(c->fd);
    c->fd = -1;
    c->wlen = c->wpos = 0;
}

static void tcp_listener_unlink_conn(struct tcp_conn *c)
{
    struct tcp_listener *ls = c->ls;
    if (ls == NULL)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        ls->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    c->ls = NULL;
}

/* The connection broke or sent garbage.  Server side: drop it (pending rpcs
 * keep it alive until replied).  Client side: fail the session's RPCs. */
static void tcp_conn_fail(struct tcp_conn *c)
{
    if (c->dead)
        return;
    tcp_conn_shut(c);
    if (c->server) {
        CRAM_DEBUG("tcp: dropping connection from %s", c->peer);
        if (c->ls != NULL) {
            tcp_listener_unlink_conn(c);
            tcp_conn_put(c);    /* the listener's reference */
        }
    } else if (c->sess != NULL) {
        tcp_session_fail(c->sess);
    }
}

/* ---- write side --------------------------------------------------------- */

static int tcp_wbuf_reserve(struct tcp_conn *c, size_t more)
{
    if (c->wpos > 0 && c->wpos == c->wlen)
        c->wpos = c->wlen = 0;
    if (c->wlen + more <= c->wcap)
        return 0;
    if (c->wpos > 0) {          /* slide pending bytes to the front first */
        memmove(c->wbuf, c->wbuf + c->wpos, c->wlen - c->wpos);
        c->wlen -= c->wpos;
        c->wpos = 0;
        if (c->wlen + more <= c->wcap)
            return 0;
    }
    size_t nc = c->wcap ? c->wcap : 16384;
    while (nc < c->wlen + more)
        nc *= 2;
    uint8_t *nb = realloc(c->wbuf, nc);
    if (nb == NULL)
        return -1;
    c->wbuf = nb;
    c->wcap = nc;
    return 0;
}

/* Append iov bytes, skipping the first `skip` of them. */
static int tcp_wbuf_append(struct tcp_conn *c, const struct iovec *iov, int iovcnt, size_t skip)
{
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (skip >= total)
        return 0;
    if (tcp_wbuf_reserve(c, total - skip) != 0)
        return -1;
    for (int i = 0; i < iovcnt; i++) {
        size_t len = iov[i].iov_len;
        if (len == 0)
            continue;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        memcpy(c->wbuf + c->wlen, (const uint8_t *)iov[i].iov_base + skip, len - skip);
        c->wlen += len - skip;
        skip = 0;
    }
    return 0;
}

static void tcp_conn_set_events(struct tcp_conn *c)
{
    if (c->dead)
        return;
    uint32_t ev = EPOLLIN | EPOLLRDHUP;
    size_t queued = c->wlen - c->wpos;
    if (c->connecting || queued > 0)
        ev |= EPOLLOUT;
    if (c->server && queued > TCP_WQ_HIGH)
        ev &= ~(uint32_t)(EPOLLIN | EPOLLRDHUP);      /* backpressure */
    tp_loop_mod_fd(c->loop, &c->fdh, ev);
}

/* A write failed: stop writing.  The socket reports the hangup to epoll
 * (shutdown makes sure), so the failure is handled by the read path, never
 * inside tp_send. */
static void tcp_conn_write_error(struct tcp_conn *c, int err)
{
    CRAM_DEBUG("tcp: write to %s failed: %s", c->peer, strerror(err));
    c->wr_error = true;
    c->wlen = c->wpos = 0;
    shutdown(c->fd, SHUT_RDWR);
    tcp_conn_set_events(c);
}

/* Write what is queued.  Returns after one writev/EAGAIN. */
static void tcp_conn_flush(struct tcp_conn *c)
{
    if (c->dead || c->wr_error || c->connecting || c->wlen == c->wpos)
        return;
    ssize_t n;
    do {
        n = send(c->fd, c->wbuf + c->wpos, c->wlen - c->wpos, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            tcp_conn_write_error(c, errno);
        else
            tcp_conn_set_events(c);
        return;
    }
    c->wpos += (size_t)n;
    if (c->wpos == c->wlen) {
        c->wpos = c->wlen = 0;
        if (c->wcap > 4u * TCP_RBUF_KEEP) {     /* a burst grew it: give memory back */
            free(c->wbuf);
            c->wbuf = NULL;
            c->wcap = 0;
        }
    }
    tcp_conn_set_events(c);
}

static void tcp_conn_flush_hook(void *arg)
{
    struct tcp_conn *c = arg;
    c->flush_queued = false;
    tcp_conn_flush(c);
    tcp_conn_put(c);
}

/* Send one frame: hdr then iov.  Never calls back into the user.  Returns 0,
 * or -1 when out of memory (the message is not sent). */
static int tcp_conn_send(struct tcp_conn *c, const struct tcp_hdr *hdr,
                         const struct iovec *iov, int iovcnt, size_t total)
{
    if (c->dead || c->wr_error)
        return 0;               /* failure is reported through the read path */
    size_t msg = TCP_HDR_LEN + total;
    struct iovec v[TCP_IOV_MAX];
    bool pending = c->wlen > c->wpos;
    bool socket_full = pending && (c->fdh.events & EPOLLOUT);
    bool cork = tp_loop_in_dispatch(c->loop) && msg <= TCP_CORK_MAX;

    if (c->connecting || socket_full || cork || iovcnt + 2 > TCP_IOV_MAX) {
        v[0].iov_base = (void *)hdr;
        v[0].iov_len = TCP_HDR_LEN;
        /* reserve the whole frame first: a half-queued frame would corrupt the stream */
        if (tcp_wbuf_reserve(c, msg) != 0)
            return -1;
        tcp_wbuf_append(c, v, 1, 0);
        tcp_wbuf_append(c, iov, iovcnt, 0);
        if (c->connecting || socket_full) {
            tcp_conn_set_events(c);     /* EPOLLOUT will flush; maybe backpressure */
            return 0;
        }
        if (cork && iovcnt + 2 <= TCP_IOV_MAX) {
            if (!c->flush_queued) {
                if (tp_loop_at_flush(c->loop, tcp_conn_flush_hook, c) != 0) {
                    tcp_conn_flush(c);
                    return 0;
                }
                c->flush_queued = true;
                tcp_conn_get(c);
            }
            return 0;
        }
        tcp_conn_flush(c);
        return 0;
    }

    /* direct: [queued bytes][hdr][iov...] in one writev */
    int nv = 0;
    size_t queued = 0;
    if (pending) {
        queued = c->wlen - c->wpos;
        v[nv].iov_base = c->wbuf + c->wpos;
        v[nv++].iov_len = queued;
    }
    v[nv].iov_base = (void *)hdr;
    v[nv++].iov_len = TCP_HDR_LEN;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len == 0)
            continue;
        v[nv] = iov[i];
        nv++;
    }
    ssize_t n;
    struct msghdr mh = { .msg_iov = v, .msg_iovlen = (size_t)nv };
    do {
        n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            tcp_conn_write_error(c, errno);
            return 0;
        }
        n = 0;
    }
    size_t sent = (size_t)n;
    if (sent >= queued + msg) {         /* everything went out */
        c->wpos = c->wlen = 0;
        tcp_conn_set_events(c);
        return 0;
    }
    /* keep the remainder: first what was queued, then the new frame's tail */
    if (sent < queued) {
        c->wpos += sent;
        sent = 0;
    } else {
        c->wpos = c->wlen = 0;
        sent -= queued;
    }
    int first = pending ? 1 : 0;
    if (tcp_wbuf_append(c, v + first, nv - first, sent) != 0) {
        /* cannot keep the tail: the stream is now corrupt, give up on it */
        tcp_conn_write_error(c, ENOMEM);
        return 0;
    }
    tcp_conn_set_events(c);
    return 0;
}

/* ---- read side ---------------------------------------------------------- */

static void tcp_deliver_request(struct tcp_conn *c, struct tcp_rbuf *rb, uint64_t id,
                                const uint8_t *body, uint32_t len);
static void tcp_deliver_response(struct tcp_conn *c, uint64_t id, const uint8_t *body, uint32_t len);

/* Make room for `want` bytes of unparsed data from rpos on.  A buffer only
 * the connection holds is compacted or grown in place; a shared one (a frame
 * in delivery or a deferred request points into it) is left alone and the
 * unparsed tail moves to a new buffer.  Returns 0 or -1. */
static int tcp_rbuf_make_room(struct tcp_conn *c, size_t want)
{
    size_t unparsed = c->rlen - c->rpos;
    if (c->rb->refs == 1) {
        if (c->rpos > 0) {
            memmove(c->rbuf, c->rbuf + c->rpos, unparsed);
            c->rlen = unparsed;
            c->rpos = 0;
        }
        if (want <= c->rcap)
            return 0;
        struct tcp_rbuf *nb = realloc(c->rb, sizeof *nb + want);
        if (nb == NULL)
            return -1;
        c->rb = nb;
        c->rbuf = nb->data;
        c->rcap = want;
        return 0;
    }
    size_t cap = want > TCP_RBUF_DEFAULT ? want : TCP_RBUF_DEFAULT;
    struct tcp_rbuf *nb = tcp_rbuf_new(cap);
    if (nb == NULL)
        return -1;
    memcpy(nb->data, c->rbuf + c->rpos, unparsed);
    tcp_rbuf_put(c->rb);
    c->rb = nb;
    c->rbuf = nb->data;
    c->rcap = cap;
    c->rlen = unparsed;
    c->rpos = 0;
    return 0;
}

static void tcp_conn_read(struct tcp_conn *c)
{
    tcp_conn_get(c);

    /* room: for the whole pending frame if we know it, else at least 4 KiB */
    size_t unparsed = c->rlen - c->rpos;
    size_t want = c->need > unparsed + 4096 ? c->need : unparsed + 4096;
    if (c->rcap - c->rlen < 4096 || (c->need > 0 && c->rpos + c->need > c->rcap)) {
        if (want < TCP_RBUF_DEFAULT)
            want = TCP_RBUF_DEFAULT;
        if (tcp_rbuf_make_room(c, want) != 0) {
            CRAM_WARN("tcp: out of memory for a %zu-byte read buffer from %s", want, c->peer);
            tcp_conn_fail(c);
            goto out;
        }
    }
    ssize_t n;
    do {
        n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
    } while (n < 0 && errno == EINTR);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        tcp_conn_fail(c);
        goto out;
    }
    if (n < 0)
        goto out;
    c->rlen += (size_t)n;

    while (!c->dead) {
        size_t avail = c->rlen - c->rpos;
        if (avail < TCP_HDR_LEN)
            break;
        struct tcp_hdr h;
        memcpy(&h, c->rbuf + c->rpos, TCP_HDR_LEN);
        bool is_resp = (h.flags & TCP_F_RESPONSE) != 0;
        if (h.len > WIRE_MAX_MESSAGE || (h.flags & ~TCP_F_RESPONSE) != 0 || is_resp == c->server) {
            CRAM_WARN("tcp: bad frame header from %s (len %u flags %#x): closing",
                      c->peer, h.len, h.flags);
            tcp_conn_fail(c);
            break;
        }
        size_t frame = TCP_HDR_LEN + h.len;
        if (avail < frame) {
            c->need = frame;
            break;
        }
        c->need = 0;
        const uint8_t *body = c->rbuf + c->rpos + TCP_HDR_LEN;
        struct tcp_rbuf *held = c->rb;      /* shared while delivered: nothing moves it */
        held->refs++;
        c->rpos += frame;       /* before delivery: a nested read continues after it */
        if (c->server)
            tcp_deliver_request(c, held, h.rpc_id, body, h.len);
        else
            tcp_deliver_response(c, h.rpc_id, body, h.len);
        tcp_rbuf_put(held);
    }

    /* answers to the frames of this read leave in one write, now, rather
     * than after every other ready connection was served */
    if (!c->dead && c->wlen > c->wpos && !(c->fdh.events & EPOLLOUT))
        tcp_conn_flush(c);
out:
    /* all parsed and nobody else points into the buffer: start over at its
     * beginning, and give a grown buffer back.  (A shared buffer is simply
     * filled on; make_room replaces it when it runs out.) */
    if (c->rpos == c->rlen && c->rb->refs == 1) {
        c->rpos = c->rlen = 0;
        if (c->rcap > TCP_RBUF_KEEP && !c->dead) {
            struct tcp_rbuf *nb = tcp_rbuf_new(TCP_RBUF_DEFAULT);
            if (nb != NULL) {
                tcp_rbuf_put(c->rb);
                c->rb = nb;
                c->rbuf = nb->data;
                c->rcap = TCP_RBUF_DEFAULT;
            }
        }
    }
    tcp_conn_put(c);
}

static void tcp_conn_connected(struct tcp_conn *c)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
        err = errno;
    if (err != 0) {
        CRAM_DEBUG("tcp: connect to %s failed: %s", c->peer, strerror(err));
        tcp_conn_fail(c);
        return;
    }
    c->connecting = false;
    tcp_conn_flush(c);
    tcp_conn_set_events(c);
}

static void tcp_conn_on_event(void *arg, uint32_t events)
{
    struct tcp_conn *c = arg;
    tcp_conn_get(c);
    if (c->connecting) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            tcp_conn_connected(c);
    } else if ((events & EPOLLOUT) && !c->dead) {
        tcp_conn_flush(c);
    }
    if (!c->dead && !c->connecting && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        tcp_conn_read(c);       /* a hangup shows up as read() == 0 or an error */
    tcp_conn_put(c);
}

/* ---- server side -------------------------------------------------------- */

static void tcp_rpc_free(struct tcp_rpc *r)
{
    struct tcp_conn *c = r->conn;
    free(r->owned);
    tcp_rbuf_put(r->rb);
    tp_loop_cache_put(c->loop, r);
    tcp_conn_put(c);
}

static void tcp_deliver_request(struct tcp_conn *c, struct tcp_rbuf *rb, uint64_t id,
                                const uint8_t *body, uint32_t len)
{
    struct tcp_listener *ls = c->ls;
    if (ls == NULL)
        return;
    struct tcp_rpc *r = tp_loop_cache_get(c->loop, sizeof *r);
    if (r == NULL) {
        CRAM_WARN("tcp: out of memory for a request from %s: closing", c->peer);
        tcp_conn_fail(c);
        return;
    }
    r->head.ops = &tcp_rpc_ops;
    r->head.req = body;
    r->head.req_len = len;
    r->conn = c;
    r->id = id;
    r->owned = NULL;
    r->rb = NULL;
    r->in_handler = true;
    r->replied = false;
    tcp_conn_get(c);
    ls->fn(ls->arg, &r->head);
    r->in_handler = false;
    if (r->replied) {
        tcp_rpc_free(r);
        return;
    }
    /* deferred reply: a large request keeps its read buffer alive (no
     * copy); a small one is copied so the buffer can be reused at once */
    if (len >= TCP_DEFER_NOCOPY) {
        rb->refs++;
        r->rb = rb;
    } else if (len > 0) {
        r->owned = malloc(len);
        if (r->owned == NULL) {
            /* cannot keep the bytes: the handler must not read them again;
             * nothing better than dropping the connection */
            CRAM_WARN("tcp: out of memory keeping a deferred request from %s", c->peer);
            r->head.req = NULL;
            r->head.req_len = 0;
            tcp_conn_fail(c);
            return;
        }
        memcpy(r->owned, body, len);
        r->head.req = r->owned;
    }
}

static void tcp_rpc_reply(tp_rpc *rpc, const struct iovec *iov, int iovcnt)
{
    struct tcp_rpc *r = (struct tcp_rpc *)rpc;
    struct tcp_conn *c = r->conn;
    CRAM_ASSERT(!r->replied);
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (!c->dead) {
        if (total > WIRE_MAX_MESSAGE || iovcnt < 0) {
            CRAM_ERROR("tcp: reply of %zu bytes to %s exceeds the limit: closing", total, c->peer);
            tcp_conn_fail(c);
        } else {
            struct tcp_hdr h = { .len = (uint32_t)total, .flags = TCP_F_RESPONSE, .rpc_id = r->id };
            if (tcp_conn_send(c, &h, iov, iovcnt, total) != 0) {
                CRAM_WARN("tcp: out of memory replying to %s: closing", c->peer);
                tcp_conn_fail(c);
            }
        }
    }
    if (r->in_handler)
        r->replied = true;      /* tcp_deliver_request frees it */
    else
        tcp_rpc_free(r);
}

static const char *tcp_rpc_peer(const tp_rpc *rpc)
{
    return ((const struct tcp_rpc *)rpc)->conn->peer;
}

static const struct tp_rpc_ops tcp_rpc_ops = {
    .reply = tcp_rpc_reply,
    .peer = tcp_rpc_peer,
};

static void tcp_set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void tcp_format_peer(const struct sockaddr_in *sa, char *out, size_t outlen)
{
    char ip[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof ip);
    snprintf(out, outlen, "%s:%u", ip, (unsigned)ntohs(sa->sin_port));
}

static void tcp_listener_resume(void *arg)
{
    struct tcp_listener *ls = arg;
    ls->backoff_timer = 0;
    tp_loop_mod_fd(ls->head.loop, &ls->fdh, EPOLLIN);
}

static void tcp_listener_on_event(void *arg, uint32_t events)
{
    struct tcp_listener *ls = arg;
    (void)events;
    for (int i = 0; i < TCP_ACCEPT_BATCH; i++) {
        struct sockaddr_in sa;
        socklen_t sl = sizeof sa;
        int fd = accept4(ls->fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            /* out of fds or memory: the pending connection stays ready, so
             * a level-triggered loop would spin; pause accepting instead */
            CRAM_WARN("tcp: accept on %s: %s (pausing accepts)", ls->head.locator, strerror(errno));
            if (ls->backoff_timer == 0) {
                ls->backoff_timer = tp_timer_add(ls->head.loop, TCP_ACCEPT_BACKOFF_US,
                                                 tcp_listener_resume, ls);
                if (ls->backoff_timer != 0)
                    tp_loop_mod_fd(ls->head.loop, &ls->fdh, 0);
            }
            return;
        }
        tcp_set_nodelay(fd);
        struct tcp_conn *c = tcp_conn_new(ls->head.loop, fd, true);
        if (c == NULL) {
            CRAM_WARN("tcp: out of memory accepting a connection");
            close(fd);
            continue;
        }
        tcp_format_peer(&sa, c->peer, sizeof c->peer);
        if (tp_loop_add_fd(c->loop, &c->fdh, fd, EPOLLIN | EPOLLRDHUP, tcp_conn_on_event, c) != 0) {
            CRAM_WARN("tcp: epoll_ctl: %s", strerror(errno));
            close(fd);
            tcp_conn_free(c);
            continue;
        }
        c->ls = ls;
        c->next = ls->conns;
        if (ls->conns != NULL)
            ls->conns->prev = c;
        ls->conns = c;
    }
}

static void tcp_listener_free(void *arg)
{
    free(arg);
}

/* Closes the listening socket and every connection accepted on it. */
static void tcp_listener_close(tp_listener *lsp)
{
    struct tcp_listener *ls = (struct tcp_listener *)lsp;
    tp_loop *l = ls->head.loop;
    while (ls->conns != NULL)
        tcp_conn_fail(ls->conns);
    if (ls->backoff_timer != 0)
        tp_timer_cancel(l, ls->backoff_timer);
    tp_loop_del_fd(l, &ls->fdh);
    close(ls->fd);
    tp_loop_unlink_listener(l, &ls->head);
    tp_loop_defer_free(l, tcp_listener_free, ls);
}

static const struct tp_listener_ops tcp_listener_ops = {
    .close = tcp_listener_close,
};

/* Resolve host (dotted quad, or a name through getaddrinfo) to IPv4. */
static int tcp_resolve(const char *host, struct in_addr *out)
{
    if (inet_pton(AF_INET, host, out) == 1)
        return 0;
    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
        return -1;
    *out = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
    freeaddrinfo(res);
    return 0;
}

static tp_listener *tcp_listen(tp_loop *l, const struct locator *loc, tp_request_fn fn, void *arg,
                               char *err, size_t errlen)
{
    char host[256];
    uint16_t port;
    struct sockaddr_in sa = { .sin_family = AF_INET };
    if (loc_tcp_addr(loc, host, sizeof host, &port, err, errlen) != 0)
        return NULL;
    if (tcp_resolve(host, &sa.sin_addr) != 0) {
        snprintf(err, errlen, "cannot resolve host '%s'", host);
        return NULL;
    }
    sa.sin_port = htons(port);

    struct tcp_listener *ls = calloc(1, sizeof *ls);
    if (ls == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ls->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ls->fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        goto free_ls;
    }
    int one = 1;
    setsockopt(ls->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        snprintf(err, errlen, "bind %s:%u: %s", host, (unsigned)port, strerror(errno));
        goto close_fd;
    }
    if (listen(ls->fd, 1024) != 0) {
        snprintf(err, errlen, "listen: %s", strerror(errno));
        goto close_fd;
    }
    socklen_t sl = sizeof sa;
    if (getsockname(ls->fd, (struct sockaddr *)&sa, &sl) != 0) {
        snprintf(err, errlen, "getsockname: %s", strerror(errno));
        goto close_fd;
    }
    if (tp_loop_add_fd(l, &ls->fdh, ls->fd, EPOLLIN, tcp_listener_on_event, ls) != 0) {
        snprintf(err, errlen, "epoll_ctl: %s", strerror(errno));
        goto close_fd;
    }
    ls->head.ops = &tcp_listener_ops;
    ls->fn = fn;
    ls->arg = arg;
    snprintf(ls->head.locator, sizeof ls->head.locator, "tcp:host=%s,port=%u",
             host, (unsigned)ntohs(sa.sin_port));
    tp_loop_link_listener(l, &ls->head);
    return &ls->head;

close_fd:
    close(ls->fd);
free_ls:
    free(ls);
    return NULL;
}

/* ---- client side -------------------------------------------------------- */

static inline struct tcp_pend *tcp_pend_at(struct tcp_session *s, uint32_t slot)
{
    return &s->chunks[slot / TCP_PEND_CHUNK][slot % TCP_PEND_CHUNK];
}

static struct tcp_pend *tcp_pend_alloc(struct tcp_session *s)
{
    if (s->pfree == UINT32_MAX) {
        struct tcp_pend **nc = realloc(s->chunks, (s->nchunks + 1) * sizeof *nc);
        if (nc == NULL)
            return NULL;
        s->chunks = nc;
        struct tcp_pend *chunk = calloc(TCP_PEND_CHUNK, sizeof *chunk);
        if (chunk == NULL)
            return NULL;
        s->chunks[s->nchunks] = chunk;
        uint32_t base = s->nchunks * TCP_PEND_CHUNK;
        for (uint32_t i = TCP_PEND_CHUNK; i-- > 0;) {
            chunk[i].sess = s;
            chunk[i].next_free = s->pfree;
            s->pfree = base + i;
        }
        s->nchunks++;
    }
    uint32_t slot = s->pfree;
    struct tcp_pend *p = tcp_pend_at(s, slot);
    s->pfree = p->next_free;
    p->gen++;
    if (p->gen == 0)
        p->gen = 1;
    p->id = ((uint64_t)p->gen << 32) | (uint64_t)(slot + 1);
    s->npend++;
    return p;
}

/* Take p out of the table (cancelling its timer); the caller completes it. */
static void tcp_pend_release(struct tcp_session *s, struct tcp_pend *p)
{
    uint32_t slot = (uint32_t)(p->id & 0xffffffffu) - 1;
    if (p->timer != 0) {
        tp_timer_cancel(s->head.loop, p->timer);
        p->timer = 0;
    }
    p->id = 0;
    p->cb = NULL;
    p->next_free = s->pfree;
    s->pfree = slot;
    s->npend--;
}

static struct tcp_pend *tcp_pend_find(struct tcp_session *s, uint64_t id)
{
    uint32_t slot = (uint32_t)(id & 0xffffffffu);
    if (slot == 0 || slot > s->nchunks * TCP_PEND_CHUNK)
        return NULL;
    struct tcp_pend *p = tcp_pend_at(s, slot - 1);
    return p->id == id ? p : NULL;
}

static void tcp_pend_timeout(void *arg)
{
    struct tcp_pend *p = arg;
    struct tcp_session *s = p->sess;
    tp_response_fn cb = p->cb;
    void *cbarg = p->arg;
    p->timer = 0;               /* it fired: nothing to cancel */
    tcp_pend_release(s, p);
    cb(cbarg, CRAM_TIMEOUT, NULL, 0);
}

static void tcp_deliver_response(struct tcp_conn *c, uint64_t id, const uint8_t *body, uint32_t len)
{
    struct tcp_session *s = c->sess;
    if (s == NULL)
        return;
    struct tcp_pend *p = tcp_pend_find(s, id);
    if (p == NULL)
        return;                 /* late response of a timed-out rpc, or garbage id */
    tp_response_fn cb = p->cb;
    void *cbarg = p->arg;
    tcp_pend_release(s, p);
    cb(cbarg, CRAM_OK, body, len);
}

static void tcp_session_free(struct tcp_session *s)
{
    for (uint32_t i = 0; i < s->nchunks; i++)
        free(s->chunks[i]);
    free(s->chunks);
    free(s);
}

/* Complete every outstanding RPC with CRAM_TRANSPORT_ERROR.  Callbacks may
 * close the session: memory is released only when the walk ends. */
static void tcp_session_fail(struct tcp_session *s)
{
    s->failed = true;
    if (s->conn != NULL)
        tcp_conn_shut(s->conn);
    s->busy++;
    for (uint32_t slot = 0; slot < s->nchunks * TCP_PEND_CHUNK && s->npend > 0; slot++) {
        struct tcp_pend *p = tcp_pend_at(s, slot);
        if (p->id == 0)
            continue;
        tp_response_fn cb = p->cb;
        void *cbarg = p->arg;
        tcp_pend_release(s, p);
        cb(cbarg, CRAM_TRANSPORT_ERROR, NULL, 0);
    }
    s->busy--;
    if (s->busy == 0 && s->closed)
        tcp_session_free(s);
}

static void tcp_session_close(tp_session *sp)
{
    struct tcp_session *s = (struct tcp_session *)sp;
    if (s->closed)
        return;
    s->closed = true;
    tp_loop_unlink_session(s->head.loop, &s->head);
    if (s->conn != NULL) {
        struct tcp_conn *c = s->conn;
        c->sess = NULL;
        s->conn = NULL;
        tcp_conn_shut(c);
        tcp_conn_put(c);
    }
    s->busy++;                  /* so the walk below does not free s */
    tcp_session_fail(s);
    s->busy--;
    if (s->busy == 0)
        tcp_session_free(s);
}

static int tcp_session_alive(const tp_session *sp)
{
    const struct tcp_session *s = (const struct tcp_session *)sp;
    return !s->failed && !s->closed;
}

static cram_status tcp_session_send(tp_session *sp, const struct iovec *iov, int iovcnt,
                                    uint32_t timeout_ms, tp_response_fn cb, void *arg)
{
    struct tcp_session *s = (struct tcp_session *)sp;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        total += iov[i].iov_len;
        if (total > WIRE_MAX_MESSAGE)
            return CRAM_REQUEST_TOO_LARGE;
    }
    if (s->failed || s->closed || s->conn == NULL || s->conn->dead)
        return CRAM_TRANSPORT_ERROR;
    struct tcp_pend *p = tcp_pend_alloc(s);
    if (p == NULL)
        return CRAM_NO_MEMORY;
    p->cb = cb;
    p->arg = arg;
    p->timer = 0;
    if (timeout_ms > 0) {
        p->timer = tp_timer_add(s->head.loop, (uint64_t)timeout_ms * 1000, tcp_pend_timeout, p);
        if (p->timer == 0) {
            tcp_pend_release(s, p);
            return CRAM_NO_MEMORY;
        }
    }
    struct tcp_hdr h = { .len = (uint32_t)total, .flags = 0, .rpc_id = p->id };
    if (tcp_conn_send(s->conn, &h, iov, iovcnt, total) != 0) {
        tcp_pend_release(s, p);
        return CRAM_NO_MEMORY;
    }
    return CRAM_OK;
}

static const struct tp_session_ops tcp_session_ops = {
    .send = tcp_session_send,
    .alive = tcp_session_alive,
    .close = tcp_session_close,
};

static tp_session *tcp_session_open(tp_loop *l, const struct locator *loc, const char *locstr,
                                    cram_status *st)
{
    char host[256], err[128];
    uint16_t port;
    struct sockaddr_in sa = { .sin_family = AF_INET };
    if (loc_tcp_addr(loc, host, sizeof host, &port, err, sizeof err) != 0 || port == 0 ||
        strlen(locstr) >= sizeof ((tp_session *)0)->locator) {
        *st = CRAM_INVALID_ARGUMENT;
        return NULL;
    }
    if (tcp_resolve(host, &sa.sin_addr) != 0) {
        *st = CRAM_TRANSPORT_ERROR;
        return NULL;
    }
    sa.sin_port = htons(port);

    struct tcp_session *s = calloc(1, sizeof *s);
    if (s == NULL) {
        *st = CRAM_NO_MEMORY;
        return NULL;
    }
    s->pfree = UINT32_MAX;
    s->head.ops = &tcp_session_ops;
    snprintf(s->head.locator, sizeof s->head.locator, "%s", locstr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *st = CRAM_TRANSPORT_ERROR;
        goto free_session;
    }
    tcp_set_nodelay(fd);
    bool connecting = false;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno != EINPROGRESS) {
            CRAM_DEBUG("tcp: connect %s: %s", locstr, strerror(errno));
            *st = CRAM_TRANSPORT_ERROR;
            goto close_fd;
        }
        connecting = true;
    }
    struct tcp_conn *c = tcp_conn_new(l, fd, false);
    if (c == NULL) {
        *st = CRAM_NO_MEMORY;
        goto close_fd;
    }
    tcp_format_peer(&sa, c->peer, sizeof c->peer);
    c->connecting = connecting;
    c->sess = s;
    if (tp_loop_add_fd(l, &c->fdh, fd, EPOLLIN | EPOLLRDHUP | (connecting ? EPOLLOUT : 0),
                       tcp_conn_on_event, c) != 0) {
        *st = CRAM_TRANSPORT_ERROR;
        tcp_conn_free(c);
        goto close_fd;
    }
    s->conn = c;
    tp_loop_link_session(l, &s->head);
    *st = CRAM_OK;
    return &s->head;

close_fd:
    close(fd);
free_session:
    free(s);
    return NULL;
}

const struct tp_transport_ops tp_tcp_ops = {
    .proto = "tcp",
    .listen = tcp_listen,
    .session_open = tcp_session_open,
};
