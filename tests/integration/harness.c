/*
 * harness.c -- see harness.h.  Starts real cram processes with fork/exec and
 * asks the coordinator through libcram (cram_list_servers) when they serve.
 */
#include "harness.h"
#include "transport/xdp.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


#ifndef CRAM_BIN_DIR
#error "CRAM_BIN_DIR (the build dir holding the programs) must be defined"
#endif

/* Every process started by this test program, so an exit path that forgets
 * one (or a failing CU_ASSERT_FATAL) still kills it: see h_atexit. */
#define H_MAX_TRACKED 64
static pid_t h_tracked[H_MAX_TRACKED];
static int h_atexit_set;

static void h_atexit(void)
{
    for (int i = 0; i < H_MAX_TRACKED; i++) {
        if (h_tracked[i] > 0) {
            kill(h_tracked[i], SIGKILL);
            waitpid(h_tracked[i], NULL, 0);
            h_tracked[i] = 0;
        }
    }
}

static void h_track(pid_t pid)
{
    if (!h_atexit_set) {
        atexit(h_atexit);
        h_atexit_set = 1;
    }
    for (int i = 0; i < H_MAX_TRACKED; i++) {
        if (h_tracked[i] == 0) {
            h_tracked[i] = pid;
            return;
        }
    }
}

static void h_untrack(pid_t pid)
{
    for (int i = 0; i < H_MAX_TRACKED; i++)
        if (h_tracked[i] == pid)
            h_tracked[i] = 0;
}

/* xdp mode (CRAM_TEST_TRANSPORT=xdp), set once by h_init: which namespace
 * holds the process on each port (h_host_of_port). */
static struct {
    int on;
    char prefix[64];            /* namespaces <prefix>-1 .. -(H_MAX_SERVERS + 1) */
    char subnet[24];            /* 10.A.B */
    int port_base;
} h_xdp;

#define H_XDP_CLIENT_NS (H_MAX_SERVERS + 1)     /* the test process's namespace */

const char *h_host_of_port(int port)
{
    static char buf[32];
    if (!h_xdp.on)
        return "127.0.0.1";
    int i = port - h_xdp.port_base - 1;
    int ns = i >= 0 && i < H_MAX_SERVERS ? i + 1 : H_XDP_CLIENT_NS;
    snprintf(buf, sizeof(buf), "%s.%d", h_xdp.subnet, ns);
    return buf;
}

/* Built with the xdp: transport?  (A weak reference: cram_all holds it only
 * when libxdp/libbpf/clang were found.) */
#pragma weak tp_xdp_session_stats

/* CRAM_TEST_TRANSPORT=xdp: check we can, enter the client namespace, prefer
 * xdp: in every client.  Exits H_SKIP_CODE when the run cannot happen here
 * (not root, no AF_XDP in this build); returns -1 when it should but the
 * fixture's namespaces are missing. */
