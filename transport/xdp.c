/*
 * xdp.c -- the xdp: transport: AF_XDP sockets (libxdp's xsk API), the XDP
 * program that diverts cram's UDP ports (xdp_cram.bpf.c, embedded), and
 * Ethernet/IPv4/UDP framing around the protocol engine of xdp_proto.c.
 * See xdp.h for locators, endpoints and the polling policy.
 *
 * Everything protocol-like (fragments, acks, retransmission, duplicates,
 * windows) is in xdp_proto.c; this file only moves frames.
 *
 * Threads: an endpoint and everything on it belongs to its loop's thread.
 * Endpoints of different loops on one (interface, queue) share a UMEM
 * (struct xdp_shared, its rings under its own mutex); the process-wide
 * registry of shared UMEMs and their endpoints is guarded by xdp_reg_mu.
 */
#ifdef CRAM_HAVE_XDP

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>
#include "common/clock.h"
#include "common/log.h"
#include "common/wire.h"
#include "transport/transport_int.h"
#include "transport/xdp.h"

/* The BPF object, embedded at build time (CMake compiles xdp_cram.bpf.c). */
__asm__(".section .rodata\n"
        ".balign 8\n"
        "tp_xdp_bpf_obj:\n"
        ".incbin \"" CRAM_XDP_BPF_OBJ "\"\n"
        "tp_xdp_bpf_obj_end:\n"
        ".previous\n");
extern const unsigned char tp_xdp_bpf_obj[], tp_xdp_bpf_obj_end[];

#define XDP_FRAME_SIZE 2048u
#define XDP_RX_FRAMES 2048u            /* = fill ring = rx ring */
#define XDP_TX_FRAMES 2048u            /* = tx ring = completion ring */
#define XDP_NFRAMES (XDP_RX_FRAMES + XDP_TX_FRAMES)
#define XDP_L2L4 42u                   /* Ethernet 14 + IPv4 20 + UDP 8 */
#define XDP_RX_BATCH 64u
#define XDP_KICK_BATCH 32u
#define XDP_TICK_US 1000u
#define XDP_REORDER_MAX 8
#define XDP_MAX_SLOTS 64               /* sockets per (interface, queue) = XSKMAP size */

/* A packet the fault hook holds back (reordering). */
struct xdp_held {
    int out;                           /* 1: to send, 0: received */
    struct xp_addr peer;
    uint16_t lport;
    uint32_t len;
    uint8_t data[XDP_FRAME_SIZE];      /* received: UDP payload; to send: hdr + payload */
};

struct xdp_listener;
struct xdp_ep;

/* What all sockets on one (interface, queue) of this process share: the
 * UMEM with its fill and completion rings and TX frame pool, and the XDP
 * program with its maps.  Each loop has its own socket (and RX/TX rings) on
 * it, bound with XDP_SHARED_UMEM; the program steers each UDP port to the
 * socket that owns it.
 * Threads: mu guards fill, comp, txfree/ntxfree and tx_outstanding (the
 * endpoints of several loops use them); the registry fields (next, eps,
 * slot_used) are guarded by xdp_reg_mu; the rest is set up once. */
struct xdp_shared {
    struct xdp_shared *next;           /* xdp_reg_mu */
    struct xdp_ep *eps;                /* xdp_reg_mu: endpoints on it */
    uint8_t slot_used[XDP_MAX_SLOTS];  /* xdp_reg_mu: XSKMAP slots */
    char ifname[IF_NAMESIZE];
    int ifindex;
    uint32_t queue;
    uint32_t lip;
    uint8_t lmac[6];
    int mtu;
    pthread_mutex_t mu;
    void *area;
    struct xsk_umem *umem;
    struct xsk_ring_prod fill;
    struct xsk_ring_cons comp;
    uint64_t txfree[XDP_TX_FRAMES];
    uint32_t ntxfree, tx_outstanding;
    uint32_t rx_seeded;                /* RX frames handed to the fill ring at start */
    struct bpf_object *obj;
    int ports_fd, xsks_fd;
    uint32_t xdp_flags;
    int attached;
    int bind_flags;                    /* XDP_ZEROCOPY or XDP_COPY, fixed by the first socket */
};

struct xdp_ep {
    struct xdp_ep *next;               /* shared->eps (xdp_reg_mu) */
    struct xdp_shared *sh;
    uint32_t slot;                     /* our XSKMAP key */
    tp_loop *loop;
    char ifname[IF_NAMESIZE];
    int ifindex;
    uint32_t queue;
    uint32_t lip;                      /* our IPv4 address, network order */
    uint8_t lmac[6];
    int mtu;
    int users;                         /* listeners + sessions; the socket closes at 0 */
    int nrpcs;                         /* server rpcs handed out and not yet replied */
    int torn;                          /* socket and engine are gone */
    int teardown_queued;

    void *area;                        /* = sh->area */
    struct xsk_socket *xsk;
    struct xsk_ring_cons rx;
    struct xsk_ring_prod tx;
    uint32_t unkicked;
    uint32_t txpend;                   /* frames we sent since the pool last drained */
    uint64_t rxback[XDP_RX_BATCH * 2]; /* consumed frames waiting to go back to the fill ring */
    uint32_t nrxback;
    char mode[24];
    int zerocopy;

    struct xp_engine *eng;
    struct xdp_listener *listeners;
    uint16_t cport;                    /* client port (network order), 0 until needed */
    int cport_fd;

    struct tp_fdh fdh;
    uint64_t poller, timer;
    uint64_t next_tick, last_active;
    uint64_t rx_now;                   /* clock of the RX batch being handled (0: none) */
    uint16_t ip_id;

    double f_loss, f_reorder;
    unsigned f_seed;
    struct xdp_held *held[XDP_REORDER_MAX];
    int nheld;
    uint64_t f_drops, f_reorders, rx_frames, tx_frames, rx_bad;
};

struct xdp_listener {
    struct tp_listener head;
    struct xdp_ep *ep;
    struct xdp_listener *next;
    uint16_t port;                     /* network order */
    int fd;                            /* kernel socket reserving the port */
    tp_request_fn fn;
    void *arg;
};

struct xdp_session {
    struct tp_session head;
    struct xdp_ep *ep;
    struct xp_chan *ch;
};

struct xdp_rpc {
    struct tp_rpc head;
    struct xdp_ep *ep;
    struct xp_srpc *sr;
    char peer[24];
};

static pthread_mutex_t xdp_reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct xdp_shared *xdp_shareds; /* guarded by xdp_reg_mu */

static const struct tp_session_ops xdp_session_ops;
static const struct tp_listener_ops xdp_listener_ops;
static const struct tp_rpc_ops xdp_rpc_ops;

static void ep_update_busy(struct xdp_ep *ep);

/* ---- checksums --------------------------------------------------------- */

/* Add the 16-bit big-endian words of p (len even, but for the last piece
 * of a packet) to sum.  The one's complement sum does not depend on byte
 * order (RFC 1071), so it adds native 64-bit words with end-around carry and
 * swaps the folded 16 bits once: ~4x faster than word by word (a 200-byte
 * packet: 18 vs 60 ns), and every packet is summed twice (sent, received). */
