/*
 * backup_service.c -- the backup service (see backup_service.h, and the
 * BACKUP_* opcodes in common/wire.h for the exact request semantics).
 *
 * Memory and disk.  Each open replica owns a 4 KiB-aligned buffer of its
 * capacity; a BACKUP_WRITE copies its bytes there on the dispatch thread and,
 * in buffered mode, is answered at once (no syscall, no malloc: a memcpy, a
 * short uncontended mutex section and the reply).  One worker thread moves
 * bytes to the replica's file (format: backup_store.h) with O_DIRECT:
 *   - buffered mode: a dirty replica is flushed BK_FLUSH_DELAY_US after its
 *     first unflushed write (a dispatch timer hands it to the worker), so a
 *     restarted backup still finds open replicas up to the last header;
 *   - sync mode (WIRE_BACKUP_SYNC on a write): the write is answered only
 *     after the worker wrote data, fdatasync, header, fdatasync; every sync
 *     write that arrives while a flush is queued rides in it (group commit);
 *   - CLOSE: the worker writes the rest, verifies the bytes against the
 *     certificate (seg_verify), writes the closed header, fdatasyncs, and the
 *     dispatch thread then drops the buffer (closed replicas live on disk
 *     only; BACKUP_READ reads them back on the reader thread).
 * Buffers of replica size (open replicas, recovery copies) come from a pool
 * and go back to it (up to BK_POOL_MAX_BYTES): fresh memory costs a page
 * fault and the zeroing of every page, which dominated recovery's CPU
 * profile; a reused buffer holds stale bytes past `length`, which nothing
 * reads.
 * Every flush writes the data before the header that certifies it.  Aligned
 * blocks go straight from the replica buffer; the last partial block is
 * copied to a zero-padded bounce block, so the worker never reads a byte at
 * or past the snapshot length (which the dispatch thread may be writing).
 *
 * Request rules beyond wire.h (documented choices):
 *   - a write to a closed replica is CRAM_OK if it is a re-send of the close
 *     (CLOSE flag, same certificate, range inside the replica), answered once
 *     the close is on disk when it asks for SYNC; any other write to a closed
 *     replica is CRAM_REQUEST_FORMAT_ERROR;
 *   - an epoch lower than the one held is refused with CRAM_WRONG_VERSION
 *     (a stale master or a late retransmission);
 *   - a write without OPEN to a replica not held, held with a higher epoch,
 *     or only held from a previous incarnation of this backup (read-only,
 *     loaded at start-up) is CRAM_NOT_FOUND;
 *   - OPEN with capacity 0 is a format error, above max_replica_bytes
 *     CRAM_REQUEST_TOO_LARGE; OPEN of an existing replica of the same epoch
 *     must repeat its capacity;
 *   - a certificate shorter than the one held is accepted but does not
 *     replace it (certificates never go backwards);
 *   - a re-sent range with different bytes (masters never do this within
 *     an epoch) overwrites them and is re-flushed; a flush running at that
 *     moment may put a mix of old and new bytes under the old certificate,
 *     which a crash before the next flush leaves as a replica detected as
 *     corrupt, never served.  Identical re-sends are compared, not copied.
 *   - BACKUP_LIST for one master (recovery is asking) also starts loading
 *     that master's on-disk *primary* replicas (WIRE_BACKUP_PRIMARY at
 *     OPEN; kept in the disk header) into memory, in segment order, with at
 *     most BK_PREFETCH_WINDOW loaded or loading at a time: recovery masters
 *     read the primary first, so the other replicas are read from disk only
 *     when asked for (their primary's backup died or failed).
 *   - BACKUP_READ of a corrupt or torn replica, or one whose disk copy fails
 *     verification on a whole read, is CRAM_NOT_FOUND.
 *   - BACKUP_GET_RECOVERY_DATA: an in-memory replica is verified in place
 *     (cached); an on-disk one is read whole (one O_DIRECT pread into a
 *     pool buffer) and verified once on the reader (BK_JOB_RLOAD; requests
 *     arriving meanwhile wait) and its bytes are kept until `readers`
 *     requests (the request says how many recovery masters read it) were
 *     answered done, the replica is freed, or BK_RDATA_IDLE_MS pass without
 *     a request, so every recovery master's request after the first is
 *     served from memory.  Filtering (key hash per entry, one
 *     binary search over the sorted, merged ranges) and the copy into the
 *     response run on the dispatch thread; a response holds at most
 *     max_bytes of entries, but always one entry when it fits a message.
 *     An offset that is not an entry boundary is CRAM_REQUEST_FORMAT_ERROR.
 *   - BACKUP_LIST fills has_digest / log_digest from the LOG_DIGEST entry
 *     after the segment header (found in memory, or read at start-up).
 *
 * Threads: the dispatch thread owns the service; the worker owns replica
 * file descriptors and its aligned blocks; the reader (READ, RLOAD) opens
 * its own descriptors, so recovery reads do not queue behind the writes of
 * new replicas.  They share the job queue, the
 * done list and each replica's "shared" fields, all under b->mu.  Worker
 * completions ring an eventfd on the dispatch loop (struct bk_notify) whose
 * handler, bk_drain, replies deferred RPCs on the dispatch thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include "backup/backup_service.h"
#include "backup/backup_store.h"
#include "common/clock.h"
#include "common/keyhash.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/segment.h"
#include "common/wire.h"
#include "cram.pb-c.h"
#include "transport/transport_int.h"

/* Freed replica files kept (renamed, header zeroed) for the next new
 * replica: creating and unlinking a file per segment cost ~3.5% of the
 * machine per backup at 90% memory with 100 B objects (ext4 inode
 * allocation and freeing, block discard).  Not counted in --backup-storage. */
#define BK_SPARES 8
#define BK_SPARE_PREFIX ".spare-"
#define BK_FLUSH_DELAY_US 5000u      /* buffered mode: how long dirty bytes may wait in memory only */
#define BK_RETRY_DELAY_US 1000000u   /* after a failed flush (disk full, I/O error) */
#define BK_MAX_REPLICA    (1u << 30) /* largest max_replica_bytes accepted (cram-server's limit) */
#define BK_RDATA_IDLE_MS  15000u     /* recovery copies of on-disk replicas unused this long are dropped */
#define BK_RDATA_SWEEP_US 5000000u   /* how often they are looked at (while any exist) */
#define BK_POOL_MAX_BYTES (256ull << 20) /* default buffer_bytes: buffers kept for reuse at most */
#define BK_PREFETCH_WINDOW 16u        /* recovery: replicas held in memory or being read at most
                                         before the prefetch of primaries waits */

enum bk_job_type { BK_JOB_FLUSH, BK_JOB_READ, BK_JOB_UNLINK, BK_JOB_RLOAD };

struct bk_replica;

/* Recovery index of a loaded replica: one per OBJECT / TOMBSTONE /
 * SAFE_VERSION entry, in log order, built by the reader once per load, so
 * each partition's GET_RECOVERY_DATA compares key hashes from 24-byte
 * records instead of walking (and hashing) the whole replica again. */
#define BK_IENT_ALWAYS 0x80000000u   /* in size: a SAFE_VERSION (every partition gets it) */
struct bk_ient {
    uint64_t table_id;
    uint64_t hash;
    uint32_t off;
    uint32_t size;                   /* entry bytes | BK_IENT_ALWAYS */
};

/* A unit of work for the worker.  Created and freed on the dispatch thread;
 * between enqueue and completion only the worker touches it. */
struct bk_job {
    struct bk_job *next;
    int type;                       /* enum bk_job_type */
    struct bk_replica *rep;
    /* READ: the rpc to answer and the range; resp holds the reply */
    tp_rpc *rpc;
    uint32_t off, len;
    uint8_t *resp;
    uint32_t resp_cap;              /* RLOAD: allocated size of resp (a pool buffer) */
    struct bk_ient *idx;            /* RLOAD: the recovery index (NULL: none, out of memory) */
    uint32_t nidx;
    bool whole;                     /* READ covers the whole certified range: verify it */
    /* results (FLUSH) */
    int err;                        /* 0 or errno */
    uint64_t seq;                   /* writes up to this seq are in the flush */
    struct seg_certificate cert;    /* certificate written in the header */
    bool closing;                   /* this flush saw the replica closed */
    bool closed_done;               /* this flush wrote the closed replica completely */
    bool verified;                  /* closing flush: bytes passed seg_verify */
};

/* A sync write waiting for a flush (dispatch thread only). */
struct bk_waiter {
    struct bk_waiter *next;
    tp_rpc *rpc;
    uint64_t seq;
};

/* A BACKUP_GET_RECOVERY_DATA waiting for its replica to be loaded from
 * disk (dispatch thread only).  The request bytes stay valid until the rpc
 * is answered, so only the rpc is kept. */
struct bk_rwait {
    struct bk_rwait *next;
    tp_rpc *rpc;
};

struct bk_replica {
    /* identity: immutable */
    uint64_t master_id, segment_id, epoch;
    uint32_t capacity;
    char name[128];                 /* file name in the backup directory */

    /* dispatch thread only */
    struct bk_replica *hnext;       /* hash chain, or bad list */
    struct bk_replica *dprev, *dnext;
    bool in_dirty;                  /* on b->dirty: waiting for the flush timer */
    bool loaded;                    /* found on disk at start-up: read-only */
    bool primary;                   /* the master opened it as the segment's primary */
    bool bad;                       /* torn / corrupt / superseded: not served */
    bool close_enqueued;            /* the closing flush is queued: no more flushes
                                       (written under b->mu: the worker reads it) */
    bool io_error;                  /* the last flush failed */
    bool verified;                  /* on-disk copy checked (load or closing flush) */
    bool on_disk;                   /* disk header certifies the current certificate */
    bool vcache_ok;                 /* cached seg_verify of the memory bytes ... */
    uint32_t vcache_len;            /* ... for this certificate length */
    int refs;                       /* jobs naming this replica */
    struct bk_waiter *waiters, **wtail;
    uint8_t *buf;                   /* capacity rounded up, 4 KiB aligned; NULL: on disk only */
    /* recovery (dispatch thread only): the certified bytes of an on-disk
     * replica, read once by a BK_JOB_RLOAD and verified against the
     * certificate there; kept until the replica is freed or unused for
     * BK_RDATA_IDLE_MS */
    uint8_t *rdata;
    uint32_t rdata_len;
    uint32_t rdata_cap;             /* allocated size (a pool buffer) */
    struct bk_ient *ridx;           /* recovery index of rdata (NULL: none) */
    uint32_t nridx;
    uint32_t rd_done;               /* requests answered done = 1 from this rdata */
    uint64_t rdata_used_ms;         /* last GET_RECOVERY_DATA served from it */
    bool rloading;                  /* a BK_JOB_RLOAD is queued */
    struct bk_rwait *rwaiters;      /* requests waiting for rdata */
    /* the log digest the segment starts with (BACKUP_LIST has_digest) */
    bool digest_done;               /* looked for (found or known absent) */
    bool has_digest;
    uint32_t ndigest;
    uint64_t *digest;

    /* written by the dispatch thread under b->mu; the worker reads them
     * under b->mu; the dispatch thread reads them without it */
    uint32_t length;                /* bytes received */
    struct seg_certificate cert;    /* latest certificate */
    uint64_t seq;                   /* count of writes applied */
    uint32_t dirty_from;            /* lowest byte changed since the last flush snapshot */
    bool closed;
    bool sync_req;                  /* a sync write is waiting: fdatasync in the next flush */
    bool flush_queued;              /* a FLUSH job is queued and not yet started */
    bool gone;                      /* freed or replaced: flushing it is pointless */

    /* worker only (the dispatch thread touches it only when refs == 0
     * and the worker has stopped or cannot reach the replica) */
    int fd;
};

