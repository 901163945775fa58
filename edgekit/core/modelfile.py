"""What a Keras model file holds, read without running any of it.

Loading a Keras model can run Python from the file: a ``Lambda`` layer stores its function as
bytecode, tf_keras's HDF5 and SavedModel loaders unmarshal it without asking, and a config may name
any module for Keras to import. :func:`scan` reads a ``.keras`` zip, an HDF5 ``.h5`` (also one
renamed ``.keras``) or a SavedModel directory with the standard library and h5py only — no
TensorFlow, no Keras — checks what it declares against :mod:`edgekit.core.limits` (decompression
bombs), and with ``safe_mode`` refuses, naming the layer, a model that would run code:

- a ``Lambda`` layer, or any serialized Python function (``__lambda__``, ``function_type``);
- a TensorFlow op layer (``TFOpLambda``) whose op is not a pure tensor op (``tf.io.write_file``
  is a TensorFlow symbol too);
- an object from a module that is neither Keras, tf_keras, tfmot nor edgekit and not already
  imported by the caller (importing a module runs its code).

Callers load the model only after this passes (:func:`edgekit.converters.load_keras_model`); with
``safe_mode=False`` (``--unsafe-load``) they skip it for files they trust.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

from edgekit.core import limits
from edgekit.core.errors import InputError, UnsafeModelError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"

# Modules a config may name: Keras itself, the tools edgekit loads models with, edgekit.
TRUSTED_MODULES = ("keras", "tf_keras", "tensorflow_model_optimization", "edgekit", "builtins")

# TensorFlow op layers (TFOpLambda, SlicingOpLambda: ``x + 3.0``, ``tf.nn.relu6(x)``) name a TF
# symbol. These namespaces and names are pure tensor computations; anything else (tf.io, tf.py_function,
# tf.compat.v1, tf.raw_ops, ...) could touch files or run Python when the model is called.
SAFE_OP_PREFIXES = ("math.", "nn.", "linalg.", "image.", "signal.", "bitwise.", "__operators__.")
SAFE_OPS = frozenset(
    """
abs add argmax argmin argsort batch_to_space bitcast boolean_mask broadcast_to cast ceil clip_by_norm
clip_by_value complex concat convert_to_tensor cos cumprod cumsum depth_to_space divide einsum ensure_shape
equal exp expand_dims eye fill floor floordiv floormod gather gather_nd greater greater_equal identity less
less_equal linspace log logical_and logical_not logical_or matmul maximum meshgrid minimum multiply negative
norm not_equal one_hot ones ones_like pad pow range rank realdiv reciprocal reduce_all reduce_any
reduce_logsumexp reduce_max reduce_mean reduce_min reduce_prod reduce_sum repeat reshape reverse
reverse_sequence roll round rsqrt scatter_nd searchsorted sequence_mask shape sigmoid sign sin size slice sort
space_to_batch space_to_depth split sqrt square squeeze stack stop_gradient strided_slice subtract
tanh tensor_scatter_nd_add tensor_scatter_nd_update tensordot tile transpose truediv unique unstack where
zeros zeros_like
""".split()
)
SAFE_CLASS_METHODS = frozenset({"RaggedTensor", "SparseTensor"})


@dataclass
class ModelFile:
    """A model file as :func:`scan` found it: ``format`` is ``keras`` (zip), ``h5`` or
    ``savedmodel``; ``configs`` the serialized configs it holds; ``keras_version`` what wrote it
    (``None`` when the file does not say)."""

    path: str
    format: str
    keras_version: Optional[str] = None
    configs: List[dict] = field(default_factory=list)
    has_keras_metadata: bool = True
    loss: object = None  # the loss the model was compiled with, as saved (a name or a serialized config)
    graph_ops: List[Tuple[str, str]] = field(default_factory=list)  # a SavedModel without Keras metadata

    @property
    def keras3(self) -> bool:
        return bool(self.keras_version) and self.keras_version.split(".")[0] == "3"


def scan(path, safe_mode: bool = True) -> ModelFile:
    """Read ``path`` (see the module doc). Raises :class:`InputError` for a missing, unreadable or
    over-limit file and, with ``safe_mode``, :class:`UnsafeModelError` for one that would run code."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"model file not found: {path}")
    if os.path.isdir(path):
        found = _savedmodel(path)
    else:
        with open(path, "rb") as f:
            head = f.read(8)
        if head.startswith(ZIP_MAGIC):
            found = _zip(path)
        elif head == HDF5_MAGIC:
            found = _h5(path)
        else:
            raise InputError(
                f"{path} is not a Keras model file (neither a .keras zip nor HDF5); expected a "
                f".keras or .h5 file or a SavedModel directory"
            )
    if safe_mode:
        reason = unsafe_graph_op(found.graph_ops)
        if reason:
            raise UnsafeModelError(
                "{path}: {reason}; edgekit runs no such graph from a model file: export the model without it, "
                "or, if you trust this file, load it with {safe_mode=False}",
                params="safe_mode",
                path=path,
                reason=reason,
            )
        for config in found.configs:
            reason = unsafe_reason(config)
            if reason:
                raise UnsafeModelError(
                    "{path}: {reason}, which loading the model would run; edgekit runs no code from model "
                    "files: rebuild that part from standard layers, or, if you trust this file, load it with "
                    "{safe_mode=False}",
                    params="safe_mode",
                    path=path,
                    reason=reason,
                )
    return found


