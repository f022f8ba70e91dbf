/*
 * LibTorch's bundled oneMKL asks mkl_serv_intel_cpu_true() whether the CPU is Intel's and takes its
 * slower AVX2 code path when it is not, even on CPUs with AVX-512 (AMD EPYC here). FsMerge loads this
 * library (RTLD_GLOBAL) before LibTorch, so this definition interposes and MKL takes the path the CPU
 * supports: 2.3x on GEMM here (docs/torchsharp-notes.md). Unsupported by Intel; results differ from the
 * default path in the last bits. FSMERGE_MKL_CPU_CHECK=keep skips it.
 */
int mkl_serv_intel_cpu_true(void) { return 1; }
