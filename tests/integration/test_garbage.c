/*
 * test_garbage.c -- hostile bytes on a master's and the coordinator's TCP
 * port (raw sockets): random bytes, a header claiming 4 GiB, truncated frames
 * followed by a close, frames with unknown flag bits, and well-framed
 * requests with unknown opcodes/services or truncated bodies.  Each answer is
 * CRAM_REQUEST_FORMAT_ERROR / CRAM_UNIMPLEMENTED_REQUEST or a closed
 * connection, and the process keeps serving clients after every case.
 *
 * TCP frame: 16-byte little-endian header {u32 length; u32 flags (bit 0 =
 * response); u64 rpc_id}, then `length` bytes: struct wire_req_hdr + body.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cram.h"
#include "common/wire.h"
#include "harness.h"

struct frame_hdr {
    uint32_t len;
    uint32_t flags;
    uint64_t rpc_id;
} __attribute__((packed));
_Static_assert(sizeof(struct frame_hdr) == 16, "tcp frame header");

static struct h_cluster C;
static cram_client *cl;
static uint64_t tid;
static int server_port, coord_port;

static int suite_init(void)
{
    if (h_init(&C) != 0 || h_start_cluster(&C, 1) != 0)
        return -1;
    server_port = C.port_base + 1;
    coord_port = C.port_base;
    cl = h_connect(&C);
    if (!cl)
        return -1;
    return cram_create_table(cl, "g", 1, &tid) == CRAM_OK ? 0 : -1;
}

static int suite_clean(void)
{
    cram_disconnect(cl);
    return 0;
}

static int send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int recv_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Send one frame carrying body; read the response frame.  Returns the
 * response status, or -1 if the connection was closed / nothing came. */
static int rpc_raw(int fd, uint64_t rpc_id, const void *body, uint32_t len)
{
    struct frame_hdr h = { .len = len, .flags = 0, .rpc_id = rpc_id };
    if (send_all(fd, &h, sizeof(h)) != 0 || (len && send_all(fd, body, len) != 0))
        return -1;
    struct frame_hdr r;
    if (recv_all(fd, &r, sizeof(r)) != 0)
        return -1;
    CU_ASSERT_EQUAL(r.flags, 1);
    CU_ASSERT_EQUAL(r.rpc_id, rpc_id);
    CU_ASSERT(r.len >= sizeof(struct wire_resp_hdr) && r.len <= WIRE_MAX_MESSAGE);
    if (r.len < sizeof(struct wire_resp_hdr) || r.len > WIRE_MAX_MESSAGE)
        return -1;
    uint8_t *resp = malloc(r.len);
    if (!resp || recv_all(fd, resp, r.len) != 0) {
        free(resp);
        return -1;
    }
    struct wire_resp_hdr rh;
    memcpy(&rh, resp, sizeof(rh));
    free(resp);
    return rh.status;
}

/* 1 if the peer closed the connection (EOF or reset) within the timeout */
static int peer_closed(int fd)
{
    char b[256];
    for (;;) {
        ssize_t n = recv(fd, b, sizeof(b), 0);
        if (n == 0)
            return 1;
        if (n < 0)
            return errno == ECONNRESET || errno == EPIPE;
        /* it may answer before closing; keep reading */
    }
}

/* The process on `port` still serves: a PING on a new connection, and a
 * write + read through the client library. */
static void assert_serving(int port)
{
    int fd = h_tcp_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    struct wire_req_hdr ping = { .opcode = WIRE_OP_PING, .service = WIRE_SVC_PING };
    CU_ASSERT_EQUAL(rpc_raw(fd, 777, &ping, sizeof(ping)), CRAM_OK);
    close(fd);

    static int n;
    char key[32], buf[32];
    uint32_t len = 0;
    int kl = snprintf(key, sizeof(key), "alive-%d", n++);
    CU_ASSERT_EQUAL(cram_write(cl, tid, key, (uint16_t)kl, "yes", 3, NULL, NULL), CRAM_OK);
    CU_ASSERT_EQUAL(cram_read(cl, tid, key, (uint16_t)kl, NULL, NULL, buf, sizeof(buf), &len), CRAM_OK);
    CU_ASSERT_EQUAL(len, 3);
    uint64_t id = 0;
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "g", &id), CRAM_OK);
    CU_ASSERT_EQUAL(id, tid);
}