static int h_xdp_init(struct h_cluster *c)
{
    const char *prefix = getenv("CRAM_TEST_NETNS");
    const char *subnet = getenv("CRAM_TEST_NETNS_SUBNET");
    if (geteuid() != 0) {
        printf("harness: SKIP: CRAM_TEST_TRANSPORT=xdp needs root (network namespaces, XDP programs)\n");
        exit(H_SKIP_CODE);
    }
    if (tp_xdp_session_stats == NULL) {
        printf("harness: SKIP: CRAM_TEST_TRANSPORT=xdp but built without AF_XDP (libxdp/libbpf/clang missing)\n");
        exit(H_SKIP_CODE);
    }
    if (!prefix || !*prefix || !subnet || !*subnet || strlen(prefix) >= sizeof(h_xdp.prefix) ||
        strlen(subnet) >= sizeof(h_xdp.subnet)) {
        fprintf(stderr, "harness: CRAM_TEST_TRANSPORT=xdp needs CRAM_TEST_NETNS and CRAM_TEST_NETNS_SUBNET "
                        "(run through ctest: the netns_it fixture makes them)\n");
        return -1;
    }
    snprintf(h_xdp.prefix, sizeof(h_xdp.prefix), "%s", prefix);
    snprintf(h_xdp.subnet, sizeof(h_xdp.subnet), "%s", subnet);
    h_xdp.port_base = c->port_base;
    for (int i = 1; i <= H_XDP_CLIENT_NS; i++) {
        char path[128];
        snprintf(path, sizeof(path), "/run/netns/%s-%d", prefix, i);
        if (access(path, F_OK) != 0) {
            fprintf(stderr, "harness: namespace %s-%d missing (%s); did the netns_it fixture run?\n",
                    prefix, i, strerror(errno));
            return -1;
        }
    }
    char path[128];
    snprintf(path, sizeof(path), "/run/netns/%s-%d", prefix, H_XDP_CLIENT_NS);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
        fprintf(stderr, "harness: entering %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    h_xdp.on = 1;
    c->xdp = 1;
    snprintf(c->host, sizeof(c->host), "%s.%d", subnet, H_XDP_CLIENT_NS);
    setenv("CRAM_TRANSPORT", "xdp", 1);   /* our clients (and `cram`) prefer xdp: locators */
    return 0;
}

uint64_t h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t h_ms(uint64_t ms)
{
    const char *s = getenv("CRAM_TEST_TIME_SCALE");
    double f = s ? strtod(s, NULL) : 1.0;
    if (!(f >= 1.0))
        f = 1.0;
    return (uint64_t)((double)ms * f);
}

static void h_sleep_ms(uint64_t ms)
{
    struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

const char *h_bin(const char *prog, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", CRAM_BIN_DIR, prog);
    return buf;
}

int h_init(struct h_cluster *c)
{
    const char *zk = getenv("CRAM_TEST_ZK");
    const char *pb = getenv("CRAM_TEST_PORT_BASE");
    const char *name = getenv("CRAM_TEST_CLUSTER");
    const char *tmp = getenv("TMPDIR");

    memset(c, 0, sizeof(*c));
    if (!zk || !*zk) {
        fprintf(stderr, "harness: CRAM_TEST_ZK is not set (run through ctest, which starts ZooKeeper)\n");
        return -1;
    }
    snprintf(c->zk, sizeof(c->zk), "zk:%s", zk);
    c->port_base = pb ? atoi(pb) : 22410;
    if (c->port_base < 1024 || c->port_base > 65500) {
        fprintf(stderr, "harness: bad CRAM_TEST_PORT_BASE '%s'\n", pb);
        return -1;
    }
    snprintf(c->cluster, sizeof(c->cluster), "%s", name && *name ? name : "it");
    snprintf(c->host, sizeof(c->host), "127.0.0.1");
    const char *tr = getenv("CRAM_TEST_TRANSPORT");
    if (tr && *tr && strcmp(tr, "tcp") != 0) {
        if (strcmp(tr, "xdp") != 0) {
            fprintf(stderr, "harness: CRAM_TEST_TRANSPORT '%s': only tcp and xdp are known\n", tr);
            return -1;
        }
        if (h_xdp_init(c) != 0)
            return -1;
    }
    snprintf(c->memory, sizeof(c->memory), "64M");
    snprintf(c->segment, sizeof(c->segment), "1M");
    c->replicas = -1;
    snprintf(c->dir, sizeof(c->dir), "%s/cram-it-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", c->cluster);
    if (!mkdtemp(c->dir)) {
        fprintf(stderr, "harness: mkdtemp %s: %s\n", c->dir, strerror(errno));
        return -1;
    }
    snprintf(c->coord.name, sizeof(c->coord.name), "coordinator");
    for (int i = 0; i < H_MAX_SERVERS; i++)
        snprintf(c->servers[i].name, sizeof(c->servers[i].name), "server-%d", i);
    fprintf(stderr, "harness: cluster '%s', %s, ports %d.., logs in %s%s\n",
            c->cluster, c->zk, c->port_base, c->dir,
            c->xdp ? ", servers in namespaces over xdp:" : "");
    return 0;
}

/* fork/exec argv with stdout+stderr appended to p->log.  The child dies with
 * us (PDEATHSIG) and gets its own process group so a terminal ^C reaches only
 * the test. */
static int h_spawn_ns(struct h_proc *p, const char *dir, char *const argv[], int ns);

static int h_spawn(struct h_proc *p, const char *dir, char *const argv[])
{
    return h_spawn_ns(p, dir, argv, 0);
}

/* h_spawn in namespace <prefix>-ns (xdp mode, ns > 0) through `ip netns
 * exec`, which execs the program in place (same pid; it also mounts that
 * namespace's /sys, which libxdp reads). */
static int h_spawn_ns(struct h_proc *p, const char *dir, char *const argv[], int ns)
{
    snprintf(p->log, sizeof(p->log), "%s/%s.log", dir, p->name);
    int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "harness: open %s: %s\n", p->log, strerror(errno));
        return -1;
    }
    dprintf(fd, "+");
    for (int i = 0; argv[i]; i++)
        dprintf(fd, " %s", argv[i]);
    dprintf(fd, "\n");

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "harness: fork: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        setpgid(0, 0);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        if (ns > 0) {
            char nsname[96];
            char *nargv[64];
            int k = 0;
            snprintf(nsname, sizeof(nsname), "%s-%d", h_xdp.prefix, ns);
            nargv[k++] = "ip";
            nargv[k++] = "netns";
            nargv[k++] = "exec";
            nargv[k++] = nsname;
            for (int i = 0; argv[i] && k < 63; i++)
                nargv[k++] = argv[i];
            nargv[k] = NULL;
            execvp("ip", nargv);
            dprintf(2, "harness: exec ip netns exec: %s\n", strerror(errno));
            _exit(127);
        }
        execv(argv[0], argv);
        dprintf(2, "harness: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd);
    p->pid = pid;
    p->status = 0;
    h_track(pid);
    return 0;
}

