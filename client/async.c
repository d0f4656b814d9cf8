/*
 * async.c -- asynchronous single-object operations (cram_async_*,
 * cram_poll): many requests in flight on one handle from one thread.
 *
 * An operation is a struct cl_async taken from the handle's free list (no
 * allocation once the list has grown to the peak depth).  Its life:
 *   start  -> routed and sent (tp_send)            [in flight]
 *   transport callback -> result copied into the caller's cram_multi_op and
 *            the op queued on `done`; or, for a reroute status, a lost
 *            connection or an RPC timeout, queued on `retry` with a
 *            jittered back-off time
 *   cram_poll -> resends due retries, runs the callbacks of `done` ops.
 * Transport callbacks only move ops between lists: routing (which may ask
 * the coordinator synchronously and so poll the loop) and user callbacks
 * run only from cram_poll / cram_async_*, never inside the event loop.
 */
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"
#include "common/clock.h"
#include "common/keyhash.h"

struct cl_async {
    cram_client *c;
    cram_multi_op *op;
    int kind;                   /* CL_MULTI_READ / WRITE / REMOVE */
    cram_async_fn fn;
    void *arg;
    struct cl_retry r;
    uint64_t hash;
    uint64_t retry_at_ms;
    int slot;                   /* session slot it was sent on, -1 none */
    tp_session *sent_on;        /* the session, to drop it after a timeout */
    int drop_session;           /* the send failed: drop sent_on before retrying */
    struct cl_async *next;      /* list link (free, retry or done) */
    struct cl_async *all_next;  /* every op ever allocated, freed at disconnect */
    union {
        struct wire_read_req rd;
        struct wire_write_req wr;
        struct wire_remove_req rm;
    } req;
};

static void cl_async_push(struct cl_async **head, struct cl_async *a)
{
    a->next = *head;
    *head = a;
}

static void cl_async_finish(struct cl_async *a, cram_status st)
{
    a->op->status = st;
    cl_async_push(&a->c->async_done, a);
}

/* Queue for a resend after a jittered back-off, or finish with TIMEOUT. */
static void cl_async_later(struct cl_async *a)
{
    uint64_t now = clock_mono_ms();
    uint32_t delay_us;

    if (now >= a->r.deadline_ms) {
        cl_async_finish(a, CRAM_TIMEOUT);
        return;
    }
    delay_us = cl_backoff_next_us(a->c, &a->r);
    a->retry_at_ms = now + (delay_us + 999) / 1000;
    cl_async_push(&a->c->async_retry, a);
}

static void cl_async_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct cl_async *a = arg;
    cram_multi_op *op = a->op;
    cram_status sst;
    uint64_t ver = 0;
    int bad;

    a->c->async_inflight--;
    if (st == CRAM_NO_MEMORY || st == CRAM_REQUEST_TOO_LARGE) {
        cl_async_finish(a, st);
        return;
    }
    if (st != CRAM_OK) {
        a->drop_session = 1;        /* dead server or lost connection */
        cl_table_invalidate(a->c, op->table);
        cl_async_later(a);
        return;
    }
    if (a->kind == CL_MULTI_READ) {
        const uint8_t *val;
        uint32_t vlen;
        bad = cl_parse_read(resp, len, &sst, &ver, &val, &vlen);
        if (!bad && sst == CRAM_OK) {
            op->value_len_out = vlen;
            if (op->buf_len && vlen)
                memcpy(op->buf, val, vlen < op->buf_len ? vlen : op->buf_len);
        }
    } else {
        bad = cl_parse_write(resp, len, &sst, &ver);
    }
    if (bad) {
        cl_async_finish(a, CRAM_INTERNAL_ERROR);
        return;
    }
    if (cl_status_is_reroute(sst)) {
        if (cl_reroute_refresh(&a->r, sst))
            cl_table_invalidate(a->c, op->table);
        cl_async_later(a);
        return;
    }
    op->version = ver;
    cl_async_finish(a, sst);
}

