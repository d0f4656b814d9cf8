/*
 * rdma_buf.h -- everything of the rdma: transport that is not a verbs call:
 * framing, credit-based flow control, the receive-buffer ring, message
 * fragmentation and reassembly, and the zero-copy plan for responses.
 * Pure code, unit-tested here (tests/unit/test_rdma_buf.c) where no RDMA
 * device exists; transport/rdma.c only turns its decisions into verbs.
 *
 * Frames.  Every RDMA SEND carries one frame: a 24-byte header (below, all
 * fields little endian) plus up to (recv buffer size - 24) payload bytes.
 * A message (request or response, <= WIRE_MAX_MESSAGE) is cut into frames
 * sent in order; RC queue pairs deliver in order, so each message's frames
 * arrive with increasing offsets (frames of different messages may
 * interleave).  Anything else is a protocol error: the connection closes.
 *   off size
 *    0   1  magic RB_MAGIC
 *    1   1  type (RB_T_REQ, RB_T_RESP, RB_T_CREDIT)
 *    2   2  credits returned: receive buffers the sender re-posted since
 *           its last frame
 *    4   4  payload bytes in this frame
 *    8   8  rpc id
 *   16   4  message length
 *   20   4  offset of this frame's payload in the message
 *
 * Credits.  Each side posts RB_RX_DEPTH receives; a frame may only be sent
 * when the peer has a posted receive for it (a credit).  The last credit is
 * kept for credit-only frames so two senders can never block each other.
 * Credits come back piggybacked on every frame, or in an RB_T_CREDIT frame
 * once half the ring was re-posted with nothing else to send.
 *
 * Threads: all objects belong to one connection, on its loop's thread.
 */
#ifndef CRAM_RDMA_BUF_H
#define CRAM_RDMA_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define RB_MAGIC 0xC5
#define RB_HDR_LEN 24
#define RB_RX_DEPTH 128                 /* receives posted per connection */
#define RB_BUF_SIZE 16384               /* bytes per receive buffer (one frame) */
#define RB_MAX_PAYLOAD (RB_BUF_SIZE - RB_HDR_LEN)
#define RB_INLINE_MAX 188               /* frames up to this size go IBV_SEND_INLINE */
#define RB_MAX_SGE 4                    /* scatter entries per send */
#define RB_REASM_MAX 64                 /* messages being reassembled at once */

enum rb_type { RB_T_REQ = 1, RB_T_RESP = 2, RB_T_CREDIT = 3 };

struct rb_hdr {
    uint8_t type;
    uint16_t credits;
    uint32_t len;
    uint64_t id;
    uint32_t total;
    uint32_t off;
};

void rb_hdr_encode(const struct rb_hdr *h, uint8_t *out);
/* Decode and validate a received frame of n bytes.  Returns 0 or -1. */
int  rb_hdr_decode(const uint8_t *frame, size_t n, struct rb_hdr *h);

/* ---- credits -------------------------------------------------------------- */

struct rb_credits {
    uint32_t avail;         /* frames we may still send (peer's posted receives) */
    uint32_t to_return;     /* our re-posted receives not yet announced */
};

/* Initially both sides have posted RB_RX_DEPTH receives. */
void     rb_credits_init(struct rb_credits *c, uint32_t peer_depth);
/* May a frame go now?  Data frames leave the last credit for credit frames. */
int      rb_credits_can_send(const struct rb_credits *c, int credit_frame);
/* A frame was sent: uses a credit, returns the count to piggyback on it. */
uint16_t rb_credits_on_send(struct rb_credits *c);
/* The peer returned n credits (from a received header).  -1 if that would
 * exceed its depth (protocol error). */
int      rb_credits_grant(struct rb_credits *c, uint32_t n, uint32_t peer_depth);
/* One of our receive buffers was re-posted. */
void     rb_credits_reposted(struct rb_credits *c);
/* Should an explicit credit frame go (nothing else is queued)? */
int      rb_credits_want_explicit(const struct rb_credits *c, uint32_t depth);

/* ---- receive ring ---------------------------------------------------------- */

/* Buffer i of the ring lives at base + i * RB_BUF_SIZE inside one
 * registered region; its work-request id is i.  Buffers are re-posted
 * in batches once consumed. */
enum { RB_BUF_OURS = 0, RB_BUF_POSTED = 1, RB_BUF_PENDING = 2 };

struct rb_rxring {
    uint8_t *base;
    uint32_t depth;
    uint32_t posted;                    /* receives currently posted */
    uint32_t pending[RB_RX_DEPTH];      /* consumed, waiting to be re-posted */
    uint32_t npending;
    uint8_t  state[RB_RX_DEPTH];        /* RB_BUF_* */
};

void rb_rx_init(struct rb_rxring *r, uint8_t *base, uint32_t depth);
/* A completion named buffer wr_id: returns its bytes, or NULL for a bad id
 * (not posted).  The buffer stays ours until rb_rx_release. */
uint8_t *rb_rx_complete(struct rb_rxring *r, uint64_t wr_id);
void rb_rx_release(struct rb_rxring *r, uint32_t idx);
/* Take up to max buffer indices to post (marks them posted). */
uint32_t rb_rx_take(struct rb_rxring *r, uint32_t *idx, uint32_t max);

/* ---- reassembly ------------------------------------------------------------ */

struct rb_reasm_slot {
    int used;
    uint8_t type;
    uint64_t id;
    uint32_t total, got;
    uint8_t *buf;
};

struct rb_reasm {
    struct rb_reasm_slot s[RB_REASM_MAX];
    uint64_t bytes;                     /* held by partial messages */
};

/* Add a data frame.  Returns 1 and sets *msg (malloc'ed; caller frees) and
 * *len when the message is complete, 0 when more frames are needed, -1 on
 * a protocol error (offset out of order, length changes, too many partial
 * messages, too large). */
int  rb_reasm_add(struct rb_reasm *r, const struct rb_hdr *h, const uint8_t *payload,
                  uint8_t **msg, uint32_t *len);
void rb_reasm_free(struct rb_reasm *r);

/* ---- outgoing messages -------------------------------------------------------- */

/* Memory the application registered (log segments): response bytes inside
 * such a region are sent straight from it (scatter entries with its lkey)
 * instead of being copied into a send buffer. */
struct rb_region {
    uintptr_t addr;
    size_t len;
    uint32_t lkey;
};

struct rb_sge {
    uintptr_t addr;                     /* 0 = "copy these bytes into the frame buffer" */
    const uint8_t *src;                 /* when addr == 0: where the bytes are */
    uint32_t len;
    uint32_t lkey;
};

/* Plan the payload [off, off+n) of a message given as iovecs: up to
 * RB_MAX_SGE - 1 entries (the header takes the first one).  Pieces inside a
 * registered region become direct entries; others are marked for copying
 * (adjacent copies merge) -- the caller copies them, in order, into the
 * frame's own registered send buffer.  Returns the number of entries, or -1
 * if the range needs more entries than allowed (the caller then copies the
 * whole range). */
int rb_plan(const struct iovec *iov, int iovcnt, uint32_t off, uint32_t n,
            const struct rb_region *regs, int nregs, struct rb_sge *out);

/* Frames a message of total bytes needs. */
uint32_t rb_nframes(uint32_t total);
/* Whether a frame of this many bytes (header included) goes inline. */
int rb_use_inline(uint32_t frame_len, uint32_t max_inline);

#endif /* CRAM_RDMA_BUF_H */
