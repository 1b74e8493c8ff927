"""Every setting of commentrank, declared once: the scripts' arguments and the encoder settings saved with a model.

The scripts' arguments are dataclasses with `help` metadata, parsed by `TrlParser` next to TRL's own configs, as in
TRL and alignment-handbook: each field is a YAML key of a recipe and a `--flag` of its script.

| class | script | parsed with |
|---|---|---|
| `PrepArguments` | `data_prep/prepare.py` | - |
| `RewardArguments` | `scripts/reward.py` | `trl.RewardConfig`, `trl.ModelConfig` |
| `SFTArguments` | `scripts/sft.py` | `trl.SFTConfig`, `trl.ModelConfig` |
| `ScoreArguments` | `scripts/score.py` | - |

`RewardArguments` and `SFTArguments` share `TrainingScriptArguments` (TRL's `ScriptArguments` plus the data options of
commentrank). `EncoderSettings` is how a (prompt, comment) pair becomes the model's input: the reward script writes it
as `commentrank_config.json` into the model folder and into each checkpoint, and every scorer reads it back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from trl import ScriptArguments

from .io_utils import UsageError, check_at_least, check_choice, closest
from .length import LENGTH_FEATURES, LENGTH_INITS, LENGTH_LEARNING_RATE

logger = logging.getLogger(__name__)

DEFAULT_PROMPT_TEMPLATE = "{title}"
PROMPT_TEMPLATE_HELP = "'{title}' (no context, as in CUP IT) or '{title}\\n\\n{body}' (with context)"
ENCODER_SETTINGS_FILE = "commentrank_config.json"
TRUNCATION_SIDES = ("right", "left", "head_tail")
PROMPT_PLACEHOLDERS = ("title", "body")


def check_prompt_template(template: str | None, key: str = "prompt_template") -> None:
    """UsageError unless `template` is a str.format template whose placeholders are {title} and {body} only."""
    import string

    if template is None:
        return
    allowed = f"the placeholders are {{{PROMPT_PLACEHOLDERS[0]}}} and {{{PROMPT_PLACEHOLDERS[1]}}}"
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise UsageError(f"{key}: not a template {template!r} ({err}; {allowed}, braces doubled)") from None
    for name in names:
        if name not in PROMPT_PLACEHOLDERS:
            match = closest(name, PROMPT_PLACEHOLDERS)
            hint = f"; did you mean {{{match}}}?" if match else ""
            raise UsageError(f"{key}: unknown placeholder {{{name}}} ({allowed}{hint})")
    if "\\n" in template:  # `--prompt_template '{title}\n\n{body}'` in bash: a backslash and an n, no line break
        logger.warning(
            "%s %r holds a backslash followed by n, not a line break: in bash write $'{title}\\n\\n{body}', in a "
            'YAML recipe "{title}\\n\\n{body}"',
            key,
            template,
        )


def check_device(device: str | None, key: str = "device") -> None:
    """UsageError for a CUDA device on a machine without CUDA (the other names are left to torch)."""
    if device and str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"{key} {device!r}: CUDA is not available on this machine (use auto or cpu)")


# Listwise training forwards all of a post's comments at once: memory grows with its comments x tokens. 48 comments of
# 128 tokens train MiniLM in 1.8 GB (64: 2.1 GB; 10,000 uncapped: more than 8 GB); no shipped post has more than 33.
DEFAULT_MAX_COMMENTS_PER_POST = 48


# --------------------------------------------------------------------------------------------------------------------
# How inputs are encoded (saved with every model)
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class TextFormat:
    """How a (prompt, comment) pair is joined and cut into one input, apart from its length."""

    separator: str = field(default="\n\n", metadata={"help": "Decoders: text between prompt and comment."})
    min_comment_tokens: int = field(
        default=64, metadata={"help": "Tokens kept for the comment before the prompt is cut."}
    )
    truncation_side: str = field(
        default="right",
        metadata={
            "help": "right: cut the tails; left: keep the end of the text (the CUP IT way); head_tail: keep the "
            "comment's first and last tokens, half each, and cut its middle (the prompt's tail as with right)."
        },
    )
    text_prefix: str = field(default="", metadata={"help": "Decoders: plain text before the prompt."})
    pad_at_eos: bool = field(
        default=True, metadata={"help": "Decoders: pad with EOS (false: add a pad token, the reward read at EOS)."}
    )

    def __post_init__(self):
        check_choice("truncation_side", self.truncation_side, TRUNCATION_SIDES)
        check_at_least(self, ["min_comment_tokens"], 0)


@dataclass
class EncoderSettings(TextFormat):
    """The text format, the token limit and the prompt template a model was trained with (`commentrank_config.json`).

    `prompt_template` is the one the training data was built with (data_prep records it with the data), so that a
    raw file scored later gets the same prompts.
    """

    max_length: int = field(default=512, metadata={"help": "Tokens per (prompt, comment) input."})
    prompt_template: str = field(default=DEFAULT_PROMPT_TEMPLATE, metadata={"help": PROMPT_TEMPLATE_HELP})
    length_weight: float = field(
        default=0.0,
        metadata={
            "help": "Every scorer adds length_weight * log1p(characters of the whole comment) to the reward "
            "(learned with length_feature: additive; 0 otherwise)."
        },
    )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> EncoderSettings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict, source: str = "encoder settings") -> EncoderSettings:
        """Settings from saved values: missing or null keys take the defaults, unknown keys are logged and ignored."""
        if not isinstance(values, dict):
            raise ValueError(f"{source}: expected a JSON object of encoder settings, got {type(values).__name__}")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            logger.info("%s: ignoring unknown keys %s", source, unknown)
        known = {k: v for k, v in values.items() if k in names and v is not None}
        for key, value in known.items():
            expected = type(getattr(cls(), key))
            accepted = (int, float) if expected is float else expected
            if not isinstance(value, accepted) or (expected in (int, float) and isinstance(value, bool)):
                raise ValueError(f"{source}: '{key}' must be {expected.__name__}, got {value!r}")
        return cls(**{k: float(v) if isinstance(getattr(cls(), k), float) else v for k, v in known.items()})

    def save(self, folder: str | os.PathLike) -> Path:
        """Write `commentrank_config.json` into a model (or checkpoint) folder, atomically."""
        from .io_utils import atomic_write_text

        path = Path(folder) / ENCODER_SETTINGS_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, model_dir_or_id: str | os.PathLike) -> EncoderSettings:
        """The settings saved with a model folder or Hub model; the defaults when it has none (logged)."""
        saved = cls.saved_with(model_dir_or_id)
        if saved is None:
            logger.warning("%s has no %s: default encoder settings", model_dir_or_id, ENCODER_SETTINGS_FILE)
            return cls()
        return saved

    @classmethod
    def saved_with(cls, model_dir_or_id: str | os.PathLike) -> EncoderSettings | None:
        """The settings saved with a model folder or Hub model, or None when it has none."""
        path = _settings_file(str(model_dir_or_id))
        if path is None:
            return None
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(values, str(path))


def _settings_file(model_dir_or_id: str) -> Path | None:
    """The settings file of a local folder or of a Hub model (downloaded or cached); None when there is none."""
    from .io_utils import is_hub_id

    local = Path(model_dir_or_id)
    if local.is_dir():
        path = local / ENCODER_SETTINGS_FILE
        return path if path.is_file() else None
    if not is_hub_id(model_dir_or_id):
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(model_dir_or_id, ENCODER_SETTINGS_FILE))
    except EntryNotFoundError:
        return None


# --------------------------------------------------------------------------------------------------------------------
# Options several scripts share (keyword-only, so that they can follow any script's required fields)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class OutputOptions:
    overwrite_output: bool = field(
        default=False,
        metadata={"help": "Replace an output folder another kind of commentrank run wrote (never foreign files)."},
    )


@dataclass(kw_only=True)
class ModelLoadingOptions:
    allow_pickle_weights: bool = field(
        default=False,
        metadata={"help": "Load a model whose weights are only a pickle (pytorch_model.bin): it can run code."},
    )


# --------------------------------------------------------------------------------------------------------------------
# data_prep
# --------------------------------------------------------------------------------------------------------------------

PAIR_STRATEGIES = ("adjacent", "all", "best_vs_rest")
VIEWS = ("pairwise", "listwise", "sft")
SFT_COMMENTS = ("all", "best", "top_k")
INPUT_FORMATS = ("auto", "cupit", "stackexchange", "table", "saved", "hub")
VOTE_TIES = ("order", "equal", "drop")  # data_prep's vote_ties (the first is the default)


def site_key(site: str) -> str:
    """What a site name is matched by (`validation_sites` / `test_sites` against the records' `site`): without case
    and a trailing '/', so that `A.com` and `a.com/` are `a.com`. Only for matching: outputs keep the data's names."""
    return site.rstrip("/").casefold()


@dataclass
class Columns:
    """Where the fields of a ranked list live in a source (CUP IT names by default).

    Nested rows hold a list of comments (`comments` with `text`/`score` items). Long ("one row per comment")
    tables, e.g. CSV, are grouped by `post_id` and hold `comment` and `score` (rank, 0 = best) or `votes`.
    """

    title: str = "text"
    body: str = "post_body"
    comments: str = "comments"
    comment_text: str = "text"
    comment_score: str = "score"
    comment_votes: str = "votes"
    comment_created: str = "created"
    post_id: str = "id"
    comment: str = "comment"  # long format only


_COLUMNS = Columns()


@dataclass
class PrepArguments(OutputOptions):
    """Options of `data_prep/prepare.py` (also YAML keys with `--config`)."""

    inputs: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Input files (CUP IT .jsonl[.gz], Stack Exchange Posts.xml, .csv/.parquet/.json) or Hub "
            "dataset ids."
        },
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder for the views (save_to_disk), summary.json and prep_config.json."}
    )
    input_format: str = field(default="auto", metadata={"help": f"{', '.join(INPUT_FORMATS)}."})
    hub_split: str = field(default="train", metadata={"help": "Split read from a Hub dataset id."})
    title_column: str = field(default=_COLUMNS.title, metadata={"help": "Field with the post text (title)."})
    body_column: str = field(default=_COLUMNS.body, metadata={"help": "Field with the post body (context), optional."})
    comments_column: str = field(
        default=_COLUMNS.comments, metadata={"help": "Field with the list of comments (nested)."}
    )
    comment_text_field: str = field(
        default=_COLUMNS.comment_text, metadata={"help": "Comment text key inside each comment."}
    )
    comment_score_field: str = field(
        default=_COLUMNS.comment_score, metadata={"help": "Rank key (0 = best; null = unlabeled)."}
    )
    comment_votes_field: str = field(
        default=_COLUMNS.comment_votes, metadata={"help": "Vote count key (optional, graded NDCG)."}
    )
    post_id_column: str = field(
        default=_COLUMNS.post_id, metadata={"help": "Post id field (long tables group rows by it)."}
    )
    comment_column: str = field(default=_COLUMNS.comment, metadata={"help": "Comment text column of long tables."})
    prompt_template: str = field(
        default=DEFAULT_PROMPT_TEMPLATE, metadata={"help": f"Prompt from the post: {PROMPT_TEMPLATE_HELP}."}
    )
    pair_strategy: str = field(
        default="adjacent", metadata={"help": "adjacent (CUP IT), all (InstructGPT) or best_vs_rest."}
    )
    max_pairs_per_post: int | None = field(default=None, metadata={"help": "Cap on pairs per post (seeded sample)."})
    visibility_filter: bool = field(
        default=False, metadata={"help": "Keep a pair only if the preferred answer was written later (SHP rule)."}
    )
    sft_comments: str = field(default="all", metadata={"help": "Comments in the sft view: all, best or top_k."})
    sft_top_k: int = field(default=1, metadata={"help": "k for sft_comments=top_k."})
    test_size: float = field(default=0.1, metadata={"help": "Test fraction of posts (or a count if >= 1)."})
    validation_size: float = field(default=0.1, metadata={"help": "Validation fraction of posts (or a count)."})
    split_by: str = field(default="post", metadata={"help": "Unit of the split: post, or site (unseen sites)."})
    seed: int = field(default=42, metadata={"help": "Seed of the split and of pair sampling."})
    max_posts: int | None = field(default=None, metadata={"help": "Keep only this many valid posts (seeded)."})
    min_comments: int = field(default=2, metadata={"help": "Posts with fewer comments are invalid."})
    skip_invalid: bool = field(default=False, metadata={"help": "Skip and count invalid posts instead of stopping."})
    views: list[str] = field(default_factory=lambda: list(VIEWS), metadata={"help": "Views to write."})
    num_proc: int = field(
        default=1,
        metadata={
            "help": "Processes at once, as in `datasets`: they parse a Posts.xml (HTML to text included), build its "
            "posts from the sorted rows, and build and stage the views' rows."
        },
    )
    max_shard_size: str = field(
        default="500MB", metadata={"help": "Largest shard of a saved view (save_to_disk's max_shard_size)."}
    )
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub dataset repo to push the views to."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    validation_sites: list[str] = field(
        default_factory=list,
        metadata={
            "help": "With split_by site: the sites (the records' `site`, e.g. reddit.com/r/techsupport) held out for "
            "validation; with test_sites they replace test_size / validation_size and every other site trains. Names "
            "match without case and a trailing '/'; a name no labeled post has is an error."
        },
    )
    test_sites: list[str] = field(
        default_factory=list,
        metadata={"help": "With split_by site: the sites held out for test (see validation_sites)."},
    )
    max_train_posts_per_source: int | None = field(
        default=None,
        metadata={
            "help": "Balance the sources: keep at most this many training posts of each input file (a seeded sample, "
            "after vote_ties); validation and test keep all theirs. Counted per input in summary.json (per_source)."
        },
    )
    vote_ties: str = field(
        default="order",
        metadata={
            "help": "Training posts whose comments have equal votes: order (the file's ranks, ties broken as the file "
            "does, e.g. by date), equal (tied comments share a rank: no pair between them, one ListMLE risk set; "
            "posts with all votes equal are dropped) or drop (drop such posts). Validation and test keep the file's "
            "strict ranks (score.py needs them; ndcg_votes is tie-aware)."
        },
    )

    def __post_init__(self):
        if isinstance(self.inputs, str):
            self.inputs = [self.inputs]
        check_choice("pair_strategy", self.pair_strategy, PAIR_STRATEGIES)
        check_choice("sft_comments", self.sft_comments, SFT_COMMENTS)
        for view in [self.views] if isinstance(self.views, str) else self.views:
            check_choice("views:", view, VIEWS)
        check_choice("split_by", self.split_by, ("post", "site"))
        check_choice("input_format", self.input_format, INPUT_FORMATS)
        check_prompt_template(self.prompt_template)
        for name in ("test_size", "validation_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or value < 0 or (value >= 1 and value != int(value)):
                raise UsageError(f"{name} must be a fraction in [0, 1) or a count >= 1, got {value}")
        check_at_least(self, ["max_posts", "max_pairs_per_post", "sft_top_k", "min_comments"])
        for name in ("validation_sites", "test_sites"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, [getattr(self, name)])
        if (self.validation_sites or self.test_sites) and self.split_by != "site":
            raise UsageError("validation_sites / test_sites name held-out sites: they need split_by site")
        both = sorted(s for s in self.test_sites if site_key(s) in {site_key(v) for v in self.validation_sites})
        if both:
            raise UsageError(f"sites both in validation_sites and test_sites: {', '.join(both)}")
        check_choice("vote_ties", self.vote_ties, VOTE_TIES)
        check_at_least(self, ["max_train_posts_per_source", "num_proc"])

    @property
    def columns(self) -> Columns:
        return Columns(
            title=self.title_column, body=self.body_column, comments=self.comments_column,
            comment_text=self.comment_text_field, comment_score=self.comment_score_field,
            comment_votes=self.comment_votes_field, post_id=self.post_id_column, comment=self.comment_column,
        )  # fmt: skip

    def recorded(self) -> dict:
        """What a data_prep output records about how it was built (`prep_config.json`): no Hub settings."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("push_to_hub", "hub_private")}


# --------------------------------------------------------------------------------------------------------------------
# Training scripts
# --------------------------------------------------------------------------------------------------------------------


RELEVANCES = ("ranks", "votes")


@dataclass
class TrainingScriptArguments(ScriptArguments, OutputOptions, ModelLoadingOptions):
    """TRL's `ScriptArguments` with commentrank's data options: shared by `scripts/reward.py` and `scripts/sft.py`."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "data_prep output folder, raw ranked file (.jsonl[.gz], Posts.xml, .csv...) or Hub dataset."
        },
    )
    dataset_test_split: str = field(default="validation", metadata={"help": "Evaluation split."})
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": f"Prompt of the posts: {PROMPT_TEMPLATE_HELP}. Default: the template the data was built with "
            "(recorded by data_prep; '{title}' for a raw file); a value that disagrees with the data is an error."
        },
    )
    pair_strategy: str = field(
        default="adjacent", metadata={"help": "Raw ranked files: pairs built (adjacent, all, best_vs_rest)."}
    )
    skip_invalid: bool = field(
        default=False, metadata={"help": "Raw ranked files: skip and count invalid posts instead of stopping."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on a seeded subset of rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N rows."})
    merge_lora: bool = field(
        default=False, metadata={"help": "With use_peft: save the merged full model instead of the adapter."}
    )

    def __post_init__(self):
        if not self.dataset_name:
            raise ValueError("dataset_name is required: a data_prep folder, a raw ranked file or a Hub dataset id")
        if self.dataset_streaming:
            raise ValueError("dataset_streaming is not supported: commentrank reads whole posts")
        check_choice("pair_strategy", self.pair_strategy, PAIR_STRATEGIES)
        check_prompt_template(self.prompt_template)
        check_at_least(self, ["max_train_samples", "max_eval_samples"])


@dataclass
class RewardArguments(TrainingScriptArguments, TextFormat):
    """Options of `scripts/reward.py` (with TRL's `RewardConfig`, whose `max_length` is the encoder's)."""

    dataset_config: str | None = field(
        default=None,
        metadata={
            "help": "View trained on (pairwise or listwise; default: pairwise for loss_type pairwise, else listwise), "
            "or the config of a Hub dataset that is not a data_prep output."
        },
    )
    freeze_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Freeze the embeddings below the first block (token, position and segment embeddings and their "
            "LayerNorm; on small encoders half the weights): with freeze_fraction, backward stops at the lowest "
            "trainable block."
        },
    )
    freeze_fraction: float = field(
        default=0.0, metadata={"help": "Freeze the lowest blocks, keeping int((1-f)*L) trainable (CUP IT: 0.3)."}
    )
    ndcg_eval_posts: int | None = field(
        default=None, metadata={"help": "Validation posts scored by the NDCG callback (default: all; 0: none)."}
    )

    def __post_init__(self):
        TrainingScriptArguments.__post_init__(self)
        TextFormat.__post_init__(self)
        check_at_least(self, ["ndcg_eval_posts"], 0)
        if not 0 <= self.freeze_fraction < 1:
            raise UsageError(f"freeze_fraction must be in [0, 1), got {self.freeze_fraction}")

    def view_for(self, loss_type: str) -> str:
        """The data_prep view trained on: `dataset_config` when it names one, else the one of `loss_type`."""
        if self.dataset_config in VIEWS:
            return self.dataset_config
        return "pairwise" if loss_type == "pairwise" else "listwise"

    def encoder_settings(self, max_length: int | None, prompt_template: str) -> EncoderSettings:
        text_format = {f.name: getattr(self, f.name) for f in dataclasses.fields(TextFormat)}
        return EncoderSettings(**text_format, max_length=max_length or 512, prompt_template=prompt_template)


def _define_reward_config() -> None:
    """Define `ListwiseRewardConfig` and `_TRAINER_OPTIONS` (on first use, `__getattr__`): TRL's `RewardConfig` and
    the loss registry import torch and transformers (~250 MB of memory), which data_prep and the other light paths
    never need."""
    from trl import RewardConfig

    from .train.losses import LOSSES

    own_options: set[str] = set()  # filled below: the fields this class adds to RewardConfig

    @dataclass
    class ListwiseRewardConfig(RewardConfig):
        """TRL's `RewardConfig` with the options of commentrank's trainers: the loss (`loss_type`), and for the
        listwise losses the cap, the graded relevance, the length term and the throughput options.
        `scripts/reward.py` parses it in place of `RewardConfig` (each field a YAML key and a `--flag`);
        `ListwiseRewardTrainer` reads its options from it, as TRL's trainers read `center_rewards_coefficient`.
        Checked here, once."""

        # two of RewardConfig's fields, their help made true of commentrank (same defaults)
        max_length: int | None = field(
            default=1024,
            metadata={
                "help": "Tokens per (prompt, comment) input: longer comments are truncated (truncation_side), never "
                "dropped, and counted in data_summary.json; lowered to what the model takes, and saved with the "
                "model for every scorer."
            },
        )
        push_to_hub: bool = field(
            default=False,
            metadata={
                "help": "Push the final model with its card once, at the end, to hub_model_id (default: the output "
                "folder's name); the token is checked before training, and a rerun of a finished run pushes it."
            },
        )
        loss_type: str = field(
            default="pairwise",
            metadata={
                "help": "pairwise: TRL's RewardTrainer on chosen/rejected pairs; pairwise_all, listmle, plistmle, "
                "listnet or lambdaloss: the listwise trainer on whole posts (train/losses.py LOSSES states each)."
            },
        )
        max_comments_per_post: int | None = field(
            default=DEFAULT_MAX_COMMENTS_PER_POST,
            metadata={
                "help": "Listwise: a post with more comments trains on a seeded random subset of this many (all of a "
                "post are one batch element: 48 comments of 128 tokens train MiniLM in 1.8 GB; a 10,000-comment post "
                "uncapped needs more than 8 GB). null: no cap."
            },
        )
        relevance: str = field(
            default="ranks",
            metadata={
                "help": "Listwise losses with graded gains (listnet, lambdaloss; the order for the others): ranks "
                "(n - 1 - rank) or votes (log1p of the vote gap to the post's lowest, where the data has votes)."
            },
        )
        use_margin: bool = field(
            default=False,
            metadata={
                "help": "Use the rank gap as margin in the loss (pairwise: data_prep's margin column; pairwise_all)."
            },
        )
        margin_scale: float = field(
            default=1.0, metadata={"help": "pairwise_all with use_margin: the margin per rank of gap."}
        )
        length_feature: str = field(
            default="none",
            metadata={
                "help": "Listwise losses: none; additive (the reward gets w * log1p(characters of the whole comment), "
                "which truncation hides from the model; w fitted before training (length_init) and kept, or trained "
                "with length_learning_rate; saved and applied by every scorer); odin (the same "
                "term during training only, with the model's own reward kept uncorrelated with length, as ODIN: "
                "length-free rewards)."
            },
        )
        length_init: str = field(
            default=LENGTH_INITS[0],
            metadata={
                "help": "Starting weight of the length term: fit (the weight that minimizes the training loss of the "
                "length term alone, fitted on the training posts before the first step: training starts from what "
                "longest-first knows), or zero."
            },
        )
        length_learning_rate: float = field(
            default=LENGTH_LEARNING_RATE,
            metadata={
                "help": "Learning rate of the length term's weight; 0 keeps the fitted weight (a trained weight "
                "drifted with the batches' noise and made some seeds rank short answers first: "
                "benchmarks/results/quality.md)."
            },
        )
        odin_weight: float = field(
            default=1.0,
            metadata={
                "help": "length_feature odin: weight of the squared reward/length correlation; 0 keeps the length "
                "term in training only, without the penalty (better on the Reddit recipe: "
                "benchmarks/results/scaling.md)."
            },
        )
        batch_token_budget: int | None = field(
            default=None,
            metadata={
                "help": "Listwise: each step a batch of whole posts of similar length, up to this many padded tokens "
                "(comments x longest comment), instead of per_device_train_batch_size posts (default: the fixed "
                "count; the number of steps changes with it: benchmarks/bench_throughput.py). The loss is a mean over "
                "each batch's posts, so a post in a small batch of long ones weighs more than one in a large batch "
                "of short ones."
            },
        )
        length_sorted_forward: bool = field(
            default=False,
            metadata={
                "help": "Listwise: forward a step's comments sorted by length in groups, each padded to its own "
                "longest, instead of one batch padded to the longest (same loss, fewer padded tokens)."
            },
        )

        def __post_init__(self):
            check_choice("loss_type", self.loss_type, LOSSES)
            check_choice("relevance", self.relevance, RELEVANCES)
            if self.relevance != "ranks" and self.loss_type == "pairwise":
                raise ValueError("relevance applies to the listwise losses; loss_type pairwise trains on pairs")
            check_choice("length_feature", self.length_feature, LENGTH_FEATURES)
            if self.length_feature != "none" and self.loss_type == "pairwise":
                raise ValueError("length_feature needs a listwise loss_type (pairwise_all, listmle, ...)")
            check_choice("length_init", self.length_init, LENGTH_INITS)
            check_at_least(self, ["max_comments_per_post"], 2)
            check_at_least(self, ["batch_token_budget"], 1)
            if self.loss_type == "pairwise" and (self.batch_token_budget is not None or self.length_sorted_forward):
                raise ValueError("batch_token_budget and length_sorted_forward need a listwise loss_type")
            if self.length_feature != "none" and self.length_init == "zero" and self.length_learning_rate == 0:
                raise ValueError("length_init zero with length_learning_rate 0 leaves the length term at 0: set one")
            processes = int(os.environ.get("WORLD_SIZE", "1") or 1)  # accelerate launch sets it in each process
            if self.length_feature != "none" and self.length_learning_rate > 0 and processes > 1:
                raise ValueError(
                    f"length_learning_rate {self.length_learning_rate} trains the length weight, which is the "
                    f"trainer's and not the model's: in {processes} processes each would train a weight of its own. "
                    "Train it in one process, or keep the fitted weight (length_learning_rate: 0, the recipes')"
                )
            if self.use_margin and self.loss_type not in ("pairwise", "pairwise_all"):
                raise ValueError(
                    f"use_margin applies to loss_type pairwise and pairwise_all ({self.loss_type} has no margin)"
                )
            if self.relevance == "votes" and not LOSSES[self.loss_type].graded:
                logger.info(
                    "relevance votes: loss_type %s takes its order from the ranks, votes unused", self.loss_type
                )
            super().__post_init__()

        @property
        def listwise(self) -> bool:
            """Whether `loss_type` trains on whole posts (`ListwiseRewardTrainer`), not pairs (TRL's
            `RewardTrainer`)."""
            return LOSSES[self.loss_type].listwise

        def trainer_options(self) -> dict:
            """The options this class adds to `RewardConfig`, by name (the model card lists them)."""
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in own_options}

    ListwiseRewardConfig.__qualname__ = "ListwiseRewardConfig"  # pickled by name (training_args.bin)
    own_options.update(
        {f.name for f in dataclasses.fields(ListwiseRewardConfig)} - {f.name for f in dataclasses.fields(RewardConfig)}
    )
    globals().update(ListwiseRewardConfig=ListwiseRewardConfig, _TRAINER_OPTIONS=frozenset(own_options))


