/*
 * classify.c: run a compiled incept model from C.
 *
 *   cc classify.c -I ../../capi/include ../../target/release/libincept.a -lpthread -ldl -lm -o classify
 *   ./classify model.incept input.npy [top_k]
 *
 * Reads a float32 .npy input (format 1.0, C order) matching the model's first input, runs the
 * model on buffers this program owns, and prints the top-k scores of its first output as
 * "index score" lines.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "incept.h"

/* Reads a little-endian float32 .npy file of exactly `bytes` data bytes into a new buffer. */
static void *read_npy(const char *path, size_t bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "classify: cannot open %s\n", path);
        return NULL;
    }
    unsigned char head[10];
    void *data = NULL;
    if (fread(head, 1, 10, f) != 10 || memcmp(head, "\x93NUMPY\x01", 7) != 0) {
        fprintf(stderr, "classify: %s is not a .npy file (version 1.0)\n", path);
        goto done;
    }
    size_t header_len = (size_t)head[8] | ((size_t)head[9] << 8);
    char *header = malloc(header_len + 1);
    if (!header || fread(header, 1, header_len, f) != header_len) {
        fprintf(stderr, "classify: %s: truncated header\n", path);
        free(header);
        goto done;
    }
    header[header_len] = '\0';
    int is_f32 = strstr(header, "'<f4'") != NULL && strstr(header, "'fortran_order': False") != NULL;
    free(header);
    if (!is_f32) {
        fprintf(stderr, "classify: %s must hold C-ordered float32 data\n", path);
        goto done;
    }
    data = malloc(bytes);
    if (!data || fread(data, 1, bytes, f) != bytes || fgetc(f) != EOF) {
        fprintf(stderr, "classify: %s does not hold the %zu bytes the model's input needs\n", path, bytes);
        free(data);
        data = NULL;
    }
done:
    fclose(f);
    return data;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.incept INPUT.npy [TOP_K]\n", argv[0]);
        return 2;
    }
    size_t top = argc > 3 ? (size_t)strtoul(argv[3], NULL, 10) : 5;
    incept_model *model = NULL;
    if (incept_model_load(argv[1], 0, &model) != INCEPT_STATUS_OK) {
        fprintf(stderr, "classify: %s\n", incept_last_error());
        return 1;
    }
    incept_tensor_info in, out;
    if (incept_model_input_count(model) != 1 || incept_model_input_info(model, 0, &in) != INCEPT_STATUS_OK ||
        incept_model_output_info(model, 0, &out) != INCEPT_STATUS_OK || in.dtype != INCEPT_DTYPE_F32 ||
        out.dtype != INCEPT_DTYPE_F32) {
        fprintf(stderr, "classify: expected one float32 input and a float32 output\n");
        incept_model_free(model);
        return 1;
    }
    printf("input '%s' [", in.name);
    for (size_t d = 0; d < in.rank; d++) printf(d ? ",%zu" : "%zu", in.shape[d]);
    printf("], output '%s'\n", out.name);

    float *x = read_npy(argv[2], in.byte_size);
    float *y = malloc(out.byte_size);
    int status = 1;
    if (x && y) {
        const void *inputs[1] = {x};
        void *outputs[1] = {y};
        size_t in_bytes[1] = {in.byte_size}, out_bytes[1] = {out.byte_size};
        if (incept_model_run(model, inputs, in_bytes, 1, outputs, out_bytes, 1) != INCEPT_STATUS_OK) {
            fprintf(stderr, "classify: %s\n", incept_last_error());
        } else {
            size_t n = out.byte_size / sizeof(float);
            /* Selection of the top-k, largest first (ties: lower index first). */
            for (size_t k = 0; k < top && k < n; k++) {
                size_t best = n;
                for (size_t i = 0; i < n; i++) {
                    int taken = y[i] != y[i]; /* NaN marks a printed entry (and NaN scores) */
                    if (!taken && (best == n || y[i] > y[best])) best = i;
                }
                if (best == n) break;
                printf("%zu %.6f\n", best, y[best]);
                y[best] = 0.0f / 0.0f;
            }
            status = 0;
        }
    }
    free(x);
    free(y);
    incept_model_free(model);
    return status;
}
