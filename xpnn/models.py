"""Ready-made networks built from ``xpnn.nn`` layers (used by ``xpnn train`` and the examples): ``mlp`` (a
multi-layer perceptron of given widths), ``digits_cnn`` for 1x8x8 images, ``lenet5`` for 1x28x28 images, ``cnn_for``
picks one by image size, ``GPT`` (a small decoder-only transformer, with ``NextTokenLoss`` and the sorting task's
``sort_digits`` / ``sorted_exactly``); ``load_trained`` rebuilds the model of an ``xpnn train --save`` checkpoint."""
from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

import numpy as np

from . import data, io, nn
from . import functional as F
from .backend import get_backend, namespace_of
from .errors import CheckpointError, ShapeError
from .random import generator

__all__ = ["GPT", "NextTokenLoss", "sort_digits", "sorted_exactly", "gpt_from_config", "mlp", "digits_cnn", "lenet5", "cnn_for", "square_image_shape", "load_trained", "model_backend", "ACTIVATIONS"]

# activation name (as ``xpnn train --activation`` takes it) -> class name in xpnn.nn
ACTIVATIONS = {
    "relu": "ReLU", "leaky_relu": "LeakyReLU", "prelu": "PReLU", "elu": "ELU", "selu": "SELU",
    "tanh": "Tanh", "sigmoid": "Sigmoid",
}