/* Route and send; on failure the op lands on the retry or done list. */
static void cl_async_send(struct cl_async *a)
{
    cram_client *c = a->c;
    cram_multi_op *op = a->op;
    struct cl_table *t;
    struct wire_target *tgt;
    struct iovec iov[3];
    int iovcnt = 2;
    tp_session *s;
    cram_status st;
    int i;

    if (a->drop_session) {
        /* only if nobody replaced the session meanwhile */
        if (a->slot >= 0 && c->sess[a->slot].s == a->sent_on)
            cl_sess_drop(c, a->slot);
        cl_coord_drop(c);
        a->drop_session = 0;
    }
    st = cl_table_get(c, &a->r, op->table, &t);
    if (st != CRAM_OK) {
        cl_async_finish(a, st);
        return;
    }
    i = cl_route(t, a->hash);
    if (i < 0 || t->t[i].sess < 0) {
        t->stale = 1;
        cl_async_later(a);
        return;
    }
    a->slot = t->t[i].sess;
    s = cl_sess_get(c, a->slot, &st);
    if (!s) {
        t->stale = 1;
        cl_coord_drop(c);
        cl_async_later(a);
        return;
    }
    a->sent_on = s;
    switch (a->kind) {
    case CL_MULTI_READ:
        tgt = &a->req.rd.tgt;
        iov[0] = (struct iovec){ &a->req.rd, sizeof a->req.rd };
        break;
    case CL_MULTI_WRITE:
        tgt = &a->req.wr.tgt;
        iov[0] = (struct iovec){ &a->req.wr, sizeof a->req.wr };
        if (op->value_len)
            iov[iovcnt++] = (struct iovec){ (void *)op->value, op->value_len };
        break;
    default:
        tgt = &a->req.rm.tgt;
        iov[0] = (struct iovec){ &a->req.rm, sizeof a->req.rm };
        break;
    }
    tgt->target_server_id = t->t[i].server_id;
    iov[1] = (struct iovec){ (void *)op->key, op->key_len };   /* the value, if any, is iov[2] */
    st = tp_send(s, iov, iovcnt, cl_rpc_timeout(&a->r), cl_async_done, a);
    if (st == CRAM_OK) {
        c->async_inflight++;
        return;
    }
    if (st == CRAM_REQUEST_TOO_LARGE) {
        cl_async_finish(a, st);
        return;
    }
    a->drop_session = 1;
    cl_async_later(a);
}

static void cl_async_build(struct cl_async *a)
{
    const cram_multi_op *op = a->op;

    memset(&a->req, 0, sizeof a->req);
    switch (a->kind) {
    case CL_MULTI_READ:
        a->req.rd.hdr.opcode = WIRE_OP_READ;
        a->req.rd.hdr.service = WIRE_SVC_MASTER;
        a->req.rd.table_id = op->table;
        cl_rules_to_wire(op->rules, &a->req.rd.rules);
        a->req.rd.key_len = op->key_len;
        break;
    case CL_MULTI_WRITE:
        a->req.wr.hdr.opcode = WIRE_OP_WRITE;
        a->req.wr.hdr.service = WIRE_SVC_MASTER;
        a->req.wr.table_id = op->table;
        cl_rules_to_wire(op->rules, &a->req.wr.rules);
        a->req.wr.value_len = op->value_len;
        a->req.wr.key_len = op->key_len;
        break;
    default:
        a->req.rm.hdr.opcode = WIRE_OP_REMOVE;
        a->req.rm.hdr.service = WIRE_SVC_MASTER;
        a->req.rm.table_id = op->table;
        cl_rules_to_wire(op->rules, &a->req.rm.rules);
        a->req.rm.key_len = op->key_len;
        break;
    }
}

