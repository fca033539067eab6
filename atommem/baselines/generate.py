"""One engine call of a model-driven baseline (chat messages in, response text and token ids out), and the
`<final_answer>` every baseline workflow wraps its answer in."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from atommem.actions import extract_boxed, final_answer
from atommem.data.synthetic import UNKNOWN
from atommem.errors import UserError
from atommem.policies.base import PolicyOutput

if TYPE_CHECKING:  # engines implement the interface a policy drives; policies never import them
    from atommem.engines.base import SamplingParams

_TAG = re.compile(r"</?(update_query|add_memory|modify_memory|delete_memory|update_memory|final_answer)>")


def check_model_args(name: str, engine: Any, tokenizer: Any, sampling: Any) -> None:
    if engine is None or tokenizer is None or sampling is None:
        raise UserError(
            f"the {name} baseline prompts a model: it needs engine, tokenizer and sampling "
            f"(evaluate it with a checkpoint, or use the scripted variant '{name}-scripted' on synthetic data)"
        )


async def generate(engine: Any, tokenizer: Any, sampling: "SamplingParams", messages: list[dict]) -> PolicyOutput:
    """Template `messages` once, generate, decode the ids keeping tag tokens and dropping eos/pad."""
    prompt_ids = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))
    gen = await engine.generate(prompt_ids, sampling)
    drop = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    text = tokenizer.decode([t for t in gen.token_ids if t not in drop], skip_special_tokens=False)
    return PolicyOutput(
        text=text,
        prompt_ids=prompt_ids,
        response_ids=list(gen.token_ids),
        logprobs=list(gen.logprobs),
        weight_version=gen.weight_version,
        complete=gen.finish_reason == "stop",
    )


def strip_tags(text: str) -> str:
    """`text` without action tags, whitespace collapsed (the body a workflow wraps in its own tag)."""
    return " ".join(_TAG.sub(" ", text).split())


def answer_of(text: str) -> str:
    """The boxed answer of a model response, else its first non-empty line without tags."""
    boxed = extract_boxed(text)
    if boxed is not None and boxed.strip():
        return " ".join(boxed.split())
    for line in text.splitlines():
        line = strip_tags(line)
        if line:
            return line
    return ""


def answer_action(answer: str) -> str:
    """The workflow's `<final_answer>` for `answer` (`unknown` when empty)."""
    return final_answer(answer or UNKNOWN)


async def generate_answer(engine: Any, tokenizer: Any, sampling: "SamplingParams", messages: list[dict]) -> PolicyOutput:
    """Ask the model; the workflow answers with what it said, as a well-formed `<final_answer>` whatever it wrote."""
    out = await generate(engine, tokenizer, sampling, messages)
    out.text = answer_action(strip_tags(answer_of(out.text)))
    out.complete = True
    return out
