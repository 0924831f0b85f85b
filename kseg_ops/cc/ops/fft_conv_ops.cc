// Registration of Kseg>FftConv2D and its two gradient ops.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace kseg {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

namespace {

// Output spatial size for stride 1: SAME keeps it, VALID subtracts kernel - 1.
absl::Status SpatialOut(InferenceContext* c, DimensionHandle in, DimensionHandle k, bool same,
                        DimensionHandle* out) {
  if (same) {
    *out = in;
    return absl::OkStatus();
  }
  if (!c->ValueKnown(in) || !c->ValueKnown(k)) {
    *out = c->UnknownDim();
    return absl::OkStatus();
  }
  if (c->Value(k) > c->Value(in))
    return absl::InvalidArgumentError(absl::StrCat("with padding VALID the filter size ",
                                                   c->Value(k), " must not exceed the input size ",
                                                   c->Value(in)));
  *out = c->MakeDim(c->Value(in) - c->Value(k) + 1);
  return absl::OkStatus();
}

absl::Status ForwardShape(InferenceContext* c) {
  ShapeHandle input, filter;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &input));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &filter));
  DimensionHandle unused;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(input, 3), c->Dim(filter, 2), &unused));
  std::string padding;
  TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding));
  DimensionHandle out_h, out_w;
  TF_RETURN_IF_ERROR(SpatialOut(c, c->Dim(input, 1), c->Dim(filter, 0), padding == "SAME", &out_h));
  TF_RETURN_IF_ERROR(SpatialOut(c, c->Dim(input, 2), c->Dim(filter, 1), padding == "SAME", &out_w));
  c->set_output(0, c->MakeShape({c->Dim(input, 0), out_h, out_w, c->Dim(filter, 3)}));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("Kseg>FftConv2D")
    .Input("input: T")
    .Input("filter: T")
    .Output("output: T")
    .Attr("T: {float, double}")
    .Attr("padding: {'SAME', 'VALID'} = 'SAME'")
    .SetShapeFn(ForwardShape)
    .Doc(R"doc(
2D cross-correlation computed with FFTs, equal to tf.nn.conv2d with strides 1 and dilations 1:
`input` [batch, height, width, in_channels], `filter` [kernel_height, kernel_width, in_channels,
out_channels]. Inputs must be finite.
)doc");

REGISTER_OP("Kseg>FftConv2DBackpropInput")
    .Input("input: T")
    .Input("filter: T")
    .Input("grad_output: T")
    .Output("grad_input: T")
    .Attr("T: {float, double}")
    .Attr("padding: {'SAME', 'VALID'} = 'SAME'")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle input;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &input));
      c->set_output(0, input);
      return absl::OkStatus();
    })
    .Doc(R"doc(
Gradient of Kseg>FftConv2D with respect to `input` (whose values are not read, only its shape).
)doc");

REGISTER_OP("Kseg>FftConv2DBackpropFilter")
    .Input("input: T")
    .Input("filter: T")
    .Input("grad_output: T")
    .Output("grad_filter: T")
    .Attr("T: {float, double}")
    .Attr("padding: {'SAME', 'VALID'} = 'SAME'")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle filter;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &filter));
      c->set_output(0, filter);
      return absl::OkStatus();
    })
    .Doc(R"doc(
Gradient of Kseg>FftConv2D with respect to `filter` (whose values are not read, only its shape).
)doc");

}  // namespace kseg
