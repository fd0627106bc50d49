/* wquant.h -- quantizing WEIGHTS, for writing model files (elpis mkmodel,
 * control vectors). Simple round-to-nearest reference quantizers: they produce
 * valid blocks of every weight type the engine reads, not llama.cpp's
 * error-minimising search (random benchmark weights do not need it). The hot
 * path never calls these; activations use quant.h's quantizers. */
#ifndef ELPIS_WQUANT_H
#define ELPIS_WQUANT_H

#include "elpis/quant.h"

/* true if `t` can be written: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K */
bool elpis_wquant_supported(elpis_dtype t);
/* Quantize one row of n weights (n a multiple of the block size) into dst. */
void elpis_wquant_row(elpis_dtype t, const float *src, void *dst, int64_t n);

#endif
