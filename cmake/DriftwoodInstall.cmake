# Driftwood as an installed package: `cmake --install BUILD --prefix DIR`
# puts the headers an embedder includes, the static libraries and an exported
# CMake package under DIR, so that another project can write
#
#   find_package(Driftwood REQUIRED)
#   target_link_libraries(app PRIVATE Driftwood::raft Driftwood::grpc_transport)
#
# Targets a consumer links (namespace Driftwood::):
#   raft                  Server and everything it needs: the core, the log
#                         stores (memory, RocksDB), snapshots, the runtime
#                         (an INTERFACE target over the libraries below).
#   grpc_transport        rpc::GrpcTransport (rpc/grpc_transport.h).
#   statemachine          the key-value command encoding and the in-memory
#                         and RocksDB key-value state machines.
#   in_process_transport  raft::InProcessNetwork, servers of one process.
# The component libraries (raft_core, raft_storage, ...) are exported too,
# because the umbrellas and each other link them; linking raft_core alone
# suffices to drive the core yourself (README "Embedding the core").
#
# Headers install at the paths they are included by (include/raft/...). Only
# the headers of those targets an embedder includes, plus what they include,
# are installed; the peer protocol's codec (rpc/codec.h) and its generated
# protobuf headers stay private: rpc/grpc_transport.h includes neither.
# tests/install/install_test.sh checks that every installed header's
# Driftwood includes are installed too.
#
# Included at the end of the top-level CMakeLists.txt, after every target
# exists.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(DRIFTWOOD_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/Driftwood)
# project() carries no version yet; the package reports this one.
set(DRIFTWOOD_PACKAGE_VERSION 0.1.0)

# Umbrella targets (also usable in-tree under the same names as aliases).
add_library(driftwood_raft INTERFACE)
target_link_libraries(driftwood_raft INTERFACE
  raft_core raft_util raft_storage raft_storage_rocksdb raft_state_machine
  raft_server raft_runtime)
add_library(driftwood_statemachine INTERFACE)
target_link_libraries(driftwood_statemachine INTERFACE
  kv_command memory_kv_state_machine rocksdb_kv_state_machine)
add_library(Driftwood::raft ALIAS driftwood_raft)
add_library(Driftwood::statemachine ALIAS driftwood_statemachine)
add_library(Driftwood::grpc_transport ALIAS driftwood_rpc_transport)
add_library(Driftwood::in_process_transport ALIAS raft_in_process_transport)

# Every Driftwood target links raft_core, whose headers need C++20: a
# consumer compiles as C++20 (or later) without setting it itself.
target_compile_features(raft_core INTERFACE cxx_std_20)

set_target_properties(driftwood_raft PROPERTIES EXPORT_NAME raft)
set_target_properties(driftwood_statemachine PROPERTIES EXPORT_NAME statemachine)
set_target_properties(driftwood_rpc_transport PROPERTIES
  EXPORT_NAME grpc_transport)
set_target_properties(raft_in_process_transport PROPERTIES
  EXPORT_NAME in_process_transport)
set_target_properties(driftwood_rpc_codec PROPERTIES EXPORT_NAME rpc_codec)
set_target_properties(driftwood_rpc_proto PROPERTIES EXPORT_NAME rpc_proto)
# Installed archives share a lib/ folder with other software: each file name
# starts with driftwood_ (libdriftwood_raft_core.a, ...).
foreach(target IN ITEMS raft_util raft_core raft_storage raft_storage_rocksdb
    raft_server raft_runtime raft_in_process_transport kv_command
    memory_kv_state_machine rocksdb_kv_state_machine)
  set_target_properties(${target} PROPERTIES OUTPUT_NAME driftwood_${target})
endforeach()
# Static libraries name even their PRIVATE links in their interface (as
# $<LINK_ONLY:...>), so our warning set must be exported as well; a consumer
# gets nothing from it (it has no link items).
set_target_properties(driftwood_warnings PROPERTIES
  EXPORT_NAME internal_warnings)

