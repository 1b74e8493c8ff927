"""The one-time SmolLM2 GGUF -> float32 checkpoint conversion keeps the model: same logits, same token ids."""

from pathlib import Path

import pytest
import torch

from commentrank import bundled_models
from commentrank.bundled_models import SMOLLM2_GGUF_FILE, smollm2_gguf_dir

from conftest import load_script

TEXTS = [
    "Is it OK to age an IPA?\n\nNo: hop aroma fades within weeks.<|im_end|>",
    "Ask HN: what editor do you use?\n\nvim, for 20 years now",
    "Ünïcode, émojis ☕ and numbers: 3.14159 / 2**10 = 1024",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """A fresh conversion by the current code (about a minute), never the cached folder an older version made."""
    return Path(
        load_script("convert_smollm2").main(["--output_dir", str(tmp_path_factory.mktemp("gguf") / "smollm2")])
    )


def test_conversion_is_skipped_when_present(tmp_path, monkeypatch, capsys):
    from commentrank.outputs import write_marker

    (tmp_path / "config.json").write_text("{}")  # a finished conversion: its files and its marker
    (tmp_path / "model.safetensors").write_bytes(b"")
    write_marker(tmp_path, "smollm2_checkpoint", ["config.json", "model.safetensors"])

    def must_not_load():
        raise AssertionError("the GGUF file was read although the folder exists")

    monkeypatch.setattr(bundled_models, "load_smollm2_from_gguf", must_not_load)
    assert load_script("convert_smollm2").main(["--output_dir", str(tmp_path)]) == str(tmp_path)
    assert capsys.readouterr().out.strip() == str(tmp_path)


@pytest.mark.slow
def test_converted_folder_has_the_gguf_models_logits_and_tokens(converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = smollm2_gguf_dir()
    gguf_tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF_FILE)
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert tokenizer.eos_token == tokenizer.pad_token == gguf_tokenizer.eos_token == "<|im_end|>"
    for text in TEXTS:
        assert tokenizer(text)["input_ids"] == gguf_tokenizer(text)["input_ids"]

    model = AutoModelForCausalLM.from_pretrained(converted).eval()
    assert model.dtype == torch.float32 and not hasattr(model.config, "quantization_config")
    assert (converted / "model.safetensors").exists()
    reference = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF_FILE).eval()  # dequantized
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits, expected = model(**batch).logits, reference(**batch).logits
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(logits[mask], expected[mask], rtol=0, atol=1e-5)
    assert logits[mask].argmax(-1).tolist() == expected[mask].argmax(-1).tolist()
