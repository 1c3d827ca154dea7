/* Valgrind's client requests for callgrind, callable from Python through ctypes
   (benchmarks/bench_instructions.py builds this file with the machine's C compiler).
   Outside valgrind each is a few no-op instructions. */
#include <valgrind/callgrind.h>

int cg_running(void) { return RUNNING_ON_VALGRIND; }
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
