"""maskcodec stands alone: it imports without torch, cupy or solq installed."""

import subprocess
import sys

BLOCK_AND_IMPORT = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'torchvision', 'cupy', 'solq'}:
            raise ModuleNotFoundError(f'No module named {name!r} (blocked by the test)', name=name)
        return None

sys.meta_path.insert(0, Block())
import numpy as np
import maskcodec, maskcodec.bench, maskcodec.cli, maskcodec.coco, maskcodec.geometry, maskcodec.metrics, maskcodec.plots
codec = maskcodec.get_codec('dct', mask_size=32, n_components=16)
assert codec.encode(np.ones((2, 32, 32), dtype=bool)).shape == (2, 16)
pasted = maskcodec.geometry.paste(codec.decode(codec.encode(np.ones((1, 32, 32), dtype=bool))), np.array([[2.0, 2.0, 20.0, 20.0]]), (24, 24))
assert pasted.shape == (1, 24, 24) and pasted[0, 10, 10]
assert not any(m.split('.')[0] in {'torch', 'cupy', 'solq'} for m in sys.modules)
print('ok')
"""


def test_maskcodec_imports_and_runs_without_torch_cupy_or_solq():
    out = subprocess.run([sys.executable, "-c", BLOCK_AND_IMPORT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
