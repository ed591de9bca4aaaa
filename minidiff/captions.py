"""Captions made from the data (chapter 13): the class name plus attributes measured from the pixels.

Fashion-MNIST has labels, not captions. A text-conditional model needs sentences, and a way to check that its
images follow them without any downloaded model. So each caption is built from three measurements of the
image, each a small function of its pixels (images in [-1, 1], the garment where a pixel is above 5% of the
range)::

    brightness  mean intensity of its pixels, in [0, 1]    dark / light
    width       mean fraction of a row's columns covered   narrow / wide
    texture     mean |pixel - mean of its 3x3 patch|       plain / patterned

An attribute is named only when it is clear: below the lower tercile of its class in the training set gives the
first word (a dark pullover is darker than two thirds of the pullovers), above the upper tercile the second, and
in between the caption says nothing about it. So "a dark wide ankle boot" describes one image; "an ankle boot"
another. :data:`THRESHOLDS` holds the terciles, recomputed from the data by :func:`attribute_thresholds` in
the tests. The same functions then measure whether a sampled image shows the attributes its prompt asked for.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import FASHION_MNIST_CLASSES

ATTRIBUTES = {"brightness": ("dark", "light"), "width": ("narrow", "wide"), "texture": ("plain", "patterned")}
CLASS_WORDS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]

# (lower, upper) tercile of each attribute in each class over the 60,000 training images (attribute_thresholds).
THRESHOLDS = {
    "brightness": [(0.5123, 0.7171), (0.6203, 0.7405), (0.519, 0.7346), (0.5879, 0.7505), (0.6477, 0.7641),
                   (0.4459, 0.547), (0.4527, 0.681), (0.5025, 0.6017), (0.6147, 0.7203), (0.6453, 0.7276)],
    "width": [(0.5319, 0.5765), (0.3112, 0.3399), (0.5957, 0.6582), (0.3631, 0.4362), (0.5561, 0.6136),
              (0.4341, 0.5392), (0.5754, 0.639), (0.6091, 0.6623), (0.5904, 0.8097), (0.5759, 0.6113)],
    "texture": [(0.0435, 0.0608), (0.0872, 0.1035), (0.0579, 0.0714), (0.0582, 0.0828), (0.0579, 0.0742),
                (0.096, 0.1274), (0.0526, 0.0731), (0.0817, 0.1017), (0.0523, 0.0682), (0.0589, 0.0737)],
}


# ------------------------------------------------------------------------------------------ measuring
def garment_mask(images: torch.Tensor) -> torch.Tensor:
    """Where the garment is: pixels above 5% of the range, (x + 1) / 2 > 0.05. (N, 1, 28, 28) -> bool, same shape."""
    return (images + 1) / 2 > 0.05


def brightness(images: torch.Tensor) -> torch.Tensor:
    """Mean intensity (x + 1) / 2 of the garment's pixels, (N,) in [0, 1]; 0 for an empty image."""
    v, mask = (images + 1) / 2, garment_mask(images)
    return (v * mask).sum((1, 2, 3)) / mask.sum((1, 2, 3)).clamp(min=1)


def width(images: torch.Tensor) -> torch.Tensor:
    """Mean over the rows that hold any garment of the fraction of the row's columns it covers, (N,) in [0, 1]."""
    covered = garment_mask(images).squeeze(1).float().mean(2)                   # (N, 28): each row's coverage
    rows = (covered > 0).sum(1)
    return covered.sum(1) / rows.clamp(min=1)


