# embed.cmake — writes the chat page (IN) into a C file (OUT) as plumb_srv_page_index[], so
# the server carries it in its binary. Run as: cmake -DIN=... -DOUT=... -P embed.cmake
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR bytes "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" body "${body}")
file(WRITE "${OUT}" "/* page_data.c — generated from ${IN} by embed.cmake; do not edit. */\n#include <stddef.h>\n"
     "const unsigned char plumb_srv_page_index[] = {\n${body}0x00};\n"
     "const size_t plumb_srv_page_index_len = ${bytes};\n")
