/* coord_util.c -- pure coordinator logic; see coord_util.h. */
#include <string.h>
#include "coordinator/coord_util.h"
#include "common/locator.h"

static bool printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e)
            return false;
    }
    return true;
}

bool coord_name_valid(const char *name)
{
    if (name == NULL)
        return false;
    size_t n = strnlen(name, COORD_MAX_NAME + 1);
    if (n == 0 || n > COORD_MAX_NAME || !printable(name, n))
        return false;
    if (strchr(name, '/') != NULL)
        return false;
    return strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

bool coord_label_valid(const char *s)
{
    if (s == NULL)
        return false;
    size_t n = strnlen(s, COORD_MAX_NAME + 1);
    return n <= COORD_MAX_NAME && printable(s, n);
}

bool coord_locator_valid(const char *loc)
{
    if (loc == NULL)
        return false;
    size_t n = strnlen(loc, COORD_MAX_LOCATOR + 1);
    if (n == 0 || n > COORD_MAX_LOCATOR || !printable(loc, n))
        return false;
    struct locator l;
    char err[128];
    return loc_parse(loc, &l, err, sizeof(err)) == 0;
}

/* Boundaries are floor(i * 2^64 / span), computed in 128 bits, so the ranges
 * differ in size by at most one hash value and the last ends at 2^64-1. */
void coord_tablet_range(uint32_t span, uint32_t i, uint64_t *start, uint64_t *end)
{
    unsigned __int128 space = (unsigned __int128)1 << 64;
    *start = (uint64_t)(space * i / span);
    if (i + 1 >= span)
        *end = UINT64_MAX;
    else
        *end = (uint64_t)(space * (i + 1) / span) - 1;
}

uint32_t coord_tablet_master(uint64_t table_id, uint32_t i, uint32_t n_masters)
{
    if (n_masters == 0)
        return 0;
    return (uint32_t)((table_id + i) % n_masters);
}