def __getattr__(name: str):
    """The reward trainer's config, defined on first use (PEP 562): `import commentrank.configs` stays light."""
    if name in ("ListwiseRewardConfig", "_TRAINER_OPTIONS"):
        _define_reward_config()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class SFTArguments(TrainingScriptArguments):
    """Options of `scripts/sft.py` (with TRL's `SFTConfig`)."""

    dataset_config: str | None = field(
        default="sft",
        metadata={"help": "View trained on (data_prep's sft view), or the config of a Hub dataset of texts."},
    )

    @property
    def view(self) -> str:
        return self.dataset_config if self.dataset_config in VIEWS else "sft"

    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer, when the model folder has none (default: the model's)."}
    )


# --------------------------------------------------------------------------------------------------------------------
# Scoring and export
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ExportArguments(OutputOptions, ModelLoadingOptions):
    """Options of `scripts/export.py`."""

    model: str = field(metadata={"help": "Reward model folder (the output of scripts/reward.py) or Hub id."})
    output_dir: str = field(metadata={"help": "Folder for model.onnx (and model_int8.onnx), tokenizer and settings."})
    int8: bool = field(default=True, metadata={"help": "Also write model_int8.onnx (dynamic int8 quantization)."})
    dataset: str | None = field(
        default=None, metadata={"help": "Labelled posts for the parity table (a data_prep folder, file or Hub id)."}
    )
    split: str = field(default="validation", metadata={"help": "Split of the parity posts."})
    max_posts: int | None = field(default=200, metadata={"help": "Posts of the parity table."})
    batch_size: int = field(default=32, metadata={"help": "Inputs per forward pass in the parity run."})

    def __post_init__(self):
        check_at_least(self, ["max_posts", "batch_size"])


