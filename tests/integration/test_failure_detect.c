/*
 * test_failure_detect.c -- failure detection with real processes: servers
 * ping random peers, hint the coordinator, and the coordinator verifies
 * before declaring a crash.
 *
 *  - kill -9 one of 3 servers (several runs, a different victim each time):
 *    in under 1 s (also under ASan: only the fast path -- connection refused
 *    or reset -- is that quick) the coordinator lists it as crashed
 *    (GET_SERVER_LIST and `cram servers`), the two survivors' server lists show
 *    it crashed (their logs), nobody else is declared; the detection times are
 *    printed.
 *  - SIGSTOP a server for 1.5 s (connected but silent: shorter than the
 *    coordinator's 4 s budget for that), twice: it is probed, answers when it
 *    resumes, is never declared crashed and keeps running.
 *  - a server stopped for longer than that budget is declared crashed (not
 *    before the budget), and when it resumes it learns so from the pushed
 *    list and exits with status 1 (no zombie serving).
 *  - 10 s of 3 servers under a busy client load plus a CPU hog: no crash
 *    declarations at all.
 *  - a PING naming a server id is answered CRAM_WRONG_SERVER by any other
 *    server (so a newcomer at a dead server's port never vouches for it).
 */
#include <CUnit/Basic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include "cram.h"
#include "common/wire.h"
#include "harness.h"
#include "transport/transport.h"

#define NSERVERS 3
#define KILL_RUNS 5

static struct h_cluster C;
static cram_client *cl;

static int suite_init(void)
{
    if (h_init(&C) != 0 || h_start_cluster(&C, NSERVERS) != 0)
        return -1;
    cl = h_connect(&C);
    return cl ? 0 : -1;
}

static int suite_clean(void)
{
    cram_disconnect(cl);
    return 0;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* The port of a server's first locator, or -1. */
static int info_port(const cram_server_info *s)
{
    const char *p = strstr(s->locators, "port=");
    return p ? atoi(p + 5) : -1;
}

/* Id of the up server listening on server slot i's port (0 if none). */
static uint64_t up_id_of(int i)
{
    cram_server_info *sv = NULL;
    size_t n = 0;
    uint64_t id = 0;
    if (cram_list_servers(cl, &sv, &n) != CRAM_OK)
        return 0;
    for (size_t k = 0; k < n; k++)
        if (sv[k].status == CRAM_SERVER_UP && info_port(&sv[k]) == C.port_base + 1 + i)
            id = sv[k].server_id;
    cram_free(sv);
    return id;
}

/* Status of server id in the coordinator's list, or -1. */
static int status_of(uint64_t id)
{
    cram_server_info *sv = NULL;
    size_t n = 0;
    int st = -1;
    if (cram_list_servers(cl, &sv, &n) != CRAM_OK)
        return -1;
    for (size_t k = 0; k < n; k++)
        if (sv[k].server_id == id)
            st = (int)sv[k].status;
    cram_free(sv);
    return st;
}

/* Number of entries the coordinator lists as crashed, or -1. */
static int crashed_count(void)
{
    cram_server_info *sv = NULL;
    size_t n = 0;
    if (cram_list_servers(cl, &sv, &n) != CRAM_OK)
        return -1;
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += sv[i].status == CRAM_SERVER_CRASHED;
    cram_free(sv);
    return k;
}

/* 1 if the file contains the text. */
static int file_has(const char *path, const char *text)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char line[1024];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f) != NULL)
        found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

/* Number of lines of the file that contain the text. */
static int file_count(const char *path, const char *text)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, text) != NULL;
    fclose(f);
    return n;
}

/* Wait (scaled) until the file contains the text. */
static int wait_file_has(const char *path, const char *text, uint64_t ms)
{
    uint64_t end = h_now_ms() + h_ms(ms);
    while (h_now_ms() < end) {
        if (file_has(path, text))
            return 1;
        sleep_ms(10);
    }
    return file_has(path, text);
}

