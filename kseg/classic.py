"""Segmentation before deep learning: thresholding, clustering, edge- and graph-based methods.

Thin wrappers over scikit-image and scikit-learn (``pip install "kseg[classic]"``), for
baselines beside the networks. Each method maps one RGB image ``[H, W, 3]`` (0..255) to a
segment map ``int32 [H, W]`` whose ids mean nothing by themselves; :func:`match_segments`
names them with classes using the truth (Hungarian matching of segments to classes), and
:func:`evaluate` scores a method on a ``(image, label)`` dataset with ``kseg.metrics``, in the
same form as ``kseg.engine.evaluate``. The matching looks at the truth of each image, so the
scores are those of an oracle labelling: an upper bound of what the unsupervised method
could reach, not a fair comparison with a trained model on equal terms.

| method | wraps | segments |
|---|---|---|
| ``otsu`` | ``skimage.filters.threshold_otsu`` on grey levels | 2 |
| ``multi_otsu`` | ``skimage.filters.threshold_multiotsu`` | ``classes`` |
| ``kmeans`` | ``sklearn.cluster.KMeans`` on colour (+ position) | ``n_clusters`` |
| ``gmm`` | ``sklearn.mixture.GaussianMixture`` on colour (+ position) | ``n_components`` |
| ``mean_shift`` | ``sklearn.cluster.MeanShift`` on colour | found by the bandwidth |
| ``watershed`` | ``skimage.segmentation.watershed`` on the Sobel edge map | ``markers`` |
| ``felzenszwalb`` | ``skimage.segmentation.felzenszwalb`` (graph-based) | found by ``scale`` |
| ``normalized_cuts`` | ``skimage.graph.cut_normalized`` on a SLIC region graph | found by ``thresh`` |

Example:
    >>> import kseg
    >>> images, labels = kseg.data.synthetic_numpy(1, (64, 64), seed=0)
    >>> segments = kseg.classic.segment("kmeans", images[0], n_clusters=6)
    >>> predicted = kseg.classic.match_segments(segments, labels[0], num_classes=6)
    >>> predicted.shape, predicted.dtype
    ((64, 64), dtype('int32'))
"""

from __future__ import annotations

import numbers

import numpy as np

from kseg.constants import IGNORE_INDEX


def _require(module):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"kseg.classic needs {module.split('.')[0]} ({error}); "
            'install it with pip install "kseg[classic]"'
        ) from None


