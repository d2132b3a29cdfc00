"""A lean forward of Llama-architecture causal LMs for one sequence on a CPU: the compute of the fast engine
(`model.engines.fast_engine`), with the transformers engine as its parity reference.

Where the reference's time goes (SmolLM2-135M, ~630-token template-v4 prompts, 48 greedy tokens, 2 CPU cores;
`docs/results/bench_fast_engine.md`): decode steps are most of it, and inside a step the matrix multiplies are
83% (reading ~540 MB of fp32 weights per token), attention 6%, norms 5%: a leaner forward alone gains little.
What gains is the precision of the weights, chosen per kernel: one-row (decode) matmuls read fp16 weights
(ATen's fp16 gemv accumulates in fp32: the same greedy text as fp32), many-row (prefill) matmuls stay fp32 or read
bf16 through oneDNN (prepacked; faster, but the text drifts on some prompts). The residual stream, norms, RoPE,
attention and the KV cache stay fp32.

- **Plain torch forward**, no module tree: per layer one fused QKV projection and one fused gate/up projection,
  `F.rms_norm`, RoPE from precomputed tables, SDPA with grouped-query attention.
- **Static KV cache** `(layers, kv_heads, capacity, head_dim)`, written in place; it doubles when a sequence
  needs more.
- **Weight sets**: a LoRA adapter is merged into copies of only the projections it touches (`add_lora`); every
  other tensor is shared with the base set, so the reasoning adapter's set and the base set cost one model and
  switching costs nothing.

Supports `LlamaForCausalLM` with SiLU MLPs and RoPE tables that do not depend on the sequence length.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F

Kind = Literal["fp32", "bf16", "fp16"]
BASE = "base"
_PROJ = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$")


# ---- kernels ---------------------------------------------------------------------------------------------------


class Linear:
    """y = x W^T (+ b) for fp32 `x` of shape (rows, in), fp32 result; W stored in one precision `kind`.

    fp32: `F.linear`. bf16: oneDNN with the weight prepacked once (`mkldnn._linear_pointwise`; plain bf16
    `F.linear` where oneDNN is missing), activations cast to bf16. fp16: `F.linear` on fp16 (ATen's gemv with fp32
    accumulation; fast for one row only, very slow for many).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, kind: Kind) -> None:
        self.kind = kind
        self.out_features, self.in_features = weight.shape
        self.bias = None if bias is None else bias.detach().float().contiguous()
        w = weight.detach().float()
        self._packed: torch.Tensor | None = None
        if kind == "fp32":
            self.weight = w.contiguous()
        elif kind == "fp16":
            self.weight = w.half().contiguous()
        elif kind == "bf16":
            self.weight = w.bfloat16().contiguous()
            if torch.backends.mkldnn.is_available():
                try:
                    self._packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, 1)
                except (RuntimeError, AttributeError):
                    self._packed = None
        else:
            raise ValueError(f"unknown weight kind {kind!r}")

    @property
    def nbytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        kind = self.kind
        if kind == "fp32":
            return F.linear(x, self.weight, self.bias)
        if kind == "fp16":
            y = F.linear(x.half(), self.weight).float()
        elif self._packed is not None:
            y = torch.ops.mkldnn._linear_pointwise(x.bfloat16(), self._packed, None, "none", [], "").float()
        else:
            y = F.linear(x.bfloat16(), self.weight).float()
        return y if self.bias is None else y + self.bias


@dataclass(frozen=True)
class Precision:
    """Weight precision of the many-row kernels (prefill, state passes) and of the one-row kernels (decode steps
    and the lm_head). Measured per matmul on one AVX512-BF16 core without AMX (all 120 linears + lm_head,
    /work/proto/micro2.py): 620 rows bf16 (prepacked) 2.2-2.5x fp32, fp16 4.4x *slower*; one row fp16 2.8x,
    int8 2.35x, bf16 (prepacked) 2.0x. Greedy text drifts from fp32 with any reduced decode or prefill precision
    (bench.py parity); `Precision()` is exact fp32."""

    prefill: Kind = "fp32"
    decode: Kind = "fp32"

    @property
    def label(self) -> str:
        return self.prefill if self.prefill == self.decode else f"{self.prefill}/{self.decode}"


FP32 = Precision()
EXACT = Precision(prefill="fp32", decode="fp16")
FAST = Precision(prefill="bf16", decode="fp16")
PRECISIONS = {"fp32": FP32, "exact": EXACT, "fast": FAST}
"""The precisions by name (`REASONREC_ENGINE_PRECISION`, the benchmark)."""


