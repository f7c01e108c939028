"""Emoji dataset: every fully-qualified emoji rendered from the system Noto Color Emoji font.

Sources (Debian packages, nothing is downloaded):
    fonts-noto-color-emoji  /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf  (CBDT colour bitmap font)
    unicode-data            /usr/share/unicode/emoji/emoji-test.txt            (emoji list, names, groups)

Images: each emoji is drawn at the font's only bitmap strike (size 109, a 136 x 128 glyph cell) with
``embedded_color=True``, composited onto a white background, centred on its visible pixels in a 136 x 136
square (so all emoji keep the same relative scale) and resized with LANCZOS to ``image_size``.
Emoji the font cannot draw as one glyph (a sequence it shapes into several glyphs, a missing glyph, a blank
render) are skipped and counted. Shaping of ZWJ/flag/keycap sequences needs Pillow built with libraqm.

Labels: a multi-hot vector over ``ATTRIBUTES`` (52 entries, in this order). Every attribute is read from the
official CLDR name, group and code points in emoji-test.txt; the name is lower-cased and split into words on
spaces, ``:``, ``,`` and ``-`` (so ``woman’s hat`` contains the word ``woman’s``, not ``woman``):

    groups (9)        the emoji's group: Smileys & Emotion, People & Body, Animals & Nature, Food & Drink,
                      Travel & Places, Activities, Objects, Symbols, Flags. The Component group (bare skin-tone
                      and hair swatches) is excluded from the dataset.
    people (8)        woman, man, person, girl, boy, child, baby, old -- words of the name, only for emoji in
                      the People & Body group (so "baby chick" is not "baby"). Plurals count: "women" -> woman,
                      "men" -> man, "people" -> person; "old" comes from "old"/"older" (old man, old woman,
                      older person). Each word is literal: "woman" does not imply "person".
                      Multi-person emoji get every word they name ("family: man, woman, boy" -> man, woman, boy).
    skin tones (5)    light skin tone, medium-light skin tone, medium skin tone, medium-dark skin tone,
                      dark skin tone -- from the Fitzpatrick modifier code points U+1F3FB..U+1F3FF in the
                      sequence (the same as the name's "…: X skin tone" qualifiers; a couple can have two).
    hair (5)          red hair, curly hair, white hair, blond hair (the phrase in the name) and bald (the word).
    beard (1)         the word "beard" (person/man/woman: beard).
    words (15)        face, heart, hand, flag, cat, monkey, arrow, button, moon, sun, star, cloud, kiss, couple,
                      family -- the word in the name; "hearts" -> heart, "flags" -> flag. "hand" also covers
                      "hands" and every emoji in a hand-* subgroup (thumbs up, OK hand, writing hand, ...).
    colours (9)       red, orange, yellow, green, blue, purple, brown, black, white -- the word in the name
                      ("red heart", "black cat", "white flag"), ignoring the hair phrases "red hair"/"white hair".

Public API:
    EMOJI_TEST, FONT                     the source paths
    EmojiEntry                           frozen dataclass (codepoints: the emoji string, name, group, subgroup)
    parse_emoji_test(path) -> list[EmojiEntry]     fully-qualified entries, Component group excluded
    attributes_of(entry) -> set[str]     its attributes (a subset of ATTRIBUTES)
    ATTRIBUTES                           the ordered attribute vocabulary (label names)
    render_emoji(text, size) -> PIL RGB image      raises ValueError if the font cannot draw it
    load_emoji(image_size=32, cache_dir=None, limit=None) -> (images uint8 NHWC, labels float32, ATTRIBUTES)
    summary(labels, names) -> {attribute: image count}
"""
from __future__ import annotations

import functools
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"
FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
FONT_SIZE = 109  # the only bitmap strike in Noto Color Emoji (glyph cell 136 x 128 pixels)

GROUPS = ("Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places",
          "Activities", "Objects", "Symbols", "Flags")
EXCLUDED_GROUPS = ("Component",)
PEOPLE_GROUP = "People & Body"

