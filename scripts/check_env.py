"""Fail the set-up if a package this project must never have got installed.

torchvision's only build on our machines is CUDA-linked: once present it breaks
`import diffusers` pipelines. timm and open-clip pull it in.
"""
import importlib.util
import sys

FORBIDDEN = ("torchvision", "timm", "open_clip")

found = [name for name in FORBIDDEN if importlib.util.find_spec(name) is not None]
if found:
    sys.exit(f"error: {', '.join(found)} got installed; remove it (pip uninstall -y {' '.join(found)}) and find what pulled it in")
import torch  # noqa: E402

print(f"environment ok: torch {torch.__version__}, no {', '.join(FORBIDDEN)}")
