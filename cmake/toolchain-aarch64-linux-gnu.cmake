# Cross-compiles for 64-bit Arm Linux with Debian's aarch64-linux-gnu toolchain. The :arm64 packages
# (libcmocka-dev:arm64, libsleef-dev:arm64, libbenchmark-dev:arm64) install into the host's
# /usr/lib/aarch64-linux-gnu and /usr/include, so the sysroot is the host's own root.
#
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64-linux-gnu.cmake
#
# ctest then runs each test program through qemu-aarch64 (see docs/aarch64.md).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# The cross compiler finds its own libc under /usr/aarch64-linux-gnu; the :arm64 libraries live under
# /usr/lib/aarch64-linux-gnu, which CMake finds through CMAKE_LIBRARY_ARCHITECTURE. Programs
# (pkg-config, the compilers) come from the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# pkg-config (used for SLEEF) must read the arm64 .pc files, never the host's.
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")

# ctest runs each test program through this emulator. -L makes qemu take the arm64 dynamic loader from the
# cross toolchain's libc6-arm64-cross. The :arm64 library packages pull in libc6:arm64 too, whose libc.so.6
# in /usr/lib/aarch64-linux-gnu the loader would otherwise pick up: a loader and libc from two different
# builds of glibc 2.36 hang in the first pthread_create. LD_LIBRARY_PATH (set inside the guest by -E) keeps
# libc, libm and libpthread from the same cross build as the loader. QEMU_CPU in the environment picks the
# emulated CPU: cortex-a72 has no SVE, max has SVE with 512-bit vectors by default.
set(CMAKE_CROSSCOMPILING_EMULATOR
    "/usr/bin/qemu-aarch64;-L;/usr/aarch64-linux-gnu;-E;LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib")
