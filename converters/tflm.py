"""What TensorFlow Lite for Microcontrollers (TFLM) can run, the boards edgekit knows, and the C
sources that put a model on one: the model as a C array and an op resolver with exactly its ops.

The op table is TFLM's own: every ``Add*`` method of ``MicroMutableOpResolver``
(tensorflow/lite/micro/micro_mutable_op_resolver.h, tflite-micro commit 90b983c of 2026-08-20) with
the builtin operator it registers. ``edgekit mcu`` checks it before running the model, and the
real interpreter (a child process, ``device/micro.py``) has the last word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

from edgekit.core.errors import InputError

# builtin operator → the MicroMutableOpResolver method that registers its kernel
RESOLVER_METHODS: Dict[str, str] = {
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "ADD_N": "AddAddN",
    "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast",
    "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "COS": "AddCos",
    "CUMSUM": "AddCumSum",
    "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup",
    "ELU": "AddElu",
    "EQUAL": "AddEqual",
    "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill",
    "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater",
    "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf",
    "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog",
    "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic",
    "LOG_SOFTMAX": "AddLogSoftmax",
    "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MIRROR_PAD": "AddMirrorPad",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MUL": "AddMul",
    "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize",
    "READ_VARIABLE": "AddReadVariable",
    "REDUCE_ALL": "AddReduceAll",
    "REDUCE_MAX": "AddReduceMax",
    "REDUCE_MIN": "AddReduceMin",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "REVERSE_V2": "AddReverseV2",
    "ROUND": "AddRound",
    "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape",
    "SIN": "AddSin",
    "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV",
    "SQUEEZE": "AddSqueeze",
    "SQRT": "AddSqrt",
    "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SUM": "AddSum",
    "SVDF": "AddSvdf",
    "TANH": "AddTanh",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "TRANSPOSE": "AddTranspose",
    "UNPACK": "AddUnpack",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile",
    "ZEROS_LIKE": "AddZerosLike",
}
# custom operators TFLM ships a kernel for (CUSTOM:<name> → method)
CUSTOM_METHODS: Dict[str, str] = {
    "CUSTOM:TFLite_Detection_PostProcess": "AddDetectionPostprocess",
    "CUSTOM:CIRCULAR_BUFFER": "AddCircularBuffer",
}

# What to use instead of an op TFLM lacks, by the Keras layer or function that produces it.
INSTEAD: Dict[str, str] = {
    "GELU": "use a 'relu' or 'hard_swish' activation instead of gelu",
    "POW": "write x**2 as x * x, or use tf.math.square",
    "TILE": "let broadcasting do it (tf.broadcast_to, or an Add/Multiply with a smaller tensor)",
    "SELECT": "use tf.where with broadcastable arguments (SELECT_V2)",
    "LSTM": "use a keras LSTM layer, which converts to UNIDIRECTIONAL_SEQUENCE_LSTM",
    "BIDIRECTIONAL_SEQUENCE_LSTM": "run two unidirectional LSTMs",
    "REDUCE_PROD": "avoid products over an axis (sums of logs, or fewer factors)",
    "HARD_SIGMOID": "use 'hard_swish' or 'sigmoid'",
    "CONV_3D": "use Conv2D over folded time/depth",
    "RANGE": "precompute the range as a constant",
}
GENERIC_INSTEAD = (
    "rebuild that layer from ops TFLM has (Conv2D, DepthwiseConv2D, Dense, pooling, relu/relu6, add/multiply)"
)


def tflm_supports(op: str) -> bool:
    return op in RESOLVER_METHODS or op in CUSTOM_METHODS


def instead(op: str) -> str:
    if op.startswith("FLEX:"):
        return "it is a TensorFlow (Select TF) op: convert with builtin ops only"
    return INSTEAD.get(op) or GENERIC_INSTEAD


@dataclass(frozen=True)
class Board:
    """A board's memory, as its maker states it. ``arena_kb``: the largest contiguous RAM a
    tensor arena can use when it is less than ``ram_kb`` (split SRAM banks)."""

    name: str
    chip: str
    ram_kb: int
    flash_kb: int
    source: str
    arena_kb: Optional[int] = None

    @property
    def usable_ram_kb(self) -> int:
        return self.arena_kb or self.ram_kb


BOARDS: Dict[str, Board] = {
    b.name: b
    for b in (
        Board(
            "nano33ble",
            "Arduino Nano 33 BLE Sense (nRF52840, Cortex-M4F 64 MHz)",
            256,
            1024,
            "https://docs.arduino.cc/hardware/nano-33-ble-sense/",
        ),
        Board(
            "pico",
            "Raspberry Pi Pico (RP2040, dual Cortex-M0+ 133 MHz)",
            264,
            2048,
            "https://www.raspberrypi.com/documentation/microcontrollers/pico-series.html",
        ),
        Board(
            "pico2",
            "Raspberry Pi Pico 2 (RP2350, dual Cortex-M33 150 MHz)",
            520,
            4096,
            "https://www.raspberrypi.com/documentation/microcontrollers/pico-series.html",
        ),
        Board(
            "esp32s3",
            "ESP32-S3-DevKitC-1-N8 (ESP32-S3, dual Xtensa LX7 240 MHz)",
            512,
            8192,
            "https://docs.espressif.com/projects/esp-dev-kits/en/latest/esp32s3/esp32-s3-devkitc-1/",
        ),
        Board(
            "f446re",
            "NUCLEO-F446RE (STM32F446RE, Cortex-M4F 180 MHz)",
            128,
            512,
            "https://www.st.com/en/microcontrollers-microprocessors/stm32f446re.html",
        ),
        Board(
            "h743zi",
            "NUCLEO-H743ZI2 (STM32H743ZI, Cortex-M7 480 MHz)",
            1024,
            2048,
            "https://www.st.com/en/microcontrollers-microprocessors/stm32h743zi.html",
            arena_kb=512,
        ),
    )
}


def board(name: str) -> Board:
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in BOARDS:
        raise InputError(
            "unknown board '{name}'; known boards: {boards} (or give any board's memory with {ram_kb} and {flash_kb})",
            params=("ram_kb", "flash_kb"),
            name=name,
            boards=", ".join(BOARDS),
        )
    return BOARDS[key]


ANY_FLASH_KB = 2**40  # a RAM budget alone: no bound on flash


def custom_board(ram_kb: float, flash_kb: Optional[float]) -> Board:
    """A board of the memory given: RAM, and flash unless it is no bound (``flash_kb=None``: a RAM budget)."""
    for what, value in (("ram_kb", ram_kb), ("flash_kb", ANY_FLASH_KB if flash_kb is None else flash_kb)):
        if value is None or not float(value) > 0:
            raise InputError("{%s} must be a positive number of KB; received {value}" % what, params=what, value=value)
    return Board("custom", "your board", int(ram_kb), ANY_FLASH_KB if flash_kb is None else int(flash_kb), "given")


def flash_bytes(model_size: int, alignment: int = 16) -> int:
    """The model's bytes as linked: an ``alignas(16)`` array occupies a multiple of 16 bytes."""
    return -(-model_size // alignment) * alignment


# ---------------------------------------------------------------- C sources


def c_identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name)
    if not ident or ident[0].isdigit():
        ident = "model_" + ident
    return ident


