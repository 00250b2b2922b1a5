# The CUDA backend (kernels/*.cu, and the NCCL collective of a device
# group when nccl.h is there), built when nvcc is installed, as
#   $(B)/libsparsegate_cuda.so  what the engine opens at run time when a model
#                               asks for CUDA (engine/model/cuda_loader.c), so
#                               nothing else maps cuBLAS or needs it installed
#   $(B)/libsparsegate_cuda.a   linked into the GPU benchmark, which reaches
#                               into the backend's internals
# Without nvcc the loader says "built without CUDA".  Included by the
# Makefile after LIBS is defined.
NVCC ?= /usr/local/cuda/bin/nvcc
CUDA_HOME ?= /usr/local/cuda

ifneq ($(wildcard $(NVCC)),)
CUDA_SRC   := $(wildcard kernels/*.cu)
# The device group's collective (cuda_nccl.cu) needs NCCL, which the CUDA
# toolkit images carry in $(CUDA_HOME); without nccl.h the library has no
# sg_coll_nccl_new and a group of GPUs says so.
NCCL_LIB   :=
ifneq ($(wildcard $(CUDA_HOME)/include/nccl.h),)
NCCL_LIB   := -lnccl
else
CUDA_SRC   := $(filter-out kernels/cuda_nccl.cu,$(CUDA_SRC))
endif
CUDA_OBJ   := $(CUDA_SRC:%.cu=$(B)/obj/%.o)
# sm_90 machine code plus compute_90 PTX that newer GPUs JIT-compile.
NVCC_ARCH  ?= -gencode arch=compute_90,code=sm_90 \
              -gencode arch=compute_90,code=compute_90
NVCC_FLAGS := -std=c++17 -O3 $(NVCC_ARCH) -Xcompiler -fPIC \
              -Xcompiler -Wall,-Wextra,-Wno-unused-parameter \
              -Iengine -Ikernels -MMD -MP
CUDA_LIBS  := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 \
              -lcublas -lcublasLt $(NCCL_LIB) -lcudart -lstdc++
CUDA_OUT   := $(B)/libsparsegate_cuda.so $(B)/libsparsegate_cuda.a
$(B)/obj/engine/model/cuda_loader.o: CFLAGS += -DSG_HAVE_CUDA

$(B)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@

# dtype.o: the two dtype helpers the backend calls; only the entry point
# is exported, so the library's copies never stand in for the engine's.
$(B)/libsparsegate_cuda.so: $(CUDA_OBJ) $(B)/obj/engine/model/dtype.o \
                            kernels/exports.map
	$(CC) -shared -o $@ $(CUDA_OBJ) $(B)/obj/engine/model/dtype.o \
	    -Wl,--version-script=kernels/exports.map -Wl,--no-undefined \
	    $(LDSAN) $(CUDA_LIBS) -lm -lpthread

$(B)/libsparsegate_cuda.a: $(CUDA_OBJ)
	rm -f $@ && ar rcs $@ $^

# The GPU benchmark (bench/gpu_bench.cu), beside the C ones.
BENCHES += $(B)/bench/gpu_bench
$(B)/bench/gpu_bench: $(B)/obj/bench/gpu_bench.o $(B)/libsparsegate_cuda.a \
                      $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(B)/libsparsegate_cuda.a $(LIBS) $(LDLIBS) \
	    $(CUDA_LIBS)
.SECONDARY: $(B)/obj/bench/gpu_bench.o

# test_cuda and test_multi_cuda open the library at run time, beside
# their own build directory
$(B)/tests/test_cuda $(B)/tests/test_multi_cuda: | $(B)/libsparsegate_cuda.so
endif
