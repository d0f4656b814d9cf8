/*
 * test_rdma.c -- the rdma: transport end to end (echo of 1 B .. 1 MiB over
 * a listener and a session on one loop).  Where no RDMA device exists (as on
 * the build machine: ibv_get_device_list returns NULL) the echo test SKIPS,
 * printing why; what is checked then is the refusal itself: tp_listen fails
 * with "no RDMA device" in its message and tp_session_open reports
 * CRAM_TRANSPORT_ERROR, so no server can claim an rdma: locator it cannot
 * serve.  Buffer management and flow control are tested in test_rdma_buf.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <CUnit/Basic.h>
#include "transport/rdma.h"
#include "transport/transport.h"

static char why[256];
static int have_device;

static void on_req(void *arg, tp_rpc *rpc)
{
    (void)arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    struct iovec iov = { (void *)req, len };
    tp_rpc_reply(rpc, &iov, 1);
}

static void test_refusal_or_listen(void)
{
    char err[256];
    tp_loop *l = tp_loop_create();
    tp_listener *ls = tp_listen(l, "rdma:host=127.0.0.1,port=0", on_req, NULL, err, sizeof err);
    if (!have_device) {
        CU_ASSERT_PTR_NULL(ls);
        int built = strstr(why, "built without") == NULL;
        /* built: the transport itself refuses; not built: no rdma transport */
        CU_ASSERT_PTR_NOT_NULL(strstr(err, built ? "no RDMA device" : "no transport"));
        printf("\n    listener refused: %s\n", err);
        cram_status st = CRAM_OK;
        tp_session *s = tp_session_open(l, "rdma:host=127.0.0.1,port=24050", &st);
        CU_ASSERT_PTR_NULL(s);
        CU_ASSERT_EQUAL(st, built ? CRAM_TRANSPORT_ERROR : CRAM_INVALID_ARGUMENT);
    } else {
        CU_ASSERT_PTR_NOT_NULL(ls);
        tp_listener_close(ls);
    }
    tp_loop_destroy(l);
}

static void test_echo(void)
{
    if (!have_device) {
        printf("\n    SKIP: %s -- rdma: echo needs an RDMA device (IB, RoCE, iWARP or rxe)\n", why);
        return;
    }
    char err[256];
    tp_loop *l = tp_loop_create();
    tp_listener *ls = tp_listen(l, "rdma:host=127.0.0.1,port=0", on_req, NULL, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ls);
    cram_status st;
    tp_session *s = tp_session_open(l, tp_listener_locator(ls), &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    static const uint32_t sizes[] = { 1, 100, 188, 189, 16360, 16361, 100000, 1u << 20 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint8_t *b = malloc(sizes[i]);
        for (uint32_t k = 0; k < sizes[i]; k++)
            b[k] = (uint8_t)(k * 13 + i);
        struct iovec iov = { b, sizes[i] };
        uint8_t *resp = NULL;
        uint32_t len = 0;
        CU_ASSERT_EQUAL(tp_call(s, &iov, 1, 10000, &resp, &len), CRAM_OK);
        CU_ASSERT_EQUAL(len, sizes[i]);
        CU_ASSERT(resp && memcmp(resp, b, sizes[i]) == 0);
        free(resp);
        free(b);
    }
    tp_session_close(s);
    tp_listener_close(ls);
    tp_loop_destroy(l);
}

int main(void)
{
    have_device = tp_rdma_device_check(why, sizeof why) == 0;
    if (!have_device)
        printf("test_rdma: %s: end-to-end tests SKIP, refusal checked\n", why);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("rdma", NULL, NULL);
    CU_add_test(s, "no device: listen/open refused clearly", test_refusal_or_listen);
    CU_add_test(s, "echo 1 B .. 1 MiB (needs a device)", test_echo);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
