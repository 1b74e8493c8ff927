"""Reward models exported to ONNX: the export (float32, and int8 with dynamic quantization) and an onnxruntime model
that the scorer runs like a PyTorch one.

An exported folder holds `model.onnx` (and `model_int8.onnx`), the tokenizer, `config.json` and
`commentrank_config.json`, so `scripts/score.py --model FOLDER` and `scripts/rank.py` score with it exactly as with
the PyTorch model (same encoder, same batches); `--onnx_file model_int8.onnx` picks the quantized one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

import torch

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
OPSET = 17


def export_onnx(model: torch.nn.Module, tokenizer, path: str | os.PathLike, segment_ids: bool) -> Path:
    """`model` (one-label sequence classifier, float32, eval) as ONNX with dynamic batch and sequence axes; inputs
    `input_ids`, `attention_mask` (and `token_type_ids` when the model takes segment ids), output `logits`."""
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if segment_ids else [])
    example = tokenizer(["a post", "a post"], ["a comment", "another, longer comment"], padding=True,
                        return_tensors="pt")  # fmt: skip
    args = tuple(example[name] for name in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    path = Path(path)
    # A decoder returns its key-value cache (a DynamicCache, which the tracer cannot take) unless use_cache is off;
    # a reward is one forward pass, which never needs it. The model's config is left as it was.
    use_cache = getattr(model.config, "use_cache", None)
    if use_cache is not None:
        model.config.use_cache = False
    try:
        with torch.no_grad():
            torch.onnx.export(model.float().eval(), args, str(path), input_names=names, output_names=["logits"],
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)  # fmt: skip
    finally:
        if use_cache is not None:
            model.config.use_cache = use_cache
    return path


def quantize_int8(onnx_path: str | os.PathLike, int8_path: str | os.PathLike) -> Path:
    """Dynamic int8 quantization of the weights (activations quantized on the fly): onnxruntime's
    `quantize_dynamic`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(onnx_path), str(int8_path), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # fmt: skip
    return Path(int8_path)


class OnnxRewardModel:
    """An exported reward model on onnxruntime, with the part of a PyTorch module's interface that scoring uses:
    `model(input_ids=..., attention_mask=..., token_type_ids=...)` returns an object with `logits`."""

    training = False

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, **inputs) -> SimpleNamespace:
        feed = {name: inputs[name].cpu().numpy() for name in self.input_names}
        (logits,) = self.session.run(["logits"], feed)
        return SimpleNamespace(logits=torch.from_numpy(logits))

    def parameters(self):
        yield torch.empty(0)  # on the CPU

    def eval(self) -> OnnxRewardModel:
        return self

    def train(self, mode: bool = True) -> OnnxRewardModel:
        return self

    def to(self, *args, **kwargs) -> OnnxRewardModel:
        return self


def onnx_file_of(model_path: str | os.PathLike, onnx_file: str | None = None) -> Path | None:
    """The ONNX file a model folder is scored with: `onnx_file` when given, else `model.onnx` of a folder that holds
    no PyTorch weights (an exported folder); None for a PyTorch model."""
    folder = Path(model_path)
    if onnx_file:
        path = folder / onnx_file
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: export it with scripts/export.py")
        return path
    if folder.is_dir() and (folder / ONNX_FILE).is_file() and not any(folder.glob("*.safetensors")):
        return folder / ONNX_FILE
    return None
