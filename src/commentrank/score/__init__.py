"""Stage 3, scoring: a reward model with its encoder settings, batched inference, and the reports."""