/* The worker's doorbell: an eventfd on the dispatch loop.  (Not
 * tp_loop_post: a callback posted just before backup_destroy would outlive
 * the service, and leak if the loop is destroyed before it runs.)  Freed
 * through tp_loop_defer_free, as the loop requires of fd handlers. */
struct bk_notify {
    struct tp_fdh h;
    int efd;
};

struct backup_service {
    /* immutable after create */
    struct backup_config cfg;
    char dir[512];
    int dirfd;
    int lockfd;                     /* DIR/.lock, flock'ed: one backup per directory */
    tp_loop *loop;
    server_list *sl;

    /* dispatch thread only */
    uint64_t server_id;
    struct bk_replica **tab;        /* hash on (master id, segment id) */
    size_t nbuckets, count;         /* count: replicas in tab */
    struct bk_replica *bad;         /* list of out-of-service replicas */
    uint64_t used;                  /* capacity of every replica, bad ones included */
    struct bk_replica *dirty;       /* buffered replicas waiting for the flush timer */
    uint64_t timer_id;              /* 0 = not armed */
    struct bk_notify *notify;       /* efd is written by the worker too */

    /* under mu: job queue, done list, worker control */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct bk_job *qhead, *qtail;   /* the worker's: flushes, unlinks */
    struct bk_job *rqhead, *rqtail; /* the reader's: READ and RLOAD (recovery reads do not
                                       wait behind the writes of new replicas) */
    pthread_cond_t rcv;
    pthread_t reader;
    struct bk_job *dhead, *dtail;
    bool stop;
    pthread_t worker;

    /* worker only */
    uint8_t *hdr_blk;               /* BACKUP_HDR_SIZE, aligned */
    uint8_t *zero_blk;              /* BACKUP_HDR_SIZE of zeros, aligned */
    char spare[BK_SPARES][32];      /* freed replica files kept for reuse (bk_spare_put) */
    uint32_t nspare;
    uint64_t spare_seq;
    uint8_t *tail_blk;              /* BACKUP_ALIGN, aligned */
    bool no_direct;                 /* O_DIRECT refused by the filesystem */
    /* reader only */
    bool rno_direct;                /* O_DIRECT reads refused */

    /* dispatch thread only: GET_RECOVERY_DATA scratch (response, ranges) */
    uint8_t *rscratch;              /* WIRE_MAX_MESSAGE bytes, allocated on first use */
    uint64_t rdata_bytes;           /* held in replicas' rdata */
    uint32_t rdata_count;           /* replicas with rdata */
    uint32_t rloads;                /* BK_JOB_RLOADs queued or running */
    /* recovery prefetch: (master, segment) of primaries to load, in segment
     * order; started while rdata_count + rloads < BK_PREFETCH_WINDOW */
    struct bk_pf { uint64_t master_id, segment_id; } *pf;
    size_t npf, pf_next, pf_cap;
    /* buffer pool: freed replica / recovery buffers kept for reuse (fresh
     * memory costs a page fault and zeroing per page), each free buffer's
     * first bytes hold its struct bk_pool_node */
    struct bk_pool_node *pool;
    uint64_t pool_bytes;
    uint64_t pool_used_ms;          /* last get / put: a pool idle for BK_RDATA_IDLE_MS is freed */
    uint64_t sweep_timer;           /* drops idle rdata and an idle pool; 0 = not armed */
    struct wire_tablet_range *rranges;
    uint32_t rranges_cap;
};

static void bk_rdata_drop(backup_service *b, struct bk_replica *r);
static void bk_pf_pump(backup_service *b);
static void bk_rdata_sweep(void *arg);
static int bk_rload_start(backup_service *b, struct bk_replica *r);

/* ---- buffer pool (dispatch thread only) ---------------------------------- */

struct bk_pool_node {
    struct bk_pool_node *next;
    size_t size;
};

/* A buffer of `size` bytes (a multiple of BACKUP_ALIGN), BACKUP_ALIGN
 * aligned; its contents are undefined (a reused one holds old bytes). */
static void *bk_buf_get(backup_service *b, size_t size)
{
    b->pool_used_ms = clock_mono_ms();
    for (struct bk_pool_node **pp = &b->pool; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->size == size) {
            struct bk_pool_node *n = *pp;
            *pp = n->next;
            b->pool_bytes -= size;
            return n;
        }
    }
    /* no MADV_HUGEPAGE: with THP defrag=madvise a huge-page fault may
     * compact memory synchronously, stalling the dispatch thread (it
     * copies into replica buffers) for longer than a ping timeout */
    return aligned_alloc(BACKUP_ALIGN, size);
}

/* Give a buffer from bk_buf_get back (NULL is ignored). */
static void bk_buf_put(backup_service *b, void *p, size_t size)
{
    if (p == NULL)
        return;
    if (size < sizeof(struct bk_pool_node) || b->pool_bytes + size > b->cfg.buffer_bytes) {
        free(p);
        return;
    }
    struct bk_pool_node *n = p;
    n->size = size;
    n->next = b->pool;
    b->pool = n;
    b->pool_bytes += size;
    b->pool_used_ms = clock_mono_ms();
    if (b->sweep_timer == 0 && b->loop != NULL)
        b->sweep_timer = tp_timer_add(b->loop, BK_RDATA_SWEEP_US, bk_rdata_sweep, b);
}

/* --prefault: fill the pool with faulted-in buffers of cfg.prefault_buffer
 * bytes.  A backup otherwise takes fresh memory for every replica beyond
 * what the pool holds, and its first write to each page -- a fault and the
 * zeroing of the page, on a VM possibly the host's fault too -- was 99% of
 * the page faults and about a tenth of the CPU of a crash recovery, where
 * each backup takes the rebuilt segments of several recovery masters at
 * once.  Best effort: stops at the first buffer it cannot get. */
static void bk_pool_prefault(backup_service *b)
{
    size_t size = backup_round_up(b->cfg.prefault_buffer);
    uint64_t t0 = clock_mono_ms();
    uint32_t n = 0;
    while (b->pool_bytes + size <= b->cfg.buffer_bytes) {
        void *p = aligned_alloc(BACKUP_ALIGN, size);
        if (p == NULL || mem_prefault(p, size) != 0) {
            CRAM_WARN("backup: could not fault in more than %u buffers at start: %s",
                      n, strerror(errno));
            free(p);
            break;
        }
        bk_buf_put(b, p, size);
        n++;
    }
    CRAM_INFO("backup: %u buffers of %zu KiB faulted in at start in %llu ms", n, size >> 10,
              (unsigned long long)(clock_mono_ms() - t0));
}

static void bk_pool_free(backup_service *b)
{
    while (b->pool != NULL) {
        struct bk_pool_node *n = b->pool;
        b->pool = n->next;
        free(n);
    }
    b->pool_bytes = 0;
}

/* ---- small helpers ------------------------------------------------------ */

static void reply_status(tp_rpc *rpc, cram_status st)
{
    struct wire_resp_hdr h = { .status = (int32_t)st };
    struct iovec iov = { &h, sizeof h };
    tp_rpc_reply(rpc, &iov, 1);
}

static size_t bk_hash(const backup_service *b, uint64_t master_id, uint64_t segment_id)
{
    uint64_t h = master_id * 0x9e3779b97f4a7c15ull ^ (segment_id + 0x632be59bd9b4e019ull) * 0xbf58476d1ce4e5b9ull;
    return (size_t)(h ^ (h >> 31)) & (b->nbuckets - 1);
}

static struct bk_replica *bk_find(const backup_service *b, uint64_t master_id, uint64_t segment_id)
{
    struct bk_replica *r = b->tab[bk_hash(b, master_id, segment_id)];
    while (r != NULL && (r->master_id != master_id || r->segment_id != segment_id))
        r = r->hnext;
    return r;
}

static void bk_tab_grow(backup_service *b)
{
    size_t nb = b->nbuckets * 2;
    struct bk_replica **nt = calloc(nb, sizeof *nt);
    if (nt == NULL)
        return;                     /* chains just get longer */
    struct bk_replica **old = b->tab;
    size_t ob = b->nbuckets;
    b->tab = nt;
    b->nbuckets = nb;
    for (size_t i = 0; i < ob; i++) {
        struct bk_replica *r = old[i];
        while (r != NULL) {
            struct bk_replica *n = r->hnext;
            size_t h = bk_hash(b, r->master_id, r->segment_id);
            r->hnext = nt[h];
            nt[h] = r;
            r = n;
        }
    }
    free(old);
}

static void bk_tab_insert(backup_service *b, struct bk_replica *r)
{
    if (b->count >= b->nbuckets)
        bk_tab_grow(b);
    size_t h = bk_hash(b, r->master_id, r->segment_id);
    r->hnext = b->tab[h];
    b->tab[h] = r;
    b->count++;
}

static void bk_tab_remove(backup_service *b, struct bk_replica *r)
{
    struct bk_replica **pp = &b->tab[bk_hash(b, r->master_id, r->segment_id)];
    while (*pp != NULL && *pp != r)
        pp = &(*pp)->hnext;
    CRAM_ASSERT(*pp == r);
    *pp = r->hnext;
    r->hnext = NULL;
    b->count--;
}

static struct bk_replica *bk_rep_new(uint64_t master_id, uint64_t segment_id, uint64_t epoch,
                                     uint32_t capacity)
{
    struct bk_replica *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->master_id = master_id;
    r->segment_id = segment_id;
    r->epoch = epoch;
    r->capacity = capacity;
    r->fd = -1;
    r->wtail = &r->waiters;
    backup_file_name(r->name, sizeof r->name, master_id, segment_id, epoch);
    return r;
}

static void bk_rep_free(backup_service *b, struct bk_replica *r)
{
    CRAM_ASSERT(r->refs == 0 && r->waiters == NULL && !r->in_dirty);
    if (r->fd >= 0)
        close(r->fd);
    bk_buf_put(b, r->buf, backup_round_up(r->capacity));
    bk_buf_put(b, r->rdata, r->rdata_cap);
    free(r->ridx);
    free(r->digest);
    free(r);
}

static void bk_dirty_remove(backup_service *b, struct bk_replica *r)
{
    if (!r->in_dirty)
        return;
    if (r->dprev != NULL)
        r->dprev->dnext = r->dnext;
    else
        b->dirty = r->dnext;
    if (r->dnext != NULL)
        r->dnext->dprev = r->dprev;
    r->dprev = r->dnext = NULL;
    r->in_dirty = false;
}

/* Answer the sync waiters up to seq (all of them if seq == UINT64_MAX). */
static void bk_answer_waiters(struct bk_replica *r, uint64_t seq, cram_status st)
{
    while (r->waiters != NULL && r->waiters->seq <= seq) {
        struct bk_waiter *w = r->waiters;
        r->waiters = w->next;
        if (r->waiters == NULL)
            r->wtail = &r->waiters;
        reply_status(w->rpc, st);
        free(w);
    }
}

/* ---- job queue (dispatch side) ------------------------------------------- */

/* Queue a job; b->mu held by the caller. */
static void bk_enqueue_locked(backup_service *b, struct bk_job *j)
{
    bool rd = j->type == BK_JOB_READ || j->type == BK_JOB_RLOAD;
    struct bk_job **head = rd ? &b->rqhead : &b->qhead, **tail = rd ? &b->rqtail : &b->qtail;
    j->next = NULL;
    if (*tail != NULL)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
    if (j->rep != NULL)
        j->rep->refs++;
    pthread_cond_signal(rd ? &b->rcv : &b->cv);
}

static void bk_enqueue(backup_service *b, struct bk_job *j)
{
    pthread_mutex_lock(&b->mu);
    bk_enqueue_locked(b, j);
    pthread_mutex_unlock(&b->mu);
}

