# The roofline loops of bench/roofline_*.c as a small C library, shared by the Google Benchmark programs
# and by `sinkkit bench`, so that both divide kernel times by the same loops. Included from the top-level
# CMakeLists.txt, because source file properties apply only to targets of the directory that sets them.
set(sinkkit_roofline_dir ${PROJECT_SOURCE_DIR}/bench)
set(sinkkit_roofline_sources ${sinkkit_roofline_dir}/roofline_generic.c)

# The plain-C roofline is built like the library's scalar code, at the baseline flags. It must stay a
# loop of stores rather than become a memcpy call.
check_c_compiler_flag(-fno-tree-loop-distribute-patterns SINKKIT_ROOFLINE_HAS_NO_LOOP_PATTERNS)
if(SINKKIT_ROOFLINE_HAS_NO_LOOP_PATTERNS)
  set_source_files_properties(${sinkkit_roofline_dir}/roofline_generic.c PROPERTIES
                              COMPILE_OPTIONS -fno-tree-loop-distribute-patterns)
else()
  set_source_files_properties(${sinkkit_roofline_dir}/roofline_generic.c PROPERTIES COMPILE_OPTIONS -fno-builtin)
endif()

if(SINKKIT_COMPILER_HAS_AVX2)
  list(APPEND sinkkit_roofline_sources ${sinkkit_roofline_dir}/roofline_avx2.c)
  set_source_files_properties(${sinkkit_roofline_dir}/roofline_avx2.c PROPERTIES
                              COMPILE_OPTIONS "${SINKKIT_AVX2_FLAGS}")
endif()
if(SINKKIT_COMPILER_HAS_AVX512)
  list(APPEND sinkkit_roofline_sources ${sinkkit_roofline_dir}/roofline_avx512.c)
  set_source_files_properties(${sinkkit_roofline_dir}/roofline_avx512.c PROPERTIES
                              COMPILE_OPTIONS "${SINKKIT_AVX512_FLAGS}")
endif()

add_library(sinkkit_roofline STATIC ${sinkkit_roofline_sources})
target_include_directories(sinkkit_roofline PUBLIC ${sinkkit_roofline_dir})
target_link_libraries(sinkkit_roofline PUBLIC sinkkit_config)
