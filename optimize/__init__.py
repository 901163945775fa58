"""Optimization: channel pruning, low-rank factorization, magnitude pruning (unstructured, 2:4),
weight clustering, distillation and quantization-aware training (alone or combined: PQAT, CQAT,
PCQAT), each verified from the weights. Imported as ``edgekit.optimize`` (imports TensorFlow and
tfmot).

Every technique is a registered module (:mod:`edgekit.optimize.registry`): its config type, how a
recipe step applies it, its flags. Inside your own training script::

    from edgekit import keras
    from edgekit.optimize import PruneConfig, callbacks, prune, strip, weight_report

    pruned = prune(model, PruneConfig(sparsity=0.8))   # model itself is left untouched
    pruned.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    pruned.fit(x, y, epochs=2, callbacks=callbacks(pruned))   # pruning's step counter and schedule
    print(weight_report(strip(pruned)).summary())
"""

from edgekit.core.layers import FitLengthSchedule
from edgekit.core.saving import load_keras_model as load_model
from edgekit.core.saving import save_model
from edgekit.core.wrappers import custom_objects, strip

# The technique modules register themselves, in step order.
from edgekit.optimize.channels import (
    ChannelPruneConfig,
    ChannelPruneResult,
    channel_prune,
    channel_prune_report,
    layer_widths,
    reestimate_batchnorm,
)
from edgekit.optimize.cluster import ClusterConfig, cluster
from edgekit.optimize.common import copy_model
from edgekit.optimize.configs import DistillConfig, FineTune
from edgekit.optimize.depth import DepthConfig, DepthResult, depth_report, drop_blocks, repeated_blocks
from edgekit.optimize.distill import Distiller, distill
from edgekit.optimize.factorize import FactorizeConfig, FactorizedLayer, FactorizeResult, factorize, factorize_report
from edgekit.optimize.finetune import accuracy, callbacks, chance_level, collapse_bound, collapsed, fine_tune
from edgekit.optimize.fold import fold_batchnorm
from edgekit.optimize.prune import PruneConfig, prune
from edgekit.optimize.qat import QATConfig, qat
from edgekit.optimize.recipe import OptimizeResult, Recipe, Step, StepResult, optimize
from edgekit.optimize.registry import StepContext, Technique, register, techniques, unregister
from edgekit.optimize.weights import LayerWeights, WeightReport, m_by_n_compliant, weight_report

__all__ = [
    "ChannelPruneConfig",
    "ChannelPruneResult",
    "ClusterConfig",
    "DepthConfig",
    "DepthResult",
    "DistillConfig",
    "Distiller",
    "FactorizeConfig",
    "FactorizeResult",
    "FactorizedLayer",
    "FineTune",
    "FitLengthSchedule",
    "LayerWeights",
    "OptimizeResult",
    "PruneConfig",
    "QATConfig",
    "Recipe",
    "Step",
    "StepContext",
    "StepResult",
    "Technique",
    "WeightReport",
    "accuracy",
    "callbacks",
    "chance_level",
    "channel_prune",
    "channel_prune_report",
    "cluster",
    "collapse_bound",
    "collapsed",
    "copy_model",
    "custom_objects",
    "depth_report",
    "distill",
    "factorize",
    "factorize_report",
    "fine_tune",
    "drop_blocks",
    "fold_batchnorm",
    "layer_widths",
    "load_model",
    "m_by_n_compliant",
    "optimize",
    "prune",
    "qat",
    "reestimate_batchnorm",
    "register",
    "repeated_blocks",
    "save_model",
    "strip",
    "techniques",
    "unregister",
    "weight_report",
]
