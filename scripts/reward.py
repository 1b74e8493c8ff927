"""Train a reward model that ranks comments: TRL's RewardTrainer on pairs, or the listwise trainer on whole posts.

Usage:

    # the quickstart: bundled MiniLM, shipped Stack Exchange sample, one CPU process
    python scripts/reward.py --config recipes/quickstart/reward.yaml

    # any recipe on Accelerate (the original CUP IT run: DeepSpeed ZeRO-2, CPU optimizer offload, fp16); flags
    # override the YAML
    accelerate launch --config_file accelerate_configs/deepspeed_zero2_offload_fp16.yaml scripts/reward.py \
        --config recipes/gpt2/reward_no_context.yaml --output_dir outputs/gpt2-rm --push_to_hub true

The dataset is a data_prep folder, a raw ranked file (converted by data_prep's code) or a Hub dataset id; its prompt
template is the one the data was built with. Prompt and comment are tokenized here (truncated, never dropped; counted
in `data_summary.json`). A killed run resumes from its last checkpoint with the same command. The output folder holds
the model, tokenizer, `commentrank_config.json` (how to encode inputs at scoring time, also in every checkpoint),
`train_results.json`, `eval_results.json`, `data_summary.json`, `training_facts.json` (what the card is built from)
and a model card.
"""

import dataclasses
import logging
from functools import partial

from accelerate.utils import is_peft_model
from transformers import set_seed
from trl import ModelConfig, get_peft_config

from commentrank.bundled_models import resolve_model_path
from commentrank.cli import Parser, check_eval_split
from commentrank.configs import EncoderSettings, ListwiseRewardConfig, RewardArguments
from commentrank.encoding import PairEncoder
from commentrank.hub import HubError
from commentrank.io_utils import exits_on_bad_input
from commentrank.metrics import baseline_metrics
from commentrank.model_card import build_model_card, save_model_card, save_training_facts, training_facts
from commentrank.modeling import load_reward_model, load_tokenizer
from commentrank.train import steps
from commentrank.train.callbacks import RankingEvalCallback
from commentrank.train.listwise import ListwiseRewardTrainer, prepare_listwise
from commentrank.train.pairwise import PairwiseRewardTrainer, tokenize_pairs

logger = logging.getLogger("commentrank.reward")
PUSH_MESSAGE = "Upload commentrank reward model"


def make_parser() -> Parser:
    return Parser((RewardArguments, ListwiseRewardConfig, ModelConfig), prog="reward")


