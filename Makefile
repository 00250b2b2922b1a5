# SparseGate build. Sources are found by directory, so adding a file needs no
# edit here:
#   engine/*/*.c         -> $(B)/libsparsegate.a   (the runtime engine library:
#                           model, cpu, serve, tokenizer, util)
#   retrieval/*.c        -> $(B)/libsgretrieval.a  (stores, context builder)
#   tools/offline/*.c    -> $(B)/libsgoffline.a    (checkpoint writer, random
#                           models, reference protocol: for the command line
#                           and the tests, never in the nginx module)
#   tools/*.c            -> $(B)/sparsegate        (the command line)
#   tests/unit/test_*.c  -> $(B)/tests/test_*      (one binary per file)
#   bench/*.c            -> $(B)/bench/*           (one binary per file)
# Hosts include engine/include/ (the public headers); the engine's own
# files and the tools include engine/ parts as "model/kv.h" and the like.
# `make SAN=1` builds the same tree with ASan + UBSan into build-san/, with
# fault injection (engine/include/sg_fault.h) on.

SAN ?= 0
# The SAN build is also the test build of fault injection (sg_fault.h):
# every allocation of the code linked goes through the countdown.
FAULT_WRAP := malloc calloc realloc strdup strndup posix_memalign aligned_alloc
ifeq ($(SAN),1)
B       ?= build-san
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
           -fno-sanitize-recover=undefined -DSG_FAULT_INJECTION
LDSAN   := -fsanitize=address,undefined
LDFAULT := $(foreach f,$(FAULT_WRAP),-Wl,--wrap=$(f))
else
B       ?= build
OPT     := -O2 -g
LDSAN   :=
LDFAULT :=
endif

CC      ?= cc
ARCH    ?= -march=x86-64-v3
CFLAGS  += $(OPT) $(ARCH) -std=gnu11 -Wall -Wextra -Wno-unused-parameter \
           -Werror=implicit-function-declaration -fPIC -pthread \
           -Iengine/include -Iengine -Iretrieval -Itools \
           -I/usr/include/postgresql -MMD -MP
LDLIBS  += -lcjson -lpcre2-8 -lopenblas -lsqlite3 -lhiredis -lpq -lnuma -lm \
           -lpthread -ldl
LDFLAGS += $(LDSAN) $(LDFAULT) -pthread

ENGINE_SRC := $(wildcard engine/*/*.c)
OFFL_SRC   := $(wildcard tools/offline/*.c)
RETR_SRC   := $(wildcard retrieval/*.c)
TOOL_SRC   := $(wildcard tools/*.c)
TEST_SRC   := $(wildcard tests/unit/test_*.c)
BENCH_SRC  := $(wildcard bench/*.c)
TEST_LIB   := $(filter-out tests/unit/test_%.c,$(wildcard tests/unit/*.c))

ENGINE_OBJ := $(ENGINE_SRC:%.c=$(B)/obj/%.o)
RETR_OBJ   := $(RETR_SRC:%.c=$(B)/obj/%.o)
OFFL_OBJ   := $(OFFL_SRC:%.c=$(B)/obj/%.o)
TOOL_OBJ   := $(TOOL_SRC:%.c=$(B)/obj/%.o)
TESTLIB_OBJ:= $(TEST_LIB:%.c=$(B)/obj/%.o)
TESTS      := $(TEST_SRC:tests/unit/%.c=$(B)/tests/%)
BENCHES    := $(BENCH_SRC:bench/%.c=$(B)/bench/%)

LIBS := $(B)/libsgretrieval.a $(B)/libsparsegate.a
OFFLINE := $(B)/libsgoffline.a

# The CUDA backend's libraries and the GPU benchmark (kernels/kernels.mk).
CUDA_OUT :=
-include kernels/kernels.mk

.PHONY: all tests benches test clean module
all: $(B)/libsparsegate.a $(B)/libsgretrieval.a $(OFFLINE) $(B)/sparsegate \
     tests benches \
     $(B)/link-flags.txt $(CUDA_OUT)
tests: $(TESTS)
benches: $(BENCHES)

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/libsparsegate.a: $(ENGINE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(B)/libsgretrieval.a: $(RETR_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(OFFLINE): $(OFFL_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(B)/sparsegate: $(TOOL_OBJ) $(OFFLINE) $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $(TOOL_OBJ) $(OFFLINE) $(LIBS) $(LDLIBS)

$(B)/tests/%: $(B)/obj/tests/unit/%.o $(TESTLIB_OBJ) $(OFFLINE) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(TESTLIB_OBJ) $(OFFLINE) $(LIBS) $(LDLIBS)

$(B)/bench/%: $(B)/obj/bench/%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBS) $(LDLIBS)

# What a program linking the two libraries needs (read by the nginx
# module's config script).
$(B)/link-flags.txt: Makefile $(wildcard kernels/kernels.mk)
	@mkdir -p $(dir $@)
	echo "$(LDFLAGS) $(LDLIBS)" > $@

# The whole suite, as README.md and .ci/run call it.
test:
	bash tests/run.sh

# The nginx dynamic module (see tools/build_module.sh).
module: $(B)/libsparsegate.a $(B)/libsgretrieval.a
	bash tools/build_module.sh

clean:
	rm -rf build build-san

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
