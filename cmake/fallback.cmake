# Third-party libraries, or dptrain's own stand-ins where they are missing.
#
# The usual build (scripts/deps.txt) finds OpenBLAS, stb, cJSON and zlib and
# fails when one is missing. A bare GPU machine (docs/gpu.md: CUDA, cuDNN and
# PyTorch, no Debian dev packages) lacks them, so DPT_FALLBACK replaces what
# is missing by code in src/compat/:
#   ""      (default) every library required, as before
#   auto    a stand-in for each library not found
#   a list  (cblas;stb;cjson;zlib) those stand-ins even when the library is
#           there: how the stand-ins are tested on a machine that has both
# The stand-ins:
#   cblas  cblas_sgemm/cblas_sger on dptrain's own GEMM (src/ops/gemm.c)
#   cjson  the part of cJSON's API dptrain uses, own parser and printer
#   stb    stbi_* for binary PGM/PPM only (PNG and JPEG refused, saying so);
#          tests that write images with stb_image_write are not built
#   zlib   zlib's prototypes for the functions dptrain calls, linked against
#          the runtime libz.so.1 that every Linux has (no zlib.h needed)
# A build with stand-ins is for running on such a machine; it installs no
# CMake package config that would find the real libraries.
set(DPT_FALLBACK "" CACHE STRING
  "Own stand-ins for missing libraries: empty (none), auto, or a list of cblas;stb;cjson;zlib")
set(DPT_FALLBACK_SOURCES "")
set(DPT_FALLBACK_SKIPPED_TESTS "")
set(DPT_FALLBACK_USED "")
set(_dpt_compat ${CMAKE_SOURCE_DIR}/src/compat)

# _dpt_use(name found): whether the stand-in for name is used.
macro(_dpt_use name found out)
  set(${out} OFF)
  if(DPT_FALLBACK STREQUAL "auto")
    if(NOT ${found})
      set(${out} ON)
    endif()
  elseif(${name} IN_LIST DPT_FALLBACK)
    set(${out} ON)
  endif()
  if(${out})
    list(APPEND DPT_FALLBACK_USED ${name})
  endif()
endmacro()
foreach(n ${DPT_FALLBACK})
  if(NOT n MATCHES "^(auto|cblas|stb|cjson|zlib)$")
    message(FATAL_ERROR "DPT_FALLBACK: unknown entry '${n}' (auto, or any of cblas;stb;cjson;zlib)")
  endif()
endforeach()

# Debian's OpenBLAS provides the CBLAS interface in libopenblas.
find_path(CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas x86_64-linux-gnu/openblas-pthread)
find_library(CBLAS_LIBRARY NAMES openblas)
set(_f OFF)
if(CBLAS_INCLUDE_DIR AND CBLAS_LIBRARY)
  set(_f ON)
endif()
_dpt_use(cblas _f _u)
if(_u)
  set(CBLAS_INCLUDE_DIR ${_dpt_compat}/cblas)
  set(CBLAS_LIBRARY "")
  list(APPEND DPT_FALLBACK_SOURCES ${_dpt_compat}/cblas_own.c)
elseif(NOT _f)
  message(FATAL_ERROR "OpenBLAS (cblas.h, libopenblas) not found: install libopenblas-dev, or configure with -DDPT_FALLBACK=auto")
endif()

find_path(STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb)
find_library(STB_LIBRARY NAMES stb)
set(_f OFF)
if(STB_INCLUDE_DIR AND STB_LIBRARY)
  set(_f ON)
endif()
_dpt_use(stb _f _u)
if(_u)
  set(STB_INCLUDE_DIR ${_dpt_compat}/stb)
  set(STB_LIBRARY "")
  list(APPEND DPT_FALLBACK_SOURCES ${_dpt_compat}/stb_own.c)
  # They write test images with stb_image_write, which the stand-in lacks.
  foreach(t test_augment test_stream test_data)
    list(APPEND DPT_FALLBACK_SKIPPED_TESTS ${CMAKE_SOURCE_DIR}/tests/${t}.c)
  endforeach()
elseif(NOT _f)
  message(FATAL_ERROR "stb (stb_image.h, libstb) not found: install libstb-dev, or configure with -DDPT_FALLBACK=auto")
endif()

find_path(CJSON_INCLUDE_DIR cJSON.h PATH_SUFFIXES cjson)
find_library(CJSON_LIBRARY NAMES cjson)
set(_f OFF)
if(CJSON_INCLUDE_DIR AND CJSON_LIBRARY)
  set(_f ON)
endif()
_dpt_use(cjson _f _u)
if(_u)
  set(CJSON_INCLUDE_DIR ${_dpt_compat}/cjson)
  set(CJSON_LIBRARY "")
  list(APPEND DPT_FALLBACK_SOURCES ${_dpt_compat}/cjson_own.c)
elseif(NOT _f)
  message(FATAL_ERROR "cJSON (cJSON.h, libcjson) not found: install libcjson-dev, or configure with -DDPT_FALLBACK=auto")
endif()

find_package(ZLIB QUIET)
_dpt_use(zlib ZLIB_FOUND _u)
if(_u)
  # The runtime library alone (no libz.so link, no zlib.h).
  find_library(DPT_ZLIB_RUNTIME NAMES libz.so.1 z)
  if(NOT DPT_ZLIB_RUNTIME)
    message(FATAL_ERROR "zlib: not even the runtime libz.so.1 was found")
  endif()
  set(DPT_ZLIB_LINK ${DPT_ZLIB_RUNTIME})
  set(DPT_ZLIB_PC ${DPT_ZLIB_RUNTIME})
  set(DPT_ZLIB_INCLUDE_DIR ${_dpt_compat}/zlib)
elseif(NOT ZLIB_FOUND)
  message(FATAL_ERROR "zlib (zlib.h, libz) not found: install zlib1g-dev, or configure with -DDPT_FALLBACK=auto")
else()
  set(DPT_ZLIB_LINK ZLIB::ZLIB)
  set(DPT_ZLIB_PC -lz)
  set(DPT_ZLIB_INCLUDE_DIR "")
endif()
if(DPT_ZLIB_INCLUDE_DIR)
  # zlib.h is included by library sources and tests alike.
  include_directories(BEFORE ${DPT_ZLIB_INCLUDE_DIR})
endif()

if(DPT_FALLBACK_USED)
  message(STATUS "dptrain: own stand-ins for: ${DPT_FALLBACK_USED} (DPT_FALLBACK=${DPT_FALLBACK}; src/compat/)")
endif()
