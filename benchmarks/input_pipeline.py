"""Images per second of kseg's input pipeline at Cityscapes size, against the training it feeds
and against a tf.data pipeline written the way the TensorFlow segmentation tutorial writes it.

Every pipeline reads 2048x1024 RGB PNGs and 8-bit label-id PNGs (generated here in a temporary
folder: photographs from scikit-image, scaled to 2048x1024 with a little noise, labels in
Cityscapes label ids), draws a scale in [0.5, 2.0], crops 512x1024, flips, maps the 34 label ids
to the 19 train ids and batches 8:

- kseg: ``kseg.data.build_pipeline`` with ``example_reader`` (label ids checked against the
  mapping) and ``Augment`` without colour jitter (the tutorial has none), then the same with
  kseg's default colour jitter;
- tutorial: ``tf.io.read_file`` -> ``decode_png`` -> ``tf.image.resize`` of the whole image
  (label: nearest) -> ``tf.image.random_crop`` of the stacked image and label -> random flip ->
  normalise and map the ids, in one ``map(num_parallel_calls=AUTOTUNE)``, ``batch``,
  ``prefetch`` -- as the tutorial's ``load_image_train``; no ``cache()`` (decoded Cityscapes
  does not fit in memory);
- training: DeepLabV3+ MobileNetV2 at 512x1024, 19 classes, batch 8, ``train_on_batch`` on a
  fixed batch (images per second = steps per second x 8).

The pipelines are timed in alternating rounds (each round: a fresh iterator, one batch of
warm-up, then ``--batches`` batches), and the ratio is the median over rounds of each round's
ratio, so that a slow stretch of this shared machine, which both sides of a round see, cancels.
Peak memory: the peak RSS (VmHWM) of a fresh process that runs one pipeline alone, and how
much of it came while iterating (above its RSS once the pipeline was built). The PNGs are written with zlib level 3 (five times faster
to write than level 6, and as fast to decode).

    python benchmarks/input_pipeline.py [--files 24] [--rounds 5] [--batches 3] [--train-steps 2]
"""

import argparse
import glob
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from PIL import Image, ImageFilter
from skimage import data as samples

import kseg
from kseg.data import Augment, build_pipeline
from kseg.data.folder import example_reader

HEIGHT, WIDTH, CROP, BATCH = 1024, 2048, (512, 1024), 8

# Cityscapes labelIds -> trainIds (cityscapesScripts labels.py); the rest is ignored.
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10}
TRAIN_IDS.update({24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18})
LABEL_MAP = {i: TRAIN_IDS.get(i, 255) for i in range(34)}


def write_dataset(folder, count):
    """``count`` image / label-id PNG pairs at 2048x1024; returns their paths and mean sizes."""
    photos = [samples.coffee(), samples.chelsea(), samples.astronaut(), samples.rocket()]
    photos += [samples.immunohistochemistry(), np.stack([samples.camera()] * 3, -1)]
    photos = [
        np.asarray(Image.fromarray(p).resize((WIDTH, HEIGHT), Image.BILINEAR), np.int16)
        for p in photos
    ]
    ids = np.array([7, 8, 11, 21, 23, 26, 24, 17, 13, 0, 1, 33])
    rng = np.random.default_rng(0)
    images, labels = [], []
    for n in range(count):
        pixels = photos[n % len(photos)]
        if n // len(photos) % 2:
            pixels = pixels[:, ::-1]
        pixels = pixels + rng.integers(-2, 3, pixels.shape, dtype=np.int16)  # sensor noise
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        # Regions that follow the picture: quantised blurred brightness, as label ids.
        grey = image.convert("L").filter(ImageFilter.GaussianBlur(6))
        level = np.asarray(grey, np.int32) * len(ids) // 256
        label = Image.fromarray(np.roll(ids, n)[level].astype(np.uint8))
        images.append(os.path.join(folder, f"city_{n:03d}_leftImg8bit.png"))
        labels.append(os.path.join(folder, f"city_{n:03d}_gtFine_labelIds.png"))
        # zlib level 3: 5x faster to write than the default 6, as fast to decode (31 vs 30 ms).
        image.save(images[-1], compress_level=3)
        label.save(labels[-1], compress_level=3)
    sizes = [np.mean([os.path.getsize(p) for p in paths]) for paths in (images, labels)]
    return images, labels, sizes


def kseg_pipeline(images, labels, colour):
    jitter = {} if colour else dict(brightness=0, contrast=0, saturation=0, hue=0)
    sources = tf.data.Dataset.from_tensor_slices((images, labels)).repeat()
    return build_pipeline(
        sources,
        len(images),
        example_reader(num_classes=19, label_map=LABEL_MAP),
        augment=Augment(scale_range=(0.5, 2.0), crop_size=CROP, **jitter),
        batch_size=BATCH,
        shuffle=True,
    )


