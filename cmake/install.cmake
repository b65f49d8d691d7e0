# `cmake --install` lays out headers, the library and a package config, so that a LibTorch
# project can `find_package(steadystep)` and link `steadystep::steadystep`.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS steadystep EXPORT steadystepTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY csrc/include/steadystep DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/generated/steadystep/version.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/steadystep)

set(_config_dir ${CMAKE_INSTALL_LIBDIR}/cmake/steadystep)
install(EXPORT steadystepTargets NAMESPACE steadystep:: DESTINATION ${_config_dir})
configure_package_config_file(cmake/steadystepConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/steadystepConfig.cmake INSTALL_DESTINATION ${_config_dir})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/steadystepConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${CMAKE_CURRENT_BINARY_DIR}/steadystepConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/steadystepConfigVersion.cmake
  DESTINATION ${_config_dir})
