"""Text prompts: the attribute functions on constructed images, the thresholds against the data, captions, the
tokenizer (round trip, bad input), the text encoder's padding, cross-attention against a hand-written softmax,
and the text-conditional U-Net."""
import pytest
import torch

from minidiff import captions as C
from minidiff.text import VOCAB, TextConditionedUNet, TextEncoder, Tokenizer
from minidiff.unet import CrossAttention, UNet


def canvas(value=-1.0):
    return torch.full((1, 1, 28, 28), value, dtype=torch.float64)


# ------------------------------------------------------------------------------------------ attributes
def test_brightness_is_the_mean_intensity_of_the_garment():
    x = canvas()
    x[..., 4:24, 10:18] = 0.0                       # intensity 0.5 on 160 pixels
    x[..., 4:24, 18:20] = 1.0                       # intensity 1.0 on 40 pixels
    assert float(C.brightness(x)) == pytest.approx((160 * 0.5 + 40 * 1.0) / 200, abs=1e-12)
    assert float(C.brightness(canvas())) == 0.0     # no garment
    faint = canvas(-0.95)                           # intensity 0.025 < 5% of the range: background
    assert float(C.brightness(faint)) == 0.0


def test_width_is_the_mean_coverage_of_the_rows_that_hold_the_garment():
    x = canvas()
    x[..., 0:10, 0:14] = 1.0                        # 10 rows half covered
    x[..., 10:20, 0:28] = 1.0                       # 10 rows fully covered; the other 8 rows empty, not counted
    assert float(C.width(x)) == pytest.approx(0.75, abs=1e-12)
    narrow, wide = canvas(), canvas()
    narrow[..., 2:26, 12:16] = 1.0
    wide[..., 2:26, 2:26] = 1.0
    assert float(C.width(narrow)) < float(C.width(wide))


def test_texture_is_zero_on_flat_fabric_and_grows_with_stripes():
    flat, striped = canvas(), canvas()
    flat[..., 4:24, 4:24] = 0.2
    striped[..., 4:24, 4:24] = 0.2
    striped[..., 4:24, 4:24:2] = 0.8                # vertical stripes, 1 px wide
    assert float(C.texture(flat)) == pytest.approx(0.0, abs=1e-12)     # the edge is not interior
    # columns of intensities 0.9 and 0.6 alternating: a 3x3 mean is 0.7 around a 0.9 pixel and 0.8 around a 0.6
    # one, so |v - local mean| is 0.2 on every interior pixel
    assert float(C.texture(striped)) == pytest.approx(0.2, abs=1e-9)


def test_thresholds_are_the_terciles_of_the_training_set():
    from minidiff.data import load_fashion_mnist

    x, y = load_fashion_mnist("train", download=False)
    computed = C.attribute_thresholds(x, y)                     # rounded to 4 decimals, as the table is
    assert computed.keys() == C.THRESHOLDS.keys()
    for name, rows in C.THRESHOLDS.items():
        # the measures are float32 sums whose last bits depend on the CPU's summation order: a value that sits
        # on a rounding boundary may round the other way, one unit in the 4th decimal
        torch.testing.assert_close(torch.tensor(computed[name], dtype=torch.float64),
                                   torch.tensor(rows, dtype=torch.float64), rtol=0, atol=1.01e-4, msg=name)
    # a third of each class below its lower tercile, a third above the upper one
    words = C.attribute_words(x[:6000], y[:6000])
    dark = sum(w.get("brightness") == "dark" for w in words) / len(words)
    assert abs(dark - 1 / 3) < 0.03                   # 6000 images: the standard error is 0.006


def test_captions_name_only_clear_attributes():
    label = 9                                         # ankle boot
    low = {name: C.THRESHOLDS[name][label][0] for name in C.ATTRIBUTES}
    assert C.caption({}, label) == "an ankle boot"
    assert C.caption({"texture": "plain", "brightness": "dark"}, label) == "a dark plain ankle boot"
    assert C.caption({"width": "wide"}, 8) == "a wide bag"
    x = canvas().float()
    x[..., 8:20, 2:26] = 2 * (low["brightness"] - 0.2) - 1      # a flat grey block darker than most ankle boots
    words = C.attribute_words(x, torch.tensor([label]))[0]
    assert words["brightness"] == "dark" and words["texture"] == "plain"
    assert C.captions(x, torch.tensor([label]))[0].startswith("a dark")