class Proj:
    """One projection with a kernel per regime: `decode` for a single row, `prefill` for more (shared when the
    two precisions are equal)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, precision: Precision) -> None:
        self.prefill = Linear(weight, bias, precision.prefill)
        self.decode = self.prefill if precision.decode == precision.prefill else Linear(weight, bias,
                                                                                        precision.decode)

    @property
    def nbytes(self) -> int:
        return self.prefill.nbytes + (0 if self.decode is self.prefill else self.decode.nbytes)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(x) if x.shape[0] == 1 else self.prefill(x)


# ---- weights ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One decoder layer's weights: fused QKV rows are [q | k | v], fused gate/up rows are [gate | up]."""

    input_norm: torch.Tensor
    post_norm: torch.Tensor
    qkv: Proj
    o: Proj
    gate_up: Proj
    down: Proj


@dataclass(frozen=True)
class WeightSet:
    """All weights of one variant of the model. Sets made by `LeanLlama.add_lora` share every unchanged `Layer`
    (and every unchanged `Proj` inside a changed layer) with the set they derive from."""

    layers: tuple[Layer, ...]
    final_norm: torch.Tensor
    embed: torch.Tensor
    lm_head: Proj
    fp32_projections: dict[tuple[int, str], torch.Tensor] = field(repr=False, default_factory=dict)
    """Unfused fp32 projection weights (layer, name) -> (out, in), read only to derive LoRA sets (the base set's
    are references to the HF model's tensors, not copies)."""
    fp32_biases: dict[tuple[int, str], torch.Tensor | None] = field(repr=False, default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for layer in self.layers for p in (layer.qkv, layer.o, layer.gate_up, layer.down)) \
            + self.lm_head.nbytes


_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


def _build_layer(ws: dict[str, torch.Tensor], bs: dict[str, torch.Tensor | None], in_norm: torch.Tensor,
                 post_norm: torch.Tensor, precision: Precision, previous: Layer | None = None,
                 changed: set[str] | None = None) -> Layer:
    """A `Layer` from unfused fp32 weights; with `previous`, projections not in `changed` are shared with it."""

    def fused(names: tuple[str, ...]) -> Proj:
        w = torch.cat([ws[n] for n in names])
        b = None if all(bs[n] is None for n in names) else torch.cat(
            [bs[n] if bs[n] is not None else torch.zeros(ws[n].shape[0]) for n in names])
        return Proj(w, b, precision)

    def keep(names: tuple[str, ...], attr: str) -> Proj:
        if previous is not None and changed is not None and not changed.intersection(names):
            return getattr(previous, attr)
        return fused(names)

    return Layer(in_norm, post_norm, keep(("q_proj", "k_proj", "v_proj"), "qkv"), keep(("o_proj",), "o"),
                 keep(("gate_proj", "up_proj"), "gate_up"), keep(("down_proj",), "down"))


