/*
 * ops.c -- single-object operations: read, write, remove, increment.
 *
 * Each builds its packed request once on the stack and hands it to
 * cl_keyed_call, which routes by key hash, stamps the owner's server id into
 * the request, sends it and hides re-routing and retries.  The response is
 * parsed from the handle's reusable buffer, so the steady-state path does no
 * allocation of its own.
 */
#include <string.h>

#include "client/client_int.h"
#include "common/keyhash.h"

/*
 * Route, send and retry one single-key request.  tgt points into the
 * request; its target id is set on every attempt.  Returns CRAM_OK with the
 * (well-formed header, non-rerouting) response in c->rbuf/c->rlen, or the
 * call's final error.
 */
static cram_status cl_keyed_call(cram_client *c, uint64_t table, const void *key,
                                 uint16_t key_len, struct wire_target *tgt,
                                 const struct iovec *iov, int iovcnt)
{
    struct cl_retry r;
    uint64_t hash = cram_key_hash(table, key, key_len);
    cram_status st;
    cram_status sst;

    cl_retry_init(c, &r);
    for (;;) {
        struct cl_table *t;
        tp_session *s;
        int i;

        st = cl_table_get(c, &r, table, &t);
        if (st != CRAM_OK)
            return st;
        i = cl_route(t, hash);
        if (i < 0 || t->t[i].sess < 0) {
            t->stale = 1;           /* no owner known (yet): ask again */
            goto backoff;
        }
        tgt->target_server_id = t->t[i].server_id;
        s = cl_sess_get(c, t->t[i].sess, &st);
        if (!s) {
            t->stale = 1;
            cl_coord_drop(c);
            goto backoff;
        }
        st = cl_rpc(c, s, iov, iovcnt, cl_rpc_timeout(&r));
        if (st == CRAM_OK) {
            if (cl_parse_status(c->rbuf, c->rlen, &sst) != 0)
                return CRAM_INTERNAL_ERROR;
            if (!cl_status_is_reroute(sst))
                return CRAM_OK;
            if (cl_reroute_refresh(&r, sst))
                t->stale = 1;
        } else if (st == CRAM_REQUEST_TOO_LARGE || st == CRAM_NO_MEMORY) {
            return st;
        } else {
            /* dead server or lost connection: find everything again */
            cl_sess_drop(c, t->t[i].sess);
            cl_coord_drop(c);
            t->stale = 1;
        }
backoff:
        if (cl_backoff(c, &r) != 0)
            return CRAM_TIMEOUT;
    }
}

cram_status cram_read(cram_client *c, uint64_t table, const void *key, uint16_t key_len,
                      const cram_reject_rules *rules, uint64_t *version,
                      void *buf, uint32_t buf_len, uint32_t *value_len)
{
    struct wire_read_req rq;
    struct iovec iov[2];
    const uint8_t *val;
    uint32_t vlen;
    uint64_t ver;
    cram_status st;
    cram_status sst;

    if (version)
        *version = 0;
    if (value_len)
        *value_len = 0;
    if (!c || !key || key_len == 0 || (!buf && buf_len > 0))
        return CRAM_INVALID_ARGUMENT;
    memset(&rq, 0, sizeof rq);
    rq.hdr.opcode = WIRE_OP_READ;
    rq.hdr.service = WIRE_SVC_MASTER;
    rq.table_id = table;
    cl_rules_to_wire(rules, &rq.rules);
    rq.key_len = key_len;
    iov[0] = (struct iovec){ &rq, sizeof rq };
    iov[1] = (struct iovec){ (void *)key, key_len };
    st = cl_keyed_call(c, table, key, key_len, &rq.tgt, iov, 2);
    if (st != CRAM_OK)
        return st;
    if (cl_parse_read(c->rbuf, c->rlen, &sst, &ver, &val, &vlen) != 0)
        return CRAM_INTERNAL_ERROR;
    if (version)
        *version = ver;
    if (sst != CRAM_OK)
        return sst;
    if (value_len)
        *value_len = vlen;
    if (buf_len)
        memcpy(buf, val, vlen < buf_len ? vlen : buf_len);
    return CRAM_OK;
}

