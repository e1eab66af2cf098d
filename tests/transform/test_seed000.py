"""Seed 000 end to end: the Deep Lake 3 tutorial's code, unchanged but for
`import slicewise as deeplake`, on a real animals/ tree of JPEGs, in a fresh process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import slicewise as sw

from .conftest import make_jpeg_tree, run_script

# The seed's code blocks, in order, verbatim; only the import line differs. The last two
# lines record what the seed computed (files_list, class_names) for the checks below.
SEED_000 = '''
import slicewise as deeplake
from PIL import Image
import numpy as np
import os

@deeplake.compute
def file_to_deeplake(file_name, sample_out, class_names):
    ## First two arguments are always default arguments containing:
    #     1st argument is an element of the input iterable (list, dataset, array,...)
    #     2nd argument is a dataset sample
    # Other arguments are optional

    # Find the label number corresponding to the file
    label_text = os.path.basename(os.path.dirname(file_name))
    label_num = class_names.index(label_text)

    # Append the label and image to the output sample
    sample_out.append({"labels": np.uint32(label_num),
                       "images": deeplake.read(file_name)})

    return sample_out

ds = deeplake.empty('./animals_deeplake_transform') # Creates the dataset

# Find the class_names and list of files that need to be uploaded
dataset_folder = './animals'

class_names = os.listdir(dataset_folder)

files_list = []
for dirpath, dirnames, filenames in os.walk(dataset_folder):
    for filename in filenames:
        files_list.append(os.path.join(dirpath, filename))

with ds:
    ds.create_tensor('images', htype = 'image', sample_compression = 'jpeg')
    ds.create_tensor('labels', htype = 'class_label', class_names = class_names)

    file_to_deeplake(class_names=class_names).eval(files_list, ds, num_workers = 2)

Image.fromarray(ds.images[0].numpy())
'''

RECORD = '''
import json, sys
json.dump({"files": files_list, "class_names": class_names}, open("seed_record.json", "w"))
'''


def _check_seed_dataset(workdir: Path):
    record = json.loads((workdir / "seed_record.json").read_text())
    files, class_names = record["files"], record["class_names"]
    ds = sw.load(str(workdir / "animals_deeplake_transform"), read_only=True)
    assert len(files) == 12
    assert len(ds) == len(ds.images) == len(ds.labels) == len(files)  # one row per file
    labels = ds.labels.numpy().reshape(-1)
    for row, path in enumerate(files):  # input order, labels, bytes identical
        assert ds.images[row].tobytes() == (workdir / path).read_bytes(), path
        assert class_names[int(labels[row])] == Path(path).parent.name
    image = ds.images[0].numpy()
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert list(ds.labels.info.class_names) == class_names


@pytest.mark.timeout(90)
def test_seed_000_runs_unchanged(tmp_path):
    make_jpeg_tree(tmp_path / "animals")
    run_script(SEED_000 + RECORD, tmp_path)
    _check_seed_dataset(tmp_path)


@pytest.mark.timeout(90)
def test_seed_000_with_processes_and_main_module_function(tmp_path):
    # The seed's function is defined in __main__: it must travel to worker processes.
    make_jpeg_tree(tmp_path / "animals")
    code = SEED_000.replace("num_workers = 2)", "num_workers = 2, scheduler='processed')")
    assert code != SEED_000
    run_script(code + RECORD, tmp_path)
    _check_seed_dataset(tmp_path)
