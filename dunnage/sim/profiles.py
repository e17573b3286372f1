"""Engine performance profiles: what one replica of a model on its GPUs costs per iteration.

A replica runs vLLM-style continuous batching. One iteration (one forward pass) over a batch
with ``P`` prefill tokens and ``n`` decoding sequences whose KV caches hold ``S`` tokens costs

    b0 + b1 * P + b2 * n + attn * S + prefill_attn * (sum over prefill tokens of their position)

seconds: ``b0`` is reading the weights once (memory bound) plus the engine's per-step overhead,
``b1`` the compute of one prompt token, ``b2`` the extra cost of one more decoding sequence,
``attn`` reading one cached token's K and V, and ``prefill_attn`` the quadratic part of prompt
attention. Every coefficient is derived below from public model sizes and GPU data-sheet figures
with stated efficiency factors; those factors are **estimates**, not measurements of ours.
They put the profiles in the range public vLLM benchmarks report (for Llama-3-8B on one H100:
about 7-10 ms inter-token latency at small batch, a few tens of thousands of prefill tokens per
second, about 30 ms per iteration at 256 sequences of ~1k tokens); calibrate against your own
engine with ``vllm bench serve`` before trusting absolute numbers.

Public figures used:

- Llama-3.1-8B: 8.03 B parameters (16.06 GB in BF16), 32 layers, hidden 4096, 8 KV heads of 128
  -> KV cache 2 * 32 * 8 * 128 * 2 B = 131,072 B per token (Meta model card / config.json).
- Llama-3.1-70B: 70.6 B parameters (141 GB in BF16), 80 layers, hidden 8192, 8 KV heads of 128
  -> 327,680 B per token.
- H100 SXM 80 GB: 3.35 TB/s HBM3, 989 TFLOPS dense BF16; A100 SXM 80 GB: 2.04 TB/s, 312 TFLOPS
  (NVIDIA data sheets).
- vLLM defaults: ``--max-num-seqs 256``, ``--gpu-memory-utilization 0.9``; chunked prefill with a
  token budget (``--max-num-batched-tokens``; 8,192 assumed here).
- Default SLOs follow MLPerf Inference's server-scenario latency limits (Llama-3.1-8B: TTFT 2 s,
  TPOT 100 ms; Llama-2-70B: TTFT 2 s, TPOT 200 ms).

Efficiency assumptions (estimates): 75% of peak memory bandwidth for weight reads, 70% for KV
reads, 50-55% model-FLOPs utilisation for prefill (45% with tensor parallelism), a decoding
sequence's marginal cost at 5/8 of a prompt token's (decode GEMMs overlap partly with the weight
reads), ~1 ms of scheduler/launch overhead per step, 4-6 GB per GPU of activations and CUDA graphs
that the KV cache cannot use. Cold starts: pod start (image cached) plus weight load, CUDA-graph
capture and compilation; estimates for local NVMe storage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dunnage.errors import InputError

H100_BW = 3.35e12  # bytes/s
H100_FLOPS = 989e12  # dense BF16
A100_BW = 2.039e12
A100_FLOPS = 312e12


@dataclass(frozen=True)
class Profile:
    name: str
    model: str
    gpu: str
    gpus_per_replica: int
    b0: float  # s per iteration
    b1: float  # s per prefill token
    b2: float  # s per decoding sequence
    attn: float  # s per cached token read
    prefill_attn: float  # s per (prompt token x position)
    kv_capacity_tokens: int
    max_num_seqs: int
    max_batched_tokens: int
    kv_bytes_per_token: int
    kv_transfer_bandwidth: float  # bytes/s between prefill and decode replicas
    kv_transfer_latency: float  # s, fixed part of one transfer
    pod_start_seconds: float
    model_load_seconds: float
    slo_ttft: float
    slo_tpot: float
    notes: str = ""

    @property
    def cold_start_seconds(self) -> float:
        return self.pod_start_seconds + self.model_load_seconds

    def decode_step(self, batch: int, context_tokens: float) -> float:
        """Seconds of one pure-decode iteration at ``batch`` sequences of ``context_tokens``."""
        return self.b0 + self.b2 * batch + self.attn * batch * context_tokens

    def prefill_seconds(self, prompt: int) -> float:
        """Seconds to prefill one prompt alone (chunked by the token budget)."""
        chunks = -(-prompt // self.max_batched_tokens)
        return chunks * self.b0 + self.b1 * prompt + self.prefill_attn * prompt * prompt / 2

    def kv_transfer_seconds(self, prompt: int) -> float:
        return self.kv_transfer_latency + prompt * self.kv_bytes_per_token / (
            self.kv_transfer_bandwidth
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _llama3_8b(name: str, gpu: str, bw: float, flops: float, mfu: float, notes: str) -> Profile:
    weights = 8.03e9 * 2
    kv_token = 2 * 32 * 8 * 128 * 2
    b1 = 2 * 8.03e9 / (flops * mfu)
    # 80 GB x 0.9 - weights - ~5 GB activations/graphs, divided by the KV bytes per token.
    kv_cap = int((80e9 * 0.9 - weights - 5e9) / kv_token)
    return Profile(
        name=name,
        model="meta-llama/Llama-3.1-8B-Instruct",
        gpu=gpu,
        gpus_per_replica=1,
        b0=weights / (bw * 0.75) + 1e-3,
        b1=b1,
        b2=b1 * 5 / 8,
        attn=kv_token / (bw * 0.70),
        prefill_attn=4 * 32 * 4096 / (flops * 0.5),
        kv_capacity_tokens=kv_cap,
        max_num_seqs=256,
        max_batched_tokens=8192,
        kv_bytes_per_token=kv_token,
        kv_transfer_bandwidth=25e9,  # NIXL over a 400 Gb/s RDMA NIC at ~50% of line rate
        kv_transfer_latency=2e-3,
        pod_start_seconds=10.0,
        model_load_seconds=50.0,
        slo_ttft=2.0,
        slo_tpot=0.1,
        notes=notes,
    )


def _llama3_70b_h100x4() -> Profile:
    weights = 70.6e9 * 2
    kv_token = 2 * 80 * 8 * 128 * 2
    tp = 4
    b1 = 2 * 70.6e9 / (tp * H100_FLOPS * 0.45)
    kv_cap = int((tp * 80e9 * 0.9 - weights - tp * 5e9) / kv_token)
    return Profile(
        name="llama3-70b-h100x4",
        model="meta-llama/Llama-3.1-70B-Instruct",
        gpu="4x H100 SXM 80GB (tensor parallel 4)",
        gpus_per_replica=tp,
        # Weight shards read in parallel, plus 2 all-reduces per layer (~15 us each) and overhead.
        b0=weights / tp / (H100_BW * 0.75) + 80 * 2 * 15e-6 + 1e-3,
        b1=b1,
        b2=b1 * 5 / 8,
        attn=kv_token / tp / (H100_BW * 0.70),
        prefill_attn=4 * 80 * 8192 / (tp * H100_FLOPS * 0.45),
        kv_capacity_tokens=kv_cap,
        max_num_seqs=256,
        max_batched_tokens=8192,
        kv_bytes_per_token=kv_token,
        kv_transfer_bandwidth=4 * 25e9,  # one NIC per GPU shard
        kv_transfer_latency=3e-3,
        pod_start_seconds=15.0,
        model_load_seconds=105.0,
        slo_ttft=2.0,
        slo_tpot=0.2,
        notes="estimate; TP=4 in one node, NVLink all-reduce",
    )


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        _llama3_8b(
            "llama3-8b-h100",
            "H100 SXM 80GB",
            H100_BW,
            H100_FLOPS,
            0.55,
            "estimate; vLLM, BF16, one GPU",
        ),
        _llama3_8b(
            "llama3-8b-a100",
            "A100 SXM 80GB",
            A100_BW,
            A100_FLOPS,
            0.55,
            "estimate; vLLM, BF16, one GPU",
        ),
        _llama3_70b_h100x4(),
    )
}

DEFAULT_PROFILE = "llama3-8b-h100"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise InputError(
            f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}", obj="--profile"
        ) from None
