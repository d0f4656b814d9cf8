/*
 * multi.c -- multi-read, multi-write and multi-remove.
 *
 * One round: route every pending op by key hash, group the ops by the
 * session of their owner, cut each group into messages that respect
 * WIRE_MAX_MESSAGE and WIRE_MAX_MULTI (cl_multi_plan), send every message at
 * once with tp_send and poll the handle's loop until all have completed.
 * Ops whose tablet moved (UNKNOWN_TABLET / RETRY / WRONG_SERVER, or a lost
 * connection) stay pending: the table config is refreshed and the next
 * round, after a back-off, sends just those.  While an op is pending its
 * status field holds CRAM_RETRY, which never survives to the caller.
 */
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"
#include "common/keyhash.h"
#include "common/log.h"

/* One message in flight. */
struct cl_msg {
    cram_client *c;
    int slot;               /* session slot */
    int done;
    cram_status st;         /* transport status */
    uint8_t *req;
    size_t req_len;
    uint8_t *resp;          /* malloc'ed copy of the response */
    uint32_t resp_len;
};

static void cl_msg_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct cl_msg *m = arg;

    m->done = 1;
    m->st = st;
    if (st != CRAM_OK)
        return;
    m->resp = malloc(len ? len : 1);
    if (!m->resp) {
        m->st = CRAM_NO_MEMORY;
        return;
    }
    memcpy(m->resp, resp, len);
    m->resp_len = len;
}

static const uint16_t cl_multi_opcode[] = {
    [CL_MULTI_READ] = WIRE_OP_MULTI_READ,
    [CL_MULTI_WRITE] = WIRE_OP_MULTI_WRITE,
    [CL_MULTI_REMOVE] = WIRE_OP_MULTI_REMOVE,
};

/* Serialize the batch's ops into one request message. */
static uint8_t *cl_multi_build(int kind, const cram_multi_op *ops, const uint32_t *order,
                               const struct cl_batch *b, uint64_t server_id)
{
    uint8_t *buf = malloc(b->req_bytes);
    struct wire_multi_req h;
    size_t off = sizeof h;

    if (!buf)
        return NULL;
    memset(&h, 0, sizeof h);
    h.hdr.opcode = cl_multi_opcode[kind];
    h.hdr.service = WIRE_SVC_MASTER;
    h.tgt.target_server_id = server_id;
    h.count = b->count;
    memcpy(buf, &h, sizeof h);
    for (uint32_t k = 0; k < b->count; k++) {
        const cram_multi_op *op = &ops[order[b->first + k]];
        if (kind == CL_MULTI_WRITE) {
            struct wire_multi_write_item it;
            memset(&it, 0, sizeof it);
            it.table_id = op->table;
            cl_rules_to_wire(op->rules, &it.rules);
            it.value_len = op->value_len;
            it.key_len = op->key_len;
            memcpy(buf + off, &it, sizeof it);
            off += sizeof it;
        } else {
            struct wire_multi_read_item it;
            memset(&it, 0, sizeof it);
            it.table_id = op->table;
            cl_rules_to_wire(op->rules, &it.rules);
            it.key_len = op->key_len;
            memcpy(buf + off, &it, sizeof it);
            off += sizeof it;
        }
        memcpy(buf + off, op->key, op->key_len);
        off += op->key_len;
        if (kind == CL_MULTI_WRITE && op->value_len) {
            memcpy(buf + off, op->value, op->value_len);
            off += op->value_len;
        }
    }
    CRAM_ASSERT(off == b->req_bytes);
    return buf;
}

/* Apply one completed message's results to its ops.  Returns 0, or with
 * some op to retry: bit 1 for a RETRY (the owner is right), bit 2 for a
 * status that says the tablet map is stale. */
static int cl_multi_apply(int kind, cram_multi_op *ops, const uint32_t *order,
                          const struct cl_batch *b, const struct cl_msg *m,
                          uint32_t *max_items)
{
    cram_status st;
    const uint8_t *p;
    int again = 0;

    if (cl_parse_multi(m->resp, m->resp_len, kind == CL_MULTI_READ, b->count, &st, &p) != 0) {
        for (uint32_t k = 0; k < b->count; k++)
            ops[order[b->first + k]].status = CRAM_INTERNAL_ERROR;
        return 0;
    }
    if (st != CRAM_OK) {
        if (st == CRAM_REQUEST_TOO_LARGE && b->count > 1) {
            /* the response would not fit: send smaller messages */
            *max_items = b->count / 2;
            return 1;
        }
        if (cl_status_is_reroute(st))
            return st == CRAM_RETRY ? 1 : 2;
        for (uint32_t k = 0; k < b->count; k++)
            ops[order[b->first + k]].status = st;
        return 0;
    }
    for (uint32_t k = 0; k < b->count; k++) {
        cram_multi_op *op = &ops[order[b->first + k]];
        struct wire_multi_resp_item it;
        memcpy(&it, p, sizeof it);
        p += sizeof it;
        op->version = it.version;
        if (cl_status_is_reroute((cram_status)it.status)) {
            /* op->status stays CRAM_RETRY: pending */
            again |= it.status == CRAM_RETRY ? 1 : 2;
            continue;
        }
        op->status = (cram_status)it.status;
        if (kind == CL_MULTI_READ && op->status == CRAM_OK) {
            op->value_len_out = it.value_len;
            if (op->buf_len && it.value_len)
                memcpy(op->buf, p, it.value_len < op->buf_len ? it.value_len : op->buf_len);
        }
        p += it.value_len;
    }
    return again;
}

