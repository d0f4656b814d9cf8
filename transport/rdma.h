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
 * registers its log segments) is sent straight from where it lies; because
 * tp_rpc_reply promises the bytes are sent before it returns, such a reply
 * waits (polling the CQ) for its send completions.
 */
#ifndef CRAM_TRANSPORT_RDMA_H
#define CRAM_TRANSPORT_RDMA_H

#include <stddef.h>

/* 0 if an RDMA device exists, else -1 with the reason in err. */
int tp_rdma_device_check(char *err, size_t errlen);

/* Register [addr, addr+len) for zero-copy responses (process-wide; memory
 * must stay mapped while registered).  Returns 0, or -1 (table full / no
 * RDMA built).  tp_rdma_unregister removes a range registered before. */
int  tp_rdma_register(void *addr, size_t len);
void tp_rdma_unregister(void *addr);

#endif /* CRAM_TRANSPORT_RDMA_H */
