"""The files of ``xpnn.save`` / ``xpnn.load``: file permissions,
compression, foreign or inconsistent metadata, object arrays, where the temporary file is made, folders that cannot
be fsync'ed, failed clean-ups, the place of every array in the table, and load errors that name the file."""
from __future__ import annotations

import errno
import io
import json
import os
import re
import stat
import tempfile
import zipfile

import numpy as np
import pytest

import xpnn
import xpnn.io as xio
from xpnn.errors import CheckpointError


def _entries(path):
    with zipfile.ZipFile(path) as z:
        return {i.filename: i for i in z.infolist()}


def _rewrite(path, edit_meta=None, replace=None):
    """Rewrite a checkpoint's NPZ, editing the metadata dict and/or replacing stored arrays (np.savez)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays.pop(xio.META_KEY)).decode("utf-8"))
    if edit_meta is not None:
        edit_meta(meta)
    arrays.update(replace or {})
    arrays[xio.META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
    np.savez(path, **arrays)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664), (0o000, 0o666)])
def test_a_new_checkpoint_gets_the_usual_mode_for_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    path = tmp_path / "m.npz"
    xio.save({"w": np.ones(2)}, path)
    assert os.stat(path).st_mode & 0o777 == mode
    assert os.umask(mask) == mask  # save left the process umask as it was


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the umask from /proc (Linux)")
def test_save_never_changes_the_umask_on_linux(tmp_path, umask, monkeypatch):
    # setting the umask, even for an instant, changes the mode of files other threads create meanwhile
    umask(0o027)

    def no_umask(mask):
        raise AssertionError(f"xpnn.save set the umask to {mask:o}")

    monkeypatch.setattr(os, "umask", no_umask)
    xio.save({"w": np.ones(2)}, tmp_path / "m.npz")
    assert os.stat(tmp_path / "m.npz").st_mode & 0o777 == 0o640


def test_the_umask_is_read_by_setting_it_without_proc(tmp_path, umask, monkeypatch):
    umask(0o027)
    real_open = open

    def no_proc(file, *args, **kwargs):
        if str(file).startswith("/proc/"):
            raise FileNotFoundError(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    xio.save({"w": np.ones(2)}, tmp_path / "m.npz")
    assert os.stat(tmp_path / "m.npz").st_mode & 0o777 == 0o640
    assert os.umask(0o027) == 0o027  # restored


def test_an_overwritten_checkpoint_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "m.npz"
    xio.save({"w": np.ones(2)}, path)
    os.chmod(path, 0o600)
    xio.save({"w": np.zeros(2)}, path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert np.array_equal(xio.load(path)["w"], np.zeros(2))


def test_compress_deflates_every_entry_and_round_trips(tmp_path):
    obj = {"w": np.zeros((200, 100)), "b": np.arange(50.0)}
    xio.save(obj, tmp_path / "plain.npz")
    xio.save(obj, tmp_path / "small.npz", compress=True)
    plain, small = _entries(tmp_path / "plain.npz"), _entries(tmp_path / "small.npz")
    assert set(plain) == set(small) == {"a0.npy", "a1.npy", xio.META_KEY + ".npy"}
    assert all(i.compress_type == zipfile.ZIP_STORED for i in plain.values())
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in small.values())
    assert os.path.getsize(tmp_path / "small.npz") < os.path.getsize(tmp_path / "plain.npz") / 10
    back = xio.load(tmp_path / "small.npz")
    assert np.array_equal(back["w"], obj["w"]) and np.array_equal(back["b"], obj["b"])


def test_a_foreign_format_name_is_refused(tmp_path):
    path = tmp_path / "f.npz"
    xio.save({"w": np.ones(2)}, path)
    _rewrite(path, lambda m: m.update(format="other-checkpoint"))
    with pytest.raises(CheckpointError, match="metadata of an unknown format"):
        xio.load(path)
    _rewrite(path, lambda m: m.pop("format"))
    with pytest.raises(CheckpointError, match="metadata of an unknown format"):
        xio.load(path)
    np.savez(path, **{xio.META_KEY: np.frombuffer(b"[1, 2]", np.uint8)})  # JSON, but not an object
    with pytest.raises(CheckpointError, match="metadata of an unknown format"):
        xio.load(path)


@pytest.mark.parametrize("version", ["1", None, 1.0])
def test_a_format_version_that_is_not_an_int_is_refused(tmp_path, version):
    path = tmp_path / "v.npz"
    xio.save({"w": np.ones(2)}, path)
    _rewrite(path, lambda m: m.update(format_version=version))
    with pytest.raises(CheckpointError, match="uses checkpoint format"):
        xio.load(path)


def test_an_older_format_version_is_read(tmp_path):
    path = tmp_path / "v.npz"
    xio.save({"w": np.ones(2)}, path)
    _rewrite(path, lambda m: m.update(format_version=0))
    assert np.array_equal(xio.load(path)["w"], np.ones(2))


def test_a_dtype_only_mismatch_in_the_array_table_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    xio.save({"w": np.ones((2, 3)), "b": np.ones(3, np.float32)}, path)
    _rewrite(path, replace={"a0": np.ones((2, 3), np.float32)})  # same shape, other dtype
    with pytest.raises(CheckpointError, match=r"array '/w' is <f4 \[2, 3\], its metadata says <f8 \[2, 3\]"):
        xio.load(path)


def test_a_shape_only_mismatch_in_the_array_table_is_refused(tmp_path):
    path = tmp_path / "s.npz"
    xio.save({"w": np.ones((2, 3)), "b": np.ones(3, np.float32)}, path)
    _rewrite(path, replace={"a1": np.ones(4, np.float32)})  # same dtype, other shape
    with pytest.raises(CheckpointError, match=r"array '/b' is <f4 \[4\], its metadata says <f4 \[3\]"):
        xio.load(path)


def test_the_table_must_list_exactly_the_stored_arrays(tmp_path):
    path = tmp_path / "t.npz"
    xio.save({"w": np.ones(2)}, path)
    _rewrite(path, replace={"a1": np.ones(2)})
    with pytest.raises(CheckpointError, match="its metadata lists 1 arrays, the archive holds 2"):
        xio.load(path)


def test_an_npz_holding_an_object_array_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "o.npz"
    xio.save({"w": np.ones(2)}, path)
    evil = np.array([{"x": 1}, None], dtype=object)

    def say_object(meta):
        meta["arrays"]["a0"]["dtype"] = evil.dtype.str  # the table agrees: only allow_pickle=False stops it

    _rewrite(path, say_object, replace={"a0": evil})  # np.savez pickles object arrays
    with pytest.raises(CheckpointError, match="truncated or corrupt.*ValueError"):
        xio.load(path)


def test_a_broken_structure_entry_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "b.npz"
    xio.save({"w": np.ones(2), "n": 3}, path)
    _rewrite(path, lambda m: m["structure"].update(type="mystery"))
    with pytest.raises(CheckpointError, match="unknown structure entry type 'mystery'"):
        xio.load(path)
    xio.save({"n": 3}, path)
    _rewrite(path, lambda m: m["structure"]["values"][0].update(value=3.5))
    with pytest.raises(CheckpointError, match=r"damaged structure entry \(ValueError: int node without an integer\)"):
        xio.load(path)
    xio.save({"n": 3, "m": 4}, path)
    _rewrite(path, lambda m: m["structure"]["keys"].pop())
    with pytest.raises(CheckpointError, match=r"damaged structure entry \(ValueError: dict node with unequal keys"):
        xio.load(path)


def test_the_temporary_file_is_made_in_the_target_folder(tmp_path, monkeypatch):
    # with the system temporary folder unusable, save still works: the temporary file lives next to the target
    # (an atomic os.replace needs both on one file system)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    folder = tmp_path / "out"
    folder.mkdir()
    made = []
    real = tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        made.append(name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    xio.save({"w": np.ones(2)}, folder / "m.npz")
    assert len(made) == 1 and os.path.dirname(made[0]) == str(folder)
    assert os.path.basename(made[0]).startswith(".m.npz.") and made[0].endswith(".tmp")
    assert os.listdir(folder) == ["m.npz"]


def test_save_accepts_str_and_pathlike_and_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    xio.save({"a": 1}, "rel.npz")
    xio.save({"a": 2}, tmp_path / "abs.npz")
    xio.save({"a": 3}, str(tmp_path / "s.npz"))
    assert [xio.load(p)["a"] for p in ("rel.npz", tmp_path / "abs.npz", str(tmp_path / "s.npz"))] == [1, 2, 3]


def test_load_with_metadata_describes_the_arrays(tmp_path):
    path = tmp_path / "m.npz"
    xio.save({"w": np.ones((2, 3), np.float32), "s": np.float64(2.5)}, path, metadata={"epoch": 3, "a": np.ones(2)})
    obj, info = xio.load(path, with_metadata=True)
    assert info["format"] == xio.FORMAT and info["format_version"] == xio.FORMAT_VERSION
    assert info["xpnn_version"] == xpnn.__version__
    assert info["arrays"]["/w"] == {"dtype": "float32", "shape": (2, 3)}
    assert info["arrays"]["/s"] == {"dtype": "float64", "shape": ()}
    assert info["metadata"]["epoch"] == 3 and np.array_equal(info["metadata"]["a"], np.ones(2))
    assert type(obj["s"]) is np.float64 and obj["s"] == 2.5
    xio.save({"w": 1}, path)
    assert xio.load(path, with_metadata=True)[1]["metadata"] is None


def test_save_needs_a_path_not_a_file_object():
    with pytest.raises(TypeError):
        xio.save({"w": 1}, io.BytesIO())


def test_save_fsyncs_the_data_and_the_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to name the synced descriptors")
    monkeypatch.setattr(os, "fsync", spy)
    xio.save({"w": np.ones(2)}, tmp_path / "m.npz")
    assert len(synced) == 2
    assert os.path.dirname(synced[0]) == str(tmp_path) and synced[0].endswith(".tmp")  # the data, before the rename
    assert synced[1] == str(tmp_path)  # the folder entry, after it


@pytest.mark.parametrize("damage", ["not-utf8", "not-json", "entry-without-dtype", "entry-not-a-dict"])
def test_damaged_metadata_bytes_or_table_entries_are_checkpoint_errors(tmp_path, damage):
    path = tmp_path / "m.npz"
    xio.save({"w": np.ones(2)}, path)
    if damage in ("not-utf8", "not-json"):
        raw = b"\xff\xfe{" if damage == "not-utf8" else b"{not json"
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays[xio.META_KEY] = np.frombuffer(raw, np.uint8)
        np.savez(path, **arrays)
    elif damage == "entry-without-dtype":
        _rewrite(path, lambda m: m["arrays"]["a0"].pop("dtype"))
    else:
        _rewrite(path, lambda m: m["arrays"].update(a0=["<f8", [2]]))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        xio.load(path)


def test_a_top_level_array_is_listed_at_the_root(tmp_path):
    path = tmp_path / "a.npz"
    xio.save(np.arange(3.0), path)
    obj, info = xio.load(path, with_metadata=True)
    assert np.array_equal(obj, np.arange(3.0))
    assert info["arrays"] == {"/": {"dtype": "float64", "shape": (3,)}}


def test_a_folder_that_cannot_be_fsynced_does_not_fail_the_save(tmp_path, monkeypatch):
    # some file systems (and Windows) refuse to open or fsync a folder: the data itself is synced, the save succeeds
    real = os.fsync

    def no_folder_sync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd)

    monkeypatch.setattr(os, "fsync", no_folder_sync)
    xio.save({"w": np.arange(3.0)}, tmp_path / "m.npz")
    assert np.array_equal(xio.load(tmp_path / "m.npz")["w"], np.arange(3.0))


def test_a_failed_cleanup_does_not_hide_the_error_of_the_save(tmp_path, monkeypatch):
    def no_replace(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", dst)

    def no_unlink(name, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", name)

    monkeypatch.setattr(os, "replace", no_replace)
    monkeypatch.setattr(os, "unlink", no_unlink)
    with pytest.raises(PermissionError, match="Permission denied"):
        xio.save({"w": np.ones(2)}, tmp_path / "m.npz")
    monkeypatch.undo()
    assert not (tmp_path / "m.npz").exists()


def test_the_metadata_is_utf8_json_with_names_unescaped(tmp_path):
    path = tmp_path / "u.npz"
    xio.save({"größe ✓": np.ones(1)}, path, metadata={"note": "über"})
    with np.load(path, allow_pickle=False) as z:
        raw = bytes(z[xio.META_KEY])
    assert "größe ✓".encode("utf-8") in raw and "über".encode("utf-8") in raw
    meta = json.loads(raw.decode("utf-8"))
    assert meta["format"] == xio.FORMAT and meta["arrays"]["a0"]["path"] == "/größe ✓"


def test_the_array_table_names_every_place_an_array_is_stored(tmp_path):
    xs = pytest.importorskip("array_api_strict")
    path = tmp_path / "p.npz"
    obj = {"layers": [np.ones(2), (np.zeros(1, np.float32), {"k": np.int8(3)})], "strict": xs.asarray([1.0, 2.0])}
    xio.save(obj, path, metadata={"best": np.arange(3), "hist": [np.ones(1)]})
    _, info = xio.load(path, with_metadata=True)
    assert info["arrays"] == {
        "/layers/0": {"dtype": "float64", "shape": (2,)},
        "/layers/1/0": {"dtype": "float32", "shape": (1,)},
        "/layers/1/1/k": {"dtype": "int8", "shape": ()},
        "/strict": {"dtype": "float64", "shape": (2,)},
        "metadata/best": {"dtype": "int64", "shape": (3,)},
        "metadata/hist/0": {"dtype": "float64", "shape": (1,)},
    }


def test_an_unsupported_object_without_state_dict_gets_no_state_dict_hint(tmp_path):
    with pytest.raises(TypeError, match=r"cannot store set at /w/1 \(supported: .*None\)$"):
        xio.save({"w": [1, {2, 3}]}, tmp_path / "o.npz")
    with pytest.raises(TypeError, match=r"dict key (np\.float64\()?1\.0\)? at /w must be"):
        xio.save({"w": {np.float64(1.0): 2}}, tmp_path / "o.npz")  # NumPy scalars are no keys: they load as arrays


def test_load_errors_name_the_file(tmp_path):
    path = tmp_path / "named.npz"
    xio.save({"w": [np.ones(2)], "d": {"k": 1}}, path)
    _rewrite(path, lambda m: m["structure"]["values"][0]["items"][0].update(type="mystery"))
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} has an unknown structure entry type 'mystery'"):
        xio.load(path)
    xio.save({"d": {"k": 1}}, path)
    _rewrite(path, lambda m: m["structure"]["values"][0]["keys"][0].pop("value"))  # damaged inner key
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} has a damaged structure entry") as caught:
        xio.load(path)
    assert str(caught.value).count("damaged") == 1  # said once, not once per level of nesting
    xio.save({"d": {"k": 1}}, path)
    _rewrite(path, lambda m: m["structure"]["values"][0]["values"][0].pop("value"))  # damaged inner value
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} has a damaged structure entry"):
        xio.load(path)
    xio.save({"w": 1}, path, metadata={"epoch": 3})
    _rewrite(path, lambda m: m["metadata"]["values"][0].pop("value"))  # damaged user metadata
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} has a damaged structure entry"):
        xio.load(path, with_metadata=True)
    assert xio.load(path) == {"w": 1}  # only with_metadata reads it
    xio.save({"w": np.ones(2)}, path)
    _rewrite(path, lambda m: m.update(format="other"))
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} has metadata of an unknown format"):
        xio.load(path)
    data = path.read_bytes()[:50]
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} \\(50 bytes\\) is truncated or corrupt"):
        xio.load(path)