/* Validate one op; CRAM_RETRY means "fine, pending". */
static cram_status cl_multi_check(int kind, const cram_multi_op *op)
{
    if (!op->key || op->key_len == 0)
        return CRAM_INVALID_ARGUMENT;
    if (kind == CL_MULTI_WRITE) {
        if (!op->value && op->value_len > 0)
            return CRAM_INVALID_ARGUMENT;
        if (op->value_len > CRAM_MAX_VALUE_LEN)
            return CRAM_REQUEST_TOO_LARGE;
    }
    if (kind == CL_MULTI_READ && !op->buf && op->buf_len > 0)
        return CRAM_INVALID_ARGUMENT;
    return CRAM_RETRY;
}

/* Everything one call allocates, freed together. */
struct cl_multi_mem {
    uint32_t *idx;          /* pending ops of this round */
    uint32_t *dest;         /* session slot per op */
    uint64_t *sid;          /* owner server id per op */
    uint32_t *order;
    uint32_t *too_large;
    struct cl_batch *batches;
    struct cl_msg *msgs;
};

static void cl_multi_mem_free(struct cl_multi_mem *mm)
{
    free(mm->idx);
    free(mm->dest);
    free(mm->sid);
    free(mm->order);
    free(mm->too_large);
    free(mm->batches);
    free(mm->msgs);
}

static int cl_multi_mem_alloc(struct cl_multi_mem *mm, size_t n)
{
    memset(mm, 0, sizeof *mm);
    mm->idx = malloc(n * sizeof *mm->idx);
    mm->dest = malloc(n * sizeof *mm->dest);
    mm->sid = malloc(n * sizeof *mm->sid);
    mm->order = malloc(n * sizeof *mm->order);
    mm->too_large = malloc(n * sizeof *mm->too_large);
    mm->batches = malloc(n * sizeof *mm->batches);
    mm->msgs = malloc(n * sizeof *mm->msgs);
    if (!mm->idx || !mm->dest || !mm->sid || !mm->order || !mm->too_large ||
        !mm->batches || !mm->msgs) {
        cl_multi_mem_free(mm);
        return -1;
    }
    return 0;
}

/*
 * Route the pending ops into mm->idx/dest/sid.  Returns the number routed;
 * *again is set when some op could not be routed yet.  A call-level failure
 * (timeout) is returned in *fatal and ends the call.
 */
static size_t cl_multi_route(cram_client *c, struct cl_retry *r, cram_multi_op *ops,
                             size_t n, struct cl_multi_mem *mm, int *again,
                             cram_status *fatal)
{
    size_t np = 0;

    for (size_t i = 0; i < n; i++) {
        struct cl_table *t;
        cram_status st;
        int ti;

        if (ops[i].status != CRAM_RETRY)
            continue;
        st = cl_table_get(c, r, ops[i].table, &t);
        if (st == CRAM_TIMEOUT || st == CRAM_NO_MEMORY) {
            *fatal = st;
            return np;
        }
        if (st != CRAM_OK) {
            ops[i].status = st;         /* e.g. CRAM_TABLE_DOESNT_EXIST */
            continue;
        }
        ti = cl_route(t, cram_key_hash(ops[i].table, ops[i].key, ops[i].key_len));
        if (ti < 0 || t->t[ti].sess < 0) {
            t->stale = 1;
            *again |= 2;
            continue;
        }
        mm->idx[np] = (uint32_t)i;
        mm->dest[i] = (uint32_t)t->t[ti].sess;
        mm->sid[i] = t->t[ti].server_id;
        np++;
    }
    return np;
}

/* Send the round's messages in parallel and wait for all of them. */
static void cl_multi_send(cram_client *c, struct cl_retry *r, size_t nb,
                          struct cl_multi_mem *mm)
{
    uint32_t tmo = cl_rpc_timeout(r);
    size_t waiting = 0;

