"""Build the hash grid's C++ CPU kernel during set-up, so a first run does not wait on the compiler.

torch.utils.cpp_extension caches the build in $TORCH_EXTENSIONS_DIR (~/.cache/torch_extensions); a
run then only loads it. A failed build is not a set-up failure: `backend: auto` falls back to the
pure-torch hash grid, which is always there (slower on CPU), and this says why.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.encodings.hash_grid import load_cpp_kernel  # noqa: E402

start = time.perf_counter()
try:
    load_cpp_kernel()
except Exception as error:  # a missing compiler, headers or ninja: report and go on
    print(f"note: the hash grid's C++ kernel did not build ({type(error).__name__}: {str(error).strip()[:300]}); "
          "runs use the pure-torch hash grid instead")
else:
    print(f"hash grid C++ kernel ready ({time.perf_counter() - start:.0f} s; cached by torch.utils.cpp_extension)")
