"""TemporalSegmenter and the synthetic sequences: contract, export, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg import export
from kseg.testing import (
    assert_inference_paths_agree,
    assert_keras_round_trip,
    assert_training_reduces_loss,
)

SIZE, LENGTH = (32, 32), 3


# the module fixture is built once when xdist keeps the file on one worker
pytestmark = pytest.mark.xdist_group("temporal")


def frame_model():
    return kseg.models.UNet(num_classes=3, input_shape=(*SIZE, 3), base_filters=4, depth=2)


@pytest.fixture(scope="module")
def clips():
    frames, labels, occluded = kseg.data.synthetic_sequences(2, LENGTH, SIZE, seed=3)
    return frames, labels


def test_untrained_wrapper_predicts_what_the_frame_model_predicts(clips):
    frames, _ = clips
    per_frame = frame_model()
    video = kseg.models.TemporalSegmenter(per_frame, sequence_length=LENGTH, filters=4)
    out = np.asarray(video(frames))
    assert out.shape == (2, LENGTH, *SIZE, 3)
    for t in range(LENGTH):
        np.testing.assert_allclose(out[:, t], np.asarray(per_frame(frames[:, t])), atol=1e-5)
    assert video.preprocessing == per_frame.preprocessing


def test_trains_round_trips_and_exports(clips, tmp_path):
    frames, labels = clips
    per_frame = frame_model()
    video = kseg.models.TemporalSegmenter(
        per_frame, sequence_length=LENGTH, feature_layer="up1_conv2_relu", filters=4
    )
    losses = assert_training_reduces_loss(
        video, frames, labels, steps=3, learning_rate=1e-2, use_fit=False, max_ratio=1.0
    )
    assert losses[-1] < losses[0]
    # after training the temporal path contributes: frames are no longer independent
    out = np.asarray(video(frames))
    assert np.abs(out[:, 1] - np.asarray(per_frame(frames[:, 1]))).max() > 1e-4
    assert_inference_paths_agree(video, frames)
    loaded = assert_keras_round_trip(video, frames, tmp_dir=tmp_path, exact_config=False)
    assert loaded.sequence_length == LENGTH and loaded.feature_layer == "up1_conv2_relu"

    expected = video.predict(frames, verbose=0)
    video.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    saved = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(saved.serve(frames).numpy(), expected, atol=1e-4)

    path = export.tflite(video, tmp_path / "video.tflite", input_shape=(LENGTH, *SIZE, 3))
    interpreter = export.tflite_interpreter(path)
    ops = {d["op_name"] for d in interpreter._get_ops_details()}
    assert not any(o.startswith("Flex") or o == "CUSTOM" for o in ops), ops
    interpreter.allocate_tensors()
    lite = []
    for clip in frames:  # the converted graph has batch 1
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], clip[None])
        interpreter.invoke()
        lite.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    np.testing.assert_allclose(lite, expected, atol=1e-3)


def test_a_list_of_frames_is_stacked_and_bad_input_is_named(clips):
    frames, _ = clips
    video = kseg.models.TemporalSegmenter(frame_model(), sequence_length=LENGTH, filters=4)
    as_list = np.asarray(video([frames[:, t] for t in range(LENGTH)]))
    np.testing.assert_allclose(as_list, np.asarray(video(frames)), atol=1e-6)
    with pytest.raises(ValueError, match=r"sequence_length=3.*Received: frames.shape=\(2, 2,"):
        video(frames[:, :2])
    with pytest.raises(ValueError, match=r"Received: len\(frames\)=4"):
        video([frames[:, 0]] * 4)
    odd = [frames[:, 0], frames[:, 1], frames[:, 2, :16]]
    with pytest.raises(ValueError, match=r"Received: frames\[2\].shape=\(2, 16, 32, 3\)"):
        video(odd)
    with pytest.raises(ValueError, match="Received: feature_layer='nope'"):
        kseg.models.TemporalSegmenter(frame_model(), feature_layer="nope")
    with pytest.raises(ValueError, match="Received: sequence_length=0"):
        kseg.models.TemporalSegmenter(frame_model(), sequence_length=0)
    two_outputs = keras.Model(video.inputs, [video.outputs[0], video.outputs[0]])
    with pytest.raises(ValueError, match="Received: model="):
        kseg.models.TemporalSegmenter(two_outputs)


def test_synthetic_sequences_move_objects_and_occlude_frames():
    frames, labels, occluded = kseg.data.synthetic_sequences(
        6, 5, (40, 48), seed=2, occlusion_rate=0.5
    )
    assert frames.shape == (6, 5, 40, 48, 3) and frames.dtype == np.float32
    assert labels.shape == (6, 5, 40, 48) and set(np.unique(labels)) <= {0, 1, 2}
    assert not occluded[:, 0].any() and occluded.any() and not occluded.all()
    assert frames.min() >= 0 and frames.max() <= 255
    # objects move: the label maps of consecutive frames differ
    assert all((labels[n, 1] != labels[n, 0]).any() for n in range(6))
    # an occluded frame hides its objects: their pixels look like the occluding panel
    # (grey, channels equal up to noise), not like the objects' colours of the frame before
    n, t = np.argwhere(occluded)[0]
    hidden = labels[n, t] > 0
    spread = frames[n, t][hidden].mean(0)
    assert np.ptp(spread) < 15
    again = kseg.data.synthetic_sequences(6, 5, (40, 48), seed=2, occlusion_rate=0.5)
    np.testing.assert_array_equal(again[0], frames)
    with pytest.raises(ValueError, match="Received: occlusion_rate=2"):
        kseg.data.synthetic_sequences(1, occlusion_rate=2)
