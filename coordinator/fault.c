/* fault.c -- named fault points; see fault.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "coordinator/fault.h"

bool coord_fault_armed(const char *spec, const char *name)
{
    if (spec == NULL || name == NULL)
        return false;
    size_t nlen = strlen(name);
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == nlen + 5 && strncmp(p, name, nlen) == 0 && strncmp(p + nlen, ":exit", 5) == 0)
            return true;
        if (!end)
            break;
        p = end + 1;
    }
    return false;
}

void coord_fault_point(const char *name)
{
    if (!coord_fault_armed(getenv("CRAM_FAULT"), name))
        return;
    fprintf(stderr, "FAULT %s hit\n", name);
    fflush(stderr);
    _exit(99);
}
