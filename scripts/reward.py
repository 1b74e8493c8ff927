"""Train a reward model that ranks comments, on TRL's RewardTrainer (pairwise loss -log sigmoid(r_c - r_r)).

Usage:

    # the quickstart: bundled MiniLM, shipped Stack Exchange sample, one CPU process
    python scripts/reward.py --config recipes/quickstart/reward.yaml

    # any recipe on Accelerate (DeepSpeed ZeRO-2 here); flags override the YAML
    accelerate launch --config_file accelerate_configs/deepspeed_zero2.yaml scripts/reward.py \
        --config recipes/gpt2/reward_no_context.yaml --output_dir outputs/gpt2-rm --push_to_hub true

The dataset is a data_prep folder, a raw ranked file (converted on the fly) or a Hub dataset id. Prompt and
comment are tokenized here (truncated, never dropped; counted in `data_summary.json`). A killed run resumes
from its last checkpoint with the same command. The output folder holds the model, tokenizer,
`commentrank_config.json` (how to encode inputs at scoring time), `train_results.json` and a model card.
"""

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from functools import partial

from accelerate.utils import is_peft_model
from transformers import set_seed
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, RewardConfig, RewardTrainer, TrlParser, get_peft_config

from commentrank.bundled_models import resolve_model_path
from commentrank.encoding import PairEncoder
from commentrank.io_utils import atomic_write_text
from commentrank.metrics import baseline_metrics
from commentrank.model_card import build_model_card, push_to_hub, save_model_card
from commentrank.modeling import load_reward_model, load_tokenizer
from commentrank.score.scorer import DEFAULT_ENCODER_SETTINGS, save_encoder_settings
from commentrank.train.callbacks import RankingEvalCallback
from commentrank.train.pairwise import load_view, tokenize_pairs

logger = logging.getLogger("commentrank.reward")