    for (size_t b = 0; b < nb; b++) {
        struct cl_msg *m = &mm->msgs[b];
        struct iovec iov = { m->req, m->req_len };
        tp_session *s;
        if (m->done)
            continue;       /* build failed */
        s = cl_sess_get(c, m->slot, &m->st);
        if (!s) {
            m->done = 1;
            m->st = CRAM_TRANSPORT_ERROR;
            continue;
        }
        m->st = tp_send(s, &iov, 1, tmo, cl_msg_done, m);
        if (m->st != CRAM_OK) {
            m->done = 1;
            continue;
        }
        waiting++;
    }
    while (waiting) {
        tp_loop_poll(c->loop, -1);
        waiting = 0;
        for (size_t b = 0; b < nb; b++)
            waiting += !mm->msgs[b].done;
    }
}

static cram_status cl_multi(cram_client *c, int kind, cram_multi_op *ops, size_t n)
{
    struct cl_multi_mem mm;
    struct cl_retry r;
    uint32_t max_items = WIRE_MAX_MULTI;
    cram_status fatal = CRAM_OK;
    size_t npending = 0;

    if (!c || (!ops && n > 0) || n > UINT32_MAX)
        return CRAM_INVALID_ARGUMENT;
    if (n == 0)
        return CRAM_OK;
    for (size_t i = 0; i < n; i++) {
        ops[i].version = 0;
        ops[i].value_len_out = 0;
        ops[i].status = cl_multi_check(kind, &ops[i]);
        npending += ops[i].status == CRAM_RETRY;
    }
    if (npending == 0)
        return CRAM_OK;
    if (cl_multi_mem_alloc(&mm, n) != 0)
        return CRAM_NO_MEMORY;
    cl_retry_init(c, &r);

    for (;;) {
        int again = 0;
        size_t norder;
        size_t ntl;
        size_t np = cl_multi_route(c, &r, ops, n, &mm, &again, &fatal);
        if (fatal != CRAM_OK)
            break;
        size_t nb = cl_multi_plan(kind, ops, mm.idx, np, mm.dest, WIRE_MAX_MESSAGE,
                                  max_items, mm.order, &norder, mm.batches,
                                  mm.too_large, &ntl);
        for (size_t k = 0; k < ntl; k++)
            ops[mm.too_large[k]].status = CRAM_REQUEST_TOO_LARGE;
        for (size_t b = 0; b < nb; b++) {
            struct cl_msg *m = &mm.msgs[b];
            memset(m, 0, sizeof *m);
            m->c = c;
            m->slot = (int)mm.batches[b].dest;
            m->req_len = mm.batches[b].req_bytes;
            m->req = cl_multi_build(kind, ops, mm.order, &mm.batches[b],
                                    mm.sid[mm.order[mm.batches[b].first]]);
            if (!m->req) {
                m->done = 1;
                m->st = CRAM_NO_MEMORY;
            }
        }
        cl_multi_send(c, &r, nb, &mm);
        for (size_t b = 0; b < nb; b++) {
            struct cl_msg *m = &mm.msgs[b];
            if (m->st == CRAM_OK) {
                again |= cl_multi_apply(kind, ops, mm.order, &mm.batches[b], m, &max_items);
            } else if (m->st == CRAM_NO_MEMORY || m->st == CRAM_REQUEST_TOO_LARGE) {
                for (uint32_t k = 0; k < mm.batches[b].count; k++)
                    ops[mm.order[mm.batches[b].first + k]].status = m->st;
            } else {
                /* lost connection or RPC timeout: find the owners again */
                cl_sess_drop(c, m->slot);
                cl_coord_drop(c);
                again |= 2;
            }
            free(m->req);
            free(m->resp);
        }
        if (!again)
            break;
        /* a RETRY alone keeps the map (cl_reroute_refresh) */
        if ((again & 2) || cl_reroute_refresh(&r, CRAM_RETRY))
            for (size_t i = 0; i < n; i++)
                if (ops[i].status == CRAM_RETRY)
                    cl_table_invalidate(c, ops[i].table);
        if (cl_backoff(c, &r) != 0) {
            fatal = CRAM_TIMEOUT;
            break;
        }
    }
    /* ops still pending when the call ends carry the reason */
    for (size_t i = 0; i < n; i++)
        if (ops[i].status == CRAM_RETRY)
            ops[i].status = fatal != CRAM_OK ? fatal : CRAM_TIMEOUT;
    cl_multi_mem_free(&mm);
    return fatal == CRAM_NO_MEMORY ? CRAM_NO_MEMORY : CRAM_OK;
}

cram_status cram_multi_read(cram_client *c, cram_multi_op *ops, size_t n)
{
    return cl_multi(c, CL_MULTI_READ, ops, n);
}

cram_status cram_multi_write(cram_client *c, cram_multi_op *ops, size_t n)
{
    return cl_multi(c, CL_MULTI_WRITE, ops, n);
}

cram_status cram_multi_remove(cram_client *c, cram_multi_op *ops, size_t n)
{
    return cl_multi(c, CL_MULTI_REMOVE, ops, n);
}