# attribute -> the name words that give it (people words apply only inside PEOPLE_GROUP)
PERSON_WORDS = {
    "woman": ("woman", "women"), "man": ("man", "men"), "person": ("person", "people"),
    "girl": ("girl",), "boy": ("boy",), "child": ("child",), "baby": ("baby",), "old": ("old", "older"),
}
SKIN_TONES = {
    "\U0001F3FB": "light skin tone", "\U0001F3FC": "medium-light skin tone", "\U0001F3FD": "medium skin tone",
    "\U0001F3FE": "medium-dark skin tone", "\U0001F3FF": "dark skin tone",
}
HAIR_PHRASES = ("red hair", "curly hair", "white hair", "blond hair")
HAIR_WORDS = {"bald": ("bald",), "beard": ("beard",)}
OBJECT_WORDS = {
    "face": ("face",), "heart": ("heart", "hearts"), "hand": ("hand", "hands"), "flag": ("flag", "flags"),
    "cat": ("cat",), "monkey": ("monkey",), "arrow": ("arrow",), "button": ("button",), "moon": ("moon",),
    "sun": ("sun",), "star": ("star",), "cloud": ("cloud",), "kiss": ("kiss",), "couple": ("couple",),
    "family": ("family",),
}
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white")

ATTRIBUTES: tuple[str, ...] = (
    GROUPS + tuple(PERSON_WORDS) + tuple(SKIN_TONES.values()) + HAIR_PHRASES + tuple(HAIR_WORDS)
    + tuple(OBJECT_WORDS) + COLOURS
)
assert len(set(ATTRIBUTES)) == len(ATTRIBUTES)

_LINE = re.compile(r"^([0-9A-Fa-f ]+?)\s*;\s*([a-z-]+)\s*#\s*(\S+)\s+E\d+\.\d+\s+(.+?)\s*$")
_SPLIT = re.compile(r"[\s:,\-]+")
_HAIR = re.compile(r"\b(?:" + "|".join(HAIR_PHRASES) + r")\b")


@dataclass(frozen=True)
class EmojiEntry:
    codepoints: str  # the emoji itself, e.g. "👩🏿‍🦰"
    name: str        # CLDR name, e.g. "woman: dark skin tone, red hair"
    group: str
    subgroup: str