def _check_image(image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(
            f"image must be an RGB array [H, W, 3]. Received: image.shape={image.shape}"
        )
    if not np.all(np.isfinite(image)):
        raise ValueError("image holds NaN or Inf values. Received: image with non-finite values")
    return image.astype(np.float64)


def _check_count(method, argument, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"{method}: {argument} must be an integer >= {minimum}. Received: {argument}={value!r}"
        )
    return int(value)


def _grey(image):
    return image @ np.array([0.2125, 0.7154, 0.0721])  # skimage's rgb2gray weights


def _features(image, spatial_weight):
    """Per-pixel colour features (0..1), with scaled (row, col) when ``spatial_weight`` > 0."""
    height, width, _ = image.shape
    features = image.reshape(-1, 3) / 255.0
    if spatial_weight:
        rows, cols = np.mgrid[0:height, 0:width] / max(height, width)
        features = np.concatenate(
            [features, spatial_weight * np.stack([rows.ravel(), cols.ravel()], -1)], -1
        )
    return features


def otsu(image):
    """Two segments: grey levels above Otsu's threshold (1) and the rest (0).

    Example:
        >>> image = np.zeros((4, 4, 3)); image[:, 2:] = 200
        >>> otsu(image)[0].tolist()
        [0, 0, 1, 1]
    """
    filters = _require("skimage.filters")
    grey = _grey(_check_image(image))
    if grey.min() == grey.max():
        return np.zeros(grey.shape, np.int32)
    return (grey > filters.threshold_otsu(grey)).astype(np.int32)


def multi_otsu(image, classes=3):
    """``classes`` segments from the multi-level Otsu thresholds of the grey levels.

    Example:
        >>> image = np.zeros((3, 6, 3)) + np.array([10, 20, 120, 130, 230, 240])[:, None]
        >>> np.unique(multi_otsu(image, classes=3)).tolist()
        [0, 1, 2]
    """
    filters = _require("skimage.filters")
    classes = _check_count("multi_otsu", "classes", classes, minimum=2)
    grey = _grey(_check_image(image))
    if np.unique(grey).size < classes:
        return np.searchsorted(np.unique(grey), grey).astype(np.int32)
    thresholds = filters.threshold_multiotsu(grey, classes=classes)
    return np.digitize(grey, thresholds).astype(np.int32)


def kmeans(image, n_clusters=6, spatial_weight=0.0, seed=0):
    """k-means clustering of the pixels' colours (and positions, weighted by ``spatial_weight``).

    Example:
        >>> image = np.zeros((4, 4, 3)); image[2:] = [255, 0, 0]
        >>> np.unique(kmeans(image, n_clusters=2)[2:]).size
        1
    """
    cluster = _require("sklearn.cluster")
    n_clusters = _check_count("kmeans", "n_clusters", n_clusters)
    image = _check_image(image)
    features = _features(image, spatial_weight)
    n_clusters = min(n_clusters, len(np.unique(features, axis=0)))
    labels = cluster.KMeans(n_clusters, n_init=3, random_state=seed).fit_predict(features)
    return labels.reshape(image.shape[:2]).astype(np.int32)


def gmm(image, n_components=6, spatial_weight=0.0, seed=0):
    """Gaussian mixture (full covariances) on the pixels' colours (and positions); each pixel
    takes its most likely component.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> image = rng.normal(60, 5, (8, 8, 3)); image[4:] += 120
        >>> segments = gmm(image, n_components=2)
        >>> bool((segments[:4] == segments[0, 0]).all() and (segments[4:] != segments[0, 0]).all())
        True
    """
    mixture = _require("sklearn.mixture")
    n_components = _check_count("gmm", "n_components", n_components)
    image = _check_image(image)
    features = _features(image, spatial_weight)
    n_components = min(n_components, len(np.unique(features, axis=0)))
    model = mixture.GaussianMixture(n_components, reg_covar=1e-4, random_state=seed)
    return model.fit_predict(features).reshape(image.shape[:2]).astype(np.int32)


def mean_shift(image, bandwidth=None, max_samples=2000, seed=0):
    """Mean shift on colours: modes of the colour density; each pixel joins its nearest mode.

    The modes are found on at most ``max_samples`` pixels (mean shift is quadratic), with
    ``bandwidth`` (colour distance in 0..1 units) estimated from them when None.

    Example:
        >>> image = np.zeros((6, 6, 3)); image[3:] = 255
        >>> np.unique(mean_shift(image, bandwidth=0.3)).size
        2
    """
    cluster = _require("sklearn.cluster")
    max_samples = _check_count("mean_shift", "max_samples", max_samples)
    if bandwidth is not None and (
        isinstance(bandwidth, bool) or not isinstance(bandwidth, numbers.Real) or bandwidth <= 0
    ):
        raise ValueError(
            f"mean_shift: bandwidth must be a positive number or None. Received: "
            f"bandwidth={bandwidth!r}"
        )
    image = _check_image(image)
    features = _features(image, 0.0)
    rng = np.random.default_rng(seed)
    sample = features[rng.choice(len(features), min(max_samples, len(features)), replace=False)]
    if bandwidth is None:
        bandwidth = cluster.estimate_bandwidth(sample, quantile=0.2, random_state=seed)
        bandwidth = bandwidth if bandwidth > 0 else 0.1
    model = cluster.MeanShift(bandwidth=bandwidth, bin_seeding=True).fit(sample)
    return model.predict(features).reshape(image.shape[:2]).astype(np.int32)


def watershed(image, markers=50, compactness=0.0):
    """Edge-based: the watershed of the Sobel gradient magnitude from ``markers`` seeds.

    Example:
        >>> image = np.random.default_rng(0).normal(0, 2, (16, 16, 3)); image[:, 8:] += 255
        >>> segments = watershed(image, markers=4)
        >>> set(np.unique(segments[:, :6])).isdisjoint(np.unique(segments[:, -6:]))
        True
    """
    filters = _require("skimage.filters")
    segmentation = _require("skimage.segmentation")
    markers = _check_count("watershed", "markers", markers)
    gradient = filters.sobel(_grey(_check_image(image)))
    labels = segmentation.watershed(gradient, markers=markers, compactness=compactness)
    return (labels - 1).astype(np.int32)


def felzenszwalb(image, scale=100.0, sigma=0.8, min_size=20):
    """Graph-based segmentation of Felzenszwalb & Huttenlocher (2004).

    Example:
        >>> image = np.zeros((16, 16, 3)); image[:, 8:] = 255
        >>> segments = felzenszwalb(image, scale=10, min_size=5)
        >>> bool(segments[0, 0] != segments[0, -1])
        True
    """
    segmentation = _require("skimage.segmentation")
    image = _check_image(image)
    labels = segmentation.felzenszwalb(
        image / 255.0, scale=scale, sigma=sigma, min_size=min_size, channel_axis=-1
    )
    return labels.astype(np.int32)


def normalized_cuts(image, n_segments=100, compactness=10.0, thresh=0.001, seed=0):
    """Normalised cuts (Shi & Malik 2000) on the region adjacency graph of SLIC superpixels.

    scikit-image cuts a graph of regions rather than of pixels (a pixel graph's eigenproblem
    is too large); ``n_segments`` superpixels are the graph's nodes, and ``thresh`` stops the
    recursive two-way cuts.

    Example:
        >>> image = np.zeros((32, 32, 3)); image[:, 16:] = 255
        >>> segments = normalized_cuts(image, n_segments=16)
        >>> segments.shape, segments.dtype
        ((32, 32), dtype('int32'))
    """
    graph = _require("skimage.graph")
    segmentation = _require("skimage.segmentation")
    n_segments = _check_count("normalized_cuts", "n_segments", n_segments)
    image = _check_image(image)
    superpixels = segmentation.slic(
        image / 255.0, n_segments=n_segments, compactness=compactness, start_label=0
    )
    if superpixels.max() == 0:  # one superpixel: no graph to cut
        return np.zeros(superpixels.shape, np.int32)
    rag = graph.rag_mean_color(image, superpixels, mode="similarity")
    # the eigensolver starts from a random vector drawn from ``rng``; unseeded, it drew a new
    # one per call and the cut changed from run to run
    labels = graph.cut_normalized(superpixels, rag, thresh=thresh, rng=seed)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int32)


