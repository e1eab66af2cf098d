"""Deep Lake 3's groups, written as its users write them: tensors grouped by "/" names."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

import slicewise as sw

pytestmark = pytest.mark.timeout(120)


def test_create_group_and_tensors_in_it(ds_url):
    ds = sw.empty(ds_url)
    ds.create_group("Control")
    ds.create_tensor("Control/Experiment 1", htype="generic", dtype="float32")
    ds["Control/Experiment 1"].extend(np.arange(6, dtype=np.float32).reshape(3, 2))
    ds.Control["Experiment 1"].append(np.array([6, 7], np.float32))

    assert "Control" in ds and "Control/Experiment 1" in ds and "Experiment 1" in ds.Control
    assert "Experiment 1" not in ds
    assert list(ds.tensors) == ["Control/Experiment 1"]
    assert list(ds.Control.tensors) == ["Experiment 1"]
    assert list(ds.groups) == ["Control"]
    assert ds.Control["Experiment 1"].key == "Control/Experiment 1"
    assert ds.Control["Experiment 1"].shape == (4, 2)
    np.testing.assert_array_equal(ds["Control/Experiment 1"].numpy(),
                                  np.arange(8, dtype=np.float32).reshape(4, 2))
    assert ds["Control"].group_index == "Control"
    with pytest.raises(KeyError):
        ds["Treatment"]
    with pytest.raises(AttributeError):
        _ = ds.Treatment

    again = sw.load(ds_url)  # the names persist as they are
    assert list(again.tensors) == ["Control/Experiment 1"]
    np.testing.assert_array_equal(again.Control["Experiment 1"][3].numpy(), [6, 7])


def test_tensors_and_groups_made_through_a_group_and_nested(ds_url):
    ds = sw.empty(ds_url)
    with ds:
        a = ds.create_group("a")
        b = a.create_group("b")                       # "a/b"
        b.create_tensor("x", dtype="int64")           # "a/b/x"
        ds.create_group("c/d")                        # nested at once: "c" comes with it
        ds.create_tensor("a/y", dtype="int64")        # a group is made by a tensor's name too
        ds.create_tensor("e/f/z", dtype="int64")
        ds.create_tensor("top", dtype="int64")
    assert list(ds.tensors) == ["a/b/x", "a/y", "e/f/z", "top"]
    assert list(ds.groups) == ["a", "a/b", "c", "c/d", "e", "e/f"]
    assert list(ds.a.groups) == ["b"]
    assert list(ds.a.tensors) == ["b/x", "y"]          # every tensor below, relative names
    assert list(ds.a.b.tensors) == ["x"]
    ds.a.b.x.extend([1, 2, 3])
    assert ds.a.b.x.numpy().ravel().tolist() == [1, 2, 3]
    assert ds.a["b/x"].key == "a/b/x" and ds["a/b"]["x"].key == "a/b/x"
    assert ds.c.d.tensors == {} and ds.c.groups.keys() == {"d"}
    assert "b/x" in ds.a and "d" in ds.c and "x" in ds.a.b


def test_an_empty_group_persists_in_the_manifest_as_json(tmp_path):
    path = str(tmp_path / "ds")
    ds = sw.empty(path)
    ds.create_group("Control")
    ds.create_group("Treatment/Day 1")
    reopened = sw.load(path)
    assert list(reopened.groups) == ["Control", "Treatment", "Treatment/Day 1"]
    assert len(reopened.Control) == 0 and reopened.Control.tensors == {}

    newest = sorted(glob.glob(os.path.join(path, "versions", "*.json")))[-1]
    with open(newest) as f:
        manifest = json.load(f)
    assert manifest["groups"] == ["Control", "Treatment/Day 1"]
    assert reopened.log()[0]["changes"]["groups"] == ["Treatment/Day 1"]

    # each create_group is a version of its own; an older version has no such group
    assert "Treatment" not in sw.load(path, version=reopened.log()[1]["id"])
    # a manifest without groups is written as before: no "groups" key
    oldest = sorted(glob.glob(os.path.join(path, "versions", "*.json")))[0]
    with open(oldest) as f:
        assert "groups" not in json.load(f)


def test_a_failed_with_block_leaves_no_group(ds_url):
    ds = sw.empty(ds_url)
    with pytest.raises(RuntimeError), ds:
        ds.create_group("Control")
        assert "Control" in ds  # visible inside the block
        raise RuntimeError("stop")
    assert "Control" not in ds and "Control" not in sw.load(ds_url)


def test_rows_of_a_group(ds_url):
    ds = sw.empty(ds_url)
    with ds:
        ds.create_tensor("Control/x", dtype="int64")
        ds.create_tensor("Control/labels", htype="class_label", class_names=["a", "b"])
        ds.create_tensor("other", dtype="int64")
        ds.Control.extend({"x": [1, 2, 3], "labels": [0, 1, 1]})
        ds.Control.append({"x": 4, "labels": "a"})
        ds.other.extend([10, 20])
    assert len(ds.Control) == 4 and len(ds) == 2            # shortest tensor, as ds does
    row = ds.Control[3]
    assert list(row.tensors) == ["x", "labels"]              # only the group's tensors
    assert row.x.numpy().tolist() == [4] and row["labels"].data()["text"] == ["a"]
    assert [r.x.numpy().item() for r in ds.Control] == [1, 2, 3, 4]
    assert ds.Control[1:3].numpy()["x"].ravel().tolist() == [2, 3]
    assert ds[1].Control.x.numpy().tolist() == [2]          # a dataset row has the groups
    assert ds[1]["Control/x"].numpy().tolist() == [2]
    assert ds[0:2]["Control"]["x"].numpy().ravel().tolist() == [1, 2]
    assert set(ds[0].tensors) == {"Control/x", "Control/labels", "other"}
    assert ds.Control.numpy()["x"].ravel().tolist() == [1, 2, 3, 4]
    with pytest.raises(sw.DatasetError, match="labels"):
        ds.Control.append({"x": 5})                          # every tensor of the group ...
    ds.Control.append({"x": 5}, skip_ok=True)                # ... unless skip_ok
    assert len(ds.Control.x) == 5 and len(ds.Control) == 4
    assert len(ds.padded().Control) == 5


def test_name_clashes_between_tensors_and_groups_are_clear_errors(ds_url):
    ds = sw.empty(ds_url)
    ds.create_group("Control")
    ds.create_tensor("images")
    with pytest.raises(sw.DatasetError, match="is a group"):
        ds.create_tensor("Control")
    with pytest.raises(sw.DatasetError, match="is a tensor"):
        ds.create_group("images")
    with pytest.raises(sw.DatasetError, match="is a tensor, not a group"):
        ds.create_tensor("images/x")
    with pytest.raises(sw.DatasetError, match="is a tensor, not a group"):
        ds.create_group("images/sub")
    with pytest.raises(sw.DatasetError, match="already exists"):
        ds.create_group("Control")
    assert ds.create_group("Control", exist_ok=True) == ds.Control
    ds.create_tensor("Control/x")
    with pytest.raises(sw.DatasetError, match="already exists"):
        ds.Control.create_tensor("x")
    assert ds.Control.create_tensor("x", exist_ok=True).key == "Control/x"
    with pytest.raises(sw.DatasetError, match="Group attribute"):
        ds.create_tensor("Control/tensors")                 # ds.Control.tensors is taken
    with pytest.raises(sw.DatasetError, match="Dataset attribute"):
        ds.create_group("commit")
    assert list(sw.load(ds_url).tensors) == ["images", "Control/x"]


@pytest.mark.parametrize("bad", ["/Control", "Control/", "a//b", "a/../b", "../a", "a/./b",
                                 "a\\b", "a/.hidden", "a/_private", "", "x/" + "y" * 201])
def test_names_cannot_be_paths_out_of_the_dataset(ds_url, bad):
    ds = sw.empty(ds_url)
    with pytest.raises(sw.DatasetError):
        ds.create_group(bad)
    with pytest.raises(sw.DatasetError):
        ds.create_tensor(bad)
    assert ds.tensors == {} and ds.groups == {}


def _rewrite_newest(path: str, change) -> str:
    newest = sorted(glob.glob(os.path.join(path, "versions", "*.json")))[-1]
    with open(newest) as f:
        doc = json.load(f)
    change(doc)
    with open(newest, "w") as f:
        json.dump(doc, f)
    return newest


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(groups=["../../outside"]),
        lambda d: d.update(groups=["/etc"]),
        lambda d: d.update(groups=["a//b"]),
        lambda d: d.update(groups="Control"),                 # not a list
        lambda d: d.update(groups=["Control", "Control"]),
        lambda d: d.update(groups=["x"]),                     # a group that is a tensor
        lambda d: d.update(groups=["x/inner"]),               # a group inside a tensor
        lambda d: d["tensors"].__setitem__("x/y", d["tensors"].pop("Control/y")),
        lambda d: d["tensors"].__setitem__("a/../../b", d["tensors"].pop("Control/y")),
    ],
)
def test_a_hostile_manifest_cannot_name_its_way_out(tmp_path, change):
    path = str(tmp_path / "ds")
    ds = sw.empty(path)
    ds.create_tensor("x", dtype="uint8")
    ds.create_tensor("Control/y", dtype="uint8")
    manifest = _rewrite_newest(path, change)
    with pytest.raises(sw.CorruptionError) as refused:
        sw.load(path)
    assert refused.value.path == manifest


def test_commits_of_two_handles_that_both_make_groups(tmp_path):
    path = str(tmp_path / "ds")
    sw.empty(path)
    first, second = sw.load(path), sw.load(path)
    first.create_group("A")
    second.create_group("B")          # rebased over the other commit: both groups stay
    assert list(sw.load(path).groups) == ["A", "B"]
    third = sw.load(path)
    first.create_tensor("C")
    with pytest.raises(sw.CommitConflictError, match="'C'"):
        third.create_group("C")       # the other handle made a tensor of that name meanwhile
    assert list(sw.load(path).groups) == ["A", "B"]


def test_groups_through_a_pickled_handle_and_a_padded_view(tmp_path):
    import pickle

    ds = sw.empty(str(tmp_path / "ds"))
    ds.create_tensor("Control/x", dtype="int64")
    ds.Control.x.extend([1, 2])
    handle = pickle.loads(pickle.dumps(ds))
    assert handle.Control.x.numpy().ravel().tolist() == [1, 2]
    assert list(ds.padded().groups) == ["Control"]


@sw.compute
def _experiment(item, sample_out, scale):
    sample_out.append({"Control/value": np.float32(item * scale), "Control/id": np.int64(item)})
    sample_out["Treatment/value"].append(np.float32(-item))
    return sample_out


@pytest.mark.timeout(120)
def test_sample_out_appends_to_tensors_in_groups(tmp_path):
    ds = sw.empty(str(tmp_path / "ds"))
    with ds:
        ds.create_group("Control")
        ds.Control.create_tensor("value", dtype="float32")
        ds.Control.create_tensor("id", dtype="int64")
        ds.create_tensor("Treatment/value", dtype="float32")
        _experiment(scale=2).eval(list(range(10)), ds, num_workers=2, scheduler="processed")
    assert ds.Control.value.numpy().ravel().tolist() == [2.0 * i for i in range(10)]
    assert ds.Control.id.numpy().ravel().tolist() == list(range(10))
    assert ds["Treatment/value"].numpy().ravel().tolist() == [-float(i) for i in range(10)]
    assert list(ds.groups) == ["Control", "Treatment"]
