"""Dynamically quantized convolutions, run as float convolutions.

``onnxruntime.quantization.quantize_dynamic`` turns each ``Conv`` into int8 weights and, at every run, a
quantization of its input::

    DynamicQuantizeLinear(x) -> xq, xs, xz        Mul(xs, ws) -> s
    ConvInteger(xq, Wq, xz, wz) -> Cast(float) -> Mul(., s) -> y

On a CPU, ONNX Runtime runs that chain several times slower than the float convolution it replaces (the
YOLOv8n-seg int8 export of ``../shared/assets``: 142 ms against 36 ms a frame on two x86-64 cores), so a
user who quantized a model to make it fast gets it slower. :func:`float_convs` rewrites each such chain into
``Conv(x, (Wq - wz) * ws) -> y`` once, at load: the same int8 weights, without the per-run quantization of
the activations (so the outputs move by that quantization's error, towards the float model's).

The ONNX file is read and written with ``protobuf`` (which onnxruntime itself needs) through a schema of
only the fields used here; every other field, ``onnx``'s included, passes through as it was.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from numpy.typing import NDArray

# onnx.proto's field numbers (onnx/onnx.proto): only what the rewrite reads or writes
_SCHEMA = {
    "Model": {"graph": (7, "Graph")},
    "Graph": {
        "node": (1, "Node*"),
        "initializer": (5, "Tensor*"),
        "input": (11, "Value*"),
        "output": (12, "Value*"),
    },
    "Value": {"name": (1, "string")},
    "Node": {
        "input": (1, "string*"),
        "output": (2, "string*"),
        "name": (3, "string"),
        "op_type": (4, "string"),
        "attribute": (5, "Attribute*"),
        "domain": (7, "string"),
    },
    "Attribute": {"name": (1, "string"), "i": (3, "int64")},
    "Tensor": {
        "dims": (1, "int64*"),
        "data_type": (2, "int32"),
        "float_data": (4, "float+"),
        "int32_data": (5, "int32+"),
        "name": (8, "string"),
        "raw_data": (9, "bytes"),
        "data_location": (14, "int32"),
    },
}
_ORPHANS = ("DynamicQuantizeLinear", "Mul")  # what a rewrite can leave with no reader
_FLOAT, _UINT8, _INT8 = 1, 2, 3  # TensorProto.DataType
_DTYPES = {_FLOAT: np.float32, _UINT8: np.uint8, _INT8: np.int8}


@functools.cache
def _classes() -> dict[str, Any]:
    """Message classes for the subset of onnx.proto in ``_SCHEMA`` ("*": repeated, "+": packed)."""
    # imported here: building descriptors costs ~50 ms of start-up, which only such a model needs
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    types = {
        "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
        "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
        "float": descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT,
    }
    f = descriptor_pb2.FileDescriptorProto(
        name="edgeseg_onnx_subset.proto", package="edgeseg_onnx", syntax="proto2"
    )
    for message, fields in _SCHEMA.items():
        m = f.message_type.add(name=message)
        for field, (number, kind) in fields.items():
            d = m.field.add(name=field, number=number)
            d.label = d.LABEL_REPEATED if kind[-1] in "*+" else d.LABEL_OPTIONAL
            if kind[-1] == "+":  # as onnx.proto declares them
                d.options.packed = True
            kind = kind.rstrip("*+")
            if kind in types:
                d.type = types[kind]
            else:
                d.type, d.type_name = d.TYPE_MESSAGE, f".edgeseg_onnx.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"edgeseg_onnx.{name}"))
        for name in _SCHEMA
    }


def _array(t: Any) -> NDArray[Any] | None:
    """An initializer's values, or None for a kind the rewrite does not take (external data, other types)."""
    dtype = _DTYPES.get(t.data_type)
    if dtype is None or t.data_location == 1:
        return None
    if t.raw_data:
        values = np.frombuffer(t.raw_data, dtype)
    elif t.data_type == _FLOAT:
        values = np.asarray(t.float_data, np.float32)
    else:
        values = np.asarray(t.int32_data).astype(dtype)
    shape = tuple(t.dims)
    return values.reshape(shape) if values.size == int(np.prod(shape)) else None


def float_convs_of(path: Path) -> tuple[bytes, int]:
    """:func:`float_convs` of the file at ``path``; no bytes and 0 when it is no ONNX file (the runtime that
    loads the path then names the problem). Raises OSError when it cannot be read."""
    try:
        return float_convs(path.read_bytes())
    except (DecodeError, UnicodeDecodeError):  # protobuf checks a name's UTF-8 only once it is read
        return b"", 0


