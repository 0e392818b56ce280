/* eb_shift.h: dataset-shift corruptions of images, the public header of
 * harness/shift.c.
 *
 * Five deterministic corruptions at five severities each (rotation,
 * Gaussian noise, Gaussian blur, contrast, translation). The parameter of
 * every severity, the interpolation, edge handling and seeding are pinned
 * in docs/metrics.md ("Dataset shift", convention EB_CONV_SHIFT). Random
 * choices (noise values, translation direction) come from a generator
 * keyed by (seed, image index), so any subset of a set, corrupted on its
 * own with the right first_example, gets the same bytes as the whole. */
#ifndef EB_SHIFT_H
#define EB_SHIFT_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"

#define EB_CONV_SHIFT "shift-5-corruptions-5-severities-v1"
#define EB_SHIFT_SEVERITIES 5

/* Number of corruptions, and the name of corruption i ("rotation",
 * "gaussian-noise", "gaussian-blur", "contrast", "translation"), NULL for
 * i >= eb_shift_count(). */
size_t eb_shift_count(void);
const char *eb_shift_name(size_t i);

/* The parameter of a corruption at a severity (1..5) and its unit:
 * degrees counterclockwise, noise standard deviation, blur sigma in
 * pixels, contrast factor, shift in pixels. unit may be NULL. EB_ERR_ARG
 * names an unknown corruption or severity. */
eb_status eb_shift_parameter(const char *corruption, int severity, double *value,
                             const char **unit, eb_error *err);

/* Corrupts n images x (n, h, w, c), NHWC, values in [0, 1], into out
 * (n, h, w, c), caller-owned, which must not overlap x. Image i is
 * example first_example + i of its set: its random choices come from
 * (seed, first_example + i). EB_ERR_ARG for an unknown corruption or
 * severity (named), non-positive h, w or c, a size overflow, or out == x;
 * EB_ERR_NOMEM when the blur's one scratch image cannot be allocated.
 * Deterministic: the same arguments give the same bytes. */
eb_status eb_shift_apply(const char *corruption, int severity, const float *x, size_t n, int h,
                         int w, int c, uint64_t seed, uint64_t first_example, float *out,
                         eb_error *err);

#endif /* EB_SHIFT_H */
