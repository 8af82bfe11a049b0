"""Age and gender networks: onnxruntime vs torch (onnx2torch) parity, gradients, signature validation.

Real inputs are dlib-aligned chips of the astronaut (Eileen Collins) in ``skimage.data.astronaut()``: the
original, its mirror image, and both again at half resolution (each re-detected and re-aligned).
"""

from __future__ import annotations

import re
import sys

import dlib
import numpy as np
import onnx
import pytest
import skimage.data
import skimage.transform
import torch
from onnx import TensorProto, helper

from agelatent.perception.onnx_models import (
    AGE_BIN_YEARS,
    AGE_RANGE_YEARS,
    AGE_SIGNATURE,
    CHIP_PADDING,
    GENDER_SIGNATURE,
    AgeEstimator,
    GenderClassifier,
    OrtSettings,
    import_onnx2torch,
    make_runner,
)
from agelatent.store import model_path

PROB_ATOL = 1e-5  # observed ~2e-6 on CPU
AGE_ATOL_YEARS = 1e-3  # observed ~4e-5
N_RANDOM = 32
ORT_ONE_THREAD = OrtSettings(intra_op_num_threads=1, inter_op_num_threads=1)  # the test machine is shared


def _chips(image: np.ndarray, detector, predictor) -> tuple[np.ndarray, np.ndarray]:
    rects, scores, _ = detector.run(image, 1, 0)
    assert len(rects) >= 1, "no face found"
    shape = predictor(image, rects[int(np.argmax(scores))])
    return (
        dlib.get_face_chip(image, shape, size=64, padding=CHIP_PADDING),
        dlib.get_face_chip(image, shape, size=32, padding=CHIP_PADDING),
    )


def _to_tensor(chips: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()  # [N, 3, S, S], 0..255


@pytest.fixture(scope="module")
def real_chips() -> dict[str, torch.Tensor]:
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_path("shape_predictor_5")))
    full = skimage.data.astronaut()
    half = skimage.transform.rescale(full, 0.5, channel_axis=-1, anti_aliasing=True)
    half = (half * 255).round().astype(np.uint8)
    images = [full, half]
    images += [np.ascontiguousarray(im[:, ::-1]) for im in images]
    pairs = [_chips(im, detector, predictor) for im in images]
    return {"64": _to_tensor([p[0] for p in pairs]), "32": _to_tensor([p[1] for p in pairs])}


@pytest.fixture(scope="module")
def random_chips() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {s: torch.rand(N_RANDOM, 3, int(s), int(s), generator=gen) * 255 for s in ("64", "32")}


@pytest.fixture(scope="module")
def ages() -> dict[str, AgeEstimator]:
    return {rt: AgeEstimator(runtime=rt, ort_settings=ORT_ONE_THREAD) for rt in ("onnxruntime", "torch")}


@pytest.fixture(scope="module")
def genders() -> dict[str, GenderClassifier]:
    return {rt: GenderClassifier(runtime=rt, ort_settings=ORT_ONE_THREAD) for rt in ("onnxruntime", "torch")}


@pytest.mark.parametrize("inputs", ["real", "random"])
def test_age_parity_between_runtimes(ages, real_chips, random_chips, inputs, record_property):
    chips = (real_chips if inputs == "real" else random_chips)["64"]
    ort, pt = ages["onnxruntime"].predict(chips), ages["torch"].predict(chips)
    prob_diff = (ort.probabilities - pt.probabilities).abs().max().item()
    age_diff = (ort.ages - pt.ages).abs().max().item()
    print(f"age {inputs} n={len(chips)}: max |dprob| {prob_diff:.2e}, max |dage| {age_diff:.2e} years")
    record_property(f"age_{inputs}_max_abs_prob_diff", prob_diff)
    record_property(f"age_{inputs}_max_abs_age_diff_years", age_diff)
    assert ort.probabilities.shape == (len(chips), len(AGE_BIN_YEARS))
    assert ort.ages.shape == (len(chips),)
    # 81 classes (the real graph's output width), so ages within the advertised range
    assert AGE_SIGNATURE.output_width == 81 and AGE_RANGE_YEARS == (0.0, 80.0)
    assert ((ort.ages >= AGE_RANGE_YEARS[0]) & (ort.ages <= AGE_RANGE_YEARS[1])).all()
    torch.testing.assert_close(ort.probabilities.sum(1), torch.ones(len(chips)), atol=1e-5, rtol=0)
    assert prob_diff < PROB_ATOL
    assert age_diff < AGE_ATOL_YEARS


