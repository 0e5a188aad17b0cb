"""The CIFAR reader on fake files in the real format, archives (a truncated one is one line and leaves no half
folder), missing or misplaced data, the tensor-op augmentation, the sampler's stream, and whether a run read the
official files."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import DONE, TINY, needs_cuda, result, write_fake_cifar

from resnet_ablate import run
from resnet_ablate.errors import UsageError
from resnet_ablate.training import cifar_archive, datacache, datasets
from resnet_ablate.training.parse import parse
from resnet_ablate.training.trainer import train


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_reads_the_standard_python_layout(tmp_path, name, classes, capsys):
    written = write_fake_cifar(tmp_path, name)
    train, test, n = datasets.read_cifar(name, tmp_path, download=False)
    assert n == classes
    assert train.images.shape == (60 if name == "cifar10" else 12, 3, 32, 32) and train.images.dtype == torch.uint8
    np.testing.assert_array_equal(train.images.numpy(), written["train"][0])
    np.testing.assert_array_equal(train.labels.numpy(), written["train"][1])
    np.testing.assert_array_equal(test.images.numpy(), written["test"][0])
    assert "official: 50000 and 10000" in capsys.readouterr().out


def test_reads_the_official_archive_without_checksum(tmp_path):
    written = write_fake_cifar(tmp_path, tar=True)
    assert not (tmp_path / "cifar-10-batches-py").exists()
    train, test, _ = datasets.read_cifar("cifar10", tmp_path, download=False)
    np.testing.assert_array_equal(test.labels.numpy(), written["test"][1])
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_pixels_are_in_cifar_order(tmp_path):
    """CIFAR rows are 1024 red, 1024 green, 1024 blue values, row-major: pixel (c, y, x) = row[c*1024 + y*32 + x]."""
    written = write_fake_cifar(tmp_path)
    train, _, _ = datasets.read_cifar("cifar10", tmp_path, download=False)
    flat = written["train"][0].reshape(-1, 3072)
    assert train.images[7, 2, 5, 9].item() == flat[7, 2 * 1024 + 5 * 32 + 9]


def test_missing_data_offline_says_where_to_put_it(tmp_path):
    with pytest.raises(UsageError) as e:
        datasets.read_cifar("cifar10", tmp_path, download=False)
    assert str(e.value) == (f"cifar10 not found in {tmp_path}: put cifar-10-python.tar.gz or its extracted "
                            f"cifar-10-batches-py/ folder there, or point data_dir= (or $RESNET_ABLATE_DATA) at "
                            f"where it is (download=false)")


def test_failed_download_is_one_line_at_the_cli(tmp_path, monkeypatch, capsys):
    """In-process through run.main (tests/test_config.py runs the CLI as a real process)."""
    env_blocked = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    for k, v in env_blocked.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    assert run.main(["depth=8", f"data_dir={tmp_path}", "iterations=1", "warmup_iters=0", "milestones=[]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cifar10 is not in {tmp_path} and could not be downloaded from "
                          "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
    assert "put cifar-10-python.tar.gz or its extracted cifar-10-batches-py/ folder there" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_broken_batch_file_is_named(tmp_path):
    write_fake_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UsageError, match="data_batch_3 is not a readable CIFAR batch file"):
        datasets.read_cifar("cifar10", tmp_path, download=False)


def test_a_batch_of_float_pixels_is_refused_in_one_line(tmp_path):
    """float32 pixels in [0, 1] loaded, cast to uint8 (all 0), without a word."""
    import pickle

    write_fake_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps({b"data": np.full((12, 3072), 0.5, np.float32), b"labels": [1] * 12}))
    with pytest.raises(UsageError, match=rf"^{batch}: its images are float32, not the uint8 pixels \(0..255\) of a "
                                         rf"CIFAR batch file; write them as uint8$"):
        datasets.read_cifar("cifar10", tmp_path, download=False)


def _assert_pad_crop_flip_of_the_normalised_images(out, images, offsets, flips, data):
    """Each augmented image is its normalised image, zero-padded by 4, cropped at its offset, flipped if asked."""
    padded = F.pad(datasets.normalize_images(images, data), (4, 4, 4, 4))
    for i in range(len(images)):
        oy, ox = offsets[i].tolist()
        ref = padded[i, :, oy:oy + 32, ox:ox + 32]
        torch.testing.assert_close(out[i], ref.flip(-1) if flips[i] else ref)


def test_augment_equals_pad_crop_flip_of_the_normalised_image():
    train, _, _ = datasets.synthetic(16)
    data = datasets.Data(train, train, None, 10, *datasets.statistics(train.images, "channel"))
    g = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 9, (16, 2), generator=g)
    flips = torch.arange(16) % 2 == 1
    out = datasets.augment(train.images, offsets, flips, data)
    _assert_pad_crop_flip_of_the_normalised_images(out, train.images, offsets, flips, data)


def test_pixel_mean_subtracts_the_mean_image():
    train, _, _ = datasets.synthetic(64)
    mean, std = datasets.statistics(train.images, "pixel_mean")
    assert mean.shape == (3, 32, 32) and std.flatten().tolist() == [1.0]
    data = datasets.Data(train, train, None, 10, mean, std)
    assert datasets.normalize_images(train.images, data).mean(0).abs().max() < 1e-4


def test_val_split_is_fixed_and_disjoint():
    train, _, _ = datasets.synthetic(200)
    a, val = datasets.hold_out(train, 50)
    b, val2 = datasets.hold_out(train, 50)
    assert len(a) == 150 and len(val) == 50 and torch.equal(val.images, val2.images)
    both = torch.cat([a.images.flatten(1), val.images.flatten(1)])
    assert torch.unique(both, dim=0).shape[0] == 200


def test_sampler_covers_each_epoch_once_and_resumes_exactly():
    s = datasets.Sampler(10, 4, seed=3, device=torch.device("cpu"), augment=True)
    first = torch.cat([s.next()[0] for _ in range(5)])  # 20 indices = two epochs
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:].tolist()) == list(range(10))
    state = s.state_dict()
    expected = [s.next() for _ in range(3)]
    t = datasets.Sampler(10, 4, seed=99, device=torch.device("cpu"), augment=True)
    t.load_state_dict(state)
    for got, want in zip([t.next() for _ in range(3)], expected):
        assert all(torch.equal(a, b) for a, b in zip(got, want))


# --- issue 28: the data's identity and the pixel-mean order ------------------------------------------------

@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_batch_files_are_checked_against_the_official_md5_and_a_copy_still_loads(tmp_path, name, monkeypatch):
    import hashlib
    write_fake_cifar(tmp_path, name)
    folder = tmp_path / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    copy = datasets.load(name, tmp_path, False, "channel", 0, 0)
    assert copy.official is False and len(copy.train) > 0  # labelled, never refused
    assert "not the official files (md5 differ)" in copy.source
    assert set(datasets.OFFICIAL_MD5[name]) == {p.name for p in folder.iterdir()}  # torchvision's list, every file
    sums = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    monkeypatch.setitem(datasets.OFFICIAL_MD5, name, sums)  # these fake files as if they were the official ones
    official = datasets.load(name, tmp_path, False, "channel", 0, 0)
    assert official.official is True and "the official files (md5)" in official.source
    assert official.to(torch.device("cpu")).official is True
    assert datasets.load("synthetic", tmp_path, False, "channel", 0, 64).official is False


def test_pixel_mean_is_subtracted_before_the_crop_so_it_stays_aligned_with_its_pixels():
    """Issue 28 item 9: normalise, then crop, then zero the padding (the mean image was subtracted after the
    crop, at the crop's coordinates)."""
    train, _, _ = datasets.synthetic(16)
    data = datasets.Data(train, train, None, 10, *datasets.statistics(train.images, "pixel_mean"))
    data.mean = data.mean + torch.arange(32.0)  # a mean image that differs from pixel to pixel
    g = torch.Generator().manual_seed(1)
    offsets = torch.randint(0, 9, (16, 2), generator=g)
    offsets[0] = torch.tensor([0, 8])  # the corners: padding on two sides
    flips = torch.arange(16) % 3 == 1  # the first one unflipped
    out = datasets.augment(train.images, offsets, flips, data)
    _assert_pad_crop_flip_of_the_normalised_images(out, train.images, offsets, flips, data)
    assert (out[0, :, :4, :] == 0).all() and (out[0, :, :, -4:] == 0).all()  # zeros in normalised space


def _archive(root, members):
    """A cifar-10-python.tar.gz in `root` with `members`: (TarInfo, bytes or None)."""
    import io
    import tarfile

    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return root / "cifar-10-python.tar.gz"


def _member(name, data=b"", kind=None, link=""):
    import tarfile

    info = tarfile.TarInfo(name)
    info.size, info.mode = (len(data) if kind is None else 0), 0o644
    if kind is not None:
        info.type, info.linkname = kind, link
    return info, (data if kind is None else None)


@pytest.mark.parametrize("member,why", [
    (("../../escaped", b"x"), "a path outside data_dir"),
    (("/etc/evil", b"x"), "a path outside data_dir"),
    (("cifar-10-batches-py/data_batch_1", b"", "2", "/etc/passwd"), "a link"),
    (("cifar-10-batches-py/data_batch_2", b"", "1", "cifar-10-batches-py/x"), "a link"),
    (("cifar-10-batches-py/fifo", b"", "6"), "a device or other special file"),
])
def test_a_hostile_archive_is_called_unsafe_and_nothing_is_extracted(member, why, tmp_path):
    import tarfile

    name, data, *kind = member
    info = _member(name, data, kind[0].encode() if kind else None, kind[1] if len(kind) > 1 else "")
    if kind:
        info[0].type = {"1": tarfile.LNKTYPE, "2": tarfile.SYMTYPE, "6": tarfile.FIFOTYPE}[kind[0]]
    archive = _archive(tmp_path, [_member("cifar-10-batches-py/", kind=tarfile.DIRTYPE), info])
    with pytest.raises(UsageError) as e:
        cifar_archive.locate("cifar10", tmp_path, download=False)
    assert str(e.value).startswith(f"{archive}: unsafe member {name} ({why}); nothing was extracted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]
    assert not (tmp_path.parent / "escaped").exists()


def test_a_member_larger_than_the_real_data_sets_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(cifar_archive.EXTRACT_LIMITS, "cifar-10-batches-py", (1000, 1500))  # real: 34 MB and 205 MB
    archive = _archive(tmp_path, [_member("cifar-10-batches-py/data_batch_1", b"\0" * 1001)])
    with pytest.raises(UsageError, match=f"{archive}: member cifar-10-batches-py/data_batch_1 is 1,001 bytes, more "
                                         f"than the real cifar-10-batches-py/ holds; nothing was extracted"):
        cifar_archive.locate("cifar10", tmp_path, download=False)
    _archive(tmp_path, [_member(f"cifar-10-batches-py/data_batch_{i}", b"\0" * 800) for i in (1, 2)])
    with pytest.raises(UsageError, match="its members add up to more than 1,500 bytes"):
        cifar_archive.locate("cifar10", tmp_path, download=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]


def test_the_real_caps_admit_the_real_sizes():
    """CIFAR-10's largest member is a 31,035,704-byte batch (10,000 rows of 3,072 bytes and their labels), its
    folder 186 MB; CIFAR-100's 155 MB training file, its folder 186 MB."""
    assert cifar_archive.EXTRACT_LIMITS["cifar-10-batches-py"][0] > 31_035_704 > 0.9 * cifar_archive.EXTRACT_LIMITS[
        "cifar-10-batches-py"][0]
    assert all(186_000_000 < total < 210_000_000 for _, total in cifar_archive.EXTRACT_LIMITS.values())
    assert 155_000_000 < cifar_archive.EXTRACT_LIMITS["cifar-100-python"][0] < 175_000_000


def test_extracted_files_follow_the_umask(tmp_path):
    import os

    write_fake_cifar(tmp_path, tar=True)
    old = os.umask(0o077)
    try:
        cifar_archive.locate("cifar10", tmp_path, download=False)
    finally:
        os.umask(old)
    folder = tmp_path / "cifar-10-batches-py"
    assert folder.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o600}


def test_a_data_dir_that_is_a_file_is_not_told_to_be_created(tmp_path):
    (tmp_path / "data").write_text("mine")
    with pytest.raises(UsageError) as e:
        cifar_archive.locate("cifar10", tmp_path / "data", download=True, create=False)
    assert str(e.value) == f"data_dir {tmp_path / 'data'} is a file, not a folder: point data_dir= (or " \
                           f"$RESNET_ABLATE_DATA) at where it is, the folder holding cifar-10-batches-py/"


class _Encoded:
    def __init__(self, data):
        self.data = data

    def __reduce__(self):
        import codecs

        return codecs.encode, self.data


class _Shaped:
    def __reduce__(self):
        return np.ndarray, ((2 ** 40,),)


@pytest.mark.parametrize("payload,kind", [(_Encoded(("x", "no-such-codec")), "LookupError"),
                                          (_Shaped(), "Refused: it asks for an array of shape (1099511627776,)")])
def test_a_batch_of_allowed_globals_that_raises_or_asks_for_a_huge_array_is_one_line(payload, kind, tmp_path):
    import pickle

    write_fake_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": payload, b"labels": [1]}, protocol=2))
    with pytest.raises(UsageError) as e:
        datasets.read_cifar("cifar10", tmp_path, download=False)
    assert str(e.value).startswith(f"{batch} is not a readable CIFAR batch file ({kind}")


def test_a_truncated_archive_is_one_line_and_leaves_no_half_folder(tmp_path):
    write_fake_cifar(tmp_path, per_file=200, tar=True)
    archive = tmp_path / "cifar-10-python.tar.gz"
    whole = archive.read_bytes()
    archive.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UsageError) as e:
        datasets.read_cifar("cifar10", tmp_path, download=False)
    assert str(e.value).startswith(f"{archive} is truncated or damaged (EOFError: ")
    assert str(e.value).endswith("; delete it and download or copy it again") and "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]  # no half-extracted folder
    archive.write_bytes(whole)  # a good archive now extracts
    assert len(datasets.read_cifar("cifar10", tmp_path, download=False)[0]) == 1000


