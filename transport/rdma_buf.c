/*
 * rdma_buf.c -- framing, credits, receive ring, reassembly and the
 * zero-copy plan of the rdma: transport (see rdma_buf.h).  No verbs here.
 */
#include <stdlib.h>
#include <string.h>
#include "common/wire.h"
#include "transport/rdma_buf.h"

_Static_assert(RB_RX_DEPTH <= 65535, "credits travel in 16 bits");
_Static_assert(RB_BUF_SIZE > RB_HDR_LEN, "buffers hold a header and payload");

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void rb_hdr_encode(const struct rb_hdr *h, uint8_t *o)
{
    o[0] = RB_MAGIC;
    o[1] = h->type;
    o[2] = (uint8_t)h->credits;
    o[3] = (uint8_t)(h->credits >> 8);
    put32(o + 4, h->len);
    put32(o + 8, (uint32_t)h->id);
    put32(o + 12, (uint32_t)(h->id >> 32));
    put32(o + 16, h->total);
    put32(o + 20, h->off);
}

int rb_hdr_decode(const uint8_t *f, size_t n, struct rb_hdr *h)
{
    if (n < RB_HDR_LEN || f[0] != RB_MAGIC)
        return -1;
    h->type = f[1];
    h->credits = (uint16_t)(f[2] | f[3] << 8);
    h->len = get32(f + 4);
    h->id = (uint64_t)get32(f + 8) | (uint64_t)get32(f + 12) << 32;
    h->total = get32(f + 16);
    h->off = get32(f + 20);
    if (h->len != n - RB_HDR_LEN || h->len > RB_MAX_PAYLOAD)
        return -1;
    if (h->type == RB_T_CREDIT)
        return h->len == 0 ? 0 : -1;
    if (h->type != RB_T_REQ && h->type != RB_T_RESP)
        return -1;
    if (h->total > WIRE_MAX_MESSAGE || h->off > h->total || h->len > h->total - h->off)
        return -1;
    /* every frame but the last is full, so a message has one framing */
    if (h->off + h->len != h->total && h->len != RB_MAX_PAYLOAD)
        return -1;
    return 0;
}

/* ---- credits ------------------------------------------------------------- */

void rb_credits_init(struct rb_credits *c, uint32_t peer_depth)
{
    c->avail = peer_depth;
    c->to_return = 0;
}

int rb_credits_can_send(const struct rb_credits *c, int credit_frame)
{
    return credit_frame ? c->avail >= 1 : c->avail >= 2;
}

uint16_t rb_credits_on_send(struct rb_credits *c)
{
    uint32_t r = c->to_return > 65535 ? 65535 : c->to_return;
    c->avail--;
    c->to_return -= r;
    return (uint16_t)r;
}

int rb_credits_grant(struct rb_credits *c, uint32_t n, uint32_t peer_depth)
{
    if (c->avail + n > peer_depth)
        return -1;
    c->avail += n;
    return 0;
}

void rb_credits_reposted(struct rb_credits *c)
{
    c->to_return++;
}

int rb_credits_want_explicit(const struct rb_credits *c, uint32_t depth)
{
    return c->to_return >= depth / 2 && rb_credits_can_send(c, 1);
}

/* ---- receive ring ---------------------------------------------------------- */

void rb_rx_init(struct rb_rxring *r, uint8_t *base, uint32_t depth)
{
    memset(r, 0, sizeof *r);
    r->base = base;
    r->depth = depth > RB_RX_DEPTH ? RB_RX_DEPTH : depth;
    for (uint32_t i = 0; i < r->depth; i++) {
        r->pending[r->npending++] = r->depth - 1 - i;
        r->state[r->depth - 1 - i] = RB_BUF_PENDING;
    }
}

uint8_t *rb_rx_complete(struct rb_rxring *r, uint64_t wr_id)
{
    if (wr_id >= r->depth || r->state[wr_id] != RB_BUF_POSTED)
        return NULL;
    r->state[wr_id] = RB_BUF_OURS;
    r->posted--;
    return r->base + wr_id * RB_BUF_SIZE;
}

void rb_rx_release(struct rb_rxring *r, uint32_t idx)
{
    if (idx < r->depth && r->state[idx] == RB_BUF_OURS && r->npending < RB_RX_DEPTH) {
        r->state[idx] = RB_BUF_PENDING;
        r->pending[r->npending++] = idx;
    }
}

