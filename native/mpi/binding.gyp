# The qkd_mpi addon (native/mpi/mpi.cc): built by scripts/build-native.mjs
# only when MPI's development files are found (scripts/mpi-flags.mjs); qkd
# works without it, and says so when it is started by mpirun.
{
  "targets": [
    {
      "target_name": "qkd_mpi",
      "sources": ["mpi.cc"],
      "defines": ["NAPI_VERSION=8", "OMPI_SKIP_MPICXX=1", "MPICH_SKIP_MPICXX=1"],
      "cflags_cc": ["-O2", "-std=c++17", "<!@(node ../../scripts/mpi-flags.mjs cflags)"],
      "cflags_cc!": ["-std=gnu++17", "-std=gnu++20", "-std=c++20", "-fno-exceptions"],
      "libraries": ["<!@(node ../../scripts/mpi-flags.mjs libs)", "-ldl"]
    }
  ]
}
