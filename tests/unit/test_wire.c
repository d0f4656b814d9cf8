/* test_wire.c -- master request parsers against valid, truncated, oversized
 * and absurd messages; then the master service end to end over the tcp
 * transport on 127.0.0.1 (ephemeral port).
 *
 * Every message handed to a parser sits in a malloc'ed buffer of exactly its
 * length, so under ASan any read past the end is caught. */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>
#include "cram.pb-c.h"
#include "common/keyhash.h"
#include "common/wire.h"
#include "master/master_service.h"
#include "master/master_wire.h"
#include "master/objmgr.h"
#include "transport/transport.h"

#define MAXV (1u << 20)

/* ---- message builders --------------------------------------------------- */

struct msg {
    uint8_t *p;
    uint32_t len;
};

static void put(struct msg *m, const void *b, size_t n)
{
    m->p = realloc(m->p, m->len + n + 1);
    memcpy(m->p + m->len, b, n);
    m->len += (uint32_t)n;
}

static struct wire_reject_rules rules0(void)
{
    struct wire_reject_rules r;
    memset(&r, 0, sizeof r);
    return r;
}

static struct msg mk_read(uint16_t op, uint64_t table, const char *key)
{
    struct msg m = { 0 };
    struct wire_read_req r;
    memset(&r, 0, sizeof r);
    r.hdr.opcode = op;
    r.hdr.service = WIRE_SVC_MASTER;
    r.table_id = table;
    r.rules = rules0();
    r.key_len = (uint16_t)strlen(key);
    if (op == WIRE_OP_READ) {
        put(&m, &r, sizeof r);
    } else {
        struct wire_remove_req d;
        memset(&d, 0, sizeof d);
        d.hdr = r.hdr;
        d.table_id = table;
        d.key_len = r.key_len;
        put(&m, &d, sizeof d);
    }
    put(&m, key, strlen(key));
    return m;
}

static struct msg mk_write(uint64_t table, const char *key, const void *val, uint32_t vlen)
{
    struct msg m = { 0 };
    struct wire_write_req r;
    memset(&r, 0, sizeof r);
    r.hdr.opcode = WIRE_OP_WRITE;
    r.hdr.service = WIRE_SVC_MASTER;
    r.table_id = table;
    r.key_len = (uint16_t)strlen(key);
    r.value_len = vlen;
    put(&m, &r, sizeof r);
    put(&m, key, strlen(key));
    put(&m, val, vlen);
    return m;
}

static struct msg mk_incr(uint64_t table, const char *key, int64_t delta)
{
    struct msg m = { 0 };
    struct wire_incr_req r;
    memset(&r, 0, sizeof r);
    r.hdr.opcode = WIRE_OP_INCREMENT;
    r.hdr.service = WIRE_SVC_MASTER;
    r.table_id = table;
    r.delta = delta;
    r.key_len = (uint16_t)strlen(key);
    put(&m, &r, sizeof r);
    put(&m, key, strlen(key));
    return m;
}

/* n items "k0".."k<n-1>"; writes carry value "v<i>" */
static struct msg mk_multi(uint16_t op, uint64_t table, uint32_t n)
{
    struct msg m = { 0 };
    struct wire_multi_req h;
    memset(&h, 0, sizeof h);
    h.hdr.opcode = op;
    h.hdr.service = WIRE_SVC_MASTER;
    h.count = n;
    put(&m, &h, sizeof h);
    for (uint32_t i = 0; i < n; i++) {
        char k[16], v[16];
        snprintf(k, sizeof k, "k%u", i);
        snprintf(v, sizeof v, "v%u", i);
        if (op == WIRE_OP_MULTI_WRITE) {
            struct wire_multi_write_item it;
            memset(&it, 0, sizeof it);
            it.table_id = table;
            it.key_len = (uint16_t)strlen(k);
            it.value_len = (uint32_t)strlen(v);
            put(&m, &it, sizeof it);
            put(&m, k, strlen(k));
            put(&m, v, strlen(v));
        } else {
            struct wire_multi_read_item it;
            memset(&it, 0, sizeof it);
            it.table_id = table;
            it.key_len = (uint16_t)strlen(k);
            put(&m, &it, sizeof it);
            put(&m, k, strlen(k));
        }
    }
    return m;
}

