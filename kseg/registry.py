"""Name → builder registries shared by backbones and models."""

from __future__ import annotations


class Registry:
    """A case-insensitive mapping from names to builders.

    Example:
        >>> MODELS = Registry("model")
        >>> @MODELS.register("unet")
        ... class UNet: ...
        >>> MODELS.get("UNet") is UNet
        True
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, object] = {}

    def register(self, *names: str):
        def decorator(obj):
            for name in names:
                key = name.lower()
                if key in self._items and self._items[key] is not obj:
                    raise ValueError(f"{self.kind} name {name!r} is registered twice")
                self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str):
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string. Received: name={name!r}")
        try:
            return self._items[name.lower()]
        except KeyError:
            raise ValueError(
                f"Unknown {self.kind} {name!r}. Valid names: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name.lower() in self._items


# The two registries live here, not in the packages that list them: a model or backbone file
# registers itself by importing this module, which imports nothing of kseg (no import circle).
MODELS = Registry("model")
BACKBONES = Registry("backbone")
