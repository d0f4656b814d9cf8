/*
 * client_int.h -- libcram internals: the handle, the table-config cache, the
 * RPC helpers with retry, and the pure pieces (routing, multi-op planning,
 * response parsing) that tests/unit/test_client.c checks without a cluster.
 *
 * Threads: everything reachable from a cram_client belongs to the one thread
 * that currently uses the handle (see cram.h "Threads"); nothing here locks.
 */
#ifndef CRAM_CLIENT_INT_H
#define CRAM_CLIENT_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include "cram.h"
#include "common/wire.h"
#include "transport/transport.h"

#define CL_LOC_MAX          256     /* one locator string */
#define CL_COORD_LOC_MAX    512
#define CL_RPC_TIMEOUT_MS   5000u   /* per-RPC cap, so a dead server is noticed */
#define CL_BACKOFF_START_US 1000u   /* first retry delay */
#define CL_BACKOFF_CAP_US   100000u /* largest retry delay */
#define CL_REFRESH_AFTER_US 8000u   /* RETRY: ask for the tablet map again only
                                     * once the back-off got this long (the
                                     * fourth RETRY in a row) */
#define CL_DEFAULT_TIMEOUT_MS 30000u
#define CL_CONNECT_TIMEOUT_MS 5000u

/* One cached transport session per server locator.  A dropped session keeps
 * its slot (s == NULL) so tablets can keep referring to it by index. */
struct cl_sess {
    char locator[CL_LOC_MAX];
    tp_session *s;
};

/* A tablet of a cached table config: the hash range [start, end] is owned by
 * server_id, reachable at locator (session slot `sess`, -1 = not looked up). */
struct cl_tablet {
    uint64_t start;
    uint64_t end;
    uint64_t server_id;
    int recovering;
    int sess;
    char locator[CL_LOC_MAX];
};

/* Cached config of one table: tablets sorted by start, non-overlapping. */
struct cl_table {
    uint64_t id;
    int stale;                  /* refetch before the next use */
    size_t n;
    struct cl_tablet *t;
    struct cl_table *next;
};

struct cram_client {
    tp_loop *loop;
    char spec[CL_COORD_LOC_MAX];        /* coordinator locator as given */
    char cluster[256];
    char coord_loc[CL_COORD_LOC_MAX];   /* resolved tcp locator, "" = locate again */
    tp_session *coord;
    uint32_t timeout_ms;
    uint32_t poll_us;
    struct cl_table *tables;
    struct cl_sess *sess;
    size_t nsess;
    size_t capsess;
    /* Response of the last synchronous RPC (copied out of the transport's
     * buffer in the completion callback); grown, never shrunk, so the
     * steady-state path does not allocate. */
    uint8_t *rbuf;
    size_t rcap;
    uint32_t rlen;
    uint64_t rng;
    /* async.c: ops by state; every op ever allocated is on async_all */
    struct cl_async *async_free;
    struct cl_async *async_retry;   /* waiting for their back-off to pass */
    struct cl_async *async_done;    /* callbacks not yet run */
    struct cl_async *async_all;
    size_t async_pending;           /* started, callback not yet run */
    size_t async_inflight;          /* sent, transport callback not yet run */
};

/* Retry state of one library call. */
struct cl_retry {
    uint64_t deadline_ms;       /* clock_mono_ms() value at which we give up */
    uint32_t backoff_us;
};

/* ---- handle, sessions, RPCs (client.c) ---------------------------------- */

/* Allocate a handle without contacting anyone (cram_connect adds the check
 * that the coordinator answers). */
cram_status cl_client_new(const char *locator, const char *cluster, cram_client **out);
void        cl_retry_init(const cram_client *c, struct cl_retry *r);
/* Sleep a jittered, exponentially growing delay.  Returns 0, or -1 when the
 * deadline has passed (the caller then answers CRAM_TIMEOUT). */
int         cl_backoff(cram_client *c, struct cl_retry *r);
uint32_t    cl_rpc_timeout(const struct cl_retry *r);
/* The next jittered back-off delay (advances r's back-off). */
uint32_t    cl_backoff_next_us(cram_client *c, struct cl_retry *r);
/* Free every async op of the handle (the loop must be gone). */
void        cl_async_free_all(cram_client *c);
/* Session slot for a locator (created on demand); -1 when out of memory. */
int         cl_sess_slot(cram_client *c, const char *locator);
/* Live session of a slot, opened on demand; NULL with *st on failure. */
tp_session *cl_sess_get(cram_client *c, int slot, cram_status *st);
void        cl_sess_drop(cram_client *c, int slot);
/* Forget the coordinator's session and resolved locator. */
void        cl_coord_drop(cram_client *c);
/* Send one request and wait for its response, which lands in c->rbuf /
 * c->rlen.  Returns the transport status (CRAM_OK, CRAM_TIMEOUT,
 * CRAM_TRANSPORT_ERROR, CRAM_REQUEST_TOO_LARGE, CRAM_NO_MEMORY). */