# ------------------------------------------------------------------------------------------ the tokenizer
def test_tokenizer_round_trip_and_padding():
    tok = Tokenizer()
    prompts = ["a dark wide patterned ankle boot", "", "an ankle boot", "A Light Coat"]
    ids = tok.encode(prompts)
    assert ids.shape == (4, tok.max_tokens) and ids.dtype == torch.long
    assert bool((ids[:, 0] == 1).all())                               # <start> first, always
    assert ids[1].tolist() == [1] + [0] * (tok.max_tokens - 1)        # the empty prompt
    assert tok.decode(ids) == [p.lower() for p in prompts]
    for caption in C.captions(*[t[:200] for t in __import__("minidiff").data.load_fashion_mnist("test",
                                                                                               download=False)]):
        assert tok.decode(tok.encode(caption)) == [caption]


def test_tokenizer_rejects_unknown_words_long_prompts_and_non_strings():
    tok = Tokenizer()
    with pytest.raises(ValueError, match="does not know: hat.*it knows"):
        tok.encode("a dark hat")
    with pytest.raises(ValueError, match="does not know: <pad>"):
        tok.encode("a <pad> coat")
    with pytest.raises(ValueError, match="8 words; at most 7 fit"):
        tok.encode("a dark light wide narrow plain patterned coat")
    with pytest.raises(TypeError, match="prompts must be a string or a list of strings"):
        tok.encode(["a coat", 3])
    with pytest.raises(ValueError, match="vocab must start with"):
        Tokenizer(vocab=["a", "b"])


# ------------------------------------------------------------------------------------------ the encoder
def test_text_encoder_ignores_padding():
    """Real tokens' vectors do not depend on how much padding follows, nor on what the padded slots hold."""
    torch.manual_seed(0)
    enc = TextEncoder(max_tokens=12).eval()
    short = Tokenizer(max_tokens=6).encode(["a dark coat", ""])
    long = Tokenizer(max_tokens=12).encode(["a dark coat", ""])
    with torch.no_grad():
        v_short, m_short = enc(short)
        v_long, m_long = enc(long)
    assert m_short.sum(1).tolist() == [4, 1] == m_long.sum(1).tolist()
    torch.testing.assert_close(v_short[m_short], v_long[m_long], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ cross-attention
def reference_cross_attention(layer, x, context, mask):
    """softmax(q k^T / sqrt(d) + (-inf at padding)) v, head by head, written out in float64."""
    B, C, H, W = x.shape
    nh, hd = layer.heads, C // layer.heads
    q = layer.q(layer.norm(x)).reshape(B, nh, hd, H * W).transpose(2, 3)            # (B, nh, HW, hd)
    kv = layer.kv(context)                                                            # (B, L, 2C)
    k = kv[..., :C].reshape(B, -1, nh, hd).transpose(1, 2)                            # (B, nh, L, hd)
    v = kv[..., C:].reshape(B, -1, nh, hd).transpose(1, 2)
    scores = q @ k.transpose(2, 3) / hd ** 0.5                                        # (B, nh, HW, L)
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    h = (scores.softmax(-1) @ v).transpose(2, 3).reshape(B, C, H, W)
    return x + layer.proj(h)


@torch.no_grad()
def test_cross_attention_equals_the_softmax_formula_and_ignores_padding():
    torch.manual_seed(0)
    layer = CrossAttention(64, 16, num_groups=8).double()
    torch.nn.init.normal_(layer.proj.weight)                   # zero at initialisation: make it count here
    x, context = torch.randn(2, 64, 5, 5, dtype=torch.float64), torch.randn(2, 6, 16, dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False, False, False], [True] * 6])
    out = layer(x, context, mask)
    torch.testing.assert_close(out, reference_cross_attention(layer, x, context, mask), rtol=1e-10, atol=1e-10)
    changed = context.clone()
    changed[0, 3:] = 100.0                                     # only padded tokens of prompt 0
    torch.testing.assert_close(layer(x, changed, mask)[0], out[0], rtol=1e-12, atol=1e-12)
    changed[0, 1] += 1.0                                       # a real token: the output moves
    assert float((layer(x, changed, mask)[0] - out[0]).abs().max()) > 1e-3