static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t len)
{
    uint64_t s = 0, v;
    while (len >= 32) {
        uint64_t a, b, c, d;
        memcpy(&a, p, 8);
        memcpy(&b, p + 8, 8);
        memcpy(&c, p + 16, 8);
        memcpy(&d, p + 24, 8);
        unsigned __int128 t = (unsigned __int128)s + a + b + c + d;
        uint64_t hi = (uint64_t)(t >> 64);
        s = (uint64_t)t + hi;
        s += s < hi;
        p += 32;
        len -= 32;
    }
    while (len >= 8) {
        memcpy(&v, p, 8);
        s += v;
        s += s < v;
        p += 8;
        len -= 8;
    }
    if (len >= 4) {
        uint32_t w;
        memcpy(&w, p, 4);
        s += w;
        s += s < w;
        p += 4;
        len -= 4;
    }
    if (len >= 2) {
        uint16_t w;
        memcpy(&w, p, 2);
        s += w;
        s += s < w;
        p += 2;
        len -= 2;
    }
    if (len) {
        s += p[0];                      /* a trailing byte: the high byte of its word */
        s += s < p[0];
    }
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return sum + __builtin_bswap16((uint16_t)s);
#else
    return sum + (uint16_t)s;
#endif
}

static uint16_t csum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* UDP checksum over pseudo header + udp header + payload (udp->check zero). */
static uint16_t udp_csum(const uint8_t *ip, const uint8_t *udp, size_t ulen)
{
    uint32_t sum = csum_add(0, ip + 12, 8);   /* saddr, daddr */
    sum += 17 + (uint32_t)ulen;
    sum = csum_add(sum, udp, ulen);
    uint16_t c = csum_fold(sum);
    return c == 0 ? 0xffff : c;
}

/* ---- frames ------------------------------------------------------------- */

static void ep_kick(struct xdp_ep *ep)
{
    if (ep->torn || ep->unkicked == 0)
        return;
    ep->unkicked = 0;
    /* copy mode sends only inside sendto/poll and does not raise the
     * need-wakeup flag: always kick it */
    if (!ep->zerocopy || xsk_ring_prod__needs_wakeup(&ep->tx))
        (void)sendto(xsk_socket__fd(ep->xsk), NULL, 0, MSG_DONTWAIT, NULL, 0);
}

/* Do completions wait in the shared completion ring?  A lock-free hint
 * (both indices are published atomically); ep_reclaim decides under the
 * lock. */
static int ep_comp_waiting(const struct xdp_ep *ep)
{
    const struct xsk_ring_cons *c = &ep->sh->comp;
    return __atomic_load_n(c->producer, __ATOMIC_ACQUIRE) != __atomic_load_n(c->consumer, __ATOMIC_RELAXED);
}

/* Completed TX frames (of any socket on the UMEM) back to the pool. */
static void ep_reclaim(struct xdp_ep *ep)
{
    struct xdp_shared *sh = ep->sh;
    uint32_t idx;
    pthread_mutex_lock(&sh->mu);
    uint32_t n = xsk_ring_cons__peek(&sh->comp, XDP_TX_FRAMES, &idx);
    for (uint32_t i = 0; i < n; i++)
        sh->txfree[sh->ntxfree++] = *xsk_ring_cons__comp_addr(&sh->comp, idx + i);
    if (n) {
        xsk_ring_cons__release(&sh->comp, n);
        sh->tx_outstanding -= n;
    }
    if (sh->tx_outstanding == 0)
        ep->txpend = 0;
    pthread_mutex_unlock(&sh->mu);
}

/* Consumed RX frames back to the shared fill ring. */
static void ep_refill(struct xdp_ep *ep)
{
    struct xdp_shared *sh = ep->sh;
    uint32_t idx;
    if (ep->nrxback == 0)
        return;
    pthread_mutex_lock(&sh->mu);
    uint32_t n = xsk_ring_prod__reserve(&sh->fill, ep->nrxback, &idx);
    for (uint32_t i = 0; i < n; i++)
        *xsk_ring_prod__fill_addr(&sh->fill, idx + i) = ep->rxback[--ep->nrxback];
    if (n)
        xsk_ring_prod__submit(&sh->fill, n);
    int wake = xsk_ring_prod__needs_wakeup(&sh->fill);
    pthread_mutex_unlock(&sh->mu);
    if (wake)
        (void)recvfrom(xsk_socket__fd(ep->xsk), NULL, 0, MSG_DONTWAIT, NULL, NULL);
}

/* A free TX frame address, or UINT64_MAX. */
static uint64_t ep_tx_frame(struct xdp_ep *ep)
{
    struct xdp_shared *sh = ep->sh;
    uint64_t a = UINT64_MAX;
    pthread_mutex_lock(&sh->mu);
    if (sh->ntxfree > 0) {
        a = sh->txfree[--sh->ntxfree];
        sh->tx_outstanding++;
    }
    pthread_mutex_unlock(&sh->mu);
    return a;
}

static void ep_tx_frame_unused(struct xdp_ep *ep, uint64_t a)
{
    struct xdp_shared *sh = ep->sh;
    pthread_mutex_lock(&sh->mu);
    sh->txfree[sh->ntxfree++] = a;
    sh->tx_outstanding--;
    pthread_mutex_unlock(&sh->mu);
}

/* Put one UDP packet (hdr + payload) on the TX ring.  0, or -1 when full. */
static int ep_send_frame(struct xdp_ep *ep, const struct xp_addr *to, uint16_t lport,
                         const uint8_t *hdr, uint32_t hlen, const uint8_t *pl, uint32_t plen)
{
    uint32_t idx;
    if (XDP_L2L4 + hlen + plen > XDP_FRAME_SIZE)
        return -1;
    uint64_t addr = ep_tx_frame(ep);
    if (addr == UINT64_MAX) {
        ep_reclaim(ep);
        addr = ep_tx_frame(ep);
        if (addr == UINT64_MAX)
            return -1;
    }
    if (xsk_ring_prod__reserve(&ep->tx, 1, &idx) != 1) {
        ep_tx_frame_unused(ep, addr);
        return -1;
    }
    uint8_t *f = xsk_umem__get_data(ep->area, addr);
    uint32_t ulen = 8 + hlen + plen;
    uint32_t iplen = 20 + ulen;
    /* Ethernet */
    memcpy(f, to->mac, 6);
    memcpy(f + 6, ep->lmac, 6);
    f[12] = 0x08;
    f[13] = 0x00;
    /* IPv4 */
    uint8_t *ip = f + 14;
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2] = (uint8_t)(iplen >> 8);
    ip[3] = (uint8_t)iplen;
    ep->ip_id++;
    ip[4] = (uint8_t)(ep->ip_id >> 8);
    ip[5] = (uint8_t)ep->ip_id;
    ip[6] = 0x40;                      /* DF */
    ip[7] = 0;
    ip[8] = 64;
    ip[9] = 17;
    ip[10] = ip[11] = 0;
    memcpy(ip + 12, &ep->lip, 4);
    memcpy(ip + 16, &to->ip, 4);
    uint16_t ic = csum_fold(csum_add(0, ip, 20));
    ip[10] = (uint8_t)(ic >> 8);
    ip[11] = (uint8_t)ic;
    /* UDP */
    uint8_t *udp = ip + 20;
    memcpy(udp, &lport, 2);
    memcpy(udp + 2, &to->port, 2);
    udp[4] = (uint8_t)(ulen >> 8);
    udp[5] = (uint8_t)ulen;
    udp[6] = udp[7] = 0;
    memcpy(udp + 8, hdr, hlen);
    if (plen)
        memcpy(udp + 8 + hlen, pl, plen);
    uint16_t uc = udp_csum(ip, udp, ulen);
    udp[6] = (uint8_t)(uc >> 8);
    udp[7] = (uint8_t)uc;

    struct xdp_desc *d = xsk_ring_prod__tx_desc(&ep->tx, idx);
    d->addr = addr;
    d->len = 14 + iplen;
    d->options = 0;
    xsk_ring_prod__submit(&ep->tx, 1);
    ep->txpend++;
    ep->tx_frames++;
    if (++ep->unkicked >= XDP_KICK_BATCH)
        ep_kick(ep);
    return 0;
}

