#!/usr/bin/env bash
# Create the peers' virtualenvs under bench/.peers (ignored by git):
#   venv            modelaudit, picklescan, fickling, and the libraries build_corpus.py writes
#                   benign model files with (CPU-only torch, checked before anything installs)
#   modelscan-venv  ModelScan with what it needs to work: numpy<2 (0.8.8 calls a numpy 1.x
#                   private function) and h5py; TensorFlow (CPU) for its Keras/SavedModel scans
# Usage: bash bench/model_scan/setup_peers.sh [--no-tensorflow]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
peers_dir="$root/bench/.peers"
python="${PYTHON:-python3.11}"
with_tf=1
for arg in "$@"; do
  case "$arg" in
    --no-tensorflow) with_tf=0 ;;
    -h | --help)
      sed -n '2,7p' "$0"
      exit 0
      ;;
    *)
      echo "error: unknown argument $arg" >&2
      exit 2
      ;;
  esac
done

# The peers at the versions the issue measured; pinned so reruns compare like with like.
peers=(modelaudit==0.2.54 picklescan==1.0.5 fickling==0.1.12)
# What the corpus builder writes benign files with. torch comes from the local CPU wheel;
# xgboost-cpu is the same library without the ~200 MB NCCL wheel the default build pulls;
# keras runs on the torch backend (KERAS_BACKEND=torch), so this venv needs no TensorFlow.
writers=(
  torch==2.13.0 numpy scikit-learn joblib safetensors onnx h5py gguf xgboost-cpu lightgbm
  keras pandas lz4 py7zr cloudpickle dill
)
modelscan=(modelscan==0.8.8 "numpy<2" h5py)
if [[ $with_tf == 1 ]]; then
  modelscan+=(tensorflow-cpu)
fi

if ! command -v "$python" > /dev/null; then
  echo "error: $python not found (torch's CPU wheel is for CPython 3.11); set PYTHON=..." >&2
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: $python is not CPython 3.11, which the local torch CPU wheel needs" >&2
  exit 1
fi

# install VENV PACKAGE...: resolve first (pip's configured constraints and find-links apply)
# and refuse a CUDA stack (an nvidia-* or triton package, or a torch that is not +cpu).
install() {
  local venv="$1"
  shift
  if [[ ! -x $venv/bin/python ]]; then
    echo "[setup] creating $venv" >&2
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  local plan
  plan="$(mktemp)"
  echo "[setup] resolving for $(basename "$venv") (dry run)" >&2
  "$venv/bin/python" -m pip install --dry-run --quiet --report "$plan" "$@" > /dev/null
  "$venv/bin/python" - "$plan" << 'EOF'
import json, sys

report = json.load(open(sys.argv[1]))
names = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}
problems = [f"{n}=={v}" for n, v in names.items() if n.startswith("nvidia-") or n == "triton"]
torch = names.get("torch")
if torch is not None and not torch.endswith("+cpu"):
    problems.append(f"torch=={torch} is not a CPU build")
if problems:
    sys.exit("error: the plan would install a CUDA stack: " + ", ".join(problems))
print(f"[setup] plan: {len(names)} packages to install", file=sys.stderr)
EOF
  rm -f "$plan"
  echo "[setup] installing into $(basename "$venv")" >&2
  "$venv/bin/python" -m pip install --quiet "$@"
}

install "$peers_dir/venv" "${peers[@]}" "${writers[@]}"
install "$peers_dir/modelscan-venv" "${modelscan[@]}"

versions() {
  "$1/bin/python" - "${@:2}" << 'EOF'
import importlib.metadata as md, sys

for name in sys.argv[1:]:
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} (not installed)")
EOF
}
echo "bench/.peers/venv:"
versions "$peers_dir/venv" modelaudit picklescan fickling torch numpy scikit-learn joblib \
  safetensors onnx h5py gguf xgboost-cpu lightgbm keras pandas cloudpickle dill
echo "bench/.peers/modelscan-venv:"
versions "$peers_dir/modelscan-venv" modelscan numpy h5py tensorflow-cpu
echo "[setup] ready" >&2