int h_alive(struct h_proc *p)
{
    if (p->pid <= 0)
        return 0;
    int st;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == 0)
        return 1;
    if (r == p->pid) {
        p->status = st;
        h_untrack(p->pid);
        p->pid = 0;
    }
    return 0;
}

/* 1 once h_host_of_port(port):port accepts a TCP connection */
static int h_port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, h_host_of_port(port), &a.sin_addr);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

int h_start_coordinator(struct h_cluster *c, int reset)
{
    char bin[512], listen[128], level[16], repl[16];
    snprintf(listen, sizeof(listen), "tcp:host=%s,port=%d", c->host, c->port_base);
    snprintf(level, sizeof(level), "info");
    char *argv[16 + H_MAX_COORD_ARGS];
    int n = 0;
    argv[n++] = (char *)h_bin("cram-coordinator", bin, sizeof(bin));
    argv[n++] = "--zk";
    argv[n++] = c->zk;
    argv[n++] = "--cluster";
    argv[n++] = c->cluster;
    argv[n++] = "--listen";
    argv[n++] = listen;
    argv[n++] = "--log-level";
    argv[n++] = level;
    if (reset)
        argv[n++] = "--reset";
    if (c->replicas >= 0) {
        snprintf(repl, sizeof(repl), "%d", c->replicas);
        argv[n++] = "--replicas";
        argv[n++] = repl;
    }
    if (c->durability[0]) {
        argv[n++] = "--durability";
        argv[n++] = c->durability;
    }
    for (int k = 0; k < H_MAX_COORD_ARGS && c->coord_args[k] != NULL; k++)
        argv[n++] = (char *)c->coord_args[k];
    argv[n] = NULL;
    if (h_spawn(&c->coord, c->dir, argv) != 0)
        return -1;
    uint64_t deadline = h_now_ms() + h_ms(15000);
    while (h_now_ms() < deadline) {
        if (!h_alive(&c->coord)) {
            fprintf(stderr, "harness: coordinator exited during start-up (status 0x%x)\n", c->coord.status);
            h_dump_logs(c);
            return -1;
        }
        if (h_port_open(c->port_base))
            return 0;
        h_sleep_ms(20);
    }
    fprintf(stderr, "harness: coordinator did not listen on port %d in time\n", c->port_base);
    h_dump_logs(c);
    return -1;
}

