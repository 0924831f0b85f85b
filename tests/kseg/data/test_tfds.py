"""kseg.data.tfds over tensorflow_datasets, with tfds.testing.mock_data (no download)."""

import numpy as np
import pytest
import tensorflow as tf

import kseg

tensorflow_datasets = pytest.importorskip("tensorflow_datasets")

SIZES = [(10, 12), (7, 5), (10, 12)]


def _trimaps():
    """Pet-like examples: trimap ids 1 (pet), 2 (background), 3 (border) in a [H, W, 1] mask."""
    rng = np.random.default_rng(0)
    examples = []
    for index, size in enumerate(SIZES):
        mask = rng.integers(1, 4, (*size, 1)).astype(np.uint8)
        mask.flat[:3] = [1, 2, 3]
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        examples.append(
            {"image": image, "segmentation_mask": mask, "file_name": f"pet_{index}.jpg"}
        )
    return examples


def _mock(examples):
    def as_dataset(self, *args, **kwargs):
        keys = ("image", "segmentation_mask", "file_name")
        return tf.data.Dataset.from_generator(
            lambda: ({k: e[k] for k in keys} for e in examples),
            output_signature={
                "image": tf.TensorSpec((None, None, 3), tf.uint8),
                "segmentation_mask": tf.TensorSpec((None, None, 1), tf.uint8),
                "file_name": tf.TensorSpec((), tf.string),
            },
        )

    return tensorflow_datasets.testing.mock_data(as_dataset_fn=as_dataset)


def test_oxford_pet_trimap_maps_as_the_tutorial(tmp_path):
    examples = _trimaps()
    with _mock(examples):
        loaded = list(kseg.data.load("tfds", "oxford_iiit_pet", "train", data_dir=str(tmp_path)))
        ignore_border = list(
            kseg.data.tfds(
                "oxford_iiit_pet", "test", label_map={1: 0, 2: 1, 3: 255}, data_dir=str(tmp_path)
            )
        )
    assert len(loaded) == len(examples)
    for (image, label), example, (_, ignored) in zip(loaded, examples, ignore_border):
        mask = example["segmentation_mask"][..., 0].astype(np.int32)
        np.testing.assert_array_equal(label.numpy(), mask - 1)  # 1/2/3 -> 0 pet, 1 bg, 2 border
        np.testing.assert_array_equal(ignored.numpy(), np.where(mask == 3, 255, mask - 1))
        np.testing.assert_array_equal(image.numpy(), example["image"].astype(np.float32))
        assert image.dtype == tf.float32 and label.dtype == tf.int32
    info = kseg.data.info("tfds:oxford_iiit_pet")
    assert info.class_names == ("pet", "background", "border")


def test_random_mock_data_and_other_keys(tmp_path):
    # tfds's own random examples: the pet images and masks have unrelated sizes and values.
    with tensorflow_datasets.testing.mock_data(num_examples=2):
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match=r"example 0 of TFDS 'oxford_iiit_pet' split 'train': 'segmentation_mask' has shape",
        ):
            list(kseg.data.tfds("oxford_iiit_pet", "train", data_dir=str(tmp_path)))
    examples = _trimaps()
    examples[1]["segmentation_mask"][0, 0, 0] = 9
    with _mock(examples):
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match=r"example 1 of TFDS 'oxford_iiit_pet' split 'train': 'segmentation_mask' holds id 9",
        ):
            list(kseg.data.tfds("oxford_iiit_pet", "train", data_dir=str(tmp_path)))
        # No label map: the stored values are the classes, checked against num_classes.
        with pytest.raises(
            tf.errors.InvalidArgumentError, match=r"holds value 9, but num_classes is 4"
        ):
            list(
                kseg.data.tfds(
                    "oxford_iiit_pet",
                    "train",
                    label_map=False,
                    num_classes=4,
                    data_dir=str(tmp_path),
                )
            )
        with pytest.raises(ValueError, match=r"has no feature 'mask'"):
            kseg.data.tfds("oxford_iiit_pet", "train", label_key="mask", data_dir=str(tmp_path))
