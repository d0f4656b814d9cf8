/* log.c -- leveled logging to stderr, one write(2) per line.
 *
 * log_init is called once at start-up, before other threads exist; after that
 * the program name and pid are only read, so log_write needs no lock.  The
 * level may be changed at any time (a plain int: a racy read just logs one
 * line more or less). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include "common/log.h"

int log_level_current = LOG_LVL_INFO;
static char log_progname[64] = "cram";
static int log_pid;

/* Longest line written; longer messages are cut and end in "...". */
#define LOG_LINE_MAX 4096

void log_init(const char *progname, int level)
{
    if (progname != NULL) {
        const char *slash = strrchr(progname, '/');
        snprintf(log_progname, sizeof log_progname, "%s", slash ? slash + 1 : progname);
    }
    if (level >= LOG_LVL_DEBUG && level <= LOG_LVL_ERROR)
        log_level_current = level;
    log_pid = (int)getpid();
}

int log_level_parse(const char *s)
{
    static const char *const names[] = { "debug", "info", "warn", "error" };
    if (s == NULL)
        return -1;
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return LOG_LVL_WARN;
    return -1;
}

/* Write all of buf to stderr, retrying on EINTR and short writes. */
static void log_write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* Fill buf with the line prefix; returns its length. */
static size_t log_prefix(char *buf, size_t cap, char lvl, const char *file, int line)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    int n = snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s[%d] %c %s:%d ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(ts.tv_nsec / 1000000), log_progname,
                     log_pid ? log_pid : (int)getpid(), lvl, base, line);
    if (n < 0)
        return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

void log_write(int level, const char *file, int line, const char *fmt, ...)
{
    static const char lvls[] = "DIWE";
    char buf[LOG_LINE_MAX];
    int saved_errno = errno;          /* callers often log strerror(errno) after us */
    char lc = (level >= 0 && level <= 3) ? lvls[level] : '?';
    size_t n = log_prefix(buf, sizeof buf, lc, file, line);

    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);   /* -1: room for '\n' */
    va_end(ap);
    if (m < 0)
        m = 0;
    if ((size_t)m >= sizeof buf - n - 1) {          /* truncated */
        n = sizeof buf - 2;
        memcpy(buf + n - 3, "...", 3);
    } else {
        n += (size_t)m;
    }
    while (n > 0 && buf[n - 1] == '\n')             /* exactly one newline */
        n--;
    buf[n++] = '\n';
    log_write_all(buf, n);
    errno = saved_errno;
}

void cram_assert_fail(const char *expr, const char *file, int line)
{
    char buf[LOG_LINE_MAX];
    size_t n = log_prefix(buf, sizeof buf, 'E', file, line);
    int m = snprintf(buf + n, sizeof buf - n, "assertion failed: %s\n", expr);
    if (m > 0)
        n += (size_t)m < sizeof buf - n ? (size_t)m : sizeof buf - n - 1;
    log_write_all(buf, n);
    abort();
}
