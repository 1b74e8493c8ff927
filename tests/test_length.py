"""Length-aware rewards: a learned w * log1p(characters) term that every scorer applies (additive), or that training
uses and scoring drops, the model's own reward kept uncorrelated with length (odin)."""

import json

import datasets
import pytest
import torch
from test_reward import args_for

from commentrank.encoding import length_feature
from commentrank.length import correlation as _correlation
from commentrank.score.scorer import load_scorer

from conftest import load_script

reward = load_script("reward")


@pytest.fixture(scope="module")
def longer_is_better(tmp_path_factory):
    """A data_prep-like folder whose better comments are always longer, beyond the 16 tokens the model sees."""
    rows = []
    for i in range(24):
        comments = [f"answer {j} to {i} " + "more words here " * (12 * (4 - j)) for j in range(4)]
        rows.append({"post_id": f"p{i}", "prompt": f"question {i}?", "comments": comments[::-1], "ranks": [3, 2, 1, 0],
                     "votes": None, "site": None, "url": None, "license": None})  # fmt: skip
    folder = tmp_path_factory.mktemp("longer") / "data"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:20]),
                          "validation": datasets.Dataset.from_list(rows[20:])}
                         ).save_to_disk(str(folder / "listwise"))  # fmt: skip
    return folder


def train(tiny_bert, data, out, *extra):
    return reward.main(args_for(tiny_bert, str(data), out, "--loss_type", "listmle", "--max_length", "16",
                                "--per_device_train_batch_size", "4", "--num_train_epochs", "4", "--learning_rate",
                                "1e-4", "--length_init", "zero", "--length_learning_rate", "5e-2",
                                *extra))  # fmt: skip


def test_the_additive_length_term_is_learned_saved_and_applied_by_every_scorer(tiny_bert, longer_is_better, tmp_path):
    out = tmp_path / "rm"
    trainer = train(tiny_bert, longer_is_better, out, "--length_feature", "additive")
    weight = float(trainer.length_weight)
    assert weight > 0.05  # longer is better, and the model cannot see how long: the term learned it
    logged = [e["length_weight"] for e in trainer.state.log_history if "length_weight" in e]
    assert logged[0] < logged[-1]
    saved = json.loads((out / "commentrank_config.json").read_text())["length_weight"]
    assert saved == pytest.approx(weight)
    card = (out / "README.md").read_text()  # its plain-transformers snippet adds the term too (it left it out)
    assert f"rewards = rewards + {float(saved)!r} * torch.log1p(characters)" in card
    scorer = load_scorer(out, dtype="float32")
    post = {"prompt": "question?", "comments": ["short", "a much longer answer " * 20]}
    (rewards,), _ = scorer.score([post])
    ids = scorer.encoder.encode([post["prompt"]] * 2, post["comments"]).input_ids
    from commentrank.score.inference import score_ids

    plain = score_ids(
        scorer.model, ids, scorer.encoder.tokenizer.pad_token_id, segment_sep_id=scorer.encoder.segment_sep_id
    )
    expected = [r + weight * n for r, n in zip(plain, length_feature(post["comments"]))]
    assert rewards == pytest.approx(expected, abs=1e-5)


def test_odin_trains_with_the_term_and_scores_without_it(tiny_bert, longer_is_better, tmp_path):
    trainer = train(tiny_bert, longer_is_better, tmp_path / "odin", "--length_feature", "odin", "--odin_weight", "5")
    assert abs(float(trainer.length_weight)) > 0  # the term took the length signal during training
    assert json.loads((tmp_path / "odin" / "commentrank_config.json").read_text())["length_weight"] == 0.0
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        own = trainer.model(**inputs).logits.squeeze(-1).float()
        trainer.args.length_feature = "additive"  # the same batch without the penalty
        without = trainer.compute_loss(trainer.model, dict(batch))
    assert float(loss - without) == pytest.approx(5 * float(_correlation(own, batch["log_lengths"])) ** 2, abs=1e-5)