static void random_bytes(int port)
{
    unsigned seed = 12345;
    for (int round = 0; round < 5; round++) {
        int fd = h_tcp_connect(port);
        CU_ASSERT_FATAL(fd >= 0);
        uint8_t junk[4096];
        for (size_t i = 0; i < sizeof(junk); i++)
            junk[i] = (uint8_t)rand_r(&seed);
        send_all(fd, junk, sizeof(junk));
        if (round % 2 == 0)
            CU_ASSERT(peer_closed(fd));
        close(fd);
    }
    assert_serving(port);
}

static void huge_header(int port)
{
    int fd = h_tcp_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    struct frame_hdr h = { .len = 0xFFFFFFFFu, .flags = 0, .rpc_id = 1 };
    CU_ASSERT_EQUAL(send_all(fd, &h, sizeof(h)), 0);
    CU_ASSERT(peer_closed(fd));
    close(fd);

    fd = h_tcp_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    h.len = WIRE_MAX_MESSAGE + 1;
    CU_ASSERT_EQUAL(send_all(fd, &h, sizeof(h)), 0);
    CU_ASSERT(peer_closed(fd));
    close(fd);
    assert_serving(port);
}

static void truncated_then_close(int port)
{
    /* header only, body promised but never sent */
    int fd = h_tcp_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    struct frame_hdr h = { .len = 100, .flags = 0, .rpc_id = 2 };
    send_all(fd, &h, sizeof(h));
    send_all(fd, "0123456789", 10);
    close(fd);
    /* half a header */
    fd = h_tcp_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    send_all(fd, &h, 7);
    close(fd);
    /* a large frame cut off in the middle */
    fd = h_tcp_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    h.len = 1u << 20;
    send_all(fd, &h, sizeof(h));
    static uint8_t part[300000];
    send_all(fd, part, sizeof(part));
    close(fd);
    assert_serving(port);
}

static void bad_flags(int port)
{
    int fd = h_tcp_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    struct wire_req_hdr ping = { .opcode = WIRE_OP_PING, .service = WIRE_SVC_PING };
    struct frame_hdr h = { .len = sizeof(ping), .flags = 0x80, .rpc_id = 3 };
    send_all(fd, &h, sizeof(h));
    send_all(fd, &ping, sizeof(ping));
    CU_ASSERT(peer_closed(fd));
    close(fd);
    /* a "response" sent to a server */
    fd = h_tcp_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    h.flags = 1;
    send_all(fd, &h, sizeof(h));
    send_all(fd, &ping, sizeof(ping));
    CU_ASSERT(peer_closed(fd));
    close(fd);
    assert_serving(port);
}

