/*
 * log_rdma.h -- the master's log memory registered with the rdma: transport,
 * so read responses go out from the log itself (transport/rdma.h,
 * "Zero-copy responses").
 *
 * Registration follows the slots: a slot is registered when it comes into
 * use (log memory hook, master/log.h) for its writer's whole capacity and
 * deregistered right before its pages go back to the OS -- never the whole
 * virtual arena, which is twice the memory budget and would all be pinned.
 * (A device with on-demand paging registers the arena once instead; the
 * transport decides, tp_rdma_set_arena.)
 *
 * Reuse rule: a zero-copy send still reads a value after tp_rpc_reply
 * returned.  log_rdma_guard makes the transport hold the log cleaner's
 * epochs (logcleaner/lc_epoch.h) with one reader slot: the oldest epoch of
 * the sends in flight, so a segment the cleaner retires while a send from it
 * is in flight is freed only after that send completes.  Until the guard is
 * installed, responses are copied.
 *
 * Thread rule: everything here runs on the dispatch thread (the log's and
 * the loop's).
 */
#ifndef CRAM_MASTER_LOG_RDMA_H
#define CRAM_MASTER_LOG_RDMA_H

#include "master/log.h"
#include "logcleaner/lc_epoch.h"
#include "transport/transport.h"

typedef struct log_rdma log_rdma;

/* Register the slots in use now and follow the log from here on (takes the
 * log's memory hook).  NULL when out of memory (responses are then copied). */
log_rdma *log_rdma_attach(mlog *l);
/* Send zero-copy responses on loop under the epochs ep (one reader slot). */
void      log_rdma_guard(log_rdma *lr, tp_loop *loop, lc_epoch *ep);
/* Remove the guard and every registration, release the hook.  NULL is ok. */
void      log_rdma_detach(log_rdma *lr);
/* Slots registered now (tests, stats). */
uint32_t  log_rdma_registered(const log_rdma *lr);

#endif /* CRAM_MASTER_LOG_RDMA_H */
