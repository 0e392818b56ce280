/* test_shift.c: the dataset-shift corruptions. Rotation and blur of an
 * 8x8 image against scipy.ndimage 1.10.1 (Debian 12's python3-scipy, run
 * once); hand-worked cases (a bright pixel rotated by 90 degrees and
 * translated, contrast of a constant image, blur keeping the mass of a
 * point away from the edges); the severity ordering of every corruption;
 * determinism and subset reproducibility; noise statistics; and the
 * errors. Agreement to 1e-6; the maximum error is printed.
 *
 * The scipy reference (python3):
 *   from scipy import ndimage
 *   img = (np.arange(64).reshape(8, 8) % 7 / 6.0).astype(np.float32)
 *   img[2, 5] = 1.0; img[6, 1] = 0.0; img = img.astype(np.float64)
 *   ndimage.rotate(img, 30, reshape=False, order=1, mode='grid-constant',
 *                  cval=0.0)
 *   ndimage.gaussian_filter(img, 1.0, mode='constant', cval=0.0,
 *                           truncate=3.0)
 * scipy's radius int(3 sigma + 0.5) equals our ceil(3 sigma) at every
 * severity's sigma, and 'grid-constant' interpolates against the zero
 * padding as we do. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "harness/eb_shift.h"

#define HW 28
#define PIX (HW * HW)

static double max_err;

static void near(double got, double want, double tol)
{
    double e = fabs(got - want);
    if (e > max_err)
        max_err = e;
    assert_float_equal(got, want, tol);
}

static void small_image(float *img)
{
    for (int k = 0; k < 64; k++)
        img[k] = (float)((double)(k % 7) / 6.0);
    img[2 * 8 + 5] = 1.0f;
    img[6 * 8 + 1] = 0.0f;
}

static void test_against_scipy(void **state)
{
    static const double rot30[64] = {
        0,           0.112554467, 0.473398398,  0.839316387, 0.494124325, 0.127991536,
        0.167575641, 0,           0.167575641,  0.444978835, 0.672649736, 0.895833321,
        0.8348291,   0.188995772, 0.416666671,  0.112554467, 0.27831217,  0.505983066,
        0.733653967, 0.961324861, 0.600373558,  0.272114324, 0.477670908, 0.473398398,
        0.339316404, 0.566987308, 0.794658197,  0.720192068, 0.0833333358, 0.311004243,
        0.538675141, 0.766346029, 0.400320639,  0.627991544, 0.855662418, 0.432318513,
        0.144337572, 0.372008473, 0.599679376,  0.827350262, 0.365331217, 0.688995769,
        0.89086662,  0.337019054, 0.205341807,  0.433012707, 0.660683619, 0.888354496,
        0.142841805, 0.750000002, 0.977670898,  0.163567745, 0.266346043, 0.494016943,
        0.72168784,  0.514850261, 0,            0.514850261, 0.627726907, 0.0996793715,
        0.327350277, 0.365331217, 0.142841805,  0};
    static const double blur1[64] = {
        0.0847233483, 0.180913497, 0.29363905,  0.406749111, 0.49886393,  0.503263349,
        0.360394271,  0.159586231, 0.180913497, 0.333004761, 0.485494582, 0.619882047,
        0.701184939,  0.63849081,  0.412779996, 0.193275206, 0.293399641, 0.484421623,
        0.625836217,  0.691157137, 0.675696179, 0.572764084, 0.392153901, 0.232450891,
        0.403832508,  0.606810739, 0.670679152, 0.594399386, 0.477253457, 0.422545386,
        0.393332174,  0.308763947, 0.485792623, 0.642603402, 0.579350964, 0.421588524,
        0.341964506,  0.392025991, 0.46886965,  0.407226648, 0.481712406, 0.541906185,
        0.413542611,  0.32620017,  0.371548007, 0.496017514, 0.589113823, 0.493633181,
        0.347322964,  0.35419846,  0.295569276, 0.334750637, 0.455798342, 0.588040865,
        0.63238561,   0.474801671, 0.156669628, 0.180203899, 0.210899948, 0.295692639,
        0.404310045,  0.493393771, 0.474801671, 0.300386664};
    float img[64], out[64];
    double v;
    eb_error err;
    (void)state;
    max_err = 0.0;
    small_image(img);
    /* severity 2 of rotation is 30 degrees, of blur sigma 1 */
    assert_int_equal(eb_shift_parameter("rotation", 2, &v, NULL, &err), EB_OK);
    assert_float_equal(v, 30.0, 0.0);
    assert_int_equal(eb_shift_apply("rotation", 2, img, 1, 8, 8, 1, 0, 0, out, &err), EB_OK);
    for (int k = 0; k < 64; k++)
        near(out[k], rot30[k], 1e-6);
    assert_int_equal(eb_shift_parameter("gaussian-blur", 2, &v, NULL, &err), EB_OK);
    assert_float_equal(v, 1.0, 0.0);
    assert_int_equal(eb_shift_apply("gaussian-blur", 2, img, 1, 8, 8, 1, 0, 0, out, &err), EB_OK);
    for (int k = 0; k < 64; k++)
        near(out[k], blur1[k], 1e-6);
    printf("rotation and blur vs scipy.ndimage: max error %.3g\n", max_err);
}

