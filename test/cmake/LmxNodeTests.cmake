# Node-driven test folders (test/interop, test/browser): each *.test.mjs file of the folder is one
# CTest test run with `node --test`, after a fixture test <prefix>.npm_ci that installs the folder's
# npm dependencies (pinned by its package-lock.json). Needs node (>= 20) and npm; when either is
# missing the tests are still registered and FAIL with the reason (CI must provide them).
#
#   lmx_add_node_tests(PREFIX interop DIR <folder> PACKAGE live-mutex TIMEOUT 300
#                      [ENVIRONMENT VAR=value ...])
#
# Every test gets LMX_BINARY (the lmx executable) in its environment, plus ENVIRONMENT.

find_program(LMX_NODE_EXECUTABLE NAMES node nodejs DOC "Node.js, for the node-driven tests")
find_program(LMX_NPM_EXECUTABLE NAMES npm DOC "npm, for the node-driven tests")

set(lmx_node_missing "")
if(NOT LMX_NODE_EXECUTABLE)
  string(APPEND lmx_node_missing "node was not found (set LMX_NODE_EXECUTABLE). ")
else()
  execute_process(COMMAND ${LMX_NODE_EXECUTABLE} --version OUTPUT_VARIABLE lmx_node_version
                  OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE node_rc)
  string(REGEX MATCH "^v([0-9]+)" _ "${lmx_node_version}")
  if(NOT node_rc EQUAL 0 OR NOT CMAKE_MATCH_1 OR CMAKE_MATCH_1 LESS 20)
    string(APPEND lmx_node_missing "node ${lmx_node_version} at ${LMX_NODE_EXECUTABLE} is too old: need >= 20. ")
  endif()
endif()
if(NOT LMX_NPM_EXECUTABLE)
  string(APPEND lmx_node_missing "npm was not found (set LMX_NPM_EXECUTABLE). ")
endif()
if(NOT TARGET lmx)
  string(APPEND lmx_node_missing "the lmx executable is not part of this build (LMX_BUILD_APPS=OFF). ")
endif()
set(lmx_node_cmake_dir ${CMAKE_CURRENT_LIST_DIR})

function(lmx_add_node_tests)
  cmake_parse_arguments(A "" "PREFIX;DIR;PACKAGE;TIMEOUT" "ENVIRONMENT" ${ARGN})
  file(GLOB tests CONFIGURE_DEPENDS ${A_DIR}/*.test.mjs)
  set(fixture ${A_PREFIX}_deps)

  if(lmx_node_missing)
    message(WARNING "${A_PREFIX} tests cannot run and will fail: ${lmx_node_missing}")
    set(fail_cmd ${CMAKE_COMMAND} "-DWHY=${A_PREFIX} tests cannot run: ${lmx_node_missing}"
                 -P ${lmx_node_cmake_dir}/missing.cmake)
    add_test(NAME ${A_PREFIX}.npm_ci COMMAND ${fail_cmd})
    set_tests_properties(${A_PREFIX}.npm_ci PROPERTIES LABELS ${A_PREFIX} FIXTURES_SETUP ${fixture})
    foreach(file ${tests})
      get_filename_component(name ${file} NAME_WE)
      add_test(NAME ${A_PREFIX}.${name} COMMAND ${fail_cmd})
      set_tests_properties(${A_PREFIX}.${name} PROPERTIES LABELS ${A_PREFIX} FIXTURES_REQUIRED ${fixture})
    endforeach()
    return()
  endif()

  message(STATUS "${A_PREFIX} tests: ${LMX_NODE_EXECUTABLE} (${lmx_node_version}), ${LMX_NPM_EXECUTABLE}")
  add_test(NAME ${A_PREFIX}.npm_ci
           COMMAND ${CMAKE_COMMAND} -DNPM=${LMX_NPM_EXECUTABLE} -DDIR=${A_DIR} -DPACKAGE=${A_PACKAGE}
                   -P ${lmx_node_cmake_dir}/npm_ci.cmake)
  set_tests_properties(${A_PREFIX}.npm_ci PROPERTIES LABELS ${A_PREFIX} FIXTURES_SETUP ${fixture} TIMEOUT 300
                       ENVIRONMENT "${A_ENVIRONMENT}")
  set(env "LMX_BINARY=$<TARGET_FILE:lmx>" ${A_ENVIRONMENT})
  foreach(file ${tests})
    get_filename_component(name ${file} NAME_WE)  # basic.test.mjs -> basic
    add_test(NAME ${A_PREFIX}.${name}
             COMMAND ${LMX_NODE_EXECUTABLE} --test --test-reporter=spec ${file}
             WORKING_DIRECTORY ${A_DIR})
    set_tests_properties(${A_PREFIX}.${name} PROPERTIES
      LABELS ${A_PREFIX}
      FIXTURES_REQUIRED ${fixture}
      ENVIRONMENT "${env}"
      TIMEOUT ${A_TIMEOUT})
  endforeach()
endfunction()
