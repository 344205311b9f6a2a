import hashlib
import json

import numpy as np
import pytest
import torch

import lmlib.data as data
from lmlib.data import (
    check_enough_tokens,
    epoch_batches,
    eval_window_starts,
    get_batch,
    iter_eval_batches,
    load_token_file,
    n_batches_per_epoch,
    prepare_text,
    split_tokens,
    tokenize_file,
    windows_to_batch,
)
from lmlib.errors import LmlibError, UnknownSymbolError
from lmlib.synthetic import SyntheticCorpus, synthetic_data
from lmlib.tokenizers import CharTokenizer, WordTokenizer

TEXT = "First Citizen:\nBefore we proceed, héar me spëak — 中文 😀!\n\nAll:\nSpeak, speak.\n" * 7


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "play.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def test_tokenize_file_char(text_file):
    tf = tokenize_file(text_file)
    assert tf.bin_path == text_file.with_name("play.char.bin")
    meta = json.loads(text_file.with_name("play.char.json").read_text())
    raw = text_file.read_bytes()
    assert meta == {**meta, "format": "lmlib-tokens", "version": 1, "dtype": "uint16", "n_tokens": len(TEXT),
                    "vocab_size": len(set(TEXT)), "source": "play.txt", "source_bytes": len(raw),
                    "source_sha256": hashlib.sha256(raw).hexdigest()}
    assert isinstance(tf.tokens, np.memmap) and tf.tokens.dtype == np.uint16
    assert tf.tokenizer == CharTokenizer.fit(TEXT) and tf.tokenizer.decode(tf.tokens) == TEXT
    assert sorted(p.name for p in text_file.parent.iterdir()) == ["play.char.bin", "play.char.json", "play.txt"]


@pytest.mark.parametrize("chunk_bytes", [16, 17, 23, 64])
def test_small_chunks_never_split_characters_or_words(text_file, tmp_path, chunk_bytes):
    char = tokenize_file(text_file, tmp_path / "c", chunk_bytes=chunk_bytes)
    assert np.array_equal(char.tokens, CharTokenizer.fit(TEXT).encode_array(TEXT))
    word = tokenize_file(text_file, tmp_path / "w", kind="word", chunk_bytes=chunk_bytes)
    ref = WordTokenizer.fit(TEXT)
    assert word.tokenizer == ref and word.tokens.tolist() == ref.encode(TEXT)


def test_tokenize_file_with_given_tokenizer(text_file, tmp_path):
    tok = CharTokenizer.fit(TEXT + "xyz")
    tf = tokenize_file(text_file, tmp_path / "out.bin", tokenizer=tok)
    assert tf.tokenizer == tok and tf.bin_path == tmp_path / "out.bin"
    with pytest.raises(LmlibError, match="does not match"):
        tokenize_file(text_file, tmp_path / "x", kind="word", tokenizer=tok)


def test_unknown_symbol_is_reported_with_file_position_and_leaves_old_files(text_file, tmp_path):
    good = tokenize_file(text_file, tmp_path / "t")
    before = good.bin_path.read_bytes()
    tok = CharTokenizer.fit(TEXT.replace("😀", ""))
    with pytest.raises(UnknownSymbolError, match=f"unknown character '😀' at character {TEXT.index('😀')};"):
        tokenize_file(text_file, tmp_path / "t", tokenizer=tok, chunk_bytes=32)
    # The failed run left the previous token file intact and no temporary files.
    assert good.bin_path.read_bytes() == before
    assert load_token_file(tmp_path / "t").n_tokens == len(TEXT)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_word_tokens_need_uint32_for_big_vocabularies(tmp_path):
    p = tmp_path / "words.txt"
    p.write_text(" ".join(f"w{i}" for i in range(70_000)), encoding="utf-8")
    tf = tokenize_file(p, kind="word")
    assert tf.meta["dtype"] == "uint32" and tf.tokens.dtype == np.uint32
    assert tf.tokenizer.decode(tf.tokens[-2:]) == "w69998 w69999"


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"hello\x00world", "NUL byte at byte offset 5"),
    (b"ab\n" * 20 + b"\xff" + b"tail", "not valid UTF-8 at byte offset 60"),
    ("ok é".encode()[:-1], "not valid UTF-8 at byte offset 3"),  # cut in the middle of "é"
])
def test_bad_text_files(tmp_path, content, message):
    p = tmp_path / "in.txt"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(LmlibError, match=message):
        tokenize_file(p, chunk_bytes=16)
    with pytest.raises(LmlibError):
        tokenize_file(tmp_path, tmp_path / "x")  # a directory is not a text file


