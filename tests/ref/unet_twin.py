#!/usr/bin/python3
"""PyTorch twin of diffusers' UNet2DModel: the oracle for diffuse's C U-Net (forward and every gradient).

Usage:
  /usr/bin/python3 tests/ref/unet_twin.py CONFIG.json WEIGHTS.safetensors INPUTS.safetensors OUT.safetensors
  /usr/bin/python3 tests/ref/unet_twin.py CONFIG.json --print-params [--old-attn-names]

CONFIG.json   a diffusers UNet2DModel config.json; missing keys take UNet2DModel.__init__'s defaults.
WEIGHTS       every parameter by its diffusers state-dict name (float32; F16/BF16/F64 are widened/narrowed to
              float32). Attention weights may use the current names (to_q, to_k, to_v, to_out.0) or the old
              ones of google/ddpm-* checkpoints (query, key, value, proj_attn); group_norm is the same in both.
              A missing, extra or mis-shaped tensor is an error that names it.
INPUTS        "sample" (B,C,H,W) f32, "timestep" (B,) f32 (may be fractional; (1,) or () broadcasts),
              "grad_out" (B,C_out,H,W) f32.
OUT           "output" = model(sample, timestep) and "grad.<name>" = d(sum(output*grad_out))/d(param) for every
              parameter, <name> spelled exactly as in WEIGHTS (old attention names stay old).
              With --grad-input, also "grad_input.sample".

--print-params prints "params N", "tensors K", then one line per parameter "name d0 d1 ..." in diffusers'
state_dict order (with --old-attn-names, attention projections use query/key/value/proj_attn).

Everything runs in float32 on the CPU with dropout disabled (eval semantics); the model is written in plain
torch after diffusers' unets/unet_2d.py, unets/unet_2d_blocks.py, resnet.py, downsampling.py, upsampling.py,
attention_processor.py (Attention + AttnProcessor) and embeddings.py, with the same module names, so that
state_dict() names equal diffusers'.
"""
import json
import math
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(2)

