"""TRL's SFTTrainer, saving like the reward trainers: training arguments as JSON without tokens, never a pickle."""

from trl import SFTTrainer

from commentrank.train.checkpoints import SafeSavingMixin


class SafeSFTTrainer(SafeSavingMixin, SFTTrainer):
    """`trl.SFTTrainer` with `SafeSavingMixin`: every saved folder gets `training_args.json` (tokens redacted) instead
    of the pickled `training_args.bin`."""
