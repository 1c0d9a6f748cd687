"""Put facexplain's input contract in front of any user ONNX face model.

A user's model takes whatever its trainer fed it (BGR or RGB, its own mean and std) under its own
input name. :func:`wrap_onnx` prepends the conversion from facexplain's one convention -- input
``image``: float32 (N, 3, S, S) RGB pixels in [0, 255] -- so that the preprocessing lives in the
graph and nowhere else, and renames the output to ``embedding``::

    image --Gather(axis=1, [2, 1, 0]) (bgr only)--> Sub(mean) --> Div(std) --> <original input>

The opset is kept (the added ops exist since opset 7). A fixed batch size is made dynamic when
the graph allows it (checked by running a batch of two with onnxruntime); otherwise the batch is
left fixed and a warning says so. The convention is recorded in the model's metadata
(``facexplain.convention``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import InputError, ModelFormatError
from .families import INPUT_NAME, OUTPUT_NAME, InputConvention, resolve_convention

__all__ = ["wrap_onnx", "onnx_input_info", "BATCH_DIM"]

#: Name given to the dynamic batch axis.
BATCH_DIM = "batch"
_MIN_OPSET = 7


def _load(model: onnx.ModelProto | str | Path, name: str | None) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        return model, name or "ONNX model"
    path = Path(model)
    try:
        return onnx.load(str(path)), name or str(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such ONNX file") from None
    except Exception as exc:
        raise ModelFormatError(f"{path}: not a readable ONNX model ({str(exc).splitlines()[0][:200]})") from exc


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None] | None:
    """Shape as ints (fixed), strings (named dynamic) or None (unknown); None without a shape."""
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _check(model: onnx.ModelProto, name: str, chip: int | None) -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto, int]:
    """(input, output, chip) of a face model that fits; ModelFormatError naming the problem."""
    graph = model.graph
    inputs = _real_inputs(graph)
    if len(inputs) != 1:
        raise ModelFormatError(
            f"{name}: a face model needs exactly 1 input, this one has {len(inputs)} "
            f"({', '.join(i.name for i in inputs) or 'none'})"
        )
    inp = inputs[0]
    if len(graph.output) != 1:
        raise ModelFormatError(
            f"{name}: a face model needs exactly 1 output (N, D), this one has {len(graph.output)} "
            f"({', '.join(o.name for o in graph.output)})"
        )
    out = graph.output[0]
    if out.name == inp.name:
        raise ModelFormatError(f"{name}: the output is the input itself; not a face model")
    if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
        kind = TensorProto.DataType.Name(inp.type.tensor_type.elem_type)
        raise ModelFormatError(f"{name}: input {inp.name!r} is {kind}, expected float32")
    dims = _dims(inp)
    if dims is None or len(dims) != 4:
        got = "no shape" if dims is None else f"shape {dims}"
        raise ModelFormatError(f"{name}: input {inp.name!r} must be 4-D NCHW, it has {got}")
    if dims[1] != 3:
        raise ModelFormatError(f"{name}: input {inp.name!r} must have 3 channels (NCHW), it has shape {dims}")
    h, w = dims[2], dims[3]
    if isinstance(h, int) and isinstance(w, int):
        if h != w:
            raise ModelFormatError(f"{name}: input {inp.name!r} is {h}x{w}; face chips must be square")
        if chip is not None and chip != h:
            raise ModelFormatError(f"{name}: input {inp.name!r} is fixed at {h}x{w}, not the chip {chip} asked for")
        chip = h
    else:
        fixed = h if isinstance(h, int) else w if isinstance(w, int) else None
        if fixed is not None:
            if chip is not None and chip != fixed:
                raise ModelFormatError(f"{name}: input {inp.name!r} has a side fixed at {fixed}, not the chip {chip}")
            chip = fixed
        elif chip is None:
            raise ModelFormatError(f"{name}: input {inp.name!r} has no fixed size ({dims}); give the chip size")
    if chip < 1:
        raise ModelFormatError(f"{name}: chip size must be positive, got {chip}")
    odims = _dims(out)
    if odims is not None and len(odims) != 2:
        raise ModelFormatError(f"{name}: output {out.name!r} has shape {odims}, expected (N, D)")
    if _default_opset(model) < _MIN_OPSET:
        raise ModelFormatError(f"{name}: opset {_default_opset(model)} is older than {_MIN_OPSET}")
    return inp, out, int(chip)


def onnx_input_info(model: onnx.ModelProto | str | Path) -> dict[str, Any]:
    """Input and output facts of a face model (an ONNX file or ModelProto).

    Keys: name (input name), shape (ints, names of dynamic axes, or None), chip (side of the
    square input, None if not fixed), dynamic_batch, output_name, output_shape, output_dim
    (D, None if unknown), opset, convention (the stored InputConvention, or None).
    """
    m, label = _load(model, None)
    inputs = _real_inputs(m.graph)
    if len(inputs) != 1 or len(m.graph.output) != 1:
        raise ModelFormatError(
            f"{label}: a face model needs 1 input and 1 output, this one has {len(inputs)} and {len(m.graph.output)}"
        )
    inp, out = inputs[0], m.graph.output[0]
    dims = _dims(inp) or []
    odims = _dims(out)
    side = dims[2] if len(dims) == 4 and isinstance(dims[2], int) and dims[2] == dims[3] else None
    meta = {p.key: p.value for p in m.metadata_props}
    conv = None
    if "facexplain.convention" in meta:
        conv = InputConvention.from_dict(json.loads(meta["facexplain.convention"]))
    return {
        "name": inp.name,
        "shape": dims,
        "chip": side,
        "dynamic_batch": bool(dims) and not isinstance(dims[0], int),
        "output_name": out.name,
        "output_shape": odims,
        "output_dim": odims[1] if odims and len(odims) == 2 and isinstance(odims[1], int) else None,
        "opset": _default_opset(m),
        "convention": conv,
    }


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info)}
    names |= {i.name for i in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= _all_names(sub)
    return names


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor everywhere in the graph, subgraphs included (they may read outer names)."""
    for node in graph.node:
        for i, n in enumerate(node.input):
            if n == old:
                node.input[i] = new
        for i, n in enumerate(node.output):
            if n == old:
                node.output[i] = new
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _rename(sub, old, new)
    for v in list(graph.value_info) + list(graph.output):
        if v.name == old:
            v.name = new