def test_corrupt_token_files(text_file, tmp_path):
    tf = tokenize_file(text_file, tmp_path / "t")
    with open(tf.bin_path, "r+b") as f:
        f.truncate(10)
    with pytest.raises(LmlibError, match="corrupt token file .* re-run tokenize"):
        load_token_file(tmp_path / "t.json")
    (tmp_path / "t.json").write_text("{", encoding="utf-8")
    with pytest.raises(LmlibError, match="not JSON"):
        load_token_file(tmp_path / "t")
    (tmp_path / "t.json").write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(LmlibError, match="not an lmlib token file"):
        load_token_file(tmp_path / "t")
    with pytest.raises(LmlibError, match="does not exist"):
        load_token_file(tmp_path / "nothing")


def test_prepare_text_caches_and_splits(text_file, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    d = prepare_text(text_file, kind="char", cache_dir=cache)
    assert len(d.train) == round(len(TEXT) * 0.8) and len(d.train) + len(d.val) == len(TEXT)
    assert d.tokenizer.decode(np.concatenate([d.train, d.val])) == TEXT and d.name == "play"
    assert len(list(cache.glob("*.bin"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("should have reused the cached token file")
    monkeypatch.setattr(data, "tokenize_file", fail)
    again = prepare_text(text_file, kind="char", cache_dir=cache)
    assert np.array_equal(again.val, d.val)
    monkeypatch.undo()
    text_file.write_text(TEXT + "more", encoding="utf-8")  # a changed text gets its own cache entry
    assert len(prepare_text(text_file, kind="char", cache_dir=cache).val) == round((len(TEXT) + 4) * 0.2)
    assert len(list(cache.glob("*.bin"))) == 2
    word = prepare_text(text_file, kind="word", cache_dir=cache, val_fraction=0.5)
    assert word.tokenizer.kind == "word" and abs(len(word.train) - len(word.val)) <= 1
    with pytest.raises(LmlibError, match="unknown tokenizer kind"):
        prepare_text(text_file, kind="unigram", cache_dir=cache)


def test_prepare_text_rebuilds_a_corrupt_cache(text_file, tmp_path):
    cache = tmp_path / "cache"
    expected = np.array(prepare_text(text_file, cache_dir=cache).train)  # a copy, not the memmap
    next(cache.glob("*.bin")).write_bytes(b"xx")
    assert np.array_equal(prepare_text(text_file, cache_dir=cache).train, expected)


def test_split_tokens():
    t = np.arange(100)
    train, val = split_tokens(t)
    assert train.tolist() == list(range(80)) and val.tolist() == list(range(80, 100))
    assert len(split_tokens(t, 0.29)[1]) == 29
    train, val = split_tokens(t, 0)
    assert len(train) == 100 and len(val) == 0
    for bad in (1.0, -0.1, "0.2"):
        with pytest.raises(LmlibError, match="val_fraction"):
            split_tokens(t, bad)


def test_synthetic_data():
    d = synthetic_data(n_tokens=10_000, seed=3)
    assert len(d.train) == 8_000 and len(d.val) == 2_000 and d.tokenizer.vocab == d.corpus.vocab
    assert np.array_equal(d.val, synthetic_data(n_tokens=10_000, seed=3).val)
    assert d.meta["entropy_per_token"] == pytest.approx(d.corpus.entropy_per_token())
    by_sentences = synthetic_data(n_sentences=100, val_fraction=0)
    assert (by_sentences.train == d.tokenizer.stoi["."]).sum() == 100 and len(by_sentences.val) == 0
    with pytest.raises(LmlibError, match="not both"):
        synthetic_data(n_tokens=10, n_sentences=10)
    with pytest.raises(LmlibError, match="not both"):
        synthetic_data(holdout=["hello world"], corpus=SyntheticCorpus())


def test_synthetic_holdout_appears_in_neither_split():
    held = "the dog sat on the rug ."
    d = synthetic_data(n_tokens=200_000, holdout=[held])
    pattern = np.array(d.tokenizer.encode(held))
    for split in (d.train, d.val):
        windows = np.lib.stride_tricks.sliding_window_view(split, len(pattern))
        assert not (windows == pattern).all(axis=1).any()
    # ...whereas without holdout it is frequent enough to show up.
    full = synthetic_data(n_tokens=200_000).train
    assert (np.lib.stride_tricks.sliding_window_view(full, len(pattern)) == pattern).all(axis=1).any()


def test_check_enough_tokens():
    check_enough_tokens(np.arange(9), 8)
    with pytest.raises(LmlibError, match="need at least block_size\\+1 = 9 tokens, got 8"):
        check_enough_tokens(np.arange(8), 8)


def test_get_batch_shapes_shift_and_resumable_generator(text_file, tmp_path):
    tokens = tokenize_file(text_file, tmp_path / "t").tokens  # a memmap
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    x, y = get_batch(tokens, 4, 8, g)
    assert x.shape == y.shape == (4, 8) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and x.is_contiguous() and y.is_contiguous()
    for row in range(4):  # each row is a real window of the token array
        start = np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(tokens, 8) == x[row].numpy(), 1))
        assert len(start) >= 1 and tokens[start[0] + 8] == y[row, -1]
    x2, _ = get_batch(tokens, 4, 8, g)
    g.set_state(state)  # restoring the generator replays the same batches
    assert torch.equal(get_batch(tokens, 4, 8, g)[0], x) and torch.equal(get_batch(tokens, 4, 8, g)[0], x2)


def test_windows_to_batch_bounds():
    t = np.arange(20)
    x, y = windows_to_batch(t, [0, 11], 8)
    assert x[1].tolist() == list(range(11, 19)) and y[1].tolist() == list(range(12, 20))
    with pytest.raises(LmlibError, match="window starts"):
        windows_to_batch(t, [12], 8)


def test_epoch_batches_are_a_pure_shuffle_of_disjoint_windows():
    t = np.arange(1001)
    batches = epoch_batches(t, 8, 10, seed=1, epoch=0)
    assert len(batches) == n_batches_per_epoch(t, 8, 10) == n_batches_per_epoch(1001, 8, 10) == 12  # 100 // 8
    starts = np.concatenate(batches)
    assert len(set(starts.tolist())) == 96 and all(s % 10 == 0 and s + 10 < 1001 for s in starts)
    assert all(np.array_equal(a, b) for a, b in zip(batches, epoch_batches(t, 8, 10, seed=1, epoch=0)))
    assert not np.array_equal(starts, np.concatenate(epoch_batches(t, 8, 10, seed=1, epoch=1)))
    small = epoch_batches(np.arange(31), 8, 10, seed=0, epoch=0)  # 3 windows < batch_size: one smaller batch
    assert len(small) == 1 and sorted(small[0].tolist()) == [0, 10, 20]


def test_iter_eval_batches_cover_the_split_in_order():
    t = np.arange(105)
    batches = list(iter_eval_batches(t, 4, 10))
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    ys = torch.cat([y for _, y in batches]).reshape(-1)
    assert ys.tolist() == list(range(1, 101))  # every target once, no overlap
    limited = list(iter_eval_batches(t, 2, 10, max_batches=1))
    assert len(limited) == 1 and limited[0][0][:, 0].tolist() == [0, 90]  # spread over the split
    assert eval_window_starts(105, 10, max_windows=3).tolist() == [0, 40, 90]
    with pytest.raises(LmlibError, match="need at least"):
        iter_eval_batches(np.arange(5), 4, 10)


def test_token_file_splits_read_windows_without_mapping_the_file(tmp_path):
    import sys

    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefgh \n"), 4_000_000))
    (tmp_path / "big.txt").write_text(text)
    tf = tokenize_file(tmp_path / "big.txt", tmp_path / "big")
    train, val = split_tokens(tf.tokens, 0.25)
    plain = np.asarray(tf.tokens)
    assert len(train) == 3_000_000 and np.array_equal(val[:10], plain[3_000_000:3_000_010])
    for part, base in ((train, 0), (val, 3_000_000)):
        starts = np.array([0, 17, len(part) - 9])
        x, y = data.windows_to_batch(part, starts, 8)
        expected = np.stack([plain[base + s: base + s + 9] for s in starts])
        assert np.array_equal(x.numpy(), expected[:, :-1]) and np.array_equal(y.numpy(), expected[:, 1:])
    view = train[1000:]  # a view of a map still works, through the map
    x, _ = data.windows_to_batch(view, np.array([5]), 8)
    assert np.array_equal(x.numpy()[0], plain[1005:1013])
    if sys.platform.startswith("linux"):
        def mapped_file_kb():
            return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssFile"))

        before = mapped_file_kb()
        g = torch.Generator().manual_seed(0)
        for _ in range(100):
            get_batch(train, 32, 64, g)
        assert mapped_file_kb() - before < 1024  # 3,200 random windows of an 8 MB file: nothing stays mapped


def test_data_layer_imports_neither_the_synthetic_dataset_nor_the_downloader():
    # lmlib.synthetic builds on lmlib.data, never the reverse (no import cycle, no shim).
    import subprocess
    import sys

    code = ("import sys, lmlib.data as d; assert 'lmlib.synthetic' not in sys.modules, 'cycle';"
            " assert 'lmlib.download' not in sys.modules, 'download'; assert not hasattr(d, 'synthetic_data')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_token_file_cut_short_after_opening_is_refused(tmp_path):
    from lmlib.data import _read_windows

    path = tmp_path / "t.bin"
    np.arange(1000, dtype=np.uint16).tofile(path)
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    assert _read_windows(tokens, np.array([0, 10]), 5).tolist() == [[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]]
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(LmlibError, match="shorter"):
        _read_windows(tokens, np.array([48]), 5)


def test_a_failed_retokenization_keeps_the_old_token_file(text_file, tmp_path):
    old = tokenize_file(text_file, tmp_path / "t")
    before = (old.bin_path.read_bytes(), old.bin_path.with_suffix(".json").read_bytes())
    with pytest.raises(UnknownSymbolError):
        tokenize_file(text_file, tmp_path / "t", tokenizer=CharTokenizer.fit("abc"))
    after = (old.bin_path.read_bytes(), old.bin_path.with_suffix(".json").read_bytes())
    assert after == before and sorted(p.name for p in tmp_path.iterdir()) == ["play.txt", "t.bin", "t.json"]


def test_the_default_validation_fraction_is_written_once():
    # Every val_fraction default in these modules is DEFAULT_VAL_FRACTION, never a literal.
    import ast
    import inspect

    import lmlib.synthetic
    import lmlib.tokenfile

    for module in (data, lmlib.synthetic, lmlib.tokenfile):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.posonlyargs + node.args.args
                pairs = list(zip(args[len(args) - len(node.args.defaults):], node.args.defaults))
                pairs += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None]
                for arg, default in pairs:
                    if arg.arg == "val_fraction":
                        assert ast.unparse(default) == "DEFAULT_VAL_FRACTION", (module.__name__, node.name)
    assert inspect.signature(lmlib.synthetic.synthetic_data).parameters["val_fraction"].default == 0.2
    assert data.DEFAULT_VAL_FRACTION == 0.2