static struct msg mk_enum(uint64_t table, uint64_t start, uint64_t end, uint64_t cursor, uint32_t max)
{
    struct msg m = { 0 };
    struct wire_enum_req r;
    memset(&r, 0, sizeof r);
    r.hdr.opcode = WIRE_OP_ENUMERATE;
    r.hdr.service = WIRE_SVC_MASTER;
    r.table_id = table;
    r.tablet_start = start;
    r.tablet_end = end;
    r.cursor = cursor;
    r.max_bytes = max;
    put(&m, &r, sizeof r);
    return m;
}

/* Parse a copy of the first n bytes in an exact-size buffer. */
static cram_status parse_n(const struct msg *m, uint32_t n)
{
    uint8_t *b = malloc(n ? n : 1);
    memcpy(b, m->p, n);
    struct wire_req_hdr h;
    memcpy(&h, m->p, sizeof h);
    cram_status st;
    union {
        struct mw_key_op k;
        struct mw_write w;
        struct mw_incr i;
        struct mw_multi mm;
        struct mw_enum e;
    } u;
    switch (h.opcode) {
    case WIRE_OP_READ:      st = mw_parse_read(b, n, &u.k); break;
    case WIRE_OP_REMOVE:    st = mw_parse_remove(b, n, &u.k); break;
    case WIRE_OP_WRITE:     st = mw_parse_write(b, n, MAXV, &u.w); break;
    case WIRE_OP_INCREMENT: st = mw_parse_incr(b, n, &u.i); break;
    case WIRE_OP_ENUMERATE: st = mw_parse_enum(b, n, &u.e); break;
    default:
        st = mw_parse_multi(b, n, MAXV, &u.mm);
        if (st == CRAM_OK) {     /* walk every item: must stay in bounds */
            struct mw_multi_item it;
            uint32_t cnt = 0;
            while (mw_multi_next(&u.mm, &it) == 0) {
                CU_ASSERT(it.key >= b && it.key + it.key_len <= b + n);
                cnt++;
            }
            CU_ASSERT_EQUAL(cnt, u.mm.count);
        }
        break;
    }
    free(b);
    return st;
}

/* valid parses; every truncation and one trailing byte are format errors */
static void check_msg(struct msg *m)
{
    CU_ASSERT_EQUAL(parse_n(m, m->len), CRAM_OK);
    uint32_t bad = 0;
    for (uint32_t n = 0; n < m->len; n++)
        bad += parse_n(m, n) != CRAM_REQUEST_FORMAT_ERROR;
    CU_ASSERT_EQUAL(bad, 0);
    put(m, "x", 1);
    CU_ASSERT_EQUAL(parse_n(m, m->len), CRAM_REQUEST_FORMAT_ERROR);
    m->len--;
}

static void test_valid_and_truncated(void)
{
    struct msg ms[] = {
        mk_read(WIRE_OP_READ, 5, "hello"),
        mk_read(WIRE_OP_REMOVE, 5, "hello"),
        mk_write(5, "hello", "world", 5),
        mk_write(5, "k", "", 0),
        mk_incr(5, "ctr", -3),
        mk_multi(WIRE_OP_MULTI_READ, 5, 7),
        mk_multi(WIRE_OP_MULTI_WRITE, 5, 7),
        mk_multi(WIRE_OP_MULTI_REMOVE, 5, 7),
        mk_enum(5, 0, UINT64_MAX, 17, 1000),
    };
    for (size_t i = 0; i < sizeof ms / sizeof *ms; i++) {
        check_msg(&ms[i]);
        free(ms[i].p);
    }
    /* parsed fields */
    struct msg w = mk_write(9, "key", "value", 5);
    struct mw_write pw;
    CU_ASSERT_EQUAL_FATAL(mw_parse_write(w.p, w.len, MAXV, &pw), CRAM_OK);
    CU_ASSERT_EQUAL(pw.table_id, 9);
    CU_ASSERT_EQUAL(pw.key_len, 3);
    CU_ASSERT_EQUAL(memcmp(pw.key, "key", 3), 0);
    CU_ASSERT_EQUAL(pw.value_len, 5);
    CU_ASSERT_EQUAL(memcmp(pw.value, "value", 5), 0);
    /* value over the server's limit */
    CU_ASSERT_EQUAL(mw_parse_write(w.p, w.len, 4, &pw), CRAM_REQUEST_TOO_LARGE);
    free(w.p);
}