METHODS = {
    "otsu": otsu,
    "multi_otsu": multi_otsu,
    "kmeans": kmeans,
    "gmm": gmm,
    "mean_shift": mean_shift,
    "watershed": watershed,
    "felzenszwalb": felzenszwalb,
    "normalized_cuts": normalized_cuts,
}


def segment(method, image, **kwargs):
    """Runs the classic method named ``method`` (a key of ``METHODS``) on one RGB image.

    Example:
        >>> segment("otsu", np.zeros((4, 4, 3))).tolist()[0]
        [0, 0, 0, 0]
    """
    if method not in METHODS:
        raise ValueError(
            f"unknown classic method; valid: {', '.join(METHODS)}. Received: method={method!r}"
        )
    return METHODS[method](image, **kwargs)


def match_segments(segments, truth, num_classes, ignore_index=IGNORE_INDEX):
    """Names segments with classes: Hungarian matching of segments to classes on the truth.

    The overlap (pixel count, ``ignore_index`` pixels left out) of every segment with every
    class is maximised by a one-to-one assignment (``scipy.optimize.linear_sum_assignment``).
    With more segments than classes, the segments left unmatched take the class they overlap
    most, so every pixel gets a class.

    Args:
        segments: ``int [H, W]`` segment ids (any non-negative ints).
        truth: ``int [H, W]`` class labels in ``[0, num_classes)`` or ``ignore_index``.
        num_classes: the number of classes.
        ignore_index: the truth label that is not counted.

    Returns:
        ``int32 [H, W]`` class labels.

    Example:
        >>> segments = np.array([[5, 5, 9, 9]])
        >>> match_segments(segments, np.array([[1, 1, 0, 0]]), num_classes=2).tolist()
        [[1, 1, 0, 0]]
    """
    optimize = _require("scipy.optimize")
    segments, truth = np.asarray(segments), np.asarray(truth)
    if segments.shape != truth.shape:
        raise ValueError(
            f"segments and truth must have the same shape. Received: segments.shape="
            f"{segments.shape}, truth.shape={truth.shape}"
        )
    num_classes = _check_count("match_segments", "num_classes", num_classes)
    valid = truth != ignore_index
    bad = valid & ((truth < 0) | (truth >= num_classes))
    if bad.any():
        raise ValueError(
            f"truth holds label {int(truth[bad][0])}, outside [0, {num_classes}) and not "
            f"{ignore_index}. Received: label={int(truth[bad][0])}"
        )
    ids, segment_index = np.unique(segments, return_inverse=True)
    segment_index = segment_index.reshape(segments.shape)
    overlap = np.zeros((len(ids), num_classes), np.int64)
    np.add.at(overlap, (segment_index[valid], truth[valid]), 1)
    rows, cols = optimize.linear_sum_assignment(overlap, maximize=True)
    assignment = overlap.argmax(axis=1)
    assignment[rows] = cols
    return assignment[segment_index].astype(np.int32)


