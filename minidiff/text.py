"""Text prompts (chapter 13): a word-level tokenizer and a tiny transformer text encoder.

Stable Diffusion turns a prompt into a sequence of token vectors with CLIP's text transformer, and the U-Net
reads them through cross-attention. Here the language is the captions of :mod:`minidiff.captions`: nineteen words.
The tokenizer maps each word to an index, prepends a start token and pads to a fixed length; the encoder is
token and position embeddings and a few pre-norm transformer layers (Vaswani et al. 2017), trained with the
diffusion model. The empty prompt is the start token alone: its vectors are what classifier-free guidance uses
as "no prompt".
"""
from __future__ import annotations

import torch
from torch import nn

from ._validate import check_int
from .captions import ATTRIBUTES, CLASS_WORDS

PAD, START = "<pad>", "<start>"
VOCAB = [PAD, START, "a", "an"] + [w for pair in ATTRIBUTES.values() for w in pair] + sorted(
    {w for name in CLASS_WORDS for w in name.split()})
MAX_TOKENS = 8                      # <start> + up to 7 words: "a dark wide patterned ankle boot" has 6


class Tokenizer:
    """Words to token ids and back: lower-case, split on spaces, ``<start>`` first, ``<pad>`` (0) to the length.

    Args:
        vocab: the words; index 0 must be ``<pad>`` and index 1 ``<start>``.
        max_tokens: the length of every encoded prompt, start token included.
    """

    def __init__(self, vocab: list[str] = VOCAB, max_tokens: int = MAX_TOKENS):
        if list(vocab[:2]) != [PAD, START] or len(set(vocab)) != len(vocab):
            raise ValueError(f"vocab must start with {PAD!r}, {START!r} and hold each word once, got {vocab[:4]}...")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_tokens = check_int(max_tokens, "max_tokens", low=2)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, prompts: str | list[str]) -> torch.Tensor:
        """Token ids (B, max_tokens), int64, of one prompt or a list; "" is the empty prompt (``<start>`` only)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"prompts must be a string or a list of strings, got {type(prompts).__name__}")
        ids = torch.zeros(len(prompts), self.max_tokens, dtype=torch.long)             # (B, L), all <pad>
        for b, prompt in enumerate(prompts):
            words = prompt.lower().split()
            unknown = [w for w in words if w not in self.index or w in (PAD, START)]
            if unknown:
                raise ValueError(f"prompt {prompt!r} has words the model does not know: {', '.join(unknown)}; "
                                 f"it knows {', '.join(self.vocab[2:])}")
            if len(words) > self.max_tokens - 1:
                raise ValueError(f"prompt {prompt!r} has {len(words)} words; at most {self.max_tokens - 1} fit")
            ids[b, : len(words) + 1] = torch.tensor([self.index[START]] + [self.index[w] for w in words])
        return ids

    def decode(self, ids: torch.Tensor) -> list[str]:
        """The prompts of token ids (B, L): the words between ``<start>`` and the padding."""
        return [" ".join(self.vocab[i] for i in row.tolist() if i > 1) for row in ids]


class TextEncoder(nn.Module):
    """Token ids (B, L) -> token vectors (B, L, dim): embeddings plus learned positions, then ``layers`` pre-norm
    transformer layers whose self-attention ignores the padding. The start token is never padding, so every
    prompt, the empty one too, has at least one vector to attend to.

    Args:
        vocab_size: number of tokens (``len(Tokenizer())``).
        dim: width of the token vectors.
        layers, heads: the transformer's depth and heads (``dim`` divisible by ``heads``).
        max_tokens: the longest sequence.
    """

    def __init__(self, *, vocab_size: int = len(VOCAB), dim: int = 64, layers: int = 2, heads: int = 4,
                 max_tokens: int = MAX_TOKENS):
        super().__init__()
        self.config = dict(vocab_size=check_int(vocab_size, "vocab_size", low=2), dim=check_int(dim, "dim", low=1),
                           layers=check_int(layers, "layers", low=1), heads=check_int(heads, "heads", low=1),
                           max_tokens=check_int(max_tokens, "max_tokens", low=2))
        if dim % heads:
            raise ValueError(f"heads must divide dim, got dim={dim} and heads={heads}")
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.randn(max_tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (vectors (B, L, dim), mask (B, L)); mask is True at real tokens, False at padding."""
        mask = ids != 0                                                           # (B, L)
        h = self.token(ids) + self.position[: ids.shape[1]]                       # (B, L, dim)
        h = self.layers(h, src_key_padding_mask=~mask)                            # padding is not attended to
        return self.norm(h), mask