static double ep_rand(struct xdp_ep *ep)
{
    return (double)rand_r(&ep->f_seed) / ((double)RAND_MAX + 1.0);
}

static struct xdp_held *held_take(struct xdp_ep *ep)
{
    if (ep->nheld == 0)
        return NULL;
    struct xdp_held *h = ep->held[0];
    memmove(&ep->held[0], &ep->held[1], (size_t)(ep->nheld - 1) * sizeof ep->held[0]);
    ep->nheld--;
    return h;
}

/* The oldest held packet of one direction (1 = outgoing), or NULL. */
static struct xdp_held *held_take_dir(struct xdp_ep *ep, int out)
{
    for (int i = 0; i < ep->nheld; i++) {
        if (ep->held[i]->out != out)
            continue;
        struct xdp_held *h = ep->held[i];
        memmove(&ep->held[i], &ep->held[i + 1], (size_t)(ep->nheld - i - 1) * sizeof ep->held[0]);
        ep->nheld--;
        return h;
    }
    return NULL;
}

/* Deliver or send the packets the fault hook held back. */
static void held_release(struct xdp_ep *ep, uint64_t now)
{
    struct xdp_held *h;
    while (!ep->torn && (h = held_take(ep)) != NULL) {
        if (h->out)
            (void)ep_send_frame(ep, &h->peer, h->lport, h->data, h->len, NULL, 0);
        else
            xp_input(ep->eng, &h->peer, h->lport, h->data, h->len, now);
        free(h);
    }
}

/* Fault hook: 1 = the packet was dropped or held back. */
static int ep_fault(struct xdp_ep *ep, int out, const struct xp_addr *peer, uint16_t lport,
                    const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen)
{
    if (ep->f_loss > 0 && ep_rand(ep) < ep->f_loss) {
        ep->f_drops++;
        return 1;
    }
    if (ep->f_reorder > 0 && ep->nheld < XDP_REORDER_MAX && ep_rand(ep) < ep->f_reorder &&
        alen + blen <= XDP_FRAME_SIZE) {
        struct xdp_held *h = malloc(sizeof *h);
        if (h == NULL)
            return 0;
        h->out = out;
        h->peer = *peer;
        h->lport = lport;
        h->len = alen + blen;
        memcpy(h->data, a, alen);
        if (blen)
            memcpy(h->data + alen, b, blen);
        ep->held[ep->nheld++] = h;
        ep->f_reorders++;
        return 1;
    }
    return 0;
}

static int ep_xmit(void *ctx, const struct xp_addr *to, uint16_t lport, const uint8_t *hdr,
                   const uint8_t *pl, uint32_t plen)
{
    struct xdp_ep *ep = ctx;
    int faulty = ep->f_loss > 0 || ep->f_reorder > 0;
    if (faulty && ep_fault(ep, 1, to, lport, hdr, XP_HDR_LEN, pl, plen))
        return 0;
    int rc = ep_send_frame(ep, to, lport, hdr, XP_HDR_LEN, pl, plen);
    if (rc == 0 && faulty) {            /* a held outgoing packet goes after this one */
        struct xdp_held *h = held_take_dir(ep, 1);
        if (h) {
            (void)ep_send_frame(ep, &h->peer, h->lport, h->data, h->len, NULL, 0);
            free(h);
        }
    }
    return rc;
}

static int ep_port_is_ours(const struct xdp_ep *ep, uint16_t port)
{
    if (port == ep->cport && port != 0)
        return 1;
    for (const struct xdp_listener *ls = ep->listeners; ls; ls = ls->next)
        if (ls->port == port)
            return 1;
    return 0;
}

/* Validate one received frame and hand its UDP payload to the engine. */
static void ep_frame_in(struct xdp_ep *ep, const uint8_t *f, uint32_t len, uint64_t now)
{
    ep->rx_frames++;
    if (len < XDP_L2L4 || f[12] != 0x08 || f[13] != 0x00)
        goto bad;
    const uint8_t *ip = f + 14;
    uint32_t iplen = (uint32_t)(ip[2] << 8 | ip[3]);
    if (ip[0] != 0x45 || ip[9] != 17 || iplen < 28 || iplen > len - 14 || (ip[6] & 0x3f) || ip[7])
        goto bad;
    if (memcmp(ip + 16, &ep->lip, 4) != 0)
        goto bad;
    const uint8_t *udp = ip + 20;
    uint32_t ulen = (uint32_t)(udp[4] << 8 | udp[5]);
    if (ulen < 8 || ulen > iplen - 20)
        goto bad;
    uint16_t dport;
    memcpy(&dport, udp + 2, 2);
    if (!ep_port_is_ours(ep, dport))
        goto bad;
    if (udp[6] | udp[7]) {              /* checksum present: verify it */
        uint8_t tmp[8];
        memcpy(tmp, udp, 8);
        uint16_t want = (uint16_t)(udp[6] << 8 | udp[7]);
        tmp[6] = tmp[7] = 0;
        uint32_t sum = csum_add(0, ip + 12, 8) + 17 + ulen;
        sum = csum_add(sum, tmp, 8);
        sum = csum_add(sum, udp + 8, ulen - 8);
        uint16_t got = csum_fold(sum);
        if ((got == 0 ? 0xffff : got) != want)
            goto bad;
    }
    struct xp_addr from;
    memcpy(&from.ip, ip + 12, 4);
    memcpy(&from.port, udp, 2);
    memcpy(from.mac, f + 6, 6);
    if ((ep->f_loss > 0 || ep->f_reorder > 0) &&
        ep_fault(ep, 0, &from, dport, udp + 8, ulen - 8, NULL, 0))
        return;
    xp_input(ep->eng, &from, dport, udp + 8, ulen - 8, now);
    return;
bad:
    ep->rx_bad++;
}

