/*
 * enumerate.c -- walking a table in key-hash order.
 *
 * The enumerator remembers only a position in hash space (pos): the next
 * request goes to whichever tablet holds pos in the current config, with
 * cursor = pos.  So a tablet that moves, splits or recovers between calls is
 * handled by refreshing the config and continuing from pos.  One response is
 * buffered at a time; its buffer is swapped with the handle's response
 * buffer, so the items are never copied.
 */
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"

struct cram_enumerator {
    cram_client *c;
    uint64_t table;
    uint64_t pos;           /* next key hash to ask for */
    int finished;           /* the tablet ending at UINT64_MAX is done */
    uint8_t *buf;           /* the buffered response */
    size_t cap;
    const uint8_t *p;       /* next item in buf */
    uint32_t left;          /* items left in buf */
};

cram_status cram_enumerate_begin(cram_client *c, uint64_t table, cram_enumerator **out)
{
    struct cl_retry r;
    struct cl_table *t;
    cram_enumerator *e;
    cram_status st;

    if (out)
        *out = NULL;
    if (!c || !out)
        return CRAM_INVALID_ARGUMENT;
    cl_retry_init(c, &r);
    st = cl_table_get(c, &r, table, &t);
    if (st != CRAM_OK)
        return st;
    e = calloc(1, sizeof *e);
    if (!e)
        return CRAM_NO_MEMORY;
    e->c = c;
    e->table = table;
    *out = e;
    return CRAM_OK;
}

/* Fetch the next non-exhausted response into e->buf. */
static cram_status cl_enum_fetch(cram_enumerator *e)
{
    cram_client *c = e->c;
    struct cl_retry r;
    cram_status st;

    cl_retry_init(c, &r);
    for (;;) {
        struct wire_enum_req rq;
        struct iovec iov;
        struct cl_table *t;
        const struct cl_tablet *tab;
        tp_session *s;
        const uint8_t *items;
        uint64_t next;
        uint32_t count;
        int done;
        int i;

        st = cl_table_get(c, &r, e->table, &t);
        if (st != CRAM_OK)
            return st;
        i = cl_route(t, e->pos);
        if (i < 0 || t->t[i].sess < 0) {
            t->stale = 1;
            goto backoff;
        }
        tab = &t->t[i];
        memset(&rq, 0, sizeof rq);
        rq.hdr.opcode = WIRE_OP_ENUMERATE;
        rq.hdr.service = WIRE_SVC_MASTER;
        rq.tgt.target_server_id = tab->server_id;
        rq.table_id = e->table;
        rq.tablet_start = tab->start;
        rq.tablet_end = tab->end;
        rq.cursor = e->pos;
        iov = (struct iovec){ &rq, sizeof rq };
        s = cl_sess_get(c, tab->sess, &st);
        if (!s) {
            t->stale = 1;
            cl_coord_drop(c);
            goto backoff;
        }
        st = cl_rpc(c, s, &iov, 1, cl_rpc_timeout(&r));
        if (st == CRAM_NO_MEMORY || st == CRAM_REQUEST_TOO_LARGE)
            return st;
        if (st != CRAM_OK) {
            cl_sess_drop(c, tab->sess);
            cl_coord_drop(c);
            t->stale = 1;
            goto backoff;
        }
        if (cl_parse_enum(c->rbuf, c->rlen, &st, &count, &next, &done, &items) != 0)
            return CRAM_INTERNAL_ERROR;
        if (cl_status_is_reroute(st)) {
            if (cl_reroute_refresh(&r, st))
                t->stale = 1;
            goto backoff;
        }
        if (st != CRAM_OK)
            return st;
        if (!done && (next < e->pos || (next == e->pos && count == 0)))
            return CRAM_INTERNAL_ERROR;     /* no progress: would loop forever */
        if (done || next > tab->end) {
            if (tab->end == UINT64_MAX)
                e->finished = 1;
            else
                e->pos = tab->end + 1;
        } else {
            e->pos = next;
        }
        /* take the response: swap buffers with the handle */
        uint8_t *b = e->buf;
        size_t cap = e->cap;
        e->buf = c->rbuf;
        e->cap = c->rcap;
        c->rbuf = b;
        c->rcap = cap;
        e->p = items;
        e->left = count;
        return CRAM_OK;
backoff:
        if (cl_backoff(c, &r) != 0)
            return CRAM_TIMEOUT;
    }
}

cram_status cram_enumerate_next(cram_enumerator *e, const void **key, uint16_t *key_len,
                                const void **value, uint32_t *value_len,
                                uint64_t *version)
{
    struct wire_enum_item it;
    cram_status st;

    if (!e)
        return CRAM_INVALID_ARGUMENT;
    while (e->left == 0) {
        if (e->finished)
            return CRAM_OBJECT_DOESNT_EXIST;
        st = cl_enum_fetch(e);
        if (st != CRAM_OK)
            return st;
    }
    /* cl_parse_enum has checked every item's lengths against the buffer */
    memcpy(&it, e->p, sizeof it);
    e->p += sizeof it;
    if (key)
        *key = e->p;
    if (key_len)
        *key_len = it.key_len;
    e->p += it.key_len;
    if (value)
        *value = e->p;
    if (value_len)
        *value_len = it.value_len;
    if (version)
        *version = it.version;
    e->p += it.value_len;
    e->left--;
    return CRAM_OK;
}

void cram_enumerate_end(cram_enumerator *e)
{
    if (!e)
        return;
    free(e->buf);
    free(e);
}