def test_data_dir_one_level_too_deep_says_point_at_the_parent(tmp_path):
    write_fake_cifar(tmp_path)
    with pytest.raises(UsageError) as e:
        datasets.read_cifar("cifar10", tmp_path / "cifar-10-batches-py", download=False)
    assert str(e.value) == (f"data_dir={tmp_path / 'cifar-10-batches-py'} is the cifar-10-batches-py/ folder itself; "
                            f"point data_dir at its parent, {tmp_path}")


def test_a_data_dir_that_does_not_exist_is_reported_not_created(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main(["depth=8", "iterations=10", "milestones=[5]", "warmup_iters=0", "data_dir=nope"]) == 2
    assert capsys.readouterr().err == ("error: data_dir nope does not exist; create it (the data is fetched into it) "
                                       "or point data_dir= (or $RESNET_ABLATE_DATA) at where it is\n")
    assert not (tmp_path / "nope").exists()


def test_a_run_records_whether_it_read_the_official_files(tmp_path):
    """Issue 28 item 1: result.json's data_official (a copy loads all the same)."""
    write_fake_cifar(tmp_path / "data")
    args = [*DONE, "dataset=cifar10", f"data_dir={tmp_path / 'data'}", "iterations=2", "milestones=[1]",
            "eval_every=2"]
    (summary,) = train([parse([*args, f"run_dir={tmp_path / 'copy'}"])])
    assert summary["data_official"] is False and result(tmp_path / "copy")["data_official"] is False
    (synthetic,) = train([parse([*TINY, "iterations=2", "milestones=[1]", f"run_dir={tmp_path / 's'}"])])
    assert synthetic["data_official"] is False


@needs_cuda
def test_sampler_order_is_recorded_on_the_run_stream(monkeypatch):
    recorded = []
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, s: recorded.append(s))
    sampler = datasets.Sampler(10, 4, 0, torch.device("cuda"), True)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        sampler.next()
    assert recorded == [side]


