"""TRL's GRPOTrainer, saving like the other trainers: training arguments as JSON without tokens, never a pickle."""

from trl import GRPOTrainer

from commentrank.train.checkpoints import SafeSavingMixin


class SafeGRPOTrainer(SafeSavingMixin, GRPOTrainer):
    """`trl.GRPOTrainer` with `SafeSavingMixin`: every saved folder gets `training_args.json` (tokens redacted) instead
    of the pickled `training_args.bin`."""
