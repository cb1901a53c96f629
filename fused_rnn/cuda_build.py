"""What building the CUDA extension (fused_rnn/csrc/) takes: its sources and nvcc flags.

Read by both builds: fused_rnn/cuda.py (just in time) imports it, and setup.py
(ahead of time) reads it with ast.literal_eval, since building must not import
the package. So: literal constants only, no imports.
"""

# In fused_rnn/csrc/. The headers (rnn_cluster.h, rnn_cluster_kernel.cuh) are found there too.
SOURCES = ["binding.cpp", "rnn_cluster.cu"]

# sm_90a SASS for clusters and distributed shared memory; sm_80 SASS so that
# Ampere runs the C = 1 path; compute_90 PTX, which the driver compiles for
# GPUs newer than sm_90 (without it they have nothing to run).
NVCC_FLAGS = [
    "-O3", "-std=c++17",
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=compute_90",
]
