"""CodeFormer (Zhou et al. 2022): a VQGAN whose 16x16 code indices a transformer predicts
from a degraded face, decoded by the VQGAN generator, with the encoder's features fused
back in ("controllable feature transformation") in proportion to the fidelity weight ``w``
(0: the codebook's face, 1: closer to the input).

Written from the paper and the published architecture; module names follow sczhou's
``codeformer_arch.py``/``vqgan_arch.py``, so the official ``codeformer.pth`` (``params_ema``)
loads strictly. The shape (base width, channel multipliers, codebook, transformer width,
depth and the fused resolutions) is read from the state dict, so the tiny test network in
the same key layout loads through the same path. The latent grid is 16x16, as upstream.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CodeFormer", "codeformer_from_state_dict", "is_codeformer"]

_GRID = 16  # the latent grid side: position_emb holds 16*16 tokens


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, ch, eps=1e-6)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.conv_out = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        skip: torch.Tensor = x if self.conv_out is None else self.conv_out(x)
        return h + skip


class _AttnBlock(nn.Module):
    """Single-head self-attention over the pixels of a feature map."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = _norm(ch)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(ch, ch, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).flatten(2).transpose(1, 2) for m in (self.q, self.k, self.v))  # [B, HW, C]
        out = F.scaled_dot_product_attention(q, k, v)
        proj: torch.Tensor = self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))
        return x + proj


class _Downsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # type: ignore[no-any-return]


class _Upsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # type: ignore[no-any-return]


class _Blocks(nn.Module):
    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


def _encoder(nf: int, mult: tuple[int, ...], emb_dim: int) -> tuple[_Blocks, dict[int, int]]:
    """The VQGAN encoder (two res blocks per level, attention at 16x16) and, per resolution
    above 16, the index of the block whose output CodeFormer fuses (the level's last res block)."""
    size = _GRID * 2 ** (len(mult) - 1)
    blocks: list[nn.Module] = [nn.Conv2d(3, nf, 3, 1, 1)]
    taps: dict[int, int] = {}
    ch = nf
    for i, m in enumerate(mult):
        for _ in range(2):
            blocks.append(_ResBlock(ch, nf * m))
            ch = nf * m
            if size == _GRID:
                blocks.append(_AttnBlock(ch))
        if i != len(mult) - 1:
            taps[size] = len(blocks) - 1
            blocks.append(_Downsample(ch))
            size //= 2
    blocks += [_ResBlock(ch, ch), _AttnBlock(ch), _ResBlock(ch, ch), _norm(ch), nn.Conv2d(ch, emb_dim, 3, 1, 1)]
    return _Blocks(blocks), taps


def _generator(nf: int, mult: tuple[int, ...], emb_dim: int) -> tuple[_Blocks, dict[int, int]]:
    """The VQGAN decoder and, per resolution above 16, the index of the block after which
    CodeFormer fuses (the level's first res block)."""
    ch, size = nf * mult[-1], _GRID
    blocks: list[nn.Module] = [nn.Conv2d(emb_dim, ch, 3, 1, 1), _ResBlock(ch, ch), _AttnBlock(ch), _ResBlock(ch, ch)]
    taps: dict[int, int] = {}
    for i in reversed(range(len(mult))):
        for j in range(2):
            blocks.append(_ResBlock(ch, nf * mult[i]))
            ch = nf * mult[i]
            if j == 0 and size > _GRID:
                taps[size] = len(blocks) - 1
            if size == _GRID:
                blocks.append(_AttnBlock(ch))
        if i != 0:
            blocks.append(_Upsample(ch))
            size *= 2
    blocks += [_norm(ch), nn.Conv2d(ch, 3, 3, 1, 1)]
    return _Blocks(blocks), taps


class _Quantize(nn.Module):
    def __init__(self, codebook_size: int, emb_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, emb_dim)


class _TransformerLayer(nn.Module):
    """Pre-norm self-attention + GELU MLP; queries and keys get the position embedding."""

    def __init__(self, dim: int, heads: int, dim_mlp: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.linear1, self.linear2 = nn.Linear(dim, dim_mlp), nn.Linear(dim_mlp, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:  # x: [tokens, B, dim]
        h = self.norm1(x)
        x = x + self.self_attn(h + pos, h + pos, h, need_weights=False)[0]
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))  # type: ignore[no-any-return]


class _Fuse(nn.Module):
    """Controllable feature transformation: an affine (scale, shift) of the decoder's
    features predicted from encoder + decoder features, added with weight ``w``."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.encode_enc = _ResBlock(2 * ch, ch)
        self.scale, self.shift = (nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2),
                                                nn.Conv2d(ch, ch, 3, 1, 1)) for _ in range(2))

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, w: float) -> torch.Tensor:
        e = self.encode_enc(torch.cat([enc, dec], dim=1))
        scale: torch.Tensor = self.scale(e)
        shift: torch.Tensor = self.shift(e)
        return dec + w * (dec * scale + shift)


def _adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``content`` renormalised to ``style``'s per-channel mean and std (upstream's
    ``adain=True``, which its inference script and A1111 use: it keeps the input's colours)."""
    def stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = t.flatten(2)
        return flat.mean(2)[..., None, None], (flat.var(2) + eps).sqrt()[..., None, None]
    cm, cs = stats(content)
    sm, ss = stats(style)
    return (content - cm) / cs * ss + sm