int h_start_server(struct h_cluster *c, int i)
{
    if (i < 0 || i >= H_MAX_SERVERS)
        return -1;
    char bin[512], listen[256], bdir[300];
    const char *host = h_host_of_port(c->port_base + 1 + i);
    if (c->xdp)     /* tcp: first: the coordinator and the other servers use it */
        snprintf(listen, sizeof(listen), "tcp:host=%s,port=%d;xdp:host=%s,port=%d", host,
                 c->port_base + 1 + i, host, H_XDP_PORT + i);
    else
        snprintf(listen, sizeof(listen), "tcp:host=%s,port=%d", host, c->port_base + 1 + i);
    snprintf(bdir, sizeof(bdir), "%s/backup-%d", c->dir, i);
    char *argv[16 + H_MAX_SERVER_ARGS] = {
        (char *)h_bin("cram-server", bin, sizeof(bin)),
        "--coordinator", c->zk, "--cluster", c->cluster, "--listen", listen,
        "--memory", c->memory, "--segment-size", c->segment, "--backup-dir", bdir,
    };
    int n = 13;
    if ((c->backup_only >> i) & 1)
        argv[n++] = "--backup-only";
    for (int k = 0; k < H_MAX_SERVER_ARGS && c->server_args[i][k] != NULL; k++)
        argv[n++] = (char *)c->server_args[i][k];
    argv[n] = NULL;
    return h_spawn_ns(&c->servers[i], c->dir, argv, c->xdp ? i + 1 : 0);
}

/* The number of our first n server ports that the coordinator lists as an
 * up master (an up backup for a c->backup_only server) (cram_list_servers),
 * or -1 if it cannot be asked. */
static int h_count_up(struct h_cluster *c, int n)
{
    cram_client *cl = NULL;
    cram_server_info *sv = NULL;
    size_t ns = 0;
    int up = 0;

    if (cram_connect(c->zk, c->cluster, &cl) != CRAM_OK)
        return -1;
    cram_set_timeout(cl, 2000);
    if (cram_list_servers(cl, &sv, &ns) != CRAM_OK) {
        cram_disconnect(cl);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char want[64];
        int wl = snprintf(want, sizeof(want), "port=%d", c->port_base + 1 + i);
        int found = 0;
        uint32_t svc = (c->backup_only >> i) & 1 ? CRAM_SERVICE_BACKUP : CRAM_SERVICE_MASTER;
        for (size_t k = 0; k < ns && !found; k++) {
            if (sv[k].status != CRAM_SERVER_UP || !(sv[k].services & svc))
                continue;
            const char *p = strstr(sv[k].locators, want);
            if (p && (p[wl] < '0' || p[wl] > '9'))
                found = 1;
        }
        up += found;
    }
    cram_free(sv);
    cram_disconnect(cl);
    return up;
}

int h_wait_servers(struct h_cluster *c, int n, uint64_t timeout_ms)
{
    uint64_t deadline = h_now_ms() + h_ms(timeout_ms);
    int up = -1;
    while (h_now_ms() < deadline) {
        for (int i = 0; i < n; i++) {
            if (c->servers[i].pid && !h_alive(&c->servers[i])) {
                fprintf(stderr, "harness: %s exited (status 0x%x)\n", c->servers[i].name, c->servers[i].status);
                h_dump_logs(c);
                return -1;
            }
        }
        up = h_count_up(c, n);
        if (up == n) {
            cram_client *cl = h_connect(c);
            if (cl) {
                cram_disconnect(cl);
                return 0;
            }
        }
        h_sleep_ms(50);
    }
    fprintf(stderr, "harness: %d of %d servers up after %llu ms\n", up, n,
            (unsigned long long)h_ms(timeout_ms));
    h_dump_logs(c);
    return -1;
}

int h_start_cluster(struct h_cluster *c, int n)
{
    if (n > H_MAX_SERVERS)
        return -1;
    /* masters replicate to other servers only: at most n - 1 backups */
    if (c->replicas < 0)
        c->replicas = n - 1 < 2 ? n - 1 : 2;
    if (h_start_coordinator(c, 1) != 0)
        return -1;
    for (int i = 0; i < n; i++)
        if (h_start_server(c, i) != 0)
            return -1;
    return h_wait_servers(c, n, 30000);
}

int h_kill(struct h_proc *p, int sig)
{
    if (p->pid <= 0)
        return -1;
    kill(p->pid, sig);
    int st = 0;
    while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR)
        ;
    h_untrack(p->pid);
    p->pid = 0;
    p->status = st;
    return st;
}

