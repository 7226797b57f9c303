"""Every image decodes, checked once per file version (``sgg_plugins.data.image_decode``)."""

import os

import pytest
from PIL import Image

from sgg_plugins.data import image_decode
from sgg_plugins.data.image_decode import first_bad_image


@pytest.fixture
def images(tmp_path, monkeypatch):
    """Four JPEGs of 40x30, the cache under tmp_path, and a count of the decodes."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "VG_100K"
    folder.mkdir()
    paths = []
    for i in range(4):
        Image.new("RGB", (40, 30), (60 * i, 20, 90)).save(folder / f"{i}.jpg", quality=90)
        paths.append(str(folder / f"{i}.jpg"))
    decodes = []
    decoded_size = image_decode.decoded_size
    monkeypatch.setattr(image_decode, "decoded_size", lambda path: decodes.append(path) or decoded_size(path))
    return paths, decodes


SIZES = [(40, 30)] * 4


def test_a_second_check_decodes_no_image(images):
    paths, decodes = images
    assert first_bad_image(paths, SIZES) is None and sorted(decodes) == paths
    decodes.clear()
    assert first_bad_image(paths, SIZES) is None and decodes == []
    assert os.path.dirname(image_decode.cache_file(os.path.dirname(paths[0]))).startswith(
        os.environ["XDG_CACHE_HOME"])


def test_a_changed_file_is_decoded_again(images):
    paths, decodes = images
    first_bad_image(paths, SIZES)
    decodes.clear()
    data = open(paths[2], "rb").read()
    with open(paths[2], "wb") as f:
        f.write(data[: len(data) // 2])  # an interrupted copy: size and mtime change
    line = first_bad_image(paths, SIZES)
    assert line.startswith(f"{paths[2]} cannot be read (OSError: ") and line.endswith("): restore it")
    assert decodes == [paths[2]]


def test_a_corrupt_file_is_named_and_never_remembered(images):
    paths, decodes = images
    with open(paths[1], "wb") as f:
        f.write(b"not a jpeg")
    line = f"{paths[1]} cannot be read (UnidentifiedImageError: cannot identify image file): restore it"
    assert first_bad_image(paths, SIZES) == line
    decodes.clear()
    assert first_bad_image(paths, SIZES) == line and decodes == [paths[1]]


def test_a_size_other_than_the_listed_one(images):
    paths, _ = images
    assert first_bad_image(paths, [(40, 30), (40, 30), (30, 40), (40, 30)]) == (
        f"{paths[2]} is 40x30 but image_data.json says 30x40: boxes would be scaled wrongly")
    assert first_bad_image(paths, [(40, 30), (40, 30), (30, 40), (40, 30)]) is not None  # from the cache too
