#!/usr/bin/env bash
# Create the dev-time reference virtualenv `.venv-ref` (git-ignored) holding Ultralytics + torch.
#
# Ultralytics is AGPL-3.0: it is used ONLY here, to produce golden references (scripts/make_yolo_golden.py)
# and a timing baseline; it must never become a runtime dependency of edgeseg.
#
# Idempotent: re-running it only installs what is missing and re-runs the import checks.
# Usage: scripts/setup_ref_env.sh            (creates <repo>/.venv-ref)
#        VENV_REF=/path scripts/setup_ref_env.sh
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV_REF:-${repo_root}/.venv-ref}"
python_bin="${PYTHON:-python3.11}"

# Pinned so a golden file regenerated later is made by the same code: the versions the golden file records
# (tests/golden/yolov8n_seg_320_ultralytics.json, "versions"; tests/test_scripts.py holds the two together).
# The dev venv (.venv) takes whatever numpy / opencv / onnxruntime setup.cfg allows, newer ones included
# (opencv 5.1 there, 5.0 here): both letterbox the golden images to the same bytes.
torch_pins=(torch==2.14.1 torchvision==0.29.1)
ultralytics_pin=ultralytics==8.4.190
# The minimum that `import ultralytics` + SegmentationPredictor's post-processing needs (ultralytics is
# installed with --no-deps so its own pins cannot pull in another opencv or numpy).
runtime_deps=(
    numpy==2.4.6
    opencv-python==5.0.0.93
    pyyaml
    pillow
    psutil
    requests
    matplotlib
    scipy
    polars
    ultralytics-thop
)
tool_deps=(onnxruntime==1.32.0 pycocotools==2.0.11)

if [[ ! -x "${venv}/bin/python" ]]; then
    echo "creating ${venv}"
    "${python_bin}" -m venv "${venv}"
fi
pip_install() {
    # The machine's pip config lists local indexes that lack most packages; drop pip's warnings about them.
    "${venv}/bin/python" -m pip install --quiet "$@" 2> >(grep -v 'is neither a file nor a directory' >&2)
}

if ! "${venv}/bin/python" -c 'import torch, torchvision' 2>/dev/null; then
    echo "installing ${torch_pins[*]} (about 5.5 GB with the CUDA libraries; takes a while)"
fi
pip_install "${torch_pins[@]}"
pip_install "${runtime_deps[@]}" "${tool_deps[@]}"
pip_install --no-deps "${ultralytics_pin}"

# Ultralytics must never reach the network or write settings into ~/.config during the checks below.
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False YOLO_VERBOSE=False
YOLO_CONFIG_DIR="$(mktemp -d)"
export YOLO_CONFIG_DIR
trap 'rm -rf "${YOLO_CONFIG_DIR}"' EXIT

"${venv}/bin/python" - "${repo_root}/scripts" <<'EOF'
import sys

import numpy as np
import torch
import torchvision

boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
scores = torch.tensor([0.9, 0.8, 0.7])
keep = torchvision.ops.nms(boxes, scores, 0.5).tolist()
assert keep == [0, 2], keep

import cv2
import onnxruntime
import pycocotools.mask
import ultralytics
from ultralytics.data.augment import LetterBox
from ultralytics.models.yolo.segment import SegmentationPredictor
from ultralytics.utils import nms, ops

sys.path.insert(0, sys.argv[1])
import ultralytics_ref

print(
    f"ok: torch {torch.__version__}, torchvision {torchvision.__version__} (nms keep={keep}), "
    f"ultralytics {ultralytics.__version__}, numpy {np.__version__}, opencv {cv2.__version__}, "
    f"onnxruntime {onnxruntime.__version__}"
)
EOF
