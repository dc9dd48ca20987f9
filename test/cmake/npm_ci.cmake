# Installs the npm dependencies of a node test folder (test/interop: live-mutex; test/browser:
# playwright-core; pinned by package-lock.json) into <DIR>/node_modules with `npm ci`, unless the
# node_modules there was installed by this script from the same package-lock.json (a stamp holds
# the lockfile's SHA-256). PACKAGE (default live-mutex) is the package checked for afterwards.
#
#   cmake -DNPM=/usr/bin/npm -DDIR=<source>/test/interop [-DPACKAGE=live-mutex] -P npm_ci.cmake
#
# --ignore-scripts: live-mutex's postinstall only copies shell helpers into $HOME (and may curl
# one from GitHub); the tests need none of it.
cmake_minimum_required(VERSION 3.25)

if(NOT NPM OR NOT DIR)
  message(FATAL_ERROR "usage: cmake -DNPM=<npm> -DDIR=<test folder> [-DPACKAGE=<name>] -P npm_ci.cmake")
endif()
if(NOT PACKAGE)
  set(PACKAGE live-mutex)
endif()

set(lock "${DIR}/package-lock.json")
set(stamp "${DIR}/node_modules/.lmx-npm-ci-stamp")
if(NOT EXISTS "${lock}")
  message(FATAL_ERROR "${lock} is missing")
endif()
file(SHA256 "${lock}" want)

if(EXISTS "${stamp}" AND EXISTS "${DIR}/node_modules/${PACKAGE}/package.json")
  file(READ "${stamp}" have)
  string(STRIP "${have}" have)
  if(have STREQUAL want)
    message(STATUS "node_modules is up to date with package-lock.json (${want}); skipping npm ci")
    return()
  endif()
endif()

message(STATUS "running: npm ci --no-audit --no-fund --ignore-scripts in ${DIR}")
execute_process(
  COMMAND "${NPM}" ci --no-audit --no-fund --ignore-scripts
  WORKING_DIRECTORY "${DIR}"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  file(REMOVE "${stamp}")
  message(FATAL_ERROR "npm ci failed (${rc})")
endif()
if(NOT EXISTS "${DIR}/node_modules/${PACKAGE}/package.json")
  message(FATAL_ERROR "npm ci succeeded but node_modules/${PACKAGE} is missing")
endif()
file(WRITE "${stamp}" "${want}\n")
