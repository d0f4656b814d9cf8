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

/* ---- region table ----------------------------------------------------------- */

void rb_reg_init(struct rb_regtab *t)
{
    memset(t, 0, sizeof *t);
    t->free_head = UINT32_MAX;
}

void rb_reg_free(struct rb_regtab *t)
{
    free(t->e);
    free(t->sorted);
    memset(t, 0, sizeof *t);
    t->free_head = UINT32_MAX;
}

/* First position in sorted[] whose region starts above addr. */
static uint32_t upper(const struct rb_regtab *t, uintptr_t addr)
{
    uint32_t lo = 0, hi = t->nlive;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (t->e[t->sorted[mid]].addr <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int in_arena(const struct rb_regtab *t, uintptr_t a, size_t n)
{
    return t->arena_len > 0 && a >= t->arena && a - t->arena <= t->arena_len &&
           n <= t->arena_len - (a - t->arena);
}

static void key_from_odp(struct rb_regtab *t, struct rb_reg *r)
{
    for (int d = 0; d < RB_MAX_DEVS; d++)
        if (t->odp[d].addr != 0 && !(r->keyed & (1u << d)) && in_arena(t, r->addr, r->len)) {
            r->lkey[d] = t->odp[d].lkey;
            r->keyed |= (uint8_t)(1u << d);
        }
}

int rb_reg_add(struct rb_regtab *t, uintptr_t addr, size_t len)
{
    if (len == 0 || addr + len < addr)
        return -1;
    uint32_t pos = upper(t, addr);
    if (pos > 0) {
        const struct rb_reg *p = &t->e[t->sorted[pos - 1]];
        if (p->addr + p->len > addr)
            return -1;                          /* overlaps its predecessor */
    }
    if (pos < t->nlive && t->e[t->sorted[pos]].addr < addr + len)
        return -1;                              /* overlaps its successor */
    if (t->free_head == UINT32_MAX) {
        uint32_t cap = t->cap ? t->cap * 2 : 64;
        struct rb_reg *ne = realloc(t->e, (size_t)cap * sizeof *ne);
        if (ne == NULL)
            return -1;
        t->e = ne;
        uint32_t *ns = realloc(t->sorted, (size_t)cap * sizeof *ns);
        if (ns == NULL)
            return -1;
        t->sorted = ns;
        for (uint32_t i = cap; i > t->cap; i--) {
            memset(&t->e[i - 1], 0, sizeof t->e[i - 1]);
            t->e[i - 1].next_free = t->free_head;
            t->free_head = i - 1;
        }
        t->cap = cap;
    }
    uint32_t idx = t->free_head;
    struct rb_reg *r = &t->e[idx];
    t->free_head = r->next_free;
    memset(r, 0, sizeof *r);
    r->addr = addr;
    r->len = len;
    r->used = 1;
    key_from_odp(t, r);
    memmove(&t->sorted[pos + 1], &t->sorted[pos], (t->nlive - pos) * sizeof t->sorted[0]);
    t->sorted[pos] = idx;
    t->nlive++;
    return (int)idx;
}

int rb_reg_lookup(const struct rb_regtab *t, uintptr_t addr)
{
    uint32_t pos = upper(t, addr);
    if (pos == 0 || t->e[t->sorted[pos - 1]].addr != addr)
        return -1;
    return (int)t->sorted[pos - 1];
}

int rb_reg_find(const struct rb_regtab *t, uintptr_t addr, size_t n, int dev)
{
    if (dev < 0 || dev >= RB_MAX_DEVS)
        return -1;
    uint32_t pos = upper(t, addr);
    if (pos == 0)
        return -1;
    uint32_t idx = t->sorted[pos - 1];
    const struct rb_reg *r = &t->e[idx];
    if (addr - r->addr > r->len || n > r->len - (addr - r->addr) || !(r->keyed & (1u << dev)))
        return -1;
    return (int)idx;
}

int rb_reg_needs_mr(const struct rb_regtab *t, int idx, int dev)
{
    const struct rb_reg *r = &t->e[idx];
    return r->used && !r->dying && !(r->keyed & (1u << dev));
}

void rb_reg_set_key(struct rb_regtab *t, int idx, int dev, uint32_t lkey, void *mr)
{
    struct rb_reg *r = &t->e[idx];
    r->lkey[dev] = lkey;
    r->mr[dev] = mr;
    r->keyed |= (uint8_t)(1u << dev);
}

static void take_mrs(struct rb_reg *r, void *mrs[RB_MAX_DEVS])
{
    for (int d = 0; d < RB_MAX_DEVS; d++)
        mrs[d] = r->mr[d];
}

static void entry_release(struct rb_regtab *t, uint32_t idx)
{
    struct rb_reg *r = &t->e[idx];
    memset(r, 0, sizeof *r);
    r->next_free = t->free_head;
    t->free_head = idx;
}

int rb_reg_remove(struct rb_regtab *t, uintptr_t addr, void *mrs[RB_MAX_DEVS])
{
    uint32_t pos = upper(t, addr);
    if (pos == 0 || t->e[t->sorted[pos - 1]].addr != addr)
        return -1;
    uint32_t idx = t->sorted[--pos];
    memmove(&t->sorted[pos], &t->sorted[pos + 1], (t->nlive - pos - 1) * sizeof t->sorted[0]);
    t->nlive--;
    struct rb_reg *r = &t->e[idx];
    if (r->inflight > 0) {
        r->dying = 1;
        t->ndying++;
        return 0;
    }
    take_mrs(r, mrs);
    entry_release(t, idx);
    return 1;
}

void rb_reg_ref(struct rb_regtab *t, int idx)
{
    t->e[idx].inflight++;
}

int rb_reg_unref(struct rb_regtab *t, int idx, void *mrs[RB_MAX_DEVS])
{
    struct rb_reg *r = &t->e[idx];
    if (r->inflight > 0)
        r->inflight--;
    if (r->inflight > 0 || !r->dying)
        return 0;
    take_mrs(r, mrs);
    t->ndying--;
    entry_release(t, (uint32_t)idx);
    return 1;
}

void rb_reg_set_arena(struct rb_regtab *t, uintptr_t addr, size_t len)
{
    t->arena = addr;
    t->arena_len = len;
}

void rb_reg_set_odp(struct rb_regtab *t, int dev, uint32_t lkey, void *mr)
{
    t->odp[dev] = (struct rb_odp){ t->arena, t->arena_len, lkey, mr };
    for (uint32_t i = 0; i < t->nlive; i++)
        key_from_odp(t, &t->e[t->sorted[i]]);
}

/* ---- holds -------------------------------------------------------------------- */

void rb_holds_init(struct rb_holds *h)
{
    memset(h, 0, sizeof *h);
}

void rb_holds_free(struct rb_holds *h)
{
    free(h->q);
    memset(h, 0, sizeof *h);
}

static struct rb_hold_bucket *bucket(const struct rb_holds *h, uint32_t i)
{
    return &h->q[(h->head + i) % h->cap];
}

int rb_holds_add(struct rb_holds *h, uint64_t tag)
{
    /* the last bucket whose tag is <= tag: the usual case is the newest */
    uint32_t i = h->count;
    while (i > 0 && bucket(h, i - 1)->tag > tag)
        i--;
    if (i > 0 && (bucket(h, i - 1)->tag == tag || i < h->count)) {
        /* same tag, or (tags out of order) an older bucket: counting it
         * there keeps the memory held at least as long */
        bucket(h, i - 1)->n++;
        return 0;
    }
    if (h->count == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 16;
        struct rb_hold_bucket *nq = malloc((size_t)cap * sizeof *nq);
        if (nq == NULL)
            return -1;
        for (uint32_t k = 0; k < h->count; k++)
            nq[k] = *bucket(h, k);
        free(h->q);
        h->q = nq;
        h->cap = cap;
        h->head = 0;
    }
    if (i == 0 && h->count > 0) {           /* older than everything: new front */
        h->head = (h->head + h->cap - 1) % h->cap;
    }
    struct rb_hold_bucket *b = bucket(h, i == 0 ? 0 : h->count);
    b->tag = tag;
    b->n = 1;
    h->count++;
    return 0;
}

void rb_holds_drop(struct rb_holds *h, uint64_t tag)
{
    /* the newest non-empty bucket whose tag is <= tag (where rb_holds_add
     * counted it, or an older one: for every x, the buckets up to x then
     * still count at least the sends tagged up to x) */
    uint32_t i = h->count;
    while (i > 0 && (bucket(h, i - 1)->tag > tag || bucket(h, i - 1)->n == 0))
        i--;
    if (i == 0)
        return;                             /* never added: ignore */
    bucket(h, i - 1)->n--;
    while (h->count > 0 && bucket(h, 0)->n == 0) {
        h->head = (h->head + 1) % h->cap;
        h->count--;
    }
}

uint64_t rb_holds_oldest(const struct rb_holds *h)
{
    return h->count ? bucket(h, 0)->tag : 0;
}

int rb_holds_publish(struct rb_holds *h, uint64_t *oldest)
{
    uint64_t o = rb_holds_oldest(h);
    if (o == h->published)
        return 0;
    h->published = o;
    *oldest = o;
    return 1;
}

/* ---- outgoing (plans) ------------------------------------------------------- */

int rb_plan(const struct iovec *iov, int iovcnt, uint32_t off, uint32_t n,
            const struct rb_regtab *t, int dev, struct rb_sge *out)
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
        int rg = t != NULL ? rb_reg_find(t, (uintptr_t)p, take, dev) : -1;
        if (rg < 0 && k > 0 && out[k - 1].addr == 0 && out[k - 1].src + out[k - 1].len == p) {
            out[k - 1].len += take;                 /* contiguous copy: merge */
        } else {
            if (k == RB_MAX_SGE - 1)
                return -1;
            out[k].addr = rg >= 0 ? (uintptr_t)p : 0;
            out[k].src = p;
            out[k].len = take;
            out[k].lkey = rg >= 0 ? t->e[rg].lkey[dev] : 0;
            out[k].reg = rg;
            k++;
        }
        off += take;
        n -= take;
        pos += ilen;
    }
    return n == 0 ? k : -1;
}

