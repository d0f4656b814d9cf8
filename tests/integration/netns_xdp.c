/*
 * netns_xdp.c -- the xdp: transport between network namespaces (root only).
 *
 * scripts/netns.sh makes 4 namespaces on a bridge (unique names per run,
 * removed at exit, also on failure or a signal).  This program re-executes
 * itself inside them as echo servers ("--serve"):
 *   ns1  xdp + tcp listeners, blocking (poll_us 0)
 *   ns3  xdp listener with the seeded fault hook: 1% loss + 1% reordering
 *        of everything it receives and sends
 *   ns4  xdp + tcp listeners, spinning (poll_us 1 s)
 * and runs the client side itself in ns2 (setns).
 *
 * The servers remember every request tag they executed and answer "DUP!"
 * to a second execution, so exactly-once is checked end to end.
 * Without root (or without AF_XDP support in the build) it skips, saying so.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <CUnit/Basic.h>
#include "common/clock.h"
#include "transport/transport.h"
#include "transport/xdp.h"

/* CRAM_HAVE_XDP is not visible here (it is a flag of the transport objects),
 * so the transport's presence is found at run time: weak references are
 * NULL when xdp.c was built empty. */
#pragma weak tp_xdp_session_stats
#pragma weak tp_xdp_listener_stats

#define NNS 4
#define XPORT 24001
#define TPORT 24002

static char prefix[64];
static char netns_sh[1024];
static char ips[NNS + 1][64];
static pid_t srv_pid[NNS + 1];
static char srv_loc[NNS + 1][512];
static char srv_tcp[NNS + 1][512];
static int netns_up;
static char self_exe[1024];
static int root_ns_fd = -1;            /* the namespace we started in: clean up from there */

/* ---- server mode ---------------------------------------------------------- */

#define SEEN_BITS (1u << 22)
static uint8_t *seen;                   /* executed request tags (low 22 bits) */
static tp_listener *srv_ls[2];

static void serve_req(void *arg, tp_rpc *rpc)
{
    (void)arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    if (len >= 4 && memcmp(req, "STAT", 4) == 0) {
        char out[512] = "no-xdp";
        struct tp_xdp_stats s;
        if (tp_xdp_listener_stats && tp_xdp_listener_stats(srv_ls[0], &s) == 0)
            snprintf(out, sizeof out, "drops=%llu reorders=%llu retx=%llu fast=%llu dup=%llu mode=%s",
                     (unsigned long long)s.fault_drops, (unsigned long long)s.fault_reorders,
                     (unsigned long long)s.proto.retransmits, (unsigned long long)s.proto.fast_retransmits,
                     (unsigned long long)s.proto.dup_in, s.mode);
        struct iovec iov = { out, strlen(out) };
        tp_rpc_reply(rpc, &iov, 1);
        return;
    }
    if (len >= 8) {
        uint64_t tag;
        memcpy(&tag, req, 8);
        uint32_t t = (uint32_t)(tag % SEEN_BITS);
        if (seen[t / 8] & (1u << (t % 8))) {
            struct iovec iov = { "DUP!", 4 };
            tp_rpc_reply(rpc, &iov, 1);
            return;
        }
        seen[t / 8] |= (uint8_t)(1u << (t % 8));
    }
    struct iovec iov = { (void *)req, len };
    tp_rpc_reply(rpc, &iov, 1);
}

/* --serve XDPLOC TCPLOC|- POLL_US: print "READY <xdp locator> <tcp locator>". */
static int serve(char **argv)
{
    char err[256];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    seen = calloc(SEEN_BITS / 8, 1);
    tp_loop *l = tp_loop_create();
    tp_loop_set_poll_us(l, (uint32_t)strtoul(argv[4], NULL, 10));
    srv_ls[0] = tp_listen(l, argv[2], serve_req, NULL, err, sizeof err);
    if (srv_ls[0] == NULL) {
        printf("FAIL %s\n", err);
        fflush(stdout);
        return 1;
    }
    if (strcmp(argv[3], "-") != 0) {
        srv_ls[1] = tp_listen(l, argv[3], serve_req, NULL, err, sizeof err);
        if (srv_ls[1] == NULL) {
            printf("FAIL %s\n", err);
            fflush(stdout);
            return 1;
        }
    }
    printf("READY %s %s\n", tp_listener_locator(srv_ls[0]),
           srv_ls[1] ? tp_listener_locator(srv_ls[1]) : "-");
    fflush(stdout);
    for (;;)
        tp_loop_poll(l, -1);
}

/* ---- set-up and clean-up ------------------------------------------------- */