def resolver_entries(ops: Iterable[str]) -> List[str]:
    """The resolver method of each distinct op, in order of first use."""
    methods = []
    for op in dict.fromkeys(ops):
        method = RESOLVER_METHODS.get(op) or CUSTOM_METHODS.get(op)
        if method is None:
            raise InputError(f"TFLM has no kernel for {op}")
        methods.append(method)
    return methods


def source_names(name: str) -> List[str]:
    return [f"{name}.h", f"{name}.cc", f"{name}_ops.h"]


def c_sources(name: str, model: bytes, ops: Iterable[str], arena_bytes: int) -> Dict[str, str]:
    """``{file name: text}``: ``NAME.h``/``NAME.cc`` (the model as an ``alignas(16) const unsigned
    char`` array, its length and the measured arena size) and ``NAME_ops.h`` (a
    ``MicroMutableOpResolver<N>`` registering exactly the model's ops)."""
    ident = c_identifier(name)
    guard = ident.upper()
    methods = resolver_entries(ops)
    header = (
        f"// {name}: the model for TFLM. Generated by edgekit mcu.\n#ifndef {guard}_H_\n#define {guard}_H_\n\n"
        f"extern const unsigned char {ident}[];\nextern const unsigned int {ident}_len;\n\n"
        f"// The smallest tensor arena TFLM needed for this model (measured, bytes; TFLM aligns to 16).\n"
        f"constexpr unsigned int k{_camel(ident)}ArenaSize = {arena_bytes};\n\n#endif  // {guard}_H_\n"
    )
    rows = [", ".join(f"0x{b:02x}" for b in model[i : i + 12]) for i in range(0, len(model), 12)]
    source = (
        f'// {name}: {len(model):,} bytes. Generated by edgekit mcu.\n#include "{name}.h"\n\n'
        f"alignas(16) const unsigned char {ident}[] = {{\n"
        + ",\n".join(f"    {r}" for r in rows)
        + f"\n}};\nconst unsigned int {ident}_len = {len(model)};\n"
    )
    body = "\n".join(f"  if (resolver.{m}() != kTfLiteOk) return kTfLiteError;" for m in methods)
    ops_header = (
        f"// The ops of {name}, and nothing else. Generated by edgekit mcu.\n"
        f"#ifndef {guard}_OPS_H_\n#define {guard}_OPS_H_\n\n"
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n\n'
        f"using {_camel(ident)}OpResolver = tflite::MicroMutableOpResolver<{len(methods)}>;\n\n"
        f"inline TfLiteStatus Register{_camel(ident)}Ops({_camel(ident)}OpResolver& resolver) {{\n"
        f"{body}\n  return kTfLiteOk;\n}}\n\n#endif  // {guard}_OPS_H_\n"
    )
    return dict(zip(source_names(name), (header, source, ops_header)))


def _camel(ident: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in ident.split("_") if p)
