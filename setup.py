"""Package mapping pyproject.toml cannot express: exporters/, quant/ and csrc/ go under edgegate."""

from setuptools import find_namespace_packages, setup

MAPPED = {"exporters": "edgegate.exporters", "quant": "edgegate.quant", "csrc": "edgegate.csrc"}

packages = find_namespace_packages(include=["edgegate", "edgegate.*"], exclude=["*__pycache__*"])
for folder, name in MAPPED.items():
    packages += [
        p.replace(folder, name, 1)
        for p in find_namespace_packages(include=[folder, f"{folder}.*"])
        if "__pycache__" not in p
    ]

setup(
    packages=packages,
    package_dir={"edgegate": "edgegate", **{name: folder for folder, name in MAPPED.items()}},
)