/* Drain up to one batch of the RX ring.  Returns frames handled. */
static int ep_rx(struct xdp_ep *ep, uint64_t now)
{
    uint32_t idx;
    struct xdp_desc d[XDP_RX_BATCH];
    if (ep->torn)
        return 0;
    uint32_t n = xsk_ring_cons__peek(&ep->rx, XDP_RX_BATCH, &idx);
    for (uint32_t i = 0; i < n; i++)
        d[i] = *xsk_ring_cons__rx_desc(&ep->rx, idx + i);
    if (n)
        xsk_ring_cons__release(&ep->rx, n);   /* before handlers can re-enter */
    uint64_t outer = ep->rx_now;            /* (a handler may run the loop) */
    ep->rx_now = now;                       /* replies sent from handlers reuse it */
    for (uint32_t i = 0; i < n && !ep->torn; i++) {
        uint64_t a = xsk_umem__add_offset_to_addr(d[i].addr);
        ep_frame_in(ep, xsk_umem__get_data(ep->area, a), d[i].len, now);
        struct xdp_held *h = ep->nheld ? held_take_dir(ep, 0) : NULL;
        if (h) {                        /* a held packet arrives after its successor */
            xp_input(ep->eng, &h->peer, h->lport, h->data, h->len, now);
            free(h);
        }
    }
    ep->rx_now = outer;
    for (uint32_t i = 0; i < n; i++) {
        if (ep->nrxback == sizeof ep->rxback / sizeof ep->rxback[0] && !ep->torn)
            ep_refill(ep);
        if (ep->nrxback < sizeof ep->rxback / sizeof ep->rxback[0])
            ep->rxback[ep->nrxback++] = d[i].addr - d[i].addr % XDP_FRAME_SIZE;
    }
    if (!ep->torn)
        ep_refill(ep);
    if (n)
        ep->last_active = now;
    return (int)n;
}

/* After any engine activity: send what can go, kick, fix up polling. */
static void ep_after(struct xdp_ep *ep, uint64_t now)
{
    if (ep->torn)
        return;
    xp_flush(ep->eng, now);
    ep_kick(ep);
    ep_update_busy(ep);
}

static void ep_fd_ready(void *arg, uint32_t events)
{
    struct xdp_ep *ep = arg;
    (void)events;
    uint64_t now = clock_mono_ns();
    for (int i = 0; i < 16 && ep_rx(ep, now) == XDP_RX_BATCH; i++)
        ;
    if (!ep->torn) {
        ep_reclaim(ep);
        ep_after(ep, now);
    }
}

/* The busy poller, every round of a spinning loop.  A round with nothing in
 * the RX ring, no completions to reclaim and nothing unsent costs two
 * atomic loads: no clock, no lock, no engine (ticks, retransmissions and
 * going idle are the 1 ms timer's, ep_timer) -- the shorter the round, the
 * sooner a spinning loop sees the next packet. */
static int ep_poll(void *arg)
{
    struct xdp_ep *ep = arg;
    if (ep->torn)
        return 0;
    int rx = xsk_cons_nb_avail(&ep->rx, 1) > 0;
    int comp = ep->txpend > 0 && ep_comp_waiting(ep);
    if (!rx && !comp && ep->unkicked == 0 && !xp_tx_waiting(ep->eng))
        return 0;
    uint64_t now = clock_mono_ns();
    int n = rx ? ep_rx(ep, now) : 0;
    if (ep->torn)
        return n;
    if (comp || ep->txpend > 0)
        ep_reclaim(ep);
    ep_after(ep, now);
    return n;
}

static void ep_timer(void *arg)
{
    struct xdp_ep *ep = arg;
    ep->timer = 0;
    if (ep->torn)
        return;
    uint64_t now = clock_mono_ns();
    held_release(ep, now);
    ep_reclaim(ep);
    xp_tick(ep->eng, now);
    ep->next_tick = now + XDP_TICK_US * 1000ull;
    ep_after(ep, now);
}

static void ep_update_busy(struct xdp_ep *ep)
{
    int busy = !ep->torn && (xp_busy(ep->eng) || ep->txpend > 0 || ep->nheld > 0 ||
                             ep->unkicked > 0);
    if (busy) {
        if (ep->poller == 0)
            ep->poller = tp_loop_add_poller(ep->loop, ep_poll, ep);
        if (ep->timer == 0)
            ep->timer = tp_timer_add(ep->loop, XDP_TICK_US, ep_timer, ep);
    } else {
        if (ep->poller) {
            tp_loop_del_poller(ep->loop, ep->poller);
            ep->poller = 0;
        }
        if (ep->timer) {
            tp_timer_cancel(ep->loop, ep->timer);
            ep->timer = 0;
        }
    }
}

/* ---- server rpcs -------------------------------------------------------- */

static void ep_free_if_done(struct xdp_ep *ep)
{
    if (ep->torn && ep->nrpcs == 0 && ep->users == 0)
        free(ep);
}

static void ep_request(void *ctx, struct xp_srpc *r, uint16_t lport, const uint8_t *req, uint32_t len)
{
    struct xdp_ep *ep = ctx;
    struct xdp_listener *ls = ep->listeners;
    while (ls && ls->port != lport)
        ls = ls->next;
    struct xdp_rpc *x = ls ? malloc(sizeof *x) : NULL;
    if (x == NULL) {                    /* no listener on that port (client port) */
        xp_reply(r, NULL, 0, clock_mono_ns());
        return;
    }
    x->head.ops = &xdp_rpc_ops;
    x->head.req = req;
    x->head.req_len = len;
    x->ep = ep;
    x->sr = r;
    x->peer[0] = '\0';
    ep->nrpcs++;
    ls->fn(ls->arg, &x->head);
}

static void xdp_rpc_reply(tp_rpc *rpc, const struct iovec *iov, int iovcnt)
{
    struct xdp_rpc *x = (struct xdp_rpc *)rpc;
    struct xdp_ep *ep = x->ep;
    uint64_t now = ep->rx_now ? ep->rx_now : clock_mono_ns();
    xp_reply(x->sr, iov, iovcnt, now);
    free(x);
    ep->nrpcs--;
    if (!ep->torn) {
        ep->last_active = now;
        ep_after(ep, now);
    } else {
        ep_free_if_done(ep);
    }
}

static const char *xdp_rpc_peer(const tp_rpc *rpc)
{
    struct xdp_rpc *x = (struct xdp_rpc *)rpc;
    if (x->peer[0] == '\0') {
        const struct xp_addr *a = xp_srpc_peer(x->sr);
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &a->ip, ip, sizeof ip);
        snprintf(x->peer, sizeof x->peer, "%s:%u", ip, ntohs(a->port));
    }
    return x->peer;
}

static const struct tp_rpc_ops xdp_rpc_ops = { xdp_rpc_reply, xdp_rpc_peer };

/* ---- endpoints ---------------------------------------------------------- */

/* IPv4 address of ifname (network order) or, with ifname empty, the
 * interface holding ip.  Returns 0 or -1. */
static int if_lookup(char *ifname, size_t iflen, uint32_t *ip)
{
    struct ifaddrs *ifa, *i;
    int rc = -1;
    if (getifaddrs(&ifa) != 0)
        return -1;
    for (i = ifa; i; i = i->ifa_next) {
        if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET)
            continue;
        uint32_t a = ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr;
        if (ifname[0] != '\0' ? strcmp(i->ifa_name, ifname) == 0 : a == *ip) {
            snprintf(ifname, iflen, "%s", i->ifa_name);
            *ip = a;
            rc = 0;
            break;
        }
    }
    freeifaddrs(ifa);
    return rc;
}

