/* segment.c -- entry format, appends and verifying iteration (see segment.h). */
#include "common/segment.h"

#include <string.h>
#include "common/crc32c.h"

void seg_writer_init(struct seg_writer *w, void *base, uint32_t capacity)
{
    w->base = base;
    w->capacity = capacity;
    w->used = 0;
    w->cert_crc = 0;
    w->entries = 0;
}

int64_t seg_append(struct seg_writer *w, uint8_t type, const struct iovec *parts, int n)
{
    uint64_t body = 0;
    for (int i = 0; i < n; i++)
        body += parts[i].iov_len;
    uint64_t need = seg_entry_size(body);
    if (need > (uint64_t)w->capacity - w->used)
        return -1;

    uint32_t off = w->used;
    struct seg_entry_hdr h = { .type = type, .flags = 0, .reserved = 0,
                               .length = (uint32_t)body, .crc32c = 0 };
    uint32_t crc = crc32c(0, &h, sizeof h);
    uint8_t *p = w->base + off + sizeof h;
    for (int i = 0; i < n; i++) {
        if (parts[i].iov_len == 0)
            continue;
        memcpy(p, parts[i].iov_base, parts[i].iov_len);
        /* hash the destination: it is hot in cache right after the copy */
        crc = crc32c(crc, p, parts[i].iov_len);
        p += parts[i].iov_len;
    }
    h.crc32c = crc;
    memcpy(w->base + off, &h, sizeof h);
    w->cert_crc = crc32c(w->cert_crc, &h, sizeof h);
    w->used = off + (uint32_t)need;
    w->entries++;
    return off;
}

struct seg_certificate seg_writer_certificate(const struct seg_writer *w)
{
    struct seg_certificate c = { .length = w->used, .crc32c = 0 };
    c.crc32c = crc32c(w->cert_crc, &c.length, sizeof c.length);
    return c;
}

bool seg_entry_check(const struct seg_entry_hdr *h)
{
    struct seg_entry_hdr z;
    memcpy(&z, h, sizeof z);
    uint32_t want = z.crc32c;
    z.crc32c = 0;
    uint32_t crc = crc32c(0, &z, sizeof z);
    crc = crc32c(crc, (const uint8_t *)h + sizeof z, z.length);
    return crc == want;
}

void seg_iter_init(struct seg_iter *it, const void *base, uint32_t length)
{
    it->base = base;
    it->length = length;
    it->pos = 0;
    it->cert_crc = 0;
    it->status = SEG_ITER_OK;
}

int seg_iter_next(struct seg_iter *it, struct seg_entry *ent)
{
    if (it->status != SEG_ITER_OK)
        return it->status;
    if (it->pos == it->length)
        return it->status = SEG_ITER_END;
    if ((uint64_t)it->length - it->pos < sizeof(struct seg_entry_hdr))
        return it->status = SEG_ITER_CORRUPT;
    struct seg_entry_hdr h;
    memcpy(&h, it->base + it->pos, sizeof h);
    if (h.type == SEG_ENTRY_INVALID || h.type > SEG_ENTRY_TYPE_MAX ||
        (uint64_t)h.length > (uint64_t)it->length - it->pos - sizeof h)
        return it->status = SEG_ITER_CORRUPT;
    if (!seg_entry_check((const struct seg_entry_hdr *)(it->base + it->pos)))
        return it->status = SEG_ITER_CORRUPT;
    it->cert_crc = crc32c(it->cert_crc, &h, sizeof h);
    ent->type = h.type;
    ent->offset = it->pos;
    ent->length = h.length;
    ent->body = it->base + it->pos + sizeof h;
    it->pos += (uint32_t)(sizeof h + h.length);
    return SEG_ITER_OK;
}

bool seg_verify(const void *buf, uint32_t buf_len, const struct seg_certificate *cert)
{
    if (cert->length > buf_len)
        return false;
    struct seg_iter it;
    struct seg_entry e;
    seg_iter_init(&it, buf, cert->length);
    int st;
    bool first = true;
    while ((st = seg_iter_next(&it, &e)) == SEG_ITER_OK) {
        if (first) {
            struct seg_header_body hb;
            if (e.type != SEG_ENTRY_SEGHDR || e.length != sizeof hb)
                return false;
            memcpy(&hb, e.body, sizeof hb);
            if (hb.magic != SEG_MAGIC || hb.format != SEG_FORMAT_VERSION)
                return false;
            first = false;
        }
    }
    if (st != SEG_ITER_END || first)
        return false;
    uint32_t crc = crc32c(it.cert_crc, &cert->length, sizeof cert->length);
    return crc == cert->crc32c;
}

bool seg_parse_object(const struct seg_entry *e, const struct seg_object **obj,
                      const uint8_t **key, const uint8_t **value, uint32_t *value_len)
{
    if (e->type != SEG_ENTRY_OBJECT || e->length < sizeof(struct seg_object))
        return false;
    const struct seg_object *o = (const struct seg_object *)e->body;
    if ((uint64_t)sizeof *o + o->key_len > e->length)
        return false;
    *obj = o;
    *key = e->body + sizeof *o;
    *value = *key + o->key_len;
    *value_len = e->length - (uint32_t)sizeof *o - o->key_len;
    return true;
}

bool seg_parse_tombstone(const struct seg_entry *e, const struct seg_tombstone **ts,
                         const uint8_t **key)
{
    if (e->type != SEG_ENTRY_TOMBSTONE || e->length < sizeof(struct seg_tombstone))
        return false;
    const struct seg_tombstone *t = (const struct seg_tombstone *)e->body;
    if ((uint64_t)sizeof *t + t->key_len != e->length)
        return false;
    *ts = t;
    *key = e->body + sizeof *t;
    return true;
}
