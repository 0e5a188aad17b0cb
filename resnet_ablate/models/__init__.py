"""The nets: shortcut and unit registries (the 2016 paper's Figs. 2 and 4), the ResNet skeleton, and the
registered layouts `cifar` and `imagenet` (importing this package registers both)."""
from . import cifar, imagenet  # noqa: F401 - registers the layouts