/* Wait for a process already sent SIGTERM; SIGKILL it after the scaled 10 s. */
static int h_wait_term(struct h_proc *p)
{
    uint64_t deadline = h_now_ms() + h_ms(10000);
    while (h_now_ms() < deadline) {
        if (!h_alive(p))
            return p->status;
        h_sleep_ms(5);
    }
    fprintf(stderr, "harness: %s ignored SIGTERM for %llu ms; killing\n", p->name,
            (unsigned long long)h_ms(10000));
    return h_kill(p, SIGKILL);
}

int h_stop(struct h_proc *p)
{
    if (p->pid <= 0)
        return -1;
    kill(p->pid, SIGTERM);
    return h_wait_term(p);
}

void h_stop_servers(struct h_cluster *c)
{
    for (int i = 0; i < H_MAX_SERVERS; i++)
        if (c->servers[i].pid > 0)
            kill(c->servers[i].pid, SIGTERM);
    for (int i = 0; i < H_MAX_SERVERS; i++)
        if (c->servers[i].pid > 0)
            h_wait_term(&c->servers[i]);
}

/* A graceful exit is status 0 or death by the SIGTERM we sent; anything else
 * (a crash on the way down, a sanitizer report, a leak) is a failure. */
static int h_bad_exit(int st)
{
    if (st == -1)
        return 0;
    if (WIFSIGNALED(st))
        return WTERMSIG(st) != SIGTERM;
    return WIFEXITED(st) && WEXITSTATUS(st) != 0;
}

/* Print a log's last `lines` lines; if it holds a sanitizer report or an
 * assertion failure, print from the report's first line instead (its top
 * names the bug; the tail is shadow-memory noise). */
