"""Learner: GRPO maths (pure torch), SFT rows, the DeepSpeed ZeRO-3 LearnerGroup, and weight sync to engines.

Import Ray/DeepSpeed-backed pieces from their modules (`atommem.learner.learner_group`), so that the pure
maths in `atommem.learner.grpo` stays importable without them.
"""
