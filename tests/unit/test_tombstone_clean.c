/* test_tombstone_clean.c -- end to end: the real log cleaner cleans away the
 * segment of an overwritten key's newer version and the segment of its
 * remove (whose tombstone it then drops), while the segment with the oldest
 * version stays in the log; replaying what is left of the log into a
 * recovery master must not bring the removed key back.  (Before objmgr
 * wrote a tombstone for the replaced version on every overwrite, it did.) */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/clock.h"
#include "logcleaner/lc.h"
#include "master/objmgr.h"
#include "transport/transport.h"

#define T1 7u
#define SEGSZ (64u * 1024)
#define NFIX 400
#define NGARB 1200
#define VLEN 200

static objmgr *mk(uint32_t nsegs, int state)
{
    char err[256];
    struct om_config c = { .memory_bytes = (uint64_t)nsegs * SEGSZ, .segment_bytes = SEGSZ,
                           .max_value_bytes = 16 * 1024, .master_id = 1 };
    objmgr *om = om_create(&c, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(om);
    CU_ASSERT_EQUAL(om_take_tablet(om, T1, 0, UINT64_MAX, state), CRAM_OK);
    return om;
}

static cram_status put(objmgr *om, const char *k, uint32_t gen)
{
    uint8_t v[VLEN];
    memset(v, (int)(gen & 0xff), sizeof v);
    memcpy(v, &gen, sizeof gen);
    return om_write(om, T1, k, (uint16_t)strlen(k), v, sizeof v, NULL, NULL);
}

static int check(objmgr *om, const char *k, uint32_t gen)
{
    const void *val;
    uint32_t len;
    if (om_read(om, T1, k, (uint16_t)strlen(k), NULL, NULL, &val, &len) != CRAM_OK || len != VLEN)
        return -1;
    uint32_t g;
    memcpy(&g, val, sizeof g);
    return g == gen ? 0 : -1;
}

static bool in_log(const struct log_segment *s)
{
    return s->state == LOG_SEG_HEAD || s->state == LOG_SEG_CLOSED;
}

/* Slot of the segment in the log with this id, or LOG_NO_SLOT. */
static uint32_t slot_by_id(const mlog *l, uint64_t id)
{
    for (uint32_t i = 0; i < log_nsegments(l); i++)
        if (in_log(log_segment(l, i)) && log_segment(l, i)->id == id)
            return i;
    return LOG_NO_SLOT;
}

/* Entries of key K in the log: objects of version ov (if ov) and
 * tombstones of version tv (if tv). */
static int count_k(const mlog *l, uint64_t ov, uint64_t tv)
{
    int n = 0;
    for (uint32_t i = 0; i < log_nsegments(l); i++) {
        const struct log_segment *s = log_segment(l, i);
        if (!in_log(s))
            continue;
        struct seg_iter it;
        struct seg_entry e;
        seg_iter_init(&it, log_segment_base(l, i), s->w.used);
        while (seg_iter_next(&it, &e) == SEG_ITER_OK) {
            const uint8_t *key;
            if (e.type == SEG_ENTRY_OBJECT && ov != 0) {
                const struct seg_object *o;
                const uint8_t *v;
                uint32_t vl;
                if (seg_parse_object(&e, &o, &key, &v, &vl) && o->key_len == 1 && key[0] == 'K' &&
                    o->version == ov)
                    n++;
            } else if (e.type == SEG_ENTRY_TOMBSTONE && tv != 0) {
                const struct seg_tombstone *t;
                if (seg_parse_tombstone(&e, &t, &key) && t->key_len == 1 && key[0] == 'K' &&
                    t->version == tv)
                    n++;
            }
        }
    }
    return n;
}

static void settle(tp_loop *loop, lc_cleaner *c)
{
    uint64_t end = clock_mono_ms() + 20000;
    int idle = 0;
    while (idle < 5 && clock_mono_ms() < end) {
        tp_loop_poll(loop, 5);
        idle = lc_busy(c) ? 0 : idle + 1;
    }
    CU_ASSERT(!lc_busy(c));
}

static void test_no_resurrection_after_cleaning(void)
{
    objmgr *om = mk(64, OM_TABLET_NORMAL);
    mlog *l = om_log(om);
    tp_loop *loop = tp_loop_create();
    CU_ASSERT_PTR_NOT_NULL_FATAL(loop);
    char k[32];
    /* segment A: K v1 amid objects that are never overwritten (A stays in
     * the log: it is almost all live, the cleaner has better choices) */
    uint64_t v1 = 0, v2 = 0, a_id = 0;
    for (int i = 0; i < NFIX; i++) {
        snprintf(k, sizeof k, "fix-%d", i);
        if (i == NFIX / 2) {
            CU_ASSERT_EQUAL_FATAL(put(om, "K", 1), CRAM_OK);
            a_id = log_segment(l, log_head_slot(l))->id;
        }
        CU_ASSERT_EQUAL_FATAL(put(om, k, 1), CRAM_OK);
    }
    CU_ASSERT_EQUAL(om_read(om, T1, "K", 1, NULL, &v1, NULL, NULL), CRAM_OK);
    CU_ASSERT_EQUAL_FATAL(count_k(l, v1, 0), 1);
    CU_ASSERT_EQUAL(log_roll(l), 0);
    /* segment B: K v2 among garbage-to-be */
    uint32_t gen[NGARB];
    CU_ASSERT_EQUAL_FATAL(put(om, "K", 2), CRAM_OK);
    CU_ASSERT_EQUAL(om_read(om, T1, "K", 1, NULL, &v2, NULL, NULL), CRAM_OK);
    uint64_t b_id = log_segment(l, log_head_slot(l))->id;
    for (int i = 0; i < NGARB / 4; i++) {
        snprintf(k, sizeof k, "g-%d", i);
        CU_ASSERT_EQUAL_FATAL(put(om, k, 1), CRAM_OK);
        gen[i] = 1;
    }
    CU_ASSERT_EQUAL(log_roll(l), 0);
    /* segment C: the remove, among more garbage-to-be */
    CU_ASSERT_EQUAL(om_remove(om, T1, "K", 1, NULL, NULL), CRAM_OK);
    uint64_t c_id = log_segment(l, log_head_slot(l))->id;
    for (int i = NGARB / 4; i < NGARB; i++) {
        snprintf(k, sizeof k, "g-%d", i);
        CU_ASSERT_EQUAL_FATAL(put(om, k, 1), CRAM_OK);
        gen[i] = 1;
    }
    CU_ASSERT_EQUAL_FATAL(count_k(l, 0, v2), 1);
    /* overwrite the garbage round after round, cleaning in between, until B
     * and C have left the log and the remove's tombstone is gone */
    char err[256];
    /* one survivor per pass: A (full of live data) never fits one with others */
    struct lc_config cfg = { .eager = true, .combined_only = true, .max_survivors = 1 };
    lc_cleaner *c = lc_create(loop, l, om_hashtable(om), NULL, &cfg, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    int round;
    for (round = 0; round < 40; round++) {
        if (slot_by_id(l, b_id) == LOG_NO_SLOT && slot_by_id(l, c_id) == LOG_NO_SLOT &&
            count_k(l, 0, v2) == 0)
            break;
        for (int i = 0; i < NGARB; i++) {
            snprintf(k, sizeof k, "g-%d", i);
            CU_ASSERT_EQUAL_FATAL(put(om, k, gen[i] + 1), CRAM_OK);
            gen[i]++;
        }
        CU_ASSERT_EQUAL(log_roll(l), 0);
        lc_kick(c);
        settle(loop, c);
    }
    struct lc_stats st;
    lc_get_stats(c, &st);
    printf("\n  %d rounds: %llu segments cleaned, %llu tombstones dropped\n", round,
           (unsigned long long)st.segments_cleaned, (unsigned long long)st.tombstones_dropped);
    /* the scenario holds: B and C are gone, so is T(v2); A and its dead v1 are not */
    CU_ASSERT_EQUAL_FATAL(slot_by_id(l, b_id), LOG_NO_SLOT);
    CU_ASSERT_EQUAL_FATAL(slot_by_id(l, c_id), LOG_NO_SLOT);
    CU_ASSERT_EQUAL_FATAL(count_k(l, 0, v2), 0);
    CU_ASSERT_FATAL(slot_by_id(l, a_id) != LOG_NO_SLOT);
    CU_ASSERT_EQUAL_FATAL(count_k(l, v1, 0), 1);
    CU_ASSERT_EQUAL(om_read(om, T1, "K", 1, NULL, NULL, NULL, NULL), CRAM_OBJECT_DOESNT_EXIST);
    lc_destroy(c);
    tp_loop_destroy(loop);

    /* crash: a recovery master replays every segment of the log (newest
     * first, then oldest first) */
    for (int dir = 0; dir < 2; dir++) {
        objmgr *rm = mk(128, OM_TABLET_RECOVERING);
        struct om_replay rp = { 0 };
        uint32_t n = log_nsegments(l);
        for (uint32_t x = 0; x < n; x++) {
            uint32_t i = dir == 0 ? n - 1 - x : x;
            const struct log_segment *s = log_segment(l, i);
            if (!in_log(s))
                continue;
            struct seg_iter it;
            struct seg_entry e;
            seg_iter_init(&it, log_segment_base(l, i), s->w.used);
            int rc;
            while ((rc = seg_iter_next(&it, &e)) == SEG_ITER_OK)
                CU_ASSERT_EQUAL_FATAL(om_replay_entry(rm, &rp, &e), CRAM_OK);
            CU_ASSERT_EQUAL(rc, SEG_ITER_END);
        }
        struct om_tablet whole = { .table_id = T1, .start_hash = 0, .end_hash = UINT64_MAX };
        om_replay_end(rm, &rp, &whole, 1);
        CU_ASSERT_EQUAL(om_replay_commit(rm, &rp), 0);
        om_replay_free(&rp);
        CU_ASSERT_EQUAL(om_take_tablet(rm, T1, 0, UINT64_MAX, OM_TABLET_NORMAL), CRAM_OK);
        /* the removed key stays removed; everything else is as written */
        CU_ASSERT_EQUAL(om_read(rm, T1, "K", 1, NULL, NULL, NULL, NULL), CRAM_OBJECT_DOESNT_EXIST);
        int bad = 0;
        for (int i = 0; i < NFIX; i++) {
            snprintf(k, sizeof k, "fix-%d", i);
            bad += check(rm, k, 1) != 0;
        }
        for (int i = 0; i < NGARB; i++) {
            snprintf(k, sizeof k, "g-%d", i);
            bad += check(rm, k, gen[i]) != 0;
        }
        CU_ASSERT_EQUAL(bad, 0);
        om_destroy(rm);
    }
    om_destroy(om);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("tombstone_clean", NULL, NULL);
    CU_add_test(s, "overwrite, remove, clean, recover: no resurrection", test_no_resurrection_after_cleaning);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