/* Queue a flush of r unless one is queued already (it will see every write
 * applied before the worker starts it).  0, or -1 when out of memory. */
static int bk_flush_now(backup_service *b, struct bk_replica *r)
{
    pthread_mutex_lock(&b->mu);
    bool queued = r->flush_queued;
    if (queued && r->closed)
        r->close_enqueued = true;
    pthread_mutex_unlock(&b->mu);
    if (queued)
        return 0;                   /* the common case under load: no allocation */
    struct bk_job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return -1;
    j->type = BK_JOB_FLUSH;
    j->rep = r;
    pthread_mutex_lock(&b->mu);
    if (r->closed)
        r->close_enqueued = true;   /* the queued or new flush sees closed */
    if (r->flush_queued) {
        pthread_mutex_unlock(&b->mu);
        free(j);
        return 0;
    }
    r->flush_queued = true;
    bk_enqueue_locked(b, j);
    pthread_mutex_unlock(&b->mu);
    return 0;
}

static void bk_flush_timer(void *arg)
{
    backup_service *b = arg;
    b->timer_id = 0;
    while (b->dirty != NULL) {
        struct bk_replica *r = b->dirty;
        if (r->closed && r->close_enqueued) {
            bk_dirty_remove(b, r);  /* its closing flush is on the way */
            continue;
        }
        if (bk_flush_now(b, r) != 0) {
            CRAM_WARN("backup: out of memory queueing a flush; retrying later");
            b->timer_id = tp_timer_add(b->loop, BK_FLUSH_DELAY_US, bk_flush_timer, b);
            return;
        }
        bk_dirty_remove(b, r);
    }
}

/* Put r on the dirty list; the flush timer runs within delay_us. */
static void bk_mark_dirty(backup_service *b, struct bk_replica *r, uint64_t delay_us)
{
    if (!r->in_dirty) {
        r->in_dirty = true;
        r->dprev = NULL;
        r->dnext = b->dirty;
        if (b->dirty != NULL)
            b->dirty->dprev = r;
        b->dirty = r;
    }
    if (b->timer_id == 0)
        b->timer_id = tp_timer_add(b->loop, delay_us, bk_flush_timer, b);
}

/* Answer every GET_RECOVERY_DATA waiting for r's bytes with st. */
static void bk_answer_rwaiters(struct bk_replica *r, cram_status st)
{
    while (r->rwaiters != NULL) {
        struct bk_rwait *w = r->rwaiters;
        r->rwaiters = w->next;
        reply_status(w->rpc, st);
        free(w);
    }
}

/* Take r out of service: out of the table (or bad list), its waiters
 * answered, its storage released, its file removed unless keep_file (a
 * replacement reuses the name).  Freed now or when its last job completes. */
static void bk_retire(backup_service *b, struct bk_replica *r, bool keep_file)
{
    if (r->bad) {
        struct bk_replica **pp = &b->bad;
        while (*pp != r)
            pp = &(*pp)->hnext;
        *pp = r->hnext;
        r->hnext = NULL;
    } else {
        bk_tab_remove(b, r);
    }
    bk_dirty_remove(b, r);
    bk_answer_waiters(r, UINT64_MAX, CRAM_NOT_FOUND);
    bk_answer_rwaiters(r, CRAM_NOT_FOUND);
    bk_rdata_drop(b, r);
    b->used -= r->capacity;
    pthread_mutex_lock(&b->mu);
    r->gone = true;
    pthread_mutex_unlock(&b->mu);
    if (!keep_file) {
        struct bk_job *j = calloc(1, sizeof *j);
        if (j != NULL) {
            j->type = BK_JOB_UNLINK;
            j->rep = r;
            bk_enqueue(b, j);
        } else {
            CRAM_ERROR("backup: out of memory: replica file %s not removed", r->name);
        }
    }
    if (r->refs == 0)
        bk_rep_free(b, r);
}

/* ---- worker ----------------------------------------------------------------- */

