"""Loading reward models (any sequence-classification backbone with one label) and freezing their lowest layers."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from commentrank.io_utils import redact

logger = logging.getLogger(__name__)

# Where the stack of transformer blocks lives, by architecture family (the CUP IT solution's list, extended).
LAYER_PATHS = ("encoder.layer", "transformer.h", "h", "layers", "model.layers", "decoder.layers", "gpt_neox.layers")


def load_tokenizer(name_or_path: str, pad_at_eos: bool = True, **kwargs):
    """The tokenizer with the special tokens a reward model needs.

    Encoders without an EOS token (the bundled MiniLM) get their SEP token as EOS (TRL expects one). Decoders
    without a pad token pad with EOS; with `pad_at_eos=False` a separate `<|pad|>` token is added instead, so
    that the reward is read *at* the appended EOS as in the original CUP IT solution (the embeddings must then
    be resized: `load_reward_model` does it).
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except OSError as err:
        raise model_not_found(name_or_path, err) from None
    if "gguf_file" not in kwargs:
        check_tokenizer_files(tokenizer, name_or_path)
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token
    if tokenizer.pad_token is None or (not pad_at_eos and tokenizer.pad_token == tokenizer.eos_token):
        if pad_at_eos:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    return tokenizer


def model_not_found(name_or_path: str, err: OSError) -> FileNotFoundError:
    """The one-line error for a model transformers could not load (an OSError of many lines)."""
    first = redact(str(err).strip().splitlines()[0]) if str(err).strip() else type(err).__name__
    if Path(name_or_path).is_dir():
        return FileNotFoundError(f"{name_or_path}: cannot load the model's tokenizer ({first})")
    return FileNotFoundError(
        f"model not found: {name_or_path} is neither a local folder nor a Hub model that could be reached ({first})"
    )


def check_tokenizer_files(tokenizer, name_or_path: str) -> None:
    """Refuse a tokenizer built without its vocabulary. transformers 5 builds a tokenizer from the model's config alone
    when its files are missing (a BERT one of 5 special tokens: every word becomes [UNK]) and scoring would go on with
    it. A local folder must hold one of the tokenizer's own files (`tokenizer.json`, or e.g. `vocab.txt`), and a
    tokenizer from anywhere must know some token that is not special."""
    names = sorted(set(getattr(tokenizer, "vocab_files_names", {}).values()))
    folder = Path(name_or_path)
    missing = folder.is_dir() and names and not any((folder / name).is_file() for name in names)
    specials = set(tokenizer.all_special_tokens)
    if missing or not any(token not in specials for token in tokenizer.get_vocab()):
        raise ValueError(
            f"{name_or_path} has no tokenizer files ({' or '.join(names) or 'no vocabulary'}): transformers would "
            f"build a {len(tokenizer)}-token vocabulary (every word unknown). Save the tokenizer the model was "
            "trained with into it (tokenizer.save_pretrained)"
        )


def cpu_bf16_flags() -> list[str]:
    """The CPU's bfloat16 instructions (`amx_bf16`, `avx512_bf16`) as Linux reports them; [] elsewhere."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    return sorted({flag for flag in flags if flag in ("amx_bf16", "avx512_bf16")})


def choose_dtype(dtype: str, device: str) -> tuple[str, str]:
    """The dtype to score in and why. `auto`: bfloat16 on GPUs that support it and on CPUs with AMX or AVX512-BF16
    (2-3x faster than float32 there, the same rankings: see the README's scoring benchmark), float32 elsewhere."""
    if dtype != "auto":
        return dtype, "as asked"
    if str(device).startswith("cuda"):
        if torch.cuda.is_bf16_supported():
            return "bfloat16", "auto: the GPU supports bfloat16"
        return "float32", "auto: the GPU has no bfloat16"
    flags = cpu_bf16_flags()
    if flags:
        return "bfloat16", f"auto: the CPU has {', '.join(flags)}"
    return "float32", "auto: the CPU has no bfloat16 instructions"


def is_classifier(config) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in getattr(config, "architectures", None) or [])


def check_num_labels(config, name: str) -> None:
    """A saved classifier with several labels is not a reward model (a base model or causal LM gets a new head)."""
    if is_classifier(config) and config.num_labels != 1:
        raise ValueError(
            f"{name} is a classifier with {config.num_labels} labels; a reward model has a single-logit head "
            "(num_labels=1)"
        )


PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")


def check_weights_format(name_or_path: str, allow_pickle: bool = False) -> None:
    """Refuse a model folder whose weights are only a pickle (`pytorch_model.bin`): loading one can run any code.
    `allow_pickle` opts in for weights you trust."""
    folder = Path(name_or_path)
    if allow_pickle or not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = [name for name in PICKLE_WEIGHTS if (folder / name).is_file()]
    if pickles:
        raise ValueError(
            f"{name_or_path} holds pickle weights ({', '.join(pickles)}) and no safetensors: loading a pickle can run "
            "any code. Convert it (model.save_pretrained writes safetensors), or pass --allow_pickle_weights if "
            "you trust its source"
        )