static void h_tail(const char *path, int lines)
{
    static const char *const marks[] = { "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                         "runtime error:", "assertion failed", "Assertion", NULL };
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    long offs[65];              /* ring: offs[k % ring] = start of line k */
    long mark = -1;
    int n = 0;
    char buf[1024];
    if (lines > 64)
        lines = 64;
    int ring = lines + 1;
    offs[n++ % ring] = 0;
    while (fgets(buf, sizeof(buf), f)) {
        if (mark < 0)
            for (int i = 0; marks[i]; i++)
                if (strstr(buf, marks[i]))
                    mark = offs[(n - 1) % ring];
        if (strchr(buf, '\n'))
            offs[n++ % ring] = ftell(f);
    }
    /* n - 1 complete lines were read */
    long start = mark >= 0 ? mark : (n - 1 > lines ? offs[(n - 1 - lines) % ring] : 0);
    fseek(f, start, SEEK_SET);
    int printed = 0;
    while (fgets(buf, sizeof(buf), f) && printed < (mark >= 0 ? 60 : lines + 1)) {
        fputs(buf, stderr);
        printed++;
    }
    fclose(f);
}

void h_dump_logs(const struct h_cluster *c)
{
    const struct h_proc *ps[1 + H_MAX_SERVERS];
    ps[0] = &c->coord;
    for (int i = 0; i < H_MAX_SERVERS; i++)
        ps[1 + i] = &c->servers[i];
    for (int i = 0; i < 1 + H_MAX_SERVERS; i++) {
        if (!ps[i]->log[0])
            continue;
        fprintf(stderr, "----- tail of %s -----\n", ps[i]->log);
        h_tail(ps[i]->log, 30);
    }
}

int h_finish(struct h_cluster *c, int bad)
{
    int crashed = 0;
    struct h_proc *ps[1 + H_MAX_SERVERS];
    int n = 0;
    for (int i = 0; i < H_MAX_SERVERS; i++)
        ps[n++] = &c->servers[i];
    ps[n++] = &c->coord;
    /* stop everything at once, then collect */
    for (int i = 0; i < n; i++)
        if (ps[i]->pid > 0)
            kill(ps[i]->pid, SIGTERM);
    for (int i = 0; i < n; i++) {
        if (ps[i]->pid <= 0)
            continue;
        int st = h_wait_term(ps[i]);
        if (h_bad_exit(st)) {
            fprintf(stderr, "harness: %s exited abnormally on SIGTERM (status 0x%x)\n", ps[i]->name, st);
            crashed = 1;
        }
    }
    if (!c->dir[0])
        return 1;
    if (bad || crashed) {
        h_dump_logs(c);
        fprintf(stderr, "harness: logs kept in %s\n", c->dir);
        return 1;
    }
    if (getenv("CRAM_TEST_KEEP_LOGS")) {
        fprintf(stderr, "harness: logs kept in %s (CRAM_TEST_KEEP_LOGS)\n", c->dir);
        return 0;
    }
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
    if (strstr(c->dir, "/cram-it-") && system(cmd) != 0)
        fprintf(stderr, "harness: could not remove %s\n", c->dir);
    return 0;
}

cram_client *h_connect(const struct h_cluster *c)
{
    cram_client *cl = NULL;
    cram_status st = cram_connect(c->zk, c->cluster, &cl);
    if (st != CRAM_OK) {
        fprintf(stderr, "harness: cram_connect(%s, %s): %s\n", c->zk, c->cluster, cram_status_name(st));
        return NULL;
    }
    return cl;
}

int h_create_one_tablet(cram_client *cl, const char *name, uint64_t *table,
                        cram_tablet_info *tablet)
{
    cram_status st = cram_create_table(cl, name, 1, table);
    if (st != CRAM_OK) {
        fprintf(stderr, "harness: create table %s: %s\n", name, cram_status_name(st));
        return -1;
    }
    cram_tablet_info *t = NULL;
    size_t n = 0;
    st = cram_get_tablets(cl, name, &t, &n);
    if (st != CRAM_OK || n != 1) {
        fprintf(stderr, "harness: tablets of %s: %s, %zu tablets\n", name, cram_status_name(st),
                st == CRAM_OK ? n : 0);
        if (st == CRAM_OK)
            cram_free(t);
        return -1;
    }
    *tablet = t[0];
    cram_free(t);
    return 0;
}

int h_run(char *const argv[], char *out, size_t outlen, uint64_t timeout_ms)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pfd[1], 1);
        execv(argv[0], argv);
        dprintf(2, "harness: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    size_t got = 0;
    uint64_t deadline = h_now_ms() + h_ms(timeout_ms);
    int timed_out = 0;
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);
    for (;;) {
        char tmp[4096];
        ssize_t r = read(pfd[0], tmp, sizeof(tmp));
        if (r > 0) {
            if (out && got + 1 < outlen) {
                size_t k = (size_t)r < outlen - 1 - got ? (size_t)r : outlen - 1 - got;
                memcpy(out + got, tmp, k);
                got += k;
            }
            continue;
        }
        if (r == 0)
            break;
        if (errno != EAGAIN && errno != EINTR)
            break;
        if (h_now_ms() > deadline) {
            timed_out = 1;
            break;
        }
        h_sleep_ms(5);
    }
    close(pfd[0]);
    if (out && outlen)
        out[got] = 0;
    if (timed_out)
        kill(pid, SIGKILL);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (timed_out) {
        fprintf(stderr, "harness: %s timed out\n", argv[0]);
        return -1;
    }
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

int h_tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, h_host_of_port(port), &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    uint64_t ms = h_ms(5000);
    struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

int h_objs_init(struct h_objs *o, cram_client *cl, uint64_t table, uint32_t nkeys,
                uint32_t vlen, size_t batch)
{
    *o = (struct h_objs){ .cl = cl, .table = table, .nkeys = nkeys, .vlen = vlen,
                          .batch = batch, .seed = 0x9e3779b97f4a7c15ull };
    o->gen = calloc(nkeys ? nkeys : 1, sizeof *o->gen);
    o->ops = calloc(batch, sizeof *o->ops);
    o->kb = calloc(batch, sizeof *o->kb);
    o->vb = calloc(batch, vlen);
    o->g = calloc(batch, sizeof *o->g);
    o->keys = calloc(batch, sizeof *o->keys);
    o->want = calloc(1, vlen);
    if (vlen < 8 || batch == 0 || !o->gen || !o->ops || !o->kb || !o->vb || !o->g || !o->keys ||
        !o->want) {
        h_objs_free(o);
        return -1;
    }
    return 0;
}