static void test_absurd_lengths(void)
{
    /* key_len says 65535 but 5 bytes follow */
    struct msg r = mk_read(WIRE_OP_READ, 1, "hello");
    struct wire_read_req rr;
    memcpy(&rr, r.p, sizeof rr);
    rr.key_len = 65535;
    memcpy(r.p, &rr, sizeof rr);
    CU_ASSERT_EQUAL(parse_n(&r, r.len), CRAM_REQUEST_FORMAT_ERROR);
    rr.key_len = 0;
    memcpy(r.p, &rr, sizeof rr);
    CU_ASSERT_EQUAL(parse_n(&r, r.len), CRAM_REQUEST_FORMAT_ERROR);
    /* bad booleans */
    rr.key_len = 5;
    rr.rules.exists = 2;
    memcpy(r.p, &rr, sizeof rr);
    CU_ASSERT_EQUAL(parse_n(&r, r.len), CRAM_REQUEST_FORMAT_ERROR);
    rr.rules.exists = 1;
    rr.rules.version_ne_given = 0xff;
    memcpy(r.p, &rr, sizeof rr);
    CU_ASSERT_EQUAL(parse_n(&r, r.len), CRAM_REQUEST_FORMAT_ERROR);
    rr.rules.version_ne_given = 1;
    memcpy(r.p, &rr, sizeof rr);
    CU_ASSERT_EQUAL(parse_n(&r, r.len), CRAM_OK);
    /* wrong opcode for the parser */
    struct mw_key_op ko;
    rr.hdr.opcode = WIRE_OP_WRITE;
    memcpy(r.p, &rr, sizeof rr);
    CU_ASSERT_EQUAL(mw_parse_read(r.p, r.len, &ko), CRAM_REQUEST_FORMAT_ERROR);
    free(r.p);

    /* value_len near 2^32: key_len + value_len must not wrap */
    struct msg w = mk_write(1, "k", "v", 1);
    struct wire_write_req wr;
    memcpy(&wr, w.p, sizeof wr);
    wr.value_len = UINT32_MAX;
    memcpy(w.p, &wr, sizeof wr);
    CU_ASSERT_EQUAL(parse_n(&w, w.len), CRAM_REQUEST_FORMAT_ERROR);
    wr.value_len = UINT32_MAX - 64;
    wr.key_len = 65535;
    memcpy(w.p, &wr, sizeof wr);
    CU_ASSERT_EQUAL(parse_n(&w, w.len), CRAM_REQUEST_FORMAT_ERROR);
    free(w.p);

    /* multi: count 0, count > max, count larger than the items present */
    struct msg mm = mk_multi(WIRE_OP_MULTI_READ, 1, 3);
    struct wire_multi_req h;
    memcpy(&h, mm.p, sizeof h);
    uint32_t counts[] = { 0, 4, 2, WIRE_MAX_MULTI + 1, UINT32_MAX };
    for (size_t i = 0; i < sizeof counts / sizeof *counts; i++) {
        h.count = counts[i];
        memcpy(mm.p, &h, sizeof h);
        CU_ASSERT_EQUAL(parse_n(&mm, mm.len), CRAM_REQUEST_FORMAT_ERROR);
    }
    h.count = 3;
    memcpy(mm.p, &h, sizeof h);
    CU_ASSERT_EQUAL(parse_n(&mm, mm.len), CRAM_OK);
    /* an item with key_len 0, or absurd key_len */
    struct wire_multi_read_item it;
    memcpy(&it, mm.p + sizeof h, sizeof it);
    uint16_t kls[] = { 0, 65535, 3 };
    for (size_t i = 0; i < 3; i++) {
        it.key_len = kls[i];
        memcpy(mm.p + sizeof h, &it, sizeof it);
        CU_ASSERT_EQUAL(parse_n(&mm, mm.len), CRAM_REQUEST_FORMAT_ERROR);
    }
    it.key_len = 2;
    it.rules.doesnt_exist = 7;
    memcpy(mm.p + sizeof h, &it, sizeof it);
    CU_ASSERT_EQUAL(parse_n(&mm, mm.len), CRAM_REQUEST_FORMAT_ERROR);
    /* other opcode in a multi header */
    it.rules.doesnt_exist = 0;
    memcpy(mm.p + sizeof h, &it, sizeof it);
    h.hdr.opcode = WIRE_OP_READ;
    memcpy(mm.p, &h, sizeof h);
    struct mw_multi pm;
    CU_ASSERT_EQUAL(mw_parse_multi(mm.p, mm.len, MAXV, &pm), CRAM_REQUEST_FORMAT_ERROR);
    free(mm.p);

    /* multi-write: huge value_len in an item; oversize value is per item */
    struct msg mw = mk_multi(WIRE_OP_MULTI_WRITE, 1, 2);
    struct wire_multi_write_item wi;
    memcpy(&wi, mw.p + sizeof h, sizeof wi);
    wi.value_len = UINT32_MAX;
    memcpy(mw.p + sizeof h, &wi, sizeof wi);
    CU_ASSERT_EQUAL(parse_n(&mw, mw.len), CRAM_REQUEST_FORMAT_ERROR);
    wi.value_len = 2;
    memcpy(mw.p + sizeof h, &wi, sizeof wi);
    CU_ASSERT_EQUAL_FATAL(mw_parse_multi(mw.p, mw.len, 1, &pm), CRAM_OK);
    struct mw_multi_item mi;
    CU_ASSERT_EQUAL(mw_multi_next(&pm, &mi), 0);
    CU_ASSERT_EQUAL(mi.status, CRAM_REQUEST_TOO_LARGE);
    free(mw.p);

    /* enumerate: start > end */
    struct msg e = mk_enum(1, 10, 9, 0, 0);
    CU_ASSERT_EQUAL(parse_n(&e, e.len), CRAM_REQUEST_FORMAT_ERROR);
    free(e.p);
    /* NULL buffers */
    CU_ASSERT_EQUAL(mw_parse_read(NULL, 0, &ko), CRAM_REQUEST_FORMAT_ERROR);
}

