/* eb_version.c: the version strings; the commit comes from a header that
 * cmake/version.cmake regenerates at every build. */
#include "common/eb_version.h"

#include "eb_version_gen.h"

const char *eb_version(void)
{
    return EB_VERSION;
}

const char *eb_version_commit(void)
{
    return EB_GIT_COMMIT_GEN;
}