def test_the_length_weight_resumes_from_a_checkpoint(tiny_bert, longer_is_better, tmp_path, monkeypatch):
    from test_reward import KillAt

    out = tmp_path / "rm"
    argv = ["--length_feature", "additive", "--save_strategy", "steps", "--save_steps", "5", "--logging_steps", "1",
            "--max_steps", "6"]  # fmt: skip
    original = reward.RankingEvalCallback

    def killed_at_step_6(*args, **kwargs):  # the run is killed after checkpoint-5 (the same run is then resumed)
        callback = original(*args, **kwargs)
        callback.on_step_end = KillAt(6).on_step_end
        return callback

    monkeypatch.setattr(reward, "RankingEvalCallback", killed_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_bert, longer_is_better, out, *argv)
    monkeypatch.setattr(reward, "RankingEvalCallback", original)
    saved = json.loads((out / "checkpoint-5" / "length_term.json").read_text())["weight"]
    assert saved != 0  # learned from length_init zero
    resumed = train(tiny_bert, longer_is_better, out, *argv)
    after_resume = [e["length_weight"] for e in resumed.state.log_history if "length_weight" in e and e["step"] == 6]
    assert after_resume and abs(after_resume[0] - saved) < 0.1  # one step on from the saved weight, not from 0


@pytest.fixture(scope="module")
def mostly_longer_is_better(tmp_path_factory):
    """Posts where the longer comment wins two times in three: a length term with a finite best weight."""
    rows = []
    for i in range(30):
        comments = [f"answer to {i} " + "word " * (5 + 7 * j + i % 5) for j in range(3)]
        ranks = [2, 1, 0] if i % 3 else [0, 2, 1]
        rows.append({"post_id": f"p{i}", "prompt": f"question {i}?", "comments": comments, "ranks": ranks,
                     "votes": None, "site": None, "url": None, "license": None})  # fmt: skip
    folder = tmp_path_factory.mktemp("mostly") / "data"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                          "validation": datasets.Dataset.from_list(rows[:4])}
                         ).save_to_disk(str(folder / "listwise"))  # fmt: skip
    return rows, folder


def test_length_init_fit_starts_the_term_at_the_weight_that_minimizes_the_loss_of_length_alone(
    tiny_bert, mostly_longer_is_better, tmp_path
):
    from commentrank.length import LENGTH_FIT_RIDGE
    from commentrank.train.losses import listmle_loss

    rows, folder = mostly_longer_is_better
    out = tmp_path / "rm"
    trainer = train(tiny_bert, folder, out, "--length_feature", "additive", "--length_init", "fit",
                    "--length_learning_rate", "0", "--max_steps", "2")  # fmt: skip
    fitted = float(trainer.length_weight)

    def objective(w):  # the mean over posts of ListMLE of w * log1p(characters), naively, plus the ridge
        losses = [float(listmle_loss(w * torch.tensor(length_feature(r["comments"]), dtype=torch.float64),
                                     torch.zeros(3, dtype=torch.long), torch.tensor(r["ranks"])))
                  for r in rows]  # fmt: skip
        return sum(losses) / len(losses) + LENGTH_FIT_RIDGE * w**2

    grid = [i / 100 for i in range(-300, 301)]
    best = min(grid, key=objective)
    assert fitted > 0.1 and fitted == pytest.approx(best, abs=0.01)
    assert json.loads((out / "commentrank_config.json").read_text())["length_weight"] == pytest.approx(fitted)


def test_a_length_feature_needs_a_listwise_loss(tmp_path):
    from functools import partial

    from commentrank.configs import ListwiseRewardConfig

    config = partial(ListwiseRewardConfig, output_dir=str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="length_feature needs a listwise loss_type"):
        config(length_feature="additive", loss_type="pairwise")
    with pytest.raises(ValueError, match="length_feature 'longer'"):
        config(loss_type="listmle", length_feature="longer")
    with pytest.raises(ValueError, match="length_init .one. is not one of fit, zero"):
        config(loss_type="listmle", length_feature="additive", length_init="one")
    with pytest.raises(ValueError, match="leaves the length term at 0"):
        config(loss_type="listmle", length_feature="additive", length_init="zero")
    defaults = config(loss_type="listmle", length_feature="additive")
    assert (defaults.length_init, defaults.length_learning_rate) == ("fit", 0.0)  # the fitted weight, kept


