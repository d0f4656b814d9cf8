/*
 * rdma.h -- the rdma: transport (libibverbs RC queue pairs, librdmacm
 * connection set-up; buffer management and flow control in rdma_buf.c).
 *
 * Locator: rdma:host=IP,port=P[,dev=NAME]  (an address of an RDMA-capable
 * interface: IB, RoCE or iWARP).
 *
 * Built whenever rdma-core is present.  A listener or session first checks
 * that ibv_get_device_list finds a device; where none exists (this build
 * machine: the call returns NULL with ENOSYS) tp_listen fails with
 * "rdma: no RDMA device ..." in its error text and tp_session_open returns
 * CRAM_TRANSPORT_ERROR, so a server refuses the locator instead of
 * pretending to serve it.
 *
 * Per connection: RB_RX_DEPTH receive buffers of RB_BUF_SIZE bytes in one
 * registered region, refilled as consumed; as many send slots; one CQ with
 * a completion channel whose fd sits in the loop (blocking when idle) and a
 * poller that busy-polls the CQ only while RPCs or sends are outstanding.
 * Frames up to RB_INLINE_MAX bytes go IBV_SEND_INLINE.
 *
 * Zero-copy responses: memory registered with tp_rdma_register (the master
 * registers each log segment slot while it is in use, master/log_rdma.c)
 * is sent straight from where it lies: a response whose pieces lie in
 * registered memory goes out as scatter entries -- the frame header (and
 * any small copied pieces) from the connection's registered send buffer,
 * the value from the registered slot -- with no copy.  Such a send still
 * reads the memory after tp_rpc_reply returned, so zero-copy is used only
 * on loops whose owner installed a guard (tp_rdma_set_guard) that keeps the
 * memory from being reused until the send completes; elsewhere responses
 * are copied.  Registration is per RDMA device (one protection domain per
 * device, shared by its connections); a device that can send from on-demand
 * paged memory (IBV_ODP_SUPPORT_SEND) gets one ODP registration of the
 * whole arena (tp_rdma_set_arena) instead of one pinned region per slot.
 */
#ifndef CRAM_TRANSPORT_RDMA_H
#define CRAM_TRANSPORT_RDMA_H

#include <stddef.h>
#include <stdint.h>
#include "transport/transport.h"

/* 0 if an RDMA device exists, else -1 with the reason in err. */
int tp_rdma_device_check(char *err, size_t errlen);

/* Register [addr, addr+len) for zero-copy responses (process-wide, any
 * thread).  Pinned registrations fault the range in (IBV_ACCESS_LOCAL_WRITE,
 * so untouched anonymous pages are not pinned as the shared zero page).
 * Returns 0, or -1 (overlaps a registered range, out of memory, or no RDMA
 * built).  Registering with devices that appear later happens then. */
int  tp_rdma_register(void *addr, size_t len);
/* Remove the range registered at addr (unknown addresses are ignored).  Its
 * registrations are released at once, or -- if sends still point into it --
 * when the last of them completes. */
void tp_rdma_unregister(void *addr);
/* 1 if [addr, addr+len) lies inside one registered range (tests). */
int  tp_rdma_registered(const void *addr, size_t len);
/* The arena registered ranges lie in (the whole log): a device with ODP send
 * support registers all of it once, on demand, instead of range by range. */
void tp_rdma_set_arena(void *addr, size_t len);

/*
 * The owner's reuse rule for zero-copy sends from loop l: each send notes
 * now() when it is posted; after sends are posted or complete the transport
 * calls hold() with the oldest noted value still in flight (0 = none), on
 * l's thread.  The master maps these to the log cleaner's epochs
 * (lc_epoch_now / lc_epoch_hold): a segment retired while a send from it is
 * in flight is not freed before the send completes.  Without a guard, l's
 * responses are copied.  g NULL removes it (call when nothing is in flight,
 * e.g. after the listeners closed).  0, or -1 (table full / no RDMA).
 */
struct tp_rdma_guard {
    uint64_t (*now)(void *arg);
    void     (*hold)(void *arg, uint64_t oldest);
    void     *arg;
};
int tp_rdma_set_guard(tp_loop *l, const struct tp_rdma_guard *g);

#endif /* CRAM_TRANSPORT_RDMA_H */