def load_reward_model(
    name_or_path: str,
    tokenizer=None,
    dtype: str | torch.dtype | None = "float32",
    freeze_fraction: float = 0.0,
    allow_pickle: bool = False,
    freeze_embeddings: bool = False,
    **kwargs,
) -> PreTrainedModel:
    """A one-label `AutoModelForSequenceClassification` from a folder or Hub id (a causal-LM checkpoint, e.g. an
    SFT output, gets a new score head). The pad token id is set from the tokenizer so that decoders pool at the
    last non-pad token. A LoRA output folder loads its base model and merges the adapter. Weights load from
    safetensors only, unless `allow_pickle` (see `check_weights_format`)."""
    adapter_config = Path(name_or_path) / "adapter_config.json"
    if adapter_config.exists():  # a LoRA output: the base model plus the adapter (and its trained score head)
        from peft import PeftModel

        check_weights_format(name_or_path, allow_pickle)
        base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        model = load_reward_model(base, tokenizer, dtype, freeze_fraction, allow_pickle, freeze_embeddings, **kwargs)
        return PeftModel.from_pretrained(model, name_or_path).merge_and_unload()
    check_weights_format(name_or_path, allow_pickle)
    config = AutoConfig.from_pretrained(name_or_path, **{k: v for k, v in kwargs.items() if k == "revision"})
    check_num_labels(config, name_or_path)
    if not allow_pickle:
        kwargs.setdefault("use_safetensors", True)  # a Hub model without safetensors is refused by transformers
    model = AutoModelForSequenceClassification.from_pretrained(name_or_path, num_labels=1, dtype=dtype, **kwargs)
    model.config.id2label, model.config.label2id = {0: "reward"}, {"reward": 0}  # one label: a reranker to TEI
    if model.dtype in (torch.bfloat16, torch.float16):
        head_in_float32(model)
    if tokenizer is not None:
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
        if tokenizer.eos_token_id is not None:
            model.config.eos_token_id = tokenizer.eos_token_id
    if freeze_fraction:
        freeze_lowest_layers(model, freeze_fraction)
    if freeze_embeddings:
        freeze_embedding_block(model)
    return model


# The modules below the first block that hold position embeddings, where the architecture has them apart
POSITION_EMBEDDINGS = ("wpe", "embed_positions", "position_embeddings")


def embedding_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Everything below the first transformer block: the base model's `embeddings` block (BERT-like: token, position
    and segment embeddings and their LayerNorm), else the input embeddings and any separate position embeddings
    (GPT-2's `wpe`)."""
    base = getattr(model, "base_model", model)
    block = getattr(base, "embeddings", None)
    if isinstance(block, torch.nn.Module):
        return [block]
    found = [model.get_input_embeddings()]
    for name in POSITION_EMBEDDINGS:
        module = getattr(base, name, None)
        if isinstance(module, torch.nn.Module) and all(module is not m for m in found):
            found.append(module)
    return found


def freeze_embedding_block(model: torch.nn.Module) -> int:
    """Freeze everything below the first transformer block (`embedding_modules`). The token embedding matrix is half
    of MiniLM's weights (its dense gradient and Adam state go), and with nothing below the blocks left to train,
    backward stops at the lowest trainable block: with `freeze_lowest_layers` the frozen blocks run forward only.
    Returns the number of parameters frozen."""
    frozen = 0
    for module in embedding_modules(model):
        module.requires_grad_(False)
        frozen += sum(p.numel() for p in module.parameters())
    logger.info("froze the embeddings (%d parameters)", frozen)
    return frozen


HEAD_NAMES = ("classifier", "score")


def head_in_float32(model: torch.nn.Module) -> torch.nn.Module | None:
    """Run the reward head of a half-precision model in float32: the body's last hidden states are rounded to bfloat16
    anyway, but a bfloat16 logit has only 8 bits, which makes close comments tie. Returns the head (None if none)."""
    head = next((getattr(model, name) for name in HEAD_NAMES
                 if isinstance(getattr(model, name, None), torch.nn.Module)),
                None)  # fmt: skip
    if head is None:
        return None
    head.float()
    head.register_forward_pre_hook(
        lambda module, args, kwargs: (
            tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args),
            {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in kwargs.items()},
        ),
        with_kwargs=True,
    )
    return head


def find_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    base = getattr(model, "base_model", model)
    for root in (base, model):
        for path in LAYER_PATHS:
            module = root
            for attr in path.split("."):
                module = getattr(module, attr, None)
                if module is None:
                    break
            if isinstance(module, torch.nn.ModuleList):
                return module
    raise ValueError(f"cannot find the transformer blocks of {type(model).__name__} (looked for {LAYER_PATHS})")


def freeze_lowest_layers(model: torch.nn.Module, fraction: float) -> int:
    """Freeze the lowest blocks as the CUP IT solution did: keep `(1 - fraction) * L` blocks trainable, rounded down.

    With fraction 0.3 that freezes 4 of GPT-2's 12 blocks and 2 of MiniLM's 6. Returns the number frozen.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"freeze_fraction must be in [0, 1), got {fraction}")
    layers = find_layers(model)
    # round((1 - f) * L, 6) before rounding down: (1 - 0.9) * 10 is 0.9999... in floating point, one block, not none
    n_frozen = len(layers) - math.floor(round((1 - fraction) * len(layers), 6))
    for layer in layers[:n_frozen]:
        layer.requires_grad_(False)
    logger.info("froze the lowest %d of %d blocks", n_frozen, len(layers))
    return n_frozen
