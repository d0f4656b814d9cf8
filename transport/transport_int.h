/*
 * transport_int.h -- what transports (tcp.c, later xdp.c, rdma.c) need from
 * the event loop, and the common heads of the opaque public objects.
 *
 * Threads: everything here belongs to the loop's thread (see transport.h);
 * only the posted-callback queue in loop.c is shared, under its mutex.
 *
 * A transport registers
 *   - file descriptors (tp_loop_add_fd): the loop calls fn(arg, epoll events)
 *     when the fd is ready (level triggered);
 *   - pollers (tp_loop_add_poller): called on every loop iteration, for
 *     transports that busy-poll a completion queue; they return how much
 *     work they did (0 = idle) so the loop knows when to stop spinning.
 *     A poller-only transport must also register an fd (a completion
 *     channel) so the loop can block in the kernel when idle.
 * and supplies one struct tp_transport_ops, found by locator prefix.
 */
#ifndef CRAM_TRANSPORT_INT_H
#define CRAM_TRANSPORT_INT_H

#include <stdbool.h>
#include <stdint.h>
#include "transport/transport.h"
#include "common/locator.h"

/* ---- fd handlers -------------------------------------------------------- */

typedef void (*tp_fd_fn)(void *arg, uint32_t events);

/* Embedded in the transport's object.  After tp_loop_del_fd the memory must
 * stay valid until the current loop iteration ends (events already fetched
 * may still name it): free such objects through tp_loop_defer_free. */
struct tp_fdh {
    int fd;              /* -1 once deleted: stale events are skipped */
    uint32_t events;
    tp_fd_fn fn;
    void *arg;
};

int  tp_loop_add_fd(tp_loop *l, struct tp_fdh *h, int fd, uint32_t events, tp_fd_fn fn, void *arg);
int  tp_loop_mod_fd(tp_loop *l, struct tp_fdh *h, uint32_t events);
/* Removes the fd from epoll (does not close it). */
void tp_loop_del_fd(tp_loop *l, struct tp_fdh *h);

/* Run fn(arg) after the current batch of events, when no stale pointer to
 * the object can remain.  Outside the loop it runs at once. */
void tp_loop_defer_free(tp_loop *l, tp_fn fn, void *arg);

/* ---- pollers ------------------------------------------------------------ */

typedef int (*tp_poll_fn)(void *arg);
/* Returns an id > 0, or 0 when out of memory. */
uint64_t tp_loop_add_poller(tp_loop *l, tp_poll_fn fn, void *arg);
void     tp_loop_del_poller(tp_loop *l, uint64_t id);

/* Nesting depth of loop dispatch: > 0 while a callback of tp_loop_poll runs.
 * Transports may batch writes while > 0 and flush them with a flush hook. */
int tp_loop_in_dispatch(const tp_loop *l);
/* Run fn(arg) once at the end of the current dispatch round (before
 * tp_loop_poll returns or blocks).  Used to flush corked writes.  The
 * caller keeps arg alive until then.  Returns 0 or -1 (out of memory). */
int tp_loop_at_flush(tp_loop *l, tp_fn fn, void *arg);

/* ---- transports --------------------------------------------------------- */

struct tp_session_ops {
    cram_status (*send)(tp_session *s, const struct iovec *iov, int iovcnt, uint32_t timeout_ms,
                        tp_response_fn cb, void *arg);
    int  (*alive)(const tp_session *s);
    void (*close)(tp_session *s);
};

struct tp_listener_ops {
    void (*close)(tp_listener *ls);
};

struct tp_rpc_ops {
    void (*reply)(tp_rpc *rpc, const struct iovec *iov, int iovcnt);
    const char *(*peer)(const tp_rpc *rpc);
};

/* Common heads: each transport's object starts with one of these. */
struct tp_session {
    const struct tp_session_ops *ops;
    tp_loop *loop;
    struct tp_session *next, *prev;     /* loop's list of open sessions */
    char locator[512];
};

struct tp_listener {
    const struct tp_listener_ops *ops;
    tp_loop *loop;
    struct tp_listener *next, *prev;    /* loop's list of open listeners */
    char locator[512];
};

struct tp_rpc {
    const struct tp_rpc_ops *ops;
    const uint8_t *req;
    uint32_t req_len;
};

struct tp_transport_ops {
    const char *proto;                  /* locator prefix without ':' */
    /* On success the transport fills the head (ops, locator) and calls
     * tp_loop_link_*; the public wrappers do the rest. */
    tp_listener *(*listen)(tp_loop *l, const struct locator *loc, tp_request_fn fn, void *arg,
                           char *err, size_t errlen);
    tp_session *(*session_open)(tp_loop *l, const struct locator *loc, const char *locstr,
                                cram_status *st);
};

extern const struct tp_transport_ops tp_tcp_ops;
#ifdef CRAM_HAVE_XDP
extern const struct tp_transport_ops tp_xdp_ops;     /* transport/xdp.c */
#endif
#ifdef CRAM_HAVE_RDMA
extern const struct tp_transport_ops tp_rdma_ops;    /* transport/rdma.c */
#endif

/* Loop bookkeeping of open sessions/listeners (for tp_loop_destroy). */
void tp_loop_link_session(tp_loop *l, tp_session *s);
void tp_loop_unlink_session(tp_loop *l, tp_session *s);
void tp_loop_link_listener(tp_loop *l, tp_listener *ls);
void tp_loop_unlink_listener(tp_loop *l, tp_listener *ls);

/* Small per-loop cache of fixed-size blocks (server rpc structs and the
 * like) so the hot path does not malloc.  size must be the same on every
 * call for a given cache index. */
void *tp_loop_cache_get(tp_loop *l, size_t size);
void  tp_loop_cache_put(tp_loop *l, void *p);

#endif /* CRAM_TRANSPORT_INT_H */