@dataclass
class ScoreArguments(OutputOptions, ModelLoadingOptions):
    """Options of `scripts/score.py`."""

    model: str = field(metadata={"help": "Reward model folder (e.g. the output of scripts/reward.py) or Hub id."})
    dataset: str = field(
        metadata={"help": "CUP IT .jsonl[.gz] / Posts.xml / .csv file, data_prep output folder, or Hub dataset id."}
    )
    output_dir: str = field(metadata={"help": "Folder for predictions.jsonl, metrics.json, report.md and the plot."})
    split: str = field(default="test", metadata={"help": "Split of a folder or Hub dataset (else 'unlabeled')."})
    prompt_template: str | None = field(
        default=None, metadata={"help": f"Prompt of raw files: {PROMPT_TEMPLATE_HELP} (default: the model's own)."}
    )
    skip_invalid: bool = field(default=False, metadata={"help": "Skip and count invalid posts instead of stopping."})
    max_posts: int | None = field(default=None, metadata={"help": "Score only the first N posts."})
    max_length: int | None = field(default=None, metadata={"help": "Token limit per input (default: the model's)."})
    batch_size: int = field(default=32, metadata={"help": "Inputs per forward pass."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1..."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "auto (bfloat16 on CPUs with AMX/AVX512-BF16 and on GPUs that have it, else float32), "
            "float32, bfloat16 or float16."
        },
    )
    onnx_file: str | None = field(
        default=None,
        metadata={"help": "An exported model folder's ONNX file (default: model.onnx; model_int8.onnx: quantized)."},
    )
    n_seeds: int = field(default=20, metadata={"help": "Seeds the random baseline is averaged over."})
    n_bootstrap: int = field(
        default=1000, metadata={"help": "Bootstrap resamples of the posts for the 95% intervals (0: no intervals)."}
    )
    no_progress: bool = field(default=False, metadata={"help": "Hide the progress bar."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub model repo to upload model + card to."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "Base model named in the card (default: the one the model folder's training_facts.json records)."
        },
    )
    license: str = field(default="apache-2.0", metadata={"help": "License in the card's metadata."})

    def __post_init__(self):
        check_prompt_template(self.prompt_template)
        check_at_least(self, ["max_posts"])
        check_at_least(self, ["n_seeds"])
        check_at_least(self, ["n_bootstrap"], 0)
        check_scoring_options(self)


SCORING_DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_scoring_options(options) -> None:
    """The checks of the scoring options that score.py and rank.py share (`max_length`, `batch_size`, `dtype`,
    `device`), with the same messages."""
    check_at_least(options, ["max_length", "batch_size"])
    check_choice("dtype", options.dtype, SCORING_DTYPES)
    check_device(options.device)


# --------------------------------------------------------------------------------------------------------------------
# Using a reward model: GRPO (scripts/grpo.py) and best-of-n (scripts/best_of_n.py)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class PolicyReportOptions:
    """The before/after report on held-out posts (`commentrank.policy`), shared by grpo.py and best_of_n.py."""

    reward_model: str = field(metadata={"help": "The commentrank reward model (folder or Hub id) giving the rewards."})
    instruction: str = field(
        default="Write a short, helpful answer to this question.\n\n{post}",
        metadata={"help": "The policy's prompt ('{post}': the post's prompt as the reward model was trained on it)."},
    )
    chat: bool = field(default=True, metadata={"help": "Give the prompt as a user message through the chat template."})
    report_split: str = field(default="test", metadata={"help": "Split of the held-out posts of the report."})
    report_posts: int = field(default=32, metadata={"help": "Held-out posts of the report (0: no report)."})
    report_max_new_tokens: int = field(default=48, metadata={"help": "Tokens generated per comment in the report."})
    report_batch_size: int = field(default=8, metadata={"help": "Prompts per generate call in the report."})
    n_bootstrap: int = field(
        default=1000, metadata={"help": "Bootstrap resamples of the posts for the 95% intervals (0: no intervals)."}
    )


@dataclass
class GRPOArguments(TrainingScriptArguments, PolicyReportOptions):
    """Options of `scripts/grpo.py` (with TRL's `GRPOConfig` and `ModelConfig`): the prompts are the train split's
    posts (data_prep's listwise view), the rewards `commentrank.RewardFunction(reward_model, ...)`'s."""

    dataset_config: str | None = field(
        default="listwise", metadata={"help": "View the posts come from (data_prep's listwise view)."}
    )
    length_free: bool = field(
        default=False, metadata={"help": "Reward the model's own part only, without its length term."}
    )
    length_penalty: float = field(
        default=0.0, metadata={"help": "Subtract length_penalty * log1p(characters of the comment) from the reward."}
    )
    reward_clip: float | None = field(default=None, metadata={"help": "Clip rewards to [-c, c] (after the penalty)."})
    reward_batch_size: int = field(default=32, metadata={"help": "Inputs per reward-model forward pass."})


@dataclass
class BestOfNArguments(OutputOptions, PolicyReportOptions, ModelLoadingOptions):
    """Options of `scripts/best_of_n.py`: n sampled comments per held-out post, the reward model keeps its first."""

    model_name_or_path: str = field(
        default="bundled:smollm2", metadata={"help": "The causal LM writing the comments (folder, Hub id, bundled:)."}
    )
    dataset_name: str = field(
        default="outputs/quickstart/data",
        metadata={"help": "Ranked posts: data_prep folder, raw file or Hub dataset."},
    )
    output_dir: str = field(
        default="outputs/best_of_n", metadata={"help": "Folder for best_of_n.md/.json and generations.jsonl."}
    )
    n: int = field(default=8, metadata={"help": "Comments sampled per post."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling."})
    length_penalty: float = field(
        default=0.0, metadata={"help": "Pick by reward - length_penalty * log1p(characters) (the report is unshaped)."}
    )
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    dtype: str = field(default="float32", metadata={"help": "dtype of the causal LM."})

    def __post_init__(self):
        if self.n < 2:
            raise ValueError(f"n must be at least 2 (best of n), got {self.n}")
        check_at_least(self, ["n_bootstrap", "report_posts"], 0)
