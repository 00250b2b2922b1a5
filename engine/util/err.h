/*
 * Error messages into the caller's buffer: every engine call that can fail
 * takes (char *err, int errlen) and fills it with what went wrong, naming
 * the file, field or tensor.
 */
#ifndef SG_ERR_H
#define SG_ERR_H

#include <stdarg.h>

/* printf into err (nothing when err is NULL or errlen <= 0); returns -1,
 * so `return sg_err(err, errlen, "...")` reports and fails at once. */
int sg_err(char *err, int errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int sg_verr(char *err, int errlen, const char *fmt, va_list ap);

#endif
