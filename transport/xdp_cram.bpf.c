/*
 * xdp_cram.bpf.c -- the XDP program of the xdp: transport.
 *
 * Sends IPv4 UDP packets whose destination port is in cram_ports to the
 * AF_XDP socket that owns the port (cram_ports value: XSKMAP slot in the low
 * 16 bits, the queue the socket is bound to above), if the packet arrived on
 * that queue; every other packet (ARP, other UDP ports, TCP, fragments) goes
 * on to the kernel stack untouched, so the interface stays usable.
 *
 * Build: clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c (CMake
 * does it and embeds the object in the transport).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u32);
} cram_xsks SEC(".maps");

/* UDP destination port (network byte order) -> slot | queue << 16. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, __u16);
    __type(value, __u32);
} cram_ports SEC(".maps");

SEC("xdp")
int cram_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
        return XDP_PASS;
    if (ip->frag_off & bpf_htons(0x3fff))       /* MF or an offset: not ours */
        return XDP_PASS;
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > end)
        return XDP_PASS;
    __u16 dport = udp->dest;
    __u32 *v = bpf_map_lookup_elem(&cram_ports, &dport);
    if (v == NULL || (*v >> 16) != ctx->rx_queue_index)
        return XDP_PASS;
    return bpf_redirect_map(&cram_xsks, *v & 0xffff, XDP_PASS);
}

char _license[] SEC("license") = "GPL";