static void cleanup(void)
{
    for (int i = 1; i <= NNS; i++)
        if (srv_pid[i] > 0) {
            kill(srv_pid[i], SIGKILL);
            waitpid(srv_pid[i], NULL, 0);
            srv_pid[i] = 0;
        }
    if (netns_up) {
        char cmd[1400];
        if (root_ns_fd >= 0 && setns(root_ns_fd, CLONE_NEWNET) != 0)
            perror("test_xdp: setns back");
        snprintf(cmd, sizeof cmd, "bash %s down %d --prefix %s >/dev/null 2>&1", netns_sh, NNS, prefix);
        if (system(cmd) != 0)
            fprintf(stderr, "test_xdp: netns.sh down failed\n");
        netns_up = 0;
    }
}

static void on_signal(int sig)
{
    cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

static int netns_setup(void)
{
    char cmd[1400], line[256];
    snprintf(prefix, sizeof prefix, "cramx%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "bash %s up %d --prefix %s", netns_sh, NNS, prefix);
    netns_up = 1;                       /* down is safe even if up half-failed */
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    while (fgets(line, sizeof line, p)) {
        int i;
        char v[64];
        if (sscanf(line, "IP%d=%63s", &i, v) == 2 && i >= 1 && i <= NNS)
            snprintf(ips[i], sizeof ips[i], "%s", v);
    }
    if (pclose(p) != 0)
        return -1;
    for (int i = 1; i <= NNS; i++)
        if (ips[i][0] == '\0')
            return -1;
    return 0;
}

/* Start this program as a server in namespace i. */
static int start_server(int i, int tcp, const char *poll_us, const char *fault)
{
    char ns[96], xloc[128], tloc[128];
    int fds[2];
    snprintf(ns, sizeof ns, "%s-%d", prefix, i);
    snprintf(xloc, sizeof xloc, "xdp:host=%s,port=%d", ips[i], XPORT);
    if (tcp)
        snprintf(tloc, sizeof tloc, "tcp:host=%s,port=%d", ips[i], TPORT);
    else
        snprintf(tloc, sizeof tloc, "-");
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        if (fault)
            setenv("CRAM_XDP_FAULT", fault, 1);
        else
            unsetenv("CRAM_XDP_FAULT");
        execlp("ip", "ip", "netns", "exec", ns, self_exe, "--serve", xloc, tloc, poll_us,
               (char *)NULL);
        _exit(127);
    }
    srv_pid[i] = pid;
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[1200] = "";
    if (fgets(line, sizeof line, f) == NULL || sscanf(line, "READY %511s %511s", srv_loc[i], srv_tcp[i]) != 2) {
        fprintf(stderr, "test_xdp: server %d did not start: %s\n", i, line);
        fclose(f);
        return -1;
    }
    fclose(f);
    return 0;
}

static int enter_ns(int i)
{
    char path[160];
    snprintf(path, sizeof path, "/run/netns/%s-%d", prefix, i);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = setns(fd, CLONE_NEWNET);
    close(fd);
    return rc;
}

/* ---- client helpers ------------------------------------------------------ */

static tp_loop *loop;
static uint64_t run_tag;                /* tags: run_tag + sequence, distinct per call */

struct rpc_res {
    int calls;
    cram_status st;
    uint32_t len;
    int ok;                             /* response == request */
    const uint8_t *req;
    uint32_t req_len;
};

static void on_resp(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct rpc_res *r = arg;
    r->calls++;
    r->st = st;
    r->len = len;
    r->ok = st == CRAM_OK && len == r->req_len && (len == 0 || memcmp(resp, r->req, len) == 0);
}

static uint8_t *make_req(uint32_t len)
{
    uint8_t *b = malloc(len < 8 ? 8 : len);
    for (uint32_t i = 0; i < len; i++)
        b[i] = (uint8_t)(i * 151u + (i >> 10) + len);
    uint64_t tag = run_tag++;
    memcpy(b, &tag, len < 8 ? len : 8);
    return b;
}

/* n echo RPCs of sizes[] over s, at most window in flight.  Returns the
 * number that did not complete exactly once with the right bytes. */
static int echo_batch(tp_session *s, const uint32_t *sizes, int n, int window, uint32_t timeout_ms)
{
    struct rpc_res *r = calloc((size_t)n, sizeof *r);
    uint8_t **req = calloc((size_t)n, sizeof *req);
    int next = 0, bad = 0;
    uint64_t end = clock_mono_ms() + 120000;
    for (;;) {
        int inflight = 0, done = 0;
        for (int i = 0; i < next; i++) {
            if (r[i].calls == 0)
                inflight++;
            else
                done++;
        }
        if (done == n || clock_mono_ms() > end)
            break;
        while (next < n && inflight < window) {
            req[next] = make_req(sizes[next]);
            r[next].req = req[next];
            r[next].req_len = sizes[next];
            struct iovec iov = { req[next], sizes[next] };
            CU_ASSERT_EQUAL(tp_send(s, &iov, 1, timeout_ms, on_resp, &r[next]), CRAM_OK);
            next++;
            inflight++;
        }
        tp_loop_poll(loop, 100);
    }
    for (int i = 0; i < n; i++) {
        if (r[i].calls != 1 || !r[i].ok) {
            if (bad < 5)
                fprintf(stderr, "rpc %d (%u B): calls %d st %s len %u ok %d\n", i, sizes[i], r[i].calls,
                        cram_status_name(r[i].st), r[i].len, r[i].ok);
            bad++;
        }
        free(req[i]);
    }
    free(r);
    free(req);
    return bad;
}

static tp_session *open_session(const char *loc)
{
    cram_status st;
    tp_session *s = tp_session_open(loop, loc, &st);
    if (s == NULL)
        fprintf(stderr, "tp_session_open(%s): %s\n", loc, cram_status_name(st));
    return s;
}

/* ---- tests --------------------------------------------------------------- */

static const uint32_t size_list[] = { 1, 2, 8, 100, 1359, 1360, 1361, 1415, 1416, 1417, 4096,
                                      65535, 65536, 100000, 262144, 1048575, 1048576 };
#define NSIZES ((int)(sizeof size_list / sizeof size_list[0]))

static void test_sizes_sequential(void)
{
    tp_session *s = open_session(srv_loc[1]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(echo_batch(s, size_list, NSIZES, 1, 10000), 0);
    tp_session_close(s);
}

static void test_sizes_concurrent(void)
{
    tp_session *s = open_session(srv_loc[1]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    uint32_t sizes[3 * NSIZES];
    for (int i = 0; i < 3 * NSIZES; i++)
        sizes[i] = size_list[i % NSIZES];
    CU_ASSERT_EQUAL(echo_batch(s, sizes, 3 * NSIZES, 3 * NSIZES, 30000), 0);
    tp_session_close(s);
}

/* Many sessions of one loop share one endpoint (one client port). */
static void test_many_sessions(void)
{
    enum { NS = 8, PER = 40 };
    tp_session *s[NS];
    struct rpc_res r[NS][PER];
    uint8_t *req[NS][PER];
    memset(r, 0, sizeof r);
    for (int i = 0; i < NS; i++) {
        s[i] = open_session(i % 2 ? srv_loc[1] : srv_loc[4]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(s[i]);
    }
    for (int i = 0; i < NS; i++)
        for (int k = 0; k < PER; k++) {
            uint32_t len = 8 + (uint32_t)((i * 977 + k * 131) % 5000);
            req[i][k] = make_req(len);
            r[i][k].req = req[i][k];
            r[i][k].req_len = len;
            struct iovec iov = { req[i][k], len };
            CU_ASSERT_EQUAL(tp_send(s[i], &iov, 1, 10000, on_resp, &r[i][k]), CRAM_OK);
        }
    uint64_t end = clock_mono_ms() + 20000;
    int done = 0;
    while (done < NS * PER && clock_mono_ms() < end) {
        tp_loop_poll(loop, 100);
        done = 0;
        for (int i = 0; i < NS; i++)
            for (int k = 0; k < PER; k++)
                done += r[i][k].calls;
    }
    int bad = 0;
    for (int i = 0; i < NS; i++)
        for (int k = 0; k < PER; k++) {
            bad += r[i][k].calls != 1 || !r[i][k].ok;
            free(req[i][k]);
        }
    CU_ASSERT_EQUAL(bad, 0);
    for (int i = 0; i < NS; i++)
        tp_session_close(s[i]);
}

/* Two loops of one process, each on its own thread, share one UMEM: two
 * sockets (slots) on it, both busy at once. */
struct loop_job {
    tp_loop *l;
    const char *loc;
    int n, bad, calls;
    uint32_t slot;
    int slot_ok;
};

static void job_resp(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    int *ok = arg;
    (void)resp;
    *ok = st == CRAM_OK && len > 0 ? 1 : -1;
}

static void *loop_job_run(void *arg)
{
    struct loop_job *j = arg;
    cram_status st;
    tp_session *s = tp_session_open(j->l, j->loc, &st);
    if (s == NULL) {
        j->bad = j->n;
        return NULL;
    }
    struct tp_xdp_stats xs;
    j->slot_ok = tp_xdp_session_stats(s, &xs) == 0;
    j->slot = xs.slot;
    static __thread uint8_t buf[100000];
    for (int i = 0; i < j->n; i++) {
        uint32_t len = 8 + (uint32_t)(i * 7919) % (sizeof buf - 8);
        memset(buf, i, len);
        uint64_t tag = __atomic_fetch_add(&run_tag, 1, __ATOMIC_RELAXED);
        memcpy(buf, &tag, 8);
        int ok = 0;
        struct iovec iov = { buf, len };
        if (tp_send(s, &iov, 1, 10000, job_resp, &ok) != CRAM_OK) {
            j->bad++;
            continue;
        }
        while (ok == 0)
            tp_loop_poll(j->l, 100);
        j->calls++;
        j->bad += ok != 1;
    }
    tp_session_close(s);
    return NULL;
}

static void test_two_loops_share_umem(void)
{
    struct loop_job a = { tp_loop_create(), srv_loc[1], 150, 0, 0, 0, 0 };
    struct loop_job b = { tp_loop_create(), srv_loc[4], 150, 0, 0, 0, 0 };
    /* hold a session on the main loop too, so three sockets share the UMEM */
    tp_session *m = open_session(srv_loc[1]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    pthread_t ta, tb;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&ta, NULL, loop_job_run, &a), 0);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&tb, NULL, loop_job_run, &b), 0);
    uint32_t sizes[20];
    for (int i = 0; i < 20; i++)
        sizes[i] = 8 + (uint32_t)i * 3000;
    CU_ASSERT_EQUAL(echo_batch(m, sizes, 20, 4, 10000), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CU_ASSERT_EQUAL(a.bad, 0);
    CU_ASSERT_EQUAL(b.bad, 0);
    CU_ASSERT_EQUAL(a.calls, a.n);
    CU_ASSERT_EQUAL(b.calls, b.n);
    struct tp_xdp_stats ms;
    CU_ASSERT_EQUAL(tp_xdp_session_stats(m, &ms), 0);
    CU_ASSERT_TRUE(a.slot_ok && b.slot_ok);
    /* three sockets, three different slots of one shared UMEM */
    CU_ASSERT(a.slot != b.slot && a.slot != ms.slot && b.slot != ms.slot);
    printf("\n    sockets on one UMEM: slots %u (main), %u, %u\n", ms.slot, a.slot, b.slot);
    tp_session_close(m);
    tp_loop_destroy(a.l);
    tp_loop_destroy(b.l);
}

/* 1% loss + 1% reordering each way (server-side seeded hook): every RPC
 * completes exactly once, and the server proves it dropped packets. */
static void test_lossy(void)
{
    enum { N = 400 };
    uint32_t sizes[N];
    unsigned seed = 5;
    for (int i = 0; i < N; i++) {
        unsigned v = (unsigned)rand_r(&seed);
        sizes[i] = 8 + (v % 5 == 0 ? v % 200000 : v % 4000);
    }
    sizes[0] = sizes[100] = sizes[200] = 1048576;
    sizes[1] = 1;
    tp_session *s = open_session(srv_loc[3]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(echo_batch(s, sizes, N, 16, 60000), 0);
    uint8_t *resp = NULL;
    uint32_t len = 0;
    struct iovec iov = { "STAT", 4 };
    CU_ASSERT_EQUAL_FATAL(tp_call(s, &iov, 1, 10000, &resp, &len), CRAM_OK);
    char stat[600];
    snprintf(stat, sizeof stat, "%.*s", (int)len, (char *)resp);
    free(resp);
    unsigned long long drops = 0, reorders = 0;
    sscanf(stat, "drops=%llu reorders=%llu", &drops, &reorders);
    printf("\n    lossy server: %s\n", stat);
    struct tp_xdp_stats cs;
    if (tp_xdp_session_stats && tp_xdp_session_stats(s, &cs) == 0)
        printf("    client: retx %llu fast %llu dup %llu (%s)\n", (unsigned long long)cs.proto.retransmits,
               (unsigned long long)cs.proto.fast_retransmits, (unsigned long long)cs.proto.dup_in, cs.mode);
    CU_ASSERT(drops > 50);
    CU_ASSERT(reorders > 50);
    tp_session_close(s);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Echo latency of 64-byte RPCs, one at a time. */
static void latency(const char *name, const char *loc, uint32_t poll_us, int n)
{
    tp_session *s = open_session(loc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    tp_loop_set_poll_us(loop, poll_us);
    uint8_t buf[64] = { 0 };
    uint64_t *t = malloc((size_t)n * sizeof *t);
    int bad = 0;
    for (int i = -200; i < n; i++) {
        uint64_t tag = run_tag++;
        memcpy(buf, &tag, 8);
        struct iovec iov = { buf, sizeof buf };
        uint8_t *resp = NULL;
        uint32_t len;
        uint64_t t0 = clock_mono_ns();
        cram_status st = tp_call(s, &iov, 1, 5000, &resp, &len);
        uint64_t dt = clock_mono_ns() - t0;
        if (st != CRAM_OK || len != sizeof buf || memcmp(resp, buf, len) != 0)
            bad++;
        free(resp);
        if (i >= 0)
            t[i] = dt;
    }
    CU_ASSERT_EQUAL(bad, 0);
    qsort(t, (size_t)n, sizeof *t, cmp_u64);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += (double)t[i];
    printf("    %-4s poll_us=%-7u n=%d  avg %6.1f us  p50 %6.1f us  p99 %6.1f us\n", name, poll_us, n,
           sum / n / 1000.0, (double)t[n / 2] / 1000.0, (double)t[(size_t)n * 99 / 100] / 1000.0);
    free(t);
    tp_loop_set_poll_us(loop, 0);
    tp_session_close(s);
}

static void test_latency(void)
{
    int n = getenv("CRAM_TEST_LAT_N") ? atoi(getenv("CRAM_TEST_LAT_N")) : 5000;
    printf("\n    echo 64 B, one at a time, client ns2 -> server over veth+bridge\n");
    printf("    blocking: client and server poll_us=0\n");
    latency("tcp", srv_tcp[1], 0, n);
    latency("xdp", srv_loc[1], 0, n);
    printf("    spinning: client poll_us=1000000 and server poll_us=1000000\n");
    latency("tcp", srv_tcp[4], 1000000, n);
    latency("xdp", srv_loc[4], 1000000, n);
}

/* The idle blocking server burns no CPU: under 2% of a core over 2 s. */
static void test_idle_cpu(void)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)srv_pid[1]);
    unsigned long long ticks[2] = { 0, 0 };
    for (int k = 0; k < 2; k++) {
        if (k)
            sleep(2);
        FILE *f = fopen(path, "r");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        unsigned long long ut = 0, st = 0;
        CU_ASSERT_EQUAL(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st), 2);
        ticks[k] = ut + st;
    }
    long hz = sysconf(_SC_CLK_TCK);
    printf("\n    idle server: %llu ticks in 2 s (hz %ld)\n", ticks[1] - ticks[0], hz);
    CU_ASSERT(ticks[1] - ticks[0] <= (unsigned long long)(hz / 25));
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "--serve") == 0)
        return serve(argv);
    if (tp_xdp_session_stats == NULL) {
        printf("test_xdp: SKIP: built without AF_XDP (libxdp/libbpf/clang missing)\n");
        return 0;
    }
    if (geteuid() != 0) {
        printf("test_xdp: SKIP: needs root (network namespaces, XDP programs)\n");
        return 0;
    }
    ssize_t sl = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (sl <= 0)
        return 1;
    self_exe[sl] = '\0';
    char src[1024];
    snprintf(src, sizeof src, "%s", __FILE__);
    snprintf(netns_sh, sizeof netns_sh, "%s/../../scripts/netns.sh", dirname(src));
    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    if (netns_setup() != 0) {
        fprintf(stderr, "test_xdp: netns.sh up failed\n");
        return 1;
    }
    if (start_server(1, 1, "0", NULL) != 0 ||
        start_server(3, 0, "0", "loss=0.01,reorder=0.01,seed=7") != 0 ||
        start_server(4, 1, "1000000", NULL) != 0)
        return 1;
    root_ns_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (enter_ns(2) != 0) {
        perror("setns");
        return 1;
    }
    run_tag = (uint64_t)getpid() << 40;
    loop = tp_loop_create();
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("xdp", NULL, NULL);
    CU_add_test(s, "1 B .. 1 MiB one at a time", test_sizes_sequential);
    CU_add_test(s, "1 B .. 1 MiB all at once", test_sizes_concurrent);
    CU_add_test(s, "8 sessions, one endpoint, two servers", test_many_sessions);
    CU_add_test(s, "two loops on two threads share one UMEM", test_two_loops_share_umem);
    CU_add_test(s, "1% loss + reordering: exactly once", test_lossy);
    CU_add_test(s, "echo latency xdp vs tcp", test_latency);
    CU_add_test(s, "idle server uses no CPU", test_idle_cpu);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    tp_loop_destroy(loop);
    cleanup();
    return bad;
}
