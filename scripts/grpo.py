"""GRPO: train a comment writer (a causal LM) against a commentrank reward model, on TRL's GRPOTrainer.

Usage:

    # SmolLM2-135M-Instruct (bundled, converted once) on CPU, rewarded by the quickstart reward model (minutes)
    python scripts/grpo.py --config recipes/smollm2/grpo.yaml \
        --dataset_name outputs/quickstart/data --reward_model outputs/quickstart/reward

    # the same with accelerate (one GPU, or more: --num_processes N); flags override the YAML
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml --num_processes 1 scripts/grpo.py \
        --config recipes/smollm2/grpo.yaml --use_cpu false --bf16 true --reward_model outputs/quickstart/reward \
        --dataset_name outputs/quickstart/data --output_dir outputs/smollm2/grpo

    # an SFT checkpoint as the starting policy, and a length penalty against length hacking
    python scripts/grpo.py --config recipes/smollm2/grpo.yaml --model_name_or_path outputs/smollm2/sft \
        --length_penalty 0.3

The prompts are the train split's posts (data_prep's listwise view: a data_prep folder, raw ranked file or Hub
dataset), each as `instruction` with `{post}` filled; the reward is `commentrank.RewardFunction(reward_model)`, which
encodes each (post, comment) as the reward model was trained (TRL's own `reward_funcs=<model>` would not). Before
training and after it the policy writes a comment for each of `report_posts` held-out posts (greedy): the report
(`policy_report.md` / `.json` in the output folder, and in the model card) gives the reward, the length-free reward,
the length and the share of posts where the comment beats the real best one, with paired 95% bootstrap intervals.
A killed run resumes from its last checkpoint with the same command; `--push_to_hub true` uploads the final folder.
"""

import json
import logging
import time

from transformers import AutoModelForCausalLM
from trl import GRPOConfig, ModelConfig, get_peft_config

from commentrank.bundled_models import resolve_model_path
from commentrank.cli import Parser
from commentrank.configs import GRPOArguments
from commentrank.hub import HubError, repo_name_for
from commentrank.io_utils import exits_on_bad_input
from commentrank.model_card import save_model_card
from commentrank.modeling import check_weights_format, load_tokenizer
from commentrank.policy import (
    build_policy_card,
    generate,
    held_out_posts,
    policy_prompt,
    policy_report,
    reward_template,
    write_report,
)
from commentrank.score.reward_function import RewardFunction
from commentrank.train import steps
from commentrank.train.grpo import SafeGRPOTrainer

logger = logging.getLogger("commentrank.grpo")


def make_parser() -> Parser:
    return Parser((GRPOArguments, GRPOConfig, ModelConfig), prog="grpo")


def write_comments(model, tokenizer, posts, script_args) -> list[str]:
    """The policy's greedy comment for each held-out post (the report's setting)."""
    prompts = [policy_prompt(p["prompt"], script_args.instruction, script_args.chat) for p in posts]
    out = generate(model, tokenizer, prompts, max_new_tokens=script_args.report_max_new_tokens,
                   batch_size=script_args.report_batch_size)  # fmt: skip
    return [c[0] for c in out]


def card_settings(script_args, training_args, metrics) -> dict:
    return {
        "dataset": script_args.dataset_name, "reward_model": script_args.reward_model,
        "instruction": json.dumps(script_args.instruction), "length_free": script_args.length_free,
        "length_penalty": script_args.length_penalty, "reward_clip": script_args.reward_clip,
        "num_generations": training_args.num_generations, "max_completion_length": training_args.max_completion_length,
        "beta": training_args.beta, "learning_rate": training_args.learning_rate, "max_steps": training_args.max_steps,
        "batch per device x accumulation": f"{training_args.per_device_train_batch_size} x "
        f"{training_args.gradient_accumulation_steps}",
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items() if k.startswith("train_")},
    }  # fmt: skip


