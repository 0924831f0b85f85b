"""What every dataset is: its classes, colours, ignore label and split sizes.

Loaders register a :class:`DatasetInfo` under their ``kseg.data.load`` name; predictions,
overlays, TensorBoard images, exported label files and ``kseg data stats`` read it back
through :func:`info`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kseg.data.palette import IGNORE_INDEX


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """The metadata of one dataset.

    Attributes:
        name: the ``kseg.data.load`` name.
        class_names: one name per class, indexed by the label value the loader yields.
        palette: one ``(r, g, b)`` colour per class (the dataset's official colours where it
            has them).
        ignore_index: the label value that means "not scored" (255 for every kseg loader).
        splits: split name -> number of images in the official release.
        description: what to download and the layout expected, in one or two sentences.

    Example:
        >>> info = DatasetInfo("two", ("bg", "fg"), ((0, 0, 0), (255, 0, 0)), splits={"train": 2})
        >>> info.num_classes, info.palette_array().shape
        (2, (256, 3))
    """

    name: str
    class_names: tuple
    palette: tuple
    ignore_index: int = IGNORE_INDEX
    splits: dict = dataclasses.field(default_factory=dict)
    description: str = ""

    def __post_init__(self):
        if len(self.palette) != len(self.class_names):
            raise ValueError(
                f"dataset {self.name!r} has {len(self.class_names)} class names but "
                f"{len(self.palette)} palette colours. Received: palette={self.palette!r}"
            )

    @property
    def num_classes(self):
        """The number of scored classes."""
        return len(self.class_names)

    def palette_array(self):
        """``uint8 [256, 3]``: the class colours, then black, with white at ``ignore_index``."""
        colours = np.zeros((256, 3), np.uint8)
        colours[: self.num_classes] = np.asarray(self.palette, np.uint8).reshape(-1, 3)
        colours[self.ignore_index] = 255
        return colours


_INFOS = {}


def register_info(dataset_info):
    """Makes ``dataset_info`` what :func:`info` returns for its name (the last one wins).

    Example:
        >>> _ = register_info(DatasetInfo("two", ("bg", "fg"), ((0, 0, 0), (255, 0, 0))))
        >>> info("two").class_names
        ('bg', 'fg')
    """
    if not isinstance(dataset_info, DatasetInfo):
        raise ValueError(
            f"register_info takes a DatasetInfo. Received: dataset_info={dataset_info!r}"
        )
    _INFOS[dataset_info.name] = dataset_info
    return dataset_info


def info(name):
    """The :class:`DatasetInfo` of dataset ``name``; an unknown name lists the known ones.

    Example:
        >>> import kseg
        >>> kseg.data.info("voc").num_classes
        21
    """
    if name not in _INFOS:
        raise ValueError(
            f"no dataset information for {name!r}; known datasets: {', '.join(sorted(_INFOS))}. "
            f"Received: name={name!r}"
        )
    return _INFOS[name]