def mlp(sizes: Sequence[int], activation: str = "relu", *, backend: Any = None, dtype: Any = None,
        seed: Any = 0, dropout: float = 0.0) -> nn.Sequential:
    """An MLP ``Linear -> activation [-> Dropout] -> ... -> Linear`` for layer widths ``sizes`` (input first), e.g.
    ``mlp([64, 128, 10])``: input (N, 64) -> logits (N, 10). ``activation``: a key of ``ACTIVATIONS``; ``dropout``
    > 0 adds a Dropout after each hidden activation. Raises ValueError for an unknown activation."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: choose from {', '.join(ACTIVATIONS)}")
    rng = generator(seed)
    act = getattr(nn, ACTIVATIONS[activation])
    layers: list[Any] = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(d_in, d_out, backend=backend, dtype=dtype, seed=rng))
        if i < len(sizes) - 2:
            layers.append(act(backend=backend, dtype=dtype) if activation == "prelu" else act())
            if dropout > 0:
                layers.append(nn.Dropout(dropout, seed=int(rng.integers(2**31))))
    return nn.Sequential(*layers)


def digits_cnn(n_classes: int = 10, in_channels: int = 1, *, channels: Sequence[int] = (16, 32), hidden: int = 64,
               backend: Any = None, dtype: Any = None, seed: Any = 0) -> nn.Sequential:
    """For (N, in_channels, 8, 8) images: two 3x3 same-padded convolutions with ReLU, 2x2 max pool, a hidden
    Linear layer: ``conv(c1) -> relu -> conv(c2) -> relu -> maxpool2 -> flatten -> linear(hidden) -> relu ->
    linear(n_classes)``. Works for any image side divisible by 2 (the first Linear takes c2 * (H/2) * (W/2))."""
    return _small_cnn(n_classes, in_channels, 8, 8, channels, hidden, backend, dtype, seed)


def _small_cnn(n_classes: int, in_channels: int, h: int, w: int, channels: Sequence[int], hidden: int,
               backend: Any, dtype: Any, seed: Any) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    c1, c2 = channels
    kw = dict(backend=backend, dtype=dtype)
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, 3, padding=1, seed=rng, **kw), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1, seed=rng, **kw), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(c2 * (h // 2) * (w // 2), hidden, seed=rng, **kw), nn.ReLU(),
        nn.Linear(hidden, n_classes, seed=rng, **kw),
    )


def lenet5(n_classes: int = 10, in_channels: int = 1, *, backend: Any = None, dtype: Any = None,
           seed: Any = 0) -> nn.Sequential:
    """LeNet-5 with ReLU and max pooling for (N, in_channels, 28, 28) images: conv5x5(6, padding 2) -> relu ->
    maxpool2 -> conv5x5(16) -> relu -> maxpool2 -> flatten (400) -> linear(120) -> relu -> linear(84) -> relu ->
    linear(n_classes)."""
    rng = np.random.default_rng(seed)
    kw = dict(backend=backend, dtype=dtype)
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2, seed=rng, **kw), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, seed=rng, **kw), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120, seed=rng, **kw), nn.ReLU(),
        nn.Linear(120, 84, seed=rng, **kw), nn.ReLU(),
        nn.Linear(84, n_classes, seed=rng, **kw),
    )


def cnn_for(image_shape: Sequence[int], n_classes: int, *, backend: Any = None, dtype: Any = None,
            seed: Any = 0) -> nn.Sequential:
    """``lenet5`` for (C, 28, 28) images, else the small CNN of ``digits_cnn`` sized for (C, H, W) with even
    H and W. Raises ValueError for other shapes."""
    if len(image_shape) != 3:
        raise ValueError(f"cnn_for: expected an image shape (C, H, W), got {tuple(image_shape)}")
    c, h, w = (int(s) for s in image_shape)
    if (h, w) == (28, 28):
        return lenet5(n_classes, c, backend=backend, dtype=dtype, seed=seed)
    if h < 2 or w < 2 or h % 2 or w % 2:
        raise ValueError(f"cnn_for: images must have even height and width >= 2, got {tuple(image_shape)}")
    return _small_cnn(n_classes, c, h, w, (16, 32), 64, backend, dtype, seed)


def square_image_shape(n_features: int) -> tuple[int, int, int]:
    """``(1, side, side)`` for rows of ``n_features = side * side`` pixels (64 -> (1, 8, 8), 784 -> (1, 28, 28)).
    Raises ValueError when ``n_features`` is not a square."""
    side = int(round(n_features ** 0.5))
    if side * side != n_features:
        raise ValueError(f"rows of {n_features} features are not square single-channel images")
    return 1, side, side


def load_trained(path: io.PathLike, backend: Any = None, *, model: Optional[str] = None,
                 activation: Optional[str] = None) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, standardizer, config)`` rebuilt from a checkpoint written by ``xpnn train --save``, or from a
    ``.safetensors`` file (``xpnn export --safetensors``, or a PyTorch model's ``safetensors.torch.save_file`` of the
    same layout: ``model`` ("mlp" or "cnn") and ``activation`` then say what its metadata does not; its standardizer
    is ``None`` when it holds none).

    The model (``mlp`` or ``cnn_for``, as trained) is in eval mode on ``backend`` and takes standardized rows:
    ``model(scaler.transform(X))`` for an MLP, with the rows reshaped to ``(N, 1, side, side)`` images for a CNN.
    ``config`` holds the training settings (``model``, ``sizes``, ``activation``, ``dtype``, ``input_range``, ...).
    A ``--model gpt`` checkpoint gives ``(GPT, None, config)`` (tokens in, no standardizer).
    Raises ``CheckpointNotFoundError`` for a missing file and ``CheckpointError`` when the file is not such a
    checkpoint.
    """
    path = os.fspath(path)
    if path.lower().endswith(".safetensors"):
        return _load_safetensors_model(path, backend, model, activation)
    state = io.load(path)
    gpt = isinstance(state, dict) and isinstance(state.get("config"), dict) and state["config"].get("model") == "gpt"
    missing = [k for k in ("model", "config") + (() if gpt else ("standardizer",))
               if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"xpnn.models.load_trained: {path} is an xpnn checkpoint but not a checkpoint written "
                              f"by `xpnn train --save` (no {', '.join(missing)} entry); load it with xpnn.load(path) "
                              "instead")
    config = state["config"]
    if config.get("model") == "gpt":  # xpnn train --model gpt: no standardizer (tokens in, tokens out)
        try:
            net = gpt_from_config(config, backend)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"xpnn.models.load_trained: {path}: its config cannot rebuild the model "
                                  f"({exc})") from None
        net.load_state_dict(state["model"])
        net.eval()
        return net, None, config
    try:
        sizes = [int(v) for v in config["sizes"]]
        if config.get("model") == "cnn":  # xpnn train --model cnn
            net = cnn_for(square_image_shape(sizes[0]), sizes[-1], backend=backend, dtype=str(config["dtype"]))
        else:
            net = mlp(sizes, str(config["activation"]), backend=backend, dtype=str(config["dtype"]),
                      dropout=float(config.get("dropout", 0.0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"xpnn.models.load_trained: {path}: its config cannot rebuild the model "
                              f"({exc})") from None
    net.load_state_dict(state["model"])
    net.eval()
    scaler = data.Standardizer().load_state_dict(state["standardizer"])
    return net, scaler.to(model_backend(net)), config


def model_backend(model: Any) -> Any:
    """The Backend holding the model's parameters."""
    return get_backend(namespace_of(next(iter(model.parameters())).data))


def _safetensors_config(path: str, state: dict[str, Any], meta: dict[str, str], model: Optional[str],
                        activation: Optional[str]) -> dict[str, Any]:
    """The config that rebuilds the model of a .safetensors file: from the metadata ``xpnn export`` writes, else
    from the weights' shapes (PyTorch's layout of ``mlp``'s MLP, ``Sequential(Linear, act, Linear, ...)``,
    or of ``xpnn.models``' CNNs) with ``model`` ("mlp" or "cnn") and ``activation`` (default relu)."""
    if "xpnn_model" in meta:
        try:
            config = {"model": meta["xpnn_model"], "sizes": [int(v) for v in meta["sizes"].split(",")],
                      "activation": meta.get("activation", "relu"), "dropout": float(meta.get("dropout", 0.0)),
                      "dtype": meta["dtype"]}
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"xpnn.models.load_trained: {path}: "
                                  f"damaged xpnn metadata ({type(exc).__name__}: {exc})") from None
        if model is not None and model != config["model"]:
            raise ValueError(f"--model {model}: {path} holds a {config['model']} model")
        if activation is not None and activation != config["activation"]:
            raise ValueError(f"--activation {activation}: {path} holds a model with {config['activation']}")
        return config
    if model is None:
        raise ValueError(f"xpnn.models.load_trained: {path}: "
                         f"the file has no xpnn metadata; say which model its weights belong "
                         "to with --model mlp or --model cnn (and --activation for an MLP without ReLU)")
    layers = sorted((int(k.split(".")[0]), v) for k, v in state.items()
                    if k.endswith(".weight") and k.split(".")[0].isdigit() and v.ndim >= 2)
    if not layers:
        raise CheckpointError(f"xpnn.models.load_trained: {path}: "
                              f"no Sequential layer weights ('0.weight', ...) in it; it holds "
                              f"{sorted(state)[:6]}")
    dtype = str(layers[0][1].dtype)
    if model == "cnn":
        first = layers[0][1]
        linear = [w for _, w in layers if w.ndim == 2]
        convs = [w for _, w in layers if w.ndim == 4]
        if first.ndim != 4 or not linear or len(convs) != 2:
            raise CheckpointError(f"xpnn.models.load_trained: {path}: its weights are not those of xpnn.models' CNNs "
                                  "(two Conv2d then Linear layers)")
        if first.shape[-1] == 5:  # lenet5: 28x28 images
            side = 28
        else:  # digits_cnn-like: conv3x3 c1, conv3x3 c2, maxpool2, Linear(c2 * (side/2)**2, ...)
            side = 2 * int(round((linear[0].shape[1] / convs[1].shape[0]) ** 0.5))
        sizes = [int(first.shape[1]) * side * side, int(linear[-1].shape[0])]
        return {"model": "cnn", "sizes": sizes, "activation": "relu", "dropout": 0.0, "dtype": dtype}
    if model != "mlp":
        raise ValueError(f"--model {model}: expected mlp or cnn")
    if any(w.ndim != 2 for _, w in layers):
        raise CheckpointError(f"xpnn.models.load_trained: {path}: "
                              f"--model mlp, but it holds weights of other than 2 dimensions "
                              "(a CNN? then --model cnn)")
    idx = [i for i, _ in layers]
    step = idx[1] - idx[0] if len(idx) > 1 else 2
    prelu = any(k.endswith(".weight") and v.ndim == 1 for k, v in state.items())
    return {"model": "mlp", "sizes": [int(layers[0][1].shape[1])] + [int(w.shape[0]) for _, w in layers],
            "activation": activation or ("prelu" if prelu else "relu"), "dropout": 0.5 if step == 3 else 0.0,
            "dtype": dtype}


def _load_safetensors_model(path: str, backend: Any, model: Optional[str],
                            activation: Optional[str]) -> tuple[Any, Any, dict[str, Any]]:
    """``load_trained`` for a .safetensors file (see ``_safetensors_config``)."""
    state, meta = io.load_safetensors(path, with_metadata=True)
    config = _safetensors_config(path, state, meta, model, activation)
    sizes = config["sizes"]
    if config["model"] == "cnn":
        net = cnn_for(square_image_shape(sizes[0]), sizes[-1], backend=backend, dtype=config["dtype"])
    else:
        net = mlp(sizes, config["activation"], backend=backend, dtype=config["dtype"],
                  dropout=config["dropout"])
    net.load_state_dict(state)  # CheckpointError naming missing/unexpected keys or a shape mismatch
    net.eval()
    scaler = None
    if "standardizer" in meta:
        try:
            stats = json.loads(meta["standardizer"])
            scaler = data.Standardizer().load_state_dict(
                {k: np.asarray(stats[k], dtype=np.float64) for k in ("mean", "scale")})
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"xpnn.models.load_trained: {path}: damaged standardizer metadata ({exc})") from None
        scaler = scaler.to(model_backend(net))
    return net, scaler, config


