"""Model and backbone files register themselves through ``kseg.registry``, never through the
package ``__init__`` that imports them back, and the package names users know still work."""

import ast
import pathlib

import kseg
import kseg.backbones
import kseg.models
import kseg.registry

ROOT = pathlib.Path(kseg.__file__).parent


def _imported_modules(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_model_and_backbone_files_do_not_import_their_package():
    checked = 0
    for package in ("models", "backbones"):
        for path in sorted((ROOT / package).glob("*.py")):
            if path.name == "__init__.py":
                continue
            imported = _imported_modules(path)
            assert f"kseg.{package}" not in imported, path
            assert not any(name.startswith(f"kseg.{package}.register") for name in imported), path
            checked += 1
    assert checked >= 14
    # the registry module imports nothing of kseg
    assert not any(name.startswith("kseg") for name in _imported_modules(ROOT / "registry.py"))


def test_public_registry_names_are_the_shared_registries():
    assert kseg.models.MODELS is kseg.registry.MODELS
    assert kseg.backbones.BACKBONES is kseg.registry.BACKBONES
    assert kseg.models.create("unet", num_classes=2, base_filters=2, depth=1).name == "unet"
    assert "deeplabv3+" in kseg.models.names() and "xception65" in kseg.backbones.names()
    assert kseg.models.MODELS.get("DeepLabV3Plus") is kseg.models.DeepLabV3Plus