static void parse_fault(struct xdp_ep *ep)
{
    const char *f = getenv("CRAM_XDP_FAULT");
    if (f == NULL)
        return;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", f);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (strncmp(t, "loss=", 5) == 0)
            ep->f_loss = strtod(t + 5, NULL);
        else if (strncmp(t, "reorder=", 8) == 0)
            ep->f_reorder = strtod(t + 8, NULL);
        else if (strncmp(t, "seed=", 5) == 0)
            ep->f_seed = (unsigned)strtoul(t + 5, NULL, 10);
    }
    CRAM_INFO("xdp: fault injection on %s: loss %.3f reorder %.3f seed %u",
              ep->ifname, ep->f_loss, ep->f_reorder, ep->f_seed);
}

/* Load the embedded XDP program and attach it to the interface: native
 * mode, else SKB mode ($CRAM_XDP_MODE=skb|drv forces one). */
static int sh_load_prog(struct xdp_shared *sh, char *err, size_t errlen)
{
    sh->obj = bpf_object__open_mem(tp_xdp_bpf_obj, (size_t)(tp_xdp_bpf_obj_end - tp_xdp_bpf_obj), NULL);
    if (sh->obj == NULL || libbpf_get_error(sh->obj)) {
        sh->obj = NULL;
        snprintf(err, errlen, "xdp: cannot open the embedded BPF object");
        return -1;
    }
    if (bpf_object__load(sh->obj) != 0) {
        snprintf(err, errlen, "xdp: BPF program load failed: %s (root needed)", strerror(errno));
        return -1;
    }
    struct bpf_program *prog = bpf_object__find_program_by_name(sh->obj, "cram_xdp");
    sh->ports_fd = bpf_object__find_map_fd_by_name(sh->obj, "cram_ports");
    sh->xsks_fd = bpf_object__find_map_fd_by_name(sh->obj, "cram_xsks");
    if (prog == NULL || sh->ports_fd < 0 || sh->xsks_fd < 0) {
        snprintf(err, errlen, "xdp: BPF object lacks cram_xdp / its maps");
        return -1;
    }
    int pfd = bpf_program__fd(prog);
    const char *mode = getenv("CRAM_XDP_MODE");
    uint32_t modes[2] = { XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE };
    int first = mode && strcmp(mode, "skb") == 0 ? 1 : 0;
    int last = mode && strcmp(mode, "drv") == 0 ? 0 : 1;
    int rc = -1;
    for (int m = first; m <= last; m++) {
        rc = bpf_xdp_attach(sh->ifindex, pfd, modes[m] | XDP_FLAGS_UPDATE_IF_NOEXIST, NULL);
        if (rc == 0) {
            sh->xdp_flags = modes[m];
            break;
        }
        if (rc == -EBUSY || rc == -EEXIST)
            break;
    }
    if (rc != 0) {
        snprintf(err, errlen, "xdp: cannot attach the XDP program to %s: %s%s", sh->ifname,
                 strerror(-rc), rc == -EBUSY || rc == -EEXIST ?
                 " (another XDP program -- another cram process? -- is attached)" : "");
        return -1;
    }
    sh->attached = 1;
    return 0;
}

static void sh_free(struct xdp_shared *sh)
{
    if (sh->umem)
        xsk_umem__delete(sh->umem);
    if (sh->area)
        munmap(sh->area, (size_t)XDP_NFRAMES * XDP_FRAME_SIZE);
    if (sh->attached)
        bpf_xdp_detach(sh->ifindex, sh->xdp_flags, NULL);
    if (sh->obj)
        bpf_object__close(sh->obj);
    pthread_mutex_destroy(&sh->mu);
    free(sh);
}

static int if_hw(const char *ifname, uint8_t mac[6], int *mtu)
{
    struct ifreq ifr;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    int rc = ioctl(s, SIOCGIFHWADDR, &ifr);
    if (rc == 0)
        memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    if (rc == 0 && (rc = ioctl(s, SIOCGIFMTU, &ifr)) == 0)
        *mtu = ifr.ifr_mtu;
    close(s);
    return rc;
}

/* UMEM, program and maps of (interface, queue).  Called with xdp_reg_mu
 * held (set-up only). */
static struct xdp_shared *sh_create(const char *ifname, int ifindex, uint32_t queue, char *err,
                                    size_t errlen)
{
    struct xdp_shared *sh = calloc(1, sizeof *sh);
    if (sh == NULL) {
        snprintf(err, errlen, "xdp: out of memory");
        return NULL;
    }
    pthread_mutex_init(&sh->mu, NULL);
    snprintf(sh->ifname, sizeof sh->ifname, "%s", ifname);
    sh->ifindex = ifindex;
    sh->queue = queue;
    sh->bind_flags = -1;
    if (if_lookup(sh->ifname, sizeof sh->ifname, &sh->lip) != 0 || if_hw(sh->ifname, sh->lmac, &sh->mtu) != 0) {
        snprintf(err, errlen, "xdp: interface %s has no IPv4 address or MAC", ifname);
        goto free_sh;
    }
    size_t len = (size_t)XDP_NFRAMES * XDP_FRAME_SIZE;
    sh->area = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (sh->area == MAP_FAILED) {
        sh->area = NULL;
        snprintf(err, errlen, "xdp: mmap of the UMEM: %s", strerror(errno));
        goto free_sh;
    }
    struct xsk_umem_config ucfg = { .fill_size = XDP_RX_FRAMES, .comp_size = XDP_TX_FRAMES,
                                    .frame_size = XDP_FRAME_SIZE, .frame_headroom = 0, .flags = 0 };
    int rc = xsk_umem__create(&sh->umem, sh->area, len, &sh->fill, &sh->comp, &ucfg);
    if (rc != 0) {
        sh->umem = NULL;
        snprintf(err, errlen, "xdp: xsk_umem__create: %s", strerror(-rc));
        goto free_sh;
    }
    if (sh_load_prog(sh, err, errlen) != 0)
        goto free_sh;
    for (uint32_t i = 0; i < XDP_TX_FRAMES; i++)
        sh->txfree[sh->ntxfree++] = (uint64_t)(XDP_RX_FRAMES + i) * XDP_FRAME_SIZE;
    return sh;

free_sh:
    sh_free(sh);
    return NULL;
}