/* Random garbage of every length: never a crash, never an OK with bounds broken. */
static void test_garbage(void)
{
    uint64_t x = 88172645463325252ull;
    uint16_t ops[] = { WIRE_OP_READ, WIRE_OP_WRITE, WIRE_OP_REMOVE, WIRE_OP_INCREMENT,
                       WIRE_OP_MULTI_READ, WIRE_OP_MULTI_WRITE, WIRE_OP_MULTI_REMOVE, WIRE_OP_ENUMERATE };
    for (int round = 0; round < 20000; round++) {
        struct msg m = { 0 };
        uint32_t n = (uint32_t)(round % 200) + 8;
        m.p = malloc(n);
        m.len = n;
        for (uint32_t i = 0; i < n; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            m.p[i] = (uint8_t)(x & 3 ? x & 0x07 : x >> 8);   /* small numbers: lengths hit often */
        }
        uint16_t op = ops[round % 8];
        memcpy(m.p, &op, 2);
        (void)parse_n(&m, m.len);
        free(m.p);
    }
}

/* ---- the service over tcp ----------------------------------------------- */

static tp_loop *loop;
static master_service *ms;
static tp_session *sess;
static tp_listener *lsn;

static void srv_handle(void *arg, tp_rpc *rpc)
{
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    master_handle(arg, rpc, req, len);
}

static uint8_t *call(const struct msg *m, uint32_t *len)
{
    struct iovec iov = { m->p, m->len };
    uint8_t *resp = NULL;
    cram_status st = tp_call(sess, &iov, 1, 5000, &resp, len);
    CU_ASSERT_EQUAL(st, CRAM_OK);
    return resp;
}

static int32_t call_status(const struct msg *m)
{
    uint32_t len = 0;
    uint8_t *r = call(m, &len);
    int32_t s = -1;
    if (r != NULL && len >= 4)
        memcpy(&s, r, 4);
    free(r);
    return s;
}

static struct msg pb_msg(uint16_t op, const ProtobufCMessage *pm)
{
    struct msg m = { 0 };
    struct wire_req_hdr h = { .opcode = op, .service = WIRE_SVC_MASTER, .flags = 0 };
    put(&m, &h, sizeof h);
    if (pm != NULL) {
        size_t n = protobuf_c_message_get_packed_size(pm);
        uint8_t *b = malloc(n + 1);
        protobuf_c_message_pack(pm, b);
        put(&m, b, n);
        free(b);
    }
    return m;
}

