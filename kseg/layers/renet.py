"""ReNet (Visin et al. 2015): four directional RNN sweeps over patches, the block of ReSeg."""

from __future__ import annotations

import keras
from keras import ops

from kseg.layers._composite import CompositeLayer, check_int

_CELLS = ("gru", "lstm")


@keras.saving.register_keras_serializable(package="kseg")
class ReNet(CompositeLayer):
    """One ReNet layer: a bidirectional RNN down and up every column, then one along every row.

    The input is cut into non-overlapping ``patch_size`` × ``patch_size`` patches (flattened;
    the map is zero-padded to a multiple of the patch first). Two RNNs sweep each column of
    patches top-down and bottom-up and their states are concatenated (``2 * units``
    channels); two more sweep each row of that map left-right and right-left. Every output
    position thus sees the whole image. As in the authors' ReSeg code (``stack_sublayers=True``,
    Lasagne ``GRULayer``), the horizontal sweeps read the vertical sweeps' output. The GRU is
    Keras's with ``reset_after=False`` (one bias per gate, Lasagne's parameter count; Lasagne
    applies the reset gate after the recurrent product, Keras before it).

    Args:
        units: hidden units of each of the four RNNs; the output has ``2 * units`` channels.
        patch_size: side of the patches (1 = one pixel per step); the output is
            ``ceil(H / patch_size) × ceil(W / patch_size)``.
        cell: ``"gru"`` (ReSeg's choice) or ``"lstm"``.

    Example:
        >>> import numpy as np
        >>> layer = ReNet(units=4, patch_size=2)
        >>> tuple(layer(np.zeros((1, 6, 8, 3), "float32")).shape)
        (1, 3, 4, 8)
    """

    def __init__(self, units, patch_size=1, cell="gru", **kwargs):
        super().__init__(**kwargs)
        check_int("ReNet", "units", units)
        check_int("ReNet", "patch_size", patch_size)
        if cell not in _CELLS:
            raise ValueError(f"ReNet: cell must be one of {_CELLS}. Received: cell={cell!r}")
        self.units = units
        self.patch_size = patch_size
        self.cell = cell
        self.vertical = self._bidirectional("vertical")
        self.horizontal = self._bidirectional("horizontal")

    def _bidirectional(self, name):
        if self.cell == "gru":
            rnn = keras.layers.GRU(
                self.units, return_sequences=True, reset_after=False, dtype=self.dtype_policy
            )
        else:
            rnn = keras.layers.LSTM(self.units, return_sequences=True, dtype=self.dtype_policy)
        return keras.layers.Bidirectional(
            rnn, merge_mode="concat", name=name, dtype=self.dtype_policy
        )

    def _patches(self, x):
        p = self.patch_size
        if p == 1:
            return x
        shape = ops.shape(x)
        height, width, channels = shape[1], shape[2], x.shape[-1]
        pad_h, pad_w = (-height) % p, (-width) % p
        x = ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        rows, cols = (height + pad_h) // p, (width + pad_w) // p
        x = ops.reshape(x, (-1, rows, p, cols, p, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, rows, cols, p * p * channels))

    @staticmethod
    def _sweep(rnn, x):
        # x: [B, A, L, C] -> the RNN runs along L for each of the B * A lines
        shape = ops.shape(x)
        lines = ops.reshape(x, (-1, shape[2], x.shape[-1]))
        out = rnn(lines)
        return ops.reshape(out, (-1, shape[1], shape[2], out.shape[-1]))

    def call(self, x):
        x = self._patches(x)
        columns = ops.transpose(x, (0, 2, 1, 3))  # [B, W, H, C]: sweep down and up
        x = ops.transpose(self._sweep(self.vertical, columns), (0, 2, 1, 3))
        return self._sweep(self.horizontal, x)

    def _output_shape(self, shapes):
        batch, height, width, _ = shapes[0]
        p = self.patch_size
        size = [None if d is None else -(-d // p) for d in (height, width)]
        return (batch, *size, 2 * self.units)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, patch_size=self.patch_size, cell=self.cell)
        return config