int rb_plan_window(const struct rb_sge *m, int nm, uint32_t off, uint32_t n, struct rb_sge *out)
{
    int k = 0;
    uint64_t pos = 0;
    for (int i = 0; i < nm && n > 0; i++) {
        if (pos + m[i].len <= off) {
            pos += m[i].len;
            continue;
        }
        uint32_t skip = (uint32_t)(off - pos);
        uint32_t take = m[i].len - skip < n ? m[i].len - skip : n;
        out[k] = m[i];
        out[k].src = m[i].src + skip;
        if (m[i].addr != 0)
            out[k].addr = m[i].addr + skip;
        out[k].len = take;
        k++;
        off += take;
        n -= take;
        pos += m[i].len;
    }
    return n == 0 ? k : -1;
}

int rb_sgl_build(const struct rb_sge *plan, int np, uint8_t *slot, uint32_t slot_lkey,
                 struct rb_sgl *out, uint32_t *slot_used)
{
    int ns = 1;
    uint32_t used = RB_HDR_LEN;
    out[0] = (struct rb_sgl){ (uintptr_t)slot, RB_HDR_LEN, slot_lkey };
    for (int i = 0; i < np; i++) {
        if (plan[i].addr != 0) {
            out[ns++] = (struct rb_sgl){ plan[i].addr, plan[i].len, plan[i].lkey };
            continue;
        }
        if (plan[i].len)
            memcpy(slot + used, plan[i].src, plan[i].len);
        if (ns == 1)                            /* still contiguous with the header */
            out[0].len += plan[i].len;
        else if (out[ns - 1].lkey == slot_lkey && out[ns - 1].addr + out[ns - 1].len == (uintptr_t)(slot + used))
            out[ns - 1].len += plan[i].len;     /* follows the previous copy in the slot */
        else
            out[ns++] = (struct rb_sgl){ (uintptr_t)(slot + used), plan[i].len, slot_lkey };
        used += plan[i].len;
    }
    *slot_used = used;
    return ns;
}