static int32_t take_tablet(uint16_t op, uint64_t table, uint64_t s, uint64_t e)
{
    Cram__Tablet t = CRAM__TABLET__INIT;
    t.table_id = table;
    t.start_hash = s;
    t.end_hash = e;
    Cram__TabletOwnership to = CRAM__TABLET_OWNERSHIP__INIT;
    to.tablet = &t;
    struct msg m = pb_msg(op, &to.base);
    int32_t st = call_status(&m);
    free(m.p);
    return st;
}

static void test_service(void)
{
    char err[256];
    struct master_config cfg = { .memory_bytes = 64ull << 20, .segment_bytes = 1u << 20 };
    ms = master_create(&cfg, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ms);
    loop = tp_loop_create();
    CU_ASSERT_PTR_NOT_NULL_FATAL(loop);
    lsn = tp_listen(loop, "tcp:host=127.0.0.1,port=0", srv_handle, ms, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(lsn);
    cram_status st;
    sess = tp_session_open(loop, tp_listener_locator(lsn), &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sess);

    /* not enlisted: RETRY */
    struct msg w = mk_write(3, "a", "one", 3);
    CU_ASSERT_EQUAL(call_status(&w), CRAM_RETRY);
    master_set_server_id(ms, 42);
    CU_ASSERT_EQUAL(call_status(&w), CRAM_UNKNOWN_TABLET);
    CU_ASSERT_EQUAL(take_tablet(WIRE_OP_TAKE_TABLET, 3, 0, UINT64_MAX), CRAM_OK);
    uint32_t len;
    uint8_t *r = call(&w, &len);
    struct wire_write_resp wr;
    CU_ASSERT_EQUAL_FATAL(len, sizeof wr);
    memcpy(&wr, r, sizeof wr);
    CU_ASSERT_EQUAL(wr.hdr.status, CRAM_OK);
    CU_ASSERT_EQUAL(wr.version, 1);
    free(r);
    /* wrong server */
    struct wire_write_req wq;
    memcpy(&wq, w.p, sizeof wq);
    wq.tgt.target_server_id = 41;
    memcpy(w.p, &wq, sizeof wq);
    CU_ASSERT_EQUAL(call_status(&w), CRAM_WRONG_SERVER);
    wq.tgt.target_server_id = 42;
    memcpy(w.p, &wq, sizeof wq);
    CU_ASSERT_EQUAL(call_status(&w), CRAM_OK);
    free(w.p);

    /* read */
    struct msg rd = mk_read(WIRE_OP_READ, 3, "a");
    r = call(&rd, &len);
    struct wire_read_resp rr;
    CU_ASSERT_EQUAL_FATAL(len, sizeof rr + 3);
    memcpy(&rr, r, sizeof rr);
    CU_ASSERT_EQUAL(rr.hdr.status, CRAM_OK);
    CU_ASSERT_EQUAL(rr.version, 2);
    CU_ASSERT_EQUAL(rr.value_len, 3);
    CU_ASSERT_EQUAL(memcmp(r + sizeof rr, "one", 3), 0);
    free(r);
    free(rd.p);
    struct msg rd2 = mk_read(WIRE_OP_READ, 3, "missing");
    CU_ASSERT_EQUAL(call_status(&rd2), CRAM_OBJECT_DOESNT_EXIST);
    free(rd2.p);

    /* increment */
    struct msg in = mk_incr(3, "ctr", 5);
    r = call(&in, &len);
    struct wire_incr_resp ir;
    CU_ASSERT_EQUAL_FATAL(len, sizeof ir);
    memcpy(&ir, r, sizeof ir);
    CU_ASSERT_EQUAL(ir.hdr.status, CRAM_OK);
    CU_ASSERT_EQUAL(ir.new_value, 5);
    free(r);
    free(in.p);

    /* multi-write then multi-read then multi-remove */
    struct msg mw = mk_multi(WIRE_OP_MULTI_WRITE, 3, 50);
    r = call(&mw, &len);
    struct wire_multi_resp mh;
    CU_ASSERT_EQUAL_FATAL(len, sizeof mh + 50 * sizeof(struct wire_multi_resp_item));
    memcpy(&mh, r, sizeof mh);
    CU_ASSERT_EQUAL(mh.hdr.status, CRAM_OK);
    CU_ASSERT_EQUAL(mh.count, 50);
    free(r);
    free(mw.p);
    struct msg mr = mk_multi(WIRE_OP_MULTI_READ, 3, 50);
    r = call(&mr, &len);
    memcpy(&mh, r, sizeof mh);
    CU_ASSERT_EQUAL(mh.count, 50);
    size_t off = sizeof mh;
    int ok = 1;
    for (uint32_t i = 0; i < 50 && off + sizeof(struct wire_multi_resp_item) <= len; i++) {
        struct wire_multi_resp_item it;
        memcpy(&it, r + off, sizeof it);
        off += sizeof it;
        char v[16];
        snprintf(v, sizeof v, "v%u", i);
        ok &= it.status == CRAM_OK && it.value_len == strlen(v) && off + it.value_len <= len &&
              memcmp(r + off, v, it.value_len) == 0;
        off += it.value_len;
    }
    CU_ASSERT(ok);
    CU_ASSERT_EQUAL(off, len);
    free(r);
    free(mr.p);

    /* enumerate everything in pages of ~100 bytes */
    uint64_t cursor = 0;
    uint32_t total = 0;
    for (int calls = 0; calls < 1000; calls++) {
        struct msg e = mk_enum(3, 0, UINT64_MAX, cursor, 100);
        r = call(&e, &len);
        free(e.p);
        struct wire_enum_resp eh;
        CU_ASSERT_FATAL(len >= sizeof eh);
        memcpy(&eh, r, sizeof eh);
        CU_ASSERT_EQUAL_FATAL(eh.hdr.status, CRAM_OK);
        total += eh.count;
        cursor = eh.next_cursor;
        free(r);
        if (eh.done)
            break;
    }
    CU_ASSERT_EQUAL(total, 52);   /* a, ctr, k0..k49 */

    /* a multi-read whose values exceed one message: the tail gets RETRY */
    {
        objmgr *om = master_objmgr(ms);
        uint32_t big = 400 * 1024;
        char *val = calloc(1, big);
        uint64_t v;
        for (int i = 0; i < 8; i++) {
            char k[16];
            snprintf(k, sizeof k, "k%d", i);
            val[0] = (char)i;
            CU_ASSERT_EQUAL(om_write(om, 3, k, (uint16_t)strlen(k), val, big, NULL, &v), CRAM_OK);
        }
        free(val);
        struct msg bm = mk_multi(WIRE_OP_MULTI_READ, 3, 8);
        r = call(&bm, &len);
        free(bm.p);
        CU_ASSERT(len <= WIRE_MAX_MESSAGE);
        off = sizeof mh;
        int nok = 0, nretry = 0;
        for (uint32_t i = 0; i < 8 && off + sizeof(struct wire_multi_resp_item) <= len; i++) {
            struct wire_multi_resp_item it;
            memcpy(&it, r + off, sizeof it);
            off += sizeof it;
            if (it.status == CRAM_OK) {
                CU_ASSERT_EQUAL(it.value_len, big);
                CU_ASSERT_EQUAL(r[off], (uint8_t)i);
                CU_ASSERT_EQUAL(nretry, 0);     /* OKs first, then RETRYs */
                nok++;
            } else {
                CU_ASSERT_EQUAL(it.status, CRAM_RETRY);
                CU_ASSERT_EQUAL(it.value_len, 0);
                nretry++;
            }
            off += it.value_len;
        }
        CU_ASSERT_EQUAL(off, len);
        CU_ASSERT_EQUAL(nok, 5);
        CU_ASSERT_EQUAL(nretry, 3);
        free(r);
    }

    struct msg mrm = mk_multi(WIRE_OP_MULTI_REMOVE, 3, 50);
    CU_ASSERT_EQUAL(call_status(&mrm), CRAM_OK);
    free(mrm.p);

    /* stats */
    struct msg sm = pb_msg(WIRE_OP_GET_SERVER_STATS, NULL);
    r = call(&sm, &len);
    free(sm.p);
    CU_ASSERT_FATAL(len >= 4);
    Cram__ServerStats *ss = cram__server_stats__unpack(NULL, len - 4, r + 4);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ss);
    CU_ASSERT_EQUAL(ss->server_id, 42);
    CU_ASSERT_EQUAL(ss->objects, 2);
    CU_ASSERT_EQUAL(ss->tablets, 1);
    CU_ASSERT_EQUAL(ss->segment_bytes, 1u << 20);
    CU_ASSERT_EQUAL(ss->removes, 50);
    cram__server_stats__free_unpacked(ss, NULL);
    free(r);

    /* server list update */
    Cram__ServerList sl = CRAM__SERVER_LIST__INIT;
    sl.version = 9;
    struct msg slm = pb_msg(WIRE_OP_SERVER_LIST_UPDATE, &sl.base);
    CU_ASSERT_EQUAL(call_status(&slm), CRAM_OK);
    free(slm.p);
    CU_ASSERT_EQUAL(master_server_list_version(ms), 9);

    /* malformed and unknown */
    struct msg bad = pb_msg(WIRE_OP_TAKE_TABLET, NULL);
    put(&bad, "\xff\xff\xff", 3);
    CU_ASSERT_EQUAL(call_status(&bad), CRAM_REQUEST_FORMAT_ERROR);
    free(bad.p);
    struct msg unk = pb_msg(99, NULL);
    CU_ASSERT_EQUAL(call_status(&unk), CRAM_UNIMPLEMENTED_REQUEST);
    free(unk.p);
    struct msg trunc = mk_read(WIRE_OP_READ, 3, "abc");
    trunc.len -= 1;
    CU_ASSERT_EQUAL(call_status(&trunc), CRAM_REQUEST_FORMAT_ERROR);
    free(trunc.p);

    /* hostile messages through the whole service: every one gets a status */
    {
        uint64_t x = 0x9e3779b97f4a7c15ull;
        int answered = 0;
        for (int round = 0; round < 3000; round++) {
            struct msg g = { 0 };
            uint32_t n = 8 + (uint32_t)(round % 300);
            g.p = malloc(n);
            g.len = n;
            for (uint32_t i = 0; i < n; i++) {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                g.p[i] = (uint8_t)(x & 3 ? x & 0x07 : x >> 8);
            }
            struct wire_req_hdr gh = { .opcode = (uint16_t)(20 + round % 19), .service = WIRE_SVC_MASTER };
            memcpy(g.p, &gh, sizeof gh);
            if (round % 3 == 0 && n >= 16)     /* aim at this server */
                memcpy(g.p + 8, &(uint64_t){ 42 }, 8);
            int32_t gs = call_status(&g);
            answered += gs >= 0 && gs <= CRAM_STATUS_MAX;
            free(g.p);
        }
        CU_ASSERT_EQUAL(answered, 3000);
        /* and the server still serves */
        struct msg rd4 = mk_read(WIRE_OP_READ, 3, "a");
        CU_ASSERT_EQUAL(call_status(&rd4), CRAM_OK);
        free(rd4.p);
    }

    /* drop tablet: objects gone, requests get UNKNOWN_TABLET */
    CU_ASSERT_EQUAL(take_tablet(WIRE_OP_DROP_TABLET, 3, 0, UINT64_MAX), CRAM_OK);
    CU_ASSERT_EQUAL(ht_count(om_hashtable(master_objmgr(ms))), 0);
    struct msg rd3 = mk_read(WIRE_OP_READ, 3, "a");
    CU_ASSERT_EQUAL(call_status(&rd3), CRAM_UNKNOWN_TABLET);
    free(rd3.p);

    tp_session_close(sess);
    tp_listener_close(lsn);
    tp_loop_destroy(loop);
    master_destroy(ms);
}

/* config validation */
static void test_config(void)
{
    char err[256];
    struct master_config c = { .memory_bytes = 8u << 20, .segment_bytes = 1u << 20,
                               .max_value_bytes = (1u << 20) };
    CU_ASSERT_PTR_NULL(master_create(&c, err, sizeof err));
    c.segment_bytes = 1000;
    c.max_value_bytes = 0;
    CU_ASSERT_PTR_NULL(master_create(&c, err, sizeof err));
    c.segment_bytes = 64 * 1024;
    master_service *m = master_create(&c, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL(m);
    CU_ASSERT_EQUAL(om_max_value_bytes(master_objmgr(m)), 32 * 1024);
    master_destroy(m);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("master wire", NULL, NULL);
    CU_add_test(s, "valid, truncated, trailing", test_valid_and_truncated);
    CU_add_test(s, "absurd lengths and counts", test_absurd_lengths);
    CU_add_test(s, "garbage", test_garbage);
    CU_add_test(s, "config", test_config);
    CU_add_test(s, "service over tcp", test_service);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
