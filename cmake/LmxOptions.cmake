# Warning and sanitizer flags shared by every lmx target (applied through lmx_target_defaults).
function(lmx_target_defaults target)
  target_compile_features(${target} PUBLIC cxx_std_20)
  # lmx's own targets compile Asio and Beast once (libs/transport/src/asio_impl.cpp). PRIVATE:
  # a program that uses lmx keeps Asio as it likes it (header-only, its own TLS); the same
  # sources compiled either way define the same functions. Asio's feature macros (such as
  # BOOST_ASIO_NO_DEPRECATED, which changes how handlers are allocated) must not differ between
  # lmx and the program, so lmx builds with Asio's defaults.
  target_compile_definitions(${target} PRIVATE BOOST_ASIO_SEPARATE_COMPILATION BOOST_BEAST_SEPARATE_COMPILATION)
  if(PROJECT_IS_TOP_LEVEL)
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow)
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      # GCC 12 reports Asio's coroutine frame allocator as mismatched new/delete (a false positive).
      target_compile_options(${target} PRIVATE -Wno-mismatched-new-delete)
    endif()
    if(LMX_WERROR)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endif()
endfunction()

if(LMX_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# ThreadSanitizer, for the client used from many threads (preset "tsan"). It cannot share a
# process with ASan, so that build runs the broker of the ASan build (see test/tsan).
option(LMX_TSAN "Build with ThreadSanitizer" OFF)
if(LMX_TSAN)
  if(LMX_SANITIZE)
    message(FATAL_ERROR "LMX_TSAN and LMX_SANITIZE exclude each other")
  endif()
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL 12)
    # GCC 12 warns that TSan ignores atomic_thread_fence, which Asio's handler completion uses
    # (std_fenced_block). Those handoffs also pass the scheduler's or strand's mutex, which TSan sees.
    add_compile_options(-Wno-tsan)
  endif()
endif()

# The library in the current libs/<name> folder: every src/*.cpp, public headers under include/,
# built as lmx_<name> and used (and exported) as lmx::<name>.
function(lmx_add_library name)
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/*.cpp)
  add_library(lmx_${name} ${sources})
  add_library(lmx::${name} ALIAS lmx_${name})
  set_target_properties(lmx_${name} PROPERTIES EXPORT_NAME ${name} OUTPUT_NAME lmx_${name})
  target_include_directories(lmx_${name} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  lmx_target_defaults(lmx_${name})
endfunction()
