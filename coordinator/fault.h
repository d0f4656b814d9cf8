/*
 * fault.h -- named fault points for crash tests.
 *
 * CRAM_FAULT="name:exit[,name:exit...]" in the environment makes the process
 * print "FAULT <name> hit" to stderr and _exit(99) when it reaches
 * coord_fault_point("<name>").  Without the variable a fault point costs one
 * getenv.  Names used: coordinator.create_table.after_intent,
 * coordinator.create_table.after_take_tablet, coordinator.drop_table.after_intent,
 * coordinator.drop_table.after_drop_tablet, coordinator.enlist.after_write.
 */
#ifndef CRAM_COORD_FAULT_H
#define CRAM_COORD_FAULT_H
#include <stdbool.h>

/* True if spec (the CRAM_FAULT syntax) arms `name` with action "exit". */
bool coord_fault_armed(const char *spec, const char *name);
/* Fire the fault point if CRAM_FAULT arms it (does not return then). */
void coord_fault_point(const char *name);

#endif