def test_cross_attention_starts_as_the_identity():
    layer = CrossAttention(32, 8, num_groups=8)
    x = torch.randn(2, 32, 4, 4)
    assert torch.equal(layer(x, torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool)), x)


def test_unet_with_context_checks_it():
    unet = UNet(in_channels=4, base_channels=32, channel_mults=(1,), attention_levels=(True,), context_dim=16)
    x, ctx = torch.randn(2, 4, 7, 7), (torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool))
    assert unet(x, 10, context=ctx).shape == x.shape
    assert unet.config["context_dim"] == 16 and "context_dim" not in UNet().config
    with pytest.raises(TypeError, match="context must be a tuple"):
        unet(x, 10)
    with pytest.raises(ValueError, match=r"context vectors must have shape \(2, L, 16\)"):
        unet(x, 10, context=(torch.randn(2, 5, 8), ctx[1]))
    with pytest.raises(ValueError, match="at least one token"):
        unet(x, 10, context=(ctx[0], torch.zeros(2, 5, dtype=torch.bool)))
    with pytest.raises(ValueError, match="context must be None"):
        UNet(in_channels=4, channel_mults=(1,), attention_levels=(True,))(x, 10, context=ctx)


def tiny_text_model(prompts, **kw):
    torch.manual_seed(0)
    model = TextConditionedUNet(prompts=prompts, unet=dict(in_channels=4, base_channels=32, channel_mults=(1,),
                                                           attention_levels=(True,)), text=dict(dim=32), **kw)
    with torch.no_grad():
        for p in model.parameters():                          # past the zero initialisation of the output layers
            if p.ndim > 1:
                torch.nn.init.normal_(p, std=0.05)
    return model.eval()


@torch.no_grad()
def test_text_conditioned_unet_reads_its_prompt_table():
    model = tiny_text_model(["a dark coat", "a light coat"])
    assert model.num_classes == 2
    x, t = torch.randn(1, 4, 7, 7).expand(3, -1, -1, -1), torch.tensor([500, 500, 500])
    out = model(x, t, torch.tensor([0, 1, 2]))                 # the two prompts, then index 2: the empty prompt
    assert out.shape == x.shape
    assert float((out[0] - out[1]).abs().max()) > 1e-4         # one x_t, two prompts: two predictions
    torch.testing.assert_close(model(x, t), model(x, t, torch.tensor([2, 2, 2])))    # None: the empty prompt
    other = model.with_prompts(["a light coat", "an ankle boot"], negative="a dark coat")
    assert other.unet is model.unet and other.num_classes == 2 and model.prompts == ["a dark coat", "a light coat"]
    torch.testing.assert_close(other(x, t, torch.tensor([0, 0, 0])), model(x, t, torch.tensor([1, 1, 1])))
    # the unconditional branch of the new table is its negative prompt
    torch.testing.assert_close(other(x, t, torch.tensor([2, 2, 2])), model(x, t, torch.tensor([0, 0, 0])))
    with pytest.raises(ValueError, match=r"y must contain class labels in \[0, 2\]"):
        model(x, t, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="does not know: hat"):
        model.with_prompts(["a hat"])
    with pytest.raises(ValueError, match="prompts must be a non-empty list"):
        model.with_prompts("a coat")
    assert len(VOCAB) == model.text_encoder.config["vocab_size"]


def test_text_model_checkpoints_round_trip(tmp_path):
    from minidiff.checkpoint import build_model, model_spec

    model = tiny_text_model(C.all_captions()[:5])
    rebuilt = build_model(model_spec(model))
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.prompts == model.prompts and rebuilt.config == model.config
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x, 3, torch.tensor([0, 4])), model(x, 3, torch.tensor([0, 4])))


