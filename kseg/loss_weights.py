"""The U-Net paper's pixel weight map for separating touching objects (Ronneberger et al. 2015).

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

``w_c`` balances the class frequencies, ``d1``/``d2`` are the distances from a background pixel
to the nearest and second-nearest object. Thin background gaps between touching objects get a
large weight, so a network trained with ``loss(y, p, sample_weight=w)`` learns to keep them.
The map is computed once per training image, with numpy/scipy, outside the model. It sits
beside the losses (``kseg.losses.unet_weight_map``); ``kseg.models.unet_weight_map`` is the
same function, where it lived before.
"""

from __future__ import annotations

import numpy as np


def _check_labels(labels):
    array = np.asarray(labels)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or array.size == 0:
        raise ValueError(
            f"labels must be a non-empty integer map [H, W] or [B, H, W] (a trailing 1 is "
            f"accepted). Received: shape={np.shape(labels)!r}"
        )
    if not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.all(np.mod(array, 1) == 0):
            array = array.astype(np.int64)
        else:
            raise ValueError(f"labels must hold integers. Received: dtype={array.dtype}")
    return array


def _object_masks(labels, background, split_components, ignore_index):
    """Yields ``(class_id, boolean_mask)`` for every object in one [H, W] map."""
    from scipy import ndimage

    values = [v for v in np.unique(labels) if v != background and v != ignore_index]
    for value in values:
        mask = labels == value
        if split_components:
            components, count = ndimage.label(mask)
            for component in range(1, count + 1):
                yield value, components == component
        else:
            yield value, mask


def _single_map(labels, w0, sigma, class_weights, background, split_components, ignore_index):
    from scipy import ndimage

    # Classes for w_c: background vs objects for instance maps, the label values otherwise.
    if split_components:
        classes = labels.astype(np.int64)
    else:
        classes = (labels != background).astype(np.int64)
    valid = np.ones(labels.shape, bool) if ignore_index is None else labels != ignore_index

    weights = np.zeros(labels.shape, np.float64)
    present = np.unique(classes[valid])
    if class_weights is None:
        total = valid.sum()
        for c in present:
            count = np.count_nonzero((classes == c) & valid)
            weights[(classes == c) & valid] = total / (len(present) * count)
    else:
        for c in present:
            try:
                weight = class_weights[int(c)]
            except (KeyError, IndexError):
                raise ValueError(
                    f"class_weights has no entry for class {int(c)} (classes present: "
                    f"{[int(v) for v in present]})"
                ) from None
            weights[(classes == c) & valid] = weight

    # Distance from every pixel to each object, keeping the two smallest.
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    objects = 0
    for _, mask in _object_masks(labels, background, split_components, ignore_index):
        objects += 1
        distance = ndimage.distance_transform_edt(~mask)
        d2 = np.where(distance < d1, d1, np.minimum(d2, distance))
        d1 = np.minimum(d1, distance)
    if objects >= 2:
        border = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))
        weights += np.where((labels == background) & valid, border, 0.0)
    return weights.astype(np.float32)


def unet_weight_map(
    labels,
    w0=10.0,
    sigma=5.0,
    class_weights=None,
    background=0,
    split_components=False,
    ignore_index=None,
):
    """Computes the U-Net weight map ``w(x) = w_c(x) + w0·exp(-(d1 + d2)² / (2σ²))``.

    Args:
        labels: integer map ``[H, W]`` or a batch ``[B, H, W]`` (maps are independent).
            By default an *instance* map: ``background`` is background and every other value is
            one object. With ``split_components=True`` a *label* map: every 4-connected
            component of each non-background class is one object
            (objects of the same class that touch merge into one component, which is why the
            paper's weights need instance maps to separate them).
        w0: weight of the border term (paper: 10).
        sigma: width in pixels of the border term (paper: about 5).
        class_weights: ``w_c`` per class, indexable by class id (a sequence or dict). Classes are
            0 = background, 1 = object for instance maps, the label values for label maps.
            Default: balanced frequencies in each map, ``w_c = N / (num_classes_present · N_c)``
            (every present class gets the same total weight).
        background: the background value.
        split_components: treat ``labels`` as a label map (see above).
        ignore_index: value of "ignore" pixels, which get weight 0 and are no object
            (e.g. 255); None: no such value.

    Returns:
        float32 array of the shape of ``labels`` (without a trailing 1).

    The border term is added on background pixels only (it is meant for the gaps between
    objects) and only where a map holds at least two objects (``d2`` is undefined otherwise).
    ``d1``/``d2`` are Euclidean distances to the nearest pixel of the nearest / second-nearest
    object.

    Example:
        >>> import numpy as np
        >>> labels = np.zeros((5, 7), int)
        >>> labels[:, :3] = 1            # two objects separated by a one-pixel gap
        >>> labels[:, 4:] = 2
        >>> w = unet_weight_map(labels, w0=10, sigma=5, class_weights={0: 1.0, 1: 1.0})
        >>> round(float(w[2, 3]), 4)     # d1 = d2 = 1: 1 + 10·exp(-4/50)
        10.2312
        >>> float(w[2, 0])
        1.0
    """
    array = _check_labels(labels)
    for name, value in (("w0", w0), ("sigma", sigma)):
        if not isinstance(value, (int, float, np.number)) or isinstance(value, bool):
            raise ValueError(f"{name} must be a number. Received: {name}={value!r}")
    if w0 < 0:
        raise ValueError(f"w0 must be >= 0. Received: w0={w0!r}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0. Received: sigma={sigma!r}")
    if class_weights is not None and not hasattr(class_weights, "__getitem__"):
        raise ValueError(
            f"class_weights must be None, a sequence or a dict. Received: class_weights={class_weights!r}"
        )
    args = (
        float(w0),
        float(sigma),
        class_weights,
        background,
        bool(split_components),
        ignore_index,
    )
    if array.ndim == 2:
        return _single_map(array, *args)
    return np.stack([_single_map(m, *args) for m in array])
