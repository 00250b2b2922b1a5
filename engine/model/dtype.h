/*
 * Element types of checkpoints and caches, and exact scalar conversions.
 */
#ifndef SG_DTYPE_H
#define SG_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum {
    SG_F32 = 0,
    SG_BF16,
    SG_F8_E4M3,     /* e4m3fn: no inf, NaN = 0x7f/0xff, max 448 */
    SG_I32,
    SG_I64,
    SG_DTYPE_COUNT
} sg_dtype;

size_t sg_dtype_size(sg_dtype t);
const char *sg_dtype_name(sg_dtype t);          /* safetensors spelling */
int sg_dtype_parse(const char *s, sg_dtype *out); /* 0 ok, -1 unknown */

static inline float
sg_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;

    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even, as torch does; NaN stays NaN. */
static inline uint16_t
sg_f32_to_bf16(float f)
{
    uint32_t u;

    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* e4m3fn -> f32 through a table built once (sg_fp8_init is idempotent and
 * thread-safe; every entry point that needs the table calls it). */
extern float sg_e4m3_table[256];
void sg_fp8_init(void);

static inline float
sg_e4m3_to_f32(uint8_t v)
{
    return sg_e4m3_table[v];
}

/* f32 -> e4m3fn, round to nearest even, saturating to +-448 (the caller
 * clamps first, as DeepSeek's act_quant does); subnormals exact. */
uint8_t sg_f32_to_e4m3(float x);

#endif
