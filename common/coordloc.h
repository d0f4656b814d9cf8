/*
 * coordloc.h -- finding the coordinator.
 *
 * The leader coordinator publishes a LeaderRecord (proto/cram.proto) at
 * /cram/<cluster>/coordinator in ZooKeeper.  Clients and servers look it up
 * with a short-lived ZooKeeper handle (opened, read, closed: no ZooKeeper
 * threads stay running afterwards).
 */
#ifndef CRAM_COORDLOC_H
#define CRAM_COORDLOC_H
#include <stddef.h>
#include <stdint.h>
#include "cram.h"

/* ZooKeeper root of a cluster: "/cram/<cluster>" (cluster NULL = "main"). */
void coordloc_root(const char *cluster, char *out, size_t outlen);

/* Resolve a coordinator locator.  "tcp:..." is copied to out as is; "zk:..."
 * is resolved through ZooKeeper within timeout_ms.
 * Returns CRAM_OK, CRAM_INVALID_ARGUMENT (malformed locator or cluster name),
 * CRAM_COORDINATOR_UNAVAILABLE (ZooKeeper unreachable or no leader record). */
cram_status coordloc_find(const char *locator, const char *cluster, uint32_t timeout_ms,
                          char *out, size_t outlen);
#endif