def tutorial_pipeline(images, labels):
    table = tf.constant([LABEL_MAP.get(i, 255) for i in range(256)], tf.int32)

    def normalize(input_image, input_mask):
        input_image = tf.cast(input_image, tf.float32) / 255.0
        input_mask = tf.gather(table, tf.cast(input_mask[..., 0], tf.int32))
        return input_image, input_mask

    @tf.function
    def load_image_train(image_path, mask_path):
        input_image = tf.io.decode_png(tf.io.read_file(image_path), channels=3)
        input_mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)
        scale = tf.random.uniform((), 0.5, 2.0)
        size = tf.cast(tf.cast(tf.shape(input_image)[:2], tf.float32) * scale, tf.int32)
        input_image = tf.image.resize(input_image, size)
        input_mask = tf.image.resize(input_mask, size, method="nearest")
        stacked = tf.concat([input_image, tf.cast(input_mask, tf.float32)], axis=-1)
        stacked = tf.image.random_crop(stacked, (*CROP, 4))
        input_image, input_mask = stacked[..., :3], stacked[..., 3:]
        if tf.random.uniform(()) > 0.5:
            input_image = tf.image.flip_left_right(input_image)
            input_mask = tf.image.flip_left_right(input_mask)
        return normalize(input_image, input_mask)

    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().shuffle(len(images))
    train = dataset.map(load_image_train, num_parallel_calls=tf.data.AUTOTUNE)
    return train.batch(BATCH).prefetch(buffer_size=tf.data.AUTOTUNE)


def _status(field):
    with open("/proc/self/status") as status:
        return int(re.search(rf"{field}:\s+(\d+)", status.read()).group(1)) * 1024


def stretch(dataset, batches):
    """Images per second over ``batches`` batches after one of warm-up, and CPU-seconds per image."""
    iterator = iter(dataset)
    next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    del iterator  # stops its background threads before the next pipeline is timed
    return batches * BATCH / wall, cpu / (batches * BATCH)


def peak_memory(name, folder, batches):
    """Peak RSS of a fresh process running pipeline ``name``, above its RSS before iterating."""
    output = subprocess.run(
        [
            sys.executable,
            __file__,
            "--memory-of",
            name,
            "--folder",
            folder,
            "--batches",
            str(batches),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    before, peak = map(int, output.split()[-2:])
    return peak - before, peak


def _memory_child(name, folder, batches):
    images = sorted(glob.glob(os.path.join(folder, "*_leftImg8bit.png")))
    labels = [p.replace("_leftImg8bit.png", "_gtFine_labelIds.png") for p in images]
    dataset = make_pipelines(images, labels)[name]
    before = _status("VmRSS")
    stretch(dataset, batches)
    print(before, _status("VmHWM"))


def make_pipelines(images, labels):
    return {
        "kseg (scale, crop, flip)": kseg_pipeline(images, labels, colour=False),
        "kseg (+ colour jitter)": kseg_pipeline(images, labels, colour=True),
        "tutorial-style tf.data": tutorial_pipeline(images, labels),
    }


def train_rate(steps):
    model = kseg.models.create(
        "deeplabv3plus", num_classes=19, input_shape=(*CROP, 3), backbone="mobilenetv2"
    )
    kseg.engine.compile_model(model, 19, metrics=[])  # what `kseg train` uses: AdamW, poly
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (BATCH, *CROP, 3)).astype(np.float32)
    labels = rng.integers(0, 19, (BATCH, *CROP)).astype(np.int32)
    model.train_on_batch(images, labels)  # builds the train function
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    return steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=24, help="image/label pairs, cycled")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=3, help="timed batches per round")
    parser.add_argument("--train-steps", type=int, default=1, help="0 skips the training rate")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # the peak-memory child
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        return _memory_child(args.memory_of, args.folder, args.batches)

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        images, labels, (image_bytes, label_bytes) = write_dataset(folder, args.files)
        print(
            f"{args.files} pairs of {WIDTH}x{HEIGHT} PNGs (images {image_bytes / 1e6:.2f} MB, "
            f"label ids {label_bytes / 1e3:.0f} kB on average), written in "
            f"{time.perf_counter() - start:.0f} s; TensorFlow {tf.__version__}, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        )
        pipelines = make_pipelines(images, labels)
        rates = {name: [] for name in pipelines}
        cpu = {name: [] for name in pipelines}
        names = list(pipelines)
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                rate, seconds = stretch(pipelines[name], args.batches)
                rates[name].append(rate)
                cpu[name].append(seconds)
        memory = {name: peak_memory(name, folder, args.batches) for name in pipelines}
        print(
            f"\n{args.rounds} rounds x {args.batches} batches of {BATCH} "
            f"(random scale 0.5-2.0, {CROP[0]}x{CROP[1]} crop)"
        )
        tutorial = rates["tutorial-style tf.data"]
        for name in names:
            ratio = statistics.median(a / b for a, b in zip(rates[name], tutorial))
            print(
                f"{name:26s} {statistics.median(rates[name]):6.2f} images/s "
                f"(rounds {min(rates[name]):.2f}-{max(rates[name]):.2f}), "
                f"{statistics.median(cpu[name]) * 1e3:5.0f} CPU-ms/image, "
                f"peak RSS {memory[name][1] / 2**20:5.0f} MiB (+{memory[name][0] / 2**20:4.0f} "
                f"iterating), vs tutorial {ratio:.2f}x"
            )
    if args.train_steps:
        steps = train_rate(args.train_steps)
        train_images = steps * BATCH
        print(
            f"\nDeepLabV3+ MobileNetV2 {CROP[0]}x{CROP[1]} batch {BATCH} training: "
            f"{1 / steps:.1f} s/step = {train_images:.2f} images/s"
        )
        for name in names:
            print(f"{name:26s} {statistics.median(rates[name]) / train_images:6.1f}x training")


if __name__ == "__main__":
    main()
