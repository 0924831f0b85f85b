// Registration of Kseg>DenseCrf: mean-field inference of the fully connected CRF.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace kseg {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

REGISTER_OP("Kseg>DenseCrf")
    .Input("scores: T")
    .Input("image: T")
    .Output("probabilities: T")
    .Attr("T: {float, double}")
    .Attr("iterations: int >= 0 = 10")
    .Attr("gaussian_sxy: float = 3.0")
    .Attr("gaussian_compat: float = 3.0")
    .Attr("bilateral_sxy: float = 80.0")
    .Attr("bilateral_srgb: float = 13.0")
    .Attr("bilateral_compat: float = 10.0")
    .Attr("normalization: {'symmetric', 'after'} = 'symmetric'")
    .Attr("scores_kind: {'unary', 'probabilities', 'logits'} = 'unary'")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle scores, image;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &scores));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &image));
      DimensionHandle unused;
      for (int i = 0; i < 3; ++i)
        TF_RETURN_IF_ERROR(c->Merge(c->Dim(scores, i), c->Dim(image, i), &unused));
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(image, 3), 3, &unused));
      c->set_output(0, scores);
      return absl::OkStatus();
    })
    .Doc(R"doc(
Mean-field inference of the fully connected CRF (Kraehenbuehl & Koltun 2011) with a gaussian
and a bilateral Potts kernel. `scores` [batch, h, w, classes] holds, as `scores_kind` says,
unary energies, probabilities (unary = -log(clip(p, 1e-5, 1)), as the reference) or logits
(unary = -logits); `image` [batch, h, w, 3] RGB in 0..255. Returns the refined probabilities.
)doc");

}  // namespace kseg