/* This endpoint's socket on the shared UMEM, registered in the XSKMAP. */
static int ep_open_socket(struct xdp_ep *ep, char *err, size_t errlen)
{
    struct xdp_shared *sh = ep->sh;
    /* zero-copy where the driver has it, else copy mode (the first socket
     * decides for all); a queue just left by another process answers EBUSY
     * for ~50 ms */
    static const uint16_t binds[2] = { XDP_ZEROCOPY, XDP_COPY };
    int rc = -1;
    for (int b = 0; b < 2; b++) {
        if (sh->bind_flags >= 0 && sh->bind_flags != binds[b])
            continue;
        struct xsk_socket_config scfg = { .rx_size = XDP_RX_FRAMES, .tx_size = XDP_TX_FRAMES,
                                          .libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
                                          .xdp_flags = sh->xdp_flags,
                                          .bind_flags = (uint16_t)(binds[b] | XDP_USE_NEED_WAKEUP) };
        for (int tries = 0; tries < 100; tries++) {
            rc = xsk_socket__create_shared(&ep->xsk, sh->ifname, sh->queue, sh->umem, &ep->rx, &ep->tx,
                                           &sh->fill, &sh->comp, &scfg);
            if (rc != -EBUSY)
                break;
            struct timespec ts = { 0, 10 * 1000 * 1000 };   /* set-up only, never a hot path */
            nanosleep(&ts, NULL);
        }
        if (rc == 0) {
            sh->bind_flags = binds[b];
            break;
        }
        ep->xsk = NULL;
    }
    if (rc != 0) {
        snprintf(err, errlen, "xdp: xsk_socket__create on %s queue %u: %s", sh->ifname, sh->queue,
                 strerror(-rc));
        return -1;
    }
    ep->zerocopy = sh->bind_flags == XDP_ZEROCOPY;
    snprintf(ep->mode, sizeof ep->mode, "%s/%s", sh->xdp_flags == XDP_FLAGS_DRV_MODE ? "drv" : "skb",
             ep->zerocopy ? "zerocopy" : "copy");
    int xfd = xsk_socket__fd(ep->xsk);
    if (bpf_map_update_elem(sh->xsks_fd, &ep->slot, &xfd, BPF_ANY) != 0) {
        snprintf(err, errlen, "xdp: XSKMAP update: %s", strerror(errno));
        return -1;
    }
    if (!sh->rx_seeded) {               /* the first socket: all RX frames into the fill ring */
        for (uint32_t i = 0; i < XDP_RX_FRAMES; i += XDP_RX_BATCH) {
            for (uint32_t k = 0; k < XDP_RX_BATCH; k++)
                ep->rxback[ep->nrxback++] = (uint64_t)(i + k) * XDP_FRAME_SIZE;
            ep_refill(ep);
        }
        sh->rx_seeded = 1;
    }
    return 0;
}

/* Close the socket, handing back what it holds. */
static void ep_close_socket(struct xdp_ep *ep)
{
    struct xdp_shared *sh = ep->sh;
    if (ep->xsk) {
        uint32_t key = ep->slot;
        bpf_map_delete_elem(sh->xsks_fd, &key);
        /* frames still in our RX ring go back to the fill ring */
        uint32_t idx, n;
        while ((n = xsk_ring_cons__peek(&ep->rx, XDP_RX_BATCH, &idx)) > 0) {
            for (uint32_t i = 0; i < n; i++) {
                uint64_t a = xsk_ring_cons__rx_desc(&ep->rx, idx + i)->addr;
                ep->rxback[ep->nrxback++] = a - a % XDP_FRAME_SIZE;
            }
            xsk_ring_cons__release(&ep->rx, n);
            ep_refill(ep);
        }
        ep_kick(ep);
        ep_reclaim(ep);
        xsk_socket__delete(ep->xsk);
        ep->xsk = NULL;
    }
    if (ep->cport_fd >= 0) {
        bpf_map_delete_elem(sh->ports_fd, &ep->cport);
        close(ep->cport_fd);
        ep->cport_fd = -1;
    }
}

static void ep_teardown(void *arg)
{
    struct xdp_ep *ep = arg;
    ep->teardown_queued = 0;
    if (ep->users > 0 || ep->torn)
        return;
    if (getenv("CRAM_XDP_STATS")) {
        const struct xp_stats *s = xp_engine_stats(ep->eng);
        CRAM_INFO("xdp %s: in %llu out %llu retx %llu fast %llu dup %llu bad %llu; fault drops %llu reorders %llu",
                  ep->ifname, (unsigned long long)s->pkts_in, (unsigned long long)s->pkts_out,
                  (unsigned long long)s->retransmits, (unsigned long long)s->fast_retransmits,
                  (unsigned long long)s->dup_in, (unsigned long long)s->bad_in,
                  (unsigned long long)ep->f_drops, (unsigned long long)ep->f_reorders);
    }
    xp_engine_destroy(ep->eng);         /* server rpcs still out become orphans */
    ep->eng = NULL;
    tp_loop_del_fd(ep->loop, &ep->fdh);
    if (ep->poller)
        tp_loop_del_poller(ep->loop, ep->poller);
    if (ep->timer)
        tp_timer_cancel(ep->loop, ep->timer);
    ep->poller = ep->timer = 0;
    while (ep->nheld > 0)
        free(ep->held[--ep->nheld]);
    ep_close_socket(ep);
    ep->torn = 1;
    /* off the shared state; the last endpoint takes the UMEM and program */
    struct xdp_shared *sh = ep->sh, *last = NULL;
    pthread_mutex_lock(&xdp_reg_mu);
    for (struct xdp_ep **pp = &sh->eps; *pp; pp = &(*pp)->next)
        if (*pp == ep) {
            *pp = ep->next;
            break;
        }
    sh->slot_used[ep->slot] = 0;
    if (sh->eps == NULL) {
        for (struct xdp_shared **pp = &xdp_shareds; *pp; pp = &(*pp)->next)
            if (*pp == sh) {
                *pp = sh->next;
                break;
            }
        last = sh;
    }
    pthread_mutex_unlock(&xdp_reg_mu);
    if (last)
        sh_free(last);
    ep->sh = NULL;
    ep_free_if_done(ep);
}

static void ep_release(struct xdp_ep *ep)
{
    if (--ep->users == 0 && !ep->teardown_queued) {
        ep->teardown_queued = 1;
        tp_loop_defer_free(ep->loop, ep_teardown, ep);
    }
}

static uint64_t random_nonce(void)
{
    uint64_t v = 0;
    while (v == 0)
        if (getrandom(&v, sizeof v, 0) != sizeof v)
            v = clock_mono_ns() ^ ((uint64_t)getpid() << 32);
    return v;
}

/* A new endpoint (socket + engine) of loop l on sh.  Called with
 * xdp_reg_mu held. */
static struct xdp_ep *ep_create(tp_loop *l, struct xdp_shared *sh, char *err, size_t errlen)
{
    uint32_t slot = 0;
    while (slot < XDP_MAX_SLOTS && sh->slot_used[slot])
        slot++;
    if (slot == XDP_MAX_SLOTS) {
        snprintf(err, errlen, "xdp: %s queue %u has %d sockets already", sh->ifname, sh->queue, XDP_MAX_SLOTS);
        return NULL;
    }
    struct xdp_ep *ep = calloc(1, sizeof *ep);
    if (ep == NULL) {
        snprintf(err, errlen, "xdp: out of memory");
        return NULL;
    }
    ep->sh = sh;
    ep->slot = slot;
    ep->loop = l;
    ep->area = sh->area;
    ep->ifindex = sh->ifindex;
    ep->queue = sh->queue;
    ep->lip = sh->lip;
    memcpy(ep->lmac, sh->lmac, 6);
    ep->mtu = sh->mtu;
    ep->cport_fd = -1;
    ep->fdh.fd = -1;
    ep->f_seed = 1;
    snprintf(ep->ifname, sizeof ep->ifname, "%s", sh->ifname);
    parse_fault(ep);
    if (ep_open_socket(ep, err, errlen) != 0)
        goto close_socket;
    uint32_t fs = (uint32_t)ep->mtu - 28;
    if (fs > XDP_FRAME_SIZE - XDP_L2L4)
        fs = XDP_FRAME_SIZE - XDP_L2L4;
    fs -= XP_HDR_LEN;
    static const struct xp_ops ops = { ep_xmit, ep_request };
    ep->eng = xp_engine_create(&ops, ep, fs, random_nonce());
    if (ep->eng == NULL) {
        snprintf(err, errlen, "xdp: MTU %d too small", ep->mtu);
        goto close_socket;
    }
    if (tp_loop_add_fd(l, &ep->fdh, xsk_socket__fd(ep->xsk), EPOLLIN, ep_fd_ready, ep) != 0) {
        snprintf(err, errlen, "xdp: epoll: %s", strerror(errno));
        goto destroy_engine;
    }
    CRAM_INFO("xdp: %s queue %u socket %u open (%s, MTU %d, %u bytes per fragment)", ep->ifname,
              ep->queue, slot, ep->mode, ep->mtu, fs);
    ep->users = 1;
    sh->slot_used[slot] = 1;
    ep->next = sh->eps;
    sh->eps = ep;
    return ep;

destroy_engine:
    xp_engine_destroy(ep->eng);
close_socket:
    ep_close_socket(ep);
    free(ep);
    return NULL;
}