/* `cram servers` shows server id with status word `status`. */
static int cli_shows(uint64_t id, const char *status)
{
    char bin[512], out[8192];
    char *argv[] = { (char *)h_bin("cram", bin, sizeof(bin)), "-C", C.zk, "--cluster", C.cluster,
                     "servers", NULL };
    if (h_run(argv, out, sizeof(out), 30000) != 0)
        return 0;
    char want[64];
    snprintf(want, sizeof(want), "%lu ", (unsigned long)id);
    for (char *line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n"))
        if (strncmp(line, want, strlen(want)) == 0 && strstr(line, status) != NULL)
            return 1;
    return 0;
}

/* Status of one PING to slot i's port: with a wire_target body naming
 * `target`, or (target 0) with an empty body. */
static int32_t ping_slot(int i, uint64_t target)
{
    tp_loop *l = tp_loop_create();
    char loc[64];
    snprintf(loc, sizeof(loc), "tcp:host=127.0.0.1,port=%d", C.port_base + 1 + i);
    cram_status st;
    tp_session *s = tp_session_open(l, loc, &st);
    int32_t status = st;
    if (s != NULL) {
        struct {
            struct wire_req_hdr h;
            struct wire_target t;
        } __attribute__((packed)) req = { { .opcode = WIRE_OP_PING, .service = WIRE_SVC_PING }, { target } };
        struct iovec iov = { &req, target ? sizeof(req) : sizeof(req.h) };
        uint8_t *resp = NULL;
        uint32_t len = 0;
        status = tp_call(s, &iov, 1, (uint32_t)h_ms(5000), &resp, &len);
        if (status == CRAM_OK) {
            struct wire_resp_hdr r = { CRAM_INTERNAL_ERROR };
            if (len >= sizeof(r))
                memcpy(&r, resp, sizeof(r));
            status = r.status;
        }
        free(resp);
        tp_session_close(s);
    }
    tp_loop_destroy(l);
    return status;
}

static void test_targeted_ping(void)
{
    CU_ASSERT_EQUAL_FATAL(h_wait_servers(&C, NSERVERS, 30000), 0);
    uint64_t id0 = up_id_of(0), id1 = up_id_of(1);
    CU_ASSERT_FATAL(id0 != 0 && id1 != 0);
    CU_ASSERT_EQUAL(ping_slot(0, 0), CRAM_OK);
    CU_ASSERT_EQUAL(ping_slot(0, id0), CRAM_OK);
    CU_ASSERT_EQUAL(ping_slot(0, id1), CRAM_WRONG_SERVER);
    CU_ASSERT_EQUAL(ping_slot(1, id1), CRAM_OK);
    CU_ASSERT_EQUAL(ping_slot(1, id1 + 1000), CRAM_WRONG_SERVER);
}

static void test_kill9_detected(void)
{
    uint64_t times[KILL_RUNS];
    int nt = 0;
    for (int r = 0; r < KILL_RUNS; r++) {
        CU_ASSERT_EQUAL_FATAL(h_wait_servers(&C, NSERVERS, 30000), 0);
        int victim = r % NSERVERS;
        uint64_t ids[NSERVERS];
        for (int i = 0; i < NSERVERS; i++) {
            ids[i] = up_id_of(i);
            CU_ASSERT_FATAL(ids[i] != 0);
        }
        int before = crashed_count();
        /* let the survivors' lists catch up with the last (re-)enlistment */
        sleep_ms(h_ms(300));

        uint64_t t0 = h_now_ms();
        h_kill(&C.servers[victim], SIGKILL);
        uint64_t deadline = t0 + h_ms(5000);
        int st = -1;
        while (h_now_ms() < deadline && (st = status_of(ids[victim])) != CRAM_SERVER_CRASHED)
            sleep_ms(5);
        uint64_t dt = h_now_ms() - t0;
        CU_ASSERT_EQUAL_FATAL(st, CRAM_SERVER_CRASHED);
        times[nt++] = dt;
        printf("\n    run %d: server %lu (slot %d) killed -> declared crashed in %lu ms",
               r, (unsigned long)ids[victim], victim, (unsigned long)dt);

        /* exactly the victim: the survivors are still up */
        CU_ASSERT_EQUAL(crashed_count(), before + 1);
        char text[96];
        snprintf(text, sizeof(text), "server %lu is crashed", (unsigned long)ids[victim]);
        for (int i = 0; i < NSERVERS; i++) {
            if (i == victim)
                continue;
            CU_ASSERT_EQUAL(status_of(ids[i]), CRAM_SERVER_UP);
            CU_ASSERT(h_alive(&C.servers[i]));
            /* the survivor's own list got the update */
            CU_ASSERT(wait_file_has(C.servers[i].log, text, 2000));
        }
        CU_ASSERT(cli_shows(ids[victim], "crashed"));
        CU_ASSERT(cli_shows(ids[(victim + 1) % NSERVERS], "up"));

        /* a new server at the victim's port for the next run */
        CU_ASSERT_EQUAL_FATAL(h_start_server(&C, victim), 0);
    }
    CU_ASSERT_EQUAL_FATAL(h_wait_servers(&C, NSERVERS, 30000), 0);
    uint64_t lo = UINT64_MAX, hi = 0, sum = 0;
    for (int i = 0; i < nt; i++) {
        lo = times[i] < lo ? times[i] : lo;
        hi = times[i] > hi ? times[i] : hi;
        sum += times[i];
    }
    printf("\n    detection time over %d kill -9 runs: min %lu ms, avg %lu ms, max %lu ms\n    ", nt,
           (unsigned long)lo, (unsigned long)(nt ? sum / (uint64_t)nt : 0), (unsigned long)hi);
    /* the fast path: refused/reset twice, 40 ms (scaled) apart, plus noticing
     * the broken connection and one ZooKeeper write.  Not scaled: the slow
     * path (4 s of silence) could never be this quick, even under ASan. */
    CU_ASSERT(hi < 1000);
    CU_ASSERT(file_count(C.coord.log, "refused or reset") >= nt);
}

static void test_short_stop_not_crash(void)
{
    CU_ASSERT_EQUAL_FATAL(h_wait_servers(&C, NSERVERS, 30000), 0);
    uint64_t id = up_id_of(0);
    CU_ASSERT_FATAL(id != 0);
    int before = crashed_count();
    char answered[64];
    snprintf(answered, sizeof(answered), "server %lu answered probe", (unsigned long)id);
    int answered_before = file_count(C.coord.log, answered);
    for (int k = 0; k < 2; k++) {
        kill(C.servers[0].pid, SIGSTOP);
        sleep_ms(h_ms(1500));      /* peers' pings time out: it is suspected and probed */
        kill(C.servers[0].pid, SIGCONT);
        sleep_ms(h_ms(500));
    }
    sleep_ms(h_ms(500));
    /* it was suspected and verified, and the verification found it alive */
    CU_ASSERT(file_count(C.coord.log, answered) > answered_before);
    CU_ASSERT_EQUAL(status_of(id), CRAM_SERVER_UP);
    CU_ASSERT_EQUAL(crashed_count(), before);
    CU_ASSERT(h_alive(&C.servers[0]));
    char text[64];
    snprintf(text, sizeof(text), "server %lu declared crashed", (unsigned long)id);
    CU_ASSERT(!file_has(C.coord.log, text));
}

static void test_long_stop_exits(void)
{
    CU_ASSERT_EQUAL_FATAL(h_wait_servers(&C, NSERVERS, 30000), 0);
    uint64_t id = up_id_of(1);
    CU_ASSERT_FATAL(id != 0);
    int silent_before = file_count(C.coord.log, "connected, unanswered");
    uint64_t t0 = h_now_ms();
    kill(C.servers[1].pid, SIGSTOP);
    int st = -1;
    while (h_now_ms() < t0 + h_ms(15000) && (st = status_of(id)) != CRAM_SERVER_CRASHED)
        sleep_ms(10);
    uint64_t dt = h_now_ms() - t0;
    CU_ASSERT_EQUAL(st, CRAM_SERVER_CRASHED);
    printf("\n    stopped server %lu declared crashed after %lu ms", (unsigned long)id, (unsigned long)dt);
    /* the slow path: not before the coordinator's silence budget (4 s) */
    CU_ASSERT(dt >= h_ms(4000));
    CU_ASSERT(file_count(C.coord.log, "connected, unanswered") == silent_before + 1);
    kill(C.servers[1].pid, SIGCONT);
    /* it reads the pushed list and exits with status 1 */
    uint64_t end = h_now_ms() + h_ms(5000);
    while (h_alive(&C.servers[1]) && h_now_ms() < end)
        sleep_ms(10);
    CU_ASSERT(!h_alive(&C.servers[1]));
    CU_ASSERT(WIFEXITED(C.servers[1].status) && WEXITSTATUS(C.servers[1].status) == 1);
    CU_ASSERT(file_has(C.servers[1].log, "declared crashed by the coordinator; exiting"));
    C.servers[1].status = 0;        /* expected: not an abnormal exit for h_finish */
    printf("\n    ");
    CU_ASSERT_EQUAL(h_start_server(&C, 1), 0);
    CU_ASSERT_EQUAL(h_wait_servers(&C, NSERVERS, 30000), 0);
}

static void test_no_false_declarations(void)
{
    CU_ASSERT_EQUAL_FATAL(h_wait_servers(&C, NSERVERS, 30000), 0);
    sleep_ms(h_ms(300));
    int before = crashed_count();
    int declared_before = file_count(C.coord.log, "declared crashed");
    uint64_t table = 0;
    CU_ASSERT_EQUAL_FATAL(cram_create_table(cl, "load", NSERVERS, &table), CRAM_OK);

    /* a CPU hog on the side: the 2-core machine is overloaded */
    pid_t hog = fork();
    if (hog == 0) {
        uint64_t end = h_now_ms() + 12000;
        volatile uint64_t x = 0;
        while (h_now_ms() < end)
            for (int i = 0; i < 100000; i++)
                x += (uint64_t)i;
        _exit(0);
    }
    CU_ASSERT_FATAL(hog > 0);

    uint64_t end = h_now_ms() + 10000;
    uint64_t ops = 0, errors = 0;
    char val[100];
    memset(val, 'v', sizeof(val));
    while (h_now_ms() < end) {
        char key[32];
        int kl = snprintf(key, sizeof(key), "k%lu", (unsigned long)(ops % 5000));
        cram_status st = (ops & 1) ? cram_write(cl, table, key, (uint16_t)kl, val, sizeof(val), NULL, NULL)
                                   : cram_read(cl, table, key, (uint16_t)kl, NULL, NULL, val, sizeof(val), NULL);
        if (st != CRAM_OK && st != CRAM_OBJECT_DOESNT_EXIST)
            errors++;
        ops++;
    }
    kill(hog, SIGKILL);
    waitpid(hog, NULL, 0);
    printf("\n    10 s of load: %lu ops, %lu errors\n    ", (unsigned long)ops, (unsigned long)errors);
    CU_ASSERT_EQUAL(errors, 0);
    CU_ASSERT(ops > 1000);
    CU_ASSERT_EQUAL(crashed_count(), before);
    CU_ASSERT_EQUAL(file_count(C.coord.log, "declared crashed"), declared_before);
    for (int i = 0; i < NSERVERS; i++)
        CU_ASSERT(h_alive(&C.servers[i]));
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("failure detection", suite_init, suite_clean);
    CU_add_test(s, "targeted PING: another server's id is WRONG_SERVER", test_targeted_ping);
    CU_add_test(s, "kill -9: declared crashed in bounded time, survivors' lists updated", test_kill9_detected);
    CU_add_test(s, "SIGSTOP 1.5 s (< the silence budget): probed, not declared crashed", test_short_stop_not_crash);
    CU_add_test(s, "long SIGSTOP: declared crashed, exits on resume", test_long_stop_exits);
    CU_add_test(s, "10 s of load: no false declarations", test_no_false_declarations);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return h_finish(&C, bad);
}
