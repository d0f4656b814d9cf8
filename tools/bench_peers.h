/*
 * bench_peers.h -- minimal blocking clients for the systems cram-bench
 * compares against: Redis (RESP: GET, SET, WAIT) and memcached (text
 * protocol: get, set).  They exist so that one load generator -- the same
 * threads, key generator and latency histogram -- drives cram and its peers
 * in the same run, which makes the comparison in docs/benchmarks.md fair.
 * One connection per thread; each call is one request and one response
 * (blocking read/write, TCP_NODELAY), the same policy as libcram's default.
 */
#ifndef CRAM_BENCH_PEERS_H
#define CRAM_BENCH_PEERS_H
#include <stddef.h>
#include <stdint.h>

enum peer_kind { PEER_REDIS = 1, PEER_MEMCACHED = 2 };

typedef struct peer_conn peer_conn;

/* "redis:HOST:PORT" or "memcached:HOST:PORT" -> kind, host, port. 0 or -1. */
int peer_parse_target(const char *s, enum peer_kind *kind, char *host, size_t hostlen, uint16_t *port);
peer_conn *peer_connect(enum peer_kind kind, const char *host, uint16_t port, char *err, size_t errlen);
void peer_close(peer_conn *c);
/* 0 on success, -1 on error (message in peer_error). Keys must be printable
 * ASCII without spaces (memcached's rule), at most 250 bytes. */
int peer_set(peer_conn *c, const void *key, size_t klen, const void *val, size_t vlen);
/* 0 found (up to buflen bytes copied, *vlen = full length), 1 missing, -1 error. */
int peer_get(peer_conn *c, const void *key, size_t klen, void *buf, size_t buflen, size_t *vlen);
/* Redis only: WAIT numreplicas timeout_ms; returns replicas acknowledged or -1. */
int peer_wait(peer_conn *c, int nreplicas, int timeout_ms);
const char *peer_error(const peer_conn *c);
#endif
