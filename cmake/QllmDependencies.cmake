# Third-party dependencies, all from Debian 12 packages (scripts/install_deps.sh installs them).
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(absl CONFIG REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(PkgConfig REQUIRED)

# OpenBLAS, the OpenMP build (libopenblas-openmp-dev): it shares libgomp's thread pool with the
# engine's own OpenMP loops, so BLAS calls made inside a parallel region run single-threaded
# instead of oversubscribing the cores (the pthread build spins a second pool).
find_path(QLLM_OPENBLAS_INCLUDE cblas.h
  PATHS /usr/include/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp NO_DEFAULT_PATH REQUIRED)
find_library(QLLM_OPENBLAS_LIB openblas
  PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp NO_DEFAULT_PATH REQUIRED)
add_library(qllm_openblas INTERFACE)
target_include_directories(qllm_openblas SYSTEM INTERFACE ${QLLM_OPENBLAS_INCLUDE})
target_link_libraries(qllm_openblas INTERFACE ${QLLM_OPENBLAS_LIB} OpenMP::OpenMP_CXX)
# The soname (libopenblas.so.0) is shared by both builds; the rpath pins the OpenMP one.
get_filename_component(QLLM_OPENBLAS_DIR ${QLLM_OPENBLAS_LIB} DIRECTORY)
set(CMAKE_BUILD_RPATH ${QLLM_OPENBLAS_DIR})

find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(yaml-cpp REQUIRED)
if(QLLM_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
find_program(QLLM_SYSTEM_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT QLLM_SYSTEM_PYTHON)
  set(QLLM_SYSTEM_PYTHON /usr/bin/python3)
endif()
