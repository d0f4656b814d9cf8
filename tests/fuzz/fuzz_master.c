/*
 * fuzz_master.c -- the master service as a whole (master_handle), reached
 * the way the network reaches it: each FUZZ_SEP-separated part of the input
 * is one request sent over a real tcp connection (fuzz_rpc.h) to a listener
 * whose handler dispatches like cram-server's (messages shorter than a
 * request header are answered CRAM_REQUEST_FORMAT_ERROR before the service
 * sees them).  The service field is forced to WIRE_SVC_MASTER so no input is
 * spent finding it.
 *
 * The master (8 MiB log, 64 KiB segments, values up to 16 KiB) is enlisted
 * as server 42, owns table 1 whole and the lower half of table 2, holds a
 * few objects, has a server list, and runs the recovery-master side on the
 * same loop (replicas 0) with the bench as its coordinator (which answers
 * RECOVERY_MASTER_FINISHED with OK), so every opcode reaches real state.  State carries
 * over between inputs like a long-running server's.
 *
 * Oracle: no crash, no sanitizer report, no assertion; every request gets
 * a response whose status is a known cram_status (or the connection is
 * closed, which the bench notices and reopens).
 */
#include <stdlib.h>
#include "cram.pb-c.h"
#include "common/serverlist.h"
#include "master/master_service.h"
#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/fuzz_rpc.h"

static struct fuzz_rpc bench;
static master_service *fz_master;

static void fz_on_request(void *arg, tp_rpc *rpc)
{
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    if (req == NULL || len < sizeof(struct wire_req_hdr)) {
        int32_t st = CRAM_REQUEST_FORMAT_ERROR;
        struct iovec iov = { &st, sizeof st };
        tp_rpc_reply(rpc, &iov, 1);
        return;
    }
    struct wire_req_hdr h;
    memcpy(&h, req, sizeof h);
    if (h.service == WIRE_SVC_COORDINATOR) {
        /* the bench is also the coordinator the recovery master reports
         * to (fuzzed requests are forced to WIRE_SVC_MASTER): it agrees */
        int32_t st = CRAM_OK;
        struct iovec iov = { &st, sizeof st };
        tp_rpc_reply(rpc, &iov, 1);
        return;
    }
    master_handle(arg, rpc, req, len);
}

static void fz_take_tablet(uint64_t table, uint64_t start, uint64_t end)
{
    Cram__Tablet t = CRAM__TABLET__INIT;
    t.table_id = table;
    t.start_hash = start;
    t.end_hash = end;
    Cram__TabletOwnership to = CRAM__TABLET_OWNERSHIP__INIT;
    to.tablet = &t;
    uint8_t msg[256];
    struct wire_req_hdr h = { .opcode = WIRE_OP_TAKE_TABLET, .service = WIRE_SVC_MASTER };
    memcpy(msg, &h, sizeof h);
    size_t n = cram__tablet_ownership__pack(&to, msg + sizeof h);
    if (fuzz_rpc_call(&bench, msg, sizeof h + n, NULL, NULL) != CRAM_OK) {
        fprintf(stderr, "fuzz_master: TAKE_TABLET failed\n");
        exit(2);
    }
}

static void fz_write(uint64_t table, const char *key, const char *value)
{
    uint8_t msg[512];
    struct wire_write_req w = { .hdr = { .opcode = WIRE_OP_WRITE, .service = WIRE_SVC_MASTER } };
    w.tgt.target_server_id = 42;
    w.table_id = table;
    w.key_len = (uint16_t)strlen(key);
    w.value_len = (uint32_t)strlen(value);
    memcpy(msg, &w, sizeof w);
    memcpy(msg + sizeof w, key, w.key_len);
    memcpy(msg + sizeof w + w.key_len, value, w.value_len);
    (void)fuzz_rpc_call(&bench, msg, sizeof w + w.key_len + w.value_len, NULL, NULL);
}

static void fz_init(void)
{
    fuzz_quiet();
    char err[256] = "";
    struct master_config cfg = { .memory_bytes = 8u << 20, .segment_bytes = 64u << 10,
                                 .max_value_bytes = 16u << 10 };
    fz_master = master_create(&cfg, err, sizeof err);
    tp_loop *loop = tp_loop_create();
    server_list *sl = sl_create();
    if (fz_master == NULL || loop == NULL || sl == NULL) {
        fprintf(stderr, "fuzz_master: setup failed: %s\n", err);
        exit(2);
    }
    master_set_server_id(fz_master, 42);
    if (master_set_server_list(fz_master, sl) != 0 ||
        master_set_replication(fz_master, loop, 0, 0) != 0) {
        fprintf(stderr, "fuzz_master: setup failed\n");
        exit(2);
    }
    fuzz_rpc_start(&bench, loop, fz_on_request, fz_master);
    master_set_coordinator(fz_master, tp_listener_locator(bench.ls));
    fz_take_tablet(1, 0, UINT64_MAX);
    fz_take_tablet(2, 0, UINT64_MAX / 2);
    fz_write(1, "alpha", "1");
    fz_write(1, "beta", "two");
    fz_write(2, "gamma", "3");
}

static void fz_part(void *arg, const uint8_t *p, size_t n)
{
    (void)arg;
    if (n > WIRE_MAX_MESSAGE)
        return;
    uint8_t *msg = malloc(n ? n : 1);
    if (msg == NULL)
        return;
    memcpy(msg, p, n);
    if (n >= 4) {
        uint16_t svc = WIRE_SVC_MASTER;
        memcpy(msg + 2, &svc, 2);
    }
    int32_t st = fuzz_rpc_call(&bench, msg, n, NULL, NULL);
    /* an answer carries a real status; -1 means none came (connection closed) */
    if (st != -1 && (st < 0 || st > CRAM_STATUS_MAX)) {
        fprintf(stderr, "fuzz_master: response status %d out of range\n", st);
        abort();
    }
    free(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fz_master == NULL)
        fz_init();
    fuzz_split(data, size, fz_part, NULL);
    return 0;
}
