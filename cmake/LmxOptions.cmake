# Warning and sanitizer flags shared by every lmx target (applied through lmx_target_defaults).
function(lmx_target_defaults target)
  target_compile_features(${target} PUBLIC cxx_std_20)
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
