"""maskcodec: compress instance masks into short vectors and back.

>>> import numpy as np, maskcodec
>>> codec = maskcodec.get_codec("dct", mask_size=128, n_components=256)
>>> masks = np.zeros((2, 128, 128), dtype=bool); masks[:, 32:96, 40:90] = True
>>> vectors = codec.encode(masks)          # (2, 256) float32
>>> soft = codec.decode(vectors)           # (2, 128, 128) float32; threshold at 0.5
"""

from .base import MaskCodec
from .dct import DCTCodec
from .flatten import FlattenCodec
from .pca import PCACodec
from .persistence import load, save
from .registry import available_codecs, codec_class, get_codec, register_codec
from .sparse import SparseCodec
from .state import from_state
from .version import __version__

__all__ = [
    "MaskCodec",
    "DCTCodec",
    "FlattenCodec",
    "PCACodec",
    "SparseCodec",
    "load",
    "save",
    "from_state",
    "available_codecs",
    "codec_class",
    "get_codec",
    "register_codec",
    "__version__",
]
