"""Optimization over tensorflow-model-optimization: pruning (unstructured, 2:4), weight
clustering and quantization-aware training, alone or combined (PQAT, CQAT, PCQAT), each
verified from the weights. Imported as ``edgekit.optimize`` (imports TensorFlow and tfmot).

Inside your own training script::

    from edgekit._compat import keras
    from edgekit.optimize import PruneConfig, prune, strip, weight_report

    pruned = prune(model, PruneConfig(sparsity=0.8))   # model itself is left untouched
    pruned.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    pruned.fit(x, y, epochs=2)                           # UpdatePruningStep is wired in
    print(weight_report(strip(pruned)).table())
"""

from edgekit.optimize.channels import (
    ChannelPruneConfig,
    ChannelPruneResult,
    channel_prune,
    channel_prune_report,
    layer_widths,
    reestimate_batchnorm,
)
from edgekit.optimize.configs import ClusterConfig, DistillConfig, FactorizeConfig, FineTune, PruneConfig, QATConfig
from edgekit.optimize.distill import Distiller, distill
from edgekit.optimize.factorize import FactorizedLayer, FactorizeResult, factorize, factorize_report
from edgekit.optimize.fold import fold_batchnorm
from edgekit.optimize.recipe import OptimizeResult, Recipe, Step, StepResult, accuracy, fine_tune, optimize
from edgekit.optimize.techniques import (
    FitLengthSchedule,
    cluster,
    copy_model,
    custom_objects,
    load_model,
    prune,
    qat,
    save_model,
    strip,
)
from edgekit.optimize.weights import LayerWeights, WeightReport, m_by_n_compliant, weight_report

__all__ = [
    "ChannelPruneConfig",
    "ChannelPruneResult",
    "channel_prune",
    "channel_prune_report",
    "layer_widths",
    "reestimate_batchnorm",
    "ClusterConfig",
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
    "StepResult",
    "WeightReport",
    "accuracy",
    "cluster",
    "copy_model",
    "custom_objects",
    "distill",
    "factorize",
    "factorize_report",
    "fine_tune",
    "fold_batchnorm",
    "load_model",
    "m_by_n_compliant",
    "optimize",
    "prune",
    "qat",
    "save_model",
    "strip",
    "weight_report",
]
