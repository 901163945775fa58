"""The ``.tflite`` flatbuffer schema (it ships with ai-edge-litert) and the names the converters
read from it: one place for inspection, weight sharing and the microcontroller checks."""

from __future__ import annotations

from typing import Dict, List


def schema():
    from ai_edge_litert import schema_py_generated as module

    return module


def enum_names(enum_cls) -> Dict[int, str]:
    """Value → name of a generated schema enum (``BuiltinOperator``, ``TensorType``)."""
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _code_name(builtin: int, deprecated: int, custom, names: Dict[int, str]) -> str:
    code = max(builtin, deprecated)
    name = names.get(code, f"BUILTIN_{code}")
    if name == "CUSTOM":
        custom = (custom or b"?").decode("utf-8", "replace") if isinstance(custom, bytes) else str(custom or "?")
        name = f"FLEX:{custom[4:]}" if custom.startswith("Flex") else f"CUSTOM:{custom}"
    return name


def opcode_names(model) -> List[str]:
    """The name of each operator code of a parsed ``Model`` (accessor API): the builtin's,
    ``FLEX:Op`` or ``CUSTOM:name``."""
    names = enum_names(schema().BuiltinOperator)
    return [
        _code_name(oc.BuiltinCode(), oc.DeprecatedBuiltinCode(), oc.CustomCode(), names)
        for oc in (model.OperatorCodes(i) for i in range(model.OperatorCodesLength()))
    ]


def opcode_names_t(model) -> List[str]:
    """:func:`opcode_names` of an unpacked ``ModelT`` (object API)."""
    names = enum_names(schema().BuiltinOperator)
    return [_code_name(c.builtinCode, c.deprecatedBuiltinCode, c.customCode, names) for c in model.operatorCodes]


def signature_names(tflite: bytes) -> List[str]:
    """The file's signature keys in subgraph order (the converter orders them by name)."""
    model = schema().Model.GetRootAsModel(tflite, 0)
    sigs = [model.SignatureDefs(i) for i in range(model.SignatureDefsLength())]
    return [s.SignatureKey().decode("utf-8", "replace") for s in sorted(sigs, key=lambda s: s.SubgraphIndex())]
