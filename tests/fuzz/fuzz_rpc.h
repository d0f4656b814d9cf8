/*
 * fuzz_rpc.h -- an in-process RPC bench for fuzzing a service handler the
 * way the network reaches it: a tp_loop, a tcp listener on 127.0.0.1 (free
 * port) whose request function is the service's handler, and one client
 * session.  fuzz_rpc_call sends one message and runs the loop until its
 * response (or a 5 s timeout) arrives, so deferred replies are covered too.
 *
 * One bench per process, created on first use and kept across inputs (a
 * fuzz target's state persists like a real server's).  Loop thread only.
 */
#ifndef CRAM_FUZZ_RPC_H
#define CRAM_FUZZ_RPC_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "transport/transport.h"

struct fuzz_rpc {
    tp_loop *loop;
    tp_listener *ls;
    tp_session *sess;
};

/* Creates the bench with fn/arg as the listener's request function; exits
 * the process on failure (a broken bench is not a finding). */
static inline void fuzz_rpc_start(struct fuzz_rpc *b, tp_loop *loop, tp_request_fn fn, void *arg)
{
    char err[256] = "";
    cram_status st;
    b->loop = loop;
    b->ls = tp_listen(loop, "tcp:host=127.0.0.1,port=0", fn, arg, err, sizeof err);
    if (b->ls == NULL) {
        fprintf(stderr, "fuzz: tp_listen: %s\n", err);
        exit(2);
    }
    b->sess = tp_session_open(loop, tp_listener_locator(b->ls), &st);
    if (b->sess == NULL) {
        fprintf(stderr, "fuzz: tp_session_open: %s\n", cram_strerror(st));
        exit(2);
    }
}

/* Send msg; return the response status (-1: no response / bad response).
 * A request left unanswered for 5 s aborts (a hang is a finding).
 * A dead session (the server closed the connection, which is an allowed
 * answer to a malformed message) is reopened. */
static inline int32_t fuzz_rpc_call(struct fuzz_rpc *b, const void *msg, size_t len,
                                    uint8_t **resp_out, uint32_t *resp_len)
{
    if (!tp_session_alive(b->sess)) {
        cram_status st;
        tp_session_close(b->sess);
        b->sess = tp_session_open(b->loop, tp_listener_locator(b->ls), &st);
        if (b->sess == NULL) {
            fprintf(stderr, "fuzz: reopen: %s\n", cram_strerror(st));
            exit(2);
        }
    }
    struct iovec iov = { (void *)msg, len };
    uint8_t *resp = NULL;
    uint32_t rlen = 0;
    int32_t status = -1;
    cram_status st = tp_call(b->sess, &iov, 1, 5000, &resp, &rlen);
    if (st == CRAM_TIMEOUT) {
        /* every request must be answered (or its connection closed) */
        fprintf(stderr, "fuzz: request of %zu bytes not answered within 5 s\n", len);
        abort();
    }
    if (st == CRAM_OK && rlen >= 4)
        memcpy(&status, resp, 4);
    if (getenv("FUZZ_VERBOSE") != NULL) {     /* for writing seeds: what each message got */
        uint16_t op = 0;
        if (len >= 2)
            memcpy(&op, msg, 2);
        fprintf(stderr, "fuzz: opcode %u, %zu bytes -> %s, status %d, %u response bytes\n",
                op, len, cram_strerror(st), status, rlen);
    }
    if (resp_out != NULL) {
        *resp_out = resp;
        *resp_len = rlen;
    } else {
        free(resp);
    }
    return status;
}

#endif /* CRAM_FUZZ_RPC_H */