static int pwritev_full(int fd, struct iovec *iov, int n, off_t off)
{
    while (n > 0) {
        ssize_t w = pwritev(fd, iov, n, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (w == 0)
            return EIO;
        off += w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            /* a partial O_DIRECT write stops on a block boundary */
            iov->iov_base = (uint8_t *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Create (truncate) the replica's file and reserve its space. */
/* Keep a freed replica's file for reuse: its header zeroed first (so no
 * name it gets later can show the old replica), then renamed to a name the
 * start-up scan ignores (a leading dot; removed at start-up).  false: the
 * caller unlinks it. */
static bool bk_spare_put(backup_service *b, const char *name)
{
    if (b->nspare >= BK_SPARES)
        return false;
    int fd = openat(b->dirfd, name, O_WRONLY | O_CLOEXEC | (b->no_direct ? 0 : O_DIRECT));
    if (fd < 0)
        return false;
    struct stat st;
    struct iovec iov = { b->zero_blk, BACKUP_HDR_SIZE };
    bool ok = fstat(fd, &st) == 0 && st.st_size >= BACKUP_HDR_SIZE &&
              pwritev_full(fd, &iov, 1, 0) == 0;
    close(fd);
    if (!ok)
        return false;
    char *sp = b->spare[b->nspare];
    snprintf(sp, sizeof b->spare[0], BK_SPARE_PREFIX "%" PRIu64, ++b->spare_seq);
    if (renameat(b->dirfd, name, b->dirfd, sp) != 0)
        return false;
    b->nspare++;
    return true;
}

/* A spare file under the replica's name, open for writing with room for
 * its capacity; false if none (or it failed: then it is gone). */
static bool bk_spare_take(backup_service *b, struct bk_replica *r)
{
    if (b->nspare == 0)
        return false;
    const char *sp = b->spare[--b->nspare];
    if (renameat(b->dirfd, sp, b->dirfd, r->name) != 0) {
        unlinkat(b->dirfd, sp, 0);
        return false;
    }
    int fd = openat(b->dirfd, r->name, O_WRONLY | O_CLOEXEC | (b->no_direct ? 0 : O_DIRECT));
    if (fd >= 0) {
        off_t size = (off_t)(BACKUP_HDR_SIZE + backup_round_up(r->capacity));
        struct stat st;
        int rc = 0;
        if (fstat(fd, &st) != 0)
            rc = errno;
        else if (st.st_size < size)
            rc = posix_fallocate(fd, 0, size);
        if (rc == 0 || rc == EOPNOTSUPP || rc == EINVAL) {
            r->fd = fd;
            return true;
        }
        close(fd);
    }
    unlinkat(b->dirfd, r->name, 0);
    return false;
}

/* Leftover spare files of an earlier run go (start-up). */
static void bk_spares_remove(backup_service *b)
{
    int fd = dup(b->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        if (fd >= 0)
            close(fd);
        return;
    }
    rewinddir(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, BK_SPARE_PREFIX, strlen(BK_SPARE_PREFIX)) == 0)
            unlinkat(b->dirfd, de->d_name, 0);
    closedir(d);
}

static int bk_open_file(backup_service *b, struct bk_replica *r, bool sync)
{
    if (bk_spare_take(b, r)) {
        if (sync && fsync(b->dirfd) != 0) {
            int rc = errno;
            close(r->fd);
            r->fd = -1;
            return rc;
        }
        return 0;
    }
    int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
    int fd = -1;
    if (!b->no_direct) {
        fd = openat(b->dirfd, r->name, flags | O_DIRECT, 0644);
        if (fd < 0 && errno == EINVAL) {
            CRAM_WARN("backup: %s does not support O_DIRECT; using buffered I/O", b->dir);
            b->no_direct = true;
        }
    }
    if (fd < 0 && b->no_direct)
        fd = openat(b->dirfd, r->name, flags, 0644);
    if (fd < 0)
        return errno;
    off_t size = (off_t)(BACKUP_HDR_SIZE + backup_round_up(r->capacity));
    int rc = posix_fallocate(fd, 0, size);
    if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) {
        close(fd);
        unlinkat(b->dirfd, r->name, 0);
        return rc;
    }
    if (sync && fsync(b->dirfd) != 0) {
        rc = errno;
        close(fd);
        return rc;
    }
    r->fd = fd;
    return 0;
}

static int bk_write_header(backup_service *b, struct bk_replica *r, struct seg_certificate cert,
                           bool closed)
{
    struct backup_disk_header h;
    memset(&h, 0, sizeof h);
    h.master_id = r->master_id;
    h.segment_id = r->segment_id;
    h.epoch = r->epoch;
    h.capacity = r->capacity;
    h.closed = closed ? 1 : 0;
    h.flags = r->primary ? BACKUP_HDR_PRIMARY : 0;
    h.cert_length = cert.length;
    h.cert_crc32c = cert.crc32c;
    backup_header_encode(&h, b->hdr_blk);
    struct iovec iov = { b->hdr_blk, BACKUP_HDR_SIZE };
    return pwritev_full(r->fd, &iov, 1, 0);
}

/* The FLUSH job: data from the dirty point to the snapshot length, then
 * the header certifying the snapshot certificate. */
static void bk_do_flush(backup_service *b, struct bk_job *j)
{
    struct bk_replica *r = j->rep;

    pthread_mutex_lock(&b->mu);
    r->flush_queued = false;
    bool gone = r->gone;
    uint32_t len = r->length;
    uint32_t from = r->dirty_from;
    struct seg_certificate cert = r->cert;
    /* closing only once the dispatch thread queued the close (bk_flush_now
     * sets close_enqueued): a flush queued earlier that starts between a
     * CLOSE write setting `closed` and its bk_flush_now would otherwise
     * close too, next to the flush that bk_flush_now then queues -- and the
     * first one's completion drops the buffer the second one reads */
    bool closing = r->closed && r->close_enqueued;
    bool sync = r->sync_req || closing;
    j->seq = r->seq;
    r->dirty_from = len;
    r->sync_req = false;
    pthread_mutex_unlock(&b->mu);

    j->cert = cert;
    j->closing = closing;
    if (gone)
        return;
    int err = 0;
    if (r->fd < 0 && (err = bk_open_file(b, r, sync)) != 0)
        goto out_err;

    uint64_t a = backup_round_down(from), full = backup_round_down(len);
    struct iovec iov[2];
    int n = 0;
    if (full > a)
        iov[n++] = (struct iovec){ r->buf + a, full - a };
    if (len > full) {
        memset(b->tail_blk, 0, BACKUP_ALIGN);
        memcpy(b->tail_blk, r->buf + full, len - full);
        iov[n++] = (struct iovec){ b->tail_blk, BACKUP_ALIGN };
    }
    if (n > 0 && (err = pwritev_full(r->fd, iov, n, (off_t)(BACKUP_HDR_SIZE + a))) != 0)
        goto out_err;
    if (sync && fdatasync(r->fd) != 0) {
        err = errno;
        goto out_err;
    }
    if (closing)
        j->verified = cert.length == 0 || seg_verify(r->buf, len, &cert);
    if ((err = bk_write_header(b, r, cert, closing)) != 0)
        goto out_err;
    if (sync && fdatasync(r->fd) != 0) {
        err = errno;
        goto out_err;
    }
    if (closing) {
        close(r->fd);
        r->fd = -1;
        j->closed_done = true;
    }
    return;

out_err:
    j->err = err;
    pthread_mutex_lock(&b->mu);
    if (from < r->dirty_from)
        r->dirty_from = from;      /* the next flush rewrites what this one missed */
    if (sync)
        r->sync_req = true;
    pthread_mutex_unlock(&b->mu);
}

static void bk_do_read(backup_service *b, struct bk_job *j)
{
    struct bk_replica *r = j->rep;
    int fd = openat(b->dirfd, r->name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        j->err = errno;
        return;
    }
    uint8_t *p = j->resp + sizeof(struct wire_backup_read_resp);
    size_t left = j->len;
    off_t off = (off_t)BACKUP_HDR_SIZE + j->off;
    while (left > 0) {
        ssize_t n = pread(fd, p, left, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            j->err = n < 0 ? errno : EIO;
            break;
        }
        p += n;
        left -= (size_t)n;
        off += n;
    }
    close(fd);
    if (j->err == 0 && j->whole) {
        struct wire_backup_read_resp rh;
        memcpy(&rh, j->resp, sizeof rh);
        struct seg_certificate cert = { rh.certificate.length, rh.certificate.crc32c };
        j->verified = seg_verify(j->resp + sizeof rh, j->len, &cert);
    } else {
        j->verified = true;
    }
}

/* Build the recovery index of a verified replica (reader thread; on out of
 * memory there is none and requests walk the bytes). */
static void bk_index(struct bk_job *j)
{
    uint32_t cap = 1024, n = 0, pos = 0;
    struct bk_ient *v = malloc(cap * sizeof *v);
    struct seg_entry_hdr h;
    while (v != NULL && pos + sizeof h <= j->len) {
        memcpy(&h, j->resp + pos, sizeof h);
        uint64_t esz = seg_entry_size(h.length);
        if (esz > j->len - pos)
            break;                  /* cannot happen: the bytes were verified */
        struct seg_entry e = { .type = h.type, .offset = pos, .length = h.length,
                               .body = j->resp + pos + sizeof h };
        struct bk_ient x = { 0, 0, pos, (uint32_t)esz };
        bool keep = false;
        const uint8_t *key;
        if (h.type == SEG_ENTRY_SAFE_VERSION) {
            x.size |= BK_IENT_ALWAYS;
            keep = true;
        } else if (h.type == SEG_ENTRY_OBJECT) {
            const struct seg_object *o;
            const uint8_t *val;
            uint32_t vl;
            if ((keep = seg_parse_object(&e, &o, &key, &val, &vl))) {
                x.table_id = o->table_id;
                x.hash = cram_key_hash(o->table_id, key, o->key_len);
            }
        } else if (h.type == SEG_ENTRY_TOMBSTONE) {
            const struct seg_tombstone *t;
            if ((keep = seg_parse_tombstone(&e, &t, &key))) {
                x.table_id = t->table_id;
                x.hash = cram_key_hash(t->table_id, key, t->key_len);
            }
        }
        if (keep) {
            if (n == cap) {
                cap *= 2;
                struct bk_ient *nv = realloc(v, cap * sizeof *nv);
                if (nv == NULL) {
                    free(v);
                    v = NULL;
                    break;
                }
                v = nv;
            }
            v[n++] = x;
        }
        pos += (uint32_t)esz;
    }
    j->idx = v;
    j->nidx = v != NULL ? n : 0;
}

/* Recovery: read a replica's certified bytes [0, j->len) into j->resp and
 * verify them against j->cert (once per replica; the dispatch thread keeps
 * the result). */
static void bk_do_rload(backup_service *b, struct bk_job *j)
{
    /* O_DIRECT into the (aligned, reused) buffer: no page-cache copy; the
     * length is rounded up to whole blocks (the file holds them: data is
     * written in whole blocks), and a short read at the end of the file is
     * fine once the certified bytes are in */
    bool direct = !b->rno_direct;
    int fd = openat(b->dirfd, j->rep->name, O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));
    if (fd < 0 && direct && errno == EINVAL) {
        direct = false;
        fd = openat(b->dirfd, j->rep->name, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        j->err = errno;
        return;
    }
    uint8_t *p = j->resp;
    size_t want = direct ? backup_round_up(j->len) : j->len, got = 0;
    if (want > j->resp_cap)
        want = j->len;
    while (got < want) {
        ssize_t n = pread(fd, p + got, want - got, (off_t)(BACKUP_HDR_SIZE + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && direct && errno == EINVAL && got == 0) {
            /* the filesystem refuses this direct read: the page cache then */
            close(fd);
            fd = openat(b->dirfd, j->rep->name, O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                j->err = errno;
                return;
            }
            direct = false;
            b->rno_direct = true;
            want = j->len;
            continue;
        }
        if (n < 0) {
            j->err = errno;
            break;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    if (j->err == 0 && got < j->len)
        j->err = EIO;
    close(fd);
    j->verified = j->err == 0 && seg_verify(j->resp, j->len, &j->cert);
    if (j->verified)
        bk_index(j);
}

static void bk_do_unlink(backup_service *b, struct bk_job *j)
{
    struct bk_replica *r = j->rep;
    if (r->fd >= 0) {
        close(r->fd);
        r->fd = -1;
    }
    if (bk_spare_put(b, r->name))
        return;
    if (unlinkat(b->dirfd, r->name, 0) != 0 && errno != ENOENT)
        j->err = errno;
}

/* The worker (flushes, unlinks) and the reader (READ, RLOAD) run this on
 * their own queue. */
static void bk_work(backup_service *b, struct bk_job **qhead, struct bk_job **qtail,
                    pthread_cond_t *cv)
{
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (*qhead == NULL && !b->stop)
            pthread_cond_wait(cv, &b->mu);
        struct bk_job *j = *qhead;
        if (j == NULL)
            break;                  /* stopping and nothing left */
        *qhead = j->next;
        if (*qhead == NULL)
            *qtail = NULL;
        j->next = NULL;
        pthread_mutex_unlock(&b->mu);

        if (j->type == BK_JOB_FLUSH)
            bk_do_flush(b, j);      /* takes b->mu for its snapshot */
        else if (j->type == BK_JOB_READ)
            bk_do_read(b, j);
        else if (j->type == BK_JOB_UNLINK)
            bk_do_unlink(b, j);
        else
            bk_do_rload(b, j);

        pthread_mutex_lock(&b->mu);
        bool was_empty = b->dhead == NULL;
        if (b->dtail != NULL)
            b->dtail->next = j;
        else
            b->dhead = j;
        b->dtail = j;
        if (was_empty) {
            /* ring once per batch: the dispatch thread drains the whole list
             * (outside the lock; an extra ring only costs an empty drain) */
            pthread_mutex_unlock(&b->mu);
            uint64_t one = 1;
            while (write(b->notify->efd, &one, sizeof one) < 0 && errno == EINTR)
                ;
            pthread_mutex_lock(&b->mu);
        }
    }
    pthread_mutex_unlock(&b->mu);
}

static void *bk_worker(void *arg)
{
    backup_service *b = arg;
    bk_work(b, &b->qhead, &b->qtail, &b->cv);
    return NULL;
}

static void *bk_reader(void *arg)
{
    backup_service *b = arg;
    bk_work(b, &b->rqhead, &b->rqtail, &b->rcv);
    return NULL;
}

/* ---- log digest ---------------------------------------------------------------- */

/*
 * Look for the log digest a segment starts with (segment header, then
 * SEG_ENTRY_LOG_DIGEST) in the first len certified bytes at p.  Fills
 * r->has_digest / r->digest and sets r->digest_done once the answer is
 * known: the digest was found, the second entry is something else, or
 * `complete` says no more bytes will come.  Every entry's crc is checked.
 */
static void bk_digest_scan(struct bk_replica *r, const uint8_t *p, uint32_t len, bool complete)
{
    if (r->digest_done || p == NULL)
        return;
    struct seg_iter it;
    struct seg_entry e;
    seg_iter_init(&it, p, len);
    int st1 = seg_iter_next(&it, &e);
    if (st1 != SEG_ITER_OK || e.type != SEG_ENTRY_SEGHDR) {
        r->digest_done = st1 != SEG_ITER_END || complete;
        return;
    }
    int st = seg_iter_next(&it, &e);
    if (st != SEG_ITER_OK) {
        r->digest_done = complete || st == SEG_ITER_CORRUPT;
        return;
    }
    r->digest_done = true;
    if (e.type != SEG_ENTRY_LOG_DIGEST || e.length < sizeof(struct seg_log_digest))
        return;
    struct seg_log_digest d;
    memcpy(&d, e.body, sizeof d);
    if ((uint64_t)e.length != sizeof d + (uint64_t)d.count * sizeof(uint64_t))
        return;
    uint64_t *ids = malloc((d.count ? d.count : 1) * sizeof *ids);
    if (ids == NULL) {
        r->digest_done = false;     /* try again at the next list */
        return;
    }
    memcpy(ids, e.body + sizeof d, (size_t)d.count * sizeof *ids);
    free(r->digest);
    r->digest = ids;
    r->ndigest = d.count;
    r->has_digest = true;
}

/* Start-up: read just enough of an on-disk replica to find its digest. */
static void bk_digest_load(backup_service *b, struct bk_replica *r)
{
    uint32_t want = r->cert.length < 4096 ? r->cert.length : 4096;
    if (want == 0) {
        r->digest_done = r->closed;
        return;
    }
    int fd = openat(b->dirfd, r->name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    for (int round = 0; round < 2 && !r->digest_done; round++) {
        uint8_t *p = malloc(want);
        if (p == NULL)
            break;
        if (pread(fd, p, want, BACKUP_HDR_SIZE) == (ssize_t)want) {
            bk_digest_scan(r, p, want, want == r->cert.length);
            if (!r->digest_done && round == 0) {
                /* the digest entry is longer: read up to its end */
                struct seg_entry_hdr h1, h2;
                memcpy(&h1, p, sizeof h1);
                uint64_t at = sizeof h1 + (uint64_t)h1.length;
                if (at + sizeof h2 <= want) {
                    memcpy(&h2, p + at, sizeof h2);
                    uint64_t end = at + sizeof h2 + h2.length;
                    want = end <= r->cert.length ? (uint32_t)end : r->cert.length;
                }
            }
        }
        free(p);
    }
    r->digest_done = true;
    close(fd);
}

/* ---- completions (dispatch thread) ------------------------------------------ */

static void bk_complete_flush(backup_service *b, struct bk_job *j)
{
    struct bk_replica *r = j->rep;
    if (r->gone)
        return;
    if (j->err != 0) {
        if (!r->io_error)
            CRAM_ERROR("backup: writing replica %s: %s", r->name, strerror(j->err));
        r->io_error = true;
        bk_answer_waiters(r, j->seq, CRAM_INTERNAL_ERROR);
        /* try again later; once closed only the closing flush retries (a
         * later flush of a closed replica could outlive its buffer) */
        if (j->closing) {
            pthread_mutex_lock(&b->mu);
            r->close_enqueued = false;
            pthread_mutex_unlock(&b->mu);
            bk_mark_dirty(b, r, BK_RETRY_DELAY_US);
        } else if (!r->closed) {
            bk_mark_dirty(b, r, BK_RETRY_DELAY_US);
        }
        return;
    }
    r->io_error = false;
    r->on_disk = j->cert.length == r->cert.length && j->cert.crc32c == r->cert.crc32c;
    bk_answer_waiters(r, j->seq, CRAM_OK);
    if (j->closed_done) {
        r->verified = j->verified;
        if (!j->verified)
            CRAM_WARN("backup: closed replica %s does not match its certificate (length %u)",
                      r->name, j->cert.length);
        bk_digest_scan(r, r->buf, r->cert.length, true);
        bk_buf_put(b, r->buf, backup_round_up(r->capacity));
        r->buf = NULL;
        r->on_disk = true;
    }
}

static void bk_complete_read(backup_service *b, struct bk_job *j)
{
    struct bk_replica *r = j->rep;
    if (j->err != 0 || !j->verified) {
        if (j->err != 0)
            CRAM_ERROR("backup: reading replica %s: %s", r->name, strerror(j->err));
        else
            CRAM_ERROR("backup: replica %s fails its certificate on disk; taken out of service",
                       r->name);
        reply_status(j->rpc, j->err != 0 ? CRAM_INTERNAL_ERROR : CRAM_NOT_FOUND);
        if (j->err == 0 && !r->gone && !r->bad) {
            bk_tab_remove(b, r);
            bk_rdata_drop(b, r);
            r->bad = true;
            r->hnext = b->bad;
            b->bad = r;
        }
    } else {
        struct iovec iov = { j->resp, sizeof(struct wire_backup_read_resp) + j->len };
        tp_rpc_reply(j->rpc, &iov, 1);
    }
    free(j->resp);
}

static void bk_complete_rload(backup_service *b, struct bk_job *j);

static void bk_drain(backup_service *b)
{
    pthread_mutex_lock(&b->mu);
    struct bk_job *j = b->dhead;
    b->dhead = b->dtail = NULL;
    pthread_mutex_unlock(&b->mu);
    while (j != NULL) {
        struct bk_job *next = j->next;
        struct bk_replica *r = j->rep;
        if (j->type == BK_JOB_FLUSH)
            bk_complete_flush(b, j);
        else if (j->type == BK_JOB_READ)
            bk_complete_read(b, j);
        else if (j->type == BK_JOB_RLOAD)
            bk_complete_rload(b, j);
        else if (j->type == BK_JOB_UNLINK && j->err != 0)
            CRAM_WARN("backup: removing %s: %s", r->name, strerror(j->err));
        free(j->idx);               /* an RLOAD's index, unless it was installed */
        free(j);
        if (r != NULL && --r->refs == 0 && r->gone)
            bk_rep_free(b, r);
        j = next;
    }
}

static void bk_notify_cb(void *arg, uint32_t events)
{
    backup_service *b = arg;
    uint64_t v;
    (void)events;
    /* reset the doorbell before draining, so a ring after the drain's
     * snapshot is never lost */
    while (read(b->notify->efd, &v, sizeof v) < 0 && errno == EINTR)
        ;
    bk_drain(b);
}

/* ---- requests ----------------------------------------------------------------- */

static bool bk_target_ok(const backup_service *b, const struct wire_target *t)
{
    return t->target_server_id == 0 || t->target_server_id == b->server_id;
}

static bool bk_zombie(const backup_service *b, uint64_t master_id)
{
    if (b->sl == NULL)
        return false;
    const struct sl_entry *e = sl_find(b->sl, master_id);
    return e != NULL && (e->status == SL_CRASHED || e->status == SL_REMOVED);
}

static bool cert_eq(struct seg_certificate a, const struct wire_certificate *w)
{
    return a.length == w->length && a.crc32c == w->crc32c;
}

/* A write to a closed replica: only a re-send of the close is accepted. */
static void bk_write_closed(backup_service *b, tp_rpc *rpc, struct bk_replica *r,
                            const struct wire_backup_write_req *q)
{
    (void)b;
    if (!(q->flags & WIRE_BACKUP_CLOSE) || !cert_eq(r->cert, &q->certificate) ||
        (uint64_t)q->offset + q->length > r->length) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    if (!(q->flags & WIRE_BACKUP_SYNC) || r->buf == NULL) {
        reply_status(rpc, CRAM_OK);
        return;
    }
    if (r->io_error) {
        reply_status(rpc, CRAM_INTERNAL_ERROR);
        return;
    }
    /* the closing flush is queued or running: answer with it */
    struct bk_waiter *w = malloc(sizeof *w);
    if (w == NULL) {
        reply_status(rpc, CRAM_NO_MEMORY);
        return;
    }
    *w = (struct bk_waiter){ NULL, rpc, r->seq };
    *r->wtail = w;
    r->wtail = &w->next;
}

/* Find or create the replica a write goes to; NULL after replying with the
 * reason.  Checks every field that depends on the held replica. */
static struct bk_replica *bk_write_target(backup_service *b, tp_rpc *rpc,
                                          const struct wire_backup_write_req *q)
{
    struct bk_replica *r = bk_find(b, q->master_id, q->segment_id);
    bool open = q->flags & WIRE_BACKUP_OPEN;
    cram_status st = CRAM_OK;

    if (!open) {
        if (r == NULL || r->loaded || q->epoch > r->epoch)
            st = CRAM_NOT_FOUND;
        else if (q->epoch < r->epoch)
            st = CRAM_WRONG_VERSION;
        else if (q->capacity != 0 && q->capacity != r->capacity)
            st = CRAM_REQUEST_FORMAT_ERROR;
        if (st != CRAM_OK) {
            reply_status(rpc, st);
            return NULL;
        }
        return r;
    }
    if (q->capacity == 0)
        st = CRAM_REQUEST_FORMAT_ERROR;
    else if (q->capacity > b->cfg.max_replica_bytes)
        st = CRAM_REQUEST_TOO_LARGE;
    else if (r != NULL && q->epoch < r->epoch)
        st = CRAM_WRONG_VERSION;
    else if (r != NULL && !r->loaded && q->epoch == r->epoch)
        st = q->capacity == r->capacity ? CRAM_OK : CRAM_REQUEST_FORMAT_ERROR;
    if (st != CRAM_OK || (r != NULL && !r->loaded && q->epoch == r->epoch)) {
        if (st != CRAM_OK)
            reply_status(rpc, st);
        return st == CRAM_OK ? r : NULL;
    }

    /* a new replica (possibly replacing r): the write must fit an empty one */
    if (q->offset != 0 || q->length > q->capacity || q->certificate.length > q->length) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return NULL;
    }
    uint64_t freed = r != NULL ? r->capacity : 0;
    if (b->used - freed + q->capacity > b->cfg.storage_bytes) {
        reply_status(rpc, CRAM_BACKUP_FULL);
        return NULL;
    }
    struct bk_replica *n = bk_rep_new(q->master_id, q->segment_id, q->epoch, q->capacity);
    if (n != NULL)
        n->buf = bk_buf_get(b, backup_round_up(q->capacity));
    if (n == NULL || n->buf == NULL) {
        if (n != NULL)
            bk_rep_free(b, n);
        reply_status(rpc, CRAM_NO_MEMORY);
        return NULL;
    }
    n->primary = (q->flags & WIRE_BACKUP_PRIMARY) != 0;
    /* bad replicas of the same name are replaced by the new file */
    for (struct bk_replica **pp = &b->bad; *pp != NULL;) {
        struct bk_replica *x = *pp;
        if (strcmp(x->name, n->name) == 0)
            bk_retire(b, x, true);
        else
            pp = &x->hnext;
    }
    if (r != NULL)
        bk_retire(b, r, strcmp(r->name, n->name) == 0);
    bk_tab_insert(b, n);
    b->used += n->capacity;
    return n;
}

static void bk_write(backup_service *b, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct wire_backup_write_req q;
    if (len < sizeof q) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    memcpy(&q, req, sizeof q);
    if (!bk_target_ok(b, &q.tgt)) {
        reply_status(rpc, CRAM_WRONG_SERVER);
        return;
    }
    if (q.length != len - sizeof q ||
        (q.flags & ~(uint32_t)(WIRE_BACKUP_OPEN | WIRE_BACKUP_CLOSE | WIRE_BACKUP_SYNC |
                               WIRE_BACKUP_PRIMARY)) != 0 ||
        q.master_id == 0) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    if (bk_zombie(b, q.master_id)) {
        reply_status(rpc, CRAM_CALLER_NOT_IN_CLUSTER);
        return;
    }
    struct bk_replica *r = bk_write_target(b, rpc, &q);
    if (r == NULL)
        return;
    if (r->closed) {
        bk_write_closed(b, rpc, r, &q);
        return;
    }
    uint64_t end = (uint64_t)q.offset + q.length;
    uint32_t newlen = end > r->length ? (uint32_t)end : r->length;
    if (q.offset > r->length || end > r->capacity || q.certificate.length > newlen) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    bool sync = q.flags & WIRE_BACKUP_SYNC, close = q.flags & WIRE_BACKUP_CLOSE;
    struct bk_waiter *w = NULL;
    if (sync && (w = malloc(sizeof *w)) == NULL) {
        reply_status(rpc, CRAM_NO_MEMORY);
        return;
    }

    /* the bytes: a re-sent range is rewritten only where it differs */
    const uint8_t *data = req + sizeof q;
    uint32_t dirty = UINT32_MAX;
    if (q.offset < r->length) {
        uint32_t ov = (end < r->length ? (uint32_t)end : r->length) - q.offset;
        if (memcmp(r->buf + q.offset, data, ov) != 0) {
            memcpy(r->buf + q.offset, data, ov);
            dirty = q.offset;
        }
    }
    if (end > r->length)
        memcpy(r->buf + r->length, data + (r->length - q.offset), (size_t)(end - r->length));

    pthread_mutex_lock(&b->mu);
    r->length = newlen;
    if (q.certificate.length >= r->cert.length)
        r->cert = (struct seg_certificate){ q.certificate.length, q.certificate.crc32c };
    if (dirty < r->dirty_from)
        r->dirty_from = dirty;
    r->seq++;
    if (close)
        r->closed = true;
    if (sync)
        r->sync_req = true;
    pthread_mutex_unlock(&b->mu);
    r->on_disk = false;

    if (sync) {
        *w = (struct bk_waiter){ NULL, rpc, r->seq };
        *r->wtail = w;
        r->wtail = &w->next;
    }
    if (sync || close) {
        if (bk_flush_now(b, r) != 0) {
            bk_mark_dirty(b, r, BK_FLUSH_DELAY_US);    /* the timer retries */
            CRAM_WARN("backup: out of memory queueing a flush of %s", r->name);
        } else {
            bk_dirty_remove(b, r);
        }
    } else {
        bk_mark_dirty(b, r, BK_FLUSH_DELAY_US);
    }
    if (!sync)
        reply_status(rpc, CRAM_OK);
}

static void bk_free_req(backup_service *b, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct wire_backup_free_req q;
    if (len != sizeof q) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    memcpy(&q, req, sizeof q);
    if (!bk_target_ok(b, &q.tgt)) {
        reply_status(rpc, CRAM_WRONG_SERVER);
        return;
    }
    struct bk_replica *r = bk_find(b, q.master_id, q.segment_id);
    if (r != NULL)
        bk_retire(b, r, false);
    for (struct bk_replica **pp = &b->bad; *pp != NULL;) {
        struct bk_replica *x = *pp;
        if (x->master_id == q.master_id && x->segment_id == q.segment_id)
            bk_retire(b, x, false);
        else
            pp = &x->hnext;
    }
    reply_status(rpc, CRAM_OK);
}

/* Is the replica's certified range good?  Memory bytes are checked here
 * (cached per certificate length); disk copies were checked when written
 * or loaded. */
static bool bk_verified(struct bk_replica *r)
{
    if (r->cert.length == 0)
        return true;
    if (r->buf == NULL)
        return r->verified;
    if (r->vcache_len != r->cert.length) {
        r->vcache_ok = seg_verify(r->buf, r->cert.length, &r->cert);
        r->vcache_len = r->cert.length;
    }
    return r->vcache_ok;
}

static int pf_cmp(const void *a, const void *b)
{
    const struct bk_pf *x = a, *y = b;
    if (x->segment_id != y->segment_id)
        return x->segment_id < y->segment_id ? -1 : 1;
    return x->master_id < y->master_id ? -1 : x->master_id > y->master_id;
}

/* Recovery of master_id is starting (a LIST for it): queue its primary
 * replicas that live on disk only for loading into memory, in segment
 * order (the order recovery masters ask for them).  Replaces what was
 * queued for the same master before (the coordinator may LIST again). */
static void bk_pf_add(backup_service *b, uint64_t master_id)
{
    size_t k = 0;
    for (size_t i = b->pf_next; i < b->npf; i++)
        if (b->pf[i].master_id != master_id)
            b->pf[k++] = b->pf[i];
    b->npf = k;
    b->pf_next = 0;
    for (size_t i = 0; i < b->nbuckets; i++) {
        for (struct bk_replica *r = b->tab[i]; r != NULL; r = r->hnext) {
            if (r->master_id != master_id || !r->primary || r->buf != NULL ||
                r->cert.length == 0 || !r->verified)
                continue;
            if (b->npf == b->pf_cap) {
                size_t nc = b->pf_cap ? 2 * b->pf_cap : 64;
                struct bk_pf *np = realloc(b->pf, nc * sizeof *np);
                if (np == NULL)
                    goto sort;      /* only an optimisation */
                b->pf = np;
                b->pf_cap = nc;
            }
            b->pf[b->npf++] = (struct bk_pf){ master_id, r->segment_id };
        }
    }
sort:
    if (b->npf > 1)
        qsort(b->pf, b->npf, sizeof *b->pf, pf_cmp);
    bk_pf_pump(b);
}

static void bk_list(backup_service *b, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct wire_backup_list_req q;
    if (len != sizeof q) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    memcpy(&q, req, sizeof q);
    if (!bk_target_ok(b, &q.tgt)) {
        reply_status(rpc, CRAM_WRONG_SERVER);
        return;
    }
    size_t n = 0;
    Cram__ReplicaInfo *infos = malloc((b->count ? b->count : 1) * sizeof *infos);
    Cram__ReplicaInfo **ptrs = malloc((b->count ? b->count : 1) * sizeof *ptrs);
    uint8_t *out = NULL;
    if (infos == NULL || ptrs == NULL) {
        reply_status(rpc, CRAM_NO_MEMORY);
        goto out_free_infos;
    }
    for (size_t i = 0; i < b->nbuckets; i++) {
        for (struct bk_replica *r = b->tab[i]; r != NULL; r = r->hnext) {
            if (q.master_id != 0 && r->master_id != q.master_id)
                continue;
            Cram__ReplicaInfo *e = &infos[n];
            cram__replica_info__init(e);
            e->master_id = r->master_id;
            e->segment_id = r->segment_id;
            e->epoch = r->epoch;
            e->length = r->cert.length;
            e->closed = r->closed;
            e->cert_length = r->cert.length;
            e->cert_crc32c = r->cert.crc32c;
            e->verified = bk_verified(r);
            e->on_disk = r->buf == NULL || r->on_disk;
            if (!r->digest_done)
                bk_digest_scan(r, r->buf != NULL ? r->buf : r->rdata, r->cert.length, r->closed);
            e->has_digest = r->has_digest;
            e->n_log_digest = r->has_digest ? r->ndigest : 0;
            e->log_digest = r->has_digest ? r->digest : NULL;
            e->primary = r->primary;
            ptrs[n++] = e;
        }
    }
    if (q.master_id != 0)
        bk_pf_add(b, q.master_id);
    Cram__ReplicaList rl = CRAM__REPLICA_LIST__INIT;
    rl.server_id = b->server_id;
    rl.n_replicas = n;
    rl.replicas = ptrs;
    rl.storage_bytes = b->cfg.storage_bytes;
    rl.used_bytes = b->used;
    size_t plen = cram__replica_list__get_packed_size(&rl);
    if (plen + sizeof(struct wire_resp_hdr) > WIRE_MAX_MESSAGE) {
        CRAM_WARN("backup: replica list of %zu replicas does not fit a message", n);
        reply_status(rpc, CRAM_REQUEST_TOO_LARGE);
        goto out_free_infos;
    }
    out = malloc(sizeof(struct wire_resp_hdr) + plen);
    if (out == NULL) {
        reply_status(rpc, CRAM_NO_MEMORY);
        goto out_free_infos;
    }
    struct wire_resp_hdr h = { .status = CRAM_OK };
    memcpy(out, &h, sizeof h);
    cram__replica_list__pack(&rl, out + sizeof h);
    struct iovec iov = { out, sizeof h + plen };
    tp_rpc_reply(rpc, &iov, 1);
    free(out);
out_free_infos:
    free(ptrs);
    free(infos);
}

static void bk_read(backup_service *b, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct wire_backup_read_req q;
    if (len != sizeof q) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    memcpy(&q, req, sizeof q);
    struct { uint32_t offset, max_bytes; } range = { q.offset, q.max_bytes };
    if (!bk_target_ok(b, &q.tgt)) {
        reply_status(rpc, CRAM_WRONG_SERVER);
        return;
    }
    struct bk_replica *r = bk_find(b, q.master_id, q.segment_id);
    if (r == NULL || (q.epoch != 0 && q.epoch != r->epoch)) {
        reply_status(rpc, CRAM_NOT_FOUND);
        return;
    }
    if (range.offset > r->cert.length) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    uint32_t n = r->cert.length - range.offset;
    if (n > WIRE_BACKUP_READ_MAX_CHUNK)
        n = WIRE_BACKUP_READ_MAX_CHUNK;
    if (range.max_bytes != 0 && n > range.max_bytes)
        n = range.max_bytes;
    struct wire_backup_read_resp rh;
    memset(&rh, 0, sizeof rh);
    rh.hdr.status = CRAM_OK;
    rh.length = n;
    rh.epoch = r->epoch;
    rh.certificate.length = r->cert.length;
    rh.certificate.crc32c = r->cert.crc32c;
    rh.closed = r->closed ? 1 : 0;
    if (r->buf != NULL || n == 0) {
        struct iovec iov[2] = { { &rh, sizeof rh }, { NULL, 0 } };
        if (n > 0)
            iov[1] = (struct iovec){ r->buf + range.offset, n };
        tp_rpc_reply(rpc, iov, n > 0 ? 2 : 1);
        return;
    }
    /* on disk only: read it on the worker */
    struct bk_job *j = calloc(1, sizeof *j);
    uint8_t *resp = malloc(sizeof rh + (size_t)n);
    if (j == NULL || resp == NULL) {
        free(j);
        free(resp);
        reply_status(rpc, CRAM_NO_MEMORY);
        return;
    }
    memcpy(resp, &rh, sizeof rh);
    j->type = BK_JOB_READ;
    j->rep = r;
    j->rpc = rpc;
    j->off = range.offset;
    j->len = n;
    j->resp = resp;
    j->whole = range.offset == 0 && n == r->cert.length && n > 0;
    bk_enqueue(b, j);
}

/* ---- recovery data ------------------------------------------------------------- */

static int range_cmp(const void *a, const void *b)
{
    const struct wire_tablet_range *x = a, *y = b;
    if (x->table_id != y->table_id)
        return x->table_id < y->table_id ? -1 : 1;
    return x->start_hash < y->start_hash ? -1 : x->start_hash > y->start_hash;
}

/* Validate a GET_RECOVERY_DATA request: exact length for ntablets ranges,
 * 1 <= ntablets <= WIRE_MAX_RECOVERY_TABLETS, start <= end,
 * readers <= WIRE_MAX_RECOVERY_READERS. */
static cram_status bk_rd_parse(const uint8_t *req, uint32_t len, struct wire_recovery_data_req *q)
{
    if (len < sizeof *q)
        return CRAM_REQUEST_FORMAT_ERROR;
    memcpy(q, req, sizeof *q);
    if (q->ntablets == 0 || q->ntablets > WIRE_MAX_RECOVERY_TABLETS ||
        q->readers > WIRE_MAX_RECOVERY_READERS ||
        q->hdr.flags != 0 ||
        (uint64_t)len != sizeof *q + (uint64_t)q->ntablets * sizeof(struct wire_tablet_range))
        return CRAM_REQUEST_FORMAT_ERROR;
    for (uint32_t i = 0; i < q->ntablets; i++) {
        struct wire_tablet_range t;
        memcpy(&t, req + sizeof *q + (size_t)i * sizeof t, sizeof t);
        if (t.start_hash > t.end_hash)
            return CRAM_REQUEST_FORMAT_ERROR;
    }
    return CRAM_OK;
}

/* Is (table, hash) in one of the n sorted, merged ranges? */
static bool bk_in_ranges(const struct wire_tablet_range *v, uint32_t n, uint64_t table, uint64_t hash)
{
    uint32_t lo = 0, hi = n;          /* find the last range <= (table, hash) */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v[mid].table_id < table || (v[mid].table_id == table && v[mid].start_hash <= hash))
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return false;
    const struct wire_tablet_range *t = &v[lo - 1];
    return t->table_id == table && hash >= t->start_hash && hash <= t->end_hash;
}

/*
 * Next entry of bytes that were verified as a whole (seg_verify: every
 * entry's CRC and the certificate), from *pos: only the header is looked at
 * (type, length within the bytes), except for the first entry of a request
 * (check: its CRC too), which proves that the request's offset is an entry
 * boundary; the entries after it follow from it.  Re-checking every CRC for
 * every partition's request cost a CRC pass over the replica per partition;
 * the recovery master checks each entry it receives anyway.  1 = entry,
 * 0 = end, -1 = not an entry here.
 */
static int bk_next_verified(const uint8_t *data, uint32_t len, uint32_t *pos, bool check,
                            struct seg_entry *e)
{
    if (*pos == len)
        return 0;
    struct seg_entry_hdr h;
    if ((uint64_t)len - *pos < sizeof h)
        return -1;
    memcpy(&h, data + *pos, sizeof h);
    if (h.type == SEG_ENTRY_INVALID || h.type > SEG_ENTRY_TYPE_MAX ||
        (uint64_t)h.length > (uint64_t)len - *pos - sizeof h)
        return -1;
    if (check && !seg_entry_check((const struct seg_entry_hdr *)(data + *pos)))
        return -1;
    e->type = h.type;
    e->offset = *pos;
    e->length = h.length;
    e->body = data + *pos + sizeof h;
    *pos += (uint32_t)(sizeof h + h.length);
    return 1;
}

/*
 * Answer a (validated) GET_RECOVERY_DATA from the replica's verified
 * certified bytes data[0, len): the selected entries from q.offset on,
 * verbatim, back to back, while they fit max_bytes (at least one entry if it
 * fits a message, so every call makes progress).  true when the answer
 * said done = 1; *readers is then the request's `readers`.
 */
static bool bk_rd_serve(backup_service *b, tp_rpc *rpc, const struct bk_replica *r,
                        const uint8_t *data, uint32_t len, const struct bk_ient *idx,
                        uint32_t nidx, uint32_t *readers)
{
    uint32_t rlen;
    const uint8_t *req = tp_rpc_request(rpc, &rlen);
    struct wire_recovery_data_req q;
    if (bk_rd_parse(req, rlen, &q) != CRAM_OK || q.offset > len) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return false;
    }
    if (b->rscratch == NULL && (b->rscratch = malloc(WIRE_MAX_MESSAGE)) == NULL) {
        reply_status(rpc, CRAM_NO_MEMORY);
        return false;
    }
    if (b->rranges_cap < q.ntablets) {
        struct wire_tablet_range *nr = realloc(b->rranges, q.ntablets * sizeof *nr);
        if (nr == NULL) {
            reply_status(rpc, CRAM_NO_MEMORY);
            return false;
        }
        b->rranges = nr;
        b->rranges_cap = q.ntablets;
    }
    /* sort and merge overlapping ranges so one binary search decides */
    memcpy(b->rranges, req + sizeof q, (size_t)q.ntablets * sizeof *b->rranges);
    qsort(b->rranges, q.ntablets, sizeof *b->rranges, range_cmp);
    uint32_t nr = 0;
    for (uint32_t i = 0; i < q.ntablets; i++) {
        struct wire_tablet_range *t = &b->rranges[i];
        if (nr > 0 && b->rranges[nr - 1].table_id == t->table_id &&
            (t->start_hash <= b->rranges[nr - 1].end_hash ||
             t->start_hash - 1 == b->rranges[nr - 1].end_hash)) {
            if (t->end_hash > b->rranges[nr - 1].end_hash)
                b->rranges[nr - 1].end_hash = t->end_hash;
        } else {
            b->rranges[nr++] = *t;
        }
    }

    const uint32_t room = WIRE_MAX_MESSAGE - (uint32_t)sizeof(struct wire_recovery_data_resp);
    uint32_t max = q.max_bytes == 0 || q.max_bytes > room ? room : q.max_bytes;
    uint8_t *out = b->rscratch + sizeof(struct wire_recovery_data_resp);
    uint32_t used = 0, entries = 0, pos = q.offset;
    static const uint8_t empty[1];
    if (data == NULL)
        data = empty;               /* len is 0 */
    /* with the index: from the indexed entry at q.offset (0 and len are
     * boundaries too); any other offset takes the walk below, which checks it */
    uint32_t xi = UINT32_MAX;
    if (idx != NULL) {
        if (q.offset == 0 || nidx == 0 || q.offset < idx[0].off) {
            xi = q.offset == 0 ? 0 : UINT32_MAX;
        } else if (q.offset == len) {
            xi = nidx;
        } else {
            uint32_t lo = 0, hi = nidx;
            while (lo < hi) {
                uint32_t mid = lo + (hi - lo) / 2;
                if (idx[mid].off < q.offset)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            if (lo < nidx && idx[lo].off == q.offset)
                xi = lo;
        }
    }
    if (xi != UINT32_MAX) {
        for (; xi < nidx; xi++) {
            const struct bk_ient *x = &idx[xi];
            uint32_t esz = x->size & ~BK_IENT_ALWAYS;
            if (!(x->size & BK_IENT_ALWAYS) && !bk_in_ranges(b->rranges, nr, x->table_id, x->hash))
                continue;
            if (used + (uint64_t)esz > max && (entries > 0 || esz > room))
                break;              /* continue at this entry next time */
            memcpy(out + used, data + x->off, esz);
            used += esz;
            entries++;
        }
        pos = xi < nidx ? idx[xi].off : len;
        goto answer;
    }
    struct seg_entry e;
    uint32_t at = q.offset;
    int st;
    while ((st = bk_next_verified(data, len, &at, at == q.offset, &e)) == 1) {
        uint32_t esz = (uint32_t)seg_entry_size(e.length);
        bool want = false;
        if (e.type == SEG_ENTRY_SAFE_VERSION) {
            want = true;
        } else if (e.type == SEG_ENTRY_OBJECT) {
            const struct seg_object *o;
            const uint8_t *key, *val;
            uint32_t vl;
            want = seg_parse_object(&e, &o, &key, &val, &vl) &&
                   bk_in_ranges(b->rranges, nr, o->table_id, cram_key_hash(o->table_id, key, o->key_len));
        } else if (e.type == SEG_ENTRY_TOMBSTONE) {
            const struct seg_tombstone *t;
            const uint8_t *key;
            want = seg_parse_tombstone(&e, &t, &key) &&
                   bk_in_ranges(b->rranges, nr, t->table_id, cram_key_hash(t->table_id, key, t->key_len));
        }
        if (want) {
            if (used + (uint64_t)esz > max && (entries > 0 || esz > room))
                break;              /* continue at this entry next time */
            memcpy(out + used, data + e.offset, esz);
            used += esz;
            entries++;
        }
        pos = e.offset + esz;
    }
    if (st < 0) {
        /* the bytes were verified, so only an offset that is not an entry
         * boundary gets here */
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return false;
    }
answer:;
    struct wire_recovery_data_resp h;
    memset(&h, 0, sizeof h);
    h.hdr.status = CRAM_OK;
    h.length = used;
    h.next_offset = pos;
    h.entries = entries;
    h.done = pos >= len ? 1 : 0;
    h.closed = r->closed ? 1 : 0;
    h.epoch = r->epoch;
    memcpy(b->rscratch, &h, sizeof h);
    struct iovec iov = { b->rscratch, sizeof h + used };
    tp_rpc_reply(rpc, &iov, 1);
    *readers = q.readers;
    return h.done != 0;
}

/* A done answer from r's rdata: once `readers` recovery masters have had
 * theirs, the copy is not needed any more (true: the caller drops it). */
static bool bk_rd_account(struct bk_replica *r, bool done, uint32_t readers)
{
    if (!done || readers == 0)
        return false;
    r->rd_done++;
    return r->rd_done >= readers;
}

static void bk_recovery_data(backup_service *b, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct wire_recovery_data_req q;
    cram_status st = bk_rd_parse(req, len, &q);
    if (st != CRAM_OK) {
        reply_status(rpc, st);
        return;
    }
    if (!bk_target_ok(b, &q.tgt)) {
        reply_status(rpc, CRAM_WRONG_SERVER);
        return;
    }
    struct bk_replica *r = bk_find(b, q.master_id, q.segment_id);
    if (r == NULL || (q.epoch != 0 && q.epoch != r->epoch)) {
        reply_status(rpc, CRAM_NOT_FOUND);
        return;
    }
    if (q.offset > r->cert.length) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    if (r->buf != NULL || r->cert.length == 0) {
        /* in memory: verified here (cached per certificate length) */
        if (!bk_verified(r)) {
            reply_status(rpc, CRAM_NOT_FOUND);
            return;
        }
        uint32_t readers;
        (void)bk_rd_serve(b, rpc, r, r->buf, r->cert.length, NULL, 0, &readers);
        return;
    }
    if (r->rdata != NULL && r->rdata_len == r->cert.length) {
        r->rdata_used_ms = clock_mono_ms();
        uint32_t readers;
        bool done = bk_rd_serve(b, rpc, r, r->rdata, r->rdata_len, r->ridx, r->nridx, &readers);
        if (bk_rd_account(r, done, readers)) {
            bk_rdata_drop(b, r);
            bk_pf_pump(b);
        }
        return;
    }
    if (!r->verified) {
        reply_status(rpc, CRAM_NOT_FOUND);
        return;
    }
    /* on disk only: the worker reads and verifies it once; requests wait */
    struct bk_rwait *w = calloc(1, sizeof *w);
    if (w == NULL) {
        reply_status(rpc, CRAM_NO_MEMORY);
        return;
    }
    w->rpc = rpc;
    w->next = r->rwaiters;
    r->rwaiters = w;
    if (r->rloading)
        return;
    if (bk_rload_start(b, r) != 0)
        bk_answer_rwaiters(r, CRAM_NO_MEMORY);
}

/* Queue a BK_JOB_RLOAD of r (on disk, verified, not loading) into a pool
 * buffer.  0, or -1 when out of memory. */
static int bk_rload_start(backup_service *b, struct bk_replica *r)
{
    struct bk_job *j = calloc(1, sizeof *j);
    uint32_t cap = (uint32_t)backup_round_up(r->capacity);
    uint8_t *buf = j != NULL ? bk_buf_get(b, cap) : NULL;
    if (j == NULL || buf == NULL) {
        free(j);
        return -1;
    }
    j->type = BK_JOB_RLOAD;
    j->rep = r;
    j->len = r->cert.length;
    j->cert = r->cert;
    j->resp = buf;
    j->resp_cap = cap;
    r->rloading = true;
    b->rloads++;
    bk_enqueue(b, j);
    return 0;
}

/* Start loading the next queued primaries while the window allows. */
static void bk_pf_pump(backup_service *b)
{
    while (b->pf_next < b->npf && b->rdata_count + b->rloads < BK_PREFETCH_WINDOW) {
        struct bk_pf p = b->pf[b->pf_next++];
        struct bk_replica *r = bk_find(b, p.master_id, p.segment_id);
        if (r == NULL || r->bad || r->buf != NULL || r->rdata != NULL || r->rloading ||
            !r->verified || r->cert.length == 0)
            continue;
        if (bk_rload_start(b, r) != 0)
            break;                  /* only an optimisation; requests load on demand */
    }
    if (b->pf_next >= b->npf)
        b->npf = b->pf_next = 0;
}

/* Drop a replica's recovery copy (the file stays; a later request reads
 * it again). */
static void bk_rdata_drop(backup_service *b, struct bk_replica *r)
{
    if (r->rdata == NULL)
        return;
    b->rdata_bytes -= r->rdata_len;
    b->rdata_count--;
    bk_buf_put(b, r->rdata, r->rdata_cap);
    r->rdata = NULL;
    r->rdata_len = 0;
    r->rdata_cap = 0;
    free(r->ridx);
    r->ridx = NULL;
    r->nridx = 0;
}

/* Timer: recovery copies nobody asked for in BK_RDATA_IDLE_MS go (a
 * recovery that finished, or a coordinator that never frees the crashed
 * master's replicas, must not pin their bytes in memory). */
static void bk_rdata_sweep(void *arg)
{
    backup_service *b = arg;
    b->sweep_timer = 0;
    uint64_t now = clock_mono_ms();
    for (size_t i = 0; i < b->nbuckets; i++)
        for (struct bk_replica *r = b->tab[i]; r != NULL; r = r->hnext)
            if (r->rdata != NULL && now - r->rdata_used_ms >= BK_RDATA_IDLE_MS)
                bk_rdata_drop(b, r);
    bk_pf_pump(b);
    if (b->pool_bytes > 0 && now - b->pool_used_ms >= BK_RDATA_IDLE_MS && !b->cfg.prefault_buffer)
        bk_pool_free(b);            /* no recovery or replica churn lately: give it back */
    if (b->rdata_bytes > 0 || (b->pool_bytes > 0 && !b->cfg.prefault_buffer))
        b->sweep_timer = tp_timer_add(b->loop, BK_RDATA_SWEEP_US, bk_rdata_sweep, b);
}

static void bk_complete_rload(backup_service *b, struct bk_job *j)
{
    struct bk_replica *r = j->rep;
    b->rloads--;
    if (r->gone) {                    /* retired meanwhile: waiters were answered */
        bk_buf_put(b, j->resp, j->resp_cap);
        bk_pf_pump(b);
        return;
    }
    r->rloading = false;
    if (j->err != 0 || !j->verified) {
        if (j->err != 0)
            CRAM_ERROR("backup: reading replica %s for recovery: %s", r->name, strerror(j->err));
        else
            CRAM_ERROR("backup: replica %s fails its certificate on disk; taken out of service",
                       r->name);
        bk_buf_put(b, j->resp, j->resp_cap);
        bk_answer_rwaiters(r, j->err != 0 ? CRAM_INTERNAL_ERROR : CRAM_NOT_FOUND);
        if (j->err == 0 && !r->bad) {
            r->verified = false;
            bk_tab_remove(b, r);
            bk_rdata_drop(b, r);
            r->bad = true;
            r->hnext = b->bad;
            b->bad = r;
        }
        bk_pf_pump(b);
        return;
    }
    bk_rdata_drop(b, r);
    r->rdata = j->resp;
    r->rdata_len = j->len;
    r->rdata_cap = j->resp_cap;
    r->ridx = j->idx;
    r->nridx = j->nidx;
    j->idx = NULL;
    r->rd_done = 0;
    r->rdata_used_ms = clock_mono_ms();
    b->rdata_bytes += j->len;
    b->rdata_count++;
    if (b->sweep_timer == 0)
        b->sweep_timer = tp_timer_add(b->loop, BK_RDATA_SWEEP_US, bk_rdata_sweep, b);
    bk_digest_scan(r, r->rdata, r->rdata_len, true);
    /* serve in arrival order (the list is newest first) */
    struct bk_rwait *rev = NULL;
    while (r->rwaiters != NULL) {
        struct bk_rwait *w = r->rwaiters;
        r->rwaiters = w->next;
        w->next = rev;
        rev = w;
    }
    bool drop = false;
    while (rev != NULL) {
        struct bk_rwait *w = rev;
        rev = w->next;
        if (j->len == r->cert.length) {
            uint32_t readers;
            bool done = bk_rd_serve(b, w->rpc, r, r->rdata, r->rdata_len, r->ridx, r->nridx,
                                    &readers);
            drop |= bk_rd_account(r, done, readers);
        } else {
            reply_status(w->rpc, CRAM_RETRY);
        }
        free(w);
    }
    if (drop)
        bk_rdata_drop(b, r);
    bk_pf_pump(b);
}

void backup_handle(backup_service *b, tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct wire_req_hdr h;
    if (req == NULL || len < sizeof h) {
        reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    memcpy(&h, req, sizeof h);
    if (h.service != WIRE_SVC_BACKUP) {
        reply_status(rpc, CRAM_UNIMPLEMENTED_REQUEST);
        return;
    }
    switch (h.opcode) {
    case WIRE_OP_BACKUP_WRITE: bk_write(b, rpc, req, len); break;
    case WIRE_OP_BACKUP_FREE:  bk_free_req(b, rpc, req, len); break;
    case WIRE_OP_BACKUP_LIST:  bk_list(b, rpc, req, len); break;
    case WIRE_OP_BACKUP_READ:  bk_read(b, rpc, req, len); break;
    case WIRE_OP_BACKUP_GET_RECOVERY_DATA: bk_recovery_data(b, rpc, req, len); break;
    case WIRE_OP_PING:         reply_status(rpc, CRAM_OK); break;
    default:                   reply_status(rpc, CRAM_UNIMPLEMENTED_REQUEST); break;
    }
}

/* ---- lifecycle ------------------------------------------------------------------ */

/* Put the replicas a scan found into service (the highest good epoch of
 * each (master, segment)) or onto the bad list (everything else with a
 * readable header; files without one are only logged). */
static int bk_load(backup_service *b, const struct backup_scan_entry *v, size_t n)
{
    size_t good = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        const struct backup_scan_entry *e = &v[i];
        if (!e->header_ok) {
            CRAM_WARN("backup: %s/%s: %s (%s); not served", b->dir, e->name,
                      backup_rep_status_name(e->status), e->why);
            continue;
        }
        struct bk_replica *r = bk_rep_new(e->master_id, e->segment_id, e->epoch, e->capacity);
        if (r == NULL)
            return -1;
        _Static_assert(sizeof r->name == sizeof e->name, "replica name sizes");
        memcpy(r->name, e->name, sizeof r->name);
        r->loaded = true;
        r->primary = e->primary;
        r->closed = e->closed;
        r->length = e->cert_length;
        r->cert = (struct seg_certificate){ e->cert_length, e->cert_crc32c };
        r->dirty_from = r->length;
        r->on_disk = true;
        r->verified = true;
        b->used += r->capacity;
        bool ok = e->status == BACKUP_REP_VERIFIED || e->status == BACKUP_REP_EMPTY;
        struct bk_replica *held = ok ? bk_find(b, e->master_id, e->segment_id) : NULL;
        if (ok && held != NULL) {
            /* entries are sorted by epoch: the one held is superseded */
            CRAM_WARN("backup: %s superseded by %s; not served", held->name, r->name);
            bk_tab_remove(b, held);
            held->bad = true;
            held->hnext = b->bad;
            b->bad = held;
            good--;
            bad++;
        }
        if (ok) {
            bk_tab_insert(b, r);
            bk_digest_load(b, r);
            good++;
        } else {
            CRAM_WARN("backup: %s/%s: %s (%s); not served", b->dir, e->name,
                      backup_rep_status_name(e->status), e->why);
            r->bad = true;
            r->hnext = b->bad;
            b->bad = r;
            bad++;
        }
    }
    if (n > 0)
        CRAM_INFO("backup: %s: %zu replicas in service, %zu out of service, %" PRIu64
                  " of %" PRIu64 " bytes used", b->dir, good, bad, b->used, b->cfg.storage_bytes);
    return 0;
}

static void bk_free_all(backup_service *b)
{
    for (size_t i = 0; b->tab != NULL && i < b->nbuckets; i++) {
        while (b->tab[i] != NULL) {
            struct bk_replica *r = b->tab[i];
            b->tab[i] = r->hnext;
            bk_dirty_remove(b, r);
            bk_answer_waiters(r, UINT64_MAX, CRAM_RETRY);
            bk_answer_rwaiters(r, CRAM_RETRY);
            r->refs = 0;
            bk_rep_free(b, r);
        }
    }
    while (b->bad != NULL) {
        struct bk_replica *r = b->bad;
        b->bad = r->hnext;
        r->refs = 0;
        bk_rep_free(b, r);
    }
    free(b->tab);
    b->tab = NULL;
}

backup_service *backup_create(const struct backup_config *cfg, tp_loop *loop, server_list *sl,
                              char *err, size_t errlen)
{
    if (cfg == NULL || cfg->dir == NULL || cfg->dir[0] == '\0' || loop == NULL) {
        snprintf(err, errlen, "backup: no directory or loop given");
        return NULL;
    }
    if (cfg->max_replica_bytes == 0 || cfg->max_replica_bytes > BK_MAX_REPLICA ||
        cfg->storage_bytes == 0) {
        snprintf(err, errlen, "backup: max replica size must be 1..%u bytes, storage > 0",
                 BK_MAX_REPLICA);
        return NULL;
    }
    if (strlen(cfg->dir) >= sizeof ((backup_service *)0)->dir) {
        snprintf(err, errlen, "backup: directory name too long");
        return NULL;
    }
    if (mkdir(cfg->dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "backup: cannot create %s: %s", cfg->dir, strerror(errno));
        return NULL;
    }
    backup_service *b = calloc(1, sizeof *b);
    if (b == NULL) {
        snprintf(err, errlen, "backup: out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    if (b->cfg.buffer_bytes == 0)
        b->cfg.buffer_bytes = BK_POOL_MAX_BYTES;
    snprintf(b->dir, sizeof b->dir, "%s", cfg->dir);
    b->cfg.dir = b->dir;
    b->loop = loop;
    b->sl = sl;
    b->dirfd = open(b->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (b->dirfd < 0) {
        snprintf(err, errlen, "backup: cannot open %s: %s", b->dir, strerror(errno));
        goto out_free_b;
    }
    b->lockfd = openat(b->dirfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (b->lockfd < 0) {
        snprintf(err, errlen, "backup: cannot create %s/.lock: %s", b->dir, strerror(errno));
        goto out_close_dir;
    }
    if (flock(b->lockfd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "backup: %s is in use by another backup (%s)", b->dir,
                 errno == EWOULDBLOCK ? "locked" : strerror(errno));
        goto out_close_lock;
    }
    b->nbuckets = 64;
    b->tab = calloc(b->nbuckets, sizeof *b->tab);
    b->hdr_blk = aligned_alloc(BACKUP_ALIGN, BACKUP_HDR_SIZE);
    b->zero_blk = aligned_alloc(BACKUP_ALIGN, BACKUP_HDR_SIZE);
    b->tail_blk = aligned_alloc(BACKUP_ALIGN, BACKUP_ALIGN);
    b->notify = calloc(1, sizeof *b->notify);
    if (b->tab == NULL || b->hdr_blk == NULL || b->zero_blk == NULL || b->tail_blk == NULL ||
        b->notify == NULL) {
        snprintf(err, errlen, "backup: out of memory");
        goto out_free_mem;
    }
    b->notify->efd = -1;

    memset(b->zero_blk, 0, BACKUP_HDR_SIZE);
    bk_spares_remove(b);

    struct backup_scan_entry *v;
    size_t n;
    if (backup_scan_dir(b->dir, &v, &n, err, errlen) != 0)
        goto out_free_mem;
    int rc = bk_load(b, v, n);
    free(v);
    if (rc != 0) {
        snprintf(err, errlen, "backup: out of memory loading %s", b->dir);
        goto out_free_reps;
    }
    if (b->used > b->cfg.storage_bytes)
        CRAM_WARN("backup: %s holds %" PRIu64 " bytes of replicas, more than --backup-storage %" PRIu64,
                  b->dir, b->used, b->cfg.storage_bytes);

    b->notify->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (b->notify->efd < 0 ||
        tp_loop_add_fd(loop, &b->notify->h, b->notify->efd, EPOLLIN, bk_notify_cb, b) != 0) {
        snprintf(err, errlen, "backup: cannot set up the worker's eventfd: %s", strerror(errno));
        goto out_close_efd;
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    pthread_cond_init(&b->rcv, NULL);
    if ((rc = pthread_create(&b->worker, NULL, bk_worker, b)) != 0) {
        snprintf(err, errlen, "backup: cannot start worker: %s", strerror(rc));
        goto out_free_sync;
    }
    if ((rc = pthread_create(&b->reader, NULL, bk_reader, b)) != 0) {
        snprintf(err, errlen, "backup: cannot start reader: %s", strerror(rc));
        pthread_mutex_lock(&b->mu);
        b->stop = true;
        pthread_cond_signal(&b->cv);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->worker, NULL);
        goto out_free_sync;
    }
    if (b->cfg.prefault_buffer != 0)
        bk_pool_prefault(b);
    return b;

out_free_sync:
    pthread_cond_destroy(&b->rcv);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    tp_loop_del_fd(loop, &b->notify->h);
out_close_efd:
    if (b->notify->efd >= 0)
        close(b->notify->efd);
out_free_reps:
    bk_free_all(b);
out_free_mem:
    free(b->notify);
    free(b->tail_blk);
    free(b->hdr_blk);
    free(b->zero_blk);
    free(b->tab);
out_close_lock:
    close(b->lockfd);
out_close_dir:
    close(b->dirfd);
out_free_b:
    free(b);
    return NULL;
}

void backup_destroy(backup_service *b)
{
    if (b == NULL)
        return;
    if (b->timer_id != 0) {
        tp_timer_cancel(b->loop, b->timer_id);
        b->timer_id = 0;
    }
    if (b->sweep_timer != 0) {
        tp_timer_cancel(b->loop, b->sweep_timer);
        b->sweep_timer = 0;
    }
    /* what is still only in memory goes to disk before we stop */
    while (b->dirty != NULL) {
        struct bk_replica *r = b->dirty;
        if (bk_flush_now(b, r) != 0)
            CRAM_ERROR("backup: out of memory: last bytes of %s not flushed", r->name);
        bk_dirty_remove(b, r);
    }
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    pthread_cond_signal(&b->cv);
    pthread_cond_signal(&b->rcv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->worker, NULL);
    pthread_join(b->reader, NULL);
    bk_drain(b);                    /* replies every deferred rpc */

    tp_loop_del_fd(b->loop, &b->notify->h);
    close(b->notify->efd);
    tp_loop_defer_free(b->loop, free, b->notify);   /* the loop may still name the handler */
    bk_free_all(b);
    bk_pool_free(b);
    if (b->sweep_timer != 0) {      /* re-armed by buffers given back above */
        tp_timer_cancel(b->loop, b->sweep_timer);
        b->sweep_timer = 0;
    }
    free(b->pf);
    pthread_cond_destroy(&b->rcv);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b->tail_blk);
    free(b->hdr_blk);
    free(b->zero_blk);
    free(b->rscratch);
    free(b->rranges);
    close(b->lockfd);               /* releases the flock */
    close(b->dirfd);
    free(b);
}

uint64_t backup_buffer_pool_bytes(const backup_service *b)
{
    return b->pool_bytes;
}

size_t backup_recovery_cached(const backup_service *b)
{
    return b->rdata_count;
}

void backup_set_server_id(backup_service *b, uint64_t server_id)
{
    b->server_id = server_id;
}

size_t backup_replica_count(const backup_service *b)
{
    return b->count;
}