# --- issue 33: the data checks once per machine (training/datacache.py) --------------------------------------

class _Counting:
    """Counts the md5s, fingerprints and statistics the loader computes."""

    def __init__(self, monkeypatch) -> None:
        self.calls = {"md5": 0, "fingerprint": 0, "statistics": 0}
        for name in self.calls:
            real = getattr(datasets, name)
            monkeypatch.setattr(datasets, name, self._counted(name, real))

    def _counted(self, name, real):
        def counted(*args, **kwargs):
            self.calls[name] += 1
            return real(*args, **kwargs)
        return counted

    def since(self, before: dict) -> dict:
        return {k: v - before[k] for k, v in self.calls.items()}


def _same_data(a: datasets.Data, b: datasets.Data) -> bool:
    return all(torch.equal(x, y) for x, y in [(a.train.images, b.train.images), (a.train.labels, b.train.labels),
                                              (a.test.images, b.test.images), (a.mean, b.mean), (a.std, b.std)]) \
        and (a.fingerprint, a.official, a.source) == (b.fingerprint, b.official, b.source)


def test_a_second_load_computes_no_md5_fingerprint_or_mean_and_writes_nothing_in_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(datacache.ENV, str(tmp_path / "cache"))
    write_fake_cifar(tmp_path / "data")
    before = sorted(p.name for p in (tmp_path / "data" / "cifar-10-batches-py").iterdir())
    count = _Counting(monkeypatch)
    first = datasets.load("cifar10", tmp_path / "data", False, "pixel_mean", 0, 0)
    assert count.calls == {"md5": 6, "fingerprint": 1, "statistics": 1}
    second = datasets.load("cifar10", tmp_path / "data", False, "pixel_mean", 0, 0)
    assert count.calls["md5"] == 6 and count.calls["statistics"] == 1  # none the second time
    assert count.calls["fingerprint"] == 2  # the cached arrays are verified, never trusted
    assert _same_data(first, second)
    assert sorted(p.name for p in (tmp_path / "data" / "cifar-10-batches-py").iterdir()) == before
    assert [p.parent.name for p in (tmp_path / "cache").rglob("checks.json")] != []


