# The CUDA backend (kernels/*.cu) when nvcc is installed, else a stub whose
# sg_backend_cuda_new says "built without CUDA".  Included by the Makefile
# after ENGINE_OBJ is defined.
NVCC ?= /usr/local/cuda/bin/nvcc
CUDA_HOME ?= /usr/local/cuda

ifneq ($(wildcard $(NVCC)),)
CUDA_SRC   := $(wildcard kernels/*.cu)
ENGINE_OBJ += $(CUDA_SRC:%.cu=$(B)/obj/%.o)
# sm_90 machine code plus compute_90 PTX that newer GPUs JIT-compile.
NVCC_ARCH  ?= -gencode arch=compute_90,code=sm_90 \
              -gencode arch=compute_90,code=compute_90
NVCC_FLAGS := -std=c++17 -O3 $(NVCC_ARCH) -Xcompiler -fPIC \
              -Xcompiler -Wall,-Wextra,-Wno-unused-parameter \
              -Iengine -Ikernels -MMD -MP
LDLIBS     += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 \
              -lcublas -lcublasLt -lcudart -lstdc++

$(B)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@

# The GPU benchmarks (bench/gpu_bench.cu), beside the C ones.
BENCHES += $(B)/bench/gpu_bench
.SECONDARY: $(B)/obj/bench/gpu_bench.o
else
ENGINE_OBJ += $(B)/obj/kernels/cuda_missing.o
endif
