/*
 * recovery.h -- the coordinator's crash-recovery planning (prefix rcv_):
 * which replicas make up a crashed master's log (log digest check) and how
 * its tablets are split into partitions for the recovery masters.  Pure
 * logic: no I/O, no threads, safe from any thread, unit-tested on its own
 * (tests/unit/test_recovery_partition.c).  The orchestration (ZooKeeper
 * records, RPCs) is in coordinator.c.
 */
#ifndef CRAM_COORD_RECOVERY_H
#define CRAM_COORD_RECOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Partition bounds when the coordinator is given none. */
#define RCV_DEFAULT_PARTITION_BYTES   (256ull << 20)
#define RCV_DEFAULT_PARTITION_OBJECTS (4ull << 20)
/* At most this many pieces per tablet and per recovery (a tiny bound on a
 * huge tablet must not explode; partitions then exceed the bound). */
#define RCV_MAX_PIECES_PER_TABLET 1024u
#define RCV_MAX_PIECES            4096u

/* A key-hash range [start, end] (inclusive) of one table. */
struct rcv_range {
    uint64_t table_id;
    uint64_t start;
    uint64_t end;
};

/* A master's last reported size of one of its tablets (TabletStats). */
struct rcv_stat {
    uint64_t table_id;
    uint64_t start;
    uint64_t end;
    uint64_t bytes;
    uint64_t objects;
};

/* One piece of a partition: a tablet or an equal key-hash subrange of one,
 * with its estimated size. */
struct rcv_piece {
    uint64_t table_id;
    uint64_t start;
    uint64_t end;
    uint64_t bytes;
    uint64_t objects;
    uint32_t partition;
};

/*
 * Split the crashed master's n tablets into partitions of at most max_bytes
 * and max_objects each (0 = no bound on that axis).  A tablet's size comes
 * from the stats that overlap it (proportionally to the overlap); tablets no
 * stat covers share fallback_bytes (the bytes of the master's replicas,
 * minus what the stats account for) by hash-range width.  A tablet larger
 * than a bound is split by key hash into equal subranges; pieces are then
 * packed first-fit-decreasing into partitions.  Every key-hash range of every
 * tablet is covered by exactly one piece.  On success returns 0 with a
 * malloc'ed array in *out (*npieces entries, sorted by partition, then table,
 * then start) and the partition count in *nparts (0 when n == 0).  -1 when
 * out of memory or a tablet has start > end.
 */
int rcv_partition(const struct rcv_range *tablets, size_t n,
                  const struct rcv_stat *stats, size_t ns, uint64_t fallback_bytes,
                  uint64_t max_bytes, uint64_t max_objects,
                  struct rcv_piece **out, size_t *npieces, uint32_t *nparts);

/* The partition byte bound for a recovery of log_bytes with `masters`
 * recovery masters: max_bytes, but small enough that there are at least as
 * many partitions as masters (log_bytes / masters, plus 5 % so rounding in
 * the packing does not make one partition more), so no recovery master
 * stays idle.  At least 1; max_bytes when masters <= 1 or log_bytes is 0
 * (max_bytes 0 = no bound stays 0 then). */
uint64_t rcv_partition_bytes(uint64_t max_bytes, uint64_t log_bytes, uint32_t masters);

/* Piece i of k equal subranges of [start, end] (k >= 1, k <= width). */
void rcv_subrange(uint64_t start, uint64_t end, uint32_t k, uint32_t i, uint64_t *s, uint64_t *e);

/* One replica of the crashed master as a backup reported it (ReplicaInfo). */
struct rcv_replica {
    uint64_t backup_id;
    uint64_t segment_id;
    uint64_t epoch;
    uint32_t length;
    bool closed;
    bool has_digest;
    const uint64_t *digest;         /* segment ids, ndigest of them */
    size_t ndigest;
    bool primary;                   /* the master marked it its segment's primary */
};

/* What the log check found. */
struct rcv_log {
    bool complete;
    uint64_t digest_segment;        /* segment whose digest was used (0: none) */
    size_t nsegments;               /* segments of the log (the digest's list) */
    uint64_t log_bytes;             /* sum of the longest usable replica of each */
    /* Indexes into the replica array: every usable replica of every log
     * segment, grouped by segment (ascending id), the preferred one
     * (primary) first within each group. */
    size_t *order;
    size_t norder;
};

/*
 * Check that the replicas make up the crashed master's whole log.  Open
 * replicas whose {segment id, epoch} is below the recorded recovery info
 * (have_info) are stale and ignored.  The newest log digest (highest segment
 * id with has_digest) names the log's segments; no replica of that segment
 * may be closed (a closed head means a newer head existed -- a new head is
 * durably open before the old one's close is sent -- whose replicas are
 * missing), and every segment it lists needs a usable replica.  Returns 0
 * (log->complete tells; if not, note explains which segments are missing),
 * or -1 when out of memory.  Free log->order with rcv_log_free.
 */
int rcv_check_log(const struct rcv_replica *r, size_t n, bool have_info,
                  uint64_t info_segment, uint64_t info_epoch,
                  struct rcv_log *log, char *note, size_t notelen);
void rcv_log_free(struct rcv_log *log);

#endif
