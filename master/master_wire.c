/* master_wire.c -- data-path request parsers (see master_wire.h). */
#include "master/master_wire.h"

#include <string.h>

cram_status mw_rules(const struct wire_reject_rules *w, cram_reject_rules *out)
{
    if (w->doesnt_exist > 1 || w->exists > 1 || w->version_le_given > 1 || w->version_ne_given > 1)
        return CRAM_REQUEST_FORMAT_ERROR;
    out->given_version = w->given_version;
    out->doesnt_exist = w->doesnt_exist;
    out->exists = w->exists;
    out->version_le_given = w->version_le_given;
    out->version_ne_given = w->version_ne_given;
    return CRAM_OK;
}

/* The fixed struct is present and the header names the expected opcode. */
static cram_status fixed(const uint8_t *buf, uint32_t len, size_t need, uint16_t opcode, void *out)
{
    if (buf == NULL || len < need)
        return CRAM_REQUEST_FORMAT_ERROR;
    memcpy(out, buf, need);
    struct wire_req_hdr h;
    memcpy(&h, buf, sizeof h);
    return h.opcode == opcode ? CRAM_OK : CRAM_REQUEST_FORMAT_ERROR;
}

static cram_status key_op(const uint8_t *buf, uint32_t len, size_t fixed_len, uint64_t tgt,
                          uint64_t table, const struct wire_reject_rules *wr, uint16_t key_len,
                          struct mw_key_op *out)
{
    if (key_len == 0 || (uint64_t)fixed_len + key_len != len)
        return CRAM_REQUEST_FORMAT_ERROR;
    cram_status st = mw_rules(wr, &out->rules);
    if (st != CRAM_OK)
        return st;
    out->target_server_id = tgt;
    out->table_id = table;
    out->key = buf + fixed_len;
    out->key_len = key_len;
    return CRAM_OK;
}

cram_status mw_parse_read(const uint8_t *buf, uint32_t len, struct mw_key_op *out)
{
    struct wire_read_req r;
    cram_status st = fixed(buf, len, sizeof r, WIRE_OP_READ, &r);
    if (st != CRAM_OK)
        return st;
    return key_op(buf, len, sizeof r, r.tgt.target_server_id, r.table_id, &r.rules, r.key_len, out);
}

cram_status mw_parse_remove(const uint8_t *buf, uint32_t len, struct mw_key_op *out)
{
    struct wire_remove_req r;
    cram_status st = fixed(buf, len, sizeof r, WIRE_OP_REMOVE, &r);
    if (st != CRAM_OK)
        return st;
    return key_op(buf, len, sizeof r, r.tgt.target_server_id, r.table_id, &r.rules, r.key_len, out);
}

cram_status mw_parse_write(const uint8_t *buf, uint32_t len, uint32_t max_value, struct mw_write *out)
{
    struct wire_write_req r;
    cram_status st = fixed(buf, len, sizeof r, WIRE_OP_WRITE, &r);
    if (st != CRAM_OK)
        return st;
    if (r.key_len == 0 || (uint64_t)sizeof r + r.key_len + r.value_len != len)
        return CRAM_REQUEST_FORMAT_ERROR;
    if ((st = mw_rules(&r.rules, &out->rules)) != CRAM_OK)
        return st;
    if (r.value_len > max_value)
        return CRAM_REQUEST_TOO_LARGE;
    out->target_server_id = r.tgt.target_server_id;
    out->table_id = r.table_id;
    out->key = buf + sizeof r;
    out->key_len = r.key_len;
    out->value = out->key + r.key_len;
    out->value_len = r.value_len;
    return CRAM_OK;
}

cram_status mw_parse_incr(const uint8_t *buf, uint32_t len, struct mw_incr *out)
{
    struct wire_incr_req r;
    cram_status st = fixed(buf, len, sizeof r, WIRE_OP_INCREMENT, &r);
    if (st != CRAM_OK)
        return st;
    if (r.key_len == 0 || (uint64_t)sizeof r + r.key_len != len)
        return CRAM_REQUEST_FORMAT_ERROR;
    if ((st = mw_rules(&r.rules, &out->rules)) != CRAM_OK)
        return st;
    out->target_server_id = r.tgt.target_server_id;
    out->table_id = r.table_id;
    out->key = buf + sizeof r;
    out->key_len = r.key_len;
    out->delta = r.delta;
    return CRAM_OK;
}