void h_objs_free(struct h_objs *o)
{
    free(o->gen);
    free(o->ops);
    free(o->kb);
    free(o->vb);
    free(o->g);
    free(o->keys);
    free(o->want);
    *o = (struct h_objs){ 0 };
}

void h_obj_val(uint8_t *v, uint32_t vlen, uint32_t k, uint32_t g)
{
    memcpy(v, &k, 4);
    memcpy(v + 4, &g, 4);
    for (uint32_t i = 8; i < vlen; i++)
        v[i] = (uint8_t)(k * 7 + g * 13 + i);
}

int h_objs_write(struct h_objs *o, const uint32_t *keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t *v = o->vb + i * o->vlen;
        snprintf(o->kb[i], sizeof o->kb[i], H_OBJ_KEYFMT, keys[i]);
        o->g[i] = o->gen[keys[i]] + 1;
        for (size_t j = 0; j < i; j++)      /* a key twice: the later op wins */
            if (keys[j] == keys[i])
                o->g[i] = o->g[j] + 1;
        h_obj_val(v, o->vlen, keys[i], o->g[i]);
        o->ops[i] = (cram_multi_op){ .table = o->table, .key = o->kb[i], .key_len = H_OBJ_KLEN,
                                     .value = v, .value_len = o->vlen };
    }
    cram_status st = cram_multi_write(o->cl, o->ops, n);
    if (st != CRAM_OK) {
        fprintf(stderr, "multi-write: %s\n", cram_status_name(st));
        return -1;
    }
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (o->ops[i].status != CRAM_OK) {
            if (bad++ < 5)
                fprintf(stderr, "write of " H_OBJ_KEYFMT ": %s\n", keys[i],
                        cram_status_name(o->ops[i].status));
            continue;
        }
        if (o->g[i] > o->gen[keys[i]])
            o->gen[keys[i]] = o->g[i];
    }
    return bad ? -1 : 0;
}

int h_objs_fill(struct h_objs *o)
{
    for (uint32_t k = 0; k < o->nkeys; k += (uint32_t)o->batch) {
        size_t n = o->nkeys - k < o->batch ? o->nkeys - k : o->batch;
        for (size_t i = 0; i < n; i++)
            o->keys[i] = k + (uint32_t)i;
        if (h_objs_write(o, o->keys, n) != 0)
            return -1;
    }
    return 0;
}

int h_objs_write_random(struct h_objs *o)
{
    for (size_t i = 0; i < o->batch; i++) {
        o->seed ^= o->seed << 13;
        o->seed ^= o->seed >> 7;
        o->seed ^= o->seed << 17;
        o->keys[i] = (uint32_t)(o->seed % o->nkeys);
    }
    return h_objs_write(o, o->keys, o->batch);
}

int h_objs_verify(struct h_objs *o)
{
    int bad = 0;
    for (uint32_t k = 0; k < o->nkeys; k += (uint32_t)o->batch) {
        size_t n = o->nkeys - k < o->batch ? o->nkeys - k : o->batch;
        for (size_t i = 0; i < n; i++) {
            snprintf(o->kb[i], sizeof o->kb[i], H_OBJ_KEYFMT, k + (uint32_t)i);
            o->ops[i] = (cram_multi_op){ .table = o->table, .key = o->kb[i],
                                         .key_len = H_OBJ_KLEN, .buf = o->vb + i * o->vlen,
                                         .buf_len = o->vlen };
        }
        if (cram_multi_read(o->cl, o->ops, n) != CRAM_OK)
            return (int)o->nkeys;
        for (size_t i = 0; i < n; i++) {
            h_obj_val(o->want, o->vlen, k + (uint32_t)i, o->gen[k + i]);
            if (o->ops[i].status != CRAM_OK || o->ops[i].value_len_out != o->vlen ||
                memcmp(o->ops[i].buf, o->want, o->vlen) != 0) {
                if (bad++ < 5)
                    fprintf(stderr, "read of " H_OBJ_KEYFMT ": %s\n", k + (uint32_t)i,
                            cram_status_name(o->ops[i].status));
            }
        }
    }
    return bad;
}