def _unique(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _set_dim(dim: onnx.TensorShapeProto.Dimension, value: int | str) -> None:
    if isinstance(value, int):
        dim.dim_value = value
    else:
        dim.dim_param = value


def _runs_batched(model: onnx.ModelProto, chip: int) -> bool:
    """Whether the model takes a batch of 2 and returns 2 rows (a fixed batch baked in fails)."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).uniform(0, 255, (2, 3, chip, chip)).astype(np.float32)
        (y,) = sess.run(None, {sess.get_inputs()[0].name: x})
    except Exception:
        return False
    return bool(y.ndim == 2 and y.shape[0] == 2)


def wrap_onnx(
    model: onnx.ModelProto | str | Path,
    convention: str | InputConvention,
    *,
    chip: int | None = None,
    name: str | None = None,
) -> onnx.ModelProto:
    """A copy of ``model`` that takes ``image`` RGB 0..255 and returns ``embedding``.

    ``model``: a ModelProto or the path of an ONNX file, with one float32 NCHW input of 3
    channels, square, and one (N, D) output. ``convention``: what the model itself expects (an
    InputConvention or a preset name such as "paddle-bgr128"). ``chip``: the input side, needed
    only when the model's spatial size is not fixed. ``name``: how messages name the model
    (default: the path, or "ONNX model"). Raises ModelFormatError when the model does not fit
    or cannot be read, InputError for a missing file.
    """
    conv = resolve_convention(convention)
    src, label = _load(model, name)
    inp0, out0, chip = _check(src, label, chip)
    m = onnx.ModelProto()
    m.CopyFrom(src)
    graph = m.graph
    taken = _all_names(graph)
    old_in, old_out = inp0.name, out0.name
    inp = next(i for i in graph.input if i.name == old_in)
    out = graph.output[0]

    # The old input becomes an internal tensor; make room for the names "image" and "embedding".
    if old_in == INPUT_NAME:
        internal = _unique(f"{INPUT_NAME}_network", taken)
        _rename(graph, old_in, internal)
        old_in = internal
    if OUTPUT_NAME in taken and old_out != OUTPUT_NAME:
        _rename(graph, OUTPUT_NAME, _unique(f"{OUTPUT_NAME}_internal", taken))
    if old_out != OUTPUT_NAME:
        _rename(graph, old_out, OUTPUT_NAME)
    taken.update({INPUT_NAME, OUTPUT_NAME})

    # Preprocessing nodes: image -> [Gather] -> [Sub] -> [Div] -> old_in.
    nodes: list[onnx.NodeProto] = []
    steps: list[tuple[str, np.ndarray]] = []
    if conv.channels == "bgr":
        steps.append(("Gather", np.asarray(conv.order, dtype=np.int64)))
    if any(v != 0.0 for v in conv.mean):
        steps.append(("Sub", np.asarray(conv.mean, dtype=np.float32).reshape(1, 3, 1, 1)))
    if any(v != 1.0 for v in conv.std):
        steps.append(("Div", np.asarray(conv.std, dtype=np.float32).reshape(1, 3, 1, 1)))
    current = INPUT_NAME
    for k, (op, const) in enumerate(steps):
        cname = _unique(f"facexplain_{op.lower()}_const", taken)
        nodes.append(helper.make_node("Constant", [], [cname], value=numpy_helper.from_array(const, cname),
                                      name=_unique(f"facexplain_{op.lower()}_const_node", taken)))
        target = old_in if k == len(steps) - 1 else _unique(f"facexplain_{op.lower()}_out", taken)
        node = helper.make_node(op, [current, cname], [target], name=_unique(f"facexplain_{op.lower()}", taken))
        if op == "Gather":
            node.attribute.append(helper.make_attribute("axis", 1))
        nodes.append(node)
        current = target
    if not steps:
        nodes.append(helper.make_node("Identity", [INPUT_NAME], [old_in], name=_unique("facexplain_identity", taken)))
    new_nodes = nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes)

    # The new input: same type and shape, named "image", spatial size fixed at the chip.
    inp.name = INPUT_NAME
    dims = inp.type.tensor_type.shape.dim
    _set_dim(dims[2], chip)
    _set_dim(dims[3], chip)
    batch = _dims(inp)[0]  # type: ignore[index]
    odims = out.type.tensor_type.shape.dim if out.type.tensor_type.HasField("shape") else None

    fixed_batch = isinstance(batch, int)
    if not fixed_batch:
        _set_dim(dims[0], BATCH_DIM)
        if odims is not None and len(odims) == 2 and not odims[0].HasField("dim_value"):
            _set_dim(odims[0], BATCH_DIM)
    meta = {
        "facexplain.input": f"{INPUT_NAME}: float32 (batch, 3, {chip}, {chip}) RGB 0..255",
        "facexplain.convention": json.dumps(conv.to_dict()),
        "facexplain.source_io": json.dumps({"input": inp0.name, "output": out0.name}),
    }
    kept = [p for p in m.metadata_props if not p.key.startswith("facexplain.")]
    del m.metadata_props[:]
    m.metadata_props.extend(kept)
    for key, value in meta.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value

    if fixed_batch:
        trial = onnx.ModelProto()
        trial.CopyFrom(m)
        tdims = trial.graph.input[[i.name for i in trial.graph.input].index(INPUT_NAME)].type.tensor_type.shape.dim
        _set_dim(tdims[0], BATCH_DIM)
        tout = trial.graph.output[0].type.tensor_type
        if tout.HasField("shape") and len(tout.shape.dim) == 2:
            _set_dim(tout.shape.dim[0], BATCH_DIM)
        del trial.graph.value_info[:]  # inferred intermediate shapes carry the old batch size
        if _runs_batched(trial, chip):
            m = trial
            fixed_batch = False
        else:
            warnings.warn(f"{label}: the batch size stays fixed at {batch}: the graph does not run with another",
                          stacklevel=2)
    entry = m.metadata_props.add()
    entry.key, entry.value = "facexplain.batch", f"fixed:{batch}" if fixed_batch else "dynamic"
    try:
        onnx.checker.check_model(m)
    except onnx.checker.ValidationError as exc:
        raise ModelFormatError(f"{label}: wrapped graph is invalid ({str(exc).splitlines()[0][:200]})") from exc
    return m