static void test_by_hand(void **state)
{
    static float img[PIX], out[5][PIX], ch2[2 * PIX], out2[2 * PIX];
    double sum, k0sq = 0.02549640644196352;
    int dr = 0, dc = 0, found = 0;
    eb_error err;
    (void)state;
    /* A bright pixel at row 5, column 20; the centre is (13.5, 13.5), so
     * relative (x, y) = (6.5, -8.5) with y down. A quarter turn
     * counterclockwise as displayed sends (x, y) to (y, -x) = (-8.5,
     * -6.5): row 7, column 5, exactly (no interpolation blur). */
    memset(img, 0, sizeof img);
    img[5 * HW + 20] = 1.0f;
    assert_int_equal(eb_shift_apply("rotation", 5, img, 1, HW, HW, 1, 0, 0, out[0], &err), EB_OK);
    for (int k = 0; k < PIX; k++)
        assert_float_equal(out[0][k], k == 7 * HW + 5 ? 1.0 : 0.0, 0.0);
    /* two channels rotate independently: channel 1 holds the pixel */
    memset(ch2, 0, sizeof ch2);
    ch2[(5 * HW + 20) * 2 + 1] = 1.0f;
    assert_int_equal(eb_shift_apply("rotation", 5, ch2, 1, HW, HW, 2, 0, 0, out2, &err), EB_OK);
    for (int k = 0; k < 2 * PIX; k++)
        assert_float_equal(out2[k], k == (7 * HW + 5) * 2 + 1 ? 1.0 : 0.0, 0.0);

    /* Translation: the pixel at (14, 14) moves 2 pixels at severity 1 and
     * 10 at severity 5, along the same axis direction. */
    memset(img, 0, sizeof img);
    img[14 * HW + 14] = 1.0f;
    assert_int_equal(eb_shift_apply("translation", 1, img, 1, HW, HW, 1, 99, 3, out[0], &err),
                     EB_OK);
    assert_int_equal(eb_shift_apply("translation", 5, img, 1, HW, HW, 1, 99, 3, out[1], &err),
                     EB_OK);
    for (int r = 0; r < HW; r++)
        for (int c = 0; c < HW; c++)
            if (out[0][r * HW + c] != 0.0f) {
                assert_float_equal(out[0][r * HW + c], 1.0, 0.0);
                dr = r - 14;
                dc = c - 14;
                found++;
            }
    assert_int_equal(found, 1);
    assert_true((abs(dr) == 2 && dc == 0) || (dr == 0 && abs(dc) == 2));
    assert_float_equal(out[1][(14 + 5 * dr) * HW + 14 + 5 * dc], 1.0, 0.0);
    for (int k = 0, n = 0; k < PIX; k++)
        if (out[1][k] != 0.0f)
            assert_int_equal(++n, 1);

    /* Contrast: a constant image is its own mean, so it is unchanged; a
     * half-0 half-1 image has mean 0.5 and goes to 0.1 / 0.9 at
     * severity 1 (factor 0.8). */
    for (int k = 0; k < PIX; k++)
        img[k] = 0.3f;
    assert_int_equal(eb_shift_apply("contrast", 5, img, 1, HW, HW, 1, 0, 0, out[0], &err), EB_OK);
    for (int k = 0; k < PIX; k++)
        assert_float_equal(out[0][k], 0.3f, 1e-7);
    for (int k = 0; k < PIX; k++)
        img[k] = k < PIX / 2 ? 0.0f : 1.0f;
    assert_int_equal(eb_shift_apply("contrast", 1, img, 1, HW, HW, 1, 0, 0, out[0], &err), EB_OK);
    assert_float_equal(out[0][0], 0.1, 1e-7);
    assert_float_equal(out[0][PIX - 1], 0.9, 1e-7);

    /* Blur at sigma 2.5 (radius 8) of a point at (14, 14): the kernel
     * fits inside, so the mass stays 1, the result is symmetric, and the
     * peak is k0^2 with k0 = 1 / sum_t exp(-t^2 / 12.5), t = -8..8
     * (numpy: 0.02549640644196352). Near a corner mass leaks out. */
    memset(img, 0, sizeof img);
    img[14 * HW + 14] = 1.0f;
    assert_int_equal(eb_shift_apply("gaussian-blur", 5, img, 1, HW, HW, 1, 0, 0, out[0], &err),
                     EB_OK);
    sum = 0.0;
    for (int k = 0; k < PIX; k++)
        sum += out[0][k];
    assert_float_equal(sum, 1.0, 1e-6);
    assert_float_equal(out[0][14 * HW + 14], k0sq, 1e-8);
    for (int a = -8; a <= 8; a++)
        for (int b = -8; b <= 8; b++)
            assert_float_equal(out[0][(14 + a) * HW + 14 + b], out[0][(14 - a) * HW + 14 - b],
                               1e-9);
    memset(img, 0, sizeof img);
    img[1 * HW + 1] = 1.0f;
    assert_int_equal(eb_shift_apply("gaussian-blur", 5, img, 1, HW, HW, 1, 0, 0, out[0], &err),
                     EB_OK);
    sum = 0.0;
    for (int k = 0; k < PIX; k++)
        sum += out[0][k];
    assert_true(sum < 0.9);
}

