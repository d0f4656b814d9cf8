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
 * The detector also watches its own loop: its timer runs late when the
 * dispatch thread is stalled (long work in one turn, page faults, a starved
 * CPU).  Such stalls are logged (>= FDET_STALL_LOG_MS), and a ping whose
 * timeout fired late because of one is not reported: its answer may be
 * sitting unread in this server's socket.  A session to a peer that breaks
 * (the kernel closed the peer's socket: it died) is reported at once.
 *
 * Thread rule: an fdet belongs to the loop's thread (the server's dispatch
 * thread), like the server_list it reads; every call happens there.  The
 * fdet_verify_* functions at the end are pure (no fdet, no I/O).
 */
#ifndef CRAM_FAILURE_DETECTOR_H
#define CRAM_FAILURE_DETECTOR_H

#include <stdint.h>
#include "common/serverlist.h"
#include "transport/transport.h"

#define FDET_DEFAULT_INTERVAL_MS 100
#define FDET_DEFAULT_TIMEOUT_MS  250
#define FDET_STALL_LOG_MS        1000   /* loop stalls this long are logged */

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

/* Pings whose timeout fired late because this server's own loop was stalled
 * (no hint was sent for them: the answer may be waiting unread), and the
 * longest stall of the loop seen by the detector's timer, in ms. */
uint64_t fdet_pings_self_stalled(const fdet *f);
uint64_t fdet_max_stall_ms(const fdet *f);

/* The pure choice behind each ping: entry number rnd % k among the k
 * servers of sl that are up, are not self_id and have a tcp locator; NULL
 * when there is none. */
const struct sl_entry *fdet_choose_peer(const server_list *sl, uint64_t self_id, uint64_t rnd);

/* ---- verification: the coordinator's decision rule ---------------------
 *
 * Before declaring a suspect crashed, the coordinator probes it (targeted
 * PINGs, one at a time) and feeds each probe's outcome to fdet_verify_step.
 * The rule tells "the process is gone" from "the process is slow":
 *
 *  - GONE: the connection was refused or reset, or another process answers
 *    at the server's locator (CRAM_WRONG_SERVER / CRAM_RETRY).  When a process
 *    dies (kill -9, crash, exit) the kernel closes its sockets, so this is
 *    strong evidence: gone_tries GONE outcomes in a row, gone_interval_ms
 *    apart, declare the crash -- tens of milliseconds after the suspicion.
 *  - SILENT: connected, but no answer within the probe's timeout.  That is
 *    what a live server looks like while its dispatch thread is busy (a
 *    recovery replaying, first touches of fresh memory, a starved CPU), and
 *    also what a stopped process or a crashed *host* (no RST comes back)
 *    looks like.  Only a server that stays silent for silent_ms from the
 *    start of the verification (and at least two probes) is declared.
 *  - ANSWERED: alive; the verification ends.
 *
 * So a kill -9 is declared fast, a slow server gets seconds, and a host
 * crash (or a wedged server) is detected after silent_ms only.
 */
#define FDET_VERIFY_GONE_TRIES        2
#define FDET_VERIFY_GONE_INTERVAL_MS  40
#define FDET_VERIFY_PROBE_TIMEOUT_MS  500
#define FDET_VERIFY_SILENT_MS         4000

enum fdet_probe {
    FDET_PROBE_ANSWERED,        /* the server answered its id: alive */
    FDET_PROBE_GONE,            /* refused, reset, or another process answers */
    FDET_PROBE_SILENT,          /* connected, no answer before the timeout */
};

enum fdet_verdict {
    FDET_ALIVE,                 /* stop verifying: it answered */
    FDET_PROBE_AGAIN,           /* send the next probe at *next_ms */
    FDET_DECLARE,               /* declare it crashed */
};

struct fdet_verify_config {
    uint32_t gone_tries;        /* GONE outcomes in a row that declare (>= 1) */
    uint32_t gone_interval_ms;  /* after a GONE outcome, the next probe waits this long */
    uint32_t probe_timeout_ms;  /* each probe's timeout (used by the caller) */
    uint32_t silent_ms;         /* SILENT for this long since the start declares */
};

/* One verification's state; fdet_verify_begin fills it. */
struct fdet_verify {
    uint64_t start_ms;
    uint32_t probes;            /* outcomes seen */
    uint32_t gone_run;          /* GONE outcomes in a row */
    uint32_t silent;            /* SILENT outcomes in all */
};

/* A config with every 0 field replaced by its default (FDET_VERIFY_*). */
struct fdet_verify_config fdet_verify_defaults(const struct fdet_verify_config *cfg);
void fdet_verify_begin(struct fdet_verify *v, uint64_t now_ms);
/* Account one probe's outcome at now_ms; for FDET_PROBE_AGAIN *next_ms is
 * when to send the next probe (now_ms after a SILENT one: it already
 * waited its timeout).  cfg must have no 0 fields. */
enum fdet_verdict fdet_verify_step(struct fdet_verify *v, const struct fdet_verify_config *cfg,
                                   enum fdet_probe outcome, uint64_t now_ms, uint64_t *next_ms);

#endif
