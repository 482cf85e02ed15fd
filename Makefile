# diffuse: `make` builds build/diffuse and build/libdiffuse.a; `make test` runs the tests; `make demo` trains
# and samples end to end; `make deps` installs the Debian packages that are missing; `make asan` runs the
# tests under AddressSanitizer and UndefinedBehaviorSanitizer.

CC      ?= gcc
OPT     ?= -O3
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=gnu11 -Wall -Wextra -fopenmp -Iinclude -Isrc
# Libraries, one list for the normal and the sanitizer builds. BLAS/LAPACK: whichever Debian's alternatives
# select (OpenBLAS when libopenblas-dev is installed, else the reference ones); src/eval/fid.c sizes
# OpenBLAS's thread pool to the program's own thread count before each call.
LIBS    := -lcjson -lz -lpng -ljpeg -lzip -llapacke -llapack -lblas -lm
LDLIBS  += -fopenmp $(LIBS)
BUILD   ?= build

LIB_SRC  := $(sort $(wildcard src/base/*.c src/kernels/*.c src/nn/*.c src/diffusion/*.c src/data/*.c \
                              src/io/*.c src/eval/*.c src/train/*.c))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)

# Debian packages: what building, testing and the demo need.
DEB_PKGS := gcc make libc6-dev zlib1g-dev libpng-dev libjpeg62-turbo-dev libcjson-dev libzip-dev \
            liblapacke-dev liblapack-dev libopenblas-dev \
            python3-torch python3-numpy python3-scipy dataset-fashion-mnist

.PHONY: all test demo deps asan clean

# The demo: a few minutes of fmnist-s training on Fashion-MNIST, then a 64-image DDIM grid and a denoising
# trajectory. DEMO_STEPS=3000 trains longer (better images).
DEMO_STEPS ?= 500
DEMO_OUT ?= runs/demo

all: $(BUILD)/diffuse $(BUILD)/libdiffuse.a

# Objects depend on the flags they were built with: changing CC, OPT or CFLAGS rebuilds them.
FLAGS_STAMP := $(BUILD)/cflags
$(shell mkdir -p $(BUILD) && (echo '$(CC) $(CFLAGS)' | cmp -s - $(FLAGS_STAMP) || echo '$(CC) $(CFLAGS)' > $(FLAGS_STAMP)))

$(BUILD)/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libdiffuse.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/diffuse: $(CLI_OBJ) $(BUILD)/libdiffuse.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/test_diffuse: $(TEST_OBJ) $(BUILD)/libdiffuse.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

test: deps $(BUILD)/test_diffuse $(BUILD)/diffuse
	./$(BUILD)/test_diffuse $(T)

demo: deps all
	@echo "== diffuse demo: training fmnist-s on Fashion-MNIST for $(DEMO_STEPS) steps into $(DEMO_OUT) =="
	@rm -rf $(DEMO_OUT)
	./$(BUILD)/diffuse train --out $(DEMO_OUT) --preset fmnist-s --data fashion-mnist --steps $(DEMO_STEPS) \
	    --batch 32 --lr 1e-3 --warmup 100 --save-every 250 --sample-every 250 --n-samples 16 --seed 0
	./$(BUILD)/diffuse sample --model $(DEMO_OUT) --sampler ddim --steps 50 --n 64 --seed 0 \
	    --out $(DEMO_OUT)/samples.png --trajectory $(DEMO_OUT)/trajectory.png --trajectory-n 6
	@echo
	@echo "== done =="
	@echo "  64 samples (DDIM, 50 steps):       $(DEMO_OUT)/samples.png"
	@echo "  denoising trajectory (6 samples):  $(DEMO_OUT)/trajectory.png"
	@echo "  loss curve:                        $(DEMO_OUT)/loss.png  (numbers in $(DEMO_OUT)/metrics.csv)"
	@echo "  the model, a diffusers DDPMPipeline folder: $(DEMO_OUT)  (in Python: DDPMPipeline.from_pretrained('$(DEMO_OUT)'))"

asan:
	$(MAKE) test BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
	    -fno-sanitize-recover=undefined" LDLIBS="-fsanitize=address,undefined -fopenmp $(LIBS)"

deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
	    grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" != 0 ]; then \
	        echo "diffuse: missing Debian packages: $$missing"; \
	        echo "  install them as root: sudo apt-get install $$missing"; exit 1; \
	    fi; \
	    echo "installing missing Debian packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || \
	        { echo "diffuse: apt-get install failed for: $$missing"; exit 1; }; \
	fi

clean:
	rm -rf build build-asan

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d)