/* The endpoint of (loop, ifname, queue): this loop's socket on the
 * process's shared UMEM of that interface and queue, made on first use. */
static struct xdp_ep *ep_get(tp_loop *l, const char *ifname, uint32_t queue, char *err, size_t errlen)
{
    int ifindex = (int)if_nametoindex(ifname);
    if (ifindex == 0) {
        snprintf(err, errlen, "xdp: no interface '%s'", ifname);
        return NULL;
    }
    /* set-up runs under the registry lock: two loops opening the same
     * interface at once must not both attach a program */
    pthread_mutex_lock(&xdp_reg_mu);
    struct xdp_shared *sh;
    for (sh = xdp_shareds; sh; sh = sh->next)
        if (sh->ifindex == ifindex && sh->queue == queue)
            break;
    struct xdp_ep *ep = NULL;
    if (sh) {
        for (ep = sh->eps; ep; ep = ep->next)
            if (ep->loop == l && !ep->torn)
                break;
        if (ep) {
            ep->users++;
            pthread_mutex_unlock(&xdp_reg_mu);
            return ep;
        }
    } else {
        sh = sh_create(ifname, ifindex, queue, err, errlen);
        if (sh == NULL) {
            pthread_mutex_unlock(&xdp_reg_mu);
            return NULL;
        }
        sh->next = xdp_shareds;
        xdp_shareds = sh;
    }
    ep = ep_create(l, sh, err, errlen);
    if (ep == NULL && sh->eps == NULL) {
        for (struct xdp_shared **pp = &xdp_shareds; *pp; pp = &(*pp)->next)
            if (*pp == sh) {
                *pp = sh->next;
                break;
            }
        sh_free(sh);
    }
    pthread_mutex_unlock(&xdp_reg_mu);
    return ep;
}

/* A kernel UDP socket bound to ip:port keeps the port ours (port 0 picks
 * one); the XDP program then diverts it.  Returns the fd or -1. */
static int reserve_port(uint32_t ip, uint16_t *port, char *err, size_t errlen)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "xdp: socket: %s", strerror(errno));
        return -1;
    }
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = *port, .sin_addr.s_addr = ip };
    socklen_t sl = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        snprintf(err, errlen, "xdp: UDP port %u: %s", ntohs(*port), strerror(errno));
        close(fd);
        return -1;
    }
    *port = sa.sin_port;
    return fd;
}

/* Steer UDP port (network order) to this endpoint's socket: the map value
 * is the XSKMAP slot and, above bit 16, the queue it must arrive on. */
static int ep_add_port(struct xdp_ep *ep, uint16_t port)
{
    uint32_t v = ep->slot | ep->queue << 16;
    return bpf_map_update_elem(ep->sh->ports_fd, &port, &v, BPF_ANY);
}

/* ---- listeners ---------------------------------------------------------- */

static void xdp_listener_close(tp_listener *h)
{
    struct xdp_listener *ls = (struct xdp_listener *)h;
    struct xdp_ep *ep = ls->ep;
    for (struct xdp_listener **pp = &ep->listeners; *pp; pp = &(*pp)->next)
        if (*pp == ls) {
            *pp = ls->next;
            break;
        }
    if (!ep->torn)
        bpf_map_delete_elem(ep->sh->ports_fd, &ls->port);
    close(ls->fd);
    tp_loop_unlink_listener(ep->loop, &ls->head);
    free(ls);
    ep_release(ep);
}

static const struct tp_listener_ops xdp_listener_ops = { xdp_listener_close };