uint32_t rb_rx_take(struct rb_rxring *r, uint32_t *idx, uint32_t max)
{
    uint32_t n = 0;
    while (n < max && r->npending > 0) {
        uint32_t i = r->pending[--r->npending];
        r->state[i] = RB_BUF_POSTED;
        r->posted++;
        idx[n++] = i;
    }
    return n;
}

/* ---- reassembly ------------------------------------------------------------ */

int rb_reasm_add(struct rb_reasm *r, const struct rb_hdr *h, const uint8_t *payload,
                 uint8_t **msg, uint32_t *len)
{
    struct rb_reasm_slot *s = NULL, *free_slot = NULL;
    for (int i = 0; i < RB_REASM_MAX; i++) {
        if (r->s[i].used && r->s[i].id == h->id && r->s[i].type == h->type) {
            s = &r->s[i];
            break;
        }
        if (!r->s[i].used && free_slot == NULL)
            free_slot = &r->s[i];
    }
    if (s == NULL) {
        if (h->off != 0)
            return -1;                  /* a message must start at offset 0 */
        if (h->len == h->total) {       /* single frame: no slot needed */
            *msg = malloc(h->total ? h->total : 1);
            if (*msg == NULL)
                return -1;
            if (h->len)
                memcpy(*msg, payload, h->len);
            *len = h->total;
            return 1;
        }
        if (free_slot == NULL)
            return -1;
        s = free_slot;
        s->buf = malloc(h->total);
        if (s->buf == NULL)
            return -1;
        s->used = 1;
        s->type = h->type;
        s->id = h->id;
        s->total = h->total;
        s->got = 0;
        r->bytes += h->total;
    }
    if (h->total != s->total || h->off != s->got)
        return -1;
    memcpy(s->buf + s->got, payload, h->len);
    s->got += h->len;
    if (s->got < s->total)
        return 0;
    *msg = s->buf;
    *len = s->total;
    r->bytes -= s->total;
    memset(s, 0, sizeof *s);
    return 1;
}

void rb_reasm_free(struct rb_reasm *r)
{
    for (int i = 0; i < RB_REASM_MAX; i++)
        free(r->s[i].buf);
    memset(r, 0, sizeof *r);
}

/* ---- outgoing --------------------------------------------------------------- */

uint32_t rb_nframes(uint32_t total)
{
    return total == 0 ? 1 : (total + RB_MAX_PAYLOAD - 1) / RB_MAX_PAYLOAD;
}

int rb_use_inline(uint32_t frame_len, uint32_t max_inline)
{
    return frame_len <= max_inline;
}

static const struct rb_region *find_region(const struct rb_region *regs, int nregs, uintptr_t a, uint32_t n)
{
    for (int i = 0; i < nregs; i++)
        if (a >= regs[i].addr && a - regs[i].addr <= regs[i].len && n <= regs[i].len - (a - regs[i].addr))
            return &regs[i];
    return NULL;
}

int rb_plan(const struct iovec *iov, int iovcnt, uint32_t off, uint32_t n,
            const struct rb_region *regs, int nregs, struct rb_sge *out)
{
    int k = 0;
    uint64_t pos = 0;
    for (int i = 0; i < iovcnt && n > 0; i++) {
        uint64_t ilen = iov[i].iov_len;
        if (pos + ilen <= off) {
            pos += ilen;
            continue;
        }
        uint32_t skip = off > pos ? (uint32_t)(off - pos) : 0;
        uint32_t take = (uint32_t)(ilen - skip) < n ? (uint32_t)(ilen - skip) : n;
        const uint8_t *p = (const uint8_t *)iov[i].iov_base + skip;
        const struct rb_region *rg = find_region(regs, nregs, (uintptr_t)p, take);
        if (rg == NULL && k > 0 && out[k - 1].addr == 0 && out[k - 1].src + out[k - 1].len == p) {
            out[k - 1].len += take;                 /* contiguous copy: merge */
        } else {
            if (k == RB_MAX_SGE - 1)
                return -1;
            out[k].addr = rg ? (uintptr_t)p : 0;
            out[k].src = p;
            out[k].len = take;
            out[k].lkey = rg ? rg->lkey : 0;
            k++;
        }
        off += take;
        n -= take;
        pos += ilen;
    }
    return n == 0 ? k : -1;
}
