/*
 * lc_epoch.h -- epoch-based reclamation of log memory (DESIGN.md §7).
 *
 * A thread that may hold pointers into log segments across the dispatch
 * thread's mutations (a cleaner worker, a transport that sends values from
 * log memory after tp_rpc_reply returned, a test's reader) registers once
 * and brackets each such use with lc_epoch_enter / lc_epoch_exit.  The
 * dispatch thread takes a segment out of every index first (hash table
 * entries moved, segment out of the log), then calls lc_epoch_retire, which
 * returns a tag; the segment's memory may be reused once lc_epoch_safe(tag):
 * every reader that was inside when it was retired has left.  A reader that
 * entered later can only have reached the new locations.
 *
 * The dispatch thread itself needs no registration: it frees segments only
 * between requests (from posted callbacks), when it holds no log pointers.
 *
 * Thread rule: register / enter / exit from the reader's own thread (a
 * reader slot belongs to one thread); retire and safe from the dispatch
 * thread.  Everything is a sequentially consistent atomic: no locks.
 */
#ifndef CRAM_LC_EPOCH_H
#define CRAM_LC_EPOCH_H

#include <stdbool.h>
#include <stdint.h>

#define LC_EPOCH_MAX_READERS 64

typedef struct lc_epoch {
    uint64_t global;                        /* next retire tag; starts at 1 */
    uint64_t active[LC_EPOCH_MAX_READERS];  /* 0 = outside, else epoch at entry */
    uint32_t nreaders;                      /* slots handed out */
} lc_epoch;

void lc_epoch_init(lc_epoch *e);
/* A reader slot for the calling thread, or -1 if all are taken. */
int  lc_epoch_register(lc_epoch *e);

static inline void lc_epoch_enter(lc_epoch *e, int r)
{
    __atomic_store_n(&e->active[r], __atomic_load_n(&e->global, __ATOMIC_SEQ_CST),
                     __ATOMIC_SEQ_CST);
}
static inline void lc_epoch_exit(lc_epoch *e, int r)
{
    __atomic_store_n(&e->active[r], 0, __ATOMIC_SEQ_CST);
}

/* For a reader on the dispatch thread that keeps pointers past the request
 * that took them, several at once (a transport with sends from log memory in
 * flight): it notes lc_epoch_now() when it takes a pointer and publishes the
 * oldest such tag it still holds with lc_epoch_hold (0 = none: as exit).
 * Memory retired at a tag >= that stays; an epoch noted before any retire
 * it depends on is <= the retire's tag, so the reader is seen as inside. */
static inline uint64_t lc_epoch_now(const lc_epoch *e)
{
    return __atomic_load_n(&e->global, __ATOMIC_SEQ_CST);
}
static inline void lc_epoch_hold(lc_epoch *e, int r, uint64_t oldest)
{
    __atomic_store_n(&e->active[r], oldest, __ATOMIC_SEQ_CST);
}

/* Tag for something just made unreachable (dispatch thread). */
uint64_t lc_epoch_retire(lc_epoch *e);
/* True once no reader inside at lc_epoch_retire time is still inside. */
bool lc_epoch_safe(const lc_epoch *e, uint64_t tag);

#endif /* CRAM_LC_EPOCH_H */
