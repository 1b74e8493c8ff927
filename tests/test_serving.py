"""A model commentrank trains ranks the same in the tools it is deployed with: sentence-transformers' CrossEncoder
(and a plain `tokenizer(post, comment)`, which TEI's reranker does too)."""

import json

import pytest
import torch
from test_reward import args_for

from commentrank.score.scorer import load_scorer

from conftest import load_script

POST = "Which hop gives a beer citrus notes?"
COMMENTS = ["Citra, Cascade or Amarillo.", "Water.", "Malt does that, mostly crystal malt.", "Try a Belgian yeast."]


@pytest.fixture(scope="module")
def trained(tiny_bert, prepared_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("served") / "rm"
    load_script("reward").main(args_for(tiny_bert, prepared_sample, out, "--max_steps", "3", "--learning_rate",
                                        "1e-2", "--ndcg_eval_posts", "0"))  # fmt: skip
    return out


def test_a_trained_encoder_scores_the_same_in_crossencoder(trained):
    from sentence_transformers import CrossEncoder

    ours = dict(load_scorer(trained, dtype="float32").rank(POST, COMMENTS))
    served = CrossEncoder(str(trained), device="cpu").predict([(POST, c) for c in COMMENTS],
                                                             activation_fn=torch.nn.Identity())  # fmt: skip
    assert [float(r) for r in served] == pytest.approx([ours[i] for i in range(len(COMMENTS))], abs=1e-5)


def test_training_and_scoring_pass_segment_ids_like_the_tokenizer(trained):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(trained)
    model = AutoModelForSequenceClassification.from_pretrained(trained).eval()
    with torch.no_grad():
        plain = model(**tokenizer([POST] * len(COMMENTS), COMMENTS, padding=True, return_tensors="pt")).logits[:, 0]
        inputs = tokenizer([POST] * len(COMMENTS), COMMENTS, padding=True, return_tensors="pt")
        inputs.pop("token_type_ids")
        without = model(**inputs).logits[:, 0]
    ours = dict(load_scorer(trained, dtype="float32").rank(POST, COMMENTS))
    assert plain.tolist() == pytest.approx([ours[i] for i in range(len(COMMENTS))], abs=1e-5)
    assert not torch.allclose(plain, without, atol=1e-6)  # the segment ids matter: dropping them changes rewards
    config = json.loads((trained / "config.json").read_text())
    assert config["id2label"] == {"0": "reward"}  # one label: TEI serves it as a reranker


def test_the_trainer_batches_carry_the_tokenizers_segment_ids(tiny_bert, prepared_sample, tmp_path):
    from commentrank.encoding import PairEncoder

    trainer = load_script("reward").main(args_for(tiny_bert, prepared_sample, tmp_path / "rm", "--max_steps", "1",
                                                  "--ndcg_eval_posts", "0"))  # fmt: skip
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    tokenizer = trainer.processing_class
    encoder = PairEncoder(tokenizer, max_length=64)
    ids = encoder.encode(["a post title"], ["and a comment"]).input_ids[0]
    expected = tokenizer("a post title", "and a comment")["token_type_ids"]
    one = trainer.data_collator([{"chosen_ids": ids, "rejected_ids": ids}])
    assert one["token_type_ids"][0].tolist() == expected and "token_type_ids" in batch
