/* eb_version.h: what code produced a result: the release version and the
 * git commit of the build ("-dirty" when built from uncommitted changes),
 * recorded in every bundle's provenance. */
#ifndef EB_VERSION_H
#define EB_VERSION_H

const char *eb_version(void);
const char *eb_version_commit(void);

#endif /* EB_VERSION_H */
