/*
 * xdp_proto.h -- the reliable request/response protocol under the xdp:
 * transport, with no sockets in it: packets come in through xp_input and go
 * out through the xmit callback, time is passed in, so the whole protocol
 * (fragmentation, reassembly, acknowledgement, retransmission, duplicate
 * suppression, windows and back-pressure) is unit-tested in memory.
 *
 * Roles.  One engine per endpoint (one AF_XDP socket).  A client opens a
 * channel (xp_chan) to a server address; each channel has a random 64-bit
 * nonce and numbers its RPCs 1, 2, 3...  The server keeps one peer record
 * per (address, port, channel nonce) and a slot per RPC id, so a request is
 * handed to the application exactly once however often its packets arrive.
 *
 * Packet = 56-byte header (below) + payload.  All fields little endian.
 *   off size
 *    0   2  magic XP_MAGIC
 *    2   1  version XP_VERSION
 *    3   1  type (enum xp_type)
 *    4   1  flags (XP_F_*)
 *    5   1  reserved, 0
 *    6   2  payload bytes in this packet
 *    8   4  data: fragment index; ack: first fragment not yet received
 *   12   4  fragments in the message (>= 1)
 *   16   4  message length in bytes (<= WIRE_MAX_MESSAGE)
 *   20   2  fragment size the sender uses for this message
 *   22   2  reserved, 0
 *   24   8  client channel nonce
 *   32   8  server engine nonce (0 from a client that has not heard yet)
 *   40   8  RPC id (> 0)
 *   48   8  client data: lowest RPC id the client still has outstanding
 *           (the server forgets every slot below it);
 *           ack: bitmap of fragments received after the first missing one
 *           (bit i = fragment cum+1+i)
 *
 * Reliability.  A sender keeps at most XP_WINDOW fragments unacknowledged
 * per message.  Receivers ack every 16 fragments (every 4 while a hole
 * exists), at the last fragment and when asked (XP_F_PLEASE_ACK).  Holes
 * below the highest acknowledged fragment are resent at once (fast
 * retransmit); on a timeout every unacked fragment in the window is resent
 * and the timeout doubles (XP_RTO_MIN_NS .. XP_RTO_MAX_NS).  A full request
 * is acknowledged at once (ACK_REQ) so a long-running RPC costs only a
 * periodic ping; the response is acknowledged by ACK_RESP, after which the
 * server keeps only a tombstone until the client's low-water mark passes it.
 * A peer silent for XP_DEAD_NS while we wait on it is declared dead.
 *
 * Bounded buffers.  Each channel has at most XP_CHAN_WINDOW RPCs with ids
 * (more calls queue locally, unsent); a server peer accepts ids only in
 * [low-water, low-water + XP_CHAN_WINDOW); reassembly memory per engine is
 * capped at XP_RX_BUDGET bytes (fragments beyond it are dropped and come
 * back by retransmission); at most XP_MAX_PEERS server peers.  When xmit
 * reports a full TX path the engine stops and resumes on the next
 * xp_flush/xp_tick.
 *
 * Threads: an engine and all its objects belong to one thread.
 */
#ifndef CRAM_XDP_PROTO_H
#define CRAM_XDP_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include "cram.h"

#define XP_MAGIC 0xC7A5u
#define XP_VERSION 1
#define XP_HDR_LEN 56
#define XP_WINDOW 64                    /* fragments in flight per message = ack bitmap width + 1 */
#define XP_CHAN_WINDOW 1024             /* RPC ids in flight per channel (power of 2) */
#define XP_MAX_PEERS 4096
#define XP_RX_BUDGET (256u << 20)        /* reassembly bytes per engine */
#define XP_RTO_MIN_NS 3000000ull        /* 3 ms: veth RTT is ~20 us, but 2 shared cores stall */
#define XP_RTO_MAX_NS 200000000ull
#define XP_PING_NS 50000000ull          /* first ping of a server that is still processing */
#define XP_DEAD_NS 4000000000ull        /* silence that kills a channel / drops a response */
#define XP_MIN_FRAG 64
#define XP_MAX_FRAG 9000

enum xp_type {
    XP_T_REQ = 1,       /* request data, client -> server */
    XP_T_RESP = 2,      /* response data, server -> client */
    XP_T_ACK_REQ = 3,   /* server acks request fragments */
    XP_T_ACK_RESP = 4,  /* client acks response fragments */
    XP_T_RESET = 5,     /* server does not know the client's view of it (restarted) */
};
#define XP_F_PLEASE_ACK 0x01u

struct xp_hdr {
    uint8_t type, flags;
    uint16_t plen;
    uint32_t frag;
    uint32_t nfrags;
    uint32_t msg_len;
    uint16_t frag_size;
    uint64_t cnonce, snonce, id, aux;
};