class _CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention of ``GPT`` (``c_attn``: the q, k, v projections as one (3C, C) Linear,
    ``c_proj``: the output projection), over ``F.scaled_dot_product_attention``; with a KV-cache in ``generate``."""

    def __init__(self, d_model: int, n_head: int, dropout: float, rng: Any, **kw: Any) -> None:
        super().__init__()
        self.c_attn = nn.Linear(d_model, 3 * d_model, seed=rng, **kw)
        self.c_proj = nn.Linear(d_model, d_model, seed=rng, **kw)
        self.n_head, self.d_model, self.dropout = n_head, d_model, dropout
        self._rng = int(rng.integers(2**31))
        self._rngs: dict[int, Any] = {}

    def forward(self, x: Any, cache: Optional[dict[str, Any]] = None, start: int = 0) -> Any:
        """x (B, T, C) -> (B, T, C). ``cache``: {"k", "v"} arrays (B, H, T_max, D) holding the keys and values of
        positions < ``start``; this call's are written at ``start`` and the queries attend all of them."""
        from .functional.dropout import make_rng

        b, t, c = (int(s) for s in x.shape)
        h = self.n_head
        w, bias = self.c_attn.weight, self.c_attn.bias
        q, k, v = (F.permute_dims(F.reshape(F.linear(x, F.index(w, (slice(i * c, (i + 1) * c), slice(None))),
                                                     F.index(bias, (slice(i * c, (i + 1) * c),))),
                                            (b, t, h, c // h)), (0, 2, 1, 3)) for i in range(3))
        mask, causal = None, True
        if cache is not None:  # (inference: arrays written in place, no graph)
            cache["k"][:, :, start:start + t, :] = k.data
            cache["v"][:, :, start:start + t, :] = v.data
            k, v = cache["k"][:, :, :start + t, :], cache["v"][:, :, :start + t, :]
            causal = t > 1 and start == 0
            if t > 1 and start > 0:  # query i (at position start + i) attends keys j <= start + i
                xp = namespace_of(k)
                mask = xp.arange(start + t)[None, :] <= xp.arange(start, start + t)[:, None]
        p = self.dropout if self.training else 0.0
        rng = None
        if p > 0.0:
            xp = namespace_of(q.data)
            rng = self._rngs.get(id(xp)) or self._rngs.setdefault(id(xp), make_rng(xp, self._rng))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal, rng=rng)
        y = F.reshape(F.permute_dims(y, (0, 2, 1, 3)), (b, t, c))
        return F.linear(y, self.c_proj.weight, self.c_proj.bias)


class _MLP(nn.Module):
    """``c_proj(gelu_tanh(c_fc(x)))``, 4x wide (GPT-2's MLP)."""

    def __init__(self, d_model: int, rng: Any, **kw: Any) -> None:
        super().__init__()
        self.c_fc = nn.Linear(d_model, 4 * d_model, seed=rng, **kw)
        self.c_proj = nn.Linear(4 * d_model, d_model, seed=rng, **kw)

    def forward(self, x: Any) -> Any:
        h = F.gelu(F.linear(x, self.c_fc.weight, self.c_fc.bias), approximate="tanh")
        return F.linear(h, self.c_proj.weight, self.c_proj.bias)


class _Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, d_model: int, n_head: int, dropout: float, rng: Any, **kw: Any) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, **kw)
        self.attn = _CausalSelfAttention(d_model, n_head, dropout, rng, **kw)
        self.ln_2 = nn.LayerNorm(d_model, **kw)
        self.mlp = _MLP(d_model, rng, **kw)
        self.drop = nn.Dropout(dropout, seed=int(rng.integers(2**31)))

    def forward(self, x: Any, cache: Optional[dict[str, Any]] = None, start: int = 0) -> Any:
        x = x + self.drop(self.attn(self.ln_1(x), cache, start))
        return x + self.drop(self.mlp(self.ln_2(x)))


class GPT(nn.Module):
    """A small decoder-only transformer (GPT-2's layout, Radford et al., 2019): token + learned position
    embeddings (``wte``, ``wpe``), ``n_layer`` pre-norm blocks (causal multi-head self-attention, GELU (tanh) MLP
    4x wide), a final LayerNorm ``ln_f``, and logits from the token embedding (the LM head is tied to ``wte``).

    ``model(idx)``: integer tokens (B, T) (array or Tensor), T <= ``block_size`` -> logits (B, T, vocab_size), a
    Tensor for a Tensor in (an array for an array: the explicit API, no graph). ``generate(idx, max_new_tokens)``: greedy decoding with a KV-cache. Weights initialised as GPT-2 /
    nanoGPT: N(0, 0.02), the residual projections N(0, 0.02 / sqrt(2 n_layer)), biases 0, LayerNorms 1 and 0.
    """

    def __init__(self, vocab_size: int, block_size: int, n_layer: int = 4, n_head: int = 4, d_model: int = 128,
                 dropout: float = 0.0, *, backend: Any = None, dtype: Any = None, seed: Any = 0) -> None:
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"GPT(d_model={d_model}, n_head={n_head}): d_model must be divisible by n_head")
        rng = generator(seed)
        kw = dict(backend=backend, dtype=dtype)
        self.vocab_size, self.block_size, self.n_layer, self.n_head, self.d_model = (
            vocab_size, block_size, n_layer, n_head, d_model)
        self.wte = nn.Embedding(vocab_size, d_model, **kw)
        self.wpe = nn.Embedding(block_size, d_model, **kw)
        self.drop = nn.Dropout(dropout, seed=int(rng.integers(2**31)))
        self.blocks = nn.ModuleList([_Block(d_model, n_head, dropout, rng, **kw) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d_model, **kw)
        for name, p in self.named_parameters():
            if name.endswith("bias") and "ln_" not in name:
                p.data[...] = 0
            elif not name.startswith("ln_f") and ".ln_" not in name:
                std = 0.02 / (2 * n_layer) ** 0.5 if name.endswith("c_proj.weight") else 0.02
                p.data[...] = get_backend(namespace_of(p.data)).asarray(
                    rng.normal(0.0, std, size=tuple(p.shape)), dtype=p.data.dtype)
        nn.FlatBuffer.pack(self.parameters())

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, block_size={self.block_size}, n_layer={self.n_layer}, "
                f"n_head={self.n_head}, d_model={self.d_model}")

    def _tokens(self, idx: Any) -> Any:
        idx = idx.data if hasattr(idx, "_node") else idx
        if not hasattr(idx, "ndim"):
            raise TypeError(f"{self._where()}: expected tokens as an integer array or Tensor of shape (B, T), got "
                            f"{type(idx).__name__}")
        if idx.ndim != 2 or int(idx.shape[1]) > self.block_size:
            raise ShapeError(f"{self._where()}: expected tokens of shape (B, T) with T <= {self.block_size}, got "
                             f"{tuple(idx.shape)}")
        return idx

    def _run(self, idx: Any, caches: Optional[list[dict[str, Any]]] = None, start: int = 0) -> Any:
        arr = idx.data if hasattr(idx, "_node") else idx  # (a Tensor is kept: xpnn.onnx traces the tokens through)
        t = int(arr.shape[1])
        xp = namespace_of(arr)
        pos = xp.arange(start, start + t, dtype=arr.dtype)
        x = self.drop(F.embedding(idx, self.wte.weight) + F.embedding(pos, self.wpe.weight))
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i], start)
        return F.linear(self.ln_f(x), self.wte.weight)  # the tied LM head

    def forward(self, idx: Any) -> Any:
        self._tokens(idx)
        return self._run(idx)

    def generate(self, idx: Any, max_new_tokens: int, *, use_cache: bool = True) -> Any:
        """``idx`` (B, T) followed by ``max_new_tokens`` greedily decoded tokens (argmax of each next-token
        distribution) -> (B, T + max_new_tokens), an array of ``idx``'s namespace (a Tensor's array for a Tensor).
        With ``use_cache`` (default) each layer keeps its keys and values (two (B, H, T_total, D) arrays), so a new
        token costs one position's forward (the prefix is never recomputed); ``use_cache=False`` recomputes the
        whole sequence for every token (the reference). Runs in eval mode under ``no_grad``; raises ``ValueError``
        when T + max_new_tokens exceeds ``block_size``, for a negative or non-integer ``max_new_tokens`` and for an
        empty prompt (T = 0), ``TypeError`` for tokens that are not an array or Tensor."""
        from .autograd.grad_mode import no_grad

        idx = self._tokens(idx)
        b, t = (int(s) for s in idx.shape)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or \
                max_new_tokens < 0:
            raise ValueError(f"{self._where()}.generate: expected max_new_tokens to be an integer >= 0, got "
                             f"{max_new_tokens!r}")
        if t == 0 and max_new_tokens > 0:
            raise ValueError(f"{self._where()}.generate: expected a prompt of at least one token per row, got "
                             f"tokens of shape {tuple(idx.shape)}")
        total = t + int(max_new_tokens)
        if total > self.block_size:
            raise ValueError(f"{self._where()}.generate: {t} prompt + {max_new_tokens} new tokens exceed "
                             f"block_size {self.block_size}")
        xp = namespace_of(idx)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                caches = None
                if use_cache:
                    wd = self.wte.weight.data
                    shape = (b, self.n_head, total, self.d_model // self.n_head)
                    caches = [{"k": xp.zeros(shape, dtype=wd.dtype), "v": xp.zeros(shape, dtype=wd.dtype)}
                              for _ in self.blocks]
                out = idx
                step_in, start = idx, 0
                for _ in range(int(max_new_tokens)):
                    logits = self._run(step_in, caches, start).data if use_cache else self._run(out).data
                    nxt = xp.astype(xp.argmax(logits[:, -1, :], axis=-1), idx.dtype)[:, None]
                    out = xp.concat([out, nxt], axis=1)
                    if use_cache:
                        start += int(step_in.shape[1])
                        step_in = nxt
        finally:
            self.train(was_training)
        return out


class NextTokenLoss(nn.CrossEntropyLoss):
    """Cross-entropy of next-token logits (B, T, V) against targets (B, T), positions whose target is
    ``ignore_index`` (default -100) left out: ``CrossEntropyLoss`` over the B*T rows (what ``GPT`` trains on with
    ``xpnn.train.fit``, which then reports the accuracy of the predicted tokens)."""

    def forward(self, logits: Any, target: Any) -> Any:
        v = int(logits.shape[-1])
        target = target.data if hasattr(target, "_node") else target
        return super().forward(F.reshape(logits, (-1, v)), namespace_of(target).reshape(target, (-1,)))


def sort_digits(model: GPT, sequences: Sequence[Sequence[int]]) -> list[list[int]]:
    """The answers ``model`` generates (greedy, KV-cache) for the sorting task (``xpnn.data.sorting_task``): each
    digit sequence, followed by the separator, is a prompt; as many tokens as it has digits are generated.
    Sequences of one length are decoded as one batch."""
    be = model_backend(model)
    out: list[list[int]] = [[] for _ in sequences]
    by_len: dict[int, list[int]] = {}
    for i, s in enumerate(sequences):
        by_len.setdefault(len(s), []).append(i)
    for n, rows in by_len.items():
        prompt = np.array([list(sequences[i]) + [data.sorting.SORT_SEP] for i in rows], dtype=np.int64)
        gen = be.to_numpy(model.generate(be.asarray(prompt), n))[:, n + 1:]
        for i, answer in zip(rows, gen.tolist()):
            out[i] = [int(t) for t in answer]
    return out


def sorted_exactly(model: GPT, tokens: np.ndarray) -> float:
    """The fraction of the sorting task's rows (``tokens`` of ``xpnn.data.sorting_task``) whose generated answer is
    the digits sorted, every digit right."""
    seqs = [row[:list(row).index(data.sorting.SORT_SEP)].tolist() for row in np.asarray(tokens)]
    answers = sort_digits(model, seqs)
    return float(np.mean([a == sorted(s) for a, s in zip(answers, seqs)]))


def gpt_from_config(config: dict[str, Any], backend: Any = None) -> GPT:
    """The ``GPT`` that a checkpoint's ``config`` (``xpnn train --model gpt --save``) describes."""
    return GPT(int(config["vocab_size"]), int(config["block_size"]), n_layer=int(config["n_layer"]),
               n_head=int(config["n_head"]), d_model=int(config["d_model"]), backend=backend,
               dtype=str(config["dtype"]))