def evaluate(method, dataset, num_classes, ignore_index=IGNORE_INDEX, **kwargs):
    """Scores a classic method on ``(image, label)`` examples as ``kseg.engine.evaluate`` does.

    Each image is segmented, its segments matched to classes on its truth
    (:func:`match_segments`), and the pixels counted in one confusion matrix.

    Args:
        method: a key of ``METHODS``.
        dataset: an iterable of ``(image, label)`` pairs, batched or not (a ``tf.data.Dataset``
            or numpy arrays).
        num_classes: the number of classes.
        ignore_index: the label that is not scored.
        **kwargs: the method's arguments.

    Returns:
        ``kseg.metrics.scores`` of the matrix, plus ``confusion_matrix``, ``num_pixels`` and
        ``segments_per_image`` (the mean number of segments: a method that over-segments
        scores high through the labelling of its many segments on the truth).

    Example:
        >>> import kseg
        >>> images, labels = kseg.data.synthetic_numpy(2, (48, 48), seed=1)
        >>> result = evaluate("kmeans", zip(images, labels), num_classes=6, n_clusters=6)
        >>> 0 <= result["mean_iou"] <= 1
        True
    """
    from kseg import metrics

    cm = np.zeros((num_classes, num_classes), np.int64)
    counts = []
    for images, labels in dataset:
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim == 3:
            images, labels = images[None], labels[None]
        for image, label in zip(images, labels):
            segments = segment(method, image, **kwargs)
            counts.append(len(np.unique(segments)))
            predicted = match_segments(segments, label, num_classes, ignore_index)
            cm += metrics.confusion_matrix(label, predicted, num_classes, ignore_index)
    result = metrics.scores(cm)
    result["confusion_matrix"] = cm
    result["num_pixels"] = int(cm.sum())
    result["segments_per_image"] = float(np.mean(counts)) if counts else float("nan")
    return result
