"""Mix Transformer encoders MiT-B0..B5 (SegFormer, Xie et al., NeurIPS 2021).

Four stages, each an overlapping patch embedding (7×7 stride 4, then 3×3 stride 2), a stack
of ``MixTransformerBlock`` and a layer normalisation, returning ``{"P2": stride 4, "P3": 8,
"P4": 16, "P5": 32}``. The configurations are those of the authors' ``mix_transformer.py``
(and keras-hub's presets): widths, depths, heads and reduction ratios below, MLP ratio 4,
stochastic depth rising linearly from 0 to ``drop_path_rate`` over the blocks. No ImageNet
weights are bundled: ``weights`` must be None (or a ``.weights.h5`` file saved from the same
configuration).
"""

from __future__ import annotations

import numpy as np
from keras import layers

from kseg.layers.mix_transformer import MixTransformerBlock, OverlapPatchEmbedding
from kseg.registry import BACKBONES

# name -> (widths, depths); heads (1, 2, 5, 8) and sr ratios (8, 4, 2, 1) are shared.
MIT_CONFIGS = {
    "mit_b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "mit_b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
    "mit_b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
    "mit_b3": ((64, 128, 320, 512), (3, 4, 18, 3)),
    "mit_b4": ((64, 128, 320, 512), (3, 8, 27, 3)),
    "mit_b5": ((64, 128, 320, 512), (3, 6, 40, 3)),
}
MIT_HEADS = (1, 2, 5, 8)
MIT_SR_RATIOS = (8, 4, 2, 1)

# ImageNet mean/std on 0..255 inputs, as the authors' (mmseg) pipeline.
PREPROCESSING = "torch"


def mix_transformer(inputs, variant="mit_b0", output_stride=32, weights=None, drop_path_rate=0.1):
    """Builds MiT ``variant`` on ``inputs`` (already normalised) and returns its levels.

    Args:
        inputs: a Keras tensor ``[B, H, W, C]``.
        variant: one of ``MIT_CONFIGS`` ("mit_b0" .. "mit_b5").
        output_stride: 32 only (the encoder has no dilated variant).
        weights: None or a weights file of the same configuration (``.weights.h5``).
        drop_path_rate: the last block's stochastic-depth rate (authors: 0.1).

    Example:
        >>> import keras
        >>> feats = mix_transformer(keras.Input((64, 96, 3)), "mit_b0")
        >>> [tuple(feats[k].shape[1:]) for k in ("P2", "P5")]
        [(16, 24, 32), (2, 3, 256)]
    """
    if variant not in MIT_CONFIGS:
        raise ValueError(
            f"mix_transformer: variant must be one of {tuple(MIT_CONFIGS)}. "
            f"Received: variant={variant!r}"
        )
    if output_stride != 32:
        raise ValueError(
            f"{variant}: output_stride must be 32 (MiT has no dilated variant). "
            f"Received: output_stride={output_stride!r}"
        )
    if weights == "imagenet":
        raise ValueError(
            f"{variant}: kseg bundles no ImageNet weights for MiT; pass weights=None or a "
            f"weights file. Received: weights={weights!r}"
        )
    if (
        isinstance(drop_path_rate, bool)
        or not isinstance(drop_path_rate, (int, float))
        or not 0 <= drop_path_rate < 1
    ):
        raise ValueError(
            f"{variant}: drop_path_rate must be in [0, 1). Received: drop_path_rate={drop_path_rate!r}"
        )
    widths, depths = MIT_CONFIGS[variant]
    rates = np.linspace(0.0, drop_path_rate, sum(depths)).tolist()
    x, features, index = inputs, {}, 0
    for stage, (width, depth) in enumerate(zip(widths, depths)):
        first = stage == 0
        x = OverlapPatchEmbedding(
            width, 7 if first else 3, 4 if first else 2, name=f"mit_patch_embed{stage + 1}"
        )(x)
        for block in range(depth):
            x = MixTransformerBlock(
                MIT_HEADS[stage],
                MIT_SR_RATIOS[stage],
                drop_path=rates[index],
                name=f"mit_block{stage + 1}_{block + 1}",
            )(x)
            index += 1
        x = layers.LayerNormalization(epsilon=1e-6, name=f"mit_norm{stage + 1}")(x)
        features[f"P{stage + 2}"] = x
    if weights is not None:
        import keras

        encoder = keras.Model(inputs, list(features.values()))
        encoder.load_weights(weights)
    return features


def _register(variant):
    @BACKBONES.register(variant)
    def builder(inputs, output_stride=32, weights=None, drop_path_rate=0.1):
        return mix_transformer(inputs, variant, output_stride, weights, drop_path_rate)

    builder.__name__ = variant
    builder.__doc__ = f"MiT backbone {variant}; see ``mix_transformer``."
    builder.preprocessing = PREPROCESSING
    return builder


for _variant in MIT_CONFIGS:
    globals()[_variant] = _register(_variant)