cram_status cram_write(cram_client *c, uint64_t table, const void *key, uint16_t key_len,
                       const void *value, uint32_t value_len,
                       const cram_reject_rules *rules, uint64_t *version)
{
    struct wire_write_req rq;
    struct iovec iov[3];
    uint64_t ver;
    cram_status st;
    cram_status sst;

    if (version)
        *version = 0;
    if (!c || !key || key_len == 0 || (!value && value_len > 0))
        return CRAM_INVALID_ARGUMENT;
    if (value_len > CRAM_MAX_VALUE_LEN)
        return CRAM_REQUEST_TOO_LARGE;
    memset(&rq, 0, sizeof rq);
    rq.hdr.opcode = WIRE_OP_WRITE;
    rq.hdr.service = WIRE_SVC_MASTER;
    rq.table_id = table;
    cl_rules_to_wire(rules, &rq.rules);
    rq.value_len = value_len;
    rq.key_len = key_len;
    iov[0] = (struct iovec){ &rq, sizeof rq };
    iov[1] = (struct iovec){ (void *)key, key_len };
    iov[2] = (struct iovec){ (void *)value, value_len };
    st = cl_keyed_call(c, table, key, key_len, &rq.tgt, iov, value_len ? 3 : 2);
    if (st != CRAM_OK)
        return st;
    if (cl_parse_write(c->rbuf, c->rlen, &sst, &ver) != 0)
        return CRAM_INTERNAL_ERROR;
    if (version)
        *version = ver;
    return sst;
}

cram_status cram_remove(cram_client *c, uint64_t table, const void *key, uint16_t key_len,
                        const cram_reject_rules *rules, uint64_t *version)
{
    struct wire_remove_req rq;
    struct iovec iov[2];
    uint64_t ver;
    cram_status st;
    cram_status sst;

    if (version)
        *version = 0;
    if (!c || !key || key_len == 0)
        return CRAM_INVALID_ARGUMENT;
    memset(&rq, 0, sizeof rq);
    rq.hdr.opcode = WIRE_OP_REMOVE;
    rq.hdr.service = WIRE_SVC_MASTER;
    rq.table_id = table;
    cl_rules_to_wire(rules, &rq.rules);
    rq.key_len = key_len;
    iov[0] = (struct iovec){ &rq, sizeof rq };
    iov[1] = (struct iovec){ (void *)key, key_len };
    st = cl_keyed_call(c, table, key, key_len, &rq.tgt, iov, 2);
    if (st != CRAM_OK)
        return st;
    if (cl_parse_write(c->rbuf, c->rlen, &sst, &ver) != 0)
        return CRAM_INTERNAL_ERROR;
    if (version)
        *version = ver;
    return sst;
}

cram_status cram_increment_int64(cram_client *c, uint64_t table, const void *key,
                                 uint16_t key_len, int64_t delta,
                                 const cram_reject_rules *rules,
                                 int64_t *new_value, uint64_t *version)
{
    struct wire_incr_req rq;
    struct iovec iov[2];
    uint64_t ver;
    int64_t nv;
    cram_status st;
    cram_status sst;

    if (version)
        *version = 0;
    if (new_value)
        *new_value = 0;
    if (!c || !key || key_len == 0)
        return CRAM_INVALID_ARGUMENT;
    memset(&rq, 0, sizeof rq);
    rq.hdr.opcode = WIRE_OP_INCREMENT;
    rq.hdr.service = WIRE_SVC_MASTER;
    rq.table_id = table;
    cl_rules_to_wire(rules, &rq.rules);
    rq.delta = delta;
    rq.key_len = key_len;
    iov[0] = (struct iovec){ &rq, sizeof rq };
    iov[1] = (struct iovec){ (void *)key, key_len };
    st = cl_keyed_call(c, table, key, key_len, &rq.tgt, iov, 2);
    if (st != CRAM_OK)
        return st;
    if (cl_parse_incr(c->rbuf, c->rlen, &sst, &ver, &nv) != 0)
        return CRAM_INTERNAL_ERROR;
    if (version)
        *version = ver;
    if (sst == CRAM_OK && new_value)
        *new_value = nv;
    return sst;
}