def float_convs(model: bytes) -> tuple[bytes, int]:
    """``model`` with its dynamically quantized convolutions (see the module) turned into float ones, and how
    many; ``model`` itself, unchanged, when it has none."""
    if b"ConvInteger" not in model:
        return model, 0
    classes = _classes()
    m = classes["Model"].FromString(model)
    g = m.graph
    if any(t.data_location == 1 for t in g.initializer):  # external data: read from bytes, it would be lost
        return model, 0
    # the same Python objects throughout (a protobuf implementation may hand out a new wrapper per access)
    all_nodes = list(g.node)
    inits = {t.name: t for t in g.initializer}
    made = {o: n for n in all_nodes for o in n.output}
    users: dict[str, list[Any]] = {}
    for n in all_nodes:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def only_user(name: str, op: str) -> Any:
        after = users.get(name, [])
        return after[0] if len(after) == 1 and after[0].op_type == op and not after[0].domain else None

    gone: set[int] = set()
    replaced: dict[int, Any] = {}
    for n in all_nodes:
        # each node of the chain is checked for the inputs and outputs its op has before they are read: a
        # damaged file that protobuf still parses is no such chain (onnxruntime names what is wrong with it)
        if n.op_type != "ConvInteger" or n.domain or not _has(n, 3, 1) or n.input[1] not in inits:
            continue
        quant = made.get(n.input[0])
        cast = only_user(n.output[0], "Cast")
        if (
            cast is None
            or not _has(cast, 1, 1)
            or not any(a.name == "to" and a.i == _FLOAT for a in cast.attribute)
        ):
            continue
        scale = only_user(cast.output[0], "Mul")
        if (
            quant is None
            or quant.op_type != "DynamicQuantizeLinear"
            or not _has(quant, 1, 3)
            or scale is None
            or not _has(scale, 2, 1)
            or n.input[2] != quant.output[2]
        ):
            continue
        scales = made.get(scale.input[1] if scale.input[0] == cast.output[0] else scale.input[0])
        if (
            scales is None
            or scales.op_type != "Mul"
            or not _has(scales, 2, 1)
            or quant.output[1] not in scales.input
        ):
            continue
        ws_name = scales.input[1] if scales.input[0] == quant.output[1] else scales.input[0]
        wq = _array(inits[n.input[1]])
        wz = _array(inits[n.input[3]]) if len(n.input) > 3 and n.input[3] in inits else np.zeros((), np.int8)
        ws = _array(inits[ws_name]) if ws_name in inits else None
        if (
            wq is None
            or wz is None
            or ws is None
            or ws.size not in (1, wq.shape[0])
            or wz.size not in (1, wq.shape[0])
        ):
            continue
        per_out = (-1,) + (1,) * (wq.ndim - 1)  # one value per output channel, or one for all
        w = (wq.astype(np.float32) - wz.astype(np.float32).reshape(per_out)) * ws.astype(np.float32).reshape(
            per_out
        )
        name = f"{n.input[1]}/float"
        while name in inits:  # int8 weights shared by two convolutions, each with its own scale
            name += "'"
        weight = classes["Tensor"](name=name, data_type=_FLOAT, dims=w.shape, raw_data=w.tobytes())
        inits[name] = weight
        conv = classes["Node"](
            name=f"{n.name}/float" if n.name else "",  # where names are given, they are unique
            op_type="Conv",
            input=[quant.input[0], weight.name],
            output=[scale.output[0]],
            attribute=list(n.attribute),
        )
        replaced[id(n)] = conv
        gone |= {id(cast), id(scale)}
    if not replaced:
        return model, 0
    nodes = [replaced.get(id(n), n) for n in all_nodes if id(n) not in gone]
    # the quantizations and scale products that nothing reads any more go too, and so do the int8 weights
    outputs = {v.name for v in g.output}
    while True:
        read = {i for n in nodes for i in n.input} | outputs
        left = [n for n in nodes if n.op_type not in _ORPHANS or read & set(n.output)]
        if len(left) == len(nodes):
            break
        nodes = left
    read = {i for n in nodes for i in n.input} | {v.name for v in g.input}
    # copies, so that clearing the repeated fields cannot take the kept messages with them
    kept_nodes = [_copy(classes["Node"], n) for n in nodes]
    weights = [_copy(classes["Tensor"], t) for name, t in inits.items() if name in read]
    del g.node[:]
    g.node.extend(kept_nodes)
    del g.initializer[:]
    g.initializer.extend(weights)
    return m.SerializeToString(), len(replaced)


def _has(node: Any, inputs: int, outputs: int) -> bool:
    """Whether ``node`` has at least ``inputs`` inputs and ``outputs`` outputs."""
    return len(node.input) >= inputs and len(node.output) >= outputs


def _copy(cls: Any, message: Any) -> Any:
    out = cls()
    out.CopyFrom(message)
    return out
