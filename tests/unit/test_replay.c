/*
 * test_replay.c -- recovery replay in the object manager (om_replay_*) and
 * the recovery master's fetching (master/recovery.c) against scripted fake
 * backups and a fake coordinator on one tp_loop.
 *
 * Entries are built with seg_writer exactly as a crashed master's log holds
 * them, then walked with seg_iter (CRC-checked) and replayed.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "cram.pb-c.h"
#include "common/clock.h"
#include "common/keyhash.h"
#include "common/segment.h"
#include "common/wire.h"
#include "master/master_service.h"
#include "master/objmgr.h"
#include "master/recovery.h"
#include "transport/transport.h"

#define T1 7u
#define T2 9u
#define SEGSZ (64u * 1024)

/* ---- building entries ---------------------------------------------------- */

struct ents {
    uint8_t buf[256 * 1024];
    struct seg_writer w;
};

static void ents_init(struct ents *e)
{
    seg_writer_init(&e->w, e->buf, sizeof e->buf);
}

static void add_obj(struct ents *e, uint64_t table, const char *key, uint64_t version, const char *val)
{
    struct seg_object o = { .table_id = table, .version = version, .key_len = (uint16_t)strlen(key) };
    struct iovec p[3] = { { &o, sizeof o }, { (void *)key, strlen(key) }, { (void *)val, strlen(val) } };
    CU_ASSERT_FATAL(seg_append(&e->w, SEG_ENTRY_OBJECT, p, 3) >= 0);
}

static void add_tomb(struct ents *e, uint64_t table, const char *key, uint64_t version)
{
    struct seg_tombstone t = { .table_id = table, .version = version, .segment_id = 1,
                               .key_len = (uint16_t)strlen(key) };
    struct iovec p[2] = { { &t, sizeof t }, { (void *)key, strlen(key) } };
    CU_ASSERT_FATAL(seg_append(&e->w, SEG_ENTRY_TOMBSTONE, p, 2) >= 0);
}

static void add_safe(struct ents *e, uint64_t v)
{
    struct seg_safe_version s = { v };
    struct iovec p = { &s, sizeof s };
    CU_ASSERT_FATAL(seg_append(&e->w, SEG_ENTRY_SAFE_VERSION, &p, 1) >= 0);
}

/* Replay every entry; returns how many the iterator accepted (-1 if it
 * stopped on a corrupt entry). */
static int replay_all(objmgr *om, struct om_replay *rp, const uint8_t *p, uint32_t len)
{
    struct seg_iter it;
    struct seg_entry en;
    seg_iter_init(&it, p, len);
    int n = 0, s;
    while ((s = seg_iter_next(&it, &en)) == SEG_ITER_OK) {
        CU_ASSERT_EQUAL(om_replay_entry(om, rp, &en), CRAM_OK);
        n++;
    }
    return s == SEG_ITER_END ? n : -1;
}