static void bad_requests(int port, int is_coord)
{
    int fd = h_tcp_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    uint64_t id = 100;
    int st;

    /* empty frame and a frame shorter than the request header */
    st = rpc_raw(fd, id++, NULL, 0);
    CU_ASSERT(st == CRAM_REQUEST_FORMAT_ERROR);
    st = rpc_raw(fd, id++, "\x01\x00", 2);
    CU_ASSERT(st == CRAM_REQUEST_FORMAT_ERROR);

    /* unknown opcode, the sentinel, unknown service */
    struct wire_req_hdr h = { .opcode = 999, .service = WIRE_SVC_MASTER };
    if (is_coord)
        h.service = WIRE_SVC_COORDINATOR;
    st = rpc_raw(fd, id++, &h, sizeof(h));
    CU_ASSERT(st == CRAM_UNIMPLEMENTED_REQUEST || st == CRAM_REQUEST_FORMAT_ERROR);
    h.opcode = WIRE_OP_ILLEGAL;
    st = rpc_raw(fd, id++, &h, sizeof(h));
    CU_ASSERT(st == CRAM_UNIMPLEMENTED_REQUEST || st == CRAM_REQUEST_FORMAT_ERROR);
    h.opcode = WIRE_OP_READ;
    h.service = 77;
    st = rpc_raw(fd, id++, &h, sizeof(h));
    CU_ASSERT(st == CRAM_UNIMPLEMENTED_REQUEST || st == CRAM_REQUEST_FORMAT_ERROR);

    if (!is_coord) {
        /* READ with a truncated body */
        struct wire_read_req rd;
        memset(&rd, 0, sizeof(rd));
        rd.hdr.opcode = WIRE_OP_READ;
        rd.hdr.service = WIRE_SVC_MASTER;
        rd.table_id = tid;
        rd.key_len = 5;
        st = rpc_raw(fd, id++, &rd, 12);
        CU_ASSERT_EQUAL(st, CRAM_REQUEST_FORMAT_ERROR);
        /* READ whose key_len promises more bytes than the frame has */
        uint8_t buf[sizeof(rd) + 3];
        memcpy(buf, &rd, sizeof(rd));
        memcpy(buf + sizeof(rd), "abc", 3);
        st = rpc_raw(fd, id++, buf, sizeof(buf));
        CU_ASSERT_EQUAL(st, CRAM_REQUEST_FORMAT_ERROR);
        /* READ with key_len 0 */
        rd.key_len = 0;
        st = rpc_raw(fd, id++, &rd, sizeof(rd));
        CU_ASSERT_EQUAL(st, CRAM_REQUEST_FORMAT_ERROR);
        /* reject-rule booleans other than 0/1 */
        rd.key_len = 3;
        rd.rules.exists = 7;
        memcpy(buf, &rd, sizeof(rd));
        st = rpc_raw(fd, id++, buf, sizeof(buf));
        CU_ASSERT_EQUAL(st, CRAM_REQUEST_FORMAT_ERROR);

        /* WRITE whose value_len runs past the end */
        struct wire_write_req wr;
        memset(&wr, 0, sizeof(wr));
        wr.hdr.opcode = WIRE_OP_WRITE;
        wr.hdr.service = WIRE_SVC_MASTER;
        wr.table_id = tid;
        wr.key_len = 1;
        wr.value_len = 0xFFFFFFF0u;
        uint8_t wbuf[sizeof(wr) + 4];
        memcpy(wbuf, &wr, sizeof(wr));
        memcpy(wbuf + sizeof(wr), "kval", 4);
        st = rpc_raw(fd, id++, wbuf, sizeof(wbuf));
        CU_ASSERT_EQUAL(st, CRAM_REQUEST_FORMAT_ERROR);

        /* MULTI_READ with count 0, with a huge count, and with items cut off */
        struct wire_multi_req mr;
        memset(&mr, 0, sizeof(mr));
        mr.hdr.opcode = WIRE_OP_MULTI_READ;
        mr.hdr.service = WIRE_SVC_MASTER;
        st = rpc_raw(fd, id++, &mr, sizeof(mr));
        CU_ASSERT_EQUAL(st, CRAM_REQUEST_FORMAT_ERROR);
        mr.count = 0xFFFFFFFFu;
        st = rpc_raw(fd, id++, &mr, sizeof(mr));
        CU_ASSERT_EQUAL(st, CRAM_REQUEST_FORMAT_ERROR);
        mr.count = 3;
        struct wire_multi_read_item it;
        memset(&it, 0, sizeof(it));
        it.table_id = tid;
        it.key_len = 60000;
        uint8_t mbuf[sizeof(mr) + sizeof(it) + 8];
        memcpy(mbuf, &mr, sizeof(mr));
        memcpy(mbuf + sizeof(mr), &it, sizeof(it));
        memset(mbuf + sizeof(mr) + sizeof(it), 'x', 8);
        st = rpc_raw(fd, id++, mbuf, sizeof(mbuf));
        CU_ASSERT_EQUAL(st, CRAM_REQUEST_FORMAT_ERROR);

        /* ENUMERATE with start > end */
        struct wire_enum_req en;
        memset(&en, 0, sizeof(en));
        en.hdr.opcode = WIRE_OP_ENUMERATE;
        en.hdr.service = WIRE_SVC_MASTER;
        en.table_id = tid;
        en.tablet_start = 100;
        en.tablet_end = 5;
        st = rpc_raw(fd, id++, &en, 20);
        CU_ASSERT_EQUAL(st, CRAM_REQUEST_FORMAT_ERROR);

        /* control plane: TAKE_TABLET with a garbage protobuf body */
        uint8_t tb[sizeof(struct wire_req_hdr) + 16];
        struct wire_req_hdr th = { .opcode = WIRE_OP_TAKE_TABLET, .service = WIRE_SVC_MASTER };
        memcpy(tb, &th, sizeof(th));
        memset(tb + sizeof(th), 0xff, 16);
        st = rpc_raw(fd, id++, tb, sizeof(tb));
        CU_ASSERT_EQUAL(st, CRAM_REQUEST_FORMAT_ERROR);
    } else {
        /* protobuf bodies that do not parse */
        uint16_t ops[] = { WIRE_OP_CREATE_TABLE, WIRE_OP_DROP_TABLE, WIRE_OP_GET_TABLE_ID,
                           WIRE_OP_GET_TABLE_CONFIG, WIRE_OP_ENLIST_SERVER };
        for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
            uint8_t b[sizeof(struct wire_req_hdr) + 16];
            struct wire_req_hdr ch = { .opcode = ops[i], .service = WIRE_SVC_COORDINATOR };
            memcpy(b, &ch, sizeof(ch));
            memset(b + sizeof(ch), 0xff, 16);
            st = rpc_raw(fd, id++, b, sizeof(b));
            if (st != CRAM_REQUEST_FORMAT_ERROR)
                fprintf(stderr, "coordinator opcode %u with garbage body: status %d\n", ops[i], st);
            CU_ASSERT_EQUAL(st, CRAM_REQUEST_FORMAT_ERROR);
        }
        /* data-path opcode sent to the coordinator */
        struct wire_req_hdr dh = { .opcode = WIRE_OP_READ, .service = WIRE_SVC_MASTER };
        st = rpc_raw(fd, id++, &dh, sizeof(dh));
        CU_ASSERT(st == CRAM_UNIMPLEMENTED_REQUEST || st == CRAM_REQUEST_FORMAT_ERROR);
    }

    /* the same connection still works after all of it */
    struct wire_req_hdr ping = { .opcode = WIRE_OP_PING, .service = WIRE_SVC_PING };
    CU_ASSERT_EQUAL(rpc_raw(fd, id++, &ping, sizeof(ping)), CRAM_OK);
    close(fd);
    assert_serving(port);
}