def main(argv=None):
    script_args, training_args, model_args = make_parser().parse_args_and_config(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    with exits_on_bad_input("grpo"):  # a missing folder: one line
        model_args.model_name_or_path = resolve_model_path(model_args.model_name_or_path)

    with exits_on_bad_input("grpo", HubError):
        push_repo = steps.take_hub_push(training_args)  # its token checked before any work
        settings = steps.run_settings(script_args, training_args, model_args)
        inputs = [script_args.dataset_name, model_args.model_name_or_path, script_args.reward_model]
        if not steps.check_training_output(training_args, "grpo_policy", inputs, script_args.overwrite_output,
                                           settings):  # fmt: skip
            steps.push_final(training_args, push_repo, "GRPO policy")  # a push that failed, retried
            return None  # this run, finished, is already there
        check_weights_format(model_args.model_name_or_path, script_args.allow_pickle_weights)
        tokenizer = load_tokenizer(model_args.model_name_or_path, pad_at_eos=True, revision=model_args.model_revision,
                                   trust_remote_code=training_args.trust_remote_code)  # fmt: skip
        reward = RewardFunction(script_args.reward_model, length_free=script_args.length_free,
                                length_penalty=script_args.length_penalty, clip=script_args.reward_clip,
                                batch_size=script_args.reward_batch_size,
                                allow_pickle=script_args.allow_pickle_weights)  # fmt: skip
        template = reward_template(reward, script_args.prompt_template)  # the posts as the reward model reads them
        data = steps.open_training_data(script_args, **template)
        train = steps.split_of(data.require_view("listwise"), script_args.dataset_train_split, data.source)
        train = steps.subset(train, script_args.max_train_samples, training_args.seed)
        train = train.map(
            lambda row: {
                "prompt": policy_prompt(row["prompt"], script_args.instruction, script_args.chat),
                "post": row["prompt"],
            },  # fmt: skip
            remove_columns=train.column_names,
        )
        posts = []
        if script_args.report_posts:
            posts = held_out_posts(script_args.dataset_name, script_args.report_split, script_args.report_posts,
                                   skip_invalid=script_args.skip_invalid, hub_config=script_args.dataset_config,
                                   **template)  # fmt: skip
        steps.claim_training_output(training_args, "grpo_policy", inputs, script_args.overwrite_output, settings)
    logger.info("grpo: %d training prompts, %d report posts, reward %r", len(train), len(posts), reward)

    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision,
                                                 dtype=model_args.dtype,
                                                 trust_remote_code=training_args.trust_remote_code)  # fmt: skip
    trainer = SafeGRPOTrainer(model=model, reward_funcs=reward, args=training_args, train_dataset=train,
                              processing_class=tokenizer, peft_config=get_peft_config(model_args))  # fmt: skip
    before = []
    if posts and trainer.accelerator.is_main_process:
        start = time.perf_counter()
        before = write_comments(trainer.model, tokenizer, posts, script_args)  # the starting policy, greedy
        logger.info("report: %d comments of the starting policy in %.1f s", len(before), time.perf_counter() - start)

    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=steps.checkpoint_to_resume(training_args))
    metrics = {**result.metrics, "train_wall_s": round(time.perf_counter() - start, 1)}
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    output_dir = training_args.output_dir

    report_md = None
    if posts and trainer.accelerator.is_main_process:
        policy = trainer.accelerator.unwrap_model(trainer.model)
        after = write_comments(policy, tokenizer, posts, script_args)
        report = policy_report(reward, posts, {"before": before, "after": after}, n_resamples=script_args.n_bootstrap)

    def write_files(folder):  # next to the final model, before it is moved into output_dir
        nonlocal report_md
        if posts:
            report_md = write_report(report, folder, title="Before and after GRPO, under the reward model").read_text(
                encoding="utf-8"
            )
        card = build_policy_card(
            model_id=push_repo or repo_name_for(output_dir), base_model=model_args.model_name_or_path,
            dataset=script_args.dataset_name, reward_model=script_args.reward_model,
            training=card_settings(script_args, training_args, metrics), report_md=report_md,
        )  # fmt: skip
        save_model_card(card, folder)

    steps.save_final(trainer, "grpo_policy", settings, write_files)
    if trainer.accelerator.is_main_process:
        if report_md:
            print(report_md)
    with exits_on_bad_input("grpo", HubError):
        steps.push_final(training_args, push_repo, "GRPO policy")
    trainer.accelerator.wait_for_everyone()
    logger.info("saved the GRPO policy to %s", output_dir)


if __name__ == "__main__":
    main()