static objmgr *mk(void)
{
    char err[256];
    struct om_config c = { .memory_bytes = 64ull * SEGSZ, .segment_bytes = SEGSZ,
                           .max_value_bytes = 16 * 1024, .hash_buckets = 64, .master_id = 5 };
    objmgr *om = om_create(&c, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(om);
    return om;
}

static const struct om_tablet whole = { .table_id = T1, .start_hash = 0, .end_hash = UINT64_MAX };

/* Value of key in T1 ("" + CRAM_OBJECT_DOESNT_EXIST when absent). */
static cram_status get(objmgr *om, uint64_t table, const char *k, uint64_t *ver, char *out)
{
    const void *val;
    uint32_t len = 0;
    out[0] = 0;
    cram_status st = om_read(om, table, k, (uint16_t)strlen(k), NULL, ver, &val, &len);
    if (st == CRAM_OK) {
        memcpy(out, val, len);
        out[len] = 0;
    }
    return st;
}

static void finish(objmgr *om, struct om_replay *rp, const struct om_tablet *t, uint32_t n)
{
    om_replay_end(om, rp, t, n);
    CU_ASSERT_EQUAL(om_replay_commit(om, rp), 0);
    for (uint32_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(om_take_tablet(om, t[i].table_id, t[i].start_hash, t[i].end_hash,
                                       OM_TABLET_NORMAL), CRAM_OK);
    om_replay_free(rp);
}

/* ---- ordering ------------------------------------------------------------ */

static void test_ordering(void)
{
    objmgr *om = mk();
    CU_ASSERT_EQUAL(om_take_tablet(om, T1, 0, UINT64_MAX, OM_TABLET_RECOVERING), CRAM_OK);
    struct om_replay rp = { 0 };
    struct ents *e = calloc(1, sizeof *e);
    ents_init(e);
    add_obj(e, T1, "a", 5, "a5");
    add_obj(e, T1, "a", 3, "a3");        /* older after newer: ignored */
    add_obj(e, T1, "b", 2, "b2");
    add_tomb(e, T1, "b", 2);             /* tombstone after its object: removes it */
    add_obj(e, T1, "b", 1, "b1");        /* older object after the tombstone: blocked */
    add_tomb(e, T1, "c", 4);             /* tombstone before its object ... */
    add_obj(e, T1, "c", 4, "c4");        /* ... blocks it */
    add_obj(e, T1, "c", 3, "c3");        /* and older ones */
    add_tomb(e, T1, "d", 6);
    add_obj(e, T1, "d", 7, "d7");        /* re-created after the remove: newer wins */
    add_obj(e, T1, "e", 9, "e9");
    add_tomb(e, T1, "e", 3);             /* tombstone of an older version: ignored */
    add_obj(e, T2, "x", 1, "x1");        /* table not recovering here: foreign */
    CU_ASSERT_EQUAL(replay_all(om, &rp, e->buf, e->w.used), 13);
    CU_ASSERT_EQUAL(rp.foreign, 1);
    CU_ASSERT_EQUAL(rp.objects, 4);      /* a5 b2 d7 e9 */
    CU_ASSERT_EQUAL(rp.tombstones, 3);   /* b c d */
    CU_ASSERT_EQUAL(rp.ignored, 5);      /* a3 b1 c4 c3, tombstone e3 */
    /* tombstones name the segment of this log holding what they kill */
    int seen = 0;
    for (uint32_t i = 0; i < rp.nslots; i++) {
        const struct log_segment *ls = log_segment(om_log(om), rp.slots[i]);
        struct seg_iter it;
        struct seg_entry en;
        seg_iter_init(&it, log_segment_base(om_log(om), rp.slots[i]), ls->w.used);
        while (seg_iter_next(&it, &en) == SEG_ITER_OK) {
            const struct seg_tombstone *t;
            const uint8_t *key;
            if (en.type != SEG_ENTRY_TOMBSTONE || !seg_parse_tombstone(&en, &t, &key))
                continue;
            seen++;
            if (key[0] == 'b') {                /* killed b2, replayed into this log */
                CU_ASSERT_EQUAL(t->segment_id, log_segment(om_log(om), rp.slots[0])->id);
            } else {                            /* c, d: no object of theirs here */
                CU_ASSERT_EQUAL(t->segment_id, 0);
            }
        }
    }
    CU_ASSERT_EQUAL(seen, 3);
    /* the tablet answers RETRY while recovering */
    char buf[64];
    uint64_t v;
    CU_ASSERT_EQUAL(get(om, T1, "a", &v, buf), CRAM_RETRY);
    finish(om, &rp, &whole, 1);
    CU_ASSERT_EQUAL(get(om, T1, "a", &v, buf), CRAM_OK);
    CU_ASSERT_STRING_EQUAL(buf, "a5");
    CU_ASSERT_EQUAL(v, 5);
    CU_ASSERT_EQUAL(get(om, T1, "b", &v, buf), CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(get(om, T1, "c", &v, buf), CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(get(om, T1, "d", &v, buf), CRAM_OK);
    CU_ASSERT_STRING_EQUAL(buf, "d7");
    CU_ASSERT_EQUAL(get(om, T1, "e", &v, buf), CRAM_OK);
    CU_ASSERT_STRING_EQUAL(buf, "e9");
    /* only objects are left in the hash table (tombstones went at the end) */
    CU_ASSERT_EQUAL(ht_count(om_hashtable(om)), 3);
    struct om_stats st;
    om_get_stats(om, &st);
    CU_ASSERT_EQUAL(st.objects, 3);
    /* per-tablet stats follow the replay */
    const struct om_tablet *t = om_tablet_get(om, 0);
    CU_ASSERT_EQUAL(t->objects, 3);
    CU_ASSERT(t->bytes > 0);
    /* live: the 3 objects and b's tombstone (it kills b2 in this log); the
     * tombstones of c and d name no segment here and are not counted */
    CU_ASSERT_EQUAL(st.live_bytes, t->bytes + seg_entry_size(sizeof(struct seg_tombstone) + 1));
    /* a re-created removed key gets a version above its tombstone */
    CU_ASSERT_EQUAL(om_write(om, T1, "c", 1, "new", 3, NULL, &v), CRAM_OK);
    CU_ASSERT(v > 4);
    CU_ASSERT_EQUAL(t->objects, 4);
    CU_ASSERT_EQUAL(om_remove(om, T1, "a", 1, NULL, &v), CRAM_OK);
    CU_ASSERT_EQUAL(t->objects, 3);
    /* the side segments joined the log: the data survives a roll */
    CU_ASSERT_EQUAL(log_roll(om_log(om)), 0);
    CU_ASSERT_EQUAL(get(om, T1, "e", &v, buf), CRAM_OK);
    free(e);
    om_destroy(om);
}

/* The same entries twice (a segment from two replicas), and chunks in
 * either order: the result does not change. */
static void test_duplicates_and_order(void)
{
    struct ents *seg1 = calloc(1, sizeof *seg1), *seg2 = calloc(1, sizeof *seg2);
    ents_init(seg1);
    ents_init(seg2);
    char k[32], val[32];
    for (int i = 0; i < 200; i++) {
        snprintf(k, sizeof k, "k%d", i);
        snprintf(val, sizeof val, "v1-%d", i);
        add_obj(seg1, T1, k, 10 + (uint64_t)i, val);
    }
    for (int i = 0; i < 200; i++) {
        snprintf(k, sizeof k, "k%d", i);
        if (i % 3 == 0) {
            add_tomb(seg2, T1, k, 10 + (uint64_t)i);
        } else if (i % 3 == 1) {
            snprintf(val, sizeof val, "v2-%d", i);
            add_obj(seg2, T1, k, 1000 + (uint64_t)i, val);
        }
    }
    const struct ents *orders[3][4] = {
        { seg1, seg2, NULL, NULL },
        { seg2, seg1, NULL, NULL },
        { seg1, seg2, seg2, seg1 },      /* duplicates of both */
    };
    for (int o = 0; o < 3; o++) {
        objmgr *om = mk();
        CU_ASSERT_EQUAL(om_take_tablet(om, T1, 0, UINT64_MAX, OM_TABLET_RECOVERING), CRAM_OK);
        struct om_replay rp = { 0 };
        for (int s = 0; s < 4 && orders[o][s] != NULL; s++)
            replay_all(om, &rp, orders[o][s]->buf, orders[o][s]->w.used);
        finish(om, &rp, &whole, 1);
        char buf[64];
        uint64_t v;
        for (int i = 0; i < 200; i++) {
            snprintf(k, sizeof k, "k%d", i);
            cram_status st = get(om, T1, k, &v, buf);
            if (i % 3 == 0) {
                CU_ASSERT_EQUAL(st, CRAM_OBJECT_DOESNT_EXIST);
            } else if (i % 3 == 1) {
                snprintf(val, sizeof val, "v2-%d", i);
                CU_ASSERT_EQUAL(st, CRAM_OK);
                CU_ASSERT_STRING_EQUAL(buf, val);
                CU_ASSERT_EQUAL(v, 1000 + (uint64_t)i);
            } else {
                snprintf(val, sizeof val, "v1-%d", i);
                CU_ASSERT_EQUAL(st, CRAM_OK);
                CU_ASSERT_STRING_EQUAL(buf, val);
            }
        }
        CU_ASSERT_EQUAL(ht_count(om_hashtable(om)), 133);
        CU_ASSERT_EQUAL(om_tablet_get(om, 0)->objects, 133);
        om_destroy(om);
    }
    free(seg1);
    free(seg2);
}

static void test_safe_version(void)
{
    objmgr *om = mk();
    CU_ASSERT_EQUAL(om_take_tablet(om, T1, 0, UINT64_MAX, OM_TABLET_RECOVERING), CRAM_OK);
    struct om_replay rp = { 0 };
    struct ents *e = calloc(1, sizeof *e);
    ents_init(e);
    add_safe(e, 500);
    add_obj(e, T1, "a", 7, "a7");
    add_safe(e, 300);                    /* lower: no effect */
    CU_ASSERT_EQUAL(replay_all(om, &rp, e->buf, e->w.used), 3);
    finish(om, &rp, &whole, 1);
    CU_ASSERT(log_safe_version(om_log(om)) >= 500);
    uint64_t v;
    CU_ASSERT_EQUAL(om_write(om, T1, "a", 1, "x", 1, NULL, &v), CRAM_OK);
    CU_ASSERT(v > 500);
    CU_ASSERT_EQUAL(om_write(om, T1, "fresh", 5, "x", 1, NULL, &v), CRAM_OK);
    CU_ASSERT(v > 500);
    free(e);
    om_destroy(om);
}

/* A flipped byte anywhere in an entry makes seg_iter stop there. */
static void test_bad_crc(void)
{
    struct ents *e = calloc(1, sizeof *e);
    ents_init(e);
    add_obj(e, T1, "a", 1, "a1");
    uint32_t second = e->w.used;
    add_obj(e, T1, "b", 2, "b2");
    add_obj(e, T1, "c", 3, "c3");
    for (uint32_t off = second; off < second + 12 + 24 + 3; off++) {
        objmgr *om = mk();
        CU_ASSERT_EQUAL(om_take_tablet(om, T1, 0, UINT64_MAX, OM_TABLET_RECOVERING), CRAM_OK);
        struct om_replay rp = { 0 };
        e->buf[off] ^= 0x40;
        CU_ASSERT_EQUAL(replay_all(om, &rp, e->buf, e->w.used), -1);
        e->buf[off] ^= 0x40;
        CU_ASSERT_EQUAL(rp.objects, 1);  /* only the entry before the bad one */
        om_replay_abort(om, &rp, &whole, 1);
        om_destroy(om);
    }
    free(e);
}

/* Abort: the tablets and everything replayed into them go away; the side
 * segments are given back. */
static void test_abort(void)
{
    objmgr *om = mk();
    struct log_stats ls0;
    log_get_stats(om_log(om), &ls0);
    CU_ASSERT_EQUAL(om_take_tablet(om, T1, 0, UINT64_MAX, OM_TABLET_RECOVERING), CRAM_OK);
    struct om_replay rp = { 0 };
    struct ents *e = calloc(1, sizeof *e);
    ents_init(e);
    char k[32];
    for (int i = 0; i < 3000; i++) {     /* several side segments */
        snprintf(k, sizeof k, "key-%d", i);
        add_obj(e, T1, k, 1 + (uint64_t)i, "some value of a few bytes");
        if (i % 10 == 0)
            add_tomb(e, T1, "gone", (uint64_t)i);
    }
    replay_all(om, &rp, e->buf, e->w.used);
    CU_ASSERT(rp.nslots > 1);
    om_replay_abort(om, &rp, &whole, 1);
    CU_ASSERT_EQUAL(om_tablet_count(om), 0);
    CU_ASSERT_EQUAL(ht_count(om_hashtable(om)), 0);
    struct om_stats st;
    om_get_stats(om, &st);
    CU_ASSERT_EQUAL(st.live_bytes, 0);
    CU_ASSERT_EQUAL(st.log.segments_free, ls0.segments_free);
    /* the same after om_replay_end (tombstones already out of the table) */
    CU_ASSERT_EQUAL(om_take_tablet(om, T1, 0, UINT64_MAX, OM_TABLET_RECOVERING), CRAM_OK);
    struct om_replay rp2 = { 0 };
    replay_all(om, &rp2, e->buf, e->w.used);
    om_replay_end(om, &rp2, &whole, 1);
    om_replay_abort(om, &rp2, &whole, 1);
    om_get_stats(om, &st);
    CU_ASSERT_EQUAL(st.live_bytes, 0);
    CU_ASSERT_EQUAL(ht_count(om_hashtable(om)), 0);
    free(e);
    om_destroy(om);
}

/* Objects outside the partition's ranges are ignored; other tablets keep
 * being served while a replay holds tombstones in the hash table. */
static void test_partition_and_concurrent_ops(void)
{
    objmgr *om = mk();
    CU_ASSERT_EQUAL(om_take_tablet(om, T2, 0, UINT64_MAX, OM_TABLET_NORMAL), CRAM_OK);
    uint64_t mid = UINT64_MAX / 2;
    struct om_tablet part = { .table_id = T1, .start_hash = 0, .end_hash = mid };
    CU_ASSERT_EQUAL(om_take_tablet(om, T1, 0, mid, OM_TABLET_RECOVERING), CRAM_OK);
    struct om_replay rp = { 0 };
    struct ents *e = calloc(1, sizeof *e);
    ents_init(e);
    char k[32];
    int inside = 0;
    for (int i = 0; i < 400; i++) {
        snprintf(k, sizeof k, "p%d", i);
        add_tomb(e, T1, k, 100);
        if (cram_key_hash(T1, k, (uint16_t)strlen(k)) <= mid)
            inside++;
        /* the same keys in the normal table T2 */
        uint64_t v;
        CU_ASSERT_EQUAL(om_write(om, T2, k, (uint16_t)strlen(k), "t2", 2, NULL, &v), CRAM_OK);
    }
    replay_all(om, &rp, e->buf, e->w.used);
    CU_ASSERT_EQUAL(rp.tombstones, (uint64_t)inside);
    CU_ASSERT_EQUAL(rp.foreign, (uint64_t)(400 - inside));
    /* T2 reads, writes and enumeration still work with tombstones around */
    char buf[64];
    uint64_t v;
    for (int i = 0; i < 400; i++) {
        snprintf(k, sizeof k, "p%d", i);
        CU_ASSERT_EQUAL(get(om, T2, k, &v, buf), CRAM_OK);
        CU_ASSERT_STRING_EQUAL(buf, "t2");
    }
    finish(om, &rp, &part, 1);
    CU_ASSERT_EQUAL(ht_count(om_hashtable(om)), 400);
    free(e);
    om_destroy(om);
}

/* ---- the recovery master against fake backups ----------------------------- */

/*
 * Two fake backups serve one segment each from a prebuilt entry buffer in
 * chunks of CHUNK entries; backup 1 is the primary of segment 1 but serves a
 * corrupt entry, so the recovery master must move to backup 2's replica.
 * A fake coordinator records RECOVERY_MASTER_FINISHED and answers `coord_st`.
 */
#define CHUNK 7

static tp_loop *loop;
struct fake_backup {
    tp_listener *ls;
    uint64_t id;
    const struct ents *seg[4];          /* indexed by segment id */
    bool corrupt;                       /* flip a byte in every response */
    int requests;
};
static struct fake_backup fb[2];
static tp_listener *coord_ls;
static int coord_st;
static int coord_retries;               /* answer CRAM_RETRY this many times first */
static int finished_calls;
static bool finished_ok;
static uint64_t finished_objects;

static void fb_req(void *arg, tp_rpc *rpc)
{
    struct fake_backup *b = arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    struct wire_recovery_data_req q;
    b->requests++;
    CU_ASSERT_FATAL(len >= sizeof q);
    memcpy(&q, req, sizeof q);
    CU_ASSERT_EQUAL(q.hdr.opcode, WIRE_OP_BACKUP_GET_RECOVERY_DATA);
    CU_ASSERT_EQUAL(len, sizeof q + q.ntablets * sizeof(struct wire_tablet_range));
    CU_ASSERT_EQUAL(q.tgt.target_server_id, b->id);
    const struct ents *e = q.segment_id < 4 ? b->seg[q.segment_id] : NULL;
    if (e == NULL) {
        struct wire_resp_hdr h = { CRAM_NOT_FOUND };
        struct iovec iov = { &h, sizeof h };
        tp_rpc_reply(rpc, &iov, 1);
        return;
    }
    /* CHUNK entries from offset */
    struct seg_iter it;
    struct seg_entry en;
    seg_iter_init(&it, e->buf + q.offset, e->w.used - q.offset);
    uint32_t n = 0, end = q.offset;
    while (n < CHUNK && seg_iter_next(&it, &en) == SEG_ITER_OK) {
        n++;
        end = q.offset + en.offset + (uint32_t)seg_entry_size(en.length);
    }
    static uint8_t out[256 * 1024];
    struct wire_recovery_data_resp h;
    memset(&h, 0, sizeof h);
    h.length = end - q.offset;
    h.next_offset = end;
    h.entries = n;
    h.done = end == e->w.used;
    h.closed = 1;
    h.epoch = q.epoch;
    memcpy(out, &h, sizeof h);
    memcpy(out + sizeof h, e->buf + q.offset, h.length);
    if (b->corrupt && h.length > 20)
        out[sizeof h + h.length - 2] ^= 1;
    struct iovec iov = { out, sizeof h + h.length };
    tp_rpc_reply(rpc, &iov, 1);
}

static void coord_req(void *arg, tp_rpc *rpc)
{
    (void)arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    struct wire_req_hdr h;
    CU_ASSERT_FATAL(len >= sizeof h);
    memcpy(&h, req, sizeof h);
    CU_ASSERT_EQUAL(h.opcode, WIRE_OP_RECOVERY_MASTER_FINISHED);
    Cram__RecoveryMasterFinished *f =
        cram__recovery_master_finished__unpack(NULL, len - sizeof h, req + sizeof h);
    CU_ASSERT_FATAL(f != NULL);
    finished_calls++;
    finished_ok = f->ok;
    finished_objects = f->objects;
    CU_ASSERT_EQUAL(f->recovery_id, 77);
    CU_ASSERT_EQUAL(f->server_id, 42);
    cram__recovery_master_finished__free_unpacked(f, NULL);
    struct wire_resp_hdr r = { coord_st };
    if (coord_retries > 0) {
        coord_retries--;
        r.status = CRAM_RETRY;
    }
    struct iovec iov = { &r, sizeof r };
    tp_rpc_reply(rpc, &iov, 1);
}

static void poll_until(int *counter, int want, int ms)
{
    uint64_t end = clock_mono_ms() + (uint64_t)ms;
    while (*counter < want && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
}

/* A RecoverRequest for T1 (whole) with segments 1 (replicas on backup 1
 * then 2) and 2 (backup 2 only). */
static size_t build_recover(uint8_t *out, size_t cap)
{
    Cram__Tablet t = CRAM__TABLET__INIT;
    t.table_id = T1;
    t.start_hash = 0;
    t.end_hash = UINT64_MAX;
    Cram__Tablet *tp = &t;
    Cram__ReplicaLocation r[3];
    Cram__ReplicaLocation *rp[3];
    const uint64_t segs[3] = { 1, 1, 2 };
    const int on[3] = { 0, 1, 1 };
    for (int i = 0; i < 3; i++) {
        cram__replica_location__init(&r[i]);
        r[i].segment_id = segs[i];
        r[i].epoch = 1;
        r[i].backup_id = fb[on[i]].id;
        r[i].backup_locator = (char *)tp_listener_locator(fb[on[i]].ls);
        r[i].closed = true;
        rp[i] = &r[i];
    }
    Cram__RecoverRequest rq = CRAM__RECOVER_REQUEST__INIT;
    rq.recovery_id = 77;
    rq.crashed_master_id = 3;
    rq.partition_id = 0;
    rq.n_tablets = 1;
    rq.tablets = &tp;
    rq.n_replicas = 3;
    rq.replicas = rp;
    size_t n = cram__recover_request__get_packed_size(&rq);
    CU_ASSERT_FATAL(n + sizeof(struct wire_req_hdr) <= cap);
    struct wire_req_hdr h = { .opcode = WIRE_OP_RECOVER, .service = WIRE_SVC_MASTER };
    memcpy(out, &h, sizeof h);
    cram__recover_request__pack(&rq, out + sizeof h);
    return sizeof h + n;
}

static void fake_rpc(void *arg, tp_rpc *rpc)
{
    (void)arg;
    (void)rpc;
}

static int send_recover(master_service *m, tp_session *s, const uint8_t *req, size_t n)
{
    (void)m;
    struct iovec iov = { (void *)req, n };
    uint8_t *resp = NULL;
    uint32_t rlen = 0;
    cram_status st = tp_call(s, &iov, 1, 5000, &resp, &rlen);
    int status = st == CRAM_OK && rlen >= 4 ? ((const struct wire_resp_hdr *)resp)->status : -1;
    free(resp);
    return status;
}

static master_service *rm_master;
static void master_req(void *arg, tp_rpc *rpc)
{
    (void)arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    master_handle(rm_master, rpc, req, len);
}

static bool all_corrupt;                /* every replica of segment 1 is bad */

static void run_recovery(int cst, int retries, bool expect_served)
{
    char err[256];
    (void)fake_rpc;
    loop = tp_loop_create();
    CU_ASSERT_FATAL(loop != NULL);
    struct ents *s1 = calloc(1, sizeof *s1), *s2 = calloc(1, sizeof *s2);
    ents_init(s1);
    ents_init(s2);
    char k[32], val[32];
    add_safe(s1, 10);
    for (int i = 0; i < 60; i++) {
        snprintf(k, sizeof k, "k%d", i);
        snprintf(val, sizeof val, "old-%d", i);
        add_obj(s1, T1, k, 100 + (uint64_t)i, val);
    }
    for (int i = 0; i < 60; i += 2) {
        snprintf(k, sizeof k, "k%d", i);
        snprintf(val, sizeof val, "new-%d", i);
        if (i % 4 == 0)
            add_obj(s2, T1, k, 1000 + (uint64_t)i, val);
        else
            add_tomb(s2, T1, k, 100 + (uint64_t)i);
    }
    memset(fb, 0, sizeof fb);
    fb[0].id = 11;
    fb[1].id = 12;
    fb[0].seg[1] = s1;
    fb[0].corrupt = true;
    fb[1].seg[1] = s1;
    fb[1].seg[2] = s2;
    fb[1].corrupt = all_corrupt;
    for (int i = 0; i < 2; i++) {
        fb[i].ls = tp_listen(loop, "tcp:host=127.0.0.1,port=0", fb_req, &fb[i], err, sizeof err);
        CU_ASSERT_FATAL(fb[i].ls != NULL);
    }
    coord_ls = tp_listen(loop, "tcp:host=127.0.0.1,port=0", coord_req, NULL, err, sizeof err);
    CU_ASSERT_FATAL(coord_ls != NULL);
    coord_st = cst;
    coord_retries = retries;
    finished_calls = 0;

    struct master_config mc = { .memory_bytes = 64ull * SEGSZ, .segment_bytes = SEGSZ };
    rm_master = master_create(&mc, err, sizeof err);
    CU_ASSERT_FATAL(rm_master != NULL);
    master_set_server_id(rm_master, 42);
    CU_ASSERT_EQUAL(master_set_replication(rm_master, loop, 0, 0), 0);
    tp_listener *mls = tp_listen(loop, "tcp:host=127.0.0.1,port=0", master_req, NULL, err, sizeof err);
    CU_ASSERT_FATAL(mls != NULL);
    cram_status st;
    tp_session *ms = tp_session_open(loop, tp_listener_locator(mls), &st);
    CU_ASSERT_FATAL(ms != NULL);

    /* with retries: the coordinator's TAKE_TABLET (RECOVERING) came first */
    if (retries > 0)
        CU_ASSERT_EQUAL(om_take_tablet(master_objmgr(rm_master), T1, 0, UINT64_MAX,
                                       OM_TABLET_RECOVERING), CRAM_OK);
    uint8_t req[4096];
    size_t n = build_recover(req, sizeof req);
    /* no coordinator known yet: RETRY */
    CU_ASSERT_EQUAL(send_recover(rm_master, ms, req, n), CRAM_RETRY);
    master_set_coordinator(rm_master, tp_listener_locator(coord_ls));
    /* malformed bodies */
    CU_ASSERT_EQUAL(send_recover(rm_master, ms, req, sizeof(struct wire_req_hdr) + 3),
                    CRAM_REQUEST_FORMAT_ERROR);
    CU_ASSERT_EQUAL(send_recover(rm_master, ms, req, n), CRAM_OK);
    /* re-sent: still one recovery */
    CU_ASSERT_EQUAL(send_recover(rm_master, ms, req, n), CRAM_OK);
    CU_ASSERT_EQUAL(rec_active(master_recovery(rm_master)), 1);
    poll_until(&finished_calls, 1 + retries, 20000);
    CU_ASSERT_EQUAL(finished_calls, 1 + retries);
    CU_ASSERT(finished_ok == !all_corrupt);
    for (int i = 0; i < 200 && rec_active(master_recovery(rm_master)) > 0; i++)
        tp_loop_poll(loop, 10);
    CU_ASSERT_EQUAL(rec_active(master_recovery(rm_master)), 0);
    CU_ASSERT(fb[0].requests >= 1);      /* the corrupt primary was asked first */

    objmgr *om = master_objmgr(rm_master);
    char buf[64];
    uint64_t v;
    for (int i = 0; i < 60; i++) {
        snprintf(k, sizeof k, "k%d", i);
        cram_status gs = get(om, T1, k, &v, buf);
        if (!expect_served) {
            CU_ASSERT_EQUAL(gs, CRAM_UNKNOWN_TABLET);
            continue;
        }
        if (i % 4 == 0) {
            snprintf(val, sizeof val, "new-%d", i);
            CU_ASSERT_EQUAL(gs, CRAM_OK);
            CU_ASSERT_STRING_EQUAL(buf, val);
        } else if (i % 2 == 0) {
            CU_ASSERT_EQUAL(gs, CRAM_OBJECT_DOESNT_EXIST);
        } else {
            snprintf(val, sizeof val, "old-%d", i);
            CU_ASSERT_EQUAL(gs, CRAM_OK);
            CU_ASSERT_STRING_EQUAL(buf, val);
        }
    }
    /* seg 2's 15 new objects, the 30 odd keys, and whatever seg 1 brought
     * for even keys before seg 2's entries arrived */
    if (!all_corrupt)
        CU_ASSERT(finished_objects >= 45 && finished_objects <= 75);
    if (!expect_served)
        CU_ASSERT_EQUAL(om_tablet_count(om), 0);

    tp_session_close(ms);
    master_destroy(rm_master);
    tp_listener_close(mls);
    for (int i = 0; i < 2; i++)
        tp_listener_close(fb[i].ls);
    tp_listener_close(coord_ls);
    tp_loop_destroy(loop);
    free(s1);
    free(s2);
}

static void test_recovery_master_ok(void) { run_recovery(CRAM_OK, 0, true); }
static void test_recovery_master_retry(void) { run_recovery(CRAM_OK, 2, true); }

/* No replica of a segment can be read: the failure is reported and the
 * partial replay dropped (also when the coordinator acknowledges it). */
static void test_recovery_master_unreadable(void)
{
    all_corrupt = true;
    run_recovery(CRAM_OK, 0, false);
    all_corrupt = false;
}

/* CRAM_FAULT=master.recovery.mid_replay:exit: the process says so on stderr
 * and exits 99 right after the first replayed chunk (in a child). */
static void test_fault_mid_replay(void)
{
    int fds[2];
    CU_ASSERT_FATAL(pipe(fds) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        setenv("CRAM_FAULT", "other.point:exit,master.recovery.mid_replay:exit", 1);
        run_recovery(CRAM_OK, 0, true);
        _exit(0);                       /* the fault point did not fire */
    }
    close(fds[1]);
    char out[65536];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof out - 1 && (n = read(fds[0], out + got, sizeof out - 1 - got)) > 0)
        got += (size_t)n;
    out[got] = 0;
    close(fds[0]);
    int status = 0;
    CU_ASSERT(waitpid(pid, &status, 0) == pid);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 99);
    CU_ASSERT(strstr(out, "FAULT master.recovery.mid_replay hit") != NULL);
}
static void test_recovery_master_refused(void) { run_recovery(CRAM_NOT_FOUND, 0, false); }

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("replay", NULL, NULL);
    CU_add_test(s, "ordering: versions and tombstones", test_ordering);
    CU_add_test(s, "duplicate segments and chunk order", test_duplicates_and_order);
    CU_add_test(s, "safe version raised", test_safe_version);
    CU_add_test(s, "entries with a bad crc are rejected", test_bad_crc);
    CU_add_test(s, "abort drops the replayed data", test_abort);
    CU_add_test(s, "partition ranges and concurrent ops", test_partition_and_concurrent_ops);
    CU_add_test(s, "recovery master: fake backups, corrupt primary, coordinator OK",
                test_recovery_master_ok);
    CU_add_test(s, "recovery master: coordinator answers RETRY twice, then OK",
                test_recovery_master_retry);
    CU_add_test(s, "recovery master: no readable replica, failure reported, tablets dropped",
                test_recovery_master_unreadable);
    CU_add_test(s, "recovery master: coordinator refuses, tablets dropped",
                test_recovery_master_refused);
    CU_add_test(s, "fault point master.recovery.mid_replay", test_fault_mid_replay);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
