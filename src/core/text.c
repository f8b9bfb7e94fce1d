/* Text from outside made safe to print: see text.h. */
#include "core/text.h"

#include <stdint.h>

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid:
 * no overlong forms, no surrogates, nothing past U+10FFFF. *cp gets the
 * code point. */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

/* Code points shown escaped although valid: controls, and characters that
 * are invisible or reorder the text around them. */
static int hidden(uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0xFEFF || cp == 0x00AD ||
           (cp >= 0x200B && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202E) ||
           (cp >= 0x2060 && cp <= 0x2069);
}

size_t dpt_text_clean(char *out, size_t out_size, const char *in, size_t in_len, size_t max_cols)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)in;
    size_t n = 0;
    if (in_len == (size_t)-1)
        while (s[n])
            n++;
    else
        n = in_len;
    size_t o = 0, cols = 0;
    if (out_size == 0)
        return 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t len = utf8_seq(s + i, n - i, &cp);
        int esc = len == 0 || hidden(cp);
        if (esc && len == 0)
            len = 1; /* escape one bad byte, then resynchronise */
        size_t bytes = esc ? 4 * len : len, w = esc ? 4 * len : 1;
        if (o + bytes + 1 > out_size || (max_cols && cols + w > max_cols))
            break;
        if (esc) {
            for (size_t k = 0; k < len; k++) {
                out[o++] = '\\';
                out[o++] = 'x';
                out[o++] = hex[s[i + k] >> 4];
                out[o++] = hex[s[i + k] & 15];
            }
        } else {
            for (size_t k = 0; k < len; k++)
                out[o++] = (char)s[i + k];
        }
        cols += w;
        i += len;
    }
    out[o] = '\0';
    return cols;
}
