/*
 * log.h -- leveled logging to stderr.
 *
 * The level is checked before any formatting, so a disabled CRAM_DEBUG costs
 * one comparison.  Lines look like
 *   2026-11-26T13:40:01.123Z cram-server[4242] W master.c:88 log full: ...
 * Thread-safe (one write(2) per line).
 */
#ifndef CRAM_LOG_H
#define CRAM_LOG_H

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO = 1, LOG_LVL_WARN = 2, LOG_LVL_ERROR = 3 };

extern int log_level_current;           /* default LOG_LVL_INFO */
void log_init(const char *progname, int level);
/* "debug", "info", "warn", "error" -> level; -1 if unknown */
int  log_level_parse(const char *s);
void log_write(int level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define CRAM_LOG(lvl, ...) do { \
        if ((lvl) >= log_level_current) log_write((lvl), __FILE__, __LINE__, __VA_ARGS__); \
    } while (0)
#define CRAM_DEBUG(...) CRAM_LOG(LOG_LVL_DEBUG, __VA_ARGS__)
#define CRAM_INFO(...)  CRAM_LOG(LOG_LVL_INFO, __VA_ARGS__)
#define CRAM_WARN(...)  CRAM_LOG(LOG_LVL_WARN, __VA_ARGS__)
#define CRAM_ERROR(...) CRAM_LOG(LOG_LVL_ERROR, __VA_ARGS__)

/* Internal invariants only -- never for network input.  Active in every
 * build (release included): prints expression, file, line and aborts. */
#define CRAM_ASSERT(e) do { \
        if (__builtin_expect(!(e), 0)) cram_assert_fail(#e, __FILE__, __LINE__); \
    } while (0)
void cram_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

#endif