@pytest.mark.parametrize("inputs", ["real", "random"])
def test_gender_parity_between_runtimes(genders, real_chips, random_chips, inputs, record_property):
    chips = (real_chips if inputs == "real" else random_chips)["32"]
    ort, pt = genders["onnxruntime"].predict(chips), genders["torch"].predict(chips)
    prob_diff = (ort.probabilities - pt.probabilities).abs().max().item()
    print(f"gender {inputs} n={len(chips)}: max |dprob| {prob_diff:.2e}")
    record_property(f"gender_{inputs}_max_abs_prob_diff", prob_diff)
    assert ort.p_male.shape == (len(chips),)
    torch.testing.assert_close(ort.p_male, ort.probabilities[:, 1])
    assert prob_diff < PROB_ATOL


def test_subnormal_weights_are_flushed(ages, genders):
    """age-v1 and gender-v1 carry subnormal weights that make oneDNN's CPU convolutions ~10x slower: the torch
    runtime zeroes them and none remain. onnxruntime keeps them, so the parity tests above bound the effect
    of the flush on the outputs."""
    from agelatent.perception.onnx_models import flush_subnormals_

    for model, expected in ((ages["torch"], 6_667), (genders["torch"], 145)):
        assert model.runner.flushed_subnormals == expected
        assert flush_subnormals_(model.runner.module) == 0  # nothing left to flush


def test_astronaut_is_a_woman_in_her_thirties(ages, genders, real_chips):
    # Eileen Collins' NASA portrait (she was born in 1956; the photo is from her 30s-40s). The model says
    # 29-35 years across the four chips and P(male) <= 0.17: a loose, honest range.
    years = ages["onnxruntime"](real_chips["64"])
    p_male = genders["onnxruntime"](real_chips["32"])
    print(f"astronaut ages {years.tolist()}, P(male) {p_male.tolist()}")
    assert ((years > 25) & (years < 45)).all(), years
    assert (p_male < 0.5).all(), p_male


def test_torch_runtime_gradients_match_onnxruntime_finite_differences(ages, real_chips):
    chips = real_chips["64"][:1].clone().requires_grad_(True)
    module = ages["torch"].runner.module
    assert not module.training and not any(p.requires_grad for p in module.parameters())
    age = ages["torch"](chips)
    (grad,) = torch.autograd.grad(age.sum(), chips)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert age.requires_grad and ages["onnxruntime"](chips).grad_fn is None  # ORT: no graph
    # The torch gradient predicts what the *onnxruntime* model does along it (central difference, 1 grey
    # level).
    direction = grad / grad.norm()
    step = 1.0
    with torch.no_grad():
        hi = ages["onnxruntime"](chips + step * direction)
        lo = ages["onnxruntime"](chips - step * direction)
    slope = ((hi - lo) / (2 * step)).item()
    assert slope == pytest.approx(grad.norm().item(), rel=0.1)


def test_empty_batch_and_bad_chip_shapes(ages):
    for est in ages.values():
        assert est(torch.zeros(0, 3, 64, 64)).shape == (0,)
        with pytest.raises(ValueError, match=r"\[N, 3, 64, 64\]"):
            est(torch.zeros(2, 64, 64, 3))  # channels last


def test_torchvision_placeholder_does_not_leak():
    import_onnx2torch()
    if "torchvision" in sys.modules:
        pytest.skip("a real torchvision is installed")
    with pytest.raises(ImportError):
        import torchvision  # noqa: F401
    from onnx2torch.node_converters import nms

    with pytest.raises(RuntimeError, match="needs torchvision"):
        nms.torchvision.ops.nms(None, None, 0.5)


