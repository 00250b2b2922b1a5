#include <stdio.h>

#include "err.h"

int
sg_verr(char *err, int errlen, const char *fmt, va_list ap)
{
    if (err != NULL && errlen > 0)
        vsnprintf(err, errlen, fmt, ap);
    return -1;
}

int
sg_err(char *err, int errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    sg_verr(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}
