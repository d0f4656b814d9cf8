/* objmgr.c -- objects, versions, reject rules, tablets, enumeration (see objmgr.h). */
#include "master/objmgr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "common/keyhash.h"
#include "common/log.h"

/* One candidate object while enumerating one bucket. */
struct om_enum_cand {
    uint64_t hash;
    log_ref  ref;
};

struct objmgr {
    mlog *log;
    ht   *ht;
    uint32_t max_value;
    struct om_tablet *tablets;
    uint32_t ntablets, captablets;
    struct om_enum_cand *cand;     /* enumeration scratch (grows) */
    size_t ncand_cap;
    uint64_t live_bytes;
    uint64_t reads, writes, removes, increments;
};

/* ---- helpers ----------------------------------------------------------- */

struct om_keyctx {
    const mlog *log;
    uint64_t table;
    const void *key;
    uint16_t key_len;
};

static inline const struct seg_object *obj_at(const mlog *l, log_ref ref)
{
    return (const struct seg_object *)log_entry_body(log_entry_get(l, ref));
}

/* Objects only: during a replay the table may also hold tombstones
 * (objmgr.h), which never match a key here. */
static inline bool key_match(void *vctx, log_ref ref)
{
    const struct om_keyctx *c = vctx;
    const struct seg_entry_hdr *h = log_entry_get(c->log, ref);
    if (h->type != SEG_ENTRY_OBJECT)
        return false;
    const struct seg_object *o = (const struct seg_object *)log_entry_body(h);
    return o->table_id == c->table && o->key_len == c->key_len &&
           memcmp((const uint8_t *)o + sizeof *o, c->key, c->key_len) == 0;
}

/* Is the entry counted in the live bytes?  Objects always; a replay's
 * tombstone only when it names a segment of this log (objmgr.h). */
static inline bool entry_counted(const struct seg_entry_hdr *h)
{
    if (h->type != SEG_ENTRY_TOMBSTONE)
        return true;
    const struct seg_tombstone *t = (const struct seg_tombstone *)log_entry_body(h);
    return t->segment_id != 0;
}

/* Table id, key and version of an object or tombstone entry. */
static inline void entry_key(const struct seg_entry_hdr *h, uint64_t *table, const uint8_t **key,
                             uint16_t *key_len, uint64_t *version)
{
    if (h->type == SEG_ENTRY_OBJECT) {
        const struct seg_object *o = (const struct seg_object *)log_entry_body(h);
        *table = o->table_id;
        *key = (const uint8_t *)o + sizeof *o;
        *key_len = o->key_len;
        *version = o->version;
    } else {
        const struct seg_tombstone *t = (const struct seg_tombstone *)log_entry_body(h);
        *table = t->table_id;
        *key = (const uint8_t *)t + sizeof *t;
        *key_len = t->key_len;
        *version = t->version;
    }
}

static inline uint32_t entry_total(const mlog *l, log_ref ref)
{
    return (uint32_t)seg_entry_size(log_entry_get(l, ref)->length);
}

static inline uint32_t now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (uint32_t)ts.tv_sec;
}

cram_status om_reject(const cram_reject_rules *r, bool exists, uint64_t version)
{
    if (r == NULL)
        return CRAM_OK;
    if (!exists)
        return r->doesnt_exist ? CRAM_OBJECT_DOESNT_EXIST : CRAM_OK;
    if (r->exists)
        return CRAM_OBJECT_EXISTS;
    if (r->version_le_given && version <= r->given_version)
        return CRAM_WRONG_VERSION;
    if (r->version_ne_given && version != r->given_version)
        return CRAM_WRONG_VERSION;
    return CRAM_OK;
}

/* Bytes of the tombstone entry of a key. */
static inline uint32_t tomb_entry_size(uint16_t key_len)
{
    return (uint32_t)seg_entry_size(sizeof(struct seg_tombstone) + (uint64_t)key_len);
}

/* The object fits a fresh head together with the tombstone of the version
 * it replaces (an overwrite appends both into one segment, see put_object),
 * so whatever is written can later be overwritten and removed. */
static bool fits_segment(const objmgr *om, uint16_t key_len, uint32_t value_len)
{
    uint64_t max = seg_entry_size(log_max_entry_body(om->log));
    return seg_entry_size(sizeof(struct seg_object) + (uint64_t)key_len + value_len) +
           tomb_entry_size(key_len) <= max;
}

/* ---- life cycle -------------------------------------------------------- */

