"""Stage 2, training: the datasets the reward trainers take, the listwise trainer and its losses, callbacks."""
