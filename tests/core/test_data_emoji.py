"""Emoji dataset source: emoji-test.txt parsing, attribute rules, rendering, loading and caching."""
from pathlib import Path

import numpy as np
import pytest

from diffusion_core.data import emoji as de

HAVE_TEST_FILE = Path(de.EMOJI_TEST).is_file()
HAVE_FONT = Path(de.FONT).is_file()
needs_test_file = pytest.mark.skipif(not HAVE_TEST_FILE, reason=f"{de.EMOJI_TEST} missing (unicode-data)")
needs_font = pytest.mark.skipif(not HAVE_FONT, reason=f"{de.FONT} missing (fonts-noto-color-emoji)")
needs_both = pytest.mark.skipif(not (HAVE_FONT and HAVE_TEST_FILE), reason="emoji font or emoji-test.txt missing")

FIXTURE = """\
# emoji-test.txt
# Version: 15.0

# group: Smileys & Emotion

# subgroup: face-smiling
1F600                                                  ; fully-qualified     # 😀 E1.0 grinning face
263A FE0F                                              ; fully-qualified     # ☺️ E0.6 smiling face
263A                                                   ; unqualified         # ☺ E0.6 smiling face

# subgroup: heart
1F5A4                                                  ; fully-qualified     # 🖤 E3.0 black heart

# group: People & Body

# subgroup: hand-fingers-closed
1F44D 1F3FD                                            ; fully-qualified     # 👍🏽 E1.0 thumbs up: medium skin tone

# subgroup: person
1F469 1F3FF 200D 1F9B0                                 ; fully-qualified     # 👩🏿‍🦰 E11.0 woman: dark skin tone, red hair
1F9D4 1F3FC 200D 2642 FE0F                             ; fully-qualified     # 🧔🏼‍♂️ E13.1 man: medium-light skin tone, beard
1F9D4 1F3FC 200D 2642                                  ; minimally-qualified # 🧔🏼‍♂ E13.1 man: medium-light skin tone, beard
1F471 200D 2640 FE0F                                   ; fully-qualified     # 👱‍♀️ E4.0 woman: blond hair
1F474                                                  ; fully-qualified     # 👴 E0.6 old man

# subgroup: family
1F9D1 1F3FB 200D 1F91D 200D 1F9D1 1F3FF                ; fully-qualified     # 🧑🏻‍🤝‍🧑🏿 E12.1 people holding hands: light skin tone, dark skin tone
1F469 200D 2764 FE0F 200D 1F468                        ; fully-qualified     # 👩‍❤️‍👨 E2.0 couple with heart: woman, man
1F468 200D 1F469 200D 1F466                            ; fully-qualified     # 👨‍👩‍👦 E2.0 family: man, woman, boy

# People & Body subtotal:		3
# People & Body subtotal:		3	w/o modifiers

# group: Component

# subgroup: hair-style
1F9B0                                                  ; component           # 🦰 E11.0 red hair
1F9B1                                                  ; fully-qualified     # 🦱 E11.0 curly hair

# group: Animals & Nature

# subgroup: animal-bird
1F425                                                  ; fully-qualified     # 🐥 E0.6 front-facing baby chick

# group: Objects

# subgroup: clothing
1F452                                                  ; fully-qualified     # 👒 E0.6 woman’s hat

# group: Flags

# subgroup: flag
1F3F3 FE0F                                             ; fully-qualified     # 🏳️ E0.7 white flag

#EOF
"""

EXPECTED = {
    "grinning face": {"Smileys & Emotion", "face"},
    "smiling face": {"Smileys & Emotion", "face"},
    "black heart": {"Smileys & Emotion", "heart", "black"},
    "thumbs up: medium skin tone": {"People & Body", "hand", "medium skin tone"},
    "woman: dark skin tone, red hair": {"People & Body", "woman", "dark skin tone", "red hair"},
    "man: medium-light skin tone, beard": {"People & Body", "man", "medium-light skin tone", "beard"},
    "woman: blond hair": {"People & Body", "woman", "blond hair"},
    "old man": {"People & Body", "man", "old"},
    "people holding hands: light skin tone, dark skin tone":
        {"People & Body", "person", "hand", "light skin tone", "dark skin tone"},
    "couple with heart: woman, man": {"People & Body", "couple", "heart", "woman", "man"},
    "family: man, woman, boy": {"People & Body", "family", "man", "woman", "boy"},
    "front-facing baby chick": {"Animals & Nature"},
    "woman’s hat": {"Objects"},
    "white flag": {"Flags", "flag", "white"},
}


@pytest.fixture
def fixture_entries(tmp_path):
    path = tmp_path / "emoji-test.txt"
    path.write_text(FIXTURE, encoding="utf-8")
    return de.parse_emoji_test(path)