# ---- the model -------------------------------------------------------------------------------------------------


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LeanLlama:
    """Weights (one or more `WeightSet`s), a static KV cache and the forward of a Llama model, one sequence.

    `forward(ids, start, weights)` writes the KV of `ids` at positions start.. and returns the final-normed
    hidden state of the last one; cache positions >= start + len(ids) are ignored from then on.
    """

    def __init__(self, model: torch.nn.Module, precision: Precision = FP32, capacity: int = 1024) -> None:
        config = model.config
        act = getattr(config, "hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"only SiLU MLPs are supported, not {act!r}")
        rope = (getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
        if rope.get("rope_type", rope.get("type", "default")) in ("dynamic", "longrope"):
            raise ValueError("RoPE types whose tables depend on the sequence length are not supported")
        self.n_heads = int(config.num_attention_heads)
        self.n_kv = int(config.num_key_value_heads)
        self.hidden = int(config.hidden_size)
        self.head_dim = int(getattr(config, "head_dim", None) or self.hidden // self.n_heads)
        self.eps = float(config.rms_norm_eps)
        self.n_layers = int(config.num_hidden_layers)
        self.precision = precision
        self._rotary = model.model.rotary_emb
        decoder = model.model
        fp32_projections: dict[tuple[int, str], torch.Tensor] = {}
        fp32_biases: dict[tuple[int, str], torch.Tensor | None] = {}
        layers = []
        for i, block in enumerate(decoder.layers):
            mods = {n: getattr(block.self_attn, n) for n in _ATTN} | {n: getattr(block.mlp, n) for n in _MLP}
            # references, not copies: read again only by `add_lora` (the HF model must stay unmodified until then)
            ws = {n: m.weight.detach().float() for n, m in mods.items()}
            bs = {n: (None if m.bias is None else m.bias.detach().float()) for n, m in mods.items()}
            fp32_projections.update({(i, n): w for n, w in ws.items()})
            fp32_biases.update({(i, n): b for n, b in bs.items()})
            layers.append(_build_layer(ws, bs, block.input_layernorm.weight.detach().float().clone(),
                                       block.post_attention_layernorm.weight.detach().float().clone(), precision))
        embed = decoder.embed_tokens.weight.detach().float().clone()
        head = model.get_output_embeddings().weight.detach().float()
        if head.data_ptr() == decoder.embed_tokens.weight.data_ptr():
            head = embed  # tied: one fp32 copy serves the lookup and (in fp32) the lm_head
        self.sets: dict[str, WeightSet] = {BASE: WeightSet(
            tuple(layers), decoder.norm.weight.detach().float().clone(), embed,
            Proj(head, None, replace(precision, prefill=precision.decode)), fp32_projections, fp32_biases)}
        self.capacity = 0
        self.k = self.v = self.cos = self.sin = torch.empty(0)
        self._ensure_capacity(capacity)
        self.length = 0

    # ---- weight sets ---------------------------------------------------------------------------------------------

    def add_lora(self, name: str, deltas: Mapping[str, torch.Tensor], base: str = BASE) -> WeightSet:
        """A new weight set `name` = `base` with each delta added to its projection (keys end in
        `layers.{i}.{self_attn|mlp}.{q,k,v,o,gate,up,down}_proj`, as in `peft_lora_deltas`). Layers and fused
        projections the deltas do not touch are shared with `base`, not copied."""
        if name in self.sets:
            raise ValueError(f"weight set {name!r} exists")
        parent = self.sets[base]
        touched: dict[int, dict[str, torch.Tensor]] = {}
        for key, delta in deltas.items():
            match = _PROJ.search(key)
            if match is None:
                raise ValueError(f"unsupported LoRA target {key!r} (only decoder-layer projections)")
            touched.setdefault(int(match.group(1)), {})[match.group(2)] = delta.detach().float()
        layers = list(parent.layers)
        projections = dict(parent.fp32_projections)
        for i, changes in touched.items():
            ws = {n: parent.fp32_projections[(i, n)] for n in _ATTN + _MLP}
            for n, delta in changes.items():
                if delta.shape != ws[n].shape:
                    raise ValueError(f"layer {i} {n}: delta {tuple(delta.shape)} vs weight {tuple(ws[n].shape)}")
                ws[n] = ws[n] + delta
                projections[(i, n)] = ws[n]
            old = parent.layers[i]
            bs = {n: parent.fp32_biases.get((i, n)) for n in _ATTN + _MLP}
            layers[i] = _build_layer(ws, bs, old.input_norm, old.post_norm, self.precision,
                                     previous=old, changed=set(changes))
        self.sets[name] = WeightSet(tuple(layers), parent.final_norm, parent.embed, parent.lm_head, projections,
                                    parent.fp32_biases)
        return self.sets[name]

    # ---- cache ---------------------------------------------------------------------------------------------------

    def _ensure_capacity(self, n: int) -> None:
        if n <= self.capacity:
            return
        cap = max(n, 2 * self.capacity, 256)
        k = torch.zeros(self.n_layers, self.n_kv, cap, self.head_dim)
        v = torch.zeros_like(k)
        if self.capacity:
            k[:, :, : self.capacity] = self.k
            v[:, :, : self.capacity] = self.v
        self.k, self.v, self.capacity = k, v, cap
        positions = torch.arange(cap)[None]
        cos, sin = self._rotary(torch.zeros(1, dtype=torch.float32), positions)
        half = self.head_dim // 2
        self.cos = cos[0].float().contiguous()
        self.sin = torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1).float().contiguous()

    def snapshot(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of the KV of positions 0..n-1."""
        return self.k[:, :, :n].clone(), self.v[:, :, :n].clone()

    def restore(self, k: torch.Tensor, v: torch.Tensor, n: int) -> None:
        """Write the first n positions of a snapshot into the cache; the cache then holds n positions."""
        self._ensure_capacity(n)
        self.k[:, :, :n] = k[:, :, :n]
        self.v[:, :, :n] = v[:, :, :n]
        self.length = n

    # ---- forward -------------------------------------------------------------------------------------------------

    def forward(self, ids: Sequence[int] | torch.Tensor, start: int, weights: str = BASE) -> torch.Tensor:
        """Feed `ids` at positions start.. on top of the cache's first `start` positions; the final-normed hidden
        state (hidden,) of the last id. Afterwards the cache holds start + len(ids) positions."""
        ids_t = ids if isinstance(ids, torch.Tensor) else torch.tensor(list(ids), dtype=torch.long)
        s = int(ids_t.shape[0])
        if s == 0:
            raise ValueError("nothing to feed")
        if start > self.length:
            raise ValueError(f"start {start} beyond the {self.length} cached positions")
        end = start + s
        self._ensure_capacity(end)
        ws = self.sets[weights]
        x = F.embedding(ids_t, ws.embed)
        if s == 1:
            x = self._layers_one(x, start, ws)
        else:
            x = self._layers_many(x, start, ws)
        self.length = end
        return F.rms_norm(x[-1], (self.hidden,), ws.final_norm, self.eps)

    def logits(self, hidden: torch.Tensor, weights: str = BASE) -> torch.Tensor:
        return self.sets[weights].lm_head(hidden[None])[0]

    def step(self, token: int, pos: int, weights: str = BASE) -> int:
        """One greedy decode step: feed `token` at `pos`, return the argmax of the next-token logits."""
        h = self.forward(torch.tensor([token]), pos, weights)
        return int(self.sets[weights].lm_head.decode(h[None]).argmax())

    def _layers_one(self, x: torch.Tensor, pos: int, ws: WeightSet) -> torch.Tensor:
        """The decoder layers for one token at `pos` (x: (1, hidden))."""
        nh, nkv, hd, hidden, eps = self.n_heads, self.n_kv, self.head_dim, self.hidden, self.eps
        nqk = (nh + nkv) * hd
        cos, sin = self.cos[pos], self.sin[pos]
        t = pos + 1
        half = hd // 2
        for li, layer in enumerate(ws.layers):
            h = F.rms_norm(x, (hidden,), layer.input_norm, eps)
            qkv = layer.qkv.decode(h)
            qk = qkv[0, :nqk].view(nh + nkv, hd)
            qk = qk * cos + torch.roll(qk, half, -1) * sin
            self.k[li, :, pos] = qk[nh:]
            self.v[li, :, pos] = qkv[0, nqk:].view(nkv, hd)
            attn = F.scaled_dot_product_attention(
                qk[:nh].view(1, nh, 1, hd), self.k[li, :, :t].unsqueeze(0), self.v[li, :, :t].unsqueeze(0),
                enable_gqa=True)
            x = x + layer.o.decode(attn.view(1, nh * hd))
            h = F.rms_norm(x, (hidden,), layer.post_norm, eps)
            gu = layer.gate_up.decode(h)
            inter = gu.shape[-1] // 2
            x = x + layer.down.decode(F.silu(gu[:, :inter]) * gu[:, inter:])
        return x

    def _layers_many(self, x: torch.Tensor, start: int, ws: WeightSet) -> torch.Tensor:
        """The decoder layers for s > 1 tokens at positions start.. (x: (s, hidden)), causal over the cache."""
        nh, nkv, hd, hidden, eps = self.n_heads, self.n_kv, self.head_dim, self.hidden, self.eps
        s = x.shape[0]
        end = start + s
        nqk = (nh + nkv) * hd
        half = hd // 2
        cos, sin = self.cos[start:end, None], self.sin[start:end, None]
        mask = None
        if start:
            mask = torch.arange(end)[None, :] <= torch.arange(start, end)[:, None]  # (s, end)
        for li, layer in enumerate(ws.layers):
            h = F.rms_norm(x, (hidden,), layer.input_norm, eps)
            qkv = layer.qkv(h)
            qk = qkv[:, :nqk].view(s, nh + nkv, hd)
            qk = qk * cos + torch.roll(qk, half, -1) * sin
            self.k[li, :, start:end] = qk[:, nh:].transpose(0, 1)
            self.v[li, :, start:end] = qkv[:, nqk:].view(s, nkv, hd).transpose(0, 1)
            q = qk[:, :nh].transpose(0, 1).unsqueeze(0)
            attn = F.scaled_dot_product_attention(
                q, self.k[li, :, :end].unsqueeze(0), self.v[li, :, :end].unsqueeze(0),
                attn_mask=mask, is_causal=mask is None, enable_gqa=True)
            x = x + layer.o(attn[0].transpose(0, 1).reshape(s, nh * hd))
            h = F.rms_norm(x, (hidden,), layer.post_norm, eps)
            gu = layer.gate_up(h)
            inter = gu.shape[-1] // 2
            x = x + layer.down(F.silu(gu[:, :inter]) * gu[:, inter:])
        return x


# ---- LoRA ------------------------------------------------------------------------------------------------------


def peft_lora_deltas(peft_model: torch.nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The weight delta peft would merge into each LoRA-wrapped projection (`get_delta_weight`: scaling,
    rsLoRA, fan_in_fan_out as peft defines them), keyed by module name."""
    from peft.tuners.lora import LoraLayer

    deltas = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and adapter_name in getattr(module, "lora_A", {}):
            if getattr(module, "use_dora", {}).get(adapter_name, False):
                raise ValueError(f"{name}: DoRA adapters are not supported")
            deltas[name] = module.get_delta_weight(adapter_name).detach().float()
    return deltas


def adapter_deltas(model: torch.nn.Module, adapter_dir: str) -> dict[str, torch.Tensor]:
    """Deltas of a peft LoRA adapter folder on `model`; the model's modules are restored afterwards."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, adapter_dir)
    try:
        return peft_lora_deltas(peft_model)
    finally:
        peft_model.unload()


