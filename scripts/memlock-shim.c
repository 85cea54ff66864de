/*
 * Test-only LD_PRELOAD shim for libvirtd on hosts where root lacks
 * CAP_SYS_RESOURCE and RLIMIT_MEMLOCK is capped (some CI containers).
 *
 * libvirt raises QEMU's locked-memory limit to <hard_limit> when it starts a
 * domain; without CAP_SYS_RESOURCE the kernel answers EPERM and the start
 * fails.  This shim reports success for that one case (RLIMIT_MEMLOCK + EPERM)
 * and passes every other call through unchanged.  QEMU only locks memory with
 * <memoryBacking><locked/>, which virtualpod never sets, so nothing depends on
 * the raised limit.  Production hosts have the capability and never load this.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/resource.h>
#include <sys/types.h>

typedef int (*setrlimit_fn)(int, const void *);
typedef int (*prlimit_fn)(pid_t, int, const void *, void *);

static int forgive(int rc, int resource)
{
    if (rc != 0 && errno == EPERM && resource == RLIMIT_MEMLOCK) {
        errno = 0;
        return 0;
    }
    return rc;
}

#define SETRLIMIT(name, rl)                                                    \
    int name(__rlimit_resource_t resource, const struct rl *rlim)              \
    {                                                                          \
        static setrlimit_fn real;                                              \
        if (!real)                                                             \
            real = (setrlimit_fn)dlsym(RTLD_NEXT, #name);                      \
        return forgive(real((int)resource, rlim), (int)resource);              \
    }

#define PRLIMIT(name, rl)                                                      \
    int name(pid_t pid, __rlimit_resource_t resource,                          \
             const struct rl *new_limit, struct rl *old_limit)                 \
    {                                                                          \
        static prlimit_fn real;                                                \
        if (!real)                                                             \
            real = (prlimit_fn)dlsym(RTLD_NEXT, #name);                        \
        return forgive(real(pid, (int)resource, new_limit, old_limit),         \
                       (int)resource);                                         \
    }

SETRLIMIT(setrlimit, rlimit)
SETRLIMIT(setrlimit64, rlimit64)
PRLIMIT(prlimit, rlimit)
PRLIMIT(prlimit64, rlimit64)