# ----------------------------------------------------------------------------------------------------------
# Minimal safetensors reader/writer (private; F32 written, F32/F64/F16/BF16 read as float32).
# ----------------------------------------------------------------------------------------------------------
_ST_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def st_load(path):
    """Read a safetensors file into {name: np.ndarray}; float types come back as float32."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError(f"{path}: header length {n} runs past the end of the file")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt, shape, (a, b) = info["dtype"], info["shape"], info["data_offsets"]
        raw = data[a:b]
        if dt == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        elif dt in _ST_DTYPES:
            arr = np.frombuffer(raw, dtype=np.dtype(_ST_DTYPES[dt]).newbyteorder("<"))
        else:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
        count = int(np.prod(shape)) if shape else 1
        if arr.size != count:
            raise ValueError(f"{path}: tensor {name}: {arr.size} elements for shape {shape}")
        arr = arr.reshape(shape)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        out[name] = np.array(arr)  # own, writable copy
    return out


def st_save(path, tensors, metadata=None):
    """Write {name: array} as F32 safetensors (names sorted, data 8-byte aligned like the reference writer)."""
    header, chunks, off = {}, [], 0
    for name in sorted(tensors):
        arr = np.array(tensors[name], dtype="<f4", order="C", copy=True)
        raw = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)
    import os
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------
# UNet2DModel.__init__ defaults (diffusers main, unets/unet_2d.py).
DEFAULTS = {
    "sample_size": None,
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "freq_shift": 0,
    "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896],
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "downsample_padding": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "dropout": 0.0,
    "act_fn": "silu",
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "attn_norm_num_groups": None,
    "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
    "num_train_timesteps": None,
}


def load_config(path_or_dict):
    if isinstance(path_or_dict, dict):
        raw = dict(path_or_dict)
    else:
        with open(path_or_dict) as f:
            raw = json.load(f)
    cls = raw.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise ValueError(f"config: _class_name is {cls!r}, expected 'UNet2DModel'")
    cfg = dict(DEFAULTS)
    for k, v in raw.items():
        if k.startswith("_"):
            continue
        if k not in DEFAULTS:
            print(f"unet_twin: warning: config key {k!r} is not a UNet2DModel argument; ignored", file=sys.stderr)
            continue
        cfg[k] = v
    # what this twin does not implement must be at its default
    unsupported = {"time_embedding_type": "positional", "mid_block_type": "UNetMidBlock2D",
                   "downsample_type": "conv", "upsample_type": "conv", "class_embed_type": None,
                   "num_class_embeds": None}
    for k, want in unsupported.items():
        if cfg[k] != want:
            raise ValueError(f"config: {k} = {cfg[k]!r} is not supported (only {want!r})")
    if cfg["resnet_time_scale_shift"] not in ("default", "scale_shift"):
        raise ValueError(f"config: resnet_time_scale_shift = {cfg['resnet_time_scale_shift']!r} not supported")
    if cfg["act_fn"] not in _ACTS:
        raise ValueError(f"config: act_fn = {cfg['act_fn']!r} not supported")
    if not isinstance(cfg["norm_num_groups"], int):
        raise ValueError("config: norm_num_groups must be an integer")
    n = len(cfg["block_out_channels"])
    if len(cfg["down_block_types"]) != n or len(cfg["up_block_types"]) != n:
        raise ValueError("config: block_out_channels, down_block_types and up_block_types differ in length")
    for t in cfg["down_block_types"]:
        if t not in ("DownBlock2D", "AttnDownBlock2D"):
            raise ValueError(f"config: down block type {t!r} not supported")
    for t in cfg["up_block_types"]:
        if t not in ("UpBlock2D", "AttnUpBlock2D"):
            raise ValueError(f"config: up block type {t!r} not supported")
    return cfg


_ACTS = {"silu": nn.SiLU, "swish": nn.SiLU, "mish": nn.Mish, "gelu": nn.GELU, "relu": nn.ReLU}


# ----------------------------------------------------------------------------------------------------------
# Model (module attribute names = diffusers' state-dict names)
# ----------------------------------------------------------------------------------------------------------
def timestep_embedding(timesteps, dim, flip_sin_to_cos, shift, max_period=10000):
    """diffusers.models.embeddings.get_timestep_embedding (scale 1), float32 throughout."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(0, half, dtype=torch.float32)
    exponent = exponent / (half - shift)
    freqs = torch.exp(exponent)
    args = timesteps[:, None].float() * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, dim):
        super().__init__()
        self.linear_1 = nn.Linear(cin, dim)
        self.act = nn.SiLU()  # UNet2DModel never passes act_fn here: always SiLU
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(self.act(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, groups, eps, act, dropout, scale_shift, out_scale):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=1, padding=1)
        self.time_emb_proj = nn.Linear(temb, 2 * cout if scale_shift else cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps, affine=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)
        self.nonlinearity = _ACTS[act]()
        self.conv_shortcut = nn.Conv2d(cin, cout, 1, stride=1, padding=0) if cin != cout else None
        self.scale_shift = scale_shift
        self.output_scale_factor = out_scale

    def forward(self, x, temb):
        h = self.conv1(self.nonlinearity(self.norm1(x)))
        t = self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]
        if self.scale_shift:
            scale, shift = torch.chunk(t, 2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + t)
        h = self.conv2(self.dropout(self.nonlinearity(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / self.output_scale_factor


class Attention(nn.Module):
    """diffusers Attention(..., residual_connection=True, bias=True, _from_deprecated_attn_block=True) with
    AttnProcessor: spatial self-attention over H*W tokens, heads = C // head_dim, scale = head_dim ** -0.5."""

    def __init__(self, channels, head_dim, groups, eps, out_scale):
        super().__init__()
        heads = channels // head_dim
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.scale = head_dim ** -0.5
        self.rescale_output_factor = out_scale
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps, affine=True) if groups is not None else None
        self.to_q = nn.Linear(channels, inner, bias=True)
        self.to_k = nn.Linear(channels, inner, bias=True)
        self.to_v = nn.Linear(channels, inner, bias=True)
        self.to_out = nn.ModuleList([nn.Linear(inner, channels, bias=True), nn.Dropout(0.0)])

    def forward(self, x):
        B, C, H, W = x.shape
        residual = x
        h = x.view(B, C, H * W)
        if self.group_norm is not None:
            h = self.group_norm(h)
        h = h.transpose(1, 2)  # (B, L, C)
        L = H * W

        def split(t):  # (B, L, heads*d) -> (B*heads, L, d); channel = head*d + j
            return t.reshape(B, L, self.heads, self.head_dim).permute(0, 2, 1, 3).reshape(B * self.heads, L,
                                                                                        self.head_dim)

        q, k, v = split(self.to_q(h)), split(self.to_k(h)), split(self.to_v(h))
        scores = torch.bmm(q, k.transpose(1, 2)) * self.scale
        probs = scores.softmax(dim=-1)
        o = torch.bmm(probs, v)
        o = o.reshape(B, self.heads, L, self.head_dim).permute(0, 2, 1, 3).reshape(B, L,
                                                                                 self.heads * self.head_dim)
        o = self.to_out[1](self.to_out[0](o))
        o = o.transpose(1, 2).reshape(B, C, H, W)
        return (o + residual) / self.rescale_output_factor


class Downsample2D(nn.Module):
    def __init__(self, channels, padding):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x):
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1), mode="constant", value=0)  # right and bottom only
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """DownBlock2D / AttnDownBlock2D (registration order as diffusers: attentions, resnets, downsamplers)."""

    def __init__(self, attn, n_layers, cin, cout, temb, add_down, c):
        super().__init__()
        groups, eps, act, drop, ss = c["norm_num_groups"], c["norm_eps"], c["act_fn"], c["dropout"], c["ss"]
        if attn:
            hd = c["attention_head_dim"] if c["attention_head_dim"] is not None else cout
            self.attentions = nn.ModuleList([Attention(cout, hd, groups, eps, 1.0) for _ in range(n_layers)])
        else:
            self.attentions = None
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, temb, groups, eps, act, drop,
                                                    ss, 1.0) for i in range(n_layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(cout, c["downsample_padding"])]) if add_down else None

    def forward(self, x, temb):
        outs = []
        for i, r in enumerate(self.resnets):
            x = r(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
            outs.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            outs.append(x)
        return x, outs


class UpBlock(nn.Module):
    """UpBlock2D / AttnUpBlock2D: resnet i takes cat([h, skip]) with
    in = (prev_output_channel if i == 0 else out) + (in_channels if i == last else out)."""

    def __init__(self, attn, n_layers, cin, cprev, cout, temb, add_up, c):
        super().__init__()
        groups, eps, act, drop, ss = c["norm_num_groups"], c["norm_eps"], c["act_fn"], c["dropout"], c["ss"]
        if attn:
            hd = c["attention_head_dim"] if c["attention_head_dim"] is not None else cout
            self.attentions = nn.ModuleList([Attention(cout, hd, groups, eps, 1.0) for _ in range(n_layers)])
        else:
            self.attentions = None
        rs = []
        for i in range(n_layers):
            skip = cin if i == n_layers - 1 else cout
            rin = cprev if i == 0 else cout
            rs.append(ResnetBlock2D(rin + skip, cout, temb, groups, eps, act, drop, ss, 1.0))
        self.resnets = nn.ModuleList(rs)
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if add_up else None

    def forward(self, x, skips, temb):
        for i, r in enumerate(self.resnets):
            x = torch.cat([x, skips.pop()], dim=1)
            x = r(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class UNetMidBlock2D(nn.Module):
    def __init__(self, ch, temb, c):
        super().__init__()
        groups, eps, act, drop, ss = c["norm_num_groups"], c["norm_eps"], c["act_fn"], c["dropout"], c["ss"]
        osf = c["mid_block_scale_factor"]
        attn_groups = c["attn_norm_num_groups"]
        if attn_groups is None:
            attn_groups = groups if c["resnet_time_scale_shift"] == "default" else None
        hd = c["attention_head_dim"] if c["attention_head_dim"] is not None else ch
        self.add_attention = c["add_attention"]
        if self.add_attention:
            self.attentions = nn.ModuleList([Attention(ch, hd, attn_groups, eps, osf)])
        else:
            self.attentions = None
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, temb, groups, eps, act, drop, ss, osf)
                                      for _ in range(2)])

    def forward(self, x, temb):
        x = self.resnets[0](x, temb)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x, temb)


