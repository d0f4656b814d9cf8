/*
 * fuzz_backup.c -- the backup service's request handling (backup_handle:
 * BACKUP_WRITE / FREE / LIST / READ / GET_RECOVERY_DATA), reached through a
 * real tcp connection (fuzz_rpc.h).  Each FUZZ_SEP-separated part of the
 * input is one request; the service field is forced to WIRE_SVC_BACKUP, and
 * messages shorter than a request header are answered by the bench the way
 * cram-server's dispatch does.
 *
 * The backup (server id 77, 64 KiB replicas at most, 16 MiB of storage) keeps
 * its files in a private directory under /tmp, removed at exit.  State
 * carries over between inputs, so a write that opens a replica followed by
 * reads and recovery-data requests exercises replicas in memory and, once
 * closed, on disk (the worker thread's completions come back through the
 * loop the bench runs).
 *
 * Oracle: no crash, sanitizer report or assertion, every request answered
 * (5 s) with a known status, or its connection closed.
 */
#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>
#include "backup/backup_service.h"
#include "common/serverlist.h"
#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/fuzz_rpc.h"

static struct fuzz_rpc bench;
static backup_service *fz_backup;
static char fz_dir[64];

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
    backup_handle(arg, rpc, req, len);
}

/* atexit: the replica files go with the process (the service is left up:
 * its worker may still be writing, and the files are all that matters). */
static void fz_rm_dir(void)
{
    DIR *d = opendir(fz_dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
    rmdir(fz_dir);
}

static void fz_init(void)
{
    fuzz_quiet();
    snprintf(fz_dir, sizeof fz_dir, "/tmp/cram-fuzz-backup-XXXXXX");
    if (mkdtemp(fz_dir) == NULL) {
        perror("fuzz_backup: mkdtemp");
        exit(2);
    }
    atexit(fz_rm_dir);
    tp_loop *loop = tp_loop_create();
    server_list *sl = sl_create();
    char err[256] = "";
    struct backup_config cfg = { .dir = fz_dir, .storage_bytes = 16u << 20,
                                 .max_replica_bytes = 64u << 10 };
    fz_backup = (loop && sl) ? backup_create(&cfg, loop, sl, err, sizeof err) : NULL;
    if (fz_backup == NULL) {
        fprintf(stderr, "fuzz_backup: setup failed: %s\n", err);
        exit(2);
    }
    backup_set_server_id(fz_backup, 77);
    fuzz_rpc_start(&bench, loop, fz_on_request, fz_backup);
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
        uint16_t svc = WIRE_SVC_BACKUP;
        memcpy(msg + 2, &svc, 2);
    }
    int32_t st = fuzz_rpc_call(&bench, msg, n, NULL, NULL);
    if (st != -1 && (st < 0 || st > CRAM_STATUS_MAX)) {
        fprintf(stderr, "fuzz_backup: response status %d out of range\n", st);
        abort();
    }
    free(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fz_backup == NULL)
        fz_init();
    fuzz_split(data, size, fz_part, NULL);
    return 0;
}