/* Encode into exactly XP_HDR_LEN bytes. */
void xp_hdr_encode(const struct xp_hdr *h, uint8_t *out);
/* Decode and validate a packet (header + payload of len bytes): magic,
 * version, type, payload length, fragment geometry.  Returns 0 or -1. */
int  xp_hdr_decode(const uint8_t *pkt, size_t len, struct xp_hdr *h);
/* Fragments a message of len bytes needs with fragment size fs (>= 1). */
uint32_t xp_nfrags(uint32_t len, uint32_t fs);

/* A peer: IPv4 address and UDP port (network byte order) plus its MAC,
 * which the engine only carries around for the glue.  Equality is ip+port. */
struct xp_addr {
    uint32_t ip;
    uint16_t port;
    uint8_t mac[6];
};

struct xp_engine;
struct xp_chan;
struct xp_srpc;

struct xp_ops {
    /* Send one packet to `to` from local port lport (network order): hdr
     * (XP_HDR_LEN bytes) followed by pl.  Returns 0, or -1 when the TX path
     * is full (nothing sent; the engine tries again later). */
    int  (*xmit)(void *ctx, const struct xp_addr *to, uint16_t lport,
                 const uint8_t *hdr, const uint8_t *pl, uint32_t plen);
    /* A complete new request for local port lport.  The application answers
     * with xp_reply (now or later) exactly once; the request bytes stay valid
     * until then. */
    void (*request)(void *ctx, struct xp_srpc *r, uint16_t lport,
                    const uint8_t *req, uint32_t len);
};

struct xp_stats {
    uint64_t pkts_in, pkts_out, bad_in, dup_in, retransmits, fast_retransmits,
             acks_out, budget_drops, tx_full, requests, responses;
};

/* frag_size: payload bytes per packet (XP_MIN_FRAG..XP_MAX_FRAG).
 * nonce: this engine's identity, non-zero (random per process start). */
struct xp_engine *xp_engine_create(const struct xp_ops *ops, void *ctx, uint32_t frag_size,
                                   uint64_t nonce);
/* Frees everything: outstanding calls complete with CRAM_TRANSPORT_ERROR;
 * server RPCs awaiting xp_reply are orphaned (their reply is discarded). */
void xp_engine_destroy(struct xp_engine *e);
uint64_t xp_engine_nonce(const struct xp_engine *e);
const struct xp_stats *xp_engine_stats(const struct xp_engine *e);

/* One received UDP payload, from `from` to local port lport. */
void xp_input(struct xp_engine *e, const struct xp_addr *from, uint16_t lport,
              const uint8_t *pkt, size_t len, uint64_t now_ns);
/* Timeouts and retransmissions due at now_ns, then xp_flush.  Returns the
 * amount of work done (0 = nothing). */
int  xp_tick(struct xp_engine *e, uint64_t now_ns);
/* Send what windows and the TX path allow.  Returns packets sent. */
int  xp_flush(struct xp_engine *e, uint64_t now_ns);
/* Non-zero while anything waits on a timer or on TX space (the glue keeps
 * ticking and busy-polling only then). */
int  xp_busy(const struct xp_engine *e);
/* Non-zero while messages wait to be sent (windows open or TX space free):
 * the busy poller must keep calling xp_flush. */
int  xp_tx_waiting(const struct xp_engine *e);

/* ---- client ------------------------------------------------------------ */

typedef void (*xp_done_fn)(void *arg, cram_status st, const uint8_t *resp, uint32_t len);

struct xp_chan *xp_chan_open(struct xp_engine *e, const struct xp_addr *server, uint16_t lport,
                             uint64_t nonce);
int  xp_chan_alive(const struct xp_chan *c);
/* Outstanding calls complete with CRAM_TRANSPORT_ERROR inside this call. */
void xp_chan_close(struct xp_chan *c);
/* Queue a request (the bytes are copied).  cb runs exactly once, later,
 * from xp_input, xp_tick, xp_chan_close or xp_engine_destroy -- never from
 * here.  timeout_ns 0 = none.  Returns CRAM_OK, CRAM_REQUEST_TOO_LARGE
 * (> WIRE_MAX_MESSAGE) or CRAM_TRANSPORT_ERROR (dead channel / no memory). */
cram_status xp_call(struct xp_chan *c, const struct iovec *iov, int iovcnt, uint64_t timeout_ns,
                    xp_done_fn cb, void *arg, uint64_t now_ns);

/* ---- server ------------------------------------------------------------ */

/* Send the response (copied) and release the request.  On an orphaned rpc
 * (engine gone, or the client gave up on it) the response is discarded. */
void xp_reply(struct xp_srpc *r, const struct iovec *iov, int iovcnt, uint64_t now_ns);
const struct xp_addr *xp_srpc_peer(const struct xp_srpc *r);

#endif /* CRAM_XDP_PROTO_H */