def test_the_best_checkpoint_is_restored_with_its_own_length_weight(tiny_bert, longer_is_better, tmp_path):
    """`load_best_model_at_end`: the saved model is the best checkpoint's network with that checkpoint's length weight
    (it kept the last step's, a pairing never evaluated)."""
    out = tmp_path / "rm"
    trainer = train(tiny_bert, longer_is_better, out, "--length_feature", "additive", "--eval_strategy", "steps",
                    "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2", "--max_steps", "8",
                    "--load_best_model_at_end", "true", "--metric_for_best_model", "eval_loss",
                    "--greater_is_better", "true")  # fmt: skip
    best = trainer.state.best_model_checkpoint  # the highest loss "best": an early checkpoint, whose weight differs
    assert best is not None and not best.endswith("checkpoint-8")  # the test needs a best that is not the last step
    kept = json.loads((out / "commentrank_config.json").read_text())["length_weight"]
    assert kept == pytest.approx(json.loads((tmp_path / "rm" / best.split("/")[-1] / "length_term.json").read_text())[
        "weight"])  # fmt: skip


def test_a_trained_length_weight_is_refused_in_several_processes(tiny_bert, longer_is_better, tmp_path, monkeypatch):
    """The length weight is the trainer's, not the model's: no process would average its gradient, so each would
    train a weight of its own (the saved one process 0's). Training it takes one process; the fitted weight (the
    recipes') is the same in every process."""
    monkeypatch.setenv("WORLD_SIZE", "2")  # as accelerate launch sets it in each of two processes
    with pytest.raises(SystemExit, match=r"length_learning_rate .* one process"):
        train(tiny_bert, longer_is_better, tmp_path / "rm", "--length_feature", "additive", "--max_steps", "1")


def test_copies_that_differ_only_in_surrounding_whitespace_tie_with_a_length_term(tmp_path):
    """The duplicate check and an encoder's tokenizer read "+1" and "+1 " as one text: the length term must too."""
    from test_scoring import tiny_model

    from commentrank.configs import EncoderSettings

    model_dir = tiny_model(tmp_path / "rm")
    EncoderSettings(max_length=32, length_weight=2.0).save(model_dir)
    scorer = load_scorer(model_dir, dtype="float32")
    (rewards,), _ = scorer.score([{"prompt": "question?", "comments": ["+1", "+1 ", "\n+1\n", "a longer answer"]}])
    assert rewards[0] == rewards[1] == rewards[2] != rewards[3]


def test_the_length_fit_minimizes_the_mean_over_the_posts_the_loss_counts():
    """Each chunk's loss is a mean over its posts with an order; weighting it by all its posts (all-tied ones too)
    fitted another objective: here a positive weight where the mean over the ordered posts wants a negative one."""
    from commentrank.length import LENGTH_COLUMN, LENGTH_FIT_RIDGE, fit_length_weight
    from commentrank.train.losses import pairwise_all_loss

    lengths = [[1.0, 2.0, 3.0]] * 128
    ranks = [[0, 0, 0]] * 48 + [[2, 1, 0]] * 16 + [[0, 1, 2]] * 64  # chunk 1: longer better; chunk 2: shorter
    dataset = datasets.Dataset.from_dict({"ranks": ranks, LENGTH_COLUMN: lengths})
    fitted = fit_length_weight(dataset, pairwise_all_loss, chunk=64)

    def objective(w):  # the mean over the 80 ordered posts, one by one, plus the ridge
        one_post = torch.zeros(3, dtype=torch.long)
        losses = [float(pairwise_all_loss(w * torch.tensor(x, dtype=torch.float64), one_post, torch.tensor(r)))
                  for x, r in zip(lengths, ranks) if len(set(r)) > 1]  # fmt: skip
        return sum(losses) / len(losses) + LENGTH_FIT_RIDGE * w**2

    best = min([i / 100 for i in range(-500, 501)], key=objective)
    assert best < 0 and fitted == pytest.approx(best, abs=0.01)
