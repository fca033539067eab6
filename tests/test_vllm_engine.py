"""VLLMEngine: a clear error without a GPU; on a GPU, generation, logprobs and weight sync (gpu-marked)."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from atommem.errors import EngineError
from atommem.engines.base import SamplingParams
from helpers_models import make_tiny_model_dir


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without CUDA")
def test_without_cuda_the_error_says_what_to_do(tmp_path):
    from atommem.engines.vllm import VLLMEngine

    with pytest.raises(EngineError, match=r"needs a CUDA GPU and the `gpu` extra \(pip install atommem\[gpu\]\)"):
        VLLMEngine(str(tmp_path / "anything"))


def test_extension_module_imports_without_vllm():
    from atommem.engines.vllm_ext import WeightSyncExtension

    assert callable(WeightSyncExtension.receive_weights) and callable(WeightSyncExtension.init_weight_sync)


@pytest.fixture(scope="module")
def vllm_engine(tmp_path_factory):
    pytest.importorskip("vllm")
    from atommem.engines.vllm import VLLMEngine

    path = make_tiny_model_dir(tmp_path_factory.mktemp("vllm"), hidden=64, layers=2)
    engine = VLLMEngine(str(path), gpu_memory_utilization=0.2, dtype="float32", enable_sleep_mode=True, max_model_len=1024)
    yield engine, path
    engine.close()


@pytest.mark.gpu
def test_vllm_greedy_matches_hf_and_logprobs_are_raw(vllm_engine):
    from atommem.engines.hf import HFEngine

    engine, path = vllm_engine
    hf = HFEngine(str(path), device="cuda")
    prompts = [[5, 9, 30], [7, 8], [40, 41, 42, 43, 44]]
    greedy = SamplingParams(temperature=0.0, max_tokens=8)

    async def run():
        return await asyncio.gather(*(engine.generate(p, greedy) for p in prompts)), await asyncio.gather(
            *(hf.generate(p, greedy) for p in prompts)
        )

    ours, ref = asyncio.run(run())
    for a, b in zip(ours, ref):
        assert a.token_ids == b.token_ids
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-3)
    sampled = asyncio.run(engine.generate(prompts[0], SamplingParams(temperature=1.5, top_p=0.5, max_tokens=8, seed=1)))
    ids = torch.tensor([prompts[0] + sampled.token_ids], device="cuda")
    with torch.no_grad():
        logits = hf.model(ids).logits[0, len(prompts[0]) - 1 : -1].float()
    raw = torch.log_softmax(logits, -1).gather(-1, torch.tensor(sampled.token_ids, device="cuda").unsqueeze(1)).squeeze(1)
    assert torch.allclose(torch.tensor(sampled.logprobs), raw.cpu(), atol=1e-3)


@pytest.mark.gpu
def test_vllm_weight_sync_over_nccl_and_sleep(vllm_engine):
    from atommem.weight_sync.base import free_port
    from atommem.weight_sync.process_group import WeightSender

    engine, path = vllm_engine
    from atommem.models.loading import load_model

    model = load_model(path)
    g = torch.Generator().manual_seed(0)
    new = [(n, (torch.randn(t.shape, generator=g) * 0.3).cuda()) for n, t in model.named_parameters() if "norm" not in n]
    port = free_port()
    before = asyncio.run(engine.generate([5, 9, 30], SamplingParams(temperature=0.0, max_tokens=8)))

    def learner():
        sender = WeightSender("127.0.0.1", port, world_size=2, backend="nccl")
        sender.send(new, bucket_bytes=1 << 20)

    thread = threading.Thread(target=learner)
    thread.start()

    async def run():
        await engine.init_weight_sync("127.0.0.1", port, rank=1, world_size=2, backend="nccl")
        return await engine.receive_weights(version=3)

    report = asyncio.run(run())
    thread.join(timeout=120)
    assert report["version"] == 3 and report["tensors"] == len(new)
    after = asyncio.run(engine.generate([5, 9, 30], SamplingParams(temperature=0.0, max_tokens=8)))
    assert after.weight_version == 3 and after.token_ids != before.token_ids
    asyncio.run(engine.sleep(1))
    assert not asyncio.run(engine.health())["ready"]
    asyncio.run(engine.wake_up())
    assert asyncio.run(engine.generate([5, 9, 30], SamplingParams(temperature=0.0, max_tokens=8))).token_ids == after.token_ids
