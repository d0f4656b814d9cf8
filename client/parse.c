/*
 * parse.c -- the parts of libcram that need no network: routing a key hash
 * to a tablet, planning multi-op messages, and validating every response
 * before anything in it is used.  A malformed response makes a parser
 * return -1; the callers turn that into CRAM_INTERNAL_ERROR, never a crash.
 */
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"

int cl_route(const struct cl_table *t, uint64_t hash)
{
    size_t lo = 0;
    size_t hi = t->n;

    /* last tablet with start <= hash */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->t[mid].start <= hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return -1;
    if (hash > t->t[lo - 1].end)
        return -1;
    return (int)(lo - 1);
}

static int cl_tablet_cmp(const void *a, const void *b)
{
    const struct cl_tablet *x = a;
    const struct cl_tablet *y = b;

    return x->start < y->start ? -1 : x->start > y->start;
}

int cl_table_normalize(struct cl_table *t)
{
    if (t->n == 0)
        return 0;
    qsort(t->t, t->n, sizeof t->t[0], cl_tablet_cmp);
    for (size_t i = 0; i < t->n; i++) {
        if (t->t[i].start > t->t[i].end)
            return -1;
        if (i > 0 && t->t[i].start <= t->t[i - 1].end)
            return -1;
    }
    return 0;
}

/* Preference rank of a locator (smaller = tried first): the protocols named
 * in CRAM_TRANSPORT ("xdp", or a list such as "rdma,xdp"), in that order;
 * then tcp, which works everywhere; then every other, as advertised. */
static int cl_loc_rank(const char *p, size_t len, const char *pref)
{
    const char *colon = memchr(p, ':', len);
    size_t plen = colon ? (size_t)(colon - p) : len;
    int rank = 0;

    while (pref && *pref) {
        const char *end = strchr(pref, ',');
        size_t n = end ? (size_t)(end - pref) : strlen(pref);
        if (n > 0 && n == plen && strncmp(pref, p, n) == 0)
            return rank;
        rank++;
        if (!end)
            break;
        pref = end + 1;
    }
    if (plen == 3 && strncmp(p, "tcp", 3) == 0)
        return 100;
    return 101;
}

#define CL_MAX_CANDIDATES 16

int cl_pick_locator(char *const *locs, size_t n, char *out, size_t outlen)
{
    struct { const char *p; size_t len; int rank; } c[CL_MAX_CANDIDATES];
    size_t nc = 0;
    const char *pref = getenv("CRAM_TRANSPORT");

    for (size_t i = 0; i < n; i++) {
        const char *p = locs[i];
        if (!p)
            continue;
        while (*p) {
            const char *end = strchr(p, ';');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            while (len > 0 && p[0] == ' ') {
                p++;
                len--;
            }
            if (len > 0 && len < outlen && nc < CL_MAX_CANDIDATES) {
                /* stable insertion by rank: equal ranks keep the advertised order */
                int rank = cl_loc_rank(p, len, pref);
                size_t k = nc++;
                while (k > 0 && c[k - 1].rank > rank) {
                    c[k] = c[k - 1];
                    k--;
                }
                c[k].p = p;
                c[k].len = len;
                c[k].rank = rank;
            }
            if (!end)
                break;
            p = end + 1;
        }
    }
    if (nc == 0)
        return -1;
    /* as many whole locators as fit, the preferred one first */
    size_t off = 0;
    for (size_t i = 0; i < nc; i++) {
        size_t need = (off ? 1 : 0) + c[i].len;
        if (off + need >= outlen)
            break;
        if (off)
            out[off++] = ';';
        memcpy(out + off, c[i].p, c[i].len);
        off += c[i].len;
    }
    out[off] = '\0';
    return 0;
}

void cl_rules_to_wire(const cram_reject_rules *in, struct wire_reject_rules *out)
{
    memset(out, 0, sizeof *out);
    if (!in)
        return;
    out->given_version = in->given_version;
    out->doesnt_exist = in->doesnt_exist ? 1 : 0;
    out->exists = in->exists ? 1 : 0;
    out->version_le_given = in->version_le_given ? 1 : 0;
    out->version_ne_given = in->version_ne_given ? 1 : 0;
}