static int parse_u32(const char *s, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static tp_listener *xdp_listen(tp_loop *l, const struct locator *loc, tp_request_fn fn, void *arg,
                               char *err, size_t errlen)
{
    char host[256], ifname[IF_NAMESIZE] = "";
    uint16_t port;
    uint32_t ip, queue = 0;
    if (loc_tcp_addr(loc, host, sizeof host, &port, err, errlen) != 0)
        return NULL;
    if (inet_pton(AF_INET, host, &ip) != 1) {
        snprintf(err, errlen, "xdp: host must be an IPv4 address, not '%s'", host);
        return NULL;
    }
    if (loc_get(loc, "queue") && parse_u32(loc_get(loc, "queue"), 63, &queue) != 0) {
        snprintf(err, errlen, "xdp: bad queue (0..63)");
        return NULL;
    }
    if (loc_get(loc, "dev"))
        snprintf(ifname, sizeof ifname, "%s", loc_get(loc, "dev"));
    uint32_t ifip = ip;
    if (if_lookup(ifname, sizeof ifname, &ifip) != 0 || ifip != ip) {
        snprintf(err, errlen, "xdp: %s is not the IPv4 address of %s", host,
                 ifname[0] ? ifname : "any interface");
        return NULL;
    }
    struct xdp_listener *ls = calloc(1, sizeof *ls);
    if (ls == NULL) {
        snprintf(err, errlen, "xdp: out of memory");
        return NULL;
    }
    uint16_t nport = htons(port);
    ls->fd = reserve_port(ip, &nport, err, errlen);
    if (ls->fd < 0)
        goto free_ls;
    ls->ep = ep_get(l, ifname, queue, err, errlen);
    if (ls->ep == NULL)
        goto close_fd;
    if (ep_add_port(ls->ep, nport) != 0) {
        snprintf(err, errlen, "xdp: port map update: %s", strerror(errno));
        goto release_ep;
    }
    ls->port = nport;
    ls->fn = fn;
    ls->arg = arg;
    ls->next = ls->ep->listeners;
    ls->ep->listeners = ls;
    const uint8_t *m = ls->ep->lmac;
    ls->head.ops = &xdp_listener_ops;
    snprintf(ls->head.locator, sizeof ls->head.locator,
             "xdp:host=%s,port=%u,dev=%s,queue=%u,mac=%02x:%02x:%02x:%02x:%02x:%02x",
             host, ntohs(nport), ifname, queue, m[0], m[1], m[2], m[3], m[4], m[5]);
    tp_loop_link_listener(l, &ls->head);
    return &ls->head;

release_ep:
    ep_release(ls->ep);
close_fd:
    close(ls->fd);
free_ls:
    free(ls);
    return NULL;
}

/* ---- sessions ----------------------------------------------------------- */

static int parse_mac(const char *s, uint8_t mac[6])
{
    unsigned v[6];
    char tail;
    if (sscanf(s, "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
        return -1;
    for (int i = 0; i < 6; i++) {
        if (v[i] > 255)
            return -1;
        mac[i] = (uint8_t)v[i];
    }
    return 0;
}

/* Local interface that routes to ip:port (connect() a UDP socket and see
 * which address the kernel picks). */
static int route_if(uint32_t ip, uint16_t nport, char *ifname, size_t iflen)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = nport, .sin_addr.s_addr = ip };
    socklen_t sl = sizeof sa;
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    if (rc == 0)
        rc = getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    if (rc != 0)
        return -1;
    uint32_t lip = sa.sin_addr.s_addr;
    ifname[0] = '\0';
    return if_lookup(ifname, iflen, &lip);
}

/* The peer's MAC from the kernel's neighbour table; if unknown, one small
 * kernel datagram to the peer makes the kernel resolve it (set-up only). */
static int neigh_mac(const char *ifname, uint32_t ip, uint16_t nport, uint8_t mac[6])
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int rc = -1;
    for (int tries = 0; tries < 200 && rc != 0; tries++) {
        struct arpreq req;
        memset(&req, 0, sizeof req);
        struct sockaddr_in *pa = (struct sockaddr_in *)&req.arp_pa;
        pa->sin_family = AF_INET;
        pa->sin_addr.s_addr = ip;
        snprintf(req.arp_dev, sizeof req.arp_dev, "%s", ifname);
        if (ioctl(fd, SIOCGARP, &req) == 0 && (req.arp_flags & ATF_COM)) {
            memcpy(mac, req.arp_ha.sa_data, 6);
            rc = 0;
            break;
        }
        if (tries == 0) {
            struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = nport, .sin_addr.s_addr = ip };
            (void)sendto(fd, "", 0, 0, (struct sockaddr *)&sa, sizeof sa);
        }
        struct timespec ts = { 0, 5 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    close(fd);
    return rc;
}

static tp_session *xdp_session_open(tp_loop *l, const struct locator *loc, const char *locstr,
                                    cram_status *st)
{
    char host[256], ifname[IF_NAMESIZE], err[256];
    uint16_t port;
    uint32_t ip, queue = 0;
    struct xp_addr srv;
    *st = CRAM_INVALID_ARGUMENT;
    if (strlen(locstr) >= sizeof ((tp_session *)0)->locator ||
        loc_tcp_addr(loc, host, sizeof host, &port, err, sizeof err) != 0 || port == 0 ||
        inet_pton(AF_INET, host, &ip) != 1)
        return NULL;
    memset(&srv, 0, sizeof srv);
    srv.ip = ip;
    srv.port = htons(port);
    if (loc_get(loc, "mac") && parse_mac(loc_get(loc, "mac"), srv.mac) != 0)
        return NULL;
    *st = CRAM_TRANSPORT_ERROR;
    const char *qs = getenv("CRAM_XDP_QUEUE");
    if (qs && parse_u32(qs, 63, &queue) != 0)
        queue = 0;
    const char *ifs = getenv("CRAM_XDP_IF");
    if (ifs && *ifs) {
        snprintf(ifname, sizeof ifname, "%s", ifs);
    } else if (route_if(ip, srv.port, ifname, sizeof ifname) != 0) {
        CRAM_WARN("xdp: no interface routes to %s", host);
        return NULL;
    }
    struct xdp_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->ep = ep_get(l, ifname, queue, err, sizeof err);
    if (s->ep == NULL) {
        CRAM_WARN("%s", err);
        goto free_s;
    }
    struct xdp_ep *ep = s->ep;
    if (ip == ep->lip) {
        CRAM_WARN("xdp: %s is this host's own address (AF_XDP cannot loop back)", host);
        goto release_ep;
    }
    if (ep->cport == 0) {
        uint16_t cp = 0;
        ep->cport_fd = reserve_port(ep->lip, &cp, err, sizeof err);
        if (ep->cport_fd < 0 || ep_add_port(ep, cp) != 0) {
            CRAM_WARN("xdp: client port: %s", ep->cport_fd < 0 ? err : strerror(errno));
            goto release_ep;
        }
        ep->cport = cp;
    }
    if (loc_get(loc, "mac") == NULL && neigh_mac(ifname, ip, srv.port, srv.mac) != 0) {
        CRAM_WARN("xdp: no MAC address for %s on %s", host, ifname);
        goto release_ep;
    }
    s->ch = xp_chan_open(ep->eng, &srv, ep->cport, random_nonce());
    if (s->ch == NULL)
        goto release_ep;
    s->head.ops = &xdp_session_ops;
    snprintf(s->head.locator, sizeof s->head.locator, "%s", locstr);
    tp_loop_link_session(l, &s->head);
    *st = CRAM_OK;
    return &s->head;

release_ep:
    ep_release(s->ep);
free_s:
    free(s);
    return NULL;
}

static cram_status xdp_send(tp_session *h, const struct iovec *iov, int iovcnt, uint32_t timeout_ms,
                            tp_response_fn cb, void *arg)
{
    struct xdp_session *s = (struct xdp_session *)h;
    uint64_t now = s->ep->rx_now ? s->ep->rx_now : clock_mono_ns();
    cram_status st = xp_call(s->ch, iov, iovcnt, (uint64_t)timeout_ms * 1000000ull, cb, arg, now);
    if (st == CRAM_OK) {
        s->ep->last_active = now;
        ep_after(s->ep, now);
    }
    return st;
}

static int xdp_alive(const tp_session *h)
{
    const struct xdp_session *s = (const struct xdp_session *)h;
    return xp_chan_alive(s->ch);
}

static void xdp_session_close(tp_session *h)
{
    struct xdp_session *s = (struct xdp_session *)h;
    struct xdp_ep *ep = s->ep;
    tp_loop_unlink_session(ep->loop, h);
    xp_chan_close(s->ch);
    free(s);
    if (!ep->torn) {
        ep_kick(ep);                    /* a last ack may be queued */
        ep_update_busy(ep);
    }
    ep_release(ep);
}

static const struct tp_session_ops xdp_session_ops = { xdp_send, xdp_alive, xdp_session_close };

const struct tp_transport_ops tp_xdp_ops = { "xdp", xdp_listen, xdp_session_open };

/* ---- stats -------------------------------------------------------------- */

static void ep_stats(const struct xdp_ep *ep, struct tp_xdp_stats *out)
{
    memset(out, 0, sizeof *out);
    if (ep->eng)
        out->proto = *xp_engine_stats(ep->eng);
    out->fault_drops = ep->f_drops;
    out->fault_reorders = ep->f_reorders;
    out->rx_frames = ep->rx_frames;
    out->tx_frames = ep->tx_frames;
    out->rx_bad = ep->rx_bad;
    snprintf(out->mode, sizeof out->mode, "%s", ep->mode);
    out->slot = ep->slot;
}

int tp_xdp_session_stats(const tp_session *s, struct tp_xdp_stats *out)
{
    if (s == NULL || s->ops != &xdp_session_ops)
        return -1;
    ep_stats(((const struct xdp_session *)s)->ep, out);
    return 0;
}

int tp_xdp_listener_stats(const tp_listener *ls, struct tp_xdp_stats *out)
{
    if (ls == NULL || ls->ops != &xdp_listener_ops)
        return -1;
    ep_stats(((const struct xdp_listener *)ls)->ep, out);
    return 0;
}

#endif /* CRAM_HAVE_XDP */
