# Third-party dependencies, all from Debian 12 packages (scripts/install_deps.sh installs them).
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(absl CONFIG REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(PkgConfig REQUIRED)

# OpenBLAS: Debian ships a pkg-config file and a CBLAS header under openblas-pthread.
pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas)

find_package(Protobuf REQUIRED)
find_package(yaml-cpp REQUIRED)
if(QLLM_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
find_program(QLLM_SYSTEM_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT QLLM_SYSTEM_PYTHON)
  set(QLLM_SYSTEM_PYTHON /usr/bin/python3)
endif()