def texture(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between v = (x + 1) / 2 and the mean of its 3x3 neighbourhood, over the garment's
    interior pixels (all 9 neighbours garment): high for stripes, prints and folds, low for flat fabric. (N,) >= 0."""
    v, mask = (images + 1) / 2, garment_mask(images)
    local_mean = F.avg_pool2d(F.pad(v, (1, 1, 1, 1), mode="replicate"), 3, stride=1)   # (N, 1, 28, 28)
    interior = F.max_pool2d((~mask).float(), 3, stride=1, padding=1) == 0             # no background within 1 px
    return ((v - local_mean).abs() * interior).sum((1, 2, 3)) / interior.sum((1, 2, 3)).clamp(min=1)


MEASURES = {"brightness": brightness, "width": width, "texture": texture}


def attribute_thresholds(images: torch.Tensor, labels: torch.Tensor) -> dict[str, list[tuple[float, float]]]:
    """The lower and upper terciles of each attribute within each class: how :data:`THRESHOLDS` was made."""
    out = {}
    for name, measure in MEASURES.items():
        values = measure(images).double()
        out[name] = [tuple(round(float(q), 4) for q in values[labels == c].quantile(torch.tensor([1 / 3, 2 / 3],
                                                                                               dtype=torch.float64)))
                     for c in range(len(FASHION_MNIST_CLASSES))]
    return out


def attribute_words(images: torch.Tensor, labels: torch.Tensor) -> list[dict[str, str]]:
    """For each image, the attribute words that clearly apply, e.g. ``{"brightness": "dark", "texture": "plain"}``
    (an attribute between its class's terciles is left out)."""
    words: list[dict[str, str]] = [{} for _ in range(images.shape[0])]
    for name, measure in MEASURES.items():
        values = measure(images).tolist()
        for i, (value, c) in enumerate(zip(values, labels.tolist())):
            low, high = THRESHOLDS[name][c]
            if value < low:
                words[i][name] = ATTRIBUTES[name][0]
            elif value > high:
                words[i][name] = ATTRIBUTES[name][1]
    return words


# ------------------------------------------------------------------------------------------ captions
def caption(words: dict[str, str], label: int) -> str:
    """``"a dark wide plain ankle boot"``: the article, the attribute words in the order of :data:`ATTRIBUTES`,
    the class words."""
    parts = [words[name] for name in ATTRIBUTES if name in words] + [CLASS_WORDS[label]]
    return ("an " if parts[0][0] in "aeiou" else "a ") + " ".join(parts)


def captions(images: torch.Tensor, labels: torch.Tensor) -> list[str]:
    """The caption of each image (N, 1, 28, 28) with its label (N,)."""
    return [caption(w, c) for w, c in zip(attribute_words(images, labels), labels.tolist())]


def caption_labels(images: torch.Tensor, labels: torch.Tensor, *, keep: float = 0.5,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[str]]:
    """Training prompts: each image's caption with each of its clear attributes kept with probability ``keep``
    (so the model also learns the shorter prompts, "a coat" and "a dark coat"), as indices into a table.

    Returns (y (N,) int64, the table: the distinct captions, sorted).
    """
    words = attribute_words(images, labels)
    coins = torch.rand(len(words), len(ATTRIBUTES), generator=generator) < keep                # (N, 3)
    texts = [caption({name: w[name] for j, name in enumerate(ATTRIBUTES) if name in w and coins[i, j]}, c)
             for i, (w, c) in enumerate(zip(words, labels.tolist()))]
    table = sorted(set(texts))
    index = {text: i for i, text in enumerate(table)}
    return torch.tensor([index[text] for text in texts], dtype=torch.long), table


def all_captions() -> list[str]:
    """Every caption the grammar makes: each class with each attribute absent or one of its two words."""
    import itertools

    choices = [[None, *pair] for pair in ATTRIBUTES.values()]
    return sorted({caption({name: w for name, w in zip(ATTRIBUTES, combo) if w is not None}, c)
                   for c in range(len(CLASS_WORDS)) for combo in itertools.product(*choices)})


def parse_caption(prompt: str) -> tuple[int, dict[str, str]]:
    """The class and the attribute words of a prompt of the captions' grammar: ``"a dark coat"`` ->
    ``(4, {"brightness": "dark"})``. Raises ValueError for a prompt the grammar does not make."""
    text = " ".join(prompt.lower().split())
    for label, name in enumerate(CLASS_WORDS):
        if text.endswith(" " + name):
            words = text[: -len(name) - 1].split()
            if not words or words[0] not in ("a", "an"):
                break
            found = {}
            for w in words[1:]:
                kind = next((k for k, pair in ATTRIBUTES.items() if w in pair), None)
                if kind is None or kind in found:
                    break
                found[kind] = w
            else:
                if caption(found, label) == text:
                    return label, found
            break
    raise ValueError(f"prompt {prompt!r} is not a caption of the form 'a [dark|light] [narrow|wide] "
                     f"[plain|patterned] <class>', with the class one of {', '.join(CLASS_WORDS)}")


def attribute_agreement(images: torch.Tensor, prompts: list[str]) -> dict[str, dict]:
    """How often images (N, 1, 28, 28) show the attributes their prompts (N) name, measured with the attribute
    functions: for each attribute, {"asked": how many prompts name it, "agreement": the fraction whose image
    shows the word asked, "words": the same two numbers for each of its words}. For an image of the class drawn
    at random the agreement is 1/3: a third of each class lies beyond each tercile. For a model's samples the
    fair baseline is :func:`word_shares` of samples whose prompts name no attribute."""
    parsed = [parse_caption(p) for p in prompts]
    return _agreement(parsed, attribute_words(images, torch.tensor([label for label, _ in parsed])))


def _agreement(parsed: list[tuple[int, dict[str, str]]], measured: list[dict[str, str]]) -> dict[str, dict]:
    """:func:`attribute_agreement` from the parsed prompts and the words measured on their images."""
    share = lambda hits: sum(hits) / len(hits) if hits else None
    out = {}
    for name, pair in ATTRIBUTES.items():
        hits = {word: [m.get(name) == word for (_, asked), m in zip(parsed, measured) if asked.get(name) == word]
                for word in pair}
        every = hits[pair[0]] + hits[pair[1]]
        out[name] = {"asked": len(every), "agreement": share(every),
                     "words": {word: {"asked": len(h), "agreement": share(h)} for word, h in hits.items()}}
    return out


def word_shares(images: torch.Tensor, labels: torch.Tensor) -> dict[str, dict[str, float]]:
    """The fraction of images (N, 1, 28, 28) of classes ``labels`` (N,) that show each attribute word, e.g.
    ``{"brightness": {"dark": 0.13, "light": 0.49}, ...}``: a third each for real images of a class.

    Measured on samples whose prompts name no attribute ("a coat"), it is what a word's agreement would be if
    the word had no effect: the baseline that :func:`attribute_agreement` should be read against (guidance
    moves the samples towards what is typical of the class, so it need not be 1/3).
    """
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(f"images and labels must be non-empty and of one length, got {images.shape[0]} images "
                         f"and {labels.shape[0]} labels")
    return _shares(attribute_words(images, labels))


def _shares(words: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    """:func:`word_shares` from the words measured on each image."""
    return {name: {word: sum(w.get(name) == word for w in words) / len(words) for word in pair}
            for name, pair in ATTRIBUTES.items()}
