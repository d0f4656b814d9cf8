/*
 * failure_detector.h -- a server's half of failure detection (RAMCloud
 * style): every interval it pings one random other server that its server
 * list shows as up; when a ping times out or the connection fails, it tells
 * the coordinator (through the hint callback), which verifies with its own
 * probes before declaring anything.  This side never decides a crash.
 *
 * Pings are targeted: the request is a PING header followed by a struct
 * wire_target naming the peer's server id, and a process at that locator
 * that is not (or not yet) that server answers CRAM_WRONG_SERVER (or
 * CRAM_RETRY), which counts as a failed ping.
 *
 * Thread rule: an fdet belongs to the loop's thread (the server's dispatch
 * thread), like the server_list it reads; every call happens there.
 */
#ifndef CRAM_FAILURE_DETECTOR_H
#define CRAM_FAILURE_DETECTOR_H

#include <stdint.h>
#include "common/serverlist.h"
#include "transport/transport.h"

#define FDET_DEFAULT_INTERVAL_MS 100
#define FDET_DEFAULT_TIMEOUT_MS  250

typedef struct fdet fdet;

struct fdet_config {
    uint32_t interval_ms;       /* between pings (already scaled for tests) */
    uint32_t timeout_ms;        /* per ping */
};

/* The detector suspects server `id`: why is "timeout", "transport error"... */
typedef void (*fdet_hint_fn)(void *arg, uint64_t id, const char *why);

/* A detector over sl on loop l; idle until fdet_start.  NULL if out of memory. */
fdet *fdet_create(tp_loop *l, const server_list *sl, const struct fdet_config *cfg,
                  fdet_hint_fn hint, void *hint_arg);
/* Begin pinging as server self_id (never pings itself).  Calling it again
 * only changes the id. */
void  fdet_start(fdet *f, uint64_t self_id);
/* Stops pinging, closes the detector's sessions (an outstanding ping ends
 * without a hint) and frees it. */
void  fdet_destroy(fdet *f);

/* Pings sent, and pings that failed (for logs and tests). */
uint64_t fdet_pings_sent(const fdet *f);
uint64_t fdet_pings_failed(const fdet *f);

/* The pure choice behind each ping: entry number rnd % k among the k
 * servers of sl that are up, are not self_id and have a tcp locator; NULL
 * when there is none. */
const struct sl_entry *fdet_choose_peer(const server_list *sl, uint64_t self_id, uint64_t rnd);

#endif
