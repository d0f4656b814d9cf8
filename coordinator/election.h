/*
 * election.h -- leader election among coordinators (prefix elect_).
 *
 * Every coordinator creates an ephemeral sequential node R/election/n-<seq>
 * (R = /cram/<cluster>) holding a LeaderRecord {locator, epoch 0, pid, host}
 * and waits until its node is the lowest: it watches only its predecessor
 * (no herd effect).  The winner then claims leadership with zks_claim, which
 * bumps the epoch and creates the leader record atomically: election only
 * orders the candidates, the epoch fences (zkstore.h), so two coordinators
 * that both believe they won can never both write.
 *
 * A predecessor whose process ran on this host and is gone (kill -9; its
 * node lingers until its session expires) is removed at once
 * (zks_remove_if_gone).
 *
 * Threads: an elect belongs to the thread that owns its zks; the predecessor
 * watch fires on ZooKeeper's event thread and only signals a condition
 * variable (elect_wait's).
 */
#ifndef CRAM_COORD_ELECTION_H
#define CRAM_COORD_ELECTION_H

#include <stdbool.h>
#include "coordinator/zkstore.h"

typedef struct elect elect;

/* Create this coordinator's election node.  NULL with *rc set (a ZooKeeper
 * error) on failure. */
elect *elect_join(zks *z, const char *locator, int *rc);
/* Block until this candidate's node is the lowest (ZOK), *stop becomes
 * non-zero (ZCLOSING; checked at least every 250 ms), or the session
 * expires (ZSESSIONEXPIRED: the node is gone, join again with a new
 * handle).  Connection loss is waited out. */
int elect_wait(elect *e, volatile int *stop);
/* The node's name ("n-0000000007"). */
const char *elect_node(const elect *e);
/* Free e; its node goes with the session (zks_close) or is deleted now if
 * remove is true. */
void elect_free(elect *e, bool remove);

/* Pure: of the election node names (any order), the index of the one that
 * immediately precedes `mine` in sequence order, or -1 if mine is the lowest
 * (or not a valid name).  Names not of the form <prefix>-<digits> are
 * ignored. */
int elect_predecessor(char *const *names, int n, const char *mine);
/* Pure: the sequence number of "n-0000000007" (7), or -1 if malformed. */
long long elect_seq(const char *name);

#endif