cram_status cl_rpc(cram_client *c, tp_session *s, const struct iovec *iov, int iovcnt,
                   uint32_t timeout_ms);
/* One coordinator RPC with retries on transport errors and CRAM_RETRY.
 * body may be NULL (empty request).  Returns the coordinator's status (or
 * CRAM_TIMEOUT/CRAM_NO_MEMORY/CRAM_INTERNAL_ERROR); on CRAM_OK the protobuf
 * response body is c->rbuf + sizeof(struct wire_resp_hdr). */
cram_status cl_coord_call(cram_client *c, struct cl_retry *r, uint16_t opcode,
                          const void *body, size_t body_len,
                          const uint8_t **resp_body, size_t *resp_body_len);
/* Cached config of a table, fetched when missing or stale.  Returns CRAM_OK,
 * CRAM_TABLE_DOESNT_EXIST, CRAM_TIMEOUT, CRAM_NO_MEMORY, CRAM_INTERNAL_ERROR. */
cram_status cl_table_get(cram_client *c, struct cl_retry *r, uint64_t table_id,
                         struct cl_table **out);
void        cl_table_invalidate(cram_client *c, uint64_t table_id);
void        cl_table_free(struct cl_table *t);
/* True for the statuses the library hides by refreshing and retrying. */
int         cl_status_is_reroute(cram_status st);
/* After a reroute status: 1 if the table's tablet map should be fetched
 * from the coordinator again (client.c). */
int         cl_reroute_refresh(const struct cl_retry *r, cram_status st);

/* ---- pure helpers (parse.c); no network ------------------------------- */

/* Index of the tablet whose [start, end] holds hash, or -1. */
int  cl_route(const struct cl_table *t, uint64_t hash);
/* Sort tablets by start and check they do not overlap.  0 or -1. */
int  cl_table_normalize(struct cl_table *t);
/* Order a server's locators for use: out gets them joined by ';', the
 * preferred first (the protocols named in the environment variable
 * CRAM_TRANSPORT, e.g. "xdp", then tcp, then the rest as advertised), as many
 * whole locators as fit.  Each element of locs may itself hold several
 * locators joined by ';'.  cl_sess_get opens the first that opens.  0 or -1. */
int  cl_pick_locator(char *const *locs, size_t n, char *out, size_t outlen);
void cl_rules_to_wire(const cram_reject_rules *in, struct wire_reject_rules *out);

/* Response parsers.  Each returns 0 with the server's status in *st (and the
 * body fields when present), or -1 if the bytes are malformed. */
int cl_parse_status(const uint8_t *resp, uint32_t len, cram_status *st);
int cl_parse_read(const uint8_t *resp, uint32_t len, cram_status *st, uint64_t *version,
                  const uint8_t **value, uint32_t *value_len);
int cl_parse_write(const uint8_t *resp, uint32_t len, cram_status *st, uint64_t *version);
int cl_parse_incr(const uint8_t *resp, uint32_t len, cram_status *st, uint64_t *version,
                  int64_t *new_value);
/* Multi-op response: checks the header and that exactly `count` items follow
 * (values only for MULTI_READ items with status OK).  On success *items
 * points at the first item. */
int cl_parse_multi(const uint8_t *resp, uint32_t len, int is_read, uint32_t count,
                   cram_status *st, const uint8_t **items);
/* Enumerate response: checks header and every item's lengths. */
int cl_parse_enum(const uint8_t *resp, uint32_t len, cram_status *st, uint32_t *count,
                  uint64_t *next_cursor, int *done, const uint8_t **items);

/* ---- multi-op planning (parse.c) -------------------------------------- */

enum cl_multi_kind { CL_MULTI_READ = 0, CL_MULTI_WRITE = 1, CL_MULTI_REMOVE = 2 };

/* One message of a multi-op: the ops order[first .. first+count-1], all for
 * destination dest; req_bytes is the request size. */
struct cl_batch {
    uint32_t dest;
    uint32_t first;
    uint32_t count;
    size_t req_bytes;
};

/* Bytes an op adds to a request / (upper estimate) to a response. */
size_t cl_multi_item_req_bytes(int kind, const cram_multi_op *op);
size_t cl_multi_item_resp_bytes(int kind, const cram_multi_op *op);
/*
 * Group the ops idx[0..n-1] by dest[idx] and cut each group into batches of
 * at most max_items items whose request and estimated response stay within
 * max_bytes.  order[] (n entries, caller-allocated) receives the op indices
 * grouped by destination; batches[] (at most n entries, caller-allocated)
 * the messages.  An op that alone exceeds max_bytes is left out of order[]
 * and reported in too_large[] (n entries; may be NULL if none can be).
 * Returns the number of batches; *norder / *ntoo_large the counts.
 */
size_t cl_multi_plan(int kind, const cram_multi_op *ops, const uint32_t *idx, size_t n,
                     const uint32_t *dest, size_t max_bytes, uint32_t max_items,
                     uint32_t *order, size_t *norder, struct cl_batch *batches,
                     uint32_t *too_large, size_t *ntoo_large);

#endif /* CRAM_CLIENT_INT_H */
