"""Rollouts on Ray: EnvRunner actors step many MemoryEnvs asynchronously against sticky engine replicas;
trajectories travel as ObjectRefs with small summaries, grouped by uid for GRPO.

Modules are imported on use (`from atommem.rollout.env_runner_group import EnvRunnerGroup`) so that
importing the package stays cheap.
"""
