"""Throughput of kseg's synthetic scene generator against scikit-image's random_shapes.

Both draw a handful of random shapes into a 128x128 RGB image on one core; kseg also
renders the textured, lit, noisy background and the per-pixel label map.

    python benchmarks/synthetic_scenes.py [--count 500] [--size 128]
"""

import argparse
import time
import warnings

import numpy as np
from skimage.draw import random_shapes

from kseg.data import synthetic_numpy


def throughput(generate, count):
    generate(10)  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    generate(count)
    return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    size = (args.size, args.size)

    def kseg_scenes(count):
        synthetic_numpy(count, size, seed=1)

    def skimage_shapes(count):
        rng = np.random.default_rng(1)
        warnings.filterwarnings("ignore", message="Could not fit any shapes")
        for _ in range(count):
            random_shapes(size, max_shapes=5, min_shapes=2, min_size=12, rng=rng)

    kseg_wall, kseg_cpu = throughput(kseg_scenes, args.count)
    peer_wall, peer_cpu = throughput(skimage_shapes, args.count)
    print(f"{args.count} images {args.size}x{args.size}, one process")
    print(
        f"kseg.data.synthetic_numpy     : {kseg_wall:7.0f} images/s wall, {kseg_cpu:7.0f} per CPU-second"
    )
    print(
        f"skimage.draw.random_shapes    : {peer_wall:7.0f} images/s wall, {peer_cpu:7.0f} per CPU-second"
    )
    print(f"ratio (kseg / skimage, CPU)   : {kseg_cpu / peer_cpu:.2f}x")


if __name__ == "__main__":
    main()
