/*
 * transport.h -- event loop, RPC sessions and listeners.
 *
 * One interface for every transport; the implementation is chosen by the
 * locator's prefix ("tcp:" today; "xdp:" and "rdma:" later).  A transport
 * moves whole messages (at most WIRE_MAX_MESSAGE bytes) and matches each
 * response to its request by an rpc id, so many RPCs may be outstanding on
 * one session.
 *
 * Threads: a tp_loop and everything created on it (sessions, listeners, rpcs,
 * timers) belong to the one thread that calls tp_loop_poll.  The only calls
 * allowed from other threads are tp_loop_post and tp_loop_wake.
 *
 * Polling policy: after any activity, tp_loop_poll keeps polling without
 * sleeping for poll_us microseconds (tp_loop_set_poll_us; 0 = block in the
 * kernel at once), then blocks in epoll_wait.  An idle loop uses no CPU.
 */
#ifndef CRAM_TRANSPORT_H
#define CRAM_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include "cram.h"

typedef struct tp_loop tp_loop;
typedef struct tp_session tp_session;
typedef struct tp_listener tp_listener;
typedef struct tp_rpc tp_rpc;

/* ---- event loop ------------------------------------------------------- */

tp_loop *tp_loop_create(void);
/* Closes every session and listener still open on the loop (outstanding
 * client RPCs complete with CRAM_TRANSPORT_ERROR first), frees the loop. */
void tp_loop_destroy(tp_loop *l);
/* Run ready work once: I/O, expired timers and posted callbacks.  Blocks at
 * most timeout_ms (-1 = until something happens; 0 = never).  Returns the
 * number of events handled. */
int  tp_loop_poll(tp_loop *l, int timeout_ms);
void tp_loop_set_poll_us(tp_loop *l, uint32_t poll_us);

typedef void (*tp_fn)(void *arg);
/* One-shot timer after delay_us; returns an id > 0 for tp_timer_cancel. */
uint64_t tp_timer_add(tp_loop *l, uint64_t delay_us, tp_fn fn, void *arg);
void     tp_timer_cancel(tp_loop *l, uint64_t id);   /* unknown/fired ids are ignored */
/* Thread-safe: run fn(arg) on the loop's thread soon (wakes the loop).
 * Returns 0, or -1 if out of memory. */
int  tp_loop_post(tp_loop *l, tp_fn fn, void *arg);
/* Thread-safe: make a blocked tp_loop_poll return. */
void tp_loop_wake(tp_loop *l);

/* ---- server side ------------------------------------------------------ */

/* Called on the loop thread for each incoming request.  The request bytes
 * (tp_rpc_request) stay valid until the rpc is replied to.  The handler must
 * eventually call tp_rpc_reply exactly once -- at once, or later from any
 * callback on the same loop (deferred reply). */
typedef void (*tp_request_fn)(void *arg, tp_rpc *rpc);

/* Listen on a locator ("tcp:host=127.0.0.1,port=0" picks a free port).
 * Returns NULL on failure with a message in err. */
tp_listener *tp_listen(tp_loop *l, const char *locator, tp_request_fn fn, void *arg,
                       char *err, size_t errlen);
/* The locator clients use to reach this listener (actual port filled in). */
const char  *tp_listener_locator(const tp_listener *ls);
void         tp_listener_close(tp_listener *ls);

const uint8_t *tp_rpc_request(const tp_rpc *rpc, uint32_t *len);
/* A short text naming the peer ("127.0.0.1:4242") for logs. */
const char    *tp_rpc_peer(const tp_rpc *rpc);
/* Send the response (the iovecs are copied or fully sent before return, so
 * the caller may reuse them) and free the rpc.  If the connection is gone the
 * response is dropped silently; the rpc is freed either way.  Total length
 * must be <= WIRE_MAX_MESSAGE (else the connection is closed). */
void tp_rpc_reply(tp_rpc *rpc, const struct iovec *iov, int iovcnt);

/* ---- client side ------------------------------------------------------ */

/* Open a session to a locator.  Connecting may finish asynchronously; a
 * session that fails completes its RPCs with CRAM_TRANSPORT_ERROR and stays
 * dead (tp_session_alive() == 0): close it and open a new one.
 * Returns NULL with *st = CRAM_INVALID_ARGUMENT for a bad locator, or
 * CRAM_TRANSPORT_ERROR if the connection is refused at once. */
tp_session *tp_session_open(tp_loop *l, const char *locator, cram_status *st);
int         tp_session_alive(const tp_session *s);
const char *tp_session_locator(const tp_session *s);
/* Outstanding RPCs complete with CRAM_TRANSPORT_ERROR (callbacks run inside
 * this call), then the session is freed. */
void        tp_session_close(tp_session *s);

/* Completion of a client RPC.  st is CRAM_OK (resp/len hold the response,
 * valid only during the callback), CRAM_TIMEOUT or CRAM_TRANSPORT_ERROR. */
typedef void (*tp_response_fn)(void *arg, cram_status st, const uint8_t *resp, uint32_t len);

/* Send a request; cb runs exactly once, on the loop thread, never from
 * inside tp_send itself.  timeout_ms 0 = no timeout.  The iovecs' bytes are
 * copied or sent before return.  Returns CRAM_OK, CRAM_REQUEST_TOO_LARGE
 * (nothing sent, cb not called) or CRAM_TRANSPORT_ERROR (dead session; cb not
 * called). */
cram_status tp_send(tp_session *s, const struct iovec *iov, int iovcnt, uint32_t timeout_ms,
                    tp_response_fn cb, void *arg);

/* Synchronous convenience: send and run the loop until the response comes.
 * On CRAM_OK *resp is a malloc'ed copy of the response (caller frees) and
 * *len its length. */
cram_status tp_call(tp_session *s, const struct iovec *iov, int iovcnt, uint32_t timeout_ms,
                    uint8_t **resp, uint32_t *len);

#endif /* CRAM_TRANSPORT_H */