objmgr *om_create(const struct om_config *cfg, char *err, size_t errlen)
{
    objmgr *om = calloc(1, sizeof *om);
    if (om == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    struct log_config lc = { .memory_bytes = cfg->memory_bytes, .segment_bytes = cfg->segment_bytes,
                             .hugepages = cfg->hugepages,
                             .prefault = cfg->prefault, .master_id = cfg->master_id };
    om->log = log_create(&lc, err, errlen);
    if (om->log == NULL)
        goto free_om;
    uint64_t nb = cfg->hash_buckets;
    if (nb == 0) {
        nb = cfg->memory_bytes / 512;
        if (nb < 1024)
            nb = 1024;
    }
    om->ht = ht_create(nb);
    if (om->ht == NULL) {
        snprintf(err, errlen, "out of memory for %llu hash buckets", (unsigned long long)nb);
        goto destroy_log;
    }
    /* A value must fit a fresh head next to at least a 1-byte key; the key
     * and value together are checked against the segment at each write. */
    uint64_t cap = log_max_entry_body(om->log) - sizeof(struct seg_object) - 1 - tomb_entry_size(1);
    om->max_value = cfg->max_value_bytes ? cfg->max_value_bytes : CRAM_MAX_VALUE_LEN;
    if (om->max_value > cap)
        om->max_value = (uint32_t)cap;
    return om;

destroy_log:
    log_destroy(om->log);
free_om:
    free(om);
    return NULL;
}

void om_destroy(objmgr *om)
{
    if (om == NULL)
        return;
    ht_destroy(om->ht);
    log_destroy(om->log);
    free(om->tablets);
    free(om->cand);
    free(om);
}

mlog *om_log(objmgr *om) { return om->log; }
ht *om_hashtable(objmgr *om) { return om->ht; }
uint32_t om_max_value_bytes(const objmgr *om) { return om->max_value; }

/* ---- tablets ----------------------------------------------------------- */

static struct om_tablet *tablet_find(const objmgr *om, uint64_t table, uint64_t hash)
{
    for (uint32_t i = 0; i < om->ntablets; i++) {
        struct om_tablet *t = &om->tablets[i];
        if (t->table_id == table && hash >= t->start_hash && hash <= t->end_hash)
            return t;
    }
    return NULL;
}

/* The NORMAL tablet holding (table, hash) in *out, or the status to answer. */
static inline cram_status tablet_check(const objmgr *om, uint64_t table, uint64_t hash,
                                       struct om_tablet **out)
{
    struct om_tablet *t = tablet_find(om, table, hash);
    *out = t;
    if (t == NULL)
        return CRAM_UNKNOWN_TABLET;
    return t->state == OM_TABLET_NORMAL ? CRAM_OK : CRAM_RETRY;
}

cram_status om_check_tablet(const objmgr *om, uint64_t table, uint64_t hash)
{
    struct om_tablet *t;
    return tablet_check(om, table, hash, &t);
}

uint32_t om_tablet_count(const objmgr *om) { return om->ntablets; }
const struct om_tablet *om_tablet_get(const objmgr *om, uint32_t i)
{
    return i < om->ntablets ? &om->tablets[i] : NULL;
}

cram_status om_take_tablet(objmgr *om, uint64_t table, uint64_t start, uint64_t end, int state)
{
    if (start > end || (state != OM_TABLET_NORMAL && state != OM_TABLET_RECOVERING))
        return CRAM_INVALID_ARGUMENT;
    for (uint32_t i = 0; i < om->ntablets; i++) {
        struct om_tablet *t = &om->tablets[i];
        if (t->table_id != table)
            continue;
        if (t->start_hash == start && t->end_hash == end) {
            t->state = state;
            return CRAM_OK;
        }
        if (start <= t->end_hash && t->start_hash <= end)
            return CRAM_INVALID_ARGUMENT;
    }
    if (om->ntablets == om->captablets) {
        uint32_t cap = om->captablets ? om->captablets * 2 : 8;
        struct om_tablet *nt = realloc(om->tablets, cap * sizeof *nt);
        if (nt == NULL)
            return CRAM_NO_MEMORY;
        om->tablets = nt;
        om->captablets = cap;
    }
    om->tablets[om->ntablets++] = (struct om_tablet){ .table_id = table, .start_hash = start,
                                                      .end_hash = end, .state = state };
    return CRAM_OK;
}

struct om_drop_ctx {
    objmgr *om;
    uint64_t table, start, end;
};

static bool drop_visit(void *vctx, log_ref ref, bool *stop)
{
    (void)stop;
    struct om_drop_ctx *c = vctx;
    objmgr *om = c->om;
    uint64_t table, version;
    const uint8_t *key;
    uint16_t key_len;
    entry_key(log_entry_get(om->log, ref), &table, &key, &key_len, &version);
    if (table != c->table)
        return false;
    uint64_t h = cram_key_hash(table, key, key_len);
    if (h < c->start || h > c->end || om_check_tablet(om, table, h) != CRAM_UNKNOWN_TABLET)
        return false;
    /* A later re-create must get a higher version than the dropped object
     * (or than a replay's tombstone). */
    log_safe_version_raise(om->log, version);
    const struct seg_entry_hdr *eh = log_entry_get(om->log, ref);
    if (entry_counted(eh)) {
        uint32_t sz = entry_total(om->log, ref);
        om->live_bytes -= sz;
        if (eh->type == SEG_ENTRY_TOMBSTONE)
            log_tomb_sub(om->log, ref, ((const struct seg_tombstone *)log_entry_body(eh))->segment_id, sz);
        else
            log_live_sub(om->log, ref, sz);
    }
    return true;
}

cram_status om_drop_tablet(objmgr *om, uint64_t table, uint64_t start, uint64_t end)
{
    if (start > end)
        return CRAM_INVALID_ARGUMENT;
    uint32_t w = 0;
    bool dropped = false;
    for (uint32_t i = 0; i < om->ntablets; i++) {
        struct om_tablet *t = &om->tablets[i];
        if (t->table_id == table && t->start_hash >= start && t->end_hash <= end) {
            dropped = true;
            continue;
        }
        om->tablets[w++] = *t;
    }
    om->ntablets = w;
    if (!dropped)
        return CRAM_OK;
    struct om_drop_ctx c = { om, table, start, end };
    uint64_t b0 = ht_bucket_index(om->ht, start), b1 = ht_bucket_index(om->ht, end);
    for (uint64_t b = b0; b <= b1; b++)
        ht_visit_bucket(om->ht, b, drop_visit, &c);
    return CRAM_OK;
}

/* ---- operations -------------------------------------------------------- */

cram_status om_read(objmgr *om, uint64_t table, const void *key, uint16_t key_len,
                    const cram_reject_rules *rules, uint64_t *version,
                    const void **value, uint32_t *value_len)
{
    if (version != NULL)
        *version = 0;
    uint64_t hash = cram_key_hash(table, key, key_len);
    struct om_tablet *tab;
    cram_status st = tablet_check(om, table, hash, &tab);
    if (st != CRAM_OK)
        return st;
    om->reads++;
    struct om_keyctx kc = { om->log, table, key, key_len };
    log_ref ref = ht_lookup(om->ht, hash, key_match, &kc, NULL);
    if (ref == LOG_REF_NULL)
        return CRAM_OBJECT_DOESNT_EXIST;
    const struct seg_entry_hdr *h = log_entry_get(om->log, ref);
    const struct seg_object *o = (const struct seg_object *)log_entry_body(h);
    if (version != NULL)
        *version = o->version;
    st = om_reject(rules, true, o->version);
    if (st != CRAM_OK)
        return st;
    if (value != NULL)
        *value = (const uint8_t *)o + sizeof *o + key_len;
    if (value_len != NULL)
        *value_len = h->length - (uint32_t)sizeof *o - key_len;
    return CRAM_OK;
}

void om_prefetch(const objmgr *om, uint64_t table, const void *key, uint16_t key_len)
{
    uint64_t hash = cram_key_hash(table, key, key_len);
    __builtin_prefetch(&om->ht->buckets[ht_bucket_index(om->ht, hash)]);
}

/* Append a new version of an object and index it.  slot is the hash-table
 * entry of the current version (NULL if none).
 *
 * Overwrite: the tombstone of the replaced version (naming the segment that
 * holds it) is appended together with the new object, tombstone first, in
 * one log_append_group -- both in the same segment, or neither.  Without
 * it, once the cleaner had dropped the new version's segment and the
 * tombstone of a later remove, a crash recovery replaying the old version's
 * segment would bring the removed object back (RAMCloud's
 * ObjectManager::writeObject does the same).  The tombstone counts as live
 * like any other (log_tomb_add); it dies when the named segment leaves the
 * log, and the cleaner drops it then.
 *
 * Not needed, and not written, when the replaced version is in the head and
 * the new one goes into the head too: every later tombstone of the key then
 * names a segment holding both versions (or a newer one), with a version
 * >= the old one, for as long as that segment is in the log. */
static cram_status put_object(objmgr *om, struct om_tablet *tab, uint64_t hash, uint64_t table,
                              const void *key,
                              uint16_t key_len, const void *value, uint32_t value_len,
                              uint64_t *slot, uint64_t cur_version, uint64_t *version)
{
    if (slot == NULL && ht_reserve(om->ht) != 0)
        return CRAM_NO_MEMORY;
    uint64_t sv = log_safe_version(om->log);
    uint64_t nv = (cur_version > sv ? cur_version : sv) + 1;
    struct seg_object o = { .table_id = table, .version = nv, .timestamp = now_seconds(),
                            .key_len = key_len, .reserved = 0 };
    struct iovec iov[3] = { { &o, sizeof o }, { (void *)key, key_len }, { (void *)value, value_len } };
    log_ref ref;
    uint32_t sz = (uint32_t)seg_entry_size(sizeof o + (uint64_t)key_len + value_len);
    uint32_t head = log_head_slot(om->log);
    bool same_head = slot != NULL && head != LOG_NO_SLOT && log_ref_slot(ht_entry_ref(*slot)) == head &&
                     sz <= om->log->segment_bytes - log_segment(om->log, head)->w.used;
    if (slot == NULL || same_head) {
        if (log_append(om->log, SEG_ENTRY_OBJECT, iov, 3, &ref) != 0)
            return CRAM_NO_TABLE_SPACE;
        CRAM_ASSERT(!same_head || log_ref_slot(ref) == head);
    } else {
        log_ref old = ht_entry_ref(*slot);
        struct seg_tombstone ts = { .table_id = table, .version = cur_version,
                                    .segment_id = log_segment_id_of(om->log, old),
                                    .timestamp = o.timestamp, .key_len = key_len, .reserved = 0 };
        struct iovec tiov[2] = { { &ts, sizeof ts }, { (void *)key, key_len } };
        struct log_group_entry g[2] = { { SEG_ENTRY_TOMBSTONE, tiov, 2 }, { SEG_ENTRY_OBJECT, iov, 3 } };
        log_ref refs[2];
        if (log_append_group(om->log, g, 2, refs) != 0)
            return CRAM_NO_TABLE_SPACE;
        ref = refs[1];
        uint32_t tsz = tomb_entry_size(key_len);
        if (log_tomb_add(om->log, refs[0], ts.segment_id, tsz))
            om->live_bytes += tsz;
    }
    om->live_bytes += sz;
    log_live_add(om->log, ref, sz);
    tab->bytes += sz;
    if (slot != NULL) {
        log_ref old = ht_entry_ref(*slot);
        uint32_t osz = entry_total(om->log, old);
        om->live_bytes -= osz;
        log_live_sub(om->log, old, osz);
        tab->bytes -= osz;
        ht_replace(slot, hash, ref);
    } else {
        tab->objects++;
        int rc = ht_insert(om->ht, hash, ref);
        CRAM_ASSERT(rc == 0);    /* reserved above */
    }
    if (version != NULL)
        *version = nv;
    return CRAM_OK;
}

cram_status om_write(objmgr *om, uint64_t table, const void *key, uint16_t key_len,
                     const void *value, uint32_t value_len,
                     const cram_reject_rules *rules, uint64_t *version)
{
    if (version != NULL)
        *version = 0;
    if (value_len > om->max_value || !fits_segment(om, key_len, value_len))
        return CRAM_REQUEST_TOO_LARGE;
    uint64_t hash = cram_key_hash(table, key, key_len);
    struct om_tablet *tab;
    cram_status st = tablet_check(om, table, hash, &tab);
    if (st != CRAM_OK)
        return st;
    struct om_keyctx kc = { om->log, table, key, key_len };
    uint64_t *slot = NULL;
    log_ref ref = ht_lookup(om->ht, hash, key_match, &kc, &slot);
    uint64_t cur = ref ? obj_at(om->log, ref)->version : 0;
    if (version != NULL)
        *version = cur;
    st = om_reject(rules, ref != LOG_REF_NULL, cur);
    if (st != CRAM_OK)
        return st;
    st = put_object(om, tab, hash, table, key, key_len, value, value_len, ref ? slot : NULL, cur, version);
    if (st == CRAM_OK)
        om->writes++;
    return st;
}

cram_status om_remove(objmgr *om, uint64_t table, const void *key, uint16_t key_len,
                      const cram_reject_rules *rules, uint64_t *version)
{
    if (version != NULL)
        *version = 0;
    uint64_t hash = cram_key_hash(table, key, key_len);
    struct om_tablet *tab;
    cram_status st = tablet_check(om, table, hash, &tab);
    if (st != CRAM_OK)
        return st;
    struct om_keyctx kc = { om->log, table, key, key_len };
    uint64_t *slot = NULL;
    log_ref ref = ht_lookup(om->ht, hash, key_match, &kc, &slot);
    uint64_t cur = ref ? obj_at(om->log, ref)->version : 0;
    if (version != NULL)
        *version = cur;
    st = om_reject(rules, ref != LOG_REF_NULL, cur);
    if (st != CRAM_OK || ref == LOG_REF_NULL)
        return st;
    struct seg_tombstone ts = { .table_id = table, .version = cur,
                                .segment_id = log_segment_id_of(om->log, ref),
                                .timestamp = now_seconds(), .key_len = key_len, .reserved = 0 };
    struct iovec iov[2] = { { &ts, sizeof ts }, { (void *)key, key_len } };
    log_ref tref;
    if (log_append(om->log, SEG_ENTRY_TOMBSTONE, iov, 2, &tref) != 0)
        return CRAM_NO_TABLE_SPACE;
    uint32_t tsz = (uint32_t)seg_entry_size(sizeof ts + (uint64_t)key_len);
    uint32_t osz = entry_total(om->log, ref);
    if (log_tomb_add(om->log, tref, ts.segment_id, tsz))
        om->live_bytes += tsz;
    om->live_bytes -= osz;
    log_live_sub(om->log, ref, osz);
    tab->bytes -= osz;
    tab->objects--;
    ht_remove(om->ht, slot);
    log_safe_version_raise(om->log, cur);
    om->removes++;
    return CRAM_OK;
}

cram_status om_increment(objmgr *om, uint64_t table, const void *key, uint16_t key_len,
                         int64_t delta, const cram_reject_rules *rules,
                         int64_t *new_value, uint64_t *version)
{
    if (version != NULL)
        *version = 0;
    if (!fits_segment(om, key_len, sizeof(int64_t)))
        return CRAM_REQUEST_TOO_LARGE;
    uint64_t hash = cram_key_hash(table, key, key_len);
    struct om_tablet *tab;
    cram_status st = tablet_check(om, table, hash, &tab);
    if (st != CRAM_OK)
        return st;
    struct om_keyctx kc = { om->log, table, key, key_len };
    uint64_t *slot = NULL;
    log_ref ref = ht_lookup(om->ht, hash, key_match, &kc, &slot);
    uint64_t cur = 0;
    uint64_t old = 0;
    if (ref != LOG_REF_NULL) {
        const struct seg_entry_hdr *h = log_entry_get(om->log, ref);
        const struct seg_object *o = (const struct seg_object *)log_entry_body(h);
        cur = o->version;
        st = om_reject(rules, true, cur);
        if (st != CRAM_OK)
            goto out_version;
        if (h->length - sizeof *o - key_len != sizeof(int64_t)) {
            st = CRAM_INVALID_OBJECT;
            goto out_version;
        }
        memcpy(&old, (const uint8_t *)o + sizeof *o + key_len, sizeof old);
    } else {
        st = om_reject(rules, false, 0);
        if (st != CRAM_OK)
            goto out_version;
    }
    uint64_t nv = old + (uint64_t)delta;    /* unsigned: wraps without UB */
    st = put_object(om, tab, hash, table, key, key_len, &nv, sizeof nv, ref ? slot : NULL, cur, version);
    if (st != CRAM_OK)
        return st;
    om->increments++;
    if (new_value != NULL)
        memcpy(new_value, &nv, sizeof nv);
    return CRAM_OK;

out_version:
    if (version != NULL)
        *version = cur;
    return st;
}

/* ---- enumeration ------------------------------------------------------- */

struct om_collect_ctx {
    objmgr *om;
    uint64_t table, lo, hi;
    size_t n;
    bool oom;
};

static bool collect_visit(void *vctx, log_ref ref, bool *stop)
{
    struct om_collect_ctx *c = vctx;
    objmgr *om = c->om;
    const struct seg_entry_hdr *eh = log_entry_get(om->log, ref);
    if (eh->type != SEG_ENTRY_OBJECT)
        return false;               /* a replay's tombstone (objmgr.h) */
    const struct seg_object *o = (const struct seg_object *)log_entry_body(eh);
    if (o->table_id != c->table)
        return false;
    uint64_t h = cram_key_hash(o->table_id, (const uint8_t *)o + sizeof *o, o->key_len);
    if (h < c->lo || h > c->hi)
        return false;
    if (c->n == om->ncand_cap) {
        size_t cap = om->ncand_cap ? om->ncand_cap * 2 : 64;
        struct om_enum_cand *nc = realloc(om->cand, cap * sizeof *nc);
        if (nc == NULL) {
            c->oom = true;
            *stop = true;
            return false;
        }
        om->cand = nc;
        om->ncand_cap = cap;
    }
    om->cand[c->n++] = (struct om_enum_cand){ h, ref };
    return false;
}

static int cand_cmp(const void *a, const void *b)
{
    const struct om_enum_cand *x = a, *y = b;
    return x->hash < y->hash ? -1 : x->hash > y->hash;
}

cram_status om_enumerate(objmgr *om, uint64_t table, uint64_t tablet_start, uint64_t tablet_end,
                         uint64_t cursor, uint64_t max_bytes, uint32_t item_overhead,
                         om_enum_fn emit, void *ctx,
                         uint64_t *next_cursor, bool *done, uint32_t *count)
{
    *count = 0;
    *done = true;
    *next_cursor = tablet_end;
    if (tablet_start > tablet_end)
        return CRAM_INVALID_ARGUMENT;
    /* the whole range must lie in one owned tablet */
    const struct om_tablet *own = NULL;
    for (uint32_t i = 0; i < om->ntablets; i++) {
        const struct om_tablet *t = &om->tablets[i];
        if (t->table_id == table && tablet_start >= t->start_hash && tablet_end <= t->end_hash) {
            own = t;
            break;
        }
    }
    if (own == NULL)
        return CRAM_UNKNOWN_TABLET;
    if (own->state != OM_TABLET_NORMAL)
        return CRAM_RETRY;
    if (cursor > tablet_end)
        return CRAM_OK;
    uint64_t lo = cursor > tablet_start ? cursor : tablet_start;

    uint64_t used = 0;
    uint64_t b1 = ht_bucket_index(om->ht, tablet_end);
    for (uint64_t b = ht_bucket_index(om->ht, lo); b <= b1; b++) {
        struct om_collect_ctx c = { om, table, lo, tablet_end, 0, false };
        ht_visit_bucket(om->ht, b, collect_visit, &c);
        if (c.oom)
            return CRAM_NO_MEMORY;
        if (c.n > 1)
            qsort(om->cand, c.n, sizeof *om->cand, cand_cmp);
        /* emit whole key-hash groups while they fit (the first always does) */
        for (size_t i = 0; i < c.n;) {
            size_t j = i;
            uint64_t gbytes = 0;
            while (j < c.n && om->cand[j].hash == om->cand[i].hash) {
                const struct seg_entry_hdr *h = log_entry_get(om->log, om->cand[j].ref);
                gbytes += item_overhead + h->length - sizeof(struct seg_object);
                j++;
            }
            if (*count > 0 && used + gbytes > max_bytes) {
                *next_cursor = om->cand[i].hash;
                *done = false;
                return CRAM_OK;
            }
            for (size_t k = i; k < j; k++) {
                const struct seg_entry_hdr *h = log_entry_get(om->log, om->cand[k].ref);
                const struct seg_object *o = (const struct seg_object *)log_entry_body(h);
                const uint8_t *key = (const uint8_t *)o + sizeof *o;
                if (emit(ctx, om->cand[k].hash, o->version, key, o->key_len, key + o->key_len,
                         h->length - (uint32_t)sizeof *o - o->key_len) != 0)
                    return CRAM_INTERNAL_ERROR;
                (*count)++;
            }
            used += gbytes;
            i = j;
        }
        if (b == UINT64_MAX)
            break;
    }
    return CRAM_OK;
}

void om_get_stats(const objmgr *om, struct om_stats *st)
{
    memset(st, 0, sizeof *st);
    st->reads = om->reads;
    st->writes = om->writes;
    st->removes = om->removes;
    st->increments = om->increments;
    st->objects = ht_count(om->ht);
    st->live_bytes = om->live_bytes;
    st->tablets = om->ntablets;
    st->hash_buckets = ht_nbuckets(om->ht);
    st->hash_overflow_buckets = om->ht->ovf_in_use;
    log_get_stats(om->log, &st->log);
}

/* ---- recovery replay ----------------------------------------------------- */

/* Key confirmation for replay: objects and tombstones alike. */
struct om_rkeyctx {
    const mlog *log;
    uint64_t table;
    const uint8_t *key;
    uint16_t key_len;
};

static inline bool any_match(void *vctx, log_ref ref)
{
    const struct om_rkeyctx *c = vctx;
    const struct seg_entry_hdr *h = log_entry_get(c->log, ref);
    if (h->type != SEG_ENTRY_OBJECT && h->type != SEG_ENTRY_TOMBSTONE)
        return false;
    uint64_t table, version;
    const uint8_t *key;
    uint16_t key_len;
    entry_key(h, &table, &key, &key_len, &version);
    return table == c->table && key_len == c->key_len && memcmp(key, c->key, key_len) == 0;
}

/* Append to the replay's current side segment, opening another when it is
 * full (a fresh one always takes an entry log_max_entry_body allows). */
static cram_status replay_append(objmgr *om, struct om_replay *rp, uint8_t type,
                                 const struct iovec *parts, int n, log_ref *ref)
{
    if (rp->nslots > 0 &&
        log_side_append(om->log, rp->slots[rp->nslots - 1], type, parts, n, ref) == 0)
        return CRAM_OK;
    if (rp->nslots == rp->capslots) {
        uint32_t cap = rp->capslots ? rp->capslots * 2 : 16;
        uint32_t *ns = realloc(rp->slots, cap * sizeof *ns);
        if (ns == NULL)
            return CRAM_NO_MEMORY;
        rp->slots = ns;
        rp->capslots = cap;
    }
    uint32_t slot = log_side_open(om->log);
    if (slot == LOG_NO_SLOT)
        return CRAM_NO_TABLE_SPACE;
    rp->slots[rp->nslots++] = slot;
    if (log_side_append(om->log, slot, type, parts, n, ref) != 0)
        return CRAM_REQUEST_TOO_LARGE;     /* larger than a whole segment */
    return CRAM_OK;
}

cram_status om_replay_entry(objmgr *om, struct om_replay *rp, const struct seg_entry *e)
{
    rp->bytes += seg_entry_size(e->length);
    uint64_t table, version;
    const uint8_t *key;
    uint16_t key_len;
    if (e->type == SEG_ENTRY_SAFE_VERSION) {
        struct seg_safe_version sv;
        if (e->length != sizeof sv)
            return CRAM_INVALID_OBJECT;
        memcpy(&sv, e->body, sizeof sv);
        if (sv.safe_version > rp->max_version)
            rp->max_version = sv.safe_version;
        return CRAM_OK;
    } else if (e->type == SEG_ENTRY_OBJECT) {
        const struct seg_object *o;
        const uint8_t *val;
        uint32_t vl;
        if (!seg_parse_object(e, &o, &key, &val, &vl))
            return CRAM_INVALID_OBJECT;
        table = o->table_id;
        key_len = o->key_len;
        version = o->version;
    } else if (e->type == SEG_ENTRY_TOMBSTONE) {
        const struct seg_tombstone *t;
        if (!seg_parse_tombstone(e, &t, &key))
            return CRAM_INVALID_OBJECT;
        table = t->table_id;
        key_len = t->key_len;
        version = t->version;
    } else {
        rp->foreign++;
        return CRAM_OK;
    }
    if (version > rp->max_version)
        rp->max_version = version;
    /* the one hash of this key */
    uint64_t hash = cram_key_hash(table, key, key_len);
    struct om_tablet *tab = tablet_find(om, table, hash);
    if (tab == NULL || tab->state != OM_TABLET_RECOVERING) {
        rp->foreign++;
        return CRAM_OK;
    }
    struct om_rkeyctx kc = { om->log, table, key, key_len };
    uint64_t *slot = NULL;
    log_ref old = ht_lookup(om->ht, hash, any_match, &kc, &slot);
    const struct seg_entry_hdr *oh = NULL;
    if (old != LOG_REF_NULL) {
        oh = log_entry_get(om->log, old);
        uint64_t ot;
        const uint8_t *ok;
        uint16_t okl;
        uint64_t ov;
        entry_key(oh, &ot, &ok, &okl, &ov);
        /* Highest version wins.  An object loses to anything of its version
         * or newer (a duplicate, or the tombstone that removed it); a
         * tombstone removes objects of its version or older and loses only
         * to newer objects and to tombstones of its version or newer. */
        bool newer = e->type == SEG_ENTRY_OBJECT ? version > ov
                     : (oh->type == SEG_ENTRY_OBJECT ? version >= ov : version > ov);
        if (!newer) {
            rp->ignored++;
            return CRAM_OK;
        }
    } else if (ht_reserve(om->ht) != 0) {
        return CRAM_NO_MEMORY;
    }
    /* Objects: the body straight from the received buffer into the side
     * segment.  Tombstones: the segment id they carry must name the
     * segment of THIS log holding the object they kill (the cleaner keeps a
     * tombstone while that segment is in the log, so a later recovery of
     * this master cannot resurrect it): the side segment of the object
     * superseded here, that of the tombstone superseded (which may cover
     * one), or 0 when no object of the key is in this log. */
    struct iovec iov[2] = { { (void *)e->body, e->length }, { NULL, 0 } };
    int niov = 1;
    struct seg_tombstone ts;
    if (e->type == SEG_ENTRY_TOMBSTONE) {
        memcpy(&ts, e->body, sizeof ts);
        ts.segment_id = 0;
        if (oh != NULL && oh->type == SEG_ENTRY_OBJECT) {
            ts.segment_id = log_segment_id_of(om->log, old);
        } else if (oh != NULL) {
            const struct seg_tombstone *ots = (const struct seg_tombstone *)log_entry_body(oh);
            ts.segment_id = ots->segment_id;
        }
        iov[0] = (struct iovec){ &ts, sizeof ts };
        iov[1] = (struct iovec){ (void *)key, key_len };
        niov = 2;
    }
    /* An object replacing an older object of this log: the older one stays
     * behind, dead, in its side segment, so it gets a tombstone naming that
     * segment, as any overwrite does (put_object) -- else cleaning the
     * newer version's segment and a later tombstone could let a second
     * recovery resurrect it.  Tombstone first, then the object; a failure
     * fails the replay (the caller aborts it, side segments and all). */
    uint32_t synth = 0;
    if (e->type == SEG_ENTRY_OBJECT && oh != NULL && oh->type == SEG_ENTRY_OBJECT) {
        const struct seg_object *oo = (const struct seg_object *)log_entry_body(oh);
        struct seg_tombstone sts = { .table_id = table, .version = oo->version,
                                     .segment_id = log_segment_id_of(om->log, old),
                                     .timestamp = oo->timestamp, .key_len = key_len, .reserved = 0 };
        struct iovec tiov[2] = { { &sts, sizeof sts }, { (void *)key, key_len } };
        log_ref sref;
        cram_status sst = replay_append(om, rp, SEG_ENTRY_TOMBSTONE, tiov, 2, &sref);
        if (sst != CRAM_OK)
            return sst;
        synth = tomb_entry_size(key_len);
        if (log_tomb_add(om->log, sref, sts.segment_id, synth)) {
            om->live_bytes += synth;
            rp->synth_tomb_bytes += synth;
        }
        rp->tombstones++;
    }
    log_ref ref;
    cram_status st = replay_append(om, rp, e->type, iov, niov, &ref);
    if (st != CRAM_OK)
        return st;
    uint32_t sz = (uint32_t)seg_entry_size(e->length);
    if (e->type == SEG_ENTRY_OBJECT) {
        om->live_bytes += sz;
        log_live_add(om->log, ref, sz);
        tab->bytes += sz;
        tab->objects++;
        rp->objects++;
    } else {
        rp->tombstones++;
        /* segment_id 0: nothing in this log needs it */
        if (ts.segment_id != 0 && log_tomb_add(om->log, ref, ts.segment_id, sz)) {
            om->live_bytes += sz;
            rp->tomb_bytes += sz;
        }
    }
    if (e->type == SEG_ENTRY_TOMBSTONE && !rp->tombs_lost) {
        if (rp->ntombs == rp->captombs) {
            uint32_t cap = rp->captombs ? rp->captombs * 2 : 256;
            struct om_tomb_ref *nt = realloc(rp->tombs, cap * sizeof *nt);
            if (nt == NULL) {
                rp->tombs_lost = true;
            } else {
                rp->tombs = nt;
                rp->captombs = cap;
            }
        }
        if (!rp->tombs_lost)
            rp->tombs[rp->ntombs++] = (struct om_tomb_ref){ hash, ref };
    }
    if (old != LOG_REF_NULL) {
        uint32_t osz = (uint32_t)seg_entry_size(oh->length);
        if (entry_counted(oh)) {
            om->live_bytes -= osz;
            if (oh->type == SEG_ENTRY_TOMBSTONE)
                log_tomb_sub(om->log, old,
                             ((const struct seg_tombstone *)log_entry_body(oh))->segment_id, osz);
            else
                log_live_sub(om->log, old, osz);
        }
        if (oh->type == SEG_ENTRY_OBJECT) {
            tab->bytes -= osz;
            tab->objects--;
        } else if (entry_counted(oh)) {
            rp->tomb_bytes -= osz;
        }
        ht_replace(slot, hash, ref);
    } else {
        int rc = ht_insert(om->ht, hash, ref);
        CRAM_ASSERT(rc == 0);    /* reserved above */
    }
    return CRAM_OK;
}

struct om_tomb_ctx {
    objmgr *om;
    const struct om_tablet *t;
};

/* Remove the replay's tombstones of one tablet from the hash table. */
static bool tomb_visit(void *vctx, log_ref ref, bool *stop)
{
    (void)stop;
    struct om_tomb_ctx *c = vctx;
    const struct seg_entry_hdr *h = log_entry_get(c->om->log, ref);
    if (h->type != SEG_ENTRY_TOMBSTONE)
        return false;
    uint64_t table, version;
    const uint8_t *key;
    uint16_t key_len;
    entry_key(h, &table, &key, &key_len, &version);
    if (table != c->t->table_id)
        return false;
    uint64_t hash = cram_key_hash(table, key, key_len);
    return hash >= c->t->start_hash && hash <= c->t->end_hash;
}

/* The hash-table entry that still refers to exactly this reference. */
static bool ref_match(void *ctx, log_ref ref)
{
    return ref == *(const log_ref *)ctx;
}

void om_replay_end(objmgr *om, struct om_replay *rp, const struct om_tablet *tablets, uint32_t n)
{
    if (!rp->tombs_lost) {
        /* each tombstone recorded is still indexed unless something newer
         * replaced its entry */
        for (uint32_t i = 0; i < rp->ntombs; i++) {
            uint64_t *slot = NULL;
            if (ht_lookup(om->ht, rp->tombs[i].hash, ref_match, &rp->tombs[i].ref, &slot) != LOG_REF_NULL)
                ht_remove(om->ht, slot);
        }
        n = 0;
    }
    free(rp->tombs);
    rp->tombs = NULL;
    rp->ntombs = rp->captombs = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct om_tomb_ctx c = { om, &tablets[i] };
        uint64_t b0 = ht_bucket_index(om->ht, tablets[i].start_hash);
        uint64_t b1 = ht_bucket_index(om->ht, tablets[i].end_hash);
        for (uint64_t b = b0; b <= b1; b++)
            ht_visit_bucket(om->ht, b, tomb_visit, &c);
    }
    rp->ended = true;
    log_safe_version_raise(om->log, rp->max_version);
}

