#!/usr/bin/env bash
# Packs the Python packages the GPU machine lacks into .site/site.tar.xz (ignored by git),
# for a machine that cannot reach PyPI: bench/gpu_suite.sh unpacks it into /tmp/site.
#
#   bench/device_site.sh            # CPython 3.12, manylinux x86-64 (the lent GPU machines)
#
# That machine has torch, transformers 5.x, accelerate, peft, numpy, psutil and
# nvidia-ml-py, so only the rest travels. Ray's wheel (79 MB) is thinned to 40 MB: its Java
# jar and the dashboard build, rllib, data, serve, tune, train and llm are not used by
# Sulphur's engine. huggingface_hub stays 1.x: transformers 5.x refuses 2.x.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-3.12}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo /.site/ >>.git/info/exclude
sort -u -o .git/info/exclude .git/info/exclude

python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$work/wheels" \
    diffusers==0.42.1 gguf msgspec tomlkit spandrel "safetensors>=0.8" "huggingface_hub>=1.32,<2" \
    importlib_metadata av ray==2.60.0 jsonschema jsonschema-specifications referencing rpds-py

python3 - "$work/wheels" <<'EOF'
import pathlib, sys, zipfile

drop = ("ray/jars/", "ray/dashboard/client/build/", "ray/rllib/", "ray/llm/", "ray/serve/", "ray/data/",
        "ray/tune/", "ray/train/")
for wheel in pathlib.Path(sys.argv[1]).glob("ray-*.whl"):
    thin = wheel.with_suffix(".thin")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(thin, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if not info.filename.startswith(drop):
                dst.writestr(info, src.read(info.filename))  # keeps the executables' mode bits
    thin.replace(wheel)
EOF

mkdir -p "$work/site" .site
for w in "$work"/wheels/*.whl; do unzip -q -o "$w" -d "$work/site"; done
tar -C "$work/site" -cf - . | xz -T0 -7 >.site/site.tar.xz
ls -la .site/site.tar.xz
