/* byte_level.h — GPT-2's byte-level alphabet for the unit tests' synthetic BPE vocabularies:
 * byte b as the UTF-8 text of the code point that stands for it. */
#ifndef PLUMB_TEST_BYTE_LEVEL_H
#define PLUMB_TEST_BYTE_LEVEL_H

static inline void byte_level(unsigned b, char *out) {
    unsigned cp;
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) cp = b;
    else if (b <= 0x20) cp = 256 + b;
    else if (b <= 0xA0) cp = 256 + 33 + (b - 0x7F);
    else cp = 256 + 67;
    if (cp < 0x80) out[0] = (char)cp, out[1] = 0;
    else out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
}

#endif