class CodeFormer(nn.Module):
    """``nf`` x ``mult[i]``: VQGAN channels per level (512 px: 64 x (1, 2, 2, 4, 4, 8));
    ``connect``: the resolutions whose encoder features are fused into the decoder."""

    def __init__(self, nf: int = 64, mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8), emb_dim: int = 256,
                 codebook_size: int = 1024, dim: int = 512, heads: int = 8, layers: int = 9,
                 connect: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.size = _GRID * 2 ** (len(mult) - 1)
        self.emb_dim = emb_dim
        self.encoder, self._enc_taps = _encoder(nf, mult, emb_dim)
        self.quantize = _Quantize(codebook_size, emb_dim)
        self.generator, self._gen_taps = _generator(nf, mult, emb_dim)
        self.position_emb = nn.Parameter(torch.zeros(_GRID * _GRID, dim))
        self.feat_emb = nn.Linear(emb_dim, dim)
        self.ft_layers = nn.Sequential(*(_TransformerLayer(dim, heads, dim * 2) for _ in range(layers)))
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, codebook_size, bias=False))
        widths = {self.size >> i: nf * m for i, m in enumerate(mult)}
        if not set(connect) <= set(self._gen_taps):
            raise ValueError(f"fused resolutions {sorted(connect)} must lie within {sorted(self._gen_taps)}")
        self.fuse_convs_dict = nn.ModuleDict({str(r): _Fuse(widths[r]) for r in connect})

    def forward(self, x: torch.Tensor, w: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, 3, size, size] RGB in [-1, 1] -> restored, same range; ``w``: fidelity weight.
        Deterministic (``generator`` is accepted for the restorers' common call, unused)."""
        feats: dict[int, torch.Tensor] = {}
        enc_at = {i: r for r, i in self._enc_taps.items()}
        for i, block in enumerate(self.encoder.blocks):
            x = block(x)
            if enc_at.get(i) is not None:
                feats[enc_at[i]] = x
        lq = x  # [B, emb_dim, 16, 16]
        tokens = self.feat_emb(lq.flatten(2).permute(2, 0, 1))  # [256, B, dim]
        pos = self.position_emb[:, None]
        for layer in self.ft_layers:
            tokens = layer(tokens, pos)
        idx = self.idx_pred_layer(tokens).argmax(dim=2).transpose(0, 1)  # [B, 256]: the predicted codes
        quant = self.quantize.embedding(idx).view(x.shape[0], _GRID, _GRID, self.emb_dim).permute(0, 3, 1, 2)
        x = _adain(quant, lq)
        gen_at = {i: r for r, i in self._gen_taps.items()}
        for i, block in enumerate(self.generator.blocks):
            x = block(x)
            r = gen_at.get(i)
            if r is not None and w > 0 and str(r) in self.fuse_convs_dict:
                x = self.fuse_convs_dict[str(r)](feats[r], x, w)
        return x


def is_codeformer(sd: dict[str, torch.Tensor]) -> bool:
    return "position_emb" in sd and "quantize.embedding.weight" in sd and "idx_pred_layer.1.weight" in sd


def codeformer_from_state_dict(sd: dict[str, torch.Tensor]) -> CodeFormer:
    """The network whose shape ``sd`` describes, with ``sd`` loaded strictly (a missing or
    extra key, or a shape that does not fit, raises)."""
    nf = sd["encoder.blocks.0.weight"].shape[0]
    # Encoder: conv, then per level two res blocks (+ attention at 16) and a downsample.
    res = sorted(int(m[1]) for k in sd if (m := re.fullmatch(r"encoder\.blocks\.(\d+)\.conv1\.weight", k)))
    downs = sorted(int(m[1]) for k in sd
                   if (m := re.fullmatch(r"encoder\.blocks\.(\d+)\.conv\.weight", k)))
    levels = len(downs) + 1
    mult = []
    for lvl in range(levels):
        upto = downs[lvl] if lvl < len(downs) else 10 ** 9
        last = max(i for i in res if i < upto)
        mult.append(sd[f"encoder.blocks.{last}.conv2.weight"].shape[0] // nf)
    codebook_size, emb_dim = sd["quantize.embedding.weight"].shape
    dim = sd["position_emb"].shape[1]
    layers = sum(1 for k in sd if re.fullmatch(r"ft_layers\.\d+\.linear1\.weight", k))
    heads = max(1, dim // 64)  # not in the file: upstream's 8 heads of 64 at width 512
    connect = tuple(sorted({int(k.split(".")[1]) for k in sd if k.startswith("fuse_convs_dict.")}))
    with torch.device("meta"):  # no random init of 94M parameters only to overwrite them
        net = CodeFormer(nf, tuple(mult), emb_dim, codebook_size, dim, heads, layers, connect)
    net.load_state_dict(sd, strict=True, assign=True)
    return net
