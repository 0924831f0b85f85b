"""Keras layers used by kseg models (each file holds one layer or family).

Layers wrapping a compiled ``kseg_ops`` op load the op library only when they run.
"""

from kseg.layers.aspp import ASPP  # noqa: E402,F401
from kseg.layers.attention import (  # noqa: E402,F401
    ChannelAttention,
    FeaturePyramidAttention,
    GlobalAttentionUpsample,
    L2Normalization,
    PositionAttention,
    ScaleAttention,
)
from kseg.layers.batch_norm import BatchNormalization  # noqa: E402,F401
from kseg.layers.bisenet import (  # noqa: E402,F401
    AttentionRefinementModule,
    BilateralGuidedAggregation,
    ContextEmbedding,
    FeatureFusionModule,
    GatherExpand,
    StemBlock,
    attention_refinement,
    bilateral_guided_aggregation,
    context_embedding,
    feature_fusion,
    gather_expand,
    stem_block,
)
from kseg.layers.channel_shuffle import ChannelShuffle, GroupedConv2D  # noqa: E402,F401
from kseg.layers.conv_block import conv_bn_relu  # noqa: E402,F401
from kseg.layers.crf import CRFRNN, DenseCRF  # noqa: E402,F401
from kseg.layers.crop import CropLike, PadToMultiple  # noqa: E402,F401
from kseg.layers.dpn import DPNMRF  # noqa: E402,F401
from kseg.layers.enet_blocks import (  # noqa: E402,F401
    ChannelZeroPad,
    ENetBottleneck,
    ENetDownsamplingBottleneck,
    ENetInitialBlock,
    ENetUpsamplingBottleneck,
    enet_bottleneck,
    enet_downsampling_bottleneck,
    enet_initial_block,
    enet_upsampling_bottleneck,
)
from kseg.layers.erfnet_blocks import (  # noqa: E402,F401
    ERFNetDownsampler,
    ERFNetUpsampler,
    NonBottleneck1D,
    erfnet_downsampler,
    erfnet_upsampler,
    non_bottleneck_1d,
)
from kseg.layers.esp_blocks import (  # noqa: E402,F401
    EESPDownsampler,
    EESPUnit,
    EfficientPWConv,
    EfficientPyramidPooling,
    ESPModule,
    ScaleResize,
    eesp_downsampler,
    eesp_unit,
    efficient_pw_conv,
    efficient_pyramid_pooling,
    esp_module,
)
from kseg.layers.fast_scnn import (  # noqa: E402,F401
    FastSCNNFeatureFusion,
    GlobalFeatureExtractor,
    LearningToDownsample,
    LinearBottleneck,
    global_feature_extractor,
    learning_to_downsample,
)
from kseg.layers.fft_conv import FFTConv2D  # noqa: E402,F401
from kseg.layers.icnet import CascadeFeatureFusion, cascade_feature_fusion  # noqa: E402,F401
from kseg.layers.image_normalization import ImageNormalization  # noqa: E402,F401
from kseg.layers.image_pair import AbsoluteDifference, SplitImagePair  # noqa: E402,F401
from kseg.layers.lraspp import LiteRASPP  # noqa: E402,F401
from kseg.layers.mix_transformer import (  # noqa: E402,F401
    EfficientSelfAttention,
    MixFFN,
    MixTransformerBlock,
    OverlapPatchEmbedding,
)
from kseg.layers.pixel_shuffle import DepthToSpace, SpaceToDepth  # noqa: E402,F401
from kseg.layers.pyramid_pooling import (  # noqa: E402,F401
    AdaptiveAveragePooling2D,
    pyramid_pooling_module,
)
from kseg.layers.renet import ReNet  # noqa: E402,F401
from kseg.layers.resize import Resize  # noqa: E402,F401
from kseg.layers.unpooling import MaxPoolingWithArgmax2D, MaxUnpooling2D  # noqa: E402,F401
