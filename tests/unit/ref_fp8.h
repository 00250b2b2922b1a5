/*
 * Plain references for FP8 e4m3 and DeepSeek's act_quant, written from the
 * format's definition (not from the engine's code), shared by the op tests.
 */
#ifndef SG_REF_FP8_H
#define SG_REF_FP8_H

/* Value of an e4m3fn code. */
double ref_e4m3_value(int code);

/* Nearest e4m3 value to x (ties to the even code, |x| saturating at 448). */
double ref_e4m3_round(float x);

/* act_quant then dequantize, one row of len values, blocks of 128. */
void ref_act_quant(const float *x, int len, int ue8m0, float *out);

#endif