def test_the_mean_is_keyed_on_val_split_and_normalize_the_files_on_size_mtime_and_inode(tmp_path, monkeypatch):
    monkeypatch.setenv(datacache.ENV, str(tmp_path / "cache"))
    write_fake_cifar(tmp_path / "data")
    count = _Counting(monkeypatch)
    datasets.load("cifar10", tmp_path / "data", False, "pixel_mean", 0, 0)
    seen = dict(count.calls)
    held_out = datasets.load("cifar10", tmp_path / "data", False, "pixel_mean", 10, 0)
    assert count.since(seen) == {"md5": 0, "fingerprint": 1, "statistics": 1}
    torch.testing.assert_close(held_out.mean, datasets.statistics(held_out.train.images, "pixel_mean")[0])
    seen = dict(count.calls)
    datasets.load("cifar10", tmp_path / "data", False, "channel", 10, 0)
    assert count.since(seen) == {"md5": 0, "fingerprint": 1, "statistics": 1}
    batch = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_3"
    os.utime(batch, ns=(batch.stat().st_atime_ns, batch.stat().st_mtime_ns + 1))  # same bytes, touched
    seen = dict(count.calls)
    datasets.load("cifar10", tmp_path / "data", False, "channel", 10, 0)
    assert count.since(seen)["md5"] == 6


