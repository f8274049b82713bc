"""SOLQ model package: backbone, deformable transformer, UQR heads, matcher, criterion, post-processing."""

from .backbone import Backbone
from .convert import convert_official_state_dict, load_official_checkpoint
from .criterion import SetCriterion, default_weight_dict
from .deform_attn import MSDeformAttn, ms_deform_attn_core
from .matcher import HungarianMatcher
from .position_encoding import PositionEmbeddingSine
from .postprocess import PostProcess, results_to_coco
from .solq import MLP, SOLQ, build_model
from .transformer import DeformableTransformer, inverse_sigmoid

__all__ = [
    "Backbone",
    "DeformableTransformer",
    "HungarianMatcher",
    "MLP",
    "MSDeformAttn",
    "PositionEmbeddingSine",
    "PostProcess",
    "SOLQ",
    "SetCriterion",
    "build_model",
    "convert_official_state_dict",
    "default_weight_dict",
    "inverse_sigmoid",
    "load_official_checkpoint",
    "ms_deform_attn_core",
    "results_to_coco",
]
