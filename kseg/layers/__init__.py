"""Keras layers used by kseg models (each file holds one layer or family).

Layers wrapping a compiled ``kseg_ops`` op load the op library only when they run.
"""

from kseg.layers.aspp import ASPP  # noqa: E402,F401
from kseg.layers.conv_block import conv_bn_relu  # noqa: E402,F401
from kseg.layers.crf import CRFRNN, DenseCRF  # noqa: E402,F401
from kseg.layers.crop import CropLike, PadToMultiple  # noqa: E402,F401
from kseg.layers.fft_conv import FFTConv2D  # noqa: E402,F401
from kseg.layers.image_normalization import ImageNormalization  # noqa: E402,F401
from kseg.layers.lraspp import LiteRASPP  # noqa: E402,F401
from kseg.layers.pyramid_pooling import AdaptiveAveragePooling2D  # noqa: E402,F401
from kseg.layers.resize import Resize  # noqa: E402,F401
from kseg.layers.unpooling import MaxPoolingWithArgmax2D, MaxUnpooling2D  # noqa: E402,F401