# -- what makes a config unsafe --------------------------------------------------------------


def _trusted_module(module: str) -> bool:
    root = module.split(".")[0]
    return root in TRUSTED_MODULES or module in sys.modules


def safe_op(symbol) -> bool:
    """True for a TF symbol name a TFOpLambda may call (see :data:`SAFE_OPS`)."""
    return isinstance(symbol, str) and (symbol.startswith(SAFE_OP_PREFIXES) or symbol in SAFE_OPS)


def unsafe_reason(config) -> Optional[str]:
    """Why loading ``config`` would run code from the file (see the module doc), or None."""
    stack: List[Tuple[object, Optional[str]]] = [(config, None)]
    while stack:
        obj, layer = stack.pop()
        if isinstance(obj, list):
            stack.extend((v, layer) for v in obj)
            continue
        if not isinstance(obj, dict):
            continue
        cls = obj.get("class_name")
        cfg = obj.get("config") if isinstance(obj.get("config"), dict) else {}
        name = cfg.get("name") if isinstance(cfg.get("name"), str) else layer
        label = f"layer '{name}'" if name else "an object"
        if cls == "Lambda":
            return f"{label} (Lambda) holds Python code"
        if cls == "__lambda__" or obj.get("function_type") == "lambda":
            return f"{label} holds a serialized Python function"
        if cls in ("TFOpLambda", "SlicingOpLambda") and not safe_op(cfg.get("function")):
            return f"{label} ({cls}) calls TensorFlow's {cfg.get('function')!r}, not a pure tensor op"
        if cls == "ClassMethod" and cfg.get("cls_symbol") not in SAFE_CLASS_METHODS:
            return f"{label} (ClassMethod) calls {cfg.get('cls_symbol')!r}.{cfg.get('method_name')}"
        module = obj.get("module")
        if isinstance(module, str) and isinstance(cls, str) and module and not _trusted_module(module):
            return f"{label} ({cls}) names the module '{module}', which Keras would import"
        stack.extend((v, name) for k, v in obj.items() if k not in ("module", "class_name"))
    return None


# -- formats ---------------------------------------------------------------------------------


def _json(text, what: str):
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} is not valid JSON ({exc})") from None


def _zip(path: str) -> ModelFile:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"cannot load {path} as a .keras file (a zip archive): {exc}") from None
    with zf:
        infos = zf.infolist()
        for info in infos:
            if info.filename.startswith(("/", "\\")) or ".." in info.filename.replace("\\", "/").split("/"):
                raise InputError(f"{path}: member {info.filename!r} points outside the archive; not a Keras file")
            limits.check_unpacked(f"{path}: member {info.filename}", info.file_size, info.compress_size)
        names = {i.filename for i in infos}
        if "config.json" not in names:
            raise InputError(f"{path} is a zip without config.json: not a .keras model file")
        try:
            config = _json(zf.read("config.json"), f"{path}: config.json")
            meta = _json(zf.read("metadata.json"), f"{path}: metadata.json") if "metadata.json" in names else {}
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
        weights = [n for n in names if n.endswith(".h5")]
        for name in weights:
            try:
                with zf.open(name) as member:
                    _check_h5_datasets(member, f"{path}: {name}")
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise InputError(f"cannot read {path}: {name}: {exc}") from None
    version = meta.get("keras_version") if isinstance(meta, dict) else None
    compiled = config.get("compile_config") if isinstance(config, dict) else None
    loss = compiled.get("loss") if isinstance(compiled, dict) else None
    return ModelFile(path, "keras", str(version) if version else None, [config], loss=loss)


def _h5py():
    import h5py

    return h5py


def _check_h5_datasets(source, what: str) -> None:
    """Every compressed dataset's declared size against its stored size (HDF5 filters unpack too)."""
    h5py = _h5py()
    try:
        f = h5py.File(source, "r")
    except Exception as exc:  # h5py raises OSError, ValueError ... for a file it cannot parse
        raise InputError(f"cannot read {what} as HDF5: {' '.join(str(exc).split())[:200]}") from None
    with f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                # a compressed dataset unpacks; an unwritten one reads as fill values: both from little
                limits.check_unpacked(
                    f"{what}: dataset {name}", int(obj.size) * int(obj.dtype.itemsize), int(obj.id.get_storage_size())
                )

        f.visititems(visit)


def _h5(path: str) -> ModelFile:
    h5py = _h5py()
    _check_h5_datasets(path, path)
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            version = f.attrs.get("keras_version")
            training = f.attrs.get("training_config")
    except Exception as exc:
        raise InputError(f"cannot read {path} as HDF5: {' '.join(str(exc).split())[:200]}") from None
    if raw is None:
        raise InputError(
            f"{path} is an HDF5 file without a model config (weights only?): save the whole model "
            f"(model.save), not only its weights"
        )
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    loss = None
    if training is not None:
        training = _json(training.decode("utf-8", "replace") if isinstance(training, bytes) else training, path)
        loss = training.get("loss") if isinstance(training, dict) else None
    config = _json(raw, f"{path}: model_config")
    return ModelFile(path, "h5", str(version) if version is not None else None, [config], loss=loss)