@pytest.mark.parametrize("damage", ["garbage checks", "truncated arrays", "an altered image", "a wrong mean type"])
def test_a_damaged_entry_is_ignored_and_rewritten_never_trusted(damage, tmp_path, monkeypatch):
    monkeypatch.setenv(datacache.ENV, str(tmp_path / "cache"))
    write_fake_cifar(tmp_path / "data")
    good = datasets.load("cifar10", tmp_path / "data", False, "pixel_mean", 0, 0)
    (entry,) = [p.parent for p in (tmp_path / "cache").rglob("checks.json")]
    if damage == "garbage checks":
        (entry / "checks.json").write_text('{"md5": {"data_ba')
    elif damage == "truncated arrays":
        (entry / "arrays.npz").write_bytes((entry / "arrays.npz").read_bytes()[:1000])
    elif damage == "an altered image":
        with np.load(entry / "arrays.npz") as npz:
            arrays = {k: npz[k].copy() for k in npz.files}
        arrays["train_images"][0, 0, 0, 0] ^= 1
        np.savez(entry / "arrays.npz", **arrays)
    else:
        checks = json.loads((entry / "checks.json").read_text())
        (entry / "checks.json").write_text(json.dumps({**checks, "stats": []}))
    count = _Counting(monkeypatch)
    again = datasets.load("cifar10", tmp_path / "data", False, "pixel_mean", 0, 0)
    assert count.calls["md5"] == 6 and _same_data(again, good)  # read from the files again
    datasets.load("cifar10", tmp_path / "data", False, "pixel_mean", 0, 0)
    assert count.calls["md5"] == 6  # and the entry rewritten


def test_a_cache_that_cannot_be_written_is_one_note_and_the_data_loads(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(datacache.ENV, str(tmp_path / "file"))  # a file where the cache folder should be
    write_fake_cifar(tmp_path / "data")
    data = datasets.load("cifar10", tmp_path / "data", False, "pixel_mean", 0, 0)
    assert len(data.train) == 60
    out = capsys.readouterr().out
    assert out.count("note: the data cache in") == 1 and f"set {datacache.ENV}= to a writable folder" in out