static cram_status cl_async_start(cram_client *c, int kind, cram_multi_op *op,
                                  cram_async_fn fn, void *arg)
{
    struct cl_async *a;

    if (!c || !op || !fn)
        return CRAM_INVALID_ARGUMENT;
    op->version = 0;
    op->value_len_out = 0;
    if (!op->key || op->key_len == 0)
        return op->status = CRAM_INVALID_ARGUMENT;
    if (kind == CL_MULTI_WRITE) {
        if (!op->value && op->value_len > 0)
            return op->status = CRAM_INVALID_ARGUMENT;
        if (op->value_len > CRAM_MAX_VALUE_LEN)
            return op->status = CRAM_REQUEST_TOO_LARGE;
    }
    if (kind == CL_MULTI_READ && !op->buf && op->buf_len > 0)
        return op->status = CRAM_INVALID_ARGUMENT;
    a = c->async_free;
    if (a) {
        c->async_free = a->next;
    } else {
        a = calloc(1, sizeof *a);
        if (!a)
            return op->status = CRAM_NO_MEMORY;
        a->all_next = c->async_all;
        c->async_all = a;
    }
    a->c = c;
    a->op = op;
    a->kind = kind;
    a->fn = fn;
    a->arg = arg;
    a->slot = -1;
    a->sent_on = NULL;
    a->drop_session = 0;
    a->hash = cram_key_hash(op->table, op->key, op->key_len);
    cl_retry_init(c, &a->r);
    cl_async_build(a);
    op->status = CRAM_RETRY;        /* pending */
    c->async_pending++;
    cl_async_send(a);
    return CRAM_OK;
}

cram_status cram_async_read(cram_client *c, cram_multi_op *op, cram_async_fn fn, void *arg)
{
    return cl_async_start(c, CL_MULTI_READ, op, fn, arg);
}

cram_status cram_async_write(cram_client *c, cram_multi_op *op, cram_async_fn fn, void *arg)
{
    return cl_async_start(c, CL_MULTI_WRITE, op, fn, arg);
}

cram_status cram_async_remove(cram_client *c, cram_multi_op *op, cram_async_fn fn, void *arg)
{
    return cl_async_start(c, CL_MULTI_REMOVE, op, fn, arg);
}

size_t cram_async_pending(const cram_client *c)
{
    return c ? c->async_pending : 0;
}

/* Resend the retries that are due; returns ms until the next one (or -1). */
static int cl_async_resend_due(cram_client *c)
{
    struct cl_async *list = c->async_retry;
    uint64_t now = clock_mono_ms();
    int64_t next = -1;

    c->async_retry = NULL;
    while (list) {
        struct cl_async *a = list;
        list = a->next;
        if (a->retry_at_ms <= now) {
            cl_async_send(a);
        } else {
            int64_t wait = (int64_t)(a->retry_at_ms - now);
            if (next < 0 || wait < next)
                next = wait;
            cl_async_push(&c->async_retry, a);
        }
    }
    return (int)next;
}

/* Run the callbacks of finished ops (oldest first); returns how many. */
static int cl_async_run_done(cram_client *c)
{
    struct cl_async *rev = NULL;
    int n = 0;

    while (c->async_done) {         /* the list is newest first: reverse it */
        struct cl_async *a = c->async_done;
        c->async_done = a->next;
        a->next = rev;
        rev = a;
    }
    while (rev) {
        struct cl_async *a = rev;
        rev = a->next;
        cram_async_fn fn = a->fn;
        void *arg = a->arg;
        cram_multi_op *op = a->op;
        a->op = NULL;
        a->next = c->async_free;
        c->async_free = a;
        c->async_pending--;
        fn(arg, op);                /* may start new ops: a is already free */
        n++;
    }
    return n;
}

int cram_poll(cram_client *c, int timeout_ms)
{
    uint64_t start = clock_mono_ms();
    int n;

    if (!c)
        return -1;
    for (;;) {
        int next_retry = cl_async_resend_due(c);
        n = cl_async_run_done(c);
        if (n > 0 || c->async_pending == 0)
            return n;
        int wait = timeout_ms;
        if (timeout_ms > 0) {
            uint64_t spent = clock_mono_ms() - start;
            if (spent >= (uint64_t)timeout_ms)
                return 0;
            wait = timeout_ms - (int)spent;
        }
        if (next_retry >= 0 && (wait < 0 || next_retry < wait))
            wait = next_retry;
        if (c->async_done)
            wait = 0;
        tp_loop_poll(c->loop, wait);
        if (timeout_ms == 0 && !c->async_done) {
            cl_async_resend_due(c);
            return cl_async_run_done(c);
        }
    }
}

void cl_async_free_all(cram_client *c)
{
    while (c->async_all) {
        struct cl_async *a = c->async_all;
        c->async_all = a->all_next;
        free(a);
    }
    c->async_free = c->async_retry = c->async_done = NULL;
}
