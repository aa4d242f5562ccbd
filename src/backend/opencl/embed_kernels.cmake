# embed_kernels.cmake — writes the OpenCL kernels (DIR/*.cl) into a C file (OUT) as
# plumb__opencl_sources[]: the files every kernel uses (common.cl, quant.cl) first, then the others
# by name, each a NUL-terminated string, so that the backend builds its program from its binary.
# Run as: cmake -DDIR=... -DOUT=... -P embed_kernels.cmake
file(GLOB files RELATIVE "${DIR}" "${DIR}/*.cl")
list(SORT files)
list(REMOVE_ITEM files "common.cl" "quant.cl")
list(PREPEND files "common.cl" "quant.cl")
set(arrays "")
set(table "")
set(i 0)
foreach(f IN LISTS files)
  file(READ "${DIR}/${f}" hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
  string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" body "${body}")
  string(APPEND arrays "static const char src_${i}[] = { /* ${f} */\n${body}0x00};\n")
  string(APPEND table "    {\"${f}\", src_${i}},\n")
  math(EXPR i "${i} + 1")
endforeach()
file(WRITE "${OUT}" "/* opencl_kernels.c — generated from ${DIR} by embed_kernels.cmake; do not edit. */\n"
     "#include \"backend/opencl/opencl_internal.h\"\n\n${arrays}\n"
     "const plumb_opencl_source plumb__opencl_sources[] = {\n${table}};\n"
     "const int plumb__opencl_n_sources = ${i};\n")
