include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(LMX_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/lmx)

# Two install components, one Debian package each (cmake/LmxPackage.cmake): `lmx` (the command,
# its service and docs) and `dev` (headers, libraries and the CMake package of liblmx-dev).
install(TARGETS lmx_core lmx_transport lmx_etcd lmx_broker lmx_client
  EXPORT lmxTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT dev
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
foreach(lib core transport etcd broker client)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/libs/${lib}/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)
endforeach()
install(EXPORT lmxTargets NAMESPACE lmx:: DESTINATION ${LMX_INSTALL_CMAKEDIR} COMPONENT dev)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/lmxConfig.cmake.in
  ${PROJECT_BINARY_DIR}/lmxConfig.cmake INSTALL_DESTINATION ${LMX_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/lmxConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/lmxConfig.cmake ${PROJECT_BINARY_DIR}/lmxConfigVersion.cmake
  DESTINATION ${LMX_INSTALL_CMAKEDIR} COMPONENT dev)

if(LMX_BUILD_APPS)
  include(LmxPackage)
elseif(LMX_PACKAGE)
  message(FATAL_ERROR "LMX_PACKAGE needs LMX_BUILD_APPS (the packages carry the lmx command)")
endif()