/* ---- responses ---------------------------------------------------------- */

static int cl_status_from_wire(int32_t v, cram_status *st)
{
    if (v < 0 || v > CRAM_STATUS_MAX)
        return -1;
    *st = (cram_status)v;
    return 0;
}

int cl_parse_status(const uint8_t *resp, uint32_t len, cram_status *st)
{
    struct wire_resp_hdr h;

    if (!resp || len < sizeof h)
        return -1;
    memcpy(&h, resp, sizeof h);
    return cl_status_from_wire(h.status, st);
}

int cl_parse_read(const uint8_t *resp, uint32_t len, cram_status *st, uint64_t *version,
                  const uint8_t **value, uint32_t *value_len)
{
    struct wire_read_resp r;

    *version = 0;
    *value = NULL;
    *value_len = 0;
    if (cl_parse_status(resp, len, st) != 0)
        return -1;
    if (len < sizeof r) {
        /* only a bare header is allowed, and only for failures */
        return (*st != CRAM_OK && len == sizeof(struct wire_resp_hdr)) ? 0 : -1;
    }
    memcpy(&r, resp, sizeof r);
    *version = r.version;
    if (*st != CRAM_OK)
        return 0;
    if (r.value_len > len - sizeof r || len - sizeof r != r.value_len)
        return -1;
    *value = resp + sizeof r;
    *value_len = r.value_len;
    return 0;
}

int cl_parse_write(const uint8_t *resp, uint32_t len, cram_status *st, uint64_t *version)
{
    struct wire_write_resp r;

    *version = 0;
    if (cl_parse_status(resp, len, st) != 0)
        return -1;
    if (len < sizeof r)
        return (*st != CRAM_OK && len == sizeof(struct wire_resp_hdr)) ? 0 : -1;
    if (len != sizeof r)
        return -1;
    memcpy(&r, resp, sizeof r);
    *version = r.version;
    return 0;
}

int cl_parse_incr(const uint8_t *resp, uint32_t len, cram_status *st, uint64_t *version,
                  int64_t *new_value)
{
    struct wire_incr_resp r;

    *version = 0;
    *new_value = 0;
    if (cl_parse_status(resp, len, st) != 0)
        return -1;
    if (len < sizeof r) {
        if (*st == CRAM_OK)
            return -1;
        /* a failure may carry the write-style body with the version */
        if (len == sizeof(struct wire_write_resp)) {
            struct wire_write_resp w;
            memcpy(&w, resp, sizeof w);
            *version = w.version;
            return 0;
        }
        return len == sizeof(struct wire_resp_hdr) ? 0 : -1;
    }
    if (len != sizeof r)
        return -1;
    memcpy(&r, resp, sizeof r);
    *version = r.version;
    *new_value = r.new_value;
    return 0;
}

int cl_parse_multi(const uint8_t *resp, uint32_t len, int is_read, uint32_t count,
                   cram_status *st, const uint8_t **items)
{
    struct wire_multi_resp h;
    size_t off = sizeof h;

    *items = NULL;
    if (cl_parse_status(resp, len, st) != 0)
        return -1;
    if (*st != CRAM_OK)
        return 0;       /* call-level failure: the body is not used */
    if (len < sizeof h)
        return -1;
    memcpy(&h, resp, sizeof h);
    if (h.count != count)
        return -1;
    for (uint32_t i = 0; i < count; i++) {
        struct wire_multi_resp_item it;
        cram_status ist;
        if (len - off < sizeof it)
            return -1;
        memcpy(&it, resp + off, sizeof it);
        off += sizeof it;
        if (cl_status_from_wire(it.status, &ist) != 0)
            return -1;
        if (it.value_len != 0) {
            if (!is_read || ist != CRAM_OK)
                return -1;
            if (it.value_len > len - off)
                return -1;
            off += it.value_len;
        }
    }
    if (off != len)
        return -1;
    *items = resp + sizeof h;
    return 0;
}