/* Four 28x28 test images: an off-centre rectangle, a diagonal bar, a
 * Gaussian blob and a smooth ramp. (A periodic texture would not do: a
 * shift by its period changes nothing.) */
static void test_images(float *x)
{
    for (int r = 0; r < HW; r++)
        for (int c = 0; c < HW; c++) {
            x[r * HW + c] = (r >= 6 && r < 20 && c >= 4 && c < 16) ? 0.9f : 0.05f;
            x[PIX + r * HW + c] = abs(r - c) < 3 ? 1.0f : 0.0f;
            x[2 * PIX + r * HW + c] =
                (float)exp(-((r - 11.0) * (r - 11.0) + (c - 16.0) * (c - 16.0)) / 18.0);
            x[3 * PIX + r * HW + c] = (float)(r * c) / (float)((HW - 1) * (HW - 1));
        }
}

static void test_severity_ordering(void **state)
{
    static float x[4 * PIX], out[4 * PIX];
    eb_error err;
    (void)state;
    test_images(x);
    assert_int_equal(eb_shift_count(), 5);
    for (size_t i = 0; i < eb_shift_count(); i++) {
        const char *name = eb_shift_name(i);
        double prev = 0.0;
        printf("%-15s mean |change| by severity:", name);
        for (int s = 1; s <= EB_SHIFT_SEVERITIES; s++) {
            double change = 0.0;
            assert_int_equal(eb_shift_apply(name, s, x, 4, HW, HW, 1, 5, 0, out, &err), EB_OK);
            for (int k = 0; k < 4 * PIX; k++) {
                assert_true(out[k] >= 0.0f && out[k] <= 1.0f);
                change += fabs((double)out[k] - (double)x[k]);
            }
            change /= 4 * PIX;
            printf(" %.4f", change);
            assert_true(change > prev);
            prev = change;
        }
        printf("\n");
    }
    assert_null(eb_shift_name(5));
}