class UNet2DModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = dict(cfg)
        c["ss"] = c["resnet_time_scale_shift"] == "scale_shift"
        self.cfg = c
        boc = list(c["block_out_channels"])
        n = len(boc)
        temb = c["time_embedding_dim"] or boc[0] * 4
        self.conv_in = nn.Conv2d(c["in_channels"], boc[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(boc[0], temb)

        self.down_blocks = nn.ModuleList()
        cout = boc[0]
        for i, t in enumerate(c["down_block_types"]):
            cin, cout = cout, boc[i]
            self.down_blocks.append(DownBlock(t == "AttnDownBlock2D", c["layers_per_block"], cin, cout, temb,
                                              i != n - 1, c))
        self.mid_block = UNetMidBlock2D(boc[-1], temb, c)

        self.up_blocks = nn.ModuleList()
        rev = boc[::-1]
        cout = rev[0]
        for i, t in enumerate(c["up_block_types"]):
            cprev, cout = cout, rev[i]
            cin = rev[min(i + 1, n - 1)]
            self.up_blocks.append(UpBlock(t == "AttnUpBlock2D", c["layers_per_block"] + 1, cin, cprev, cout,
                                          temb, i != n - 1, c))
        self.conv_norm_out = nn.GroupNorm(c["norm_num_groups"], boc[0], eps=c["norm_eps"])
        self.conv_act = nn.SiLU()  # always SiLU, whatever act_fn
        self.conv_out = nn.Conv2d(boc[0], c["out_channels"], 3, padding=1)

    def forward(self, sample, timestep):
        c = self.cfg
        if c["center_input_sample"]:
            sample = 2 * sample - 1.0
        t = timestep
        if t.dim() == 0:
            t = t[None]
        t = t * torch.ones(sample.shape[0], dtype=t.dtype)
        emb = timestep_embedding(t, c["block_out_channels"][0], c["flip_sin_to_cos"], c["freq_shift"])
        emb = self.time_embedding(emb.to(sample.dtype))

        x = self.conv_in(sample)
        skips = [x]
        for blk in self.down_blocks:
            x, outs = blk(x, emb)
            skips.extend(outs)
        x = self.mid_block(x, emb)
        for blk in self.up_blocks:
            x = blk(x, skips, emb)  # pops len(blk.resnets) skips from the end
        assert not skips
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        return x


# ----------------------------------------------------------------------------------------------------------
# Names: current <-> old (google/ddpm-*) attention naming
# ----------------------------------------------------------------------------------------------------------
_OLD2NEW = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_NEW2OLD = {v: k for k, v in _OLD2NEW.items()}


def _attention_prefixes(model):
    return {name for name, m in model.named_modules() if isinstance(m, Attention)}


def old_name(name, attn_prefixes):
    """Current parameter name -> the old name (only attention projections change)."""
    for p in attn_prefixes:
        if name.startswith(p + "."):
            rest = name[len(p) + 1:]
            for new, old in _NEW2OLD.items():
                if rest.startswith(new + "."):
                    return f"{p}.{old}.{rest[len(new) + 1:]}"
    return name


def canonical_name(name, attn_prefixes):
    """A WEIGHTS name (either naming) -> the model's parameter name."""
    for p in attn_prefixes:
        if name.startswith(p + "."):
            rest = name[len(p) + 1:]
            for old, new in _OLD2NEW.items():
                if rest.startswith(old + "."):
                    return f"{p}.{new}.{rest[len(old) + 1:]}"
    return name


def load_weights(model, tensors):
    """Copy {name: array} into the model. Returns {param_name: file_name}. Errors name the tensor."""
    params = dict(model.named_parameters())
    prefixes = _attention_prefixes(model)
    file_name_of, seen, errors = {}, set(), []
    for fname, arr in tensors.items():
        pname = canonical_name(fname, prefixes)
        if pname not in params:
            errors.append(f"unexpected tensor {fname!r} (not a parameter of this model)")
            continue
        if pname in seen:
            errors.append(f"tensor {fname!r} duplicates another name for {pname!r}")
            continue
        seen.add(pname)
        want = tuple(params[pname].shape)
        if tuple(arr.shape) != want:
            errors.append(f"tensor {fname!r} has shape {list(arr.shape)}, expected {list(want)}")
            continue
        file_name_of[pname] = fname
    for pname in params:
        if pname not in seen:
            errors.append(f"missing tensor {pname!r}")
    if errors:
        raise ValueError("weights: " + "; ".join(errors))
    with torch.no_grad():
        for pname, fname in file_name_of.items():
            params[pname].copy_(torch.from_numpy(np.ascontiguousarray(tensors[fname], dtype=np.float32)))
    return file_name_of


def param_table(model, old_names=False):
    prefixes = _attention_prefixes(model)
    out = []
    for name, p in model.named_parameters():
        out.append((old_name(name, prefixes) if old_names else name, tuple(p.shape)))
    return out


def build(config):
    cfg = load_config(config)
    model = UNet2DModel(cfg).float()
    model.eval()  # dropout off; nothing else depends on the mode
    return model


def run_case(model, inputs, file_name_of, grad_input=False):
    """Forward + backward of sum(output * grad_out). Returns {name: np.ndarray} for OUT."""
    for k in ("sample", "timestep", "grad_out"):
        if k not in inputs:
            raise ValueError(f"inputs: missing tensor {k!r}")
    sample = torch.from_numpy(inputs["sample"].astype(np.float32))
    timestep = torch.from_numpy(np.asarray(inputs["timestep"], dtype=np.float32))
    grad_out = torch.from_numpy(inputs["grad_out"].astype(np.float32))
    if sample.dim() != 4:
        raise ValueError(f"inputs: sample has shape {list(sample.shape)}, expected (B, C, H, W)")
    if timestep.dim() > 1 or (timestep.dim() == 1 and timestep.shape[0] not in (1, sample.shape[0])):
        raise ValueError(f"inputs: timestep has shape {list(timestep.shape)}, expected ({sample.shape[0]},)")
    sample.requires_grad_(grad_input)
    model.zero_grad(set_to_none=True)
    out = model(sample, timestep)
    if tuple(grad_out.shape) != tuple(out.shape):
        raise ValueError(f"inputs: grad_out has shape {list(grad_out.shape)}, output is {list(out.shape)}")
    (out * grad_out).sum().backward()
    res = {"output": out.detach().numpy()}
    for pname, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        res["grad." + file_name_of[pname]] = g.detach().numpy()
    if grad_input:
        res["grad_input.sample"] = sample.grad.detach().numpy()
    return res


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    flags = {a for a in argv if a.startswith("--")}
    bad = flags - {"--print-params", "--old-attn-names", "--grad-input"}
    if bad:
        sys.exit(f"unet_twin: unknown flag {sorted(bad)[0]}\n{__doc__}")
    if "--print-params" in flags:
        if len(args) != 1:
            sys.exit(__doc__)
        model = build(args[0])
        table = param_table(model, "--old-attn-names" in flags)
        print(f"params {sum(int(np.prod(s)) for _, s in table)}")
        print(f"tensors {len(table)}")
        for name, shape in table:
            print(name, *shape)
        return
    if len(args) != 4:
        sys.exit(__doc__)
    cfg_path, w_path, in_path, out_path = args
    model = build(cfg_path)
    file_name_of = load_weights(model, st_load(w_path))
    res = run_case(model, st_load(in_path), file_name_of, "--grad-input" in flags)
    st_save(out_path, res, {"producer": "tests/ref/unet_twin.py", "torch": torch.__version__})


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except BrokenPipeError:  # e.g. --print-params | head
        sys.stderr.close()
    except (ValueError, OSError, KeyError) as e:
        sys.exit(f"unet_twin: error: {e}")
