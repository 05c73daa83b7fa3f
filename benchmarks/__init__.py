"""SparsePulse benchmarks: the runtime against ONNX Runtime and DeepSparse (``benchmarks.runtime_bench``),
the stream pipeline (``benchmarks.stream_bench``), the CPU's INT8 peak (``benchmarks.peak``) and the
BENCHMARKS.md appender (``benchmarks.report``). Never imported by the serving path; the external
engines run in their own venv through ``benchmarks/_worker.py``."""