# ------------------------------------------------------------------------------------------ the grammar
def test_every_caption_parses_back():
    every = C.all_captions()
    assert len(every) == 10 * 27 and len(set(every)) == len(every)    # 3 choices for each of 3 attributes
    for prompt in every:
        label, words = C.parse_caption(prompt)
        assert C.caption(words, label) == prompt
    assert C.parse_caption("A  Dark ankle boot") == (9, {"brightness": "dark"})


@pytest.mark.parametrize("prompt", ["a coat dark", "dark coat", "a hat", "a dark dark coat", "a light dark coat",
                                    "an coat", "a plain dark coat", "coat", ""])
def test_prompts_outside_the_grammar_are_refused(prompt):
    with pytest.raises(ValueError, match="is not a caption of the form"):
        C.parse_caption(prompt)


def test_caption_labels_index_a_table_and_drop_attributes():
    from minidiff.data import load_fashion_mnist

    x, y = load_fashion_mnist("test", download=False)
    x, y = x[:3000], y[:3000]
    idx, table = C.caption_labels(x, y, generator=torch.Generator().manual_seed(0))
    assert table == sorted(set(table)) and set(table) <= set(C.all_captions())
    full = C.captions(x, y)
    for i in range(0, 3000, 97):
        label, kept = C.parse_caption(table[idx[i]])
        assert label == int(y[i])
        assert kept.items() <= C.parse_caption(full[i])[1].items()          # a subset of the image's attributes
    named = sum(len(C.parse_caption(table[i])[1]) for i in idx.tolist())
    clear = sum(len(C.parse_caption(c)[1]) for c in full)
    assert abs(named / clear - 0.5) < 0.05                    # each kept with probability 1/2 (sd about 0.007)
    none, _ = C.caption_labels(x[:50], y[:50], keep=0.0)
    assert all(C.parse_caption(_[i])[1] == {} for i in none.tolist())


def dark_and_light(label):
    """Two ankle-boot-sized blocks, one below the class's lower brightness tercile and one above its upper."""
    dark = canvas().float()
    dark[..., 8:20, 2:26] = 2 * (C.THRESHOLDS["brightness"][label][0] - 0.2) - 1
    light = canvas().float()
    light[..., 8:20, 2:26] = 2 * (C.THRESHOLDS["brightness"][label][1] + 0.1) - 1
    return dark, light


def test_attribute_agreement_counts_the_words_shown():
    label = 9
    dark, light = dark_and_light(label)
    images = torch.cat([dark, light, dark])
    out = C.attribute_agreement(images, ["a dark ankle boot", "a dark ankle boot", "a light ankle boot"])
    assert out["brightness"] == {"asked": 3, "agreement": 1 / 3, "words": {"dark": {"asked": 2, "agreement": 0.5},
                                                                        "light": {"asked": 1, "agreement": 0.0}}}
    assert out["width"] == {"asked": 0, "agreement": None, "words": {"narrow": {"asked": 0, "agreement": None},
                                                                     "wide": {"asked": 0, "agreement": None}}}


def test_word_shares_count_each_word_shown_and_are_a_third_each_on_real_images():
    label = 9
    dark, light = dark_and_light(label)
    shares = C.word_shares(torch.cat([dark, light, dark, dark]), torch.full((4,), label))
    assert shares["brightness"] == {"dark": 0.75, "light": 0.25}
    with pytest.raises(ValueError, match="one length"):
        C.word_shares(dark, torch.tensor([label, label]))
    from minidiff.data import load_fashion_mnist

    x, y = load_fashion_mnist("train", download=False)
    real = C.word_shares(x, y)                  # the terciles were made from these 60,000 images: a third each,
    for name, pair in C.ATTRIBUTES.items():     # up to the 4-decimal rounding of the thresholds
        for word in pair:
            assert abs(real[name][word] - 1 / 3) < 0.005, (name, word, real[name][word])