install(TARGETS
    driftwood_raft driftwood_statemachine driftwood_warnings
    raft_util raft_core raft_storage raft_storage_rocksdb raft_state_machine
    raft_server raft_runtime raft_in_process_transport
    driftwood_rpc_proto driftwood_rpc_codec driftwood_rpc_transport
    kv_command memory_kv_state_machine rocksdb_kv_state_machine
  EXPORT DriftwoodTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# The public headers: those docs/design.md "Layout and dependency rule" names
# for embedders, and (added when installing) every Driftwood header they
# include, directly or not: the core's log, progress and inflight window, the
# runtime's step functions, ... A header that is included must be installed,
# and one that is not stays internal.
set(DRIFTWOOD_PUBLIC_HEADERS
  raft/core/config.h
  raft/core/log_reader.h
  raft/core/message.h
  raft/core/node.h
  raft/core/ready.h
  raft/core/status.h
  raft/core/types.h
  raft/storage/log_store.h
  raft/storage/memory_log_store.h
  raft/storage/rocksdb_log_store.h
  raft/storage/snapshot_store.h
  raft/state_machine.h
  raft/transport.h
  raft/server/in_process_transport.h
  raft/server/node_runtime.h
  raft/server/ready_processor.h
  raft/server/recovery.h
  raft/server/replica_state.h
  raft/server/runtime_types.h
  raft/server/server.h
  rpc/grpc_transport.h
  statemachine/kv_command.h
  statemachine/memory_kv_state_machine.h
  statemachine/rocksdb_kv_state_machine.h)
# The walk over `#include "raft/...", "rpc/...", "statemachine/..."` runs at
# install time, so it follows the headers as they are then, not as they were
# at the last configure. Each header lands at the path it is included by
# (include/raft/server/server.h); an included header that does not exist
# fails the install.
set(driftwood_install_headers_code [==[
  set(pending ${DRIFTWOOD_PUBLIC_HEADERS})
  set(seen)
  while(pending)
    list(POP_FRONT pending header)
    list(FIND seen ${header} index)  # (IN_LIST needs a policy set)
    if(index GREATER -1)
      continue()
    endif()
    list(APPEND seen ${header})
    set(source "${DRIFTWOOD_SOURCE_DIR}/${header}")
    if(NOT EXISTS "${source}")
      message(FATAL_ERROR "Driftwood: ${header} is included by a public "
        "header but does not exist")
    endif()
    file(STRINGS "${source}" lines
      REGEX "^#include \"(raft|rpc|statemachine)/[^\"]+\"")
    foreach(line IN LISTS lines)
      string(REGEX REPLACE "^#include \"([^\"]+)\".*" "\\1" included
        "${line}")
      list(APPEND pending ${included})
    endforeach()
    cmake_path(GET header PARENT_PATH header_dir)
    file(INSTALL "${source}" DESTINATION
      "${CMAKE_INSTALL_PREFIX}/${DRIFTWOOD_INCLUDEDIR}/${header_dir}")
  endwhile()
]==])
install(CODE "
  set(DRIFTWOOD_SOURCE_DIR \"${PROJECT_SOURCE_DIR}\")
  set(DRIFTWOOD_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
  set(DRIFTWOOD_PUBLIC_HEADERS \"${DRIFTWOOD_PUBLIC_HEADERS}\")
  ${driftwood_install_headers_code}")

install(EXPORT DriftwoodTargets
  NAMESPACE Driftwood::
  DESTINATION ${DRIFTWOOD_INSTALL_CMAKEDIR})
configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/DriftwoodConfig.cmake.in
  ${PROJECT_BINARY_DIR}/DriftwoodConfig.cmake
  INSTALL_DESTINATION ${DRIFTWOOD_INSTALL_CMAKEDIR})
# Before 1.0 a minor version may break the interface.
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/DriftwoodConfigVersion.cmake
  VERSION ${DRIFTWOOD_PACKAGE_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES
    ${PROJECT_BINARY_DIR}/DriftwoodConfig.cmake
    ${PROJECT_BINARY_DIR}/DriftwoodConfigVersion.cmake
  DESTINATION ${DRIFTWOOD_INSTALL_CMAKEDIR})