def _varint(buf: bytes, i: int) -> Tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def protobuf_fields(buf: bytes) -> Iterator[Tuple[int, int, object]]:
    """(field number, wire type, value) of a serialized protobuf message, top level only."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated message")
        yield number, wire, value


# Graph ops of a SavedModel that touch files or run Python when its functions run. Checkpoint I/O
# (SaveV2, RestoreV2, MergeV2Checkpoints) is allowed only in the functions tf.saved_model.save
# writes for it (``…_traced_save_…``, ``…_traced_restore_…``): loading restores the variables.
UNSAFE_GRAPH_OPS = frozenset(
    """
ReadFile WriteFile MatchingFiles PyFunc PyFuncStateless EagerPyFunc DebugIdentity DebugIdentityV2
DebugIdentityV3 TFRecordDataset TFRecordDatasetV2 TextLineDataset FixedLengthRecordDataset
FixedLengthRecordDatasetV2 WholeFileReader WholeFileReaderV2 TFRecordReader TFRecordReaderV2
TextLineReader TextLineReaderV2 FixedLengthRecordReader FixedLengthRecordReaderV2 ImmutableConst
LoadDataset SaveDataset SaveDatasetV2 WriteSummary WriteScalarSummary WriteHistogramSummary
WriteImageSummary WriteAudioSummary WriteGraphSummary WriteRawProtoSummary CreateSummaryFileWriter
CreateSummaryDbWriter
""".split()
)
CHECKPOINT_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "Save", "Restore", "RestoreSlice"})


def graph_ops(data: bytes) -> List[Tuple[str, str]]:
    """(function name, op) of every node in a serialized SavedModel's graphs and their function
    libraries ("" for the top-level graph). SavedModel: meta_graphs = 2; MetaGraphDef: graph_def = 2;
    GraphDef: node = 1, library = 2; FunctionDefLibrary: function = 1; FunctionDef: signature = 1
    (OpDef: name = 1), node_def = 3; NodeDef: op = 2."""

    def field(msg, number: int) -> list:
        return [v for n, w, v in protobuf_fields(msg) if n == number and w == 2]

    def text(msg, number: int) -> str:
        return next((bytes(v).decode("utf-8", "replace") for v in field(msg, number)), "")

    found = []
    for graph in (g for meta in field(data, 2) for g in field(meta, 2)):
        found += [("", text(node, 2)) for node in field(graph, 1)]
        for fn in (f for library in field(graph, 2) for f in field(library, 1)):
            name = next((text(sig, 1) for sig in field(fn, 1)), "")
            found += [(name, text(node, 2)) for node in field(fn, 3)]
    return found


def unsafe_graph_op(ops) -> Optional[str]:
    """Why a SavedModel's graph would touch files or run Python, or None."""
    for fn, op in ops:
        checkpoint = op in CHECKPOINT_OPS and ("_traced_save_" in fn or "_traced_restore_" in fn)
        if op in UNSAFE_GRAPH_OPS or (op in CHECKPOINT_OPS and not checkpoint):
            where = f"function {fn}" if fn else "the top-level graph"
            return f"its graph runs the TensorFlow op {op} (in {where}), which touches files or runs Python"
    return None


def _savedmodel(path: str) -> ModelFile:
    pb = os.path.join(path, "saved_model.pb")
    if not os.path.isfile(pb):
        raise InputError(
            f"{path} is a directory without saved_model.pb: not a SavedModel (give a .keras or .h5 "
            f"file, or a SavedModel directory)"
        )
    meta = os.path.join(path, "keras_metadata.pb")
    if not os.path.isfile(meta):
        limits.check_unpacked(f"{pb}", os.path.getsize(pb), os.path.getsize(pb))
        with open(pb, "rb") as f:
            data = f.read()
        try:
            ops = graph_ops(data)
        except ValueError as exc:
            raise InputError(f"{pb} is corrupt ({exc}): not a SavedModel") from None
        return ModelFile(path, "savedmodel", None, [], has_keras_metadata=False, graph_ops=ops)
    with open(meta, "rb") as f:
        data = f.read()
    configs, version = [], None
    try:
        # SavedMetadata: repeated SavedObject nodes = 1; SavedObject: metadata (JSON) = 5, version = 6
        for number, wire, node in protobuf_fields(data):
            if number != 1 or wire != 2:
                continue
            for n2, w2, value in protobuf_fields(node):
                if n2 == 5 and w2 == 2:
                    configs.append(_json(bytes(value).decode("utf-8", "replace"), f"{meta}"))
    except ValueError as exc:
        raise InputError(f"{meta} is corrupt ({exc}): not a SavedModel written by Keras") from None
    for c in configs:
        if isinstance(c, dict) and c.get("keras_version"):
            version = str(c["keras_version"])
            break
    return ModelFile(path, "savedmodel", version, configs)
