/*
 * xdp.h -- the xdp: transport (AF_XDP sockets + transport/xdp_proto.c).
 *
 * Locators:
 *   listen   xdp:host=IP,port=P[,dev=IFACE][,queue=Q]
 *            (dev defaults to the interface holding IP; port 0 picks a free
 *            port; the listener's locator adds dev, queue and mac)
 *   connect  xdp:host=IP,port=P[,mac=MAC][,...]
 *            (the client's interface is the one routing to IP, or
 *            $CRAM_XDP_IF; its queue $CRAM_XDP_QUEUE, default 0; without
 *            mac= the peer's MAC comes from the kernel's neighbour table)
 *
 * One endpoint (an AF_XDP socket + one protocol engine) per (loop,
 * interface, queue): every listener and session of that loop on that
 * interface shares it, the listeners on their own UDP ports and all sessions
 * on one client port.  The endpoints of all loops of the process on one
 * (interface, queue) share one UMEM with its fill and completion rings
 * (XDP_SHARED_UMEM; up to 64 sockets), so many client handles in one
 * process -- each with its own loop, on any thread -- share one UMEM and
 * one XDP program.  Each UDP port is reserved by a bound kernel UDP socket
 * (so nothing else takes it), and the XDP program (xdp_cram.bpf.c) steers
 * exactly those ports to the socket that owns them; ARP and other traffic
 * stay with the kernel.  The program is attached when the first endpoint
 * opens (native mode, falling back to SKB mode; $CRAM_XDP_MODE=skb|drv
 * forces one) and detached when the last closes: one process per interface.
 * The peer must be another host (or namespace): AF_XDP cannot loop back.
 *
 * Polling: the socket fd is always in the loop's epoll set, so an idle
 * process sleeps in the kernel; a poller (which drains the RX ring, reclaims
 * completions and runs due timers without a syscall) and a 1 ms tick timer
 * exist only while the engine has work (RPCs in flight, unacknowledged data,
 * unsent packets).  Whether the loop spins on that poller is the loop's
 * policy (tp_loop_set_poll_us, the servers' --poll-us): with poll_us > 0 the
 * transport is busy-polled after activity, with 0 it blocks at once.
 *
 * Fault injection (tests): $CRAM_XDP_FAULT="loss=0.01,reorder=0.01,seed=7"
 * drops / reorders that fraction of the endpoint's received and sent
 * packets, from a seeded generator.
 */
#ifndef CRAM_TRANSPORT_XDP_H
#define CRAM_TRANSPORT_XDP_H

#include <stdint.h>
#include "transport/transport.h"
#include "transport/xdp_proto.h"

struct tp_xdp_stats {
    struct xp_stats proto;      /* the engine's counters */
    uint64_t fault_drops;       /* packets dropped by the fault hook */
    uint64_t fault_reorders;    /* packets delayed by the fault hook */
    uint64_t rx_frames, tx_frames, rx_bad;
    char mode[24];              /* "drv/copy", "skb/copy", "drv/zerocopy", ... */
    uint32_t slot;              /* this endpoint's socket among those sharing the UMEM */
};

/* Counters of the endpoint under an xdp: session or listener.
 * Returns 0, or -1 if the object is not an xdp: one. */
int tp_xdp_session_stats(const tp_session *s, struct tp_xdp_stats *out);
int tp_xdp_listener_stats(const tp_listener *ls, struct tp_xdp_stats *out);

#endif /* CRAM_TRANSPORT_XDP_H */