def parse_emoji_test(path=EMOJI_TEST) -> list[EmojiEntry]:
    """The fully-qualified emoji of an emoji-test.txt file, in file (CLDR) order, Component group excluded."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found (Debian package unicode-data provides it)")
    entries, group, subgroup = [], "", ""
    for raw in p.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("# group:"):
            group, subgroup = line.split(":", 1)[1].strip(), ""
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            m = _LINE.match(line)
            if m is None or m.group(2) != "fully-qualified" or group in EXCLUDED_GROUPS:
                continue
            text = "".join(chr(int(cp, 16)) for cp in m.group(1).split())
            entries.append(EmojiEntry(text, m.group(4), group, subgroup))
    return entries


def attributes_of(entry: EmojiEntry) -> set[str]:
    """The attribute words of one emoji (see the module docstring for the rules); a subset of ATTRIBUTES."""
    name = entry.name.lower()
    words = set(_SPLIT.split(name))
    attrs = set()
    if entry.group in GROUPS:
        attrs.add(entry.group)
    if entry.group == PEOPLE_GROUP:
        attrs |= {a for a, ws in PERSON_WORDS.items() if words.intersection(ws)}
    attrs |= {tone for ch, tone in SKIN_TONES.items() if ch in entry.codepoints}
    attrs |= {ph for ph in HAIR_PHRASES if re.search(rf"\b{ph}\b", name)}
    attrs |= {a for a, ws in {**HAIR_WORDS, **OBJECT_WORDS}.items() if words.intersection(ws)}
    if entry.subgroup.startswith("hand"):
        attrs.add("hand")
    colour_words = set(_SPLIT.split(_HAIR.sub(" ", name)))
    attrs |= colour_words.intersection(COLOURS)
    return attrs


@functools.lru_cache(maxsize=1)
def _font() -> tuple[ImageFont.FreeTypeFont, float]:
    if not Path(FONT).is_file():
        raise FileNotFoundError(f"{FONT} not found (Debian package fonts-noto-color-emoji provides it)")
    font = ImageFont.truetype(FONT, FONT_SIZE)
    return font, font.getlength("\U0001F600")  # the advance of one emoji glyph (136 px)


def render_emoji(text: str, size: int) -> Image.Image:
    """`text` as a size x size RGB image: colour glyph on white, centred, LANCZOS-resized from 136 x 136.

    Raises ValueError if the font cannot draw it as a single glyph (unknown sequence, missing glyph, blank)."""
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if not text:
        raise ValueError("empty emoji text")
    font, advance = _font()
    if font.getlength(text) > 1.5 * advance:
        raise ValueError(f"font has no single glyph for {text!r} (it shapes into several)")
    left, top, right, bottom = font.getbbox(text)
    if right <= left or bottom <= top:
        raise ValueError(f"font has no glyph for {text!r}")
    pad = 8
    canvas = (right + 2 * pad, bottom + 2 * pad)
    alpha = Image.new("RGBA", canvas, (0, 0, 0, 0))  # only its alpha is used: where the glyph is
    ImageDraw.Draw(alpha).text((pad, pad), text, font=font, embedded_color=True)
    box = alpha.getchannel("A").getbbox()
    if box is None:
        raise ValueError(f"font renders {text!r} blank")
    # Drawing straight onto white blends the glyph's straight-alpha bitmap correctly (an RGBA canvas would not).
    white = Image.new("RGB", canvas, (255, 255, 255))
    ImageDraw.Draw(white).text((pad, pad), text, font=font, embedded_color=True)
    glyph = white.crop(box)
    side = max(round(advance), glyph.width, glyph.height)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square if side == size else square.resize((size, size), Image.Resampling.LANCZOS)


def _subset(entries: list[EmojiEntry], limit: int | None) -> list[EmojiEntry]:
    """All entries, or `limit` of them spread evenly over the file (so every group is represented)."""
    if limit is None or limit >= len(entries):
        return entries
    idx = np.unique(np.linspace(0, len(entries) - 1, limit).round().astype(int))
    return [entries[i] for i in idx]


def _render_all(entries: list[EmojiEntry], image_size: int):
    images, labels, kept, skipped = [], [], [], []
    index = {a: i for i, a in enumerate(ATTRIBUTES)}
    for e in entries:
        try:
            img = render_emoji(e.codepoints, image_size)
        except ValueError:
            skipped.append(e.codepoints)
            continue
        arr = np.asarray(img, dtype=np.uint8)
        if arr.min() >= 250:  # nothing visible left after resizing
            skipped.append(e.codepoints)
            continue
        row = np.zeros(len(ATTRIBUTES), np.float32)
        row[[index[a] for a in attributes_of(e)]] = 1.0
        images.append(arr)
        labels.append(row)
        kept.append(e.codepoints)
    images = np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8)
    labels = np.stack(labels) if labels else np.zeros((0, len(ATTRIBUTES)), np.float32)
    return images, labels, kept, skipped


def _cache_file(cache_dir, image_size: int, limit: int | None) -> Path:
    return Path(cache_dir) / f"emoji_{image_size}px_{'all' if limit is None else f'n{limit}'}.npz"


def _read_cache(path: Path, image_size: int):
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels, names = z["images"], z["labels"], tuple(str(n) for n in z["names"])
    except Exception as e:  # missing, truncated or foreign file: render again
        if path.exists():
            log.warning("ignoring unreadable emoji cache %s (%s)", path, e)
        return None
    if (names != ATTRIBUTES or images.dtype != np.uint8 or images.ndim != 4
            or images.shape[1:] != (image_size, image_size, 3) or labels.shape != (len(images), len(ATTRIBUTES))):
        log.warning("emoji cache %s is stale (other vocabulary or shape); rendering again", path)
        return None
    return images, labels.astype(np.float32, copy=False)


def load_emoji(image_size: int = 32, cache_dir: str | None = None, limit: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Render the emoji dataset: (images uint8 (N, S, S, 3), labels float32 (N, len(ATTRIBUTES)), ATTRIBUTES).

    Every fully-qualified emoji the font can draw, in file order; `limit` takes that many spread evenly over
    the list (fewer come back if some of them cannot be drawn). With `cache_dir` the arrays are cached as
    emoji_<S>px_<all|nN>.npz there and reused by later calls."""
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    path = _cache_file(cache_dir, image_size, limit) if cache_dir is not None else None
    if path is not None:
        cached = _read_cache(path, image_size)
        if cached is not None:
            return cached[0], cached[1], ATTRIBUTES
    t0 = time.perf_counter()
    entries = _subset(parse_emoji_test(), limit)
    images, labels, kept, skipped = _render_all(entries, image_size)
    log.info("rendered %d emoji at %dpx in %.1fs; skipped %d the font cannot draw",
             len(kept), image_size, time.perf_counter() - t0, len(skipped))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, images=images, labels=labels, names=np.array(ATTRIBUTES),
                         emoji=np.array(kept, dtype=str), skipped=np.array(skipped, dtype=str))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return images, labels, ATTRIBUTES


def summary(labels, names) -> dict[str, int]:
    """Number of images carrying each attribute, in vocabulary order."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(names):
        raise ValueError(f"labels of shape {labels.shape} do not match {len(names)} names")
    return {str(n): int(c) for n, c in zip(names, (labels > 0.5).sum(axis=0))}
