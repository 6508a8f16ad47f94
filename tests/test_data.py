"""mininn.data: the registry, the IDX reader and fetch, on tiny files in tmp_path."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading

import numpy as np
import pytest
from _idx import idx_bytes, tiny_dataset_info, write_idx, write_tiny_dataset

from mininn import data
from mininn.data import DATASETS, DatasetInfo, DatasetNotFoundError, fetch, load_split, read_idx

# ------------------------------------------------------------------ registry


def test_registry_holds_both_datasets():
    assert set(DATASETS) == {"mnist", "fashion-mnist"}
    for info in DATASETS.values():
        assert len(info.files) == 4
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in info.sha256.values())
        assert info.num_classes == 10
        assert all(url.endswith("/") for url in info.urls)
    assert DATASETS["fashion-mnist"].classes[0] == "T-shirt/top"
    assert DATASETS["fashion-mnist"].classes[9] == "Ankle boot"
    assert DATASETS["mnist"].classes == tuple("0123456789")
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in DATASETS["mnist"].urls


def test_registry_entries_are_frozen():
    with pytest.raises(AttributeError):
        DATASETS["mnist"].name = "other"
    with pytest.raises(TypeError):
        DATASETS["mnist"].sha256["train-images-idx3-ubyte"] = "0" * 64


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'.*fashion-mnist.*mnist"):
        data.get_dataset("cifar")


def test_dataset_info_needs_every_split_file():
    with pytest.raises(ValueError, match="no SHA-256 given for 'train-labels-idx1-ubyte'"):
        DatasetInfo("x", {"train-images-idx3-ubyte": "0" * 64}, ("a",))


# ------------------------------------------------------------------ read_idx


@pytest.mark.parametrize("suffix", [".gz", ""], ids=["gz", "plain"])
def test_read_idx_round_trip(tmp_path, suffix):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / f"x{suffix}", images)
    got = read_idx(tmp_path / f"x{suffix}", ndim=3)
    np.testing.assert_array_equal(got, images)
    assert got.dtype == np.uint8


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_other_dtypes_in_native_order(tmp_path, dtype):
    values = np.array([[-3, 1, 2], [4, 5, 6]], dtype=dtype)
    write_idx(tmp_path / "x", values)
    got = read_idx(tmp_path / "x")
    np.testing.assert_array_equal(got, values)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative


def test_read_idx_uint8_is_zero_copy_and_read_only(tmp_path):
    write_idx(tmp_path / "x", np.zeros((3, 2, 2), np.uint8))
    got = read_idx(tmp_path / "x")
    assert not got.flags.writeable
    assert not got.flags.owndata  # a view of the bytes read, not a copy


def test_read_idx_truncated(tmp_path):
    (tmp_path / "x").write_bytes(idx_bytes(np.zeros((3, 2, 2), np.uint8))[:-1])
    with pytest.raises(ValueError, match=r"x: IDX data truncated.*needs 12 bytes.*got 11"):
        read_idx(tmp_path / "x")


def test_read_idx_too_long(tmp_path):
    (tmp_path / "x.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8)) + b"\0"))
    with pytest.raises(ValueError, match=r"x\.gz: IDX data too long.*needs 4 bytes.*got 5"):
        read_idx(tmp_path / "x.gz")


def test_read_idx_wrong_magic(tmp_path):
    (tmp_path / "x").write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x07")
    with pytest.raises(ValueError, match=r"bad IDX magic number.*expected two zero bytes"):
        read_idx(tmp_path / "x")


def test_read_idx_gzip_without_gz_name(tmp_path):
    (tmp_path / "x").write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8))))
    with pytest.raises(ValueError, match=r"gzip-compressed without a \.gz name"):
        read_idx(tmp_path / "x")


def test_read_idx_wrong_dtype_code(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x0a\x01\x00\x00\x00\x01\x07")
    with pytest.raises(ValueError, match=r"data-type code: expected one of 0x08.*got 0x0a"):
        read_idx(tmp_path / "x")


def test_read_idx_wrong_ndim(tmp_path):
    write_idx(tmp_path / "x", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="expected an IDX file with 3 dimensions, got 1"):
        read_idx(tmp_path / "x", ndim=3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x00", "shorter than the header"),
        (b"\x00\x00\x08\x00", "expected at least 1 dimension, got 0"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated IDX header: expected 12 bytes"),
    ],
    ids=["short", "zero-dims", "short-header"],
)
def test_read_idx_bad_header(tmp_path, content, message):
    (tmp_path / "x").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_idx(tmp_path / "x")


def test_read_idx_corrupt_gzip(tmp_path):
    (tmp_path / "x.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ValueError, match=r"x\.gz: not a valid gzip file"):
        read_idx(tmp_path / "x.gz")


def test_load_split_checks_consistency(tmp_path):
    info = DATASETS["mnist"]
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="train split has 3 images but 2 labels"):
        load_split(tmp_path, "train", info)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 10], np.uint8))
    with pytest.raises(ValueError, match="label 10 out of range for 10 classes"):
        load_split(tmp_path, "train", info)
    with pytest.raises(ValueError, match="split: expected one of"):
        load_split(tmp_path, "val", info)


# ------------------------------------------------------------------ fetch


@pytest.mark.parametrize(
    ("gz", "subfolder"),
    [(True, True), (False, True), (True, False), (False, False)],
    ids=["name/file.gz", "name/file", "file.gz", "file"],
)
def test_fetch_from_folder_layouts(tmp_path, gz, subfolder):
    digests = write_tiny_dataset(tmp_path / "mirror", "mnist", gz=gz, subfolder=subfolder)
    info = tiny_dataset_info("mnist", digests)
    out = fetch(info, tmp_path / "raw", sources=[tmp_path / "mirror"])
    assert out == tmp_path / "raw"
    assert sorted(p.name for p in out.iterdir()) == sorted(info.files)
    for file, digest in digests.items():  # written uncompressed, byte-identical
        assert hashlib.sha256((out / file).read_bytes()).hexdigest() == digest
    images, labels = load_split(out, "train", info)
    assert images.shape == (60, 28, 28) and labels.shape == (60,)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_fetch_wrong_digest_falls_through_to_next_source(tmp_path):
    digests = write_tiny_dataset(tmp_path / "good", "mnist", seed=0)
    write_tiny_dataset(tmp_path / "bad", "mnist", seed=1)  # same names, other content
    info = tiny_dataset_info("mnist", digests)
    out = fetch(info, tmp_path / "raw", sources=[tmp_path / "bad", tmp_path / "good"])
    for file, digest in digests.items():
        assert hashlib.sha256((out / file).read_bytes()).hexdigest() == digest


def test_fetch_replaces_an_existing_destination(tmp_path):
    digests = write_tiny_dataset(tmp_path / "mirror", "mnist")
    info = tiny_dataset_info("mnist", digests)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "stale.txt").write_text("old")
    fetch(info, tmp_path / "raw", sources=[tmp_path / "mirror"])
    assert not (tmp_path / "raw" / "stale.txt").exists()


def test_fetch_all_sources_failing_lists_every_place_and_writes_nothing(tmp_path):
    digests = write_tiny_dataset(tmp_path / "bad", "mnist", seed=1)
    info = tiny_dataset_info("mnist", {f: "ab" * 32 for f in digests})
    (tmp_path / "corrupt" / "mnist").mkdir(parents=True)
    (tmp_path / "corrupt" / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot")
    sources = [tmp_path / "missing", tmp_path / "corrupt", tmp_path / "bad"]
    with pytest.raises(DatasetNotFoundError, match="could not obtain 4 of 4 files") as caught:
        fetch(info, tmp_path / "raw", sources=sources)
    message = str(caught.value)
    assert f"{tmp_path / 'missing'}: missing (no such folder)" in message
    assert "train-images-idx3-ubyte.gz: unreadable" in message
    assert f"wrong SHA-256: got {digests['t10k-labels-idx1-ubyte']}, expected {'ab' * 32}" in (
        message
    )
    assert "MININN_DATA_DIR" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "corrupt"]


def test_fetch_with_no_sources(tmp_path):
    info = tiny_dataset_info("mnist", {f: "0" * 64 for f in DATASETS["mnist"].files})
    with pytest.raises(DatasetNotFoundError, match="no sources given"):
        fetch(info, tmp_path / "raw", sources=[])
    assert not (tmp_path / "raw").exists()


def test_default_sources_order(monkeypatch, tmp_path):
    monkeypatch.setenv("MININN_DATA_DIR", str(tmp_path))
    sources = data.default_sources("fashion-mnist")
    assert sources[0] == tmp_path
    assert sources[1].parts[-2:] == ("shared", "datasets")
    assert sources[2].as_posix() == "/usr/share/datasets/fashion-mnist"
    assert sources[3:] == list(DATASETS["fashion-mnist"].urls)
    monkeypatch.delenv("MININN_DATA_DIR")
    assert data.default_sources("fashion-mnist")[0] == sources[1]


def test_fetch_uses_mininn_data_dir_first(monkeypatch, tmp_path):
    digests = write_tiny_dataset(tmp_path / "mirror", "mnist")
    info = tiny_dataset_info("mnist", digests)
    monkeypatch.setenv("MININN_DATA_DIR", str(tmp_path / "mirror"))
    fetch(info, tmp_path / "raw")  # found at the first default source: nothing else read
    assert len(list((tmp_path / "raw").iterdir())) == 4


@pytest.fixture
def http_mirror(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 from a thread; yields the base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_fetch_from_url(tmp_path, http_mirror):
    digests = write_tiny_dataset(tmp_path / "www", "mnist", subfolder=False)
    info = tiny_dataset_info("mnist", digests)
    out = fetch(info, tmp_path / "raw", sources=[tmp_path / "missing", http_mirror], progress=False)
    for file, digest in digests.items():
        assert hashlib.sha256((out / file).read_bytes()).hexdigest() == digest


def test_fetch_url_not_found_is_listed(tmp_path, http_mirror):
    info = tiny_dataset_info("mnist", {f: "0" * 64 for f in DATASETS["mnist"].files})
    with pytest.raises(DatasetNotFoundError, match=r"train-images-idx3-ubyte\.gz: network"):
        fetch(info, tmp_path / "raw", sources=[http_mirror], retries=0, progress=False)
    assert not (tmp_path / "raw").exists()


def test_fetch_retries_network_errors(monkeypatch, tmp_path):
    calls = []

    def refuse(url, timeout):
        calls.append((url, timeout))
        raise data.urllib.error.URLError("connection refused")

    monkeypatch.setattr(data.urllib.request, "urlopen", refuse)
    monkeypatch.setattr(data.time, "sleep", lambda s: None)
    info = tiny_dataset_info("mnist", {f: "0" * 64 for f in DATASETS["mnist"].files})
    with pytest.raises(DatasetNotFoundError, match="connection refused"):
        fetch(info, tmp_path / "raw", sources=["https://example.invalid/"], retries=2, timeout=5)
    assert len(calls) == 4 * 3 and calls[0] == (
        "https://example.invalid/train-images-idx3-ubyte.gz",
        5,
    )
