/*
 * fuzz_xdp_proto.c -- the xdp: transport's protocol engine (transport/
 * xdp_proto.h): header decoding, reassembly, acknowledgements, windows,
 * retransmission and peer bookkeeping, in memory (no sockets).
 *
 * Per input: a client engine (nonce 0x1111, 10.0.0.1:24000) and a server
 * engine (nonce 0x2222, 10.0.0.2:24001), fragment size 256; the client opens
 * a channel (nonce 0xabcdef) and calls two requests (8 and 1000 bytes); the
 * server echoes every request.  Packets the engines send go to a queue.
 * Each FUZZ_SEP-separated part of the input is then
 *   byte 0: bit 0 = inject into the server (from the client's address) or
 *           the client (from the server's); bits 1-3 = queued engine packets
 *           to deliver first; bits 4-7 = time step, 100 us << n (up to 3.2 s,
 *           so retransmission and dead-peer timeouts are reached)
 *   rest:   one UDP payload (56-byte header + payload).
 * Oracle: no crash, sanitizer report, leak or assertion; every call
 * completes exactly once (by the end, engine destruction completes the
 * rest); every request the server sees fits WIRE_MAX_MESSAGE.
 */
#include <stdlib.h>
#include "common/wire.h"
#include "tests/fuzz/fuzz_common.h"
#include "transport/xdp_proto.h"

#define FZ_FS 256u
#define FZ_QMAX 4096u

struct fz_pkt {
    int dst;                    /* 0 client, 1 server */
    uint16_t lport;
    uint32_t len;
    uint8_t *data;
};

struct fz_net {
    struct xp_engine *eng[2];
    struct xp_addr addr[2];
    struct fz_pkt q[FZ_QMAX];
    uint32_t qhead, qlen;
    uint64_t now;
    int done[2];
};

static struct fz_net N;

static int fz_xmit(void *ctx, const struct xp_addr *to, uint16_t lport, const uint8_t *hdr,
                   const uint8_t *pl, uint32_t plen)
{
    (void)ctx;
    (void)lport;
    if (N.qlen == FZ_QMAX)
        return -1;                      /* TX path full: the engine must cope */
    struct fz_pkt *p = &N.q[(N.qhead + N.qlen) % FZ_QMAX];
    p->data = malloc(XP_HDR_LEN + plen);
    if (p->data == NULL)
        return -1;
    p->dst = to->ip == N.addr[1].ip ? 1 : 0;
    p->lport = to->port;
    p->len = XP_HDR_LEN + plen;
    memcpy(p->data, hdr, XP_HDR_LEN);
    if (plen)
        memcpy(p->data + XP_HDR_LEN, pl, plen);
    N.qlen++;
    return 0;
}

static void fz_request(void *ctx, struct xp_srpc *r, uint16_t lport, const uint8_t *req, uint32_t len)
{
    (void)ctx;
    (void)lport;
    if (len > WIRE_MAX_MESSAGE)
        abort();
    if (len > 0)
        (void)((volatile const uint8_t *)req)[len - 1];
    struct iovec iov = { (void *)req, len };
    xp_reply(r, &iov, 1, N.now);
}

static const struct xp_ops fz_ops = { fz_xmit, fz_request };

static void fz_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    int *d = arg;
    (void)st;
    if ((*d)++ != 0)
        abort();                        /* completed twice */
    if (st == CRAM_OK && len > 0)
        (void)((volatile const uint8_t *)resp)[len - 1];
}

/* Deliver up to n queued packets (each to its engine, from the other). */
static void fz_deliver(uint32_t n)
{
    while (n-- > 0 && N.qlen > 0) {
        struct fz_pkt p = N.q[N.qhead];
        N.qhead = (N.qhead + 1) % FZ_QMAX;
        N.qlen--;
        xp_input(N.eng[p.dst], &N.addr[!p.dst], p.lport, p.data, p.len, N.now);
        free(p.data);
    }
}

static void fz_part(void *arg, const uint8_t *p, size_t n)
{
    (void)arg;
    if (n < 1)
        return;
    uint8_t ctl = p[0];
    int dst = ctl & 1;
    fz_deliver((ctl >> 1) & 7);
    N.now += 100000ull << (ctl >> 4);
    uint8_t *pkt = malloc(n - 1 ? n - 1 : 1);
    if (pkt == NULL)
        return;
    memcpy(pkt, p + 1, n - 1);
    xp_input(N.eng[dst], &N.addr[!dst], N.addr[dst].port, pkt, n - 1, N.now);
    free(pkt);
    xp_tick(N.eng[0], N.now);
    xp_tick(N.eng[1], N.now);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    memset(&N, 0, sizeof N);
    N.now = 1000000000ull;
    for (int i = 0; i < 2; i++) {
        N.addr[i].ip = 0x0a000001u + (uint32_t)i;
        N.addr[i].port = (uint16_t)(24000 + i);
        N.eng[i] = xp_engine_create(&fz_ops, NULL, FZ_FS, 0x1111u * (uint64_t)(i + 1));
        if (N.eng[i] == NULL)
            abort();
    }
    struct xp_chan *c = xp_chan_open(N.eng[0], &N.addr[1], N.addr[0].port, 0xabcdefu);
    if (c == NULL)
        abort();
    static uint8_t big[1000];
    struct iovec small = { (void *)"request!", 8 };
    struct iovec large = { big, sizeof big };
    if (xp_call(c, &small, 1, 0, fz_done, &N.done[0], N.now) != CRAM_OK)
        N.done[0] = 1;
    if (xp_call(c, &large, 1, 0, fz_done, &N.done[1], N.now) != CRAM_OK)
        N.done[1] = 1;
    xp_flush(N.eng[0], N.now);

    fuzz_split(data, size, fz_part, NULL);

    fz_deliver(64);                     /* let the exchange settle a little */
    xp_chan_close(c);
    for (int i = 0; i < 2; i++)
        if (N.done[i] != 1)
            abort();                    /* close completes every call exactly once */
    xp_engine_destroy(N.eng[0]);
    xp_engine_destroy(N.eng[1]);
    while (N.qlen > 0) {
        free(N.q[N.qhead].data);
        N.qhead = (N.qhead + 1) % FZ_QMAX;
        N.qlen--;
    }
    return 0;
}