@dataclass
class RewardScriptArguments:
    dataset_name: str = field(metadata={"help": "data_prep output folder, raw ranked file, or Hub dataset id."})
    dataset_config: str = field(default="pairwise", metadata={"help": "View trained on (pairwise or listwise)."})
    dataset_train_split: str = field(default="train", metadata={"help": "Training split."})
    dataset_test_split: str = field(default="validation", metadata={"help": "Evaluation split (NDCG callback)."})
    prompt_template: str = field(default="{title}", metadata={"help": "Prompt template for raw files."})
    pair_strategy: str = field(default="adjacent", metadata={"help": "Pairs from raw files: adjacent, all, ..."})
    loss_type: str = field(
        default="pairwise",
        metadata={"help": "pairwise: stock RewardTrainer on pairs; pairwise_all / listmle: listwise trainer."},
    )
    max_comments_per_post: int | None = field(default=None, metadata={"help": "Listwise: cap on comments/post."})
    freeze_fraction: float = field(
        default=0.0, metadata={"help": "Freeze the lowest blocks, keeping int((1-f)*L) trainable (CUP IT: 0.3)."}
    )
    min_comment_tokens: int = field(
        default=64, metadata={"help": "Tokens kept for the comment before the prompt is cut."}
    )
    truncation_side: str = field(default="right", metadata={"help": "right: cut tails; left: keep the text's end."})
    separator: str = field(default="\n\n", metadata={"help": "Decoders: text between prompt and comment."})
    text_prefix: str = field(default="", metadata={"help": "Decoders: plain text before the prompt."})
    pad_at_eos: bool = field(
        default=True, metadata={"help": "Decoders: pad with EOS (False: add a pad token, reward read at EOS)."}
    )
    merge_lora: bool = field(
        default=False, metadata={"help": "With use_peft: save the merged full model instead of the adapter."}
    )
    use_margin: bool = field(default=False, metadata={"help": "Use the rank gap as margin in the loss."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on a seeded subset."})
    ndcg_eval_posts: int | None = field(default=None, metadata={"help": "Posts scored by the NDCG callback."})


def encoder_settings(script_args, training_args) -> dict:
    return {
        "max_length": training_args.max_length or DEFAULT_ENCODER_SETTINGS["max_length"],
        "separator": script_args.separator,
        "min_comment_tokens": script_args.min_comment_tokens,
        "truncation_side": script_args.truncation_side,
        "text_prefix": script_args.text_prefix,
        "prompt_template": script_args.prompt_template,
        "pad_at_eos": script_args.pad_at_eos,
    }


def make_parser() -> TrlParser:
    return TrlParser((RewardScriptArguments, RewardConfig, ModelConfig))


def main(argv=None) -> RewardTrainer:
    script_args, training_args, model_args = make_parser().parse_args_and_config(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    model_args.model_name_or_path = resolve_model_path(model_args.model_name_or_path)
    set_seed(training_args.seed)  # before the score head is created: every process must start from the same weights

    tokenizer = load_tokenizer(model_args.model_name_or_path, pad_at_eos=script_args.pad_at_eos)
    model = load_reward_model(
        model_args.model_name_or_path, tokenizer, dtype=model_args.dtype or "float32",
        freeze_fraction=script_args.freeze_fraction, attn_implementation=model_args.attn_implementation,
    )  # fmt: skip
    settings = encoder_settings(script_args, training_args)
    encoder = PairEncoder.from_settings(tokenizer, settings)

    view_args = (script_args.prompt_template, script_args.pair_strategy, training_args.seed)
    listwise = load_view(script_args.dataset_name, "listwise", *view_args)
    eval_posts = (
        list(listwise[script_args.dataset_test_split])
        if listwise and script_args.dataset_test_split in listwise
        else []
    )
    if script_args.ndcg_eval_posts is not None:
        eval_posts = eval_posts[: script_args.ndcg_eval_posts]
    callback = RankingEvalCallback(eval_posts, encoder, training_args.per_device_eval_batch_size)

    if script_args.loss_type == "pairwise":  # stock TRL RewardTrainer on chosen/rejected pairs
        view = load_view(script_args.dataset_name, script_args.dataset_config, *view_args)
        prepare = partial(tokenize_pairs, encoder=encoder, keep_margin=script_args.use_margin)
        trainer_cls, extra = RewardTrainer, {}
    else:  # whole posts: pairwise_all or listmle
        from commentrank.train.listwise import ListwiseRewardTrainer, prepare_listwise

        view = listwise
        prepare = partial(
            prepare_listwise, encoder=encoder, max_comments=script_args.max_comments_per_post, seed=training_args.seed
        )
        trainer_cls = ListwiseRewardTrainer
        extra = {"loss_type": script_args.loss_type, "use_margin": script_args.use_margin}
    if view is None:
        needed = script_args.dataset_config if script_args.loss_type == "pairwise" else "listwise"
        raise SystemExit(
            f"reward: {script_args.dataset_name} has no '{needed}' view (loss_type {script_args.loss_type})"
        )
    train = view[script_args.dataset_train_split].shuffle(seed=training_args.seed)
    if script_args.max_train_samples is not None:
        train = train.select(range(min(script_args.max_train_samples, len(train))))
    train, counts = prepare(train)
    eval_dataset, eval_counts = None, None
    if training_args.eval_strategy != "no" and script_args.dataset_test_split in view:
        eval_dataset, eval_counts = prepare(view[script_args.dataset_test_split])
    data_summary = {"train": counts, "eval": eval_counts}
    logger.info("data: %s", json.dumps(data_summary))

    # Push once at the end, with the NDCG model card (the Trainer's own push would upload every checkpoint)
    push_repo = (
        training_args.hub_model_id or os.path.basename(training_args.output_dir) if training_args.push_to_hub else None
    )
    training_args.push_to_hub = False
    trainer = trainer_cls(
        model=model, args=training_args, train_dataset=train, eval_dataset=eval_dataset, processing_class=tokenizer,
        peft_config=get_peft_config(model_args), callbacks=[callback], **extra,
    )  # fmt: skip
    callback.trainer = trainer

    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None and os.path.isdir(training_args.output_dir):
        checkpoint = get_last_checkpoint(training_args.output_dir)
        if checkpoint:
            logger.info("resuming from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()

    if eval_dataset is not None or callback.posts:  # TRL's reward metrics (with eval data) and the NDCG callback
        final = {}
        if eval_dataset is not None:
            final = trainer.evaluate()
        else:
            callback.on_evaluate(training_args, trainer.state, trainer.control, final)
        trainer.log_metrics("eval", final)
        trainer.save_metrics("eval", final)

    if script_args.merge_lora and is_peft_model(trainer.model):
        trainer.model = trainer.model.merge_and_unload()
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        out = training_args.output_dir
        save_encoder_settings(out, **settings)
        atomic_write_text(os.path.join(out, "data_summary.json"), json.dumps(data_summary, indent=2) + "\n")
        write_card(trainer, script_args, model_args, callback, encoder)
        if push_repo:
            push_to_hub(training_args.output_dir, push_repo, private=bool(training_args.hub_private_repo))
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()  # tears the process group down before exit (avoids aborts at shutdown)
    return trainer


def write_card(trainer, script_args, model_args, callback, encoder) -> None:
    """TRL's model card, extended with the data and the NDCG results on the evaluation posts vs the baselines."""
    results = {"model": callback.last_metrics, **baseline_metrics(callback.posts)} if callback.last_metrics else {}
    card = build_model_card(
        model_id=trainer.args.hub_model_id or os.path.basename(trainer.args.output_dir),
        base_model=model_args.model_name_or_path, dataset=script_args.dataset_name, results=results,
        split=script_args.dataset_test_split, training={k: v for k, v in asdict(script_args).items() if v is not None},
        text_pair=encoder.encoder, max_length=encoder.max_length, separator=script_args.separator,
    )  # fmt: skip
    save_model_card(card, trainer.args.output_dir)


if __name__ == "__main__":
    main()