# --- deliberately wrong ONNX models ------------------------------------------------------------------------
def _tiny_model(path, *, in_name="images", in_shape=("N", 3, 64, 64), out_name="probabilities", op="Identity",
                opset=18):  # fmt: skip
    """A one-node graph; shapes as given (the node's semantics do not matter for validation)."""
    inp = helper.make_tensor_value_info(in_name, TensorProto.FLOAT, list(in_shape))
    out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", "K" if op == "ReduceMean" else 81])
    if op == "ReduceMean":  # opset 18 moved `axes` to an input: cannot be lowered to 17 for onnx2torch
        axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
        nodes = [helper.make_node("ReduceMean", [in_name, "axes"], ["m"], keepdims=0),
                 helper.make_node("Flatten", ["m"], [out_name])]  # fmt: skip
        graph = helper.make_graph(nodes, "tiny", [inp], [out], initializer=[axes])
    else:
        graph = helper.make_graph([helper.make_node(op, [in_name], [out_name])], "tiny", [inp], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("kwargs", "found"),
    [
        ({"in_shape": ("N", 3, 32, 32)}, r"found input 'images' \[N, 3, 32, 32\]"),
        ({"in_shape": ("N", 64, 64, 3)}, r"found input 'images' \[N, 64, 64, 3\]"),  # channels last
        ({"in_shape": (1, 3, 64, 64)}, r"found input 'images' \[1, 3, 64, 64\]"),  # fixed batch
        ({"in_name": "input"}, r"found input 'input'"),
        ({"out_name": "logits"}, r"output 'logits' \[N, 81\]"),
    ],
)
def test_wrong_onnx_model_is_rejected_before_any_work(tmp_path, kwargs, found):
    path = _tiny_model(tmp_path / "wrong.onnx", **kwargs)
    for runtime in ("onnxruntime", "torch"):
        with pytest.raises(ValueError, match="expected") as info:
            AgeEstimator(path, runtime=runtime)
        message = str(info.value)
        assert str(path) in message
        assert "'images' [N, 3, 64, 64]" in message and "'probabilities' [N, 81]" in message
        assert re.search(found, message), message


def test_age_model_given_as_gender_model_is_rejected():
    with pytest.raises(
        ValueError, match=r"age-v1\.onnx.*expected.*\[N, 3, 32, 32\].*found input.*\[N, 3, 64, 64\]"
    ):
        GenderClassifier(model_path("age_onnx"))
    with pytest.raises(ValueError, match=r"gender-v1\.onnx"):
        make_runner(model_path("gender_onnx"), AGE_SIGNATURE)


def test_unreadable_and_unlowerable_models(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(ValueError, match=r"junk\.onnx: not a readable ONNX model"):
        make_runner(junk, GENDER_SIGNATURE)
    # Valid for onnxruntime, but opset-18 ReduceMean cannot be lowered to 17 for onnx2torch without changing
    # its meaning.
    path = _tiny_model(tmp_path / "reduce.onnx", op="ReduceMean")
    runner = make_runner(path, AGE_SIGNATURE, "onnxruntime", ort_settings=ORT_ONE_THREAD)
    with pytest.raises(ValueError, match=r"reduce\.onnx: expected output \[N, 81\] with N=2, got \[2, 3\]"):
        runner(
            torch.zeros(2, 3, 64, 64)
        )  # symbolic width passes loading, the real one is checked at run time
    with pytest.raises(ValueError, match=r"reduce\.onnx: cannot lower opset 18 to 17.*'ReduceMean'"):
        make_runner(path, AGE_SIGNATURE, "torch")
    with pytest.raises(ValueError, match="unknown runtime"):
        make_runner(path, AGE_SIGNATURE, "tensorrt")


@pytest.mark.gpu
def test_torch_runtime_on_cuda_matches_onnxruntime(ages, real_chips, random_chips):
    chips = torch.cat([real_chips["64"], random_chips["64"]])
    reference = ages["onnxruntime"].predict(chips)
    on_gpu = AgeEstimator(runtime="torch", device="cuda").predict(chips.cuda())
    assert on_gpu.ages.device.type == "cuda"
    print(f"cuda vs ort: max |dage| {(on_gpu.ages.cpu() - reference.ages).abs().max().item():.2e}")
    torch.testing.assert_close(on_gpu.probabilities.cpu(), reference.probabilities, atol=1e-4, rtol=0)