class TextConditionedUNet(nn.Module):
    """eps_theta(x_t, t, prompt): a :class:`~minidiff.unet.UNet` with cross-attention to a :class:`TextEncoder`'s
    vectors, trained together (Rombach et al. 2022, sec. 3.3).

    The model holds a table of prompts, and ``y`` picks one per sample, as a class label does: ``model(x_t, t, y)``
    with ``y`` (B,) in ``[0, num_classes]``, ``num_classes`` = the number of prompts. The extra index
    ``num_classes`` is the unconditional branch of classifier-free guidance: the empty prompt, or the negative
    prompt of :meth:`with_prompts`. So label dropout, guidance and every sampler of the book work unchanged.

    Args:
        prompts: the table, e.g. the distinct captions of the training set (:mod:`minidiff.captions`).
        unet: the UNet's keyword arguments (``context_dim`` is set to the encoder's ``dim``).
        text: the TextEncoder's keyword arguments.
        negative: the prompt of index ``num_classes`` ("" = the empty prompt).

    Introduced in chapter 13.
    """

    def __init__(self, *, prompts: list[str], unet: dict, text: dict | None = None, negative: str = ""):
        super().__init__()
        from .unet import UNet

        self.text_encoder = TextEncoder(**(text or {}))
        self.tokenizer = Tokenizer(max_tokens=self.text_encoder.config["max_tokens"])
        if len(self.tokenizer) != self.text_encoder.config["vocab_size"]:
            raise ValueError(f"text vocab_size must be {len(self.tokenizer)} (the tokenizer's words), got "
                             f"{self.text_encoder.config['vocab_size']}")
        self.unet = UNet(**{**unet, "context_dim": self.text_encoder.config["dim"]})
        self._set_table(prompts, negative)
        self.config = {"prompts": list(self.prompts), "unet": {k: v for k, v in self.unet.config.items()
                                                                if k != "context_dim"},
                       "text": dict(self.text_encoder.config)}

    def _set_table(self, prompts, negative: str) -> None:
        if isinstance(prompts, str) or not prompts:
            raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        self.prompts, self.negative = list(prompts), negative
        self.num_classes = len(self.prompts)
        ids = self.tokenizer.encode(self.prompts + [negative])                 # (P + 1, L); checks every word
        self.register_buffer("prompt_ids", ids, persistent=False)

    def with_prompts(self, prompts: list[str], negative: str = "") -> "TextConditionedUNet":
        """The same network with another prompt table: ``y = i`` then means ``prompts[i]``, and the unconditional
        branch of guidance uses ``negative`` (a negative prompt) instead of the empty prompt."""
        import copy

        view = copy.copy(self)                              # shares the modules (and so the weights)
        view._buffers = dict(self._buffers)
        view._set_table(prompts, negative)
        view.prompt_ids = view.prompt_ids.to(self.unet.conv_in.weight.device)
        return view

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), t (B,) or an int, y (B,) prompt indices (None: the unconditional branch)."""
        from ._validate import check_labels

        y = check_labels(y, x.shape[0], self.num_classes, x.device)
        if y is None:
            y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
        context = self.text_encoder(self.prompt_ids.to(x.device)[y])           # (B, L, dim), (B, L)
        return self.unet(x, t, None, context=context)                          # (B, C, H, W)


def prompted(model: nn.Module, prompts: list[str], negative: str = "") -> nn.Module:
    """``model`` (a :class:`TextConditionedUNet`, or a :class:`~minidiff.latent.LatentModel` around one) with the
    prompt table ``prompts``: sample i of a batch with ``y = i`` follows ``prompts[i]``; guidance's unconditional
    branch uses ``negative``."""
    if isinstance(model, TextConditionedUNet):
        return model.with_prompts(prompts, negative)
    inner = getattr(model, "model", None)
    if hasattr(model, "decode") and isinstance(inner, TextConditionedUNet):
        from .latent import LatentModel

        return LatentModel(inner.with_prompts(prompts, negative), model.autoencoder, model.scale)
    raise TypeError(f"model must be a TextConditionedUNet or a LatentModel around one, got {type(model).__name__}")
