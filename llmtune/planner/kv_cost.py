"""Which KV cache type makes a generated token cheaper when the model does not fit in VRAM. Pure.

A q8_0 cache takes 53% of f16's memory, so under --fit more of the model stays on the GPU; but
every token reads the whole cache up to the current depth, and llama.cpp's attention is slower
per cell with q8_0 (it dequantizes) than with f16. Which wins depends on the serving depth:

Measured on the H100 host (16 vCPU Xeon, 95 GB/s RAM), llama.cpp 0c1e570, the 8B Q4_K_M under a
4 GB VRAM budget at -c 32768, 16 threads:
- a fresh prompt (llama-server, 200 tokens): q8_0 22.2 t/s (14 GPU layers) vs f16 17.7 (11);
- depth 16384 (llama-bench tg64): f16 6.8 t/s vs q8_0 5.8.
Per layer left on the CPU, a token costs about 2.5 ms for its 136.5 MB of weights (54.6 GB/s),
and at depth 16384 another 4.4 ms for 67 MB of f16 cells (15.2 GB/s) or 6.9 ms for 36 MB of
q8_0 cells (5.2 GB/s). So in bytes of weights streamed: a byte of f16 KV read by the CPU costs
3.6, a byte of q8_0 KV 10.5. On the GPU (all layers there, depth 16384: f16 211.7 t/s, q8_0
165.1) q8_0 adds 2.5 ns per cell per layer: as long as streaming 137 bytes of CPU weights.

Dense models: --fit moves whole layers (weights and their KV) to the CPU, so the cost of a token
is the CPU layers times (a layer's weights + its cells at the depth, weighted as above).
MoE models: --fit moves expert tensors first and keeps attention and the cache on the GPU, so a
smaller cache only frees VRAM for experts (a token reads ``expert_used / expert_count`` of
them), against q8_0's slower attention on the GPU.

q8_0 is chosen only when the estimate says it is ``Q8_MIN_GAIN`` cheaper: f16 is the quality
default, and the estimate is a model of two measurements, not a measurement of this host
(``llmtune tune`` measures both).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmtune.facts.model import GgufModelValue

MIB = 1024 * 1024
# Bytes of CPU weight streaming one byte of KV read by the CPU's attention costs (see above).
CPU_KV_BYTE_COST = {"f16": 3.6, "q8_0": 10.5}
# q8_0's extra GPU attention time per cell per layer, as bytes of CPU weight streaming:
# 2.5 ns x 54.6 GB/s.
GPU_Q8_CELL_COST = 2.5e-9 * 54.6e9
Q8_MIN_GAIN = 0.05
# llama-bench and tune measure at half of a slot's context: the average depth of a
# conversation that grows to fill it; capped because deeper tests take minutes on a CPU.
DEPTH_CAP = 16384


def serving_depth(ctx_per_slot: int) -> int:
    """Half of one slot's context, at most ``DEPTH_CAP``."""
    return max(0, min(ctx_per_slot // 2, DEPTH_CAP))


@dataclass(frozen=True)
class KvCost:
    """Estimated bytes of CPU weight streaming per generated token (lower is faster), and the
    number of layers (dense) or expert MiB (MoE) the type leaves on the CPU."""

    kv: str
    cost: float
    on_cpu: float


def _layers_on_gpu(model: GgufModelValue, room_mib: float, kv_layer_mib: float) -> int:
    layers = max(1, model.block_count)
    per_layer = (model.tensor_bytes or model.file_bytes) / MIB / layers + kv_layer_mib
    if per_layer <= 0:  # no sizes in the metadata: nothing to place
        return layers
    return max(0, min(layers, int(room_mib // per_layer)))


def kv_cost(model: GgufModelValue, kv: str, room_mib: float, tokens: int, depth: int) -> KvCost:
    """The estimate for ``kv`` with ``room_mib`` of VRAM for weights and cache (usable minus
    compute buffers), a cache of ``tokens`` cells and generation at ``depth``."""
    layers = max(1, model.block_count)
    cell_layer = model.kv_bytes_per_token(kv, kv) / layers  # bytes per cell per layer
    weights = model.tensor_bytes or model.file_bytes
    if model.is_moe and model.expert_tensor_bytes:
        cache_mib = cell_layer * layers * tokens / MIB
        dense_mib = (weights - model.expert_tensor_bytes) / MIB
        experts_gpu = max(0.0, room_mib - dense_mib - cache_mib)
        experts_cpu = max(0.0, model.expert_tensor_bytes / MIB - experts_gpu)
        share = model.expert_used_count / model.expert_count
        cost = experts_cpu * MIB * share
        if kv != "f16":
            cost += GPU_Q8_CELL_COST * depth * layers
        return KvCost(kv, cost, experts_cpu)
    on_gpu = _layers_on_gpu(model, room_mib, cell_layer * tokens / MIB)
    cpu_layers = layers - on_gpu
    per_layer = weights / layers + depth * cell_layer * CPU_KV_BYTE_COST.get(kv, 10.5)
    cost = cpu_layers * per_layer
    if kv != "f16":
        cost += GPU_Q8_CELL_COST * depth * on_gpu
    return KvCost(kv, cost, cpu_layers)


def cheaper_kv(
    model: GgufModelValue, room_mib: float, tokens: int, depth: int
) -> tuple[str, KvCost, KvCost]:
    """f16 or q8_0 under --fit, with both estimates (for the decision's reason)."""
    f16 = kv_cost(model, "f16", room_mib, tokens, depth)
    q8 = kv_cost(model, "q8_0", room_mib, tokens, depth)
    choice = "q8_0" if q8.cost < f16.cost * (1 - Q8_MIN_GAIN) else "f16"
    return choice, f16, q8
