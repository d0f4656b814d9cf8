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
 * Threads: frames, credits, rings and reassembly belong to one connection,
 * on its loop's thread; the region table and the holds are process-wide in
 * rdma.c, under its lock.
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

/* ---- registered memory (zero-copy responses) ------------------------------ */

/*
 * The region table: memory the application registered for zero-copy
 * responses (the master's log segment slots, tp_rdma_register), with, per
 * RDMA device the process uses, the local key a scatter entry needs and the
 * verbs layer's handle (an ibv_mr, opaque here).  Lookups (is this value
 * inside a registered region, and under which key) are a binary search over
 * the live regions sorted by address.
 *
 * In-flight references: every send that points into a region holds a
 * reference on it until its completion.  Removing a region that is still
 * referenced only marks it dying (no new send may use it: lookups skip it);
 * the handles come back for deregistration when the last reference drops.
 * (That keeps the NIC's view of the pages valid; the memory's owner must
 * still not reuse the memory while sends point into it -- see rb_holds.)
 *
 * On-demand paging: where a device can send from ODP memory
 * (IBV_ACCESS_ON_DEMAND), the verbs layer registers the whole arena once
 * (rb_reg_set_odp) and regions inside it take that key for the device, with
 * no per-region registration (rb_reg_needs_mr says so).
 */
#define RB_MAX_DEVS 4                   /* RDMA devices a process sends from */

struct rb_reg {
    uintptr_t addr;
    size_t len;
    uint32_t lkey[RB_MAX_DEVS];
    void *mr[RB_MAX_DEVS];              /* per-region handle (NULL: none / ODP) */
    uint8_t keyed;                      /* bit d: lkey[d] is valid */
    uint8_t used, dying;
    uint32_t inflight;                  /* sends pointing into it, not completed */
    uint32_t next_free;
};

struct rb_odp {
    uintptr_t addr;                     /* 0 = none */
    size_t len;
    uint32_t lkey;
    void *mr;
};

struct rb_regtab {
    struct rb_reg *e;                   /* pool; an index stays valid while used */
    uint32_t cap, free_head;
    uint32_t *sorted;                   /* live (not dying) entries by address */
    uint32_t nlive, ndying;
    uintptr_t arena;                    /* range ODP may cover (rb_reg_set_arena) */
    size_t arena_len;
    struct rb_odp odp[RB_MAX_DEVS];     /* per device: the arena's ODP registration */
};

void rb_reg_init(struct rb_regtab *t);
/* Frees the table (not the handles: deregister them first). */
void rb_reg_free(struct rb_regtab *t);
/* Add [addr, addr+len).  Returns its index, or -1: empty, overlapping a live
 * region, or out of memory.  Regions inside an arena with ODP on device d
 * are keyed for d at once. */
int  rb_reg_add(struct rb_regtab *t, uintptr_t addr, size_t len);
/* The live region starting at addr, or -1. */
int  rb_reg_lookup(const struct rb_regtab *t, uintptr_t addr);
/* The live region holding all of [addr, addr+n) and keyed for device dev,
 * or -1 (then the bytes must be copied). */
int  rb_reg_find(const struct rb_regtab *t, uintptr_t addr, size_t n, int dev);
/* Does region idx need its own registration on device dev (no key yet and
 * no ODP registration covering it)? */
int  rb_reg_needs_mr(const struct rb_regtab *t, int idx, int dev);
void rb_reg_set_key(struct rb_regtab *t, int idx, int dev, uint32_t lkey, void *mr);
/* Remove the region starting at addr.  Returns 1 when it is gone now: its
 * per-device handles are in mrs[] (NULL where none) for deregistration;
 * 0 when sends still point into it (it is dying: the handles come back from
 * the rb_reg_unref that drops the last reference); -1 if unknown. */
int  rb_reg_remove(struct rb_regtab *t, uintptr_t addr, void *mrs[RB_MAX_DEVS]);
void rb_reg_ref(struct rb_regtab *t, int idx);
/* Drop a reference.  1 when that removed a dying region (handles in mrs[]),
 * else 0. */
int  rb_reg_unref(struct rb_regtab *t, int idx, void *mrs[RB_MAX_DEVS]);
/* The arena (the whole log) that one ODP registration per device may cover. */
void rb_reg_set_arena(struct rb_regtab *t, uintptr_t addr, size_t len);
/* Device dev registered the arena on demand: every region inside it is
 * keyed for dev with lkey (also those added later). */
void rb_reg_set_odp(struct rb_regtab *t, int dev, uint32_t lkey, void *mr);

/* ---- holds: the owner's reuse rule ------------------------------------------ */

