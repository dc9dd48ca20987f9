# What `cmake --install` adds besides the command and the libraries (man page, browser client,
# Grafana dashboard, docs), and with LMX_PACKAGE the Debian packages, built from a release build
# with `cpack -G DEB` (scripts/package.sh):
#   lmx         /usr/bin/lmx, its man page and bash completion, the browser client and the Grafana
#               dashboard, the systemd unit, /etc/lmx/broker.json; creates the lmx system user
#   liblmx-dev  headers, static libraries and the CMake package for find_package(lmx)
# Runtime dependencies of lmx are computed by dpkg-shlibdeps; liblmx-dev names the -dev packages
# its headers include.

# What the lmx package installs besides the command (apps/lmx installs that and its completion).
set(lmx_doc_dir ${CMAKE_INSTALL_DATADIR}/doc/lmx)
set(lmx_man ${PROJECT_BINARY_DIR}/packaging/lmx.1.gz)
set(lmx_changelog ${PROJECT_BINARY_DIR}/packaging/changelog.gz)
find_program(LMX_GZIP gzip REQUIRED)
# Debian wants manual pages and changelogs compressed at the highest level, without a timestamp.
add_custom_command(OUTPUT ${lmx_man} ${lmx_changelog}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/packaging
  COMMAND ${LMX_GZIP} -9n -c ${PROJECT_SOURCE_DIR}/packaging/lmx.1 > ${lmx_man}
  COMMAND ${LMX_GZIP} -9n -c ${PROJECT_SOURCE_DIR}/packaging/debian/changelog > ${lmx_changelog}
  DEPENDS ${PROJECT_SOURCE_DIR}/packaging/lmx.1 ${PROJECT_SOURCE_DIR}/packaging/debian/changelog
  VERBATIM)
add_custom_target(lmx_package_files ALL DEPENDS ${lmx_man} ${lmx_changelog})

install(FILES ${lmx_man} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT lmx)
install(FILES ${PROJECT_SOURCE_DIR}/libs/broker/web/lmx.js ${PROJECT_SOURCE_DIR}/libs/broker/web/lmx.d.ts
              ${PROJECT_SOURCE_DIR}/libs/broker/web/dashboard.html
        DESTINATION ${CMAKE_INSTALL_DATADIR}/lmx/web COMPONENT lmx)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/grafana/lmx-dashboard.json
        DESTINATION ${CMAKE_INSTALL_DATADIR}/lmx/grafana COMPONENT lmx)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/debian/copyright ${lmx_changelog} DESTINATION ${lmx_doc_dir} COMPONENT lmx)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/debian/copyright ${lmx_changelog}
        DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/liblmx-dev COMPONENT dev)
install(FILES ${PROJECT_SOURCE_DIR}/docs/operations.md ${PROJECT_SOURCE_DIR}/docs/cli.md
              ${PROJECT_SOURCE_DIR}/docs/guarantees.md ${PROJECT_SOURCE_DIR}/docs/security.md
        DESTINATION ${lmx_doc_dir} COMPONENT lmx)
install(FILES ${PROJECT_SOURCE_DIR}/docs/client.md DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/liblmx-dev COMPONENT dev)

# The rest is the package build's alone (the package preset, LMX_PACKAGE): the unit and the
# settings go to absolute paths, where systemd and dpkg look, which an install under another
# prefix must not touch.
if(NOT LMX_PACKAGE)
  return()
endif()
install(FILES ${PROJECT_SOURCE_DIR}/packaging/systemd/lmx.service DESTINATION /lib/systemd/system COMPONENT lmx)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/broker.json DESTINATION /etc/lmx COMPONENT lmx)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME lmx)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "lmx maintainers <maintainers@users.noreply.r-seed-7f7e11d8.example>")
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/packages)
set(CPACK_COMPONENTS_ALL lmx dev)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)

set(CPACK_DEBIAN_LMX_PACKAGE_NAME lmx)
set(CPACK_DEBIAN_LMX_PACKAGE_SECTION net)
set(CPACK_DEBIAN_LMX_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_LMX_PACKAGE_SOURCE lmx)
# adduser: the postinst creates the lmx system user. Computed library dependencies are added.
set(CPACK_DEBIAN_LMX_PACKAGE_DEPENDS "adduser")
# The first line of each description is its package's synopsis. Empty, the common summary is not
# put before them (CPack would give both packages the same synopsis).
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "")
string(CONCAT CPACK_DEBIAN_LMX_DESCRIPTION
  "networked mutex and semaphore broker\n"
  "A lock broker and its command line client: binary mutexes, counting\n"
  "semaphores, shared locks and multi-key locks on string keys over TCP, Unix\n"
  "sockets and WebSocket, with leases, FIFO wait queues and fencing tokens. It\n"
  "speaks the live-mutex protocol.\n"
  "This package runs the broker as a systemd service.")
set(CPACK_DEBIAN_LMX_PACKAGE_CONTROL_EXTRA
  ${PROJECT_SOURCE_DIR}/packaging/debian/postinst ${PROJECT_SOURCE_DIR}/packaging/debian/prerm
  ${PROJECT_SOURCE_DIR}/packaging/debian/postrm ${PROJECT_SOURCE_DIR}/packaging/debian/conffiles)

set(CPACK_DEBIAN_DEV_PACKAGE_NAME liblmx-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_PACKAGE_SOURCE lmx)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libboost1.81-dev, libboost-json1.81-dev, libssl-dev")
string(CONCAT CPACK_DEBIAN_DEV_DESCRIPTION
  "C++20 client library of the lmx lock broker\n"
  "Headers, static libraries and the CMake package (find_package(lmx)) of the\n"
  "lmx client: co_await client.acquire(key) returns a guard that releases the\n"
  "lock when it goes out of scope, over TCP, Unix sockets, WebSocket and TLS.")

include(CPack)
