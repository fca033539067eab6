"""Training drivers: SFT (`trainer/sft.py`) and GRPO (`trainer/grpo.py`) over the rollout system and the learner
group, with crash-safe checkpoints (`atommem/checkpoints.py`)."""