def test_parse_fixture(fixture_entries):
    assert [e.name for e in fixture_entries] == list(EXPECTED)  # fully-qualified only, Component dropped
    e = fixture_entries[4]
    assert e == de.EmojiEntry("👩🏿‍🦰", "woman: dark skin tone, red hair", "People & Body", "person")
    assert fixture_entries[1].codepoints == "\u263a\ufe0f"
    assert fixture_entries[0].subgroup == "face-smiling"
    with pytest.raises(Exception):
        e.name = "x"  # frozen


def test_attributes_fixture(fixture_entries):
    for e in fixture_entries:
        assert de.attributes_of(e) == EXPECTED[e.name], e.name


def test_vocabulary():
    assert len(set(de.ATTRIBUTES)) == len(de.ATTRIBUTES) <= 60
    for a in ("woman", "man", "person", "dark skin tone", "medium-light skin tone", "red hair", "blond hair",
              "bald", "beard", "Smileys & Emotion", "Flags", "face", "heart", "hand"):
        assert a in de.ATTRIBUTES
    assert "Component" not in de.ATTRIBUTES


def test_summary():
    labels = np.array([[1, 0, 1], [1, 1, 0]], np.float32)
    assert de.summary(labels, ("a", "b", "c")) == {"a": 2, "b": 1, "c": 1}
    with pytest.raises(ValueError):
        de.summary(labels, ("a", "b"))


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="unicode-data"):
        de.parse_emoji_test(tmp_path / "nope.txt")


@needs_test_file
def test_parse_real_file():
    entries = de.parse_emoji_test()
    assert len(entries) > 3000
    assert {e.group for e in entries} == set(de.GROUPS)
    for e in entries:
        attrs = de.attributes_of(e)
        assert attrs <= set(de.ATTRIBUTES) and e.group in attrs
        named_tones = {p.strip() for p in e.name.partition(": ")[2].split(",")} & set(de.SKIN_TONES.values())
        assert {a for a in attrs if a.endswith("skin tone")} == named_tones, e.name


@needs_font
def test_render_emoji():
    img = de.render_emoji("👩🏿‍🦰", 32)
    assert img.mode == "RGB" and img.size == (32, 32)
    a = np.asarray(img)
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
    assert a.std() > 20 and (np.ptp(a.astype(int), axis=-1) > 40).any()  # not blank, coloured
    assert (a[[0, 0, -1, -1], [0, -1, 0, -1]] >= 250).all()  # white corners
    ys, xs = np.nonzero((a < 245).any(axis=-1))
    assert abs((ys.min() + ys.max()) / 2 - 15.5) <= 2 and abs((xs.min() + xs.max()) / 2 - 15.5) <= 2  # centred
    assert np.asarray(de.render_emoji("😀", 136)).shape == (136, 136, 3)


@needs_font
@pytest.mark.parametrize("text", ["\U000F0000", "A", "👩\u200d🦰\u200d🐱", ""])
def test_render_refuses_what_the_font_cannot_draw(text):
    with pytest.raises(ValueError):
        de.render_emoji(text, 32)


@needs_font
def test_render_bad_size():
    with pytest.raises(ValueError):
        de.render_emoji("😀", 0)


@needs_both
def test_load_emoji_limit():
    images, labels, names = de.load_emoji(32, limit=50)
    assert names == de.ATTRIBUTES
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3) and 45 <= len(images) <= 50
    assert labels.dtype == np.float32 and labels.shape == (len(images), len(names))
    assert set(np.unique(labels)) <= {0.0, 1.0}
    group_idx = [names.index(g) for g in de.GROUPS]
    assert (labels[:, group_idx].sum(axis=1) == 1).all()  # exactly one group each
    assert labels[:, group_idx].sum(axis=0).min() >= 1  # the evenly spread subset covers every group
    entries = de._subset(de.parse_emoji_test(), 50)
    if len(entries) == len(images):  # nothing skipped: labels must match attributes_of row by row
        for e, row in zip(entries, labels):
            assert {names[i] for i in np.flatnonzero(row)} == de.attributes_of(e)
    assert (images.reshape(len(images), -1).min(axis=1) < 200).all()  # none blank


@needs_both
def test_cache_round_trip(tmp_path, monkeypatch):
    first = de.load_emoji(16, cache_dir=str(tmp_path), limit=12)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def fail(*a, **k):
        raise AssertionError("rendered again instead of using the cache")

    monkeypatch.setattr(de, "render_emoji", fail)
    second = de.load_emoji(16, cache_dir=str(tmp_path), limit=12)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[0].dtype == second[0].dtype and first[1].dtype == second[1].dtype == np.float32
    assert second[2] == de.ATTRIBUTES
    with pytest.raises(AssertionError):  # another size or limit is another cache file
        de.load_emoji(16, cache_dir=str(tmp_path), limit=13)


def test_load_bad_args():
    with pytest.raises(ValueError):
        de.load_emoji(0)
    with pytest.raises(ValueError):
        de.load_emoji(32, limit=0)