def main(argv=None) -> PairwiseRewardTrainer:
    script_args, training_args, model_args = make_parser().parse_args_and_config(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    with exits_on_bad_input("reward"):  # a missing folder: one line
        model_args.model_name_or_path = resolve_model_path(model_args.model_name_or_path)
    set_seed(training_args.seed)  # before the score head is created: every process must start from the same weights

    with exits_on_bad_input("reward", HubError):  # data, model, settings, token: a clear message, not a traceback
        push_repo = steps.take_hub_push(training_args)  # its token checked before any work
        settings = steps.run_settings(script_args, training_args, model_args)
        inputs = [script_args.dataset_name, model_args.model_name_or_path]
        if not steps.check_training_output(training_args, "reward_model", inputs, script_args.overwrite_output,
                                           settings):  # fmt: skip
            steps.push_final(training_args, push_repo, PUSH_MESSAGE)  # a push that failed, retried
            return None  # this run, finished, is already there
        data = steps.open_training_data(script_args)
        view = data.require_view(script_args.view_for(training_args.loss_type))
        check_eval_split(view, script_args.dataset_test_split, training_args.eval_strategy)
        tokenizer = load_tokenizer(model_args.model_name_or_path, pad_at_eos=script_args.pad_at_eos)
        model = load_reward_model(
            model_args.model_name_or_path, tokenizer, dtype=model_args.dtype or "float32",
            freeze_fraction=script_args.freeze_fraction, attn_implementation=model_args.attn_implementation,
            allow_pickle=script_args.allow_pickle_weights, freeze_embeddings=script_args.freeze_embeddings,
        )  # fmt: skip
        encoder = PairEncoder(tokenizer, script_args.encoder_settings(training_args.max_length, data.prompt_template),
                              model=model)  # fmt: skip
        encoder_settings = encoder.settings  # max_length as used: lowered to what the model takes

        listwise = data.view("listwise") or {}  # the NDCG callback scores whole validation posts
        eval_posts = list(listwise.get(script_args.dataset_test_split, []))[: script_args.ndcg_eval_posts]
        callback = RankingEvalCallback(eval_posts, encoder, training_args.per_device_eval_batch_size)

        if not training_args.listwise:  # stock TRL RewardTrainer on chosen/rejected pairs
            prepare = partial(tokenize_pairs, encoder=encoder, keep_margin=training_args.use_margin)
            trainer_cls = PairwiseRewardTrainer
        else:  # whole posts: the listwise losses (pairwise_all, listmle, plistmle, listnet, lambdaloss)
            prepare = partial(prepare_listwise, encoder=encoder, max_comments=training_args.max_comments_per_post,
                              seed=training_args.seed, relevance=training_args.relevance,
                              with_lengths=training_args.length_feature != "none")  # fmt: skip
            trainer_cls = ListwiseRewardTrainer
        train = steps.split_of(view, script_args.dataset_train_split, data.source).shuffle(seed=training_args.seed)
        train, counts = prepare(steps.subset(train, script_args.max_train_samples))
        eval_dataset, eval_counts = None, None
        if training_args.eval_strategy != "no" and script_args.dataset_test_split in view:
            eval_dataset, eval_counts = prepare(
                steps.subset(view[script_args.dataset_test_split], script_args.max_eval_samples)
            )
        steps.claim_training_output(training_args, "reward_model", inputs, script_args.overwrite_output, settings)
        data_summary = {"source": data.summary, "prompt_template": encoder_settings.prompt_template, "train": counts,
                        "eval": eval_counts}  # fmt: skip
        logger.info("data: %s", {k: v for k, v in data_summary.items() if k != "source"})

    trainer = trainer_cls(
        model=model, args=training_args, train_dataset=train, eval_dataset=eval_dataset, processing_class=tokenizer,
        peft_config=get_peft_config(model_args), callbacks=[callback], encoder_settings=encoder_settings,
    )  # fmt: skip
    callback.trainer = trainer
    result = trainer.train(resume_from_checkpoint=steps.checkpoint_to_resume(training_args))
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()

    if eval_dataset is not None or callback.posts:  # TRL's reward metrics (with eval data) and the NDCG callback
        final = trainer.evaluate() if eval_dataset is not None else {}
        if eval_dataset is None:
            callback.on_evaluate(training_args, trainer.state, trainer.control, final)
        trainer.log_metrics("eval", final)
        trainer.save_metrics("eval", final)

    if script_args.merge_lora and is_peft_model(trainer.model):
        trainer.model = trainer.model.merge_and_unload()

    def write_files(folder):  # next to the final model, before it is moved into output_dir
        steps.write_json(folder, "data_summary.json", data_summary)
        write_card(trainer, script_args, model_args, callback, encoder, push_repo, folder)

    steps.save_final(trainer, "reward_model", settings, write_files)
    with exits_on_bad_input("reward", HubError):
        steps.push_final(training_args, push_repo, PUSH_MESSAGE)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()  # tears the process group down before exit (avoids aborts at shutdown)
    return trainer


def write_card(trainer, script_args, model_args, callback, encoder, push_repo, folder) -> None:
    """The model card: the loss, the data, and the NDCG results on the evaluation posts against the baselines."""
    from commentrank.hub import repo_name_for

    results = {"model": callback.last_metrics, **baseline_metrics(callback.posts)} if callback.last_metrics else {}
    options = {**dataclasses.asdict(script_args), **trainer.args.trainer_options()}
    training = {k: v for k, v in options.items() if v is not None and k != "loss_type"}
    facts = training_facts(
        loss_type=trainer.args.loss_type, base_model=model_args.model_name_or_path, dataset=script_args.dataset_name,
        prompt_template=encoder.settings.prompt_template, split=script_args.dataset_test_split, results=results,
        dtype=callback.last_dtype,
    )  # fmt: skip
    save_training_facts(facts, folder)  # the card's facts, read back when the folder is published again (score.py)
    card = build_model_card(
        model_id=push_repo or repo_name_for(trainer.args.output_dir), base_model=model_args.model_name_or_path,
        dataset=script_args.dataset_name, results=results, split=script_args.dataset_test_split,
        loss_type=trainer.args.loss_type, text_pair=encoder.text_pair, training=training, dtype=callback.last_dtype,
        settings=EncoderSettings.saved_with(folder) or encoder.settings,  # as saved: the fitted length weight in
    )  # fmt: skip
    save_model_card(card, folder)


if __name__ == "__main__":
    main()