static void test_server_random(void) { random_bytes(server_port); }
static void test_server_huge(void) { huge_header(server_port); }
static void test_server_truncated(void) { truncated_then_close(server_port); }
static void test_server_flags(void) { bad_flags(server_port); }
static void test_server_requests(void) { bad_requests(server_port, 0); }
static void test_coord_random(void) { random_bytes(coord_port); }
static void test_coord_huge(void) { huge_header(coord_port); }
static void test_coord_truncated(void) { truncated_then_close(coord_port); }
static void test_coord_flags(void) { bad_flags(coord_port); }
static void test_coord_requests(void) { bad_requests(coord_port, 1); }

static void test_still_alive(void)
{
    CU_ASSERT(h_alive(&C.coord));
    CU_ASSERT(h_alive(&C.servers[0]));
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("garbage", suite_init, suite_clean);
    CU_add_test(s, "server: random bytes", test_server_random);
    CU_add_test(s, "server: 4 GiB header", test_server_huge);
    CU_add_test(s, "server: truncated frames", test_server_truncated);
    CU_add_test(s, "server: bad flags", test_server_flags);
    CU_add_test(s, "server: malformed requests", test_server_requests);
    CU_add_test(s, "coordinator: random bytes", test_coord_random);
    CU_add_test(s, "coordinator: 4 GiB header", test_coord_huge);
    CU_add_test(s, "coordinator: truncated frames", test_coord_truncated);
    CU_add_test(s, "coordinator: bad flags", test_coord_flags);
    CU_add_test(s, "coordinator: malformed requests", test_coord_requests);
    CU_add_test(s, "processes still alive", test_still_alive);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error() ||
              CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return h_finish(&C, bad);
}