int om_replay_commit(objmgr *om, struct om_replay *rp)
{
    if (rp->committed || rp->nslots == 0) {
        rp->committed = true;
        return 0;
    }
    if (log_side_commit(om->log, rp->slots, rp->nslots) != 0)
        return -1;
    rp->committed = true;
    return 0;
}

void om_replay_abort(objmgr *om, struct om_replay *rp, const struct om_tablet *tablets, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        om_drop_tablet(om, tablets[i].table_id, tablets[i].start_hash, tablets[i].end_hash);
    if (!rp->committed) {
        /* tombstones still in the hash table were dropped above; those
         * om_replay_end took out are still counted live */
        if (rp->ended)
            om->live_bytes -= rp->tomb_bytes;
        /* tombstones of replaced objects were never in the hash table */
        om->live_bytes -= rp->synth_tomb_bytes;
        rp->tomb_bytes = 0;         /* a second abort changes nothing */
        rp->synth_tomb_bytes = 0;
        for (uint32_t i = 0; i < rp->nslots; i++)
            log_side_abort(om->log, rp->slots[i]);
        rp->nslots = 0;
    }
    om_replay_free(rp);
}

void om_replay_free(struct om_replay *rp)
{
    free(rp->tombs);
    rp->tombs = NULL;
    rp->ntombs = rp->captombs = 0;
    free(rp->slots);
    rp->slots = NULL;
    rp->nslots = rp->capslots = 0;
}
