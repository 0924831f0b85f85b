// Registration of Kseg>LatticeFilter: permutohedral-lattice Gaussian filtering.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace kseg {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

REGISTER_OP("Kseg>LatticeFilter")
    .Input("values: T")
    .Input("features: T")
    .Output("output: T")
    .Attr("T: {float, double}")
    .Attr("transpose: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle values, features;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &values));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &features));
      DimensionHandle unused;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(values, 0), c->Dim(features, 0), &unused));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(values, 1), c->Dim(features, 1), &unused));
      c->set_output(0, values);
      return absl::OkStatus();
    })
    .Doc(R"doc(
Gaussian filtering of `values` [batch, n, channels] in the space of `features`
[batch, n, feature_dim] (already divided by the standard deviations) with the permutohedral
lattice; `transpose` applies the transposed filter (the gradient with respect to the values).
)doc");

}  // namespace kseg