int cl_parse_enum(const uint8_t *resp, uint32_t len, cram_status *st, uint32_t *count,
                  uint64_t *next_cursor, int *done, const uint8_t **items)
{
    struct wire_enum_resp h;
    size_t off = sizeof h;

    *count = 0;
    *next_cursor = 0;
    *done = 0;
    *items = NULL;
    if (cl_parse_status(resp, len, st) != 0)
        return -1;
    if (*st != CRAM_OK)
        return 0;
    if (len < sizeof h)
        return -1;
    memcpy(&h, resp, sizeof h);
    if (h.done > 1)
        return -1;
    for (uint32_t i = 0; i < h.count; i++) {
        struct wire_enum_item it;
        if (len - off < sizeof it)
            return -1;
        memcpy(&it, resp + off, sizeof it);
        off += sizeof it;
        if (it.key_len == 0)
            return -1;
        if ((size_t)it.key_len + it.value_len > len - off)
            return -1;
        off += (size_t)it.key_len + it.value_len;
    }
    if (off != len)
        return -1;
    *count = h.count;
    *next_cursor = h.next_cursor;
    *done = h.done;
    *items = resp + sizeof h;
    return 0;
}

/* ---- multi-op planning ------------------------------------------------ */

size_t cl_multi_item_req_bytes(int kind, const cram_multi_op *op)
{
    if (kind == CL_MULTI_WRITE)
        return sizeof(struct wire_multi_write_item) + op->key_len + op->value_len;
    return sizeof(struct wire_multi_read_item) + op->key_len;
}

size_t cl_multi_item_resp_bytes(int kind, const cram_multi_op *op)
{
    size_t b = sizeof(struct wire_multi_resp_item);

    /* A read's value is unknown before it arrives: the caller's buffer size
     * is the estimate (a larger value makes the server's response bigger;
     * see the REQUEST_TOO_LARGE handling in multi.c). */
    if (kind == CL_MULTI_READ)
        b += op->buf_len < CRAM_MAX_VALUE_LEN ? op->buf_len : CRAM_MAX_VALUE_LEN;
    return b;
}

static int cl_dest_cmp(const void *a, const void *b, void *arg)
{
    const uint32_t *dest = arg;
    uint32_t x = *(const uint32_t *)a;
    uint32_t y = *(const uint32_t *)b;

    if (dest[x] != dest[y])
        return dest[x] < dest[y] ? -1 : 1;
    return x < y ? -1 : x > y;      /* keep the caller's order within a group */
}

size_t cl_multi_plan(int kind, const cram_multi_op *ops, const uint32_t *idx, size_t n,
                     const uint32_t *dest, size_t max_bytes, uint32_t max_items,
                     uint32_t *order, size_t *norder, struct cl_batch *batches,
                     uint32_t *too_large, size_t *ntoo_large)
{
    size_t hdr_req = sizeof(struct wire_multi_req);
    size_t hdr_resp = sizeof(struct wire_multi_resp);
    size_t no = 0;
    size_t nt = 0;
    size_t nb = 0;

    for (size_t k = 0; k < n; k++) {
        const cram_multi_op *op = &ops[idx[k]];
        if (hdr_req + cl_multi_item_req_bytes(kind, op) > max_bytes ||
            hdr_resp + cl_multi_item_resp_bytes(kind, op) > max_bytes) {
            if (too_large)
                too_large[nt] = idx[k];
            nt++;
            continue;
        }
        order[no++] = idx[k];
    }
    qsort_r(order, no, sizeof order[0], cl_dest_cmp, (void *)dest);

    size_t req = 0;
    size_t resp = 0;
    for (size_t k = 0; k < no; k++) {
        const cram_multi_op *op = &ops[order[k]];
        size_t rq = cl_multi_item_req_bytes(kind, op);
        size_t rs = cl_multi_item_resp_bytes(kind, op);
        struct cl_batch *b = nb ? &batches[nb - 1] : NULL;
        if (!b || b->dest != dest[order[k]] || b->count >= max_items ||
            req + rq > max_bytes || resp + rs > max_bytes) {
            b = &batches[nb++];
            b->dest = dest[order[k]];
            b->first = (uint32_t)k;
            b->count = 0;
            req = hdr_req;
            resp = hdr_resp;
        }
        b->count++;
        req += rq;
        resp += rs;
        b->req_bytes = req;
    }
    *norder = no;
    if (ntoo_large)
        *ntoo_large = nt;
    return nb;
}