static void test_determinism_and_subsets(void **state)
{
    static float x[6 * PIX], all[6 * PIX], part[3 * PIX], again[6 * PIX], other[6 * PIX];
    static const char *const seeded[2] = {"gaussian-noise", "translation"};
    double mean = 0.0, var = 0.0;
    int dirs[4] = {0, 0, 0, 0};
    eb_error err;
    (void)state;
    test_images(x);
    test_images(x + 2 * PIX); /* six images: the four, then the first two again */
    for (int k = 0; k < 2; k++) {
        assert_int_equal(eb_shift_apply(seeded[k], 3, x, 6, HW, HW, 1, 17, 100, all, &err), EB_OK);
        assert_int_equal(eb_shift_apply(seeded[k], 3, x, 6, HW, HW, 1, 17, 100, again, &err),
                         EB_OK);
        assert_memory_equal(all, again, sizeof all);
        /* images 2..4 alone, as examples 102..104 */
        assert_int_equal(eb_shift_apply(seeded[k], 3, x + 2 * PIX, 3, HW, HW, 1, 17, 102, part,
                                        &err),
                         EB_OK);
        assert_memory_equal(part, all + 2 * PIX, sizeof part);
        assert_int_equal(eb_shift_apply(seeded[k], 3, x, 6, HW, HW, 1, 18, 100, other, &err),
                         EB_OK);
        if (k == 0)
            assert_memory_not_equal(all, other, sizeof all);
    }
    /* the direction is drawn per image: over 40 images all four appear */
    for (int i = 0; i < 40; i++) {
        float dot[PIX], moved[PIX];
        memset(dot, 0, sizeof dot);
        dot[14 * HW + 14] = 1.0f;
        assert_int_equal(eb_shift_apply("translation", 1, dot, 1, HW, HW, 1, 17, (uint64_t)i,
                                        moved, &err),
                         EB_OK);
        dirs[0] += moved[14 * HW + 16] == 1.0f; /* right */
        dirs[1] += moved[14 * HW + 12] == 1.0f; /* left */
        dirs[2] += moved[16 * HW + 14] == 1.0f; /* down */
        dirs[3] += moved[12 * HW + 14] == 1.0f; /* up */
    }
    assert_int_equal(dirs[0] + dirs[1] + dirs[2] + dirs[3], 40);
    for (int d = 0; d < 4; d++)
        assert_true(dirs[d] > 0);
    /* noise on mid-grey at sigma 0.04 (severity 1) never clips: the
     * change has mean 0 and standard deviation 0.04 (3,136 values: the
     * mean's sd is 0.0007, the sd's relative sd 1.3%) */
    for (int k = 0; k < 4 * PIX; k++)
        x[k] = 0.5f;
    assert_int_equal(eb_shift_apply("gaussian-noise", 1, x, 4, HW, HW, 1, 1, 0, all, &err), EB_OK);
    for (int k = 0; k < 4 * PIX; k++)
        mean += all[k] - 0.5;
    mean /= 4 * PIX;
    for (int k = 0; k < 4 * PIX; k++)
        var += (all[k] - 0.5 - mean) * (all[k] - 0.5 - mean);
    var /= 4 * PIX - 1;
    printf("noise sigma 0.04: mean %.5f, sd %.5f\n", mean, sqrt(var));
    assert_true(fabs(mean) < 0.0036);
    assert_true(fabs(sqrt(var) - 0.04) < 0.04 * 0.07);
}

static void test_errors(void **state)
{
    static float x[2 * PIX], out[2 * PIX];
    double v;
    const char *unit = NULL;
    eb_error err;
    (void)state;
    memset(x, 0, sizeof x);
    assert_int_equal(eb_shift_apply("snow", 1, x, 1, HW, HW, 1, 0, 0, out, &err), EB_ERR_ARG);
    assert_string_equal(err.msg, "unknown corruption \"snow\" (known: rotation, gaussian-noise, "
                                 "gaussian-blur, contrast, translation)");
    assert_int_equal(eb_shift_apply(NULL, 1, x, 1, HW, HW, 1, 0, 0, out, &err), EB_ERR_ARG);
    assert_int_equal(eb_shift_apply("contrast", 6, x, 1, HW, HW, 1, 0, 0, out, &err), EB_ERR_ARG);
    assert_string_equal(err.msg, "corruption contrast: severity 6 is outside 1..5");
    assert_int_equal(eb_shift_parameter("rotation", 0, &v, &unit, &err), EB_ERR_ARG);
    assert_int_equal(eb_shift_parameter("translation", 5, &v, &unit, &err), EB_OK);
    assert_float_equal(v, 10.0, 0.0);
    assert_string_equal(unit, "pixels");
    assert_int_equal(eb_shift_apply("rotation", 1, x, 1, 0, HW, 1, 0, 0, out, &err), EB_ERR_ARG);
    assert_string_equal(err.msg, "corruption rotation: image size 0x28x1 must be positive");
    assert_int_equal(eb_shift_apply("rotation", 1, x, 1, HW, HW, 1, 0, 0, x, &err), EB_ERR_ARG);
    assert_non_null(strstr(err.msg, "out == x"));
    assert_int_equal(eb_shift_apply("rotation", 1, x, 0, HW, HW, 1, 0, 0, out, &err), EB_OK);
    /* only the blur allocates (its scratch image) */
    eb_alloc_fail_at(1);
    assert_int_equal(eb_shift_apply("gaussian-blur", 1, x, 2, HW, HW, 1, 0, 0, out, &err),
                     EB_ERR_NOMEM);
    eb_alloc_fail_at(0);
    assert_non_null(strstr(err.msg, "gaussian-blur: out of memory"));
    eb_alloc_fail_at(1);
    assert_int_equal(eb_shift_apply("translation", 1, x, 2, HW, HW, 1, 0, 0, out, &err), EB_OK);
    eb_alloc_fail_at(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_scipy),
        cmocka_unit_test(test_by_hand),
        cmocka_unit_test(test_severity_ordering),
        cmocka_unit_test(test_determinism_and_subsets),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