/* ---- per-send references -------------------------------------------------------- */

int rb_tx_hold(struct rb_txref *x, struct rb_regtab *t, struct rb_holds *h,
               const struct rb_sge *plan, int np, uint64_t tag)
{
    x->tag = 0;
    x->nreg = 0;
    int direct = 0;
    for (int i = 0; i < np; i++)
        direct |= plan[i].addr != 0;
    if (!direct)
        return 0;
    if (h != NULL && rb_holds_add(h, tag) != 0)
        return -1;
    x->tag = h != NULL ? tag : 0;
    for (int i = 0; i < np; i++)
        if (plan[i].addr != 0) {
            rb_reg_ref(t, plan[i].reg);
            x->reg[x->nreg++] = plan[i].reg;
        }
    return 0;
}

int rb_tx_release(struct rb_txref *x, struct rb_regtab *t, struct rb_holds *h,
                  void *dereg[RB_MAX_SGE * RB_MAX_DEVS])
{
    int n = 0;
    for (uint32_t i = 0; i < x->nreg; i++) {
        void *mrs[RB_MAX_DEVS];
        if (rb_reg_unref(t, x->reg[i], mrs))
            for (int d = 0; d < RB_MAX_DEVS; d++)
                if (mrs[d] != NULL)
                    dereg[n++] = mrs[d];
    }
    if (x->tag != 0 && h != NULL)
        rb_holds_drop(h, x->tag);
    x->tag = 0;
    x->nreg = 0;
    return n;
}
