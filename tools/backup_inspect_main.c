/*
 * cram-backup-inspect -- list the replicas in a backup directory
 * (cram-server --backup-dir) with their master, segment, epoch, length and
 * checksum status.  Reads the files only; safe to run next to a live server
 * (a replica being written may show as torn or corrupt for a moment).
 *
 * Exit status: 0 when every replica is verified or empty, 1 when any is
 * corrupt or torn (neither is served by the backup), 2 on usage errors or
 * an unreadable directory.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backup/backup_store.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: cram-backup-inspect DIR\n"
"Lists the replica files (*.rep) in the backup directory DIR: master id,\n"
"segment id, epoch, open/closed, certified length, capacity, certificate crc\n"
"and status:\n"
"  verified  header intact and the data pass the certificate\n"
"  empty     header intact, nothing certified yet\n"
"  torn      the file holds less than its header certifies\n"
"  corrupt   bad header, or the data fail the certificate\n"
"Exit status: 0 all verified/empty, 1 any corrupt or torn, 2 usage or I/O error.\n");
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-') {
        usage(stderr);
        return 2;
    }
    struct backup_scan_entry *v;
    size_t n;
    char err[512];
    if (backup_scan_dir(argv[1], &v, &n, err, sizeof err) != 0) {
        fprintf(stderr, "cram-backup-inspect: %s\n", err);
        return 2;
    }
    size_t counts[4] = { 0, 0, 0, 0 };
    printf("%-18s %10s %6s %-6s %10s %10s %-10s %-8s %s\n", "MASTER", "SEGMENT", "EPOCH", "STATE",
           "LENGTH", "CAPACITY", "CRC32C", "STATUS", "FILE");
    for (size_t i = 0; i < n; i++) {
        const struct backup_scan_entry *e = &v[i];
        if (e->status >= 0 && e->status < 4)
            counts[e->status]++;
        if (e->header_ok)
            printf("0x%016" PRIx64 " %10" PRIu64 " %6" PRIu64 " %-6s %10u %10u 0x%08x %-8s %s%s%s%s\n",
                   e->master_id, e->segment_id, e->epoch, e->closed ? "closed" : "open",
                   e->cert_length, e->capacity, e->cert_crc32c, backup_rep_status_name(e->status),
                   e->name, e->why[0] ? " (" : "", e->why, e->why[0] ? ")" : "");
        else
            printf("%-18s %10s %6s %-6s %10s %10s %-10s %-8s %s (%s)\n", "?", "?", "?", "?", "?", "?",
                   "?", backup_rep_status_name(e->status), e->name, e->why);
    }
    printf("%zu replicas: %zu verified, %zu empty, %zu torn, %zu corrupt\n", n,
           counts[BACKUP_REP_VERIFIED], counts[BACKUP_REP_EMPTY], counts[BACKUP_REP_TORN],
           counts[BACKUP_REP_CORRUPT]);
    free(v);
    return counts[BACKUP_REP_TORN] + counts[BACKUP_REP_CORRUPT] > 0 ? 1 : 0;
}