/* Decode the item at m->pos (bounds-checked against items_len).  Returns the
 * item's total length, or 0 if it is malformed. */
static uint64_t multi_item(const struct mw_multi *m, uint32_t pos, struct mw_multi_item *it)
{
    uint64_t room = (uint64_t)m->items_len - pos;
    const uint8_t *p = m->items + pos;
    struct wire_reject_rules wr;
    uint64_t total;
    if (m->opcode == WIRE_OP_MULTI_WRITE) {
        struct wire_multi_write_item w;
        if (room < sizeof w)
            return 0;
        memcpy(&w, p, sizeof w);
        total = (uint64_t)sizeof w + w.key_len + w.value_len;
        if (w.key_len == 0 || total > room)
            return 0;
        it->table_id = w.table_id;
        wr = w.rules;
        it->key = p + sizeof w;
        it->key_len = w.key_len;
        it->value = it->key + w.key_len;
        it->value_len = w.value_len;
    } else {
        struct wire_multi_read_item r;   /* also the MULTI_REMOVE item */
        if (room < sizeof r)
            return 0;
        memcpy(&r, p, sizeof r);
        total = (uint64_t)sizeof r + r.key_len;
        if (r.key_len == 0 || total > room)
            return 0;
        it->table_id = r.table_id;
        wr = r.rules;
        it->key = p + sizeof r;
        it->key_len = r.key_len;
        it->value = NULL;
        it->value_len = 0;
    }
    if (mw_rules(&wr, &it->rules) != CRAM_OK)
        return 0;
    it->status = it->value_len > m->max_value ? CRAM_REQUEST_TOO_LARGE : CRAM_OK;
    return total;
}

cram_status mw_parse_multi(const uint8_t *buf, uint32_t len, uint32_t max_value, struct mw_multi *out)
{
    struct wire_multi_req r;
    if (buf == NULL || len < sizeof r)
        return CRAM_REQUEST_FORMAT_ERROR;
    memcpy(&r, buf, sizeof r);
    if (r.hdr.opcode != WIRE_OP_MULTI_READ && r.hdr.opcode != WIRE_OP_MULTI_WRITE &&
        r.hdr.opcode != WIRE_OP_MULTI_REMOVE)
        return CRAM_REQUEST_FORMAT_ERROR;
    if (r.count == 0 || r.count > WIRE_MAX_MULTI)
        return CRAM_REQUEST_FORMAT_ERROR;
    out->target_server_id = r.tgt.target_server_id;
    out->opcode = r.hdr.opcode;
    out->count = r.count;
    out->items = buf + sizeof r;
    out->items_len = len - (uint32_t)sizeof r;
    out->max_value = max_value;
    out->pos = 0;
    /* walk once: every item well-formed, and they end exactly at len */
    uint32_t pos = 0;
    struct mw_multi_item it;
    for (uint32_t i = 0; i < r.count; i++) {
        uint64_t n = multi_item(out, pos, &it);
        if (n == 0)
            return CRAM_REQUEST_FORMAT_ERROR;
        pos += (uint32_t)n;
    }
    if (pos != out->items_len)
        return CRAM_REQUEST_FORMAT_ERROR;
    return CRAM_OK;
}

int mw_multi_next(struct mw_multi *m, struct mw_multi_item *it)
{
    if (m->pos >= m->items_len)
        return -1;
    uint64_t n = multi_item(m, m->pos, it);
    if (n == 0)
        return -1;
    m->pos += (uint32_t)n;
    return 0;
}

cram_status mw_parse_enum(const uint8_t *buf, uint32_t len, struct mw_enum *out)
{
    struct wire_enum_req r;
    cram_status st = fixed(buf, len, sizeof r, WIRE_OP_ENUMERATE, &r);
    if (st != CRAM_OK)
        return st;
    if (len != sizeof r || r.tablet_start > r.tablet_end)
        return CRAM_REQUEST_FORMAT_ERROR;
    out->target_server_id = r.tgt.target_server_id;
    out->table_id = r.table_id;
    out->tablet_start = r.tablet_start;
    out->tablet_end = r.tablet_end;
    out->cursor = r.cursor;
    out->max_bytes = r.max_bytes;
    return CRAM_OK;
}