/*
 * A region's owner must not reuse memory while a send points into it.  The
 * master's rule is the log cleaner's epochs (logcleaner/lc_epoch.h): a send
 * notes the epoch current when it is posted (its tag), and the transport
 * publishes the oldest tag of its sends still in flight; a segment retired at
 * a tag >= that one waits.  rb_holds keeps the tags of sends in flight as a
 * queue of (tag, count) buckets in tag order, so the oldest is the front.
 */
struct rb_hold_bucket {
    uint64_t tag;
    uint32_t n;
};

struct rb_holds {
    struct rb_hold_bucket *q;           /* ring */
    uint32_t cap, head, count;          /* count: buckets in use */
    uint64_t published;                 /* oldest last handed to the owner */
};

void     rb_holds_init(struct rb_holds *h);
void     rb_holds_free(struct rb_holds *h);
/* A send tagged `tag` (> 0) is posted.  0, or -1 (out of memory). */
int      rb_holds_add(struct rb_holds *h, uint64_t tag);
/* The send tagged `tag` completed (or can no longer run). */
void     rb_holds_drop(struct rb_holds *h, uint64_t tag);
/* The oldest tag in flight; 0 = none. */
uint64_t rb_holds_oldest(const struct rb_holds *h);
/* 1 (and *oldest) when the oldest changed since it was last published. */
int      rb_holds_publish(struct rb_holds *h, uint64_t *oldest);

/* ---- outgoing messages -------------------------------------------------------- */

struct rb_sge {
    uintptr_t addr;                     /* 0 = "copy these bytes into the frame buffer" */
    const uint8_t *src;                 /* when addr == 0: where the bytes are */
    uint32_t len;
    uint32_t lkey;
    int reg;                            /* direct entries: the region (rb_regtab index) */
};

/* Plan the payload [off, off+n) of a message given as iovecs, for sending
 * from device dev: up to RB_MAX_SGE - 1 entries (the header takes the first
 * one).  Pieces inside a registered region keyed for dev become direct
 * entries; others are marked for copying (adjacent copies merge) -- the
 * caller copies them, in order, into the frame's own registered send
 * buffer.  Returns the number of entries, or -1 if the range needs more
 * entries than allowed (the caller then copies the whole range). */
int rb_plan(const struct iovec *iov, int iovcnt, uint32_t off, uint32_t n,
            const struct rb_regtab *t, int dev, struct rb_sge *out);

/* The part [off, off+n) of a message planned whole (m[0..nm) from rb_plan
 * with off 0): at most nm entries into out.  Returns their number, or -1 if
 * the message is shorter. */
int rb_plan_window(const struct rb_sge *m, int nm, uint32_t off, uint32_t n, struct rb_sge *out);

/* One scatter entry of a posted send (an ibv_sge, without verbs). */
struct rb_sgl {
    uintptr_t addr;
    uint32_t len;
    uint32_t lkey;
};

/* Build the scatter list of one frame: the encoded header (RB_HDR_LEN bytes,
 * already at slot) and the planned payload.  Copied pieces go into the slot
 * (slot_lkey) after the header -- those before the first direct entry extend
 * the first entry, later ones get entries of their own -- and direct entries
 * point at the registered memory.  Returns the number of entries (<=
 * RB_MAX_SGE) and sets *slot_used (bytes of the slot written). */
int rb_sgl_build(const struct rb_sge *plan, int np, uint8_t *slot, uint32_t slot_lkey,
                 struct rb_sgl *out, uint32_t *slot_used);

/* What a posted send holds until its completion: references on the regions
 * it points into and its tag in the holds. */
struct rb_txref {
    uint64_t tag;                       /* 0 = holds nothing */
    uint32_t nreg;
    int reg[RB_MAX_SGE];
};

/* Take the references of a send planned as plan[0..np) under `tag` (h NULL:
 * region references only).  Nothing is held when no entry is direct.  0,
 * or -1 (out of memory: nothing held; copy instead). */
int rb_tx_hold(struct rb_txref *x, struct rb_regtab *t, struct rb_holds *h,
               const struct rb_sge *plan, int np, uint64_t tag);
/* Its completion (success, error or flush, or the queue pair destroyed):
 * drop them.  Returns how many handles (<= RB_MAX_SGE * RB_MAX_DEVS) of
 * regions that died with it were put into dereg[] for deregistration. */
int rb_tx_release(struct rb_txref *x, struct rb_regtab *t, struct rb_holds *h,
                  void *dereg[RB_MAX_SGE * RB_MAX_DEVS]);

/* Frames a message of total bytes needs. */
uint32_t rb_nframes(uint32_t total);
/* Whether a frame of this many bytes (header included) goes inline. */
int rb_use_inline(uint32_t frame_len, uint32_t max_inline);

#endif /* CRAM_RDMA_BUF_H */
